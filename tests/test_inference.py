"""inference.py: mp4s with the right frame count and size, --compare layout and ground truth, contexts from
shards, videos and PNGs, the CLI (help, clean errors)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from actions import make_raw, to_gamefactory
from inference import InferenceConfig, run, upscaled_path
from action_scripts import named_script_actions
from rollout import decode_tokens, load_bundle
from test_rollout import tiny_pair, write_shard  # noqa: F401  (tiny_pair is a fixture)
from video_io import probe, read_frames, write_mp4


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    """Tiny models on a shared 2-core machine: one thread avoids OpenMP barrier stalls when the cores are busy."""
    torch.set_num_threads(1)


def test_writes_native_and_upscaled_mp4_with_the_right_frame_count(tiny_pair, tmp_path: Path) -> None:  # noqa: F811
    wm, _, png_dir = tiny_pair
    out = tmp_path / "out.mp4"
    summary = run(InferenceConfig(model=str(wm), context=f"png:{png_dir}", actions="turn-left-360", frames=7,
                                  out=str(out), upscale=4, device="cpu"))
    frames = read_frames(out)
    assert frames.shape == (7, 72, 128, 3)
    assert probe(out).fps == pytest.approx(16.0)
    up = read_frames(upscaled_path(out, 4))
    assert up.shape == (7, 288, 512, 3)
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["frames"] == 7 == summary["frames"] and meta["context_frames"] == 3
    yaw = sum(e.get("yaw_deg", 0) * e.get("repeat", 1) for e in meta["actions"])
    assert yaw == pytest.approx(-360.0, abs=1e-3)


def test_compare_puts_the_shard_truth_beside_the_model(tiny_pair, tmp_path: Path) -> None:  # noqa: F811
    wm, vq, _ = tiny_pair
    bundle = load_bundle(wm, device="cpu")
    shard, tokens, _ = write_shard(tmp_path / "shards", bundle, length=20)
    out = tmp_path / "cmp.mp4"
    run(InferenceConfig(model=str(wm), context=f"shard:{shard}:3", context_frames=4, actions="episode", frames=6,
                        compare=True, out=str(out), upscale=2, device="cpu"))
    frames = read_frames(out)
    assert frames.shape == (6, 72, 256, 3)
    assert read_frames(upscaled_path(out, 2)).shape == (6, 144, 512, 3)
    # right half: frames 7..12 of the shard (context 3..6), as the VQ-VAE decodes them (codec tolerance)
    truth = decode_tokens(bundle, tokens[7:13])
    err = np.abs(frames[:, :, 128:].astype(int) - truth.astype(int)).mean()
    wrong = np.abs(frames[:, :, 128:].astype(int) - decode_tokens(bundle, tokens[8:14]).astype(int)).mean()
    assert err < 6 and err < wrong


def test_compare_needs_a_ground_truth(tiny_pair, tmp_path: Path) -> None:  # noqa: F811
    wm, _, png_dir = tiny_pair
    bundle = load_bundle(wm, device="cpu")
    shard, _, _ = write_shard(tmp_path / "shards", bundle, length=12)
    for ctx, actions in ((f"png:{png_dir}", "noop"), (f"shard:{shard}", "walk-forward")):
        with pytest.raises(ValueError, match="ground truth"):
            run(InferenceConfig(model=str(wm), context=ctx, actions=actions, frames=3, compare=True,
                                out=str(tmp_path / "x.mp4"), device="cpu"))
    with pytest.raises(ValueError, match="has 3 actions after the context"):
        run(InferenceConfig(model=str(wm), context=f"shard:{shard}:4", context_frames=5, actions="episode",
                            frames=4, out=str(tmp_path / "x.mp4"), device="cpu"))
    assert not (tmp_path / "x.mp4").exists()


def test_video_context_with_gamefactory_actions_compares_with_the_video(tiny_pair, tmp_path: Path) -> None:  # noqa: F811
    wm, _, _ = tiny_pair
    rng = np.random.default_rng(0)
    n = 12
    video = rng.integers(0, 255, (n, 72, 128, 3), dtype=np.uint8)
    video[..., 0] = np.arange(n)[:, None, None] * 20  # frames distinguishable by their red level
    (tmp_path / "video").mkdir()
    (tmp_path / "metadata").mkdir()
    write_mp4(tmp_path / "video" / "ep.mp4", video, 16)
    acts = {str(i): to_gamefactory(make_raw(yaw_deg=15.0 * (i % 2), forward=1), 0, 0, (0, 0, 0)) for i in range(n)}
    (tmp_path / "metadata" / "ep.json").write_text(json.dumps({"biome": "plains", "actions": acts}))
    out = tmp_path / "v.mp4"
    summary = run(InferenceConfig(model=str(wm), context=f"video:{tmp_path / 'video' / 'ep.mp4'}:2",
                                  context_frames=3, actions="episode", compare=True, out=str(out), upscale=1,
                                  device="cpu"))
    assert summary["frames"] == n - 5 and summary["own_episode_actions"]
    frames = read_frames(out)
    assert frames.shape == (n - 5, 72, 256, 3) and not upscaled_path(out, 1).exists()
    truth = read_frames(tmp_path / "video" / "ep.mp4")[5:]
    red = frames[:, :, 128:, 0].astype(float).mean(axis=(1, 2))
    assert np.abs(red - truth[..., 0].mean(axis=(1, 2))).max() < 8
    yaw = [e.get("yaw_deg", 0.0) for e in json.loads(out.with_suffix(".json").read_text())["actions"]]
    # the first generated frame is video frame 5, produced by entry "5" (odd -> 15 degrees), as GameFactory aligns
    assert yaw[:3] == [15.0, 0.0, 15.0]


def test_cli_help_documents_specs_and_errors_are_clean(tiny_pair, tmp_path: Path,  # noqa: F811
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture) -> None:
    import inference

    monkeypatch.setattr(sys, "argv", ["inference.py", "--help"])
    with pytest.raises(SystemExit) as e:
        inference.main()
    out = capsys.readouterr().out
    assert e.value.code == 0
    for text in ("shard:PATH.npz[:START]", "blockworld:SEED", "turn-left-360", "repeat", "--compare"):
        assert text in out
    wm, _, png_dir = tiny_pair
    monkeypatch.setattr(sys, "argv", ["inference.py", "--model", str(wm), "--context", f"png:{png_dir}",
                                      "--actions", "no-such-script.json", "--out", str(tmp_path / "o.mp4")])
    with pytest.raises(SystemExit) as e:
        inference.main()
    err = capsys.readouterr().err
    assert e.value.code == 2 and "no-such-script.json" in err and "Traceback" not in err
    assert not (tmp_path / "o.mp4").exists()


def test_blockworld_compare_renders_the_oracle_for_any_actions(tiny_pair, tmp_path: Path) -> None:  # noqa: F811
    from blockworld import World, render, step
    from blockworld import rollout as oracle_rollout

    from actions import noop

    wm, _, _ = tiny_pair
    acts = named_script_actions("walk-forward+turn-right-360", 4)
    out = tmp_path / "bw.mp4"
    run(InferenceConfig(model=str(wm), context="blockworld:5", context_frames=2, actions="walk-forward+turn-right-360",
                        frames=4, compare=True, out=str(out), upscale=1, device="cpu"))
    frames = read_frames(out)
    assert frames.shape == (4, 72, 256, 3)
    world = World(5)
    state = step(world, world.spawn(5), noop())
    truth = oracle_rollout(world, state, acts, (128, 72))
    assert np.abs(frames[:, :, 128:].astype(int) - truth.astype(int)).mean() < 6
    assert np.abs(frames[1, :, 128:].astype(int) - render(world, state, (128, 72)).astype(int)).mean() > 10


def test_generated_blockworld_video_gets_the_oracle(tiny_pair, tmp_path: Path) -> None:  # noqa: F811
    from blockworld.generate import GenerateConfig, write_episode

    wm, _, _ = tiny_pair
    write_episode(GenerateConfig(out=str(tmp_path / "bw"), episodes=1, seconds=1.0, seed=2), 0)
    video = tmp_path / "bw" / "video" / "seed_2_part_0.mp4"
    own = tmp_path / "own.mp4"
    run(InferenceConfig(model=str(wm), context=f"video:{video}:3", context_frames=3, actions="episode", frames=5,
                        compare=True, out=str(own), upscale=1, device="cpu"))
    oracle = tmp_path / "oracle.mp4"
    ctx_actions = tmp_path / "acts.json"
    ctx_actions.write_text(json.dumps(json.loads(own.with_suffix(".json").read_text())["actions"]))
    # the same actions given as a script: the truth now comes from the simulator replaying the episode
    run(InferenceConfig(model=str(wm), context=f"video:{video}:3", context_frames=3, actions=str(ctx_actions),
                        frames=5, compare=True, out=str(oracle), upscale=1, device="cpu"))
    a, b = read_frames(own)[:, :, 128:], read_frames(oracle)[:, :, 128:]
    assert np.abs(a.astype(int) - b.astype(int)).mean() < 6
