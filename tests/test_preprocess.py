"""preprocess.py end to end on CPU with a tiny random VQ-VAE: every source's alignment down to the shard,
20 -> 16 fps aggregation, bad input skipped and reported, resume after an interrupted run, refusal to mix
settings, worker processes and torchrun ranks, and `--check` lag detection."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import preprocess
from actions import RAW, VPT_DEG_PER_PIXEL, from_gamefactory
from dataset import TokenWindowDataset, open_shard
from preprocess import PreprocessConfig, main, run
from preprocess_check import run_check
from preprocess_fixtures import (tiny_vqvae, write_gamefactory, write_minerl, write_vpt,
                                 write_zero_frame_mp4)
from video_io import read_frames

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def vq(tmp_path_factory):
    from vq_vae import load_vqvae

    path = tiny_vqvae(tmp_path_factory.mktemp("vq") / "vq.pt")
    return path, load_vqvae(path)


def cfg_for(data, vq_path, out, **kw):
    return PreprocessConfig(data=str(data), vqvae=str(vq_path), out=str(out), **kw)


def shard(out, name):
    return {k: np.array(v) for k, v in open_shard(Path(out) / f"{name}.npz").items()}


def test_every_source_aligned_down_to_the_shard(tmp_path, vq):
    vq_path, model = vq
    data = tmp_path / "data"
    gf = write_gamefactory(data / "gf", "seed_1_part_1", 40, 0)
    mrl = write_minerl(data / "mrl", "MineRLTreechop-v0", "v3_a", n_actions=44, lead=4, seed=1)
    vpt = write_vpt(data / "vpt", "seg", 50, 2)
    out = tmp_path / "out"
    report = run(cfg_for(data, vq_path, out, skip_start_seconds=1.0))
    assert report["totals"]["videos_ok"] == 3 and not report["skipped"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert {(e["file"], e["source"], e["fps"]) for e in manifest} == {
        ("gf__seed_1_part_1.npz", "gamefactory", 16.0), ("mrl__MineRLTreechop-v0__v3_a.npz", "minerl", 16.0),
        ("vpt__seg.npz", "vpt", 16.0)}
    meta = json.loads((out / "meta.json").read_text())
    assert meta["codebook_size"] == 64 and meta["grid"] == [18, 32] and meta["frame_size"] == [128, 72]

    def check_tokens(s, video):
        assert s["tokens"].dtype == np.uint16 and s["actions"].dtype == np.float32
        assert s["frame_index"].dtype == np.int32 and len(s["actions"]) == len(s["tokens"]) - 1
        frames = read_frames(video)[s["frame_index"]]
        np.testing.assert_array_equal(s["tokens"], model.encode(frames).numpy())

    # GameFactory, 16 fps: first second dropped, entry str(i) is the action into frame i
    s = shard(out, "gf__seed_1_part_1")
    np.testing.assert_array_equal(s["frame_index"], np.arange(16, 40))
    want = np.stack([from_gamefactory(gf["doc"]["actions"][str(i)]) for i in range(17, 40)])
    np.testing.assert_allclose(s["actions"], want, rtol=1e-6)
    check_tokens(s, gf["video"])

    # MineRL, 20 -> 16 fps: 4 leading frames skipped, then 1 s; action[k] moves state k to k + 1
    s = shard(out, "mrl__MineRLTreechop-v0__v3_a")
    states = 20 + np.floor(np.arange(20) * 1.25 + 0.5).astype(int)  # 20, 21, 23, 24, 25, 26, 28, ...
    np.testing.assert_array_equal(s["frame_index"], 4 + states)
    for j in range(len(states) - 1):
        a, b = states[j], states[j + 1]
        assert s["actions"][j, RAW["yaw_deg"]] == pytest.approx(mrl["yaw"][a:b].sum(), abs=1e-5)
        assert s["actions"][j, RAW["pitch_deg"]] == pytest.approx(mrl["pitch"][a:b].sum(), abs=1e-5)
        assert s["actions"][j, RAW["forward"]] == pytest.approx(mrl["arrays"]["action$forward"][a:b].mean())
        assert s["actions"][j, RAW["jump"]] == pytest.approx(mrl["arrays"]["action$jump"][a:b].mean())
    assert {1, 2} <= {b - a for a, b in zip(states, states[1:])}
    check_tokens(s, mrl["dir"] / "recording.mp4")

    # VPT, 20 -> 16 fps: line i is taken on frame i, so lines a .. b-1 move frame a to frame b
    s = shard(out, "vpt__seg")
    kept = s["frame_index"]
    assert kept[0] == 20 and np.all(np.diff(kept) >= 1)
    dx = np.array([0.0 if line is None else line["mouse"]["dx"] for line in vpt["lines"]])
    for j in range(len(kept) - 1):
        a, b = kept[j], kept[j + 1]
        assert s["actions"][j, RAW["yaw_deg"]] == pytest.approx(dx[a:b].sum() * VPT_DEG_PER_PIXEL, abs=1e-4)
    check_tokens(s, vpt["video"])

    # the aligned data also passes the lag check: image motion matches the actions at lag 0
    rep = run_check(PreprocessConfig(check=str(data), skip_start_seconds=0.5))
    assert [v["lag"] for v in rep["videos"]] == [0, 0, 0] and rep["overall_lag"] == 0
    assert not [w for w in rep["warnings"] if "lag" in w or "sign" in w]


def _bad_dataset(data: Path) -> dict[str, str]:
    """Two good GameFactory videos and one of each kind of bad input; returns {file name: reason words}."""
    write_gamefactory(data, "good_1", 24, 0)
    write_gamefactory(data, "good_2", 24, 1)
    expect = {}
    fx = write_gamefactory(data, "truncated", 24, 2)
    raw = fx["video"].read_bytes()
    fx["video"].write_bytes(raw[: len(raw) // 2])
    expect["truncated.mp4"] = "unreadable video"
    fx = write_gamefactory(data, "garbage", 24, 3)
    fx["video"].write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    expect["garbage.mp4"] = "unreadable video"
    fx = write_gamefactory(data, "empty", 24, 4)
    write_zero_frame_mp4(fx["video"])
    expect["empty.mp4"] = "no video stream"
    fx = write_gamefactory(data, "nojson", 24, 5)
    fx["json"].rename(data / "metadata" / "nojson_renamed.json")
    expect["nojson.mp4"] = "no matching action file"
    expect["nojson_renamed.json"] = "no matching video"
    fx = write_gamefactory(data, "badjson", 24, 6)
    fx["json"].write_text(fx["json"].read_text()[:-40])
    expect["badjson.mp4"] = "invalid JSON"
    fx = write_gamefactory(data, "fewer", 24, 7)
    doc = fx["doc"]
    for k in ("22", "23"):
        del doc["actions"][k]
    fx["json"].write_text(json.dumps(doc))
    expect["fewer.mp4"] = "fewer action entries than frames"
    fx = write_gamefactory(data, "more", 24, 8)
    doc = fx["doc"]
    doc["actions"]["24"] = doc["actions"]["25"] = doc["actions"]["23"]
    fx["json"].write_text(json.dumps(doc))
    expect["more.mp4"] = "more action entries than frames"
    for name, value in (("nan", float("nan")), ("inf", float("-inf"))):
        fx = write_gamefactory(data, name, 24, 9)
        fx["doc"]["actions"]["5"]["yaw_delta"] = value  # json writes NaN / -Infinity, as Python readers accept
        fx["json"].write_text(json.dumps(fx["doc"]))
        expect[f"{name}.mp4"] = "not finite"
    fx = write_gamefactory(data, "unreadable", 24, 10)
    fx["json"].unlink()
    fx["json"].mkdir()  # a path that exists but cannot be read as a file
    expect["unreadable.mp4"] = "unreadable file"
    return expect


def test_bad_input_is_skipped_named_and_reported(tmp_path, vq, capsys):
    vq_path, _ = vq
    data, out = tmp_path / "data", tmp_path / "out"
    expect = _bad_dataset(data)
    argv = ["--data", str(data), "--vqvae", str(vq_path), "--out", str(out), "--skip-start-seconds", "0.5"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "preprocess_report.json").read_text())
    assert report["totals"]["videos_ok"] == 2
    assert sorted(e["file"] for e in json.loads((out / "manifest.json").read_text())) == \
        ["good_1.npz", "good_2.npz"]
    skipped = {Path(s["file"]).name: s["reason"] for s in report["skipped"]}
    assert set(skipped) == set(expect)
    for name, words in expect.items():
        assert words in skipped[name], (name, skipped[name])
        line = next(x for x in printed.splitlines() if x.startswith("skip ") and name in x)
        assert words in line
    assert sorted(p.name for p in out.iterdir()) == ["good_1.npz", "good_2.npz", "manifest.json",
                                                     "meta.json", "preprocess_report.json"]
    # --strict fails when anything was skipped (the good videos are resumed, not redone)
    assert main(argv + ["--strict"]) == 1
    assert json.loads((out / "preprocess_report.json").read_text())["totals"]["videos_resumed"] == 2
    # nothing processed at all: non-zero
    for p in (data / "video").glob("good_*.mp4"):
        p.unlink()
    assert main(["--data", str(data), "--vqvae", str(vq_path), "--out", str(tmp_path / "out2")]) == 1


def test_resume_after_interrupted_run_matches_a_clean_run(tmp_path, vq):
    vq_path, _ = vq
    data = tmp_path / "data"
    for i in range(3):
        write_gamefactory(data, f"ep{i}", 24, i)
    out = tmp_path / "out"

    def interrupt(name):
        raise KeyboardInterrupt(f"killed after {name}")

    with pytest.raises(KeyboardInterrupt):
        run(cfg_for(data, vq_path, out, skip_start_seconds=0.5), after_shard=interrupt)
    assert sorted(p.name for p in out.iterdir()) == ["ep0.npz", "meta.json"]  # nothing half-written
    report = run(cfg_for(data, vq_path, out, skip_start_seconds=0.5))
    assert report["resumed"] == ["ep0"] and sorted(o["name"] for o in report["ok"]) == ["ep1", "ep2"]
    # a clean run with a decode worker process gives identical shards
    clean = tmp_path / "clean"
    report = run(cfg_for(data, vq_path, clean, skip_start_seconds=0.5, workers=1))
    assert report["totals"]["videos_ok"] == 3
    assert (out / "manifest.json").read_text() == (clean / "manifest.json").read_text()
    for i in range(3):
        a, b = shard(out, f"ep{i}"), shard(clean, f"ep{i}")
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])


def test_refuses_to_mix_settings_or_tokenizers(tmp_path, vq):
    vq_path, _ = vq
    data, out = tmp_path / "data", tmp_path / "out"
    write_gamefactory(data, "ep", 24, 0)
    run(cfg_for(data, vq_path, out, skip_start_seconds=0.5))
    with pytest.raises(SystemExit, match="(?s)refusing to mix.*fps"):
        run(cfg_for(data, vq_path, out, skip_start_seconds=0.5, fps=8.0))
    other = tiny_vqvae(tmp_path / "other.pt", seed=1)
    with pytest.raises(SystemExit, match="vqvae_identity"):
        run(cfg_for(data, other, out, skip_start_seconds=0.5))
    report = run(cfg_for(data, other, out, skip_start_seconds=0.5, fps=8.0, overwrite=True))
    assert report["totals"]["videos_ok"] == 1
    assert json.loads((out / "meta.json").read_text())["fps"] == 8.0
    assert len(shard(out, "ep")["tokens"]) == 8  # 24 frames, 0.5 s skipped, every second frame kept


def test_check_finds_injected_lag(tmp_path, capsys):
    for lag in (0, 1):
        data = tmp_path / f"lag{lag}"
        for i in range(2):
            write_gamefactory(data, f"ep{i}", 40, 10 + i, lag=lag)
        assert main(["--check", str(data), "--out", str(tmp_path / f"rep{lag}")]) == 0
        rep = json.loads((tmp_path / f"rep{lag}" / "check_report.json").read_text())
        assert rep["overall_lag"] == lag
        assert [v["lag"] for v in rep["videos"]] == [lag, lag]
        printed = capsys.readouterr().out
        assert ("WARNING: overall lag is +1" in printed) == (lag == 1)
        stats = rep["statistics"]
        assert stats["steps"] == 2 * 23 and set(stats["key_held_fraction"]) >= {"forward", "jump"}
        assert 0 <= stats["cooccurrence"]["camera_given_move"] <= 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_ranks_split_videos_and_rank0_merges(tmp_path, vq, monkeypatch):
    """Two ranks as torchrun would start them: rank 1 a separate process, rank 0 this one."""
    vq_path, _ = vq
    data, out = tmp_path / "data", tmp_path / "out"
    for i in range(3):
        write_gamefactory(data, f"ep{i}", 20, i)
    env = {"WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}
    rank1 = subprocess.Popen(
        [sys.executable, str(ROOT / "preprocess.py"), "--data", str(data), "--vqvae", str(vq_path),
         "--out", str(out), "--skip-start-seconds", "0.5", "--device", "cpu"],
        env={**os.environ, **env, "RANK": "1", "LOCAL_RANK": "1", "OMP_NUM_THREADS": "1"}, cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for key, value in {**env, "RANK": "0", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(key, value)
    try:
        report = run(cfg_for(data, vq_path, out, skip_start_seconds=0.5, device="cpu"))
    finally:
        output = rank1.communicate(timeout=120)[0]
    assert rank1.returncode == 0, output
    assert report["ranks"] == 2 and report["totals"]["videos_ok"] == 3
    assert sorted(o["rank"] for o in report["ok"]) == [0, 1, 1]  # balanced by file size, 2 + 1 videos
    assert [e["file"] for e in json.loads((out / "manifest.json").read_text())] == \
        ["ep0.npz", "ep1.npz", "ep2.npz"]
    assert not (out / preprocess.PARTS_DIR).exists()
    ds = TokenWindowDataset(out, 4)
    assert len(ds) == 3 * (12 - 4 + 1)


@pytest.fixture(scope="module")
def blockworld_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("blockworld") / "bw"
    subprocess.run([sys.executable, "-m", "blockworld.generate", "--out", str(out), "--episodes", "2",
                    "--seconds", "4", "--seed", "0", "--size", "128x72"],
                   cwd=ROOT, check=True, capture_output=True, timeout=300)
    return out


def test_blockworld_to_shards_to_windows(tmp_path, vq, blockworld_data):
    vq_path, model = vq
    out = tmp_path / "shards"
    report = run(cfg_for(blockworld_data, vq_path, out, skip_start_seconds=1.0))
    assert report["totals"]["videos_ok"] == 2 and not report["skipped"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert [(e["file"], e["length"], e["source"]) for e in manifest] == [
        ("seed_0_part_0.npz", 48, "blockworld"), ("seed_0_part_1.npz", 48, "blockworld")]
    s = shard(out, "seed_0_part_0")
    doc = json.loads((blockworld_data / "metadata" / "seed_0_part_0.json").read_text())
    want = np.stack([from_gamefactory(doc["actions"][str(i)]) for i in range(17, 64)])
    np.testing.assert_allclose(s["actions"], want, rtol=1e-6)
    frames = read_frames(blockworld_data / "video" / "seed_0_part_0.mp4")
    np.testing.assert_array_equal(s["tokens"], model.encode(frames[s["frame_index"]]).numpy())
    ds = TokenWindowDataset(out, 16)
    assert len(ds) == 2 * (48 - 16 + 1)
    item = ds[len(ds) - 1]
    assert item["file"] == "seed_0_part_1.npz" and item["start"] == 32
    np.testing.assert_array_equal(item["tokens"].numpy(), shard(out, "seed_0_part_1")["tokens"][32:48])


def test_check_finds_lag_plus_one_on_blockworld(tmp_path, blockworld_data):
    import shutil

    from preprocess_fixtures import inject_lag

    lagged = tmp_path / "lagged"
    shutil.copytree(blockworld_data, lagged)
    for path in (lagged / "metadata").glob("*.json"):
        inject_lag(path, 1)
    clean = run_check(PreprocessConfig(check=str(blockworld_data), skip_start_seconds=0.25))
    late = run_check(PreprocessConfig(check=str(lagged), skip_start_seconds=0.25))
    assert clean["overall_lag"] == 0 and late["overall_lag"] == 1
    assert not [w for w in clean["warnings"] if "lag" in w or "peak" in w]
    assert any("overall lag is +1" in w for w in late["warnings"])
