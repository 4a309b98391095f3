"""idm_judge.py: targets and scoring, training on frames whose motion follows the action, save/load, and
the command line on raw GameFactory-layout video."""
import json

import cv2
import numpy as np
import pytest
import torch

import idm_judge as J
from actions import ActionEncoding, make_raw, to_gamefactory


def synthetic_episodes(n: int, length: int, seed: int, turns=(-6.0, 0.0, 6.0)) -> J.PairData:
    """A camera over a flat texture: +yaw moves the content left by yaw px (turning right)."""
    rng = np.random.default_rng(seed)
    tex = cv2.GaussianBlur(rng.random((400, 800, 3)).astype(np.float32), (0, 0), 1.5)
    tex = ((tex - tex.min()) / (tex.max() - tex.min()) * 255).astype(np.uint8)
    data = J.PairData([], [], [])
    for e in range(n):
        x, y = 400.0, 200.0
        frames, acts = [], []
        for _ in range(length):
            m = np.float32([[1, 0, 64 - x], [0, 1, 36 - y]])
            frames.append(cv2.warpAffine(tex, m, (128, 72), flags=cv2.INTER_LINEAR,
                                         borderMode=cv2.BORDER_REFLECT))
            yaw = float(rng.choice(turns))
            acts.append(make_raw(yaw))
            x += yaw
        data.frames.append(np.stack(frames))
        data.actions.append(np.stack(acts[:-1]))
        data.names.append(f"ep{e}")
    return data


def test_targets_and_perfect_score():
    enc = ActionEncoding()
    raw = np.stack([make_raw(-10), make_raw(-2, 3, forward=1), make_raw(0, -3, jump=1), make_raw(6, right=1)])
    t = J.targets(raw, enc)
    assert t["yaw"].tolist() == [0, 1, 2, 4]
    assert t["pitch"].tolist() == [1, 2, 0, 1]
    assert t["keys"][:, J.KEY_NAMES.index("W")].tolist() == [False, True, False, False]
    s = J.score({"yaw": t["yaw"], "pitch": t["pitch"], "keys": t["keys"]}, raw, enc)
    assert s["camera_acc"] == 1.0 and s["key_mean_f1"] == 1.0 and s["yaw_acc_turning"] == 1.0
    wrong = {"yaw": np.full(4, 2), "pitch": t["pitch"], "keys": np.zeros_like(t["keys"])}
    s = J.score(wrong, raw, enc)
    assert s["yaw_acc"] == 0.25 and s["yaw_acc_turning"] == 0.0 and s["key_mean_f1"] == 0.0
    # Always answering "no turn": plain accuracy rewards it, balanced accuracy does not.
    assert s["yaw"]["balanced_acc"] == 0.25 and s["yaw"]["classes"]["yaw_none"]["recall"] == 1.0
    assert s["yaw"]["classes"]["yaw_hard_left"]["recall"] == 0.0 and "yaw_left" in s["yaw"]["classes"]
    assert s["camera_balanced_acc"] == (0.25 + 1.0) / 2
    assert s["keys"]["W"]["recall"] == 0.0 and np.isnan(s["keys"]["sneak"]["f1"])


def test_mirroring_swaps_left_and_right():
    assert [J.KEY_NAMES[i] for i in J._FLIP_KEYS] == ["W", "D", "S", "A", "jump", "sprint", "sneak"]


def test_judge_learns_yaw_from_motion_and_round_trips(tmp_path):
    torch.manual_seed(0)
    # Ops this small run faster on one thread, and far faster on a shared, busy 2-core machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    train = synthetic_episodes(3, 80, seed=0)
    val = synthetic_episodes(1, 60, seed=1)
    try:
        judge = J.train_judge(train, val, ActionEncoding(), steps=40, batch_size=16, lr=2e-3, width=8,
                              progress=False)
    finally:
        torch.set_num_threads(threads)
    v = judge.info["val"]
    assert v["n"] == 59
    assert v["yaw_acc"] > 0.8, v["yaw_acc"]  # three equally likely classes: chance is 1/3
    path = tmp_path / "judge.pt"
    J.save_judge(path, judge.net, judge.encoding, judge.info)
    again = J.load_judge(path)
    p1, p2 = judge.predict(val.frames[0]), again.predict(val.frames[0])
    assert all(np.array_equal(p1[k], p2[k]) for k in p1)
    assert again.info["val"]["yaw_acc"] == v["yaw_acc"]
    from ckpt_io import CheckpointError, save_checkpoint
    save_checkpoint(tmp_path / "other.pt", "vqvae", 1, {})
    with pytest.raises(CheckpointError, match="expected 'idm_judge'"):
        J.load_judge(tmp_path / "other.pt")


def test_cli_trains_on_raw_gamefactory_video(tmp_path):
    from video_io import write_mp4

    data = synthetic_episodes(3, 24, seed=2)
    (tmp_path / "src" / "video").mkdir(parents=True)
    (tmp_path / "src" / "metadata").mkdir()
    for name, frames, acts in zip(data.names, data.frames, data.actions):
        write_mp4(tmp_path / "src" / "video" / f"{name}.mp4", frames, fps=16)
        # Entry str(i) is the action that produced frame i; entry "0" belongs to no frame.
        entries = {"0": to_gamefactory(make_raw(), 0, 0, [0, 0, 0])}
        entries.update({str(i + 1): to_gamefactory(a, 0, 0, [0, 0, 0]) for i, a in enumerate(acts)})
        (tmp_path / "src" / "metadata" / f"{name}.json").write_text(json.dumps(
            {"biome": "plains", "initial_weather": "clear", "start_time": "Noon", "actions": entries}))
    out = tmp_path / "judge.pt"
    assert J.main(["--data", str(tmp_path / "src"), "--out", str(out), "--steps", "3", "--batch-size", "8",
                   "--width", "4", "--val-fraction", "0.34", "--device", "cpu"]) == 0
    judge = J.load_judge(out)
    assert judge.info["source"] == "raw-video"
    assert len(judge.info["train_episodes"]) == 2 and judge.info["val"]["n"] == 23
    with pytest.raises(SystemExit) as e:
        J.main(["--out", str(out)])
    assert e.value.code == 2
