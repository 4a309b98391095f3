"""The world model's motion path: the image motion of each step, a linear function of the encoded action
calibrated from the training data (the camera: a translation; the movement keys: a flow field per token
position, or a translation plus zoom about the centre), the integer token warp that applies it, and a memory
of the rows that left through the top and bottom edges.

Why: a camera turn of 1 degree moves the picture about a quarter of a token, so the tokens of the next frame
are mostly *moved* tokens of this one. FiLM only rescales channels; learning to move content through a
ConvGRU took thousands of steps even on clean codes (controllability notes). Here the model's copy prior is
the previous frame warped by the action's motion, so turning, looking and walking move the picture from the
first step, and the network learns what the warp cannot explain (new content, parallax, jumps).

Nothing is hard-coded to a field of view: `calibrate` measures the motion of decoded frames (phase
correlation for translation, optical flow for zoom) on training transitions and fits, robustly, how many
tokens each encoded action dimension moves the picture. The coefficients are stored in the model config,
so they travel with every checkpoint.

The warp moves whole tokens (a sub-token blend of two codes is not a code). The part of the motion not yet
applied is carried in the recurrent state (`residual`, in tokens), so a slow turn moves the picture one
token every few steps at the right average rate, and `subtoken_shift` draws each decoded frame that much
further on, so the picture on screen glides a pixel at a time as the game's does.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

import metrics as M
from actions import (ENC_DIM, ENC_FIELDS, KEYS_SLICE, PITCH_NONE_BIN, PITCH_SLICE, RAW, YAW_NONE_BIN,
                     YAW_SLICE)

MOTION_ROWS = ("dx", "dy", "zoom")
"""Rows of the coefficient matrix [3, ENC_DIM]: content shift right and down in tokens per step, and the
zoom (fractional expansion about the centre) per step, each per unit of an encoded action dimension."""

# The "no turn" slots carry no motion, so a no-op action moves nothing (no idle drift from a fitted offset).
# Jump, sprint and sneak modify motion rather than make it (sneak alone keeps the view still, sneak with W
# walks slower): a linear fit gives them small spurious terms that add up while the key is held, so they get
# none, and the network learns their effect.
_STILL_COLUMNS = (YAW_SLICE.start + YAW_NONE_BIN, PITCH_SLICE.start + PITCH_NONE_BIN,
                  *range(KEYS_SLICE.stop - 3, KEYS_SLICE.stop))
MOVE_KEYS = 4
MOVE_SLICE = slice(KEYS_SLICE.start, KEYS_SLICE.start + MOVE_KEYS)
"""W, A, S, D in the encoded action."""


def zero_coefficients() -> list[float]:
    """The coefficients of a model without a motion path (flattened [3, ENC_DIM])."""
    return [0.0] * (len(MOTION_ROWS) * ENC_DIM)


def robust_fit(x: np.ndarray, y: np.ndarray, iters: int = 10, scale: float = 0.5) -> np.ndarray:
    """Least absolute deviation fit of y [N] on x [N, F] through the origin, by iteratively reweighted
    least squares (weights 1 / max(|residual|, scale)). Phase correlation fails now and then on a frame
    pair (a jump, a tree entering the view) with errors of many pixels; a squared loss lets those few
    outliers shrink the slope by 10-20%."""
    coef = np.linalg.lstsq(x, y, rcond=None)[0]
    for _ in range(iters):
        w = np.sqrt(1.0 / np.maximum(np.abs(y - x @ coef), scale))
        coef = np.linalg.lstsq(x * w[:, None], y * w, rcond=None)[0]
    return coef


MIN_SHIFT = 0.05
"""Tokens per step below which a fitted shift coefficient is set to 0. A key held for a whole clip adds its
coefficient up every step, so a spurious 0.03 (sneak, sprint: noise of the fit) becomes a whole-token jump
of a picture that the truth keeps still; every real camera or walking motion here is 0.1 or more."""
MIN_ZOOM = 0.003
"""Zoom per step below which a fitted zoom coefficient is set to 0 (the same reasoning)."""


MIN_SUBSET_PAIRS = 10
"""Transitions per fitted column a subset needs for its own fit (fit_coefficients); fewer fall back to the
fit over all transitions."""


def camera_still(enc: np.ndarray) -> np.ndarray:
    """Encoded actions [..., 15] -> whether neither yaw nor pitch turns [...]."""
    return (enc[..., YAW_SLICE.start + YAW_NONE_BIN] > 0.99) & (enc[..., PITCH_SLICE.start + PITCH_NONE_BIN] > 0.99)


def walking_still(enc: np.ndarray) -> np.ndarray:
    """Encoded actions [..., 15] -> a movement key pressed with the camera still and no jump, sprint or
    sneak [...]: the transitions fit_key_field measures the keys' flow on (sneaking walks at a fifth of the
    speed and sprinting faster; the network learns those)."""
    modifiers = enc[..., KEYS_SLICE.stop - 3:KEYS_SLICE.stop].max(axis=-1) > 0.5  # jump, sprint, sneak
    return camera_still(enc) & (enc[..., MOVE_SLICE].max(axis=-1) > 0.5) & ~modifiers


def _folded(cols: list[int], mirror: Sequence[tuple[int, int]]) -> np.ndarray:
    """Columns to fit -> [len(cols), G] map from G free coefficients to them: a mirrored pair (a, b) of
    `cols` shares one coefficient, +1 on a and -1 on b; every other column has its own."""
    pair_of = {a: b for a, b in mirror if a in cols and b in cols}
    seconds = set(pair_of.values())
    free = [c for c in cols if c not in seconds]
    fold = np.zeros((len(cols), len(free)))
    for g, c in enumerate(free):
        fold[cols.index(c), g] = 1.0
        if c in pair_of:
            fold[cols.index(pair_of[c]), g] = -1.0
    return fold


def fit_coefficients(enc: np.ndarray, shift_px: np.ndarray, expansion: np.ndarray,
                     token_px: tuple[float, float], mirror: Sequence[tuple[int, int]] = ()) -> np.ndarray:
    """Encoded actions [N, 15], measured content shift [N, 2] (px, +x right, +y down), zoom [N] (NaN where
    not measured) and the token size (px_x, px_y) -> coefficients [3, 15] (see MOTION_ROWS). `mirror`:
    pairs of camera columns that stand for opposite turns (ActionEncoding.mirrored_columns).

    The camera's shift is fitted on transitions without a movement key or a jump and the keys' shift and
    zoom on transitions with a still camera. Why: motion does not add up. Walking while turning moves near
    content more than far content, and one linear fit over all transitions gives each action part of the
    others' error (on the demo's video the joint fit made strafing left 1.6 px per step and right 1.2, where
    steps with a still camera move 0.98 and 1.06, as the game does). A subset too small for its own fit
    (footage where W is always held) falls back to the fit over all transitions.

    The camera is a rotation: yaw moves the picture sideways only and pitch up and down only, and opposite
    turns move it by opposite amounts. A free fit gives each turn a little of the other axis and a few
    percent more one way than the other (on the shipped model's data a hard right turn 0.06 tokens up per
    step, looking down 7% more than up); a rollout adds those up, so 20 s of turning moved the picture 19
    rows up and a look up and down drifted to the ground (README, "The camera fit is a rotation")."""
    enc = enc.astype(np.float64)
    out = np.zeros((len(MOTION_ROWS), ENC_DIM))
    yaw = [c for c in range(YAW_SLICE.start, YAW_SLICE.stop) if c not in _STILL_COLUMNS]
    pitch = [c for c in range(PITCH_SLICE.start, PITCH_SLICE.stop) if c not in _STILL_COLUMNS]
    keys = [c for c in range(KEYS_SLICE.start, KEYS_SLICE.stop) if c not in _STILL_COLUMNS]
    walking = enc[:, MOVE_SLICE].max(axis=1) > 0.5
    turning = ~walking & (enc[:, JUMP_COLUMN] <= 0.5)  # a jump has its own profile
    still = camera_still(enc)
    every = np.ones(len(enc), bool)
    for cols, rows, axes in ((yaw, turning, (0,)), (pitch, turning, (1,)), (keys, still, (0, 1))):
        if rows.sum() < MIN_SUBSET_PAIRS * len(cols):
            rows = every
        fold = _folded(cols, mirror)  # [len(cols), G]
        for r in axes:
            out[r, cols] = fold @ robust_fit(enc[rows][:, cols] @ fold, shift_px[rows, r] / token_px[r])
    ok = np.isfinite(expansion) & still  # a turn's flow is not a zoom
    if ok.sum() >= len(keys):
        out[2, keys] = robust_fit(enc[ok][:, keys], expansion[ok], scale=0.002)
    out[:2][np.abs(out[:2]) < MIN_SHIFT] = 0.0
    out[2][np.abs(out[2]) < MIN_ZOOM] = 0.0
    return out


# ----------------------------------------------------------------------------- the keys' flow field

MIN_FIELD = 0.02
"""Tokens per step below which a fitted key-field entry is set to 0 (the reasoning of MIN_SHIFT, per
position: the sky's fitted 0.01 would carry it a token off in 100 steps of walking, where it stays)."""


def cell_flow(a: np.ndarray, b: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Frames uint8 [H, W, 3] -> the mean optical flow (px, x right and y down) in each token cell
    [gh, gw, 2] (H and W multiples of the grid, as every tokenizer here makes them)."""
    gh, gw = grid
    flow = M.optical_flow(a, b).astype(np.float64)  # [H, W, 2]
    h, w = flow.shape[:2]
    return flow.reshape(gh, h // gh, gw, w // gw, 2).mean(axis=(1, 3))  # [gh, H/gh, gw, W/gw, 2] -> [gh, gw, 2]


def key_field_from_coefficients(coef: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """The global fit's motion of each movement key (shift plus zoom about the centre), as a field
    [MOVE_KEYS, 2, gh, gw] in tokens per step (fit_key_field's fallback for a key seen too rarely)."""
    onehot = torch.eye(ENC_DIM, dtype=torch.float64)[MOVE_SLICE]  # [4, 15]
    return displacement(torch.as_tensor(coef, dtype=torch.float64), onehot, grid).numpy()


def fit_key_field(enc: np.ndarray, flow: np.ndarray, token_px: tuple[float, float], fallback: np.ndarray,
                  min_moving_px: float = 0.0, min_field: float = MIN_FIELD, expected: bool = False,
                  iters: int = 10, scale: float = 0.1) -> np.ndarray:
    """Encoded actions [N, 15] of transitions with a still camera and their flow per token cell
    [N, gh, gw, 2] (px; cell_flow) -> the motion of each movement key (W, A, S, D) at every position
    [MOVE_KEYS, 2, gh, gw], tokens per step: per position a least-absolute-deviation fit through the origin
    (robust_fit's reweighting, all positions at once). A key pressed in fewer than MIN_SUBSET_PAIRS
    transitions keeps its row of `fallback` [MOVE_KEYS, 2, gh, gw]. Transitions whose picture moves less than
    `min_moving_px` on average (a key held against a wall) are left out: the field is then the motion of
    walking where the player can walk, and the network learns where it cannot. With `expected`, each key's
    field is then scaled by the fraction of its presses that moved: the mean motion of a press, where the
    median of all presses (the fit without `min_moving_px`) is pulled towards 0 by the presses against a wall
    and the fit of the moving ones alone overshoots every blocked press. Entries under `min_field` tokens
    per step become 0.

    Why a field and not a zoom about the centre: walking moves near things more than far ones. In the
    block world's walking footage the sky and far hills above the middle row hardly move while the ground at
    the bottom moves down about 1 px per step (README, "The keys' flow field"); a zoom about the centre
    fitted to the same footage moves the top rows up as fast as the bottom ones down, so a minute of walking
    pushes the sky out through the top edge and the picture never gets it back."""
    moving = np.abs(flow).mean(axis=(1, 2, 3)) >= min_moving_px
    pressed = np.asarray(enc, np.float64)[:, MOVE_SLICE] > 0.5  # [N, 4]
    share = pressed[moving].sum(axis=0) / np.maximum(pressed.sum(axis=0), 1)  # [4] presses of each key that moved
    enc, flow = np.asarray(enc)[moving], flow[moving]
    n, gh, gw, _ = flow.shape
    x = np.asarray(enc, np.float64)[:, MOVE_SLICE]  # [N, 4]
    y = (flow / np.asarray(token_px, np.float64)).transpose(0, 3, 1, 2).reshape(n, -1)  # [N, 2*gh*gw] tokens
    w = np.ones_like(y)
    for _ in range(iters + 1):
        xtwx = np.einsum("nj,na,nb->jab", w, x, x) + 1e-6 * np.eye(x.shape[1])  # [J, 4, 4]
        xtwy = np.einsum("nj,na,nj->ja", w, x, y)  # [J, 4]
        coef = np.linalg.solve(xtwx, xtwy[..., None])[..., 0]  # [J, 4]
        w = 1.0 / np.maximum(np.abs(y - x @ coef.T), scale)
    field = coef.T.reshape(x.shape[1], 2, gh, gw)  # [MOVE_KEYS, 2, gh, gw]
    if expected:
        field *= share[:, None, None, None]
    field[np.abs(field) < min_field] = 0.0
    rare = (x > 0.5).sum(axis=0) < MIN_SUBSET_PAIRS
    field[rare] = fallback[rare]
    return field


def calibrate(fa: np.ndarray, fb: np.ndarray, enc: np.ndarray, token_px: tuple[float, float],
              zoom_when: Callable[[np.ndarray], bool], mirror: Sequence[tuple[int, int]] = ()
              ) -> tuple[np.ndarray, dict[str, float]]:
    """Fit the motion coefficients on transitions: frames uint8 [N, H, W, 3] before (fa) and after (fb)
    the encoded actions enc [N, 15], from the tokenizer's decoding or the source video (decoded frames
    move less than the picture did: a 3-degree look is 2.8 px, under a token, and the codes partly stay
    put; train.py's motion_frames). `zoom_when(enc)` says whether a transition's zoom is worth measuring
    (optical flow is slow; only walking zooms); `mirror`: fit_coefficients's opposite camera columns.
    Returns (coefficients [3, 15], fit statistics)."""
    enc = np.asarray(enc, dtype=np.float64)
    shift = np.array([M.image_shift(fa[i], fb[i]) for i in range(len(enc))])  # [N, 2]
    zoom = np.array([M.radial_expansion(fa[i], fb[i]) if zoom_when(enc[i]) else np.nan
                     for i in range(len(enc))])
    coef = fit_coefficients(enc, shift, zoom, token_px, mirror)
    pred = enc @ coef[:2].T * np.asarray(token_px)  # [N, 2] px
    stats = {"pairs": float(len(enc)), "zoom_pairs": float(np.isfinite(zoom).sum()),
             "median_abs_error_px": float(np.median(np.abs(shift - pred))),
             "median_abs_shift_px": float(np.median(np.abs(shift)))}
    return coef, stats


# ----------------------------------------------------------------------------- jumps

JUMP_COLUMN = ENC_FIELDS.index("jump")
JUMP_STEPS = 10
"""Steps a jump's motion is followed for (Minecraft's jump lasts ~0.6 s: 10 frames at 16 fps)."""
MIN_JUMPS = 8
"""Clean jump onsets needed to fit a profile; fewer give none."""
MIN_JUMP_RISE = 0.25
"""Peak of the fitted profile's cumulative rise, in tokens, below which the jump gets no motion."""


def fit_jump_profile(dy_px: np.ndarray, token_px_y: float) -> np.ndarray:
    """Vertical content shift per step after clean jump onsets, dy_px [N, JUMP_STEPS] (px, +down) -> the
    jump's profile [JUMP_STEPS] in tokens per step (all zero with fewer than MIN_JUMPS onsets or a rise below
    MIN_JUMP_RISE).

    Why a profile: a jump is an impulse. One press moves the camera up and back down over the next ~10
    steps, so no per-step linear term of the action can carry it (the calibration gives jump none). The
    mean is taken of shifts clipped to 1.5 tokens: phase correlation on VQ-decoded frames sees either
    nothing or a whole token at many steps, and now and then a swim or a wall gives tens of pixels. The
    profile is made to sum to zero, so held jumps do not drift the picture."""
    if len(dy_px) < MIN_JUMPS:
        return np.zeros(JUMP_STEPS)
    lim = 1.5 * token_px_y
    prof = np.clip(np.asarray(dy_px, np.float64), -lim, lim).mean(axis=0) / token_px_y
    prof -= prof.mean()
    return prof if np.cumsum(prof).max() >= MIN_JUMP_RISE else np.zeros(JUMP_STEPS)


def jump_onsets(raw_actions: np.ndarray) -> list[int]:
    """Steps of raw actions [T, 9] where a jump starts from the ground (no jump held in the JUMP_STEPS
    before) with the camera's pitch still for the JUMP_STEPS it is followed."""
    jump = raw_actions[:, RAW["jump"]] >= 0.5
    still = np.abs(raw_actions[:, RAW["pitch_deg"]]) < 0.5
    return [s for s in range(JUMP_STEPS, len(raw_actions) - JUMP_STEPS + 1)
            if jump[s] and not jump[s - JUMP_STEPS:s].any() and still[s:s + JUMP_STEPS].all()]


def calibrate_jump(windows: Sequence[np.ndarray], decode: Callable[[np.ndarray], np.ndarray],
                   token_px_y: float) -> tuple[np.ndarray, dict[str, float]]:
    """Token windows [JUMP_STEPS + 1, h, w] starting at clean jump onsets (jump_onsets), `decode` as in
    calibrate -> (profile [JUMP_STEPS] in tokens per step, fit statistics)."""
    dy = np.array([M.shifts(decode(w))[:, 1] for w in windows]).reshape(-1, JUMP_STEPS)  # [N, J] px
    prof = fit_jump_profile(dy, token_px_y)
    return prof, {"onsets": float(len(windows)), "peak_rise_tokens": float(np.cumsum(prof).max())}


def jump_step(profile: torch.Tensor, pressed: torch.Tensor, age: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of the jump: profile [J] (tokens/step), pressed [B] bool, age [B] (steps since the jump
    began, -1 on the ground) -> (content shift down this step [B], next age [B]). A press on the ground
    starts a jump; a held key jumps again on landing, as in the game."""
    age = torch.where((age < 0) & pressed, torch.zeros_like(age), age)
    airborne = age >= 0
    dy = torch.where(airborne, profile[age.clamp(min=0).long()], torch.zeros_like(age))
    nxt = torch.where(airborne, age + 1, age)
    return dy, torch.where(nxt >= len(profile), torch.full_like(nxt, -1.0), nxt)


def displacement(coef: torch.Tensor, action: torch.Tensor, grid: tuple[int, int],
                 key_field: torch.Tensor | None = None) -> torch.Tensor:
    """coef [3, 15], action [B, 15] and optionally the movement keys' field [MOVE_KEYS, 2, gh, gw] (fit_key_field)
    -> content displacement [B, 2, gh, gw] in tokens (x, y) this step."""
    gh, gw = grid
    coef = coef.to(action.dtype)
    shift = action @ coef[:2].t()  # [B, 2]
    zoom = action @ coef[2]  # [B]
    ys = torch.arange(gh, device=action.device, dtype=action.dtype) - (gh - 1) / 2
    xs = torch.arange(gw, device=action.device, dtype=action.dtype) - (gw - 1) / 2
    offset = torch.stack([xs[None, :].expand(gh, gw), ys[:, None].expand(gh, gw)])  # [2, gh, gw]
    disp = shift[:, :, None, None] + zoom[:, None, None, None] * offset[None]
    if key_field is not None and key_field.numel():
        disp = disp + torch.einsum("bk,kcyx->bcyx", action[:, MOVE_SLICE], key_field.to(action.dtype))
    return disp


def warp_sources(residual: torch.Tensor, disp: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Residual [B, 2, gh, gw] (motion not yet applied) + this step's displacement -> (flat source index
    [B, gh*gw] of every output token, inside [B, gh, gw] (the source lies in the previous frame), new
    residual). Content moves by whole tokens. A position whose source left the frame gets the entering
    prior instead of the copy prior (WorldModel.add_copy_prior) on the token from the opposite side across
    the frame's width (what leaves on the left enters on the right: sky stays sky and grass grass, where
    repeating the edge column draws horizontal streaks over a turn), and on the edge row vertically."""
    b, _, gh, gw = residual.shape
    total = residual + disp
    # The translation (the field's mean) moves every token alike; the zoom's part, which differs per position,
    # moves tokens only on a step that zooms. Rounding the whole field per position would make a turn after a
    # walk tear the picture: neighbours whose zoom remainders differ move by different whole tokens, so one
    # source is drawn twice and another lost, and the picture loses a code at every tear.
    shift = total.mean(dim=(2, 3), keepdim=True)  # [B, 2, 1, 1]
    zooming = (disp - disp.mean(dim=(2, 3), keepdim=True)).abs().amax(dim=(1, 2, 3)) > 0  # [B]
    moved = torch.floor(shift + 0.5) + torch.floor(total - shift + 0.5) * zooming[:, None, None, None]
    ys = torch.arange(gh, device=disp.device)[:, None].expand(gh, gw)
    xs = torch.arange(gw, device=disp.device)[None, :].expand(gh, gw)
    src_x = xs[None] - moved[:, 0].long()  # [B, gh, gw]
    src_y = ys[None] - moved[:, 1].long()
    inside = (src_x >= 0) & (src_x < gw) & (src_y >= 0) & (src_y < gh)
    src = src_y.clamp(0, gh - 1) * gw + src_x.remainder(gw)
    return src.reshape(b, gh * gw), inside, total - moved  # [B, gh*gw]


def vertical_repeats(src: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
    """warp_sources' flat sources [B, gh*gw] and inside [B, gh, gw] -> [B, gh, gw] bool: the inside positions
    whose source, in their own column, a position above them already reads (a walk's repeated rows; a
    strafe's sideways repeats are not counted)."""
    b, n = src.shape
    gh, gw = inside.shape[-2:]
    pos = torch.arange(n, device=src.device).expand(b, n)
    flat_in = inside.reshape(b, n) & (src % gw == pos % gw)  # a vertical read
    first = torch.full((b, n), n, device=src.device).scatter_reduce(1, src, torch.where(flat_in, pos, n), "amin")
    return (flat_in & (first.gather(1, src) != pos)).view(b, gh, gw)  # [B, n] -> [B, gh, gw]


def recycle_sources(src: torch.Tensor, inside: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """warp_sources' flat sources [B, gh*gw] and inside [B, gh, gw] -> the same with every repeated source
    (an inside position whose source, in its own column, a position above it already reads) given, column by
    column from the top, a source of that column that no position reads (top to bottom), and marked as
    entering (not inside: the entering prior, and the network draws it).

    Why: a zoom (walking) moves the rows at different speeds, so the whole-token warp reads some sources twice
    and pushes others out through the edges. Each step of a walk then repeats codes already in view and drops
    others, so a minute of walking leaves a picture of a few codes in blobs (README, "Walking: how far W
    moves, and the rows it pushes out"). What the walk pushes out of a column comes back where it repeats
    one, as what a turn pushes out on one side comes in on the other: the column keeps its codes, and ground
    stays ground. Sideways repeats (a strafe's parallax, the walk's spread at the sides) are left as they are:
    refilling them from the column broke strafing."""
    b, n = src.shape
    gh, gw = inside.shape[-2:]
    dev = src.device
    repeated = vertical_repeats(src, inside)
    unread = torch.ones((b, n), dtype=torch.bool, device=dev).scatter(1, src, False).view(b, gh, gw)
    rank_r = repeated.long().cumsum(1) - 1  # [B, gh, gw]: k-th repeated position of its column
    rank_u = unread.long().cumsum(1) - 1
    ys = torch.arange(gh, device=dev)[None, :, None].expand(b, gh, gw)
    table = torch.zeros((b, gh + 1, gw), dtype=torch.long, device=dev)  # row k: y of the k-th unread source
    table.scatter_(1, torch.where(unread, rank_u, gh), ys)  # row gh collects the positions that are not unread
    take = repeated & (rank_r < unread.sum(1, keepdim=True))
    new_y = table.gather(1, rank_r.clamp(0, gh))  # [B, gh, gw]
    xs = torch.arange(gw, device=dev)[None, None, :]
    src = torch.where(take, new_y * gw + xs, src.view(b, gh, gw)).reshape(b, n)  # [B, gh, gw] -> [B, gh*gw]
    return src, inside & ~take


def gather_tokens(tokens: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    """tokens [B, gh, gw], flat sources [B, gh*gw] -> warped tokens [B, gh, gw]."""
    return tokens.flatten(1).gather(1, src).view_as(tokens)  # [B, gh*gw] -> [B, gh, gw]


def gather_map(x: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    """Feature map [B, C, gh, gw], flat sources [B, gh*gw] -> warped map [B, C, gh, gw] (same layout)."""
    b, c, gh, gw = x.shape
    flat = x.flatten(2)  # [B, C, gh*gw]
    out = flat.gather(2, src[:, None, :].expand(b, c, gh * gw)).view(b, c, gh, gw)  # [B, C, gh, gw]
    return out.contiguous(memory_format=torch.channels_last) if x.is_contiguous(
        memory_format=torch.channels_last) and c > 1 else out


def _edge_tape(mem: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Memory [B, 2R, gw] (see edge_step) and frame tokens [B, gh, gw] -> the column tape
    [B, 2R + gh, gw]: R rows above the frame, the frame (row y at R + y), R rows below."""
    r = mem.shape[1] // 2
    return torch.cat([mem[:, :r], tokens, mem[:, r:]], dim=1)


def _tape_read(tape: torch.Tensor, src_y: torch.Tensor, src_x: torch.Tensor, r: int) -> torch.Tensor:
    """Codes of the tape [B, 2R + gh, gw] at frame rows src_y and columns src_x [B, n, gw] (columns wrap),
    -1 beyond the tape."""
    b, rows, gw = tape.shape
    idx = src_y + r
    ok = (idx >= 0) & (idx < rows)
    flat = idx.clamp(0, rows - 1) * gw + src_x.remainder(gw)  # [B, n, gw] into the tape flattened
    got = tape.flatten(1).gather(1, flat.flatten(1)).view_as(src_y)  # [B, n*gw] -> [B, n, gw]
    return torch.where(ok, got, torch.full_like(got, -1))


def edge_step(mem: torch.Tensor, tokens: torch.Tensor, moved: torch.Tensor, fill: tuple[int, int] = (-1, -1)
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One step of the memory of the rows beyond the frame's top and bottom edges. mem [B, 2R, gw] long: rows
    R-1, ..., 0 going up from the top edge, then R, ..., 2R-1 going down from the bottom edge (-1 = never
    seen); the frame's tokens [B, gh, gw] move by `moved` [B, 2, gh, gw] (whole tokens, x right and y down).
    Returns (codes [B, gh, gw], known [B, gh, gw], new memory [B, 2R, gw]): for each position of the new frame
    whose content came from beyond the top or bottom edge, the remembered code there and whether one was
    remembered; and the memory in the new frame's coordinates, where what left through an edge is pushed in
    and what came back taken out, each side moving as the frame's edge row does, and rows moved in from
    beyond the memory get `fill` (above, below; WorldModelConfig.edge_fill).

    Why: content entering from above or below is otherwise the edge row repeated. Looking down and back up,
    or walking on and back, then brings back whatever the edge row shows now (ground, after a walk has
    pushed the horizon out), so the sky never returns (README, "The sky goes and never comes back")."""
    r = mem.shape[1] // 2
    gh, gw = tokens.shape[-2:]
    dev = tokens.device
    tape = _edge_tape(mem, tokens)
    xs = torch.arange(gw, device=dev)[None, None, :]
    src_y = torch.arange(gh, device=dev)[None, :, None] - moved[:, 1]  # [B, gh, gw]
    codes = _tape_read(tape, src_y, xs - moved[:, 0], r)
    known = ((src_y < 0) | (src_y >= gh)) & (codes >= 0)
    ys = torch.cat([torch.arange(-r, 0, device=dev), torch.arange(gh, gh + r, device=dev)])  # [2R] frame rows
    edge = torch.cat([moved[:, :, :1].expand(-1, -1, r, -1), moved[:, :, -1:].expand(-1, -1, r, -1)], 2)  # [B,2,2R,gw]
    kept = _tape_read(tape, ys[None, :, None] - edge[:, 1], xs - edge[:, 0], r)  # [B, 2R, gw]
    side = torch.tensor(fill, device=dev).repeat_interleave(r)[None, :, None]  # [1, 2R, 1]
    return codes, known, torch.where(kept < 0, side, kept)


def subtoken_shift(img: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """Decoded frames [B, 3, H, W] drawn where their content is: moved by the motion the token warp has not
    applied yet, residual [B, 2, gh, gw] (tokens, x right and y down; state["motion_res"]).

    Why: the warp moves whole tokens, so a 1-degree-per-step turn moves the decoded picture 4 px every fourth
    step and stands still in between, where the game moves it 1 px every step (a jump: one token up and back
    where the game glides). The remainder is what the picture has still to move, so the frame is redrawn
    that far: the per-token field upsampled bilinearly to pixels, each pixel read from the nearest one there
    (whole pixels: a bilinear read blurs the picture, LPIPS@16 0.205 against 0.181 on the demo's data), the
    border repeated."""
    b, _, h, w = img.shape
    gh, gw = residual.shape[-2:]
    disp = F.interpolate(residual.float(), size=(h, w), mode="bilinear", align_corners=False)  # [B, 2, H, W] tokens
    # Normalised [-1, 1] coordinates (align_corners=False): one pixel is 2 / size, one token 2 * (size / g) / size.
    ys = (torch.arange(h, device=img.device, dtype=torch.float32) + 0.5) * (2 / h) - 1
    xs = (torch.arange(w, device=img.device, dtype=torch.float32) + 0.5) * (2 / w) - 1
    gx = xs[None, None, :] - disp[:, 0] * (2 / gw)  # [B, H, W]: content moved right is read from the left
    gy = ys[None, :, None] - disp[:, 1] * (2 / gh)
    grid = torch.stack([gx, gy], dim=-1)  # [B, H, W, 2]
    return F.grid_sample(img.float(), grid, mode="nearest", padding_mode="border", align_corners=False).to(img.dtype)
