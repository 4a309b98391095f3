"""sources.py: discovery per layout, per-source alignment, resampling on the source timeline, decoding."""
import json

import numpy as np
import pytest

from actions import RAW, aggregate, from_gamefactory, from_vpt_line
from sources import (SourceError, decode_kept, discover, load_alignment, plan_kept_frames,
                     resample_actions)
from preprocess_fixtures import write_gamefactory, write_minerl, write_vpt
from video_io import VideoError, read_frames


def test_discover_layouts_names_and_mismatches(tmp_path):
    write_gamefactory(tmp_path / "gf", "seed_1_part_1", 6, 0)
    write_gamefactory(tmp_path / "side", "clip", 6, 1, layout="sibling")
    write_minerl(tmp_path / "mrl", "MineRLNavigate-v0", "v3_x", 5, 1, 2)
    write_vpt(tmp_path / "vpt", "cheeky-cornflower", 6, 3)
    # name mismatch: a video whose JSON is named differently, and an orphan JSONL
    write_gamefactory(tmp_path / "gf", "seed_2_part_2", 6, 4)
    (tmp_path / "gf/metadata/seed_2_part_2.json").rename(tmp_path / "gf/metadata/seed_2_part.json")
    (tmp_path / "vpt/orphan.jsonl").write_text("{}\n")
    eps, problems = discover(tmp_path)
    got = {(e.name, e.source) for e in eps}
    assert got == {("gf__seed_1_part_1", "gamefactory"), ("side__clip", "gamefactory"),
                   ("mrl__MineRLNavigate-v0__v3_x", "minerl"), ("vpt__cheeky-cornflower", "vpt")}
    reasons = {p.split("/")[-1]: r for p, r in problems}
    assert "no matching action file" in reasons["seed_2_part_2.mp4"]
    assert "no matching video" in reasons["seed_2_part.json"]
    assert "no matching video" in reasons["orphan.jsonl"]
    mrl = next(e for e in eps if e.source == "minerl")
    assert mrl.actions.name == "rendered.npz" and mrl.metadata.name == "metadata.json"
    only_vpt, _ = discover(tmp_path, "vpt")
    assert [e.source for e in only_vpt] == ["vpt"]


def test_gamefactory_alignment_entry_i_produced_frame_i(tmp_path):
    fx = write_gamefactory(tmp_path, "a", 10, 0)
    ep = discover(tmp_path)[0][0]
    al = load_alignment(ep)
    assert (al.offset, al.frames, al.video_frames, al.label) == (0, 10, 10, "gamefactory")
    np.testing.assert_array_equal(al.actions[0], 0)
    for i in range(1, 10):
        np.testing.assert_array_equal(al.actions[i], from_gamefactory(fx["doc"]["actions"][str(i)]))
    np.testing.assert_allclose(al.actions[1:, RAW["yaw_deg"]], fx["yaw"][1:], atol=1e-5)
    doc = fx["doc"]
    doc["blockworld"] = {"seed": 1}
    fx["json"].write_text(json.dumps(doc))
    assert load_alignment(ep).label == "blockworld"


@pytest.mark.parametrize("edit,match", [
    (lambda d: d["actions"].pop("4"), "missing for 1 frames"),
    (lambda d: d["actions"]["3"].update(yaw_delta=float("nan")), "not finite"),
    (lambda d: d["actions"]["3"].update(pitch_delta=float("inf")), "not finite"),
    (lambda d: d["actions"]["3"].update(ws=7), "out of range"),
    (lambda d: d.pop("actions"), "no 'actions'"),
])
def test_gamefactory_bad_actions(tmp_path, edit, match):
    fx = write_gamefactory(tmp_path, "a", 8, 0)
    edit(fx["doc"])
    fx["json"].write_text(json.dumps(fx["doc"]))
    with pytest.raises(SourceError, match=match) as e:
        load_alignment(discover(tmp_path)[0][0])
    assert "a.json" in str(e.value)


def test_invalid_and_unreadable_json(tmp_path):
    fx = write_gamefactory(tmp_path, "a", 6, 0)
    ep = discover(tmp_path)[0][0]
    fx["json"].write_text('{"actions": {"0": ')
    with pytest.raises(SourceError, match="invalid JSON"):
        load_alignment(ep)
    fx["json"].write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(SourceError, match="a.json"):
        load_alignment(ep)
    fx["json"].unlink()
    fx["json"].mkdir()
    with pytest.raises(SourceError, match="unreadable file"):
        load_alignment(ep)


