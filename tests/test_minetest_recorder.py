"""minetest_recorder: a real 3-second Minetest episode (layout, frame count, pose/action agreement, read by
preprocess.py), teardown after success, a client crash and Ctrl-C, and the one-line bad-input errors.

Needs `apt-get install -y minetest xvfb` (.ci/run installs them); skipped with that reason otherwise."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

import video_io
from actions import RAW, from_gamefactory
from minetest_recorder.__main__ import _summary_line, main
from minetest_recorder.game import find_binary
from sources import discover, load_alignment

ROOT = Path(__file__).resolve().parents[1]
INSTALLED = find_binary("minetest") is not None and find_binary("Xvfb") is not None
needs_minetest = pytest.mark.skipif(not INSTALLED, reason="minetest/Xvfb not installed "
                                    "(apt-get install -y minetest xvfb; .ci/run installs them)")
TAG = "OCHRE_RECORDER_TEST"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_recorder(out: Path, tag: str, *args: str, seconds: float = 3) -> subprocess.Popen:
    """The recorder in a subprocess; every process it starts inherits `tag` in its environment, which is
    how leftovers are found."""
    cmd = [sys.executable, "-m", "minetest_recorder", "--out", str(out), "--seconds", str(seconds), "--seed", "0",
           "--warmup", "2", "--port", str(free_udp_port()), *args]
    # SIGINT back to its default: a shell without job control starts background jobs (a CI runner's `cmd &`)
    # with SIGINT ignored, the child inherits that, and Python then installs no Ctrl-C handler at all.
    return subprocess.Popen(cmd, cwd=ROOT, env=dict(os.environ, **{TAG: tag}), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def tagged_processes(tag: str) -> list[str]:
    """Processes (other than zombies) whose environment carries the tag: what a recorder left running."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            if f"{TAG}={tag}".encode() not in (d / "environ").read_bytes().split(b"\0"):
                continue
            state = (d / "stat").read_text().rsplit(")", 1)[1].split()[0]
            if state != "Z":
                cmdline = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                found.append(f"{d.name}: {cmdline}")
        except OSError:  # the process ended while we looked
            continue
    return found


