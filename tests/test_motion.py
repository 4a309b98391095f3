"""The motion path (motion.py + WorldModel.warp): calibration from data, the token warp, and a tiny model
trained on a synthetic world where the action alone decides the motion."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import motion
from actions import ENC_DIM, RAW, RAW_DIM, ActionEncoding, make_raw
from model_convGru import WorldModel, WorldModelConfig

ENC = ActionEncoding()
GRID = (6, 8)
K = 16
TOKEN_PX = 4


def coef_for(dx_per_yaw_deg: float, dy_per_pitch_deg: float) -> torch.Tensor:
    """Coefficients [3, 15] of a pure camera motion in tokens per degree, written in the graded encoding."""
    c = np.zeros((3, ENC_DIM))
    c[0, 0:5] = np.array(ENC.yaw_centres) * dx_per_yaw_deg
    c[1, 5:8] = np.array(ENC.pitch_centres) * dy_per_pitch_deg
    return torch.tensor(c, dtype=torch.float32)


def enc(**kw: float) -> torch.Tensor:
    return torch.from_numpy(ENC.encode(make_raw(**kw)))[None]  # [1, 15]


def test_robust_fit_recovers_coefficients_despite_outliers():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 5))
    true = np.array([0.5, -1.0, 0.0, 2.0, 0.25])
    y = x @ true + rng.normal(scale=0.05, size=400)
    y[:20] += rng.normal(scale=30.0, size=20)  # phase-correlation failures
    np.testing.assert_allclose(motion.robust_fit(x, y), true, atol=0.05)
    assert np.abs(np.linalg.lstsq(x, y, rcond=None)[0] - true).max() > 0.1


def test_noop_never_moves_and_turns_move_whole_tokens_at_the_average_rate():
    coef = coef_for(-0.25, -0.25)  # a quarter token per degree, content against the turn
    tokens = torch.arange(48).view(1, *GRID)
    res = torch.zeros(1, 2, *GRID)
    for _ in range(10):
        src, _, res = motion.warp_sources(res, motion.displacement(coef, enc(), GRID))
        assert torch.equal(motion.gather_tokens(tokens, src), tokens)
    # 1 degree per step: the picture moves one token every 4 steps, to the left for a right turn.
    res = torch.zeros(1, 2, *GRID)
    cur = tokens
    moved = 0
    for _ in range(8):
        src, inside, res = motion.warp_sources(res, motion.displacement(coef, enc(yaw_deg=1.0), GRID))
        nxt = motion.gather_tokens(cur, src)
        step_moved = not torch.equal(nxt, cur)
        moved += int(step_moved)
        # What enters the view on the right has no source in the previous frame.
        assert inside[0, :, :-1].all() and inside[0, :, -1].all() != step_moved
        cur = nxt
    assert moved == 2
    assert torch.equal(cur[0, :, :-2], tokens[0, :, 2:])  # two columns to the left
    assert torch.equal(cur[0, :, -2:], tokens[0, :, :2])  # what left on the left enters on the right
    # Vertically the edge row repeats (looking up brings more of the top row: sky, not the ground).
    src, inside, _ = motion.warp_sources(torch.zeros(1, 2, *GRID), motion.displacement(coef, enc(pitch_deg=-8.0), GRID))
    up = motion.gather_tokens(tokens, src)  # content moves down by 2 rows
    assert torch.equal(up[0, 2:], tokens[0, :-2]) and torch.equal(up[0, 0], tokens[0, 0]) and not inside[0, :2].any()


def test_zoom_moves_the_border_outwards_and_keeps_the_centre():
    coef = torch.zeros(3, ENC_DIM)
    coef[2, 8] = 0.2  # W zooms in by 20% per step
    src, inside, _ = motion.warp_sources(torch.zeros(1, 2, 7, 9), motion.displacement(coef, enc(forward=1), (7, 9)))
    assert inside.all()  # zooming in only brings content from inside the frame
    tokens = torch.arange(63).view(1, 7, 9)
    out = motion.gather_tokens(tokens, src)
    assert out[0, 3, 4] == tokens[0, 3, 4]
    assert out[0, 3, 0] == tokens[0, 3, 1] and out[0, 3, 8] == tokens[0, 3, 7]



def test_a_turn_after_a_walk_moves_every_token_alike():
    coef = coef_for(-0.25, -0.25)
    coef[2, 8] = 0.03  # W zooms in by 3% per step: uneven remainders across the grid
    grid = (7, 9)
    res = torch.zeros(1, 2, *grid)
    for _ in range(5):
        _, _, res = motion.warp_sources(res, motion.displacement(coef, enc(forward=1), grid))
    assert res.std() > 0.05  # the zoom left a different remainder at each position
    tokens = torch.arange(63).view(1, *grid)
    for _ in range(8):  # 2 degrees a step: a token every other step
        src, inside, res = motion.warp_sources(res, motion.displacement(coef, enc(yaw_deg=2.0), grid))
        out = motion.gather_tokens(tokens, src)
        moved = out[inside]
        assert len(torch.unique(moved)) == len(moved)  # no source drawn twice: nothing torn, nothing lost
        cols = (src.view(grid) % grid[1]) - torch.arange(grid[1])  # source column - output column
        assert len(torch.unique(cols[inside[0]])) == 1  # one shift for the whole picture
        tokens = out


def test_subtoken_shift_draws_the_frame_where_the_pending_motion_puts_it():
    rng = np.random.default_rng(0)
    img = torch.from_numpy(rng.random((1, 3, GRID[0] * TOKEN_PX, GRID[1] * TOKEN_PX), np.float32))
    res = torch.zeros(1, 2, *GRID)
    assert torch.allclose(motion.subtoken_shift(img, res), img, atol=1e-6)
    # A quarter token right and half a token down is 1 px and 2 px: the content moves, the border repeats.
    res[:, 0], res[:, 1] = 0.25, 0.5
    out = motion.subtoken_shift(img, res)
    assert torch.allclose(out[..., 2:, 1:], img[..., :-2, :-1], atol=1e-5)
    assert torch.allclose(out[..., 2:, 0], img[..., :-2, 0], atol=1e-5)


def test_a_slow_turn_glides_a_pixel_per_step_between_whole_token_moves():
    # 1 degree right per step moves the content a quarter token (1 px) left: the tokens move every fourth
    # step, the drawn frame every step, as the game's does.
    coef = coef_for(-0.25, -0.25)
    rng = np.random.default_rng(1)
    world = torch.from_numpy(rng.random((1, 3, GRID[0] * TOKEN_PX, 3 * GRID[1] * TOKEN_PX), np.float32))
    x0, width = GRID[1] * TOKEN_PX, GRID[1] * TOKEN_PX  # the first view's left edge in the world, px
    res = torch.zeros(1, 2, *GRID)
    for step in range(1, 9):
        _, _, res = motion.warp_sources(res, motion.displacement(coef, enc(yaw_deg=1.0), GRID))
        k = round(0.25 * step + float(res[0, 0].mean()))  # whole tokens the warp moved the content left
        tokens_view = world[..., x0 + k * TOKEN_PX:x0 + k * TOKEN_PX + width]
        drawn = motion.subtoken_shift(tokens_view, res)
        game = world[..., x0 + step:x0 + step + width]
        assert torch.allclose(drawn[..., 2:-2], game[..., 2:-2], atol=1e-5), step
    assert k == 2


# ----------------------------------------------------------------------------- synthetic world

def make_world(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A random code map [40, 40] and a random 4x4 pixel pattern per code [K, 4, 4]."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, K, size=(40, 40)), rng.integers(0, 256, size=(K, TOKEN_PX, TOKEN_PX))


def decoder(patterns: np.ndarray):
    def decode(tokens: np.ndarray) -> np.ndarray:
        img = patterns[tokens]  # [N, gh, gw, 4, 4]
        n, gh, gw = tokens.shape
        img = img.transpose(0, 1, 3, 2, 4).reshape(n, gh * TOKEN_PX, gw * TOKEN_PX)  # [N, H, W]
        return np.repeat(img[..., None], 3, axis=-1).astype(np.uint8)
    return decode


def episode(world: np.ndarray, rng: np.random.Generator, t: int) -> tuple[np.ndarray, np.ndarray]:
    """Frames [t+1, gh, gw] and encoded actions [t, 15]: yaw +-4 degrees moves the view one token sideways,
    pitch +-3 degrees one token up or down, anything else keeps it still."""
    y, x = 15, 15
    frames, acts = [world[y:y + GRID[0], x:x + GRID[1]]], []
    for _ in range(t):
        kind = rng.integers(0, 5)
        yaw, pitch = [(0, 0), (4, 0), (-4, 0), (0, 3), (0, -3)][kind]
        x += int(np.sign(yaw))
        y += int(np.sign(pitch))
        frames.append(world[y:y + GRID[0], x:x + GRID[1]])
        acts.append(ENC.encode(make_raw(yaw_deg=yaw, pitch_deg=pitch)))
    return np.stack(frames), np.stack(acts)


def test_tiny_model_on_a_synthetic_world_moves_its_output_the_way_the_action_says():
    torch.manual_seed(0)
    world, patterns = make_world()
    rng = np.random.default_rng(1)
    pairs = []
    for _ in range(12):
        fr, ac = episode(world, rng, 10)
        pairs += [(fr[i], fr[i + 1], ac[i]) for i in range(10)]
    decode = decoder(patterns)
    coef, stats = motion.calibrate(decode(np.stack([p[0] for p in pairs])), decode(np.stack([p[1] for p in pairs])),
                                   np.stack([p[2] for p in pairs]), (TOKEN_PX, TOKEN_PX), lambda e: False)
    # A right turn moves the content one token left (4 degrees -> -1 token): -0.25 tokens per degree.
    yaw_right = coef[:2] @ ENC.encode(make_raw(yaw_deg=4.0))
    pitch_down = coef[:2] @ ENC.encode(make_raw(pitch_deg=3.0))
    np.testing.assert_allclose(yaw_right, [-1.0, 0.0], atol=0.15)
    np.testing.assert_allclose(pitch_down, [0.0, -1.0], atol=0.15)

    cfg = WorldModelConfig(embed_dim=8, hidden_dim=16, num_layers=2, kernel_size=3, film_hidden=16,
                           head_dim=8, attn_ctx=0, idm_max_span=2, idm_hidden=16, codebook_size=K,
                           code_dim=4, grid_h=GRID[0], grid_w=GRID[1], copy_prior=1.0,
                           motion_coef=tuple(coef.reshape(-1)))
    model = WorldModel(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):
        fr, ac = episode(world, rng, 6)
        tokens, acts = torch.from_numpy(fr)[None].long(), torch.from_numpy(ac)[None]
        logits, _ = model.forward_sequence(tokens[:, :-1], acts)  # [1, 6, K, gh, gw]
        loss = F.cross_entropy(logits.flatten(0, 1), tokens[0, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    y, x = 15, 15
    start = torch.from_numpy(world[y:y + GRID[0], x:x + GRID[1]])[None].long()
    for raw, (dy, dx) in ((make_raw(yaw_deg=4.0), (0, 1)), (make_raw(yaw_deg=-4.0), (0, -1)),
                          (make_raw(pitch_deg=3.0), (1, 0)), (make_raw(pitch_deg=-3.0), (-1, 0))):
        state, cur = model.init_state(1), start
        with torch.no_grad():
            for _ in range(3):
                logits, state = model.step(cur, torch.from_numpy(ENC.encode(raw))[None], state)
                cur = logits.argmax(1)
        truth = world[y + 3 * dy:y + 3 * dy + GRID[0], x + 3 * dx:x + 3 * dx + GRID[1]]
        # Only what was already in view can be predicted: new content enters at the border.
        inner = (slice(max(0, -3 * dy), GRID[0] - max(0, 3 * dy)), slice(max(0, -3 * dx), GRID[1] - max(0, 3 * dx)))
        match = (cur[0].numpy() == truth)[inner].mean()
        still = (cur[0].numpy() == world[y:y + GRID[0], x:x + GRID[1]])[inner].mean()
        assert match > 0.8 and match > still + 0.5, (raw, match, still)


def test_fit_zeroes_coefficients_too_small_to_be_motion():
    # A held key's tiny spurious shift adds up every step into a whole-token jump of a still picture.
    rng = np.random.default_rng(0)
    raws = [make_raw(yaw_deg=float(rng.choice([0, 1, -1, 4, -4])), sneak=float(rng.random() < 0.3),
                     forward=float(rng.random() < 0.4)) for _ in range(400)]
    encs = np.stack([ENC.encode(r) for r in raws]).astype(np.float64)
    shift = np.stack([[-0.9 * r[0], 0.1 * r[7]] for r in raws])  # sneak: 0.1 px (0.025 tokens) per step
    zoom = np.where(encs[:, 8] > 0.5, 0.01, np.nan)  # measured only while walking
    coef = motion.fit_coefficients(encs, shift, zoom, (4.0, 4.0))
    assert coef[1, 14] == 0.0  # sneak
    np.testing.assert_allclose(coef[:2] @ ENC.encode(make_raw(yaw_deg=4.0)), [-0.9, 0.0], atol=0.02)
    assert coef[2, 8] == pytest.approx(0.01, abs=1e-3) and coef[2, :8].tolist() == [0.0] * 8



def test_camera_and_keys_are_fitted_where_each_acts_alone():
    # Turning while walking moves content further than the two alone (near things pass faster): a fit over
    # all transitions hands that extra to both the turn and the keys, and the still picture then drifts.
    rng = np.random.default_rng(1)
    raws = [make_raw(yaw_deg=float(rng.choice([0, 0, 2, -2, 4, -4])), right=float(rng.random() < 0.4),
                     forward=float(rng.random() < 0.3)) for _ in range(600)]
    encs = np.stack([ENC.encode(r) for r in raws]).astype(np.float64)
    dx = np.array([-0.9 * r[RAW["yaw_deg"]] - 1.0 * r[RAW["right"]] for r in raws])  # px
    both = (np.array([r[RAW["yaw_deg"]] for r in raws]) != 0) & (encs[:, 8:12].max(axis=1) > 0.5)
    shift = np.stack([np.where(both, 1.6 * dx, dx), np.zeros(len(raws))], axis=1)
    zoom = np.where(encs[:, 8] > 0.5, 0.01, np.nan)
    coef = motion.fit_coefficients(encs, shift, zoom, (4.0, 4.0))
    np.testing.assert_allclose(coef[0] @ ENC.encode(make_raw(yaw_deg=4.0)), -0.9, atol=0.02)
    np.testing.assert_allclose(coef[0] @ ENC.encode(make_raw(right=1.0)), -0.25, atol=0.02)
    assert coef[2, 8] == pytest.approx(0.01, abs=1e-3)
    # Footage where W is always held has no turn without a key: the camera falls back to every transition.
    held = [make_raw(yaw_deg=float(y), forward=1.0) for y in rng.choice([0, 2, -2, 4, -4], size=300)]
    encs = np.stack([ENC.encode(r) for r in held]).astype(np.float64)
    shift = np.stack([[-0.9 * r[RAW["yaw_deg"]], 0.0] for r in held])
    coef = motion.fit_coefficients(encs, shift, np.full(len(held), 0.01), (4.0, 4.0))
    np.testing.assert_allclose(coef[0] @ ENC.encode(make_raw(yaw_deg=4.0)), -0.9, atol=0.02)


def test_camera_fit_is_a_rotation():
    # Footage's turns come with a little vertical motion and move a few percent further one way than the
    # other. A rollout adds both up: 20 s of turning moved the shipped model's picture 19 rows up.
    rng = np.random.default_rng(2)
    raws = [make_raw(yaw_deg=float(rng.choice([0, 2.5, -2.5, 10, -10])),
                     pitch_deg=float(rng.choice([0, 0, 6, -6]))) for _ in range(600)]
    yaw = np.array([r[RAW["yaw_deg"]] for r in raws])
    pitch = np.array([r[RAW["pitch_deg"]] for r in raws])
    encs = np.stack([ENC.encode(r) for r in raws]).astype(np.float64)
    shift = np.stack([np.where(yaw > 0, -1.1, -0.9) * yaw + 0.05 * pitch,
                      0.04 * yaw + np.where(pitch > 0, -1.05, -0.95) * pitch], axis=1)  # px
    zoom = np.full(len(raws), np.nan)
    free = motion.fit_coefficients(encs, shift, zoom, (4.0, 4.0))
    coef = motion.fit_coefficients(encs, shift, zoom, (4.0, 4.0), ENC.mirrored_columns())

    def moves(c: np.ndarray, **kw: float) -> np.ndarray:
        return c[:2] @ ENC.encode(make_raw(**kw))  # [2] tokens (x, y)

    assert abs(moves(free, yaw_deg=10)[0] + moves(free, yaw_deg=-10)[0]) > 0.2  # unpaired: the data's lopsidedness
    for kw in ({"yaw_deg": 10.0}, {"yaw_deg": 2.5}, {"pitch_deg": 6.0}):
        np.testing.assert_allclose(moves(coef, **kw), -moves(coef, **{k: -v for k, v in kw.items()}), atol=1e-9)
    assert not coef[1, motion.YAW_SLICE].any() and not coef[0, motion.PITCH_SLICE].any()
    np.testing.assert_allclose(moves(coef, yaw_deg=10), [-2.5, 0.0], atol=0.15)
    np.testing.assert_allclose(moves(coef, pitch_deg=6), [0.0, -1.5], atol=0.1)


def test_jump_profile_fit_ignores_outliers_and_returns_to_the_ground():
    rng = np.random.default_rng(0)
    true_px = np.array([1.5, 1.0, 0.8, 0.4, 0.0, -0.4, -0.8, -1.0, -1.5, 0.0])  # rises 3.7 px, lands
    dy = true_px + rng.normal(scale=0.3, size=(40, motion.JUMP_STEPS))
    dy[:4] = 30.0  # a few swims or walls
    prof = motion.fit_jump_profile(dy, token_px_y=4.0)
    np.testing.assert_allclose(prof, true_px / 4.0, atol=0.12)
    assert abs(prof.sum()) < 1e-9 and np.cumsum(prof).max() > 0.7
    assert not motion.fit_jump_profile(dy[:motion.MIN_JUMPS - 1], 4.0).any()  # too few onsets
    assert not motion.fit_jump_profile(dy * 0.05, 4.0).any()  # no measurable rise


def test_jump_onsets_are_presses_from_the_ground_with_a_still_pitch():
    raw = np.zeros((60, RAW_DIM), np.float32)
    raw[12:30, RAW["jump"]] = 1.0  # jump held: one onset at 12 (the re-jumps while held are not clean)
    raw[44, RAW["jump"]] = 1.0
    raw[46, RAW["pitch_deg"]] = 3.0  # pitch moves inside the second jump's window: not clean
    assert motion.jump_onsets(raw) == [12]


def test_a_jump_moves_the_view_down_and_back_and_held_jumps_repeat():
    profile = torch.tensor([0.5, 0.3, 0.2, 0.0, 0.0, 0.0, -0.2, -0.3, -0.5, 0.0])
    pressed = torch.tensor([True] + [False] * 11)
    age, rise = torch.tensor([-1.0]), []
    for p in pressed:
        dy, age = motion.jump_step(profile, p[None], age)
        rise.append(float(dy))
    np.testing.assert_allclose(rise, profile.tolist() + [0.0, 0.0])
    age, starts = torch.tensor([-1.0]), 0
    for _ in range(25):  # held: a new jump starts on every landing
        starts += int(age.item() < 0)
        _, age = motion.jump_step(profile, torch.tensor([True]), age)
    assert starts == 3
    cfg = WorldModelConfig(embed_dim=8, hidden_dim=8, num_layers=1, kernel_size=3, film_hidden=8, head_dim=8,
                           attn_ctx=0, idm_hidden=8, codebook_size=64, code_dim=4, grid_h=GRID[0],
                           grid_w=GRID[1], copy_prior=1.0, motion_coef=tuple(np.zeros(3 * ENC_DIM)),
                           jump_profile=tuple(profile.tolist()))
    model = WorldModel(cfg)
    tokens, state = torch.arange(48).view(1, *GRID), model.init_state(1)
    rows = []
    for i in range(10):
        warped, _, state = model.warp(tokens, enc(jump=float(i == 0)), state)
        rows.append(int((warped[0, :, 0] == 8 * 2).nonzero()[0]) - 2)  # where row 2's content is now
        tokens = warped
    assert max(rows) == 1 and rows[-1] == 0  # one token down at the peak, back on landing


@pytest.mark.parametrize("entering_prior", [0.0, 3.0])
def test_entering_content_gets_its_own_prior_on_the_wrapped_code_only_when_asked(entering_prior):
    cfg = WorldModelConfig(embed_dim=8, hidden_dim=8, num_layers=1, kernel_size=3, film_hidden=8, head_dim=8,
                           attn_ctx=0, idm_hidden=8, codebook_size=64, code_dim=4, grid_h=GRID[0],
                           grid_w=GRID[1], copy_prior=2.0, entering_prior=entering_prior,
                           motion_coef=tuple(coef_for(0.25, 0.0).reshape(-1).tolist()))
    model = WorldModel(cfg)
    tokens = torch.arange(48).view(1, *GRID)
    warped, inside, _ = model.warp(tokens, enc(yaw_deg=4.0), model.init_state(1))
    assert (~inside).any() and inside.any()  # a one-token turn: one column enters
    logits = torch.zeros(1, 64, *GRID)
    bumped = model.add_copy_prior(logits, warped, inside).gather(1, warped[:, None])[:, 0]  # [1, gh, gw]
    torch.testing.assert_close(bumped[inside], torch.full((int(inside.sum()),), 2.0))
    torch.testing.assert_close(bumped[~inside], torch.full((int((~inside).sum()),), entering_prior))
    # Checkpoints written before the option load without it.
    d = cfg.to_dict()
    del d["entering_prior"]
    assert WorldModelConfig.from_dict(d).entering_prior == 0.0


def walking_field(grid: tuple[int, int]) -> np.ndarray:
    """A field [4, 2, gh, gw] like the block world's walk: W moves the bottom half's rows down, more the
    lower they are, and the top half not at all; A moves everything right."""
    gh, gw = grid
    field = np.zeros((motion.MOVE_KEYS, 2, gh, gw))
    field[0, 1, gh // 2:] = np.linspace(0.1, 0.4, gh - gh // 2)[:, None]
    field[1, 0] = 0.25
    return field


def test_key_field_fit_recovers_where_walking_moves_the_picture_and_falls_back_for_rare_keys():
    rng = np.random.default_rng(0)
    truth = walking_field(GRID)
    raw = [make_raw(forward=1.0)] * 150 + [make_raw(left=1.0)] * 150 + [make_raw(back=1.0)] * 3
    e = np.stack([ENC.encode(r) for r in raw])  # [N, 15]
    flow = np.einsum("nk,kcyx->nyxc", e[:, motion.MOVE_SLICE], truth) * TOKEN_PX  # [N, gh, gw, 2] px
    flow += rng.normal(scale=0.05, size=flow.shape)
    stuck = rng.choice(150, size=30, replace=False)  # walking into a wall: W held, nothing moves
    flow[stuck] = 0.0
    flow[rng.choice(len(e), size=15)] += rng.normal(scale=20.0, size=(15, *GRID, 2))  # flow failures
    fallback = np.full_like(truth, 0.123)
    field = motion.fit_key_field(e, flow, (TOKEN_PX, TOKEN_PX), fallback)
    np.testing.assert_allclose(field[:2], truth[:2], atol=0.03)
    assert not field[0, :, :GRID[0] // 2].any()  # the sky stays: entries under MIN_FIELD are exactly 0
    np.testing.assert_array_equal(field[2], fallback[2])  # S: three transitions, too few for its own fit
    np.testing.assert_array_equal(field[3], fallback[3])  # D: never pressed
    # A higher min_field leaves the slow rows under the still band still and keeps the fast ones as fitted.
    fast = motion.fit_key_field(e, flow, (TOKEN_PX, TOKEN_PX), fallback, min_field=0.2)
    slow = np.abs(field[0, 1]) < 0.2
    assert slow.any() and (~slow).any()
    assert not fast[0, 1][slow].any()
    np.testing.assert_array_equal(fast[0, 1][~slow], field[0, 1][~slow])


def test_cell_flow_measures_each_token_cells_motion():
    rng = np.random.default_rng(1)
    coarse = rng.integers(0, 256, (20, 40, 3)).astype(np.uint8)
    big = np.kron(coarse, np.ones((4, 4, 1), np.uint8))  # [80, 160, 3] blocky texture
    h, w = GRID[0] * 8, GRID[1] * 8
    a, b = big[8:8 + h, 8:8 + w], big[8:8 + h, 6:6 + w]  # content moved 2 px right
    flow = motion.cell_flow(a, b, GRID)
    assert flow.shape == (*GRID, 2)
    np.testing.assert_allclose(np.median(flow[1:-1, 1:-1], axis=(0, 1)), [2.0, 0.0], atol=0.3)


def test_a_walk_with_a_key_field_moves_the_ground_and_keeps_the_sky():
    gh, gw = GRID
    field = walking_field(GRID)
    cfg = WorldModelConfig(embed_dim=8, hidden_dim=8, num_layers=1, kernel_size=3, film_hidden=8, head_dim=8,
                           attn_ctx=0, idm_hidden=8, codebook_size=64, code_dim=4, grid_h=gh, grid_w=gw,
                           copy_prior=1.0, key_field=tuple(field.reshape(-1)))  # flat, as saved
    model = WorldModel(cfg)
    start = torch.arange(gh * gw).view(1, gh, gw)
    tokens, state = start, model.init_state(1)
    for _ in range(12):
        tokens, _, state = model.warp(tokens, enc(forward=1.0), state)
    assert torch.equal(tokens[0, :gh // 2], start[0, :gh // 2])  # the top half never moved
    assert not torch.equal(tokens[0, gh // 2:], start[0, gh // 2:])  # the ground did, down the picture
    assert (tokens[0, -1] // gw < gh - 1).all()  # the bottom row now shows rows from above it
    coef = np.zeros((3, ENC_DIM))
    coef[2, motion.MOVE_SLICE.start] = 0.01
    with pytest.raises(ValueError, match="movement-key columns"):
        WorldModelConfig(grid_h=gh, grid_w=gw, motion_coef=tuple(coef.reshape(-1)), key_field=cfg.key_field)
    with pytest.raises(ValueError, match="key_field needs"):
        WorldModelConfig(grid_h=gh, grid_w=gw, key_field=(0.0,) * 5)
    old = cfg.to_dict()
    for k in ("key_field", "edge_memory", "edge_fill"):  # a checkpoint from before the field and the memory
        del old[k]
    got = WorldModelConfig.from_dict(old)
    assert got.key_field == () and got.edge_memory == 0 and got.edge_fill == (-1, -1)
    assert "edge_mem" not in WorldModel(got).init_state(1)  # it steps as it did when it was saved


@pytest.mark.parametrize("edge_memory", [0, 8])
def test_content_that_left_through_an_edge_comes_back_from_the_edge_memory(edge_memory):
    gh, gw = GRID
    cfg = WorldModelConfig(embed_dim=8, hidden_dim=8, num_layers=1, kernel_size=3, film_hidden=8, head_dim=8,
                           attn_ctx=0, idm_hidden=8, codebook_size=64, code_dim=4, grid_h=gh, grid_w=gw,
                           copy_prior=1.0, edge_memory=edge_memory,
                           motion_coef=tuple(coef_for(0.0, -0.25).reshape(-1).tolist()))
    model = WorldModel(cfg)
    start = torch.arange(gh * gw).view(1, gh, gw)
    tokens, state = start, model.init_state(1)
    look = [4.0] * 3 + [-4.0] * 3  # 3 tokens up out of the top edge (content moves up), then back down
    look += [-4.0] * 2 + [4.0] * 2  # and 2 out of the bottom edge and back
    for deg in look:
        tokens, _, state = model.warp(tokens, enc(pitch_deg=deg), state)
    if edge_memory:
        assert torch.equal(tokens, start)  # every row that left came back
    else:
        assert not torch.equal(tokens, start)  # the edge rows were repeated instead
        assert torch.equal(tokens[0, 3:-2], start[0, 3:-2])  # what never left stayed


@pytest.mark.parametrize("recycle", [True, False])
def test_a_walk_recycles_the_rows_it_pushes_out_where_it_repeats_one(recycle: bool):
    gh, gw = GRID
    field = walking_field(GRID)
    field[0, 1, gh // 2:] = np.array([0.13, 0.29, 0.41])[:, None]  # rows at different speeds, no rounding ties
    cfg = WorldModelConfig(embed_dim=8, hidden_dim=8, num_layers=1, kernel_size=3, film_hidden=8, head_dim=8,
                           attn_ctx=0, idm_hidden=8, codebook_size=64, code_dim=4, grid_h=gh, grid_w=gw,
                           copy_prior=1.0, key_field=tuple(field.reshape(-1)), recycle=recycle)
    model = WorldModel(cfg)
    start = torch.arange(gh * gw).view(1, gh, gw)  # every position its own code
    tokens, state, entered = start, model.init_state(1), 0
    for _ in range(12):
        tokens, inside, state = model.warp(tokens, enc(forward=1.0), state)
        entered += int((~inside).sum())
    distinct = len(torch.unique(tokens))
    if recycle:
        assert torch.equal(tokens.flatten().sort().values, start.flatten())  # a permutation: no code lost
        assert torch.equal(tokens % gw, start % gw)  # each column keeps its own codes
        assert torch.equal(tokens[0, :gh // 2], start[0, :gh // 2])  # the sky still never moves
        assert entered > 0  # the recycled positions get the entering prior
    else:
        assert distinct < gh * gw and entered == 0  # the repeated rows pushed codes out for good


def test_recycling_leaves_sideways_motion_alone():
    gh, gw = GRID
    field = walking_field(GRID)
    field[1, 0] = 0.11 * (np.arange(gw) - (gw - 1) / 2)[None, :]  # a sideways zoom: the columns spread out
    out = []
    for recycle in (False, True):
        cfg = WorldModelConfig(embed_dim=8, hidden_dim=8, num_layers=1, kernel_size=3, film_hidden=8, head_dim=8,
                               attn_ctx=0, idm_hidden=8, codebook_size=64, code_dim=4, grid_h=gh, grid_w=gw,
                               copy_prior=1.0, key_field=tuple(field.reshape(-1)), recycle=recycle)
        model = WorldModel(cfg)
        tokens, state = torch.arange(gh * gw).view(1, gh, gw), model.init_state(1)
        for _ in range(12):
            tokens, _, state = model.warp(tokens, enc(left=1.0), state)
        out.append(tokens)
    assert len(torch.unique(out[0])) < gh * gw  # the spread repeats codes sideways...
    assert torch.equal(out[0], out[1])  # ...and recycling, which only refills a column's repeats, keeps them


def test_key_field_fit_can_leave_out_walks_into_a_wall():
    rng = np.random.default_rng(2)
    truth = walking_field(GRID)
    e = np.stack([ENC.encode(make_raw(forward=1.0))] * 100)  # [N, 15]
    flow = np.einsum("nk,kcyx->nyxc", e[:, motion.MOVE_SLICE], truth) * TOKEN_PX  # [N, gh, gw, 2] px
    flow[:60] = 0.0  # most presses walk into a wall: nothing moves
    flow += rng.normal(scale=0.05, size=flow.shape)
    fallback = np.zeros_like(truth)
    stuck_median = motion.fit_key_field(e, flow, (TOKEN_PX, TOKEN_PX), fallback)
    assert np.abs(stuck_median[0]).max() < 0.25 * truth[0].max()  # the typical press hardly moves
    walking = motion.fit_key_field(e, flow, (TOKEN_PX, TOKEN_PX), fallback, min_moving_px=0.2)
    np.testing.assert_allclose(walking[0], truth[0], atol=0.03)
    mean = motion.fit_key_field(e, flow, (TOKEN_PX, TOKEN_PX), fallback, min_moving_px=0.2, expected=True)
    np.testing.assert_allclose(mean[0], 0.4 * truth[0], atol=0.03)  # 40 of the 100 presses moved


def test_rows_never_seen_beyond_an_edge_come_in_as_the_calibrated_fill():
    gh, gw = GRID
    cfg = WorldModelConfig(embed_dim=8, hidden_dim=8, num_layers=1, kernel_size=3, film_hidden=8, head_dim=8,
                           attn_ctx=0, idm_hidden=8, codebook_size=64, code_dim=4, grid_h=gh, grid_w=gw,
                           copy_prior=1.0, edge_memory=3, edge_fill=(60, 61),
                           motion_coef=tuple(coef_for(0.0, -0.25).reshape(-1).tolist()))
    model = WorldModel(cfg)
    start = torch.arange(gh * gw).view(1, gh, gw)
    tokens, state = start, model.init_state(1)
    for deg in [-4.0] * 2:  # look up 2 tokens: above the frame nothing was seen yet
        tokens, _, state = model.warp(tokens, enc(pitch_deg=deg), state)
    assert (tokens[0, :2] == 60).all() and torch.equal(tokens[0, 2:], start[0, :-2])
    for deg in [4.0] * 2:  # and back: the 2 rows that left through the bottom come back
        tokens, _, state = model.warp(tokens, enc(pitch_deg=deg), state)
    assert torch.equal(tokens, start)
    for deg in [4.0] * 5:  # look down 5: below the frame nothing was seen
        tokens, _, state = model.warp(tokens, enc(pitch_deg=deg), state)
    assert torch.equal(tokens[0, :1], start[0, 5:]) and (tokens[0, 1:] == 61).all()
    for deg in [-4.0] * 5:  # back up: the 3 remembered rows return, the 2 beyond the memory are fill
        tokens, _, state = model.warp(tokens, enc(pitch_deg=deg), state)
    assert (tokens[0, :2] == 60).all() and torch.equal(tokens[0, 2:], start[0, 2:])