def test_minerl_alignment_skips_leading_frames(tmp_path):
    fx = write_minerl(tmp_path, "MineRLTreechop-v0", "v3_s", n_actions=12, lead=3, seed=0)
    ep = discover(tmp_path)[0][0]
    al = load_alignment(ep)
    assert (al.offset, al.frames, al.video_frames) == (3, 13, 16)
    np.testing.assert_allclose(al.actions[1:, RAW["yaw_deg"]], fx["yaw"])
    np.testing.assert_allclose(al.actions[1:, RAW["pitch_deg"]], fx["pitch"])
    np.testing.assert_array_equal(al.actions[1:, RAW["forward"]], fx["arrays"]["action$forward"])
    meta = json.loads((fx["dir"] / "metadata.json").read_text())
    meta["true_video_frame_count"] = 10  # fewer frames than states
    (fx["dir"] / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(SourceError, match="more action entries than frames"):
        load_alignment(ep)
    del meta["true_video_frame_count"]  # older data: the video header decides
    (fx["dir"] / "metadata.json").write_text(json.dumps(meta))
    assert load_alignment(ep, header_frames=16).offset == 3


def test_vpt_alignment_line_i_taken_on_frame_i(tmp_path):
    fx = write_vpt(tmp_path, "seg", 10, 0)
    al = load_alignment(discover(tmp_path)[0][0])
    assert (al.offset, al.frames, al.video_frames, al.label) == (0, 10, 10, "vpt")
    for i, line in enumerate(fx["lines"][:-1]):
        np.testing.assert_array_equal(al.actions[i + 1], from_vpt_line(line))
    np.testing.assert_array_equal(al.actions[fx["null_line"] + 1], 0)  # null line = no-op
    fx["jsonl"].write_text(fx["jsonl"].read_text().replace('"tick": 2', '"tick": 2,,'))
    with pytest.raises(SourceError, match="line 3"):
        load_alignment(discover(tmp_path)[0][0])


def test_plan_kept_frames_same_fps_and_20_to_16():
    np.testing.assert_array_equal(plan_kept_frames(40, 16.0, 16.0, 1.0), np.arange(16, 40))
    np.testing.assert_array_equal(plan_kept_frames(40, 15.995, 16.0, 0.0), np.arange(40))  # rounding
    kept = plan_kept_frames(41, 20.0, 16.0, 0.0)
    # 1.25 source frames per output frame: 0, 1.25, 2.5, 3.75, 5 ... rounded half up
    np.testing.assert_array_equal(kept[:9], [0, 1, 3, 4, 5, 6, 8, 9, 10])
    assert kept[-1] == 40 and len(kept) == 33
    assert plan_kept_frames(41, 20.0, 16.0, 1.0)[0] == 20
    assert len(plan_kept_frames(10, 16.0, 16.0, 1.0)) == 0
    with pytest.raises(SourceError, match="no upsampling"):
        plan_kept_frames(40, 10.0, 16.0, 0.0)


def test_resample_20_to_16_aggregates_each_interval():
    n = 41
    rng = np.random.default_rng(0)
    actions = np.zeros((n, 9), np.float32)
    actions[1:, RAW["yaw_deg"]] = rng.normal(0, 3, n - 1)
    actions[1:, RAW["pitch_deg"]] = 1.0
    actions[1:, RAW["forward"]] = np.arange(1, n) % 2  # held on odd source steps
    kept = plan_kept_frames(n, 20.0, 16.0, 0.0)
    out = resample_actions(actions, kept)
    assert out.shape == (len(kept) - 1, 9)
    for j in range(len(kept) - 1):
        steps = actions[kept[j] + 1:kept[j + 1] + 1]  # the actions producing frames kept[j]+1 .. kept[j+1]
        np.testing.assert_allclose(out[j], aggregate(steps), rtol=1e-6)
        assert out[j, RAW["pitch_deg"]] == len(steps)  # camera summed
    # camera is conserved over the whole clip; keys are fractions of the interval
    np.testing.assert_allclose(out[:, RAW["yaw_deg"]].sum(), actions[1:, RAW["yaw_deg"]].sum(), rtol=1e-5)
    assert set(np.round(out[:, RAW["forward"]], 3)) <= {0.0, 0.5, 1.0}
    assert 0.5 in set(np.round(out[:, RAW["forward"]], 3))


def test_decode_kept_frames_and_count_mismatch(tmp_path):
    fx = write_gamefactory(tmp_path, "a", 12, 0)
    full = read_frames(fx["video"])
    kept = np.array([2, 5, 6, 11])
    chunks = list(decode_kept(fx["video"], kept, (64, 36), 12, chunk=3))
    assert [len(c) for c in chunks] == [3, 1]
    frames = np.concatenate(chunks)
    assert frames.shape == (4, 36, 64, 3)
    import cv2
    np.testing.assert_array_equal(frames[1], cv2.resize(full[5], (64, 36), interpolation=cv2.INTER_AREA))
    with pytest.raises(VideoError, match="decoded 12 frames but the actions cover 14"):
        list(decode_kept(fx["video"], kept, (128, 72), 14))
    with pytest.raises(VideoError, match="more frames than action entries"):
        list(decode_kept(fx["video"], np.array([2, 5]), (128, 72), 11))