def wait_for(predicate, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def wait_for_player(out: Path) -> None:
    """Until the first episode's player has joined its world (the server mod's log exists)."""
    pose_log = out / ".recording" / "seed_0_part_0" / "world" / "ochre_pose.log"
    wait_for(pose_log.exists, 120, "the first episode's player to join")


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    out = tmp_path_factory.mktemp("minetest")
    tag = uuid.uuid4().hex
    p = start_recorder(out, tag, "--episodes", "1")
    stdout, stderr = p.communicate(timeout=240)
    return out, tag, p.returncode, stdout, stderr


@needs_minetest
def test_records_one_episode_in_gamefactory_layout(recorded):
    out, tag, rc, stdout, stderr = recorded
    assert rc == 0, stderr[-2000:]
    assert json.loads(stdout.strip().splitlines()[-1])["episodes"] == 1
    video, meta_path = out / "video" / "seed_0_part_0.mp4", out / "metadata" / "seed_0_part_0.json"
    info = video_io.probe(video)
    assert (info.width, info.height, info.fps) == (640, 360, 16)
    frames = video_io.read_frames(video)
    meta = json.loads(meta_path.read_text())
    assert len(frames) == 48 and sorted(meta["actions"], key=int) == [str(i) for i in range(48)]
    assert not np.any(from_gamefactory(meta["actions"]["0"])), "entry 0 is the start: a no-op"
    assert (out / "annotation.csv").read_text().splitlines()[1].startswith("seed_0_part_0.mp4,0,47,")
    assert not (out / ".recording").exists(), "nothing half-written is left"
    assert tagged_processes(tag) == []


@needs_minetest
def test_engine_pose_agrees_with_actions(recorded):
    out, _, rc, _, stderr = recorded
    assert rc == 0, stderr[-2000:]
    mt = json.loads((out / "metadata" / "seed_0_part_0.json").read_text())["minetest"]
    rep = mt["report"]
    assert rep["frames"] == rep["actions"] == 48
    assert abs(mt["deg_per_pixel"] - 0.5) < 0.025, "mouse calibrated from the engine's own turn"
    # Per-step figures depend on the machine's load (they are reported, not asserted); the episode's total
    # turn and the held keys do not.
    assert rep["camera_total_error_deg"] < 0.5
    assert rep["keys_match_pct"] >= 80.0
    # The JSON holds the turns the frames show; where the engine followed the command they are the command.
    meta = json.loads((out / "metadata" / "seed_0_part_0.json").read_text())
    shown = np.array([from_gamefactory(meta["actions"][str(i)])[:2] for i in range(48)])
    commanded = np.array(mt["commanded_camera_deg"])
    assert commanded.shape == (48, 2) and not commanded[0].any()
    agree = np.all(np.abs(shown[1:] - commanded[1:]) <= 0.5, axis=1)
    assert 100.0 * agree.mean() >= rep["camera_match_all_steps_pct"] - 1e-6


@needs_minetest
def test_preprocess_reads_the_recording(recorded, tmp_path):
    out, _, rc, _, stderr = recorded
    assert rc == 0, stderr[-2000:]
    episodes, problems = discover(out)
    assert problems == [] and [e.name for e in episodes] == ["seed_0_part_0"]
    aligned = load_alignment(episodes[0])
    assert aligned.video_frames == 48 and aligned.actions.shape == (48, 9) and aligned.label == "gamefactory"
    r = subprocess.run([sys.executable, "preprocess.py", "--check", str(out), "--out", str(tmp_path)], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads((tmp_path / "check_report.json").read_text())
    assert [v["name"] for v in report["videos"]] == ["seed_0_part_0"]


@needs_minetest
def test_client_crash_discards_the_episode_and_the_next_goes_on(tmp_path):
    tag = uuid.uuid4().hex
    p = start_recorder(tmp_path, tag, "--episodes", "2")
    wait_for_player(tmp_path)
    clients = [line.split(":")[0] for line in tagged_processes(tag) if "minetest --go" in line]
    assert len(clients) == 1
    os.kill(int(clients[0]), signal.SIGKILL)
    stdout, stderr = p.communicate(timeout=240)
    assert p.returncode == 1, stderr[-2000:]
    assert "FAILED seed_0_part_0: EpisodeError: minetest exited" in stderr
    assert not (tmp_path / "video" / "seed_0_part_0.mp4").exists()
    assert not (tmp_path / "metadata" / "seed_0_part_0.json").exists()
    assert (tmp_path / "metadata" / "seed_0_part_1.json").is_file()
    assert json.loads(stdout.strip().splitlines()[-1])["failed"] == 1
    assert tagged_processes(tag) == []


@needs_minetest
def test_ctrl_c_tears_the_game_down(tmp_path):
    tag = uuid.uuid4().hex
    # A 60 s episode: a 3 s one can end before the signal lands when the machine is loaded (it exited 0).
    p = start_recorder(tmp_path, tag, "--episodes", "1", seconds=60)
    wait_for_player(tmp_path)
    os.kill(p.pid, signal.SIGINT)
    _, stderr = p.communicate(timeout=60)
    assert p.returncode == 130 and "interrupted" in stderr
    assert tagged_processes(tag) == []
    assert not list((tmp_path / "video").glob("*.mp4")) if (tmp_path / "video").exists() else True


def _error(capsys, *args: str) -> str:
    with pytest.raises(SystemExit) as e:
        raise SystemExit(main(list(args)))
    assert e.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    return lines[0]


def test_bad_size_is_one_line(capsys, tmp_path):
    assert "--size" in _error(capsys, "--out", str(tmp_path), "--size", "641x360")
    assert "--size" in _error(capsys, "--out", str(tmp_path), "--size", "wide")


def test_missing_binary_names_the_install_command(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr("minetest_recorder.__main__.find_binary", lambda name: None)
    assert "apt-get install -y minetest xvfb" in _error(capsys, "--out", str(tmp_path))


@needs_minetest
def test_unwritable_out_is_one_line(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert "not writable" in _error(capsys, "--out", str(blocker / "sub"))


@needs_minetest
def test_port_in_use_is_one_line(capsys, tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        assert f"UDP port {port}" in _error(capsys, "--out", str(tmp_path), "--port", str(port))


def test_unknown_option_is_an_error(capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["--out", str(tmp_path), "--frobnicate", "1"])
    assert e.value.code == 2


def test_summary_line_without_camera_steps():
    """A short episode may hold no camera step: its percentages are null in the JSON, n/a in the line."""
    report = {"frames": 32, "actions": 32, "client_fps": 60.0, "late_frames": 0, "stale_frames": 0,
              "dropped_or_duplicated_pct": 0.0, "camera_match_pct": None, "camera_steps": 0, "keys_match_pct": 100.0,
              "median_speed_blocks_per_s": {"walk": None, "sprint": None, "sneak": None, "still": 0.0},
              "camera_total_error_deg": 0.0}
    line = _summary_line({"name": "seed_0_part_0", "biome": "taiga", "seconds": 9.0, "report": report})
    assert "camera n/a% of 0 steps" in line


def test_jump_rise_is_measured_on_land_from_the_server_positions():
    from minetest_recorder.poselog import ServerLog, Track, jump_rises

    dt, n = 1 / 16, 40
    t = np.arange(0, 3.0, 0.025)  # server steps
    y = np.full_like(t, 10.0)
    hop = (t >= 0.5) & (t < 1.1)  # a 1.2-block parabola after the press at frame 8 (0.5 s)
    y[hop] += 1.2 * (1 - ((t[hop] - 0.8) / 0.3) ** 2)
    wet = t >= 1.8  # the second press is a swim
    server = ServerLog(Track(t, np.stack([np.zeros_like(t), y, np.zeros_like(t)], 1), np.zeros_like(t),
                             np.zeros_like(t)), np.zeros((len(t), 7), bool), wet, ["x"] * len(t))
    raw = np.zeros((n, 9), np.float32)
    raw[8:12, RAW["jump"]] = 1.0
    raw[32, RAW["jump"]] = 1.0
    rises = jump_rises(server, np.arange(n) * dt, raw, dt)
    assert rises.shape == (1,) and rises[0] == pytest.approx(1.2, abs=0.02)
