"""rollout.py, contexts.py and presets.py: presets, action scripts, sampling, checkpoint-only loading,
compatibility checks, contexts and rollouts (tiny randomly initialised models saved to checkpoints in tmp_path)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from actions import RAW, RAW_DIM, ActionEncoding, make_raw
from action_scripts import (DEFAULT_SCRIPT_FRAMES, SCRIPT_NAMES, actions_to_entries, is_named_script, load_action_script,
                     named_script_actions)
from contexts import load_context, parse_context_spec, resolve_actions
from compat import IncompatibleError
from rollout import Rollout, Sampling, decode_tokens, load_bundle, rollout_batch, sample_tokens

@pytest.fixture(autouse=True)
def _one_thread() -> None:
    """Tiny models on a shared 2-core machine: one thread avoids OpenMP barrier stalls when the cores are busy."""
    torch.set_num_threads(1)


# ----------------------------------------------------------------------------- presets


def test_turn_presets_sum_to_a_full_turn_in_the_right_direction() -> None:
    for n in (96, 50, 7):
        left = named_script_actions("turn-left-360", n)
        right = named_script_actions("turn-right-360", n)
        assert left.shape == (n, RAW_DIM) and left.dtype == np.float32
        assert left[:, RAW["yaw_deg"]].sum() == pytest.approx(-360.0, abs=1e-3)
        assert right[:, RAW["yaw_deg"]].sum() == pytest.approx(360.0, abs=1e-3)
        assert (left[:, RAW["yaw_deg"]] < 0).all() and (right[:, RAW["yaw_deg"]] > 0).all()
        assert not left[:, 1:].any() and not right[:, 1:].any()


@pytest.mark.parametrize("name,key", [("walk-forward", "forward"), ("walk-back", "back"),
                                      ("strafe-left", "left"), ("strafe-right", "right")])
def test_movement_presets_hold_exactly_their_key(name: str, key: str) -> None:
    a = named_script_actions(name, 40)
    assert (a[:, RAW[key]] == 1).all()
    others = np.delete(a, RAW[key], axis=1)
    assert not others.any()


def test_look_up_down_goes_up_then_down_and_returns() -> None:
    for n in (96, 10):
        p = named_script_actions("look-up-down", n)[:, RAW["pitch_deg"]]
        cum = np.cumsum(p)
        assert p.sum() == pytest.approx(0.0, abs=1e-4)
        assert cum.min() == pytest.approx(-45.0, abs=1e-3) and cum.max() == pytest.approx(45.0, abs=1e-3)
        assert p[0] < 0 and p[n // 2] > 0 and p[-1] < 0  # up (-pitch), down, up


def test_jump_noop_random_and_combinations() -> None:
    j = named_script_actions("jump", 48)
    assert j[:, RAW["jump"]].sum() == 12 and j[0, RAW["jump"]] == 1 and j[8, RAW["jump"]] == 0
    assert not np.delete(j, RAW["jump"], axis=1).any()
    assert not named_script_actions("noop", 20).any()
    r1, r2, r3 = (named_script_actions("random", 200, seed=s) for s in (1, 1, 2))
    assert np.array_equal(r1, r2) and not np.array_equal(r1, r3)
    assert r1[:, 2:].min() >= 0 and r1[:, 2:].max() <= 1 and r1[:, RAW["forward"]].any()
    combo = named_script_actions("walk-forward+turn-left-360", 30)
    assert combo[:, RAW["forward"]].all() and combo[:, RAW["yaw_deg"]].sum() == pytest.approx(-360, abs=1e-3)
    assert all(is_named_script(n) for n in SCRIPT_NAMES) and not is_named_script("turn-left")
    with pytest.raises(ValueError, match="unknown action preset"):
        named_script_actions("walk-sideways", 10)


def test_action_scripts_json_csv_and_errors(tmp_path: Path) -> None:
    entries = [{"forward": 1, "repeat": 3}, {"yaw_deg": -4.5, "jump": 1}, {"repeat": 2}]
    p = tmp_path / "a.json"
    p.write_text(json.dumps(entries))
    a = load_action_script(p)
    assert a.shape == (6, RAW_DIM)
    assert a[:3, RAW["forward"]].tolist() == [1, 1, 1] and a[3, RAW["yaw_deg"]] == -4.5 and not a[4:].any()
    c = tmp_path / "a.csv"
    c.write_text("yaw_deg,forward,jump,repeat\n0,1,0,3\n-4.5,0,1,\n0,0,0,2\n")
    assert np.array_equal(load_action_script(c), a)
    # the JSON form folds runs into "repeat" and round-trips
    p2 = tmp_path / "b.json"
    p2.write_text(json.dumps(actions_to_entries(a)))
    assert np.array_equal(load_action_script(p2), a)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"forwrd": 1}]))
    with pytest.raises(ValueError, match=r"bad\.json.*forwrd"):
        load_action_script(bad)
    bad.write_text(json.dumps([{"forward": 2}]))
    with pytest.raises(ValueError, match="bad.json"):
        load_action_script(bad)
    bad.write_text(json.dumps([{"forward": 1, "repeat": 0}]))
    with pytest.raises(ValueError, match="repeat"):
        load_action_script(bad)


# ----------------------------------------------------------------------------- sampling


def test_greedy_is_argmax_and_top1_is_greedy() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 37, 3, 5, generator=g)
    greedy = sample_tokens(logits, "greedy")
    assert greedy.shape == (2, 3, 5) and greedy.dtype == torch.int64
    assert torch.equal(greedy, logits.argmax(1))
    for seed in range(3):
        top1 = sample_tokens(logits, "topk", temperature=5.0, top_k=1, generator=torch.Generator().manual_seed(seed))
        assert torch.equal(top1, greedy)


def test_seeded_temperature_sampling_is_reproducible_and_follows_softmax() -> None:
    logits = torch.randn(1, 16, 6, 7, generator=torch.Generator().manual_seed(1))
    a = sample_tokens(logits, "temperature", 2.0, generator=torch.Generator().manual_seed(5))
    b = sample_tokens(logits, "temperature", 2.0, generator=torch.Generator().manual_seed(5))
    c = sample_tokens(logits, "temperature", 2.0, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    # one position's distribution, 20000 draws in one batch: frequencies match softmax(logits / T)
    row = torch.tensor([2.0, 1.0, 0.0, -1.0])
    many = row.view(1, 4, 1, 1).expand(1, 4, 100, 200)
    draws = sample_tokens(many, "temperature", 0.7, generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(draws.flatten(), minlength=4).float() / draws.numel()
    assert torch.allclose(freq, torch.softmax(row / 0.7, 0), atol=0.015)


def test_topk_only_draws_from_the_top_k() -> None:
    logits = torch.randn(3, 50, 4, 4, generator=torch.Generator().manual_seed(2))
    k = 3
    draws = sample_tokens(logits, "topk", 10.0, top_k=k, generator=torch.Generator().manual_seed(0))
    allowed = logits.topk(k, dim=1).indices  # [3, k, 4, 4]
    assert (allowed == draws[:, None]).any(1).all()
    assert not torch.equal(draws, logits.argmax(1))  # at T=10 some positions leave the argmax
    with pytest.raises(ValueError):
        Sampling("topk", top_k=0)
    with pytest.raises(ValueError):
        Sampling("temperature", temperature=0.0)
    with pytest.raises(ValueError):
        Sampling("beam")


# ----------------------------------------------------------------------------- contexts


def test_context_spec_parsing(tmp_path: Path) -> None:
    assert parse_context_spec("shard:data/x.npz:120") == ("shard", "data/x.npz", 120)
    assert parse_context_spec("shard:data/x.npz") == ("shard", "data/x.npz", 0)
    assert parse_context_spec("video:v.mp4:30") == ("video", "v.mp4", 30)
    assert parse_context_spec("blockworld:42") == ("blockworld", "42", 0)
    assert parse_context_spec("png:a.png,b.png") == ("png", "a.png,b.png", 0)
    assert parse_context_spec("clip.mp4")[0] == "video"
    assert parse_context_spec(str(tmp_path))[0] == "png"
    with pytest.raises(ValueError, match="blockworld:SEED"):
        parse_context_spec("blockworld:forest")
    with pytest.raises(ValueError, match="shard:PATH"):
        parse_context_spec("something.txt")


# ----------------------------------------------------------------------------- checkpoints (tiny, random)

ROOT = Path(__file__).resolve().parents[1]
TINY_VQ = dict(codebook_size=16, code_dim=4, enc_channels=(4, 4, 4), enc_res_blocks=(0, 0, 0),
               dec_channels=(8, 4, 4), dec_res_blocks=(0, 0, 0), kmeans_iters=0)
TINY_WM = dict(embed_dim=8, hidden_dim=8, num_layers=2, kernel_size=3, film_hidden=8, head_dim=8, attn_ctx=2,
               attn_dim=4, attn_heads=1, idm_hidden=8)


def tiny_configs(**vq_overrides):
    from model_convGru import WorldModelConfig
    from vq_vae import VQVAEConfig

    vq = VQVAEConfig(**{**TINY_VQ, **vq_overrides})
    wm = WorldModelConfig(**TINY_WM, codebook_size=vq.codebook_size, code_dim=vq.code_dim,
                          grid_h=vq.frame_height // 4, grid_w=vq.frame_width // 4)
    return wm, vq


def write_shard(out_dir: Path, bundle, length: int, seed: int = 0, identity: str | None = None):
    """A token shard + meta.json as preprocess writes them: (path, tokens [L, h, w], raw actions [L-1, 9])."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    h, w = bundle.grid
    tokens = rng.integers(0, bundle.codebook_size, (length, h, w)).astype(np.uint16)
    actions = np.zeros((length - 1, RAW_DIM), np.float32)
    actions[:, RAW["yaw_deg"]] = rng.uniform(-10, 10, length - 1)
    actions[:, RAW["forward"]] = rng.integers(0, 2, length - 1)
    path = out_dir / f"ep{seed}.npz"
    np.savez(path, tokens=tokens, actions=actions, frame_index=np.arange(length, dtype=np.int32))
    (out_dir / "meta.json").write_text(json.dumps({
        "codebook_size": bundle.codebook_size, "grid": list(bundle.grid), "fps": 16, "frame_size": [128, 72],
        "action_schema_version": 1, "vqvae_identity": identity or bundle.vqvae_identity,
        "vqvae": str(bundle.vqvae_path)}))
    return path, tokens.astype(np.int64), actions


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory):
    """(world model checkpoint, VQ-VAE checkpoint, folder of 3 PNG context frames)."""
    import cv2

    from bench.live import write_random_checkpoints

    d = tmp_path_factory.mktemp("tiny")
    wm_cfg, vq_cfg = tiny_configs()
    wm, vq = write_random_checkpoints(d, wm_cfg, vq_cfg, seed=0)
    png = d / "png"
    png.mkdir()
    y, x = np.mgrid[0:72, 0:128]
    for i in range(3):
        img = np.stack([(x * 2 + i * 30) % 256, y * 3, np.full_like(x, 90 * i)], -1).astype(np.uint8)
        cv2.imwrite(str(png / f"{i:02d}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    return wm, vq, png


def test_loads_from_the_world_model_checkpoint_alone(tiny_pair, tmp_path: Path) -> None:
    import shutil

    wm, vq, _ = tiny_pair
    b = load_bundle(wm, device="cpu")
    assert b.vqvae_path == vq and b.codebook_size == 16 and b.grid == (18, 32)
    assert isinstance(b.encoding, ActionEncoding) and not b.model.training and not b.vqvae.training
    # moved elsewhere together: the recorded path is stale, the VQ-VAE beside the checkpoint is found
    moved = tmp_path / "moved"
    moved.mkdir()
    shutil.copy(wm, moved / "world_model.pt")
    shutil.copy(vq, moved / vq.name)
    vq.rename(vq.with_suffix(".away"))
    try:
        b2 = load_bundle(moved / "world_model.pt", device="cpu")
        assert b2.vqvae_path == moved / vq.name
        with pytest.raises(IncompatibleError, match="world_model.pt"):
            load_bundle(wm, device="cpu")  # recorded file gone and nothing beside it
    finally:
        vq.with_suffix(".away").rename(vq)


def test_incompatible_pairs_are_refused_naming_both_files(tiny_pair, tmp_path: Path) -> None:
    from bench.live import write_random_checkpoints

    wm, _, _ = tiny_pair
    cases = {"codebook": dict(codebook_size=32), "grid": dict(frame_width=64, frame_height=48), "identity": {}}
    for name, over in cases.items():
        d = tmp_path / name
        d.mkdir()
        _, other_vq = write_random_checkpoints(d, *tiny_configs(**over), seed=1)
        with pytest.raises(IncompatibleError) as e:
            load_bundle(wm, vqvae_override=other_vq, device="cpu")
        msg = str(e.value)
        assert str(wm) in msg and str(other_vq) in msg, msg
        assert {"codebook": "codebook", "grid": "token grid", "identity": "identity"}[name] in msg


def test_action_schema_mismatch_is_refused(tiny_pair, tmp_path: Path) -> None:
    wm, _, _ = tiny_pair
    record = torch.load(wm, weights_only=False)
    record["action_schema_version"] = 99
    bad = tmp_path / "old_schema.pt"
    torch.save(record, bad)
    with pytest.raises(ValueError, match=r"old_schema\.pt.*action schema"):
        load_bundle(bad, device="cpu")


def test_rollout_drives_model_step_and_batch_matches(tiny_pair) -> None:
    wm, _, _ = tiny_pair
    b = load_bundle(wm, device="cpu")
    path_tokens = torch.randint(0, 16, (4, 18, 32), generator=torch.Generator().manual_seed(0))
    ctx_actions = named_script_actions("random", 3, seed=1)
    future = named_script_actions("random", 6, seed=2)
    ro = Rollout(b, Sampling("greedy"))
    ro.warmup(path_tokens, ctx_actions)
    got = torch.stack(list(ro.run(future)))
    # by hand: model.step over the context with its true actions, then greedy steps
    enc = b.encoding
    with torch.no_grad():
        state = b.model.init_state(1, "cpu")
        for i in range(3):
            _, state = b.model.step(path_tokens[i:i + 1], torch.from_numpy(enc.encode(ctx_actions[i]))[None], state)
        cur, want = path_tokens[3:4], []
        for a in future:
            logits, state = b.model.step(cur, torch.from_numpy(enc.encode(a))[None], state)
            cur = logits.argmax(1)
            want.append(cur[0])
    assert torch.equal(got, torch.stack(want))
    batch, pending = rollout_batch(b, path_tokens[None].repeat(2, 1, 1, 1), np.stack([ctx_actions] * 2),
                                   np.stack([future] * 2), Sampling("greedy"))
    assert batch.shape == (2, 6, 18, 32) and torch.equal(batch[0], got) and torch.equal(batch[1], got)
    frame = ro.frame()
    assert frame.shape == (72, 128, 3) and frame.dtype == np.uint8
    assert np.array_equal(frame, decode_tokens(b, got[-1:], offsets=None if pending is None else pending[0, -1:])[0])


def test_subtoken_frames_are_drawn_at_the_pending_motion(tiny_pair) -> None:
    wm, _, _ = tiny_pair
    b = load_bundle(wm, device="cpu")
    b.model.motion_coef[0, :5] = torch.tensor(b.encoding.yaw_centres) * -0.25  # a quarter token per degree
    ctx = torch.randint(0, 16, (2, 18, 32), generator=torch.Generator().manual_seed(3))
    turn = make_raw(yaw_deg=1.0)
    smooth, steps = Rollout(b, subtoken=True), Rollout(b)
    for ro in (smooth, steps):
        ro.warmup(ctx, np.zeros((1, 9), np.float32))
        ro.next(turn)
    pending = smooth.pending_offset()
    assert steps.pending_offset() is None and torch.allclose(pending[0], torch.full((18, 32), -0.25))
    assert torch.equal(smooth.tokens, steps.tokens)  # the tokens are the same; only the drawing moves
    assert np.array_equal(steps.frame(), decode_tokens(b, smooth.tokens[None])[0])
    assert np.array_equal(smooth.frame(), decode_tokens(b, smooth.tokens[None], offsets=pending[None])[0])
    assert not np.array_equal(smooth.frame(), steps.frame())


def test_reset_repeats_a_seeded_sampled_rollout(tiny_pair) -> None:
    wm, _, _ = tiny_pair
    b = load_bundle(wm, device="cpu")
    ctx = torch.randint(0, 16, (2, 18, 32), generator=torch.Generator().manual_seed(3))
    acts = named_script_actions("walk-forward+turn-left-360", 5)
    ro = Rollout(b, Sampling("temperature", temperature=3.0, seed=7))
    ro.warmup(ctx, np.zeros((1, RAW_DIM), np.float32))
    first = torch.stack(list(ro.run(acts)))
    ro.reset()
    again = torch.stack(list(ro.run(acts)))
    other = Rollout(b, Sampling("temperature", temperature=3.0, seed=8))
    other.warmup(ctx, np.zeros((1, RAW_DIM), np.float32))
    assert torch.equal(first, again) and not torch.equal(first, torch.stack(list(other.run(acts))))


def test_shard_contexts_and_their_checks(tiny_pair, tmp_path: Path) -> None:
    wm, _, _ = tiny_pair
    b = load_bundle(wm, device="cpu")
    shard, tokens, actions = write_shard(tmp_path / "a", b, length=15)
    ctx = load_context(f"shard:{shard}:5", b, frames=4)
    assert torch.equal(ctx.tokens, torch.from_numpy(tokens[5:9]))
    assert np.array_equal(ctx.actions, actions[5:8]) and np.array_equal(ctx.episode_actions, actions[8:])
    acts, own = resolve_actions("episode", ctx, 0)
    assert own and len(acts) == 6
    assert resolve_actions("jump", ctx, 0)[0].shape == (DEFAULT_SCRIPT_FRAMES, RAW_DIM)
    other, _, _ = write_shard(tmp_path / "b", b, length=15, identity="0123456789ab")
    with pytest.raises(IncompatibleError) as e:
        load_context(f"shard:{other}", b)
    assert str(other) in str(e.value) and str(b.vqvae_path) in str(e.value)
    with pytest.raises(ValueError, match="do not fit"):
        load_context(f"shard:{shard}:13", b, frames=4)
    meta = json.loads((tmp_path / "a" / "meta.json").read_text())
    (tmp_path / "a" / "meta.json").write_text(json.dumps({**meta, "action_schema_version": 99}))
    with pytest.raises(IncompatibleError, match="schema v99"):
        load_context(f"shard:{shard}", b)


def test_unreadable_vqvae_is_reported_with_the_world_model(tiny_pair, tmp_path: Path) -> None:
    wm, _, _ = tiny_pair
    junk = tmp_path / "junk_vqvae.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(IncompatibleError) as e:
        load_bundle(wm, vqvae_override=junk, device="cpu")
    assert str(junk) in str(e.value) and str(wm) in str(e.value)
