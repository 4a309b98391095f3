"""Record Minetest (Luanti) gameplay with exact, aligned actions, in GameFactory's layout.

    python -m minetest_recorder --out DIR --episodes N --seconds S --seed K [--size 640x360]

Each episode starts Xvfb and a Minetest client (singleplayer, minetest_game) on a fresh world with map seed
K + i, drives the player with the block world's GameFactory-style policy through XTest (keys held, camera by
relative mouse motion, calibrated in degrees per pixel from the engine), grabs the screen on a steady 16 Hz
clock and writes DIR/video/seed_K_part_i.mp4 (H.264) and DIR/metadata/seed_K_part_i.json: entry str(i) of
`actions` is the action that produced frame i (entry 0 a no-op): the keys held and the camera turn that
frame i shows, with the engine's pos/yaw/pitch at frame i (the commanded turns are in
`minetest.commanded_camera_deg`).
Two Lua mods (minetest_recorder/mod) log the engine's pose every server step and every client frame; the
recorder checks every action against them and stores the episode's report (late grabs, stale frames,
camera and key fidelity, speeds) in the JSON's `minetest.report`. A failed episode is discarded and reported; the others go on.
Needs `apt-get install -y minetest xvfb`.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from actions import RAW, noop, to_gamefactory
from blockworld.generate import episode_name, write_annotation
from blockworld.policy import GameFactoryPolicy
from ckpt_io import atomic_write_json, json_safe
from config import ConfigError, main_config, parse_size, save_config
from video_io import write_mp4

from .game import APT_INSTALL, CLIENT_LOG, KEYSYMS, POSE_LOG, EpisodeError, GameSettings, Session, find_binary
from .poselog import index_at, parse_client, parse_server, verify, wrap_deg

FPS = 16
CALIBRATION_PX = 40
CALIBRATION_WAIT_S = 5.0
# The server must log a pose at least this often while recording, or the client counts as stalled.
STALL_S = 3.0
# Poses keep arriving this long after the last frame, so the last steps can be verified.
TAIL_S = 0.4


@dataclass
class RecordConfig:
    out: str = "runs/minetest"
    """Output folder (GameFactory layout: video/, metadata/, annotation.csv)."""
    episodes: int = 1
    """Number of episodes (videos) to record."""
    seconds: float = 10.0
    """Length of each episode in seconds (16 frames per second)."""
    seed: int = 0
    """Seed K: episode i gets map seed K + i, is named seed_K_part_i and its policy is seeded with [K, i]."""
    size: str = "640x360"
    """Window and frame size WIDTHxHEIGHT (even numbers, for H.264 yuv420p)."""
    first_part: int = 0
    """Index i of the first episode, to add episodes to an existing dataset."""
    port: int = 30000
    """UDP port of Minetest's singleplayer server (must be free)."""
    viewing_range: int = 30
    """Minetest viewing range in nodes (software rendering's cost grows fast with it)."""
    fov: int = 72
    """Minetest field of view in degrees."""
    sensitivity: float = 0.5
    """Minetest mouse_sensitivity (degrees per pixel); 0.5 makes every policy camera speed whole pixels."""
    time_of_day: float = 0.5
    """Fixed time of day, 0..1 (0.5 is noon); time does not advance."""
    warmup: float = 5.0
    """Seconds between joining and recording, for the map around the player to load."""
    start_timeout: float = 90.0
    """Seconds the player may take to join a fresh world before the episode counts as failed."""
    crf: int = 18
    """H.264 constant rate factor (lower is higher quality)."""


def clock() -> float:
    """The clock minetest.get_us_time() reads, so frame times and the pose log share one time line."""
    return time.clock_gettime(time.CLOCK_MONOTONIC_RAW)


def preflight(cfg: RecordConfig) -> tuple[int, int]:
    """Everything that can be checked before any game starts; raises ConfigError (one line, exit 2)."""
    size = parse_size(cfg.size, even=True)
    if size[0] < 64 or size[1] < 64:
        raise ConfigError(f"--size {cfg.size}: Minetest needs a window of at least 64x64")
    if cfg.episodes < 1 or cfg.seconds <= 0:
        raise ConfigError("--episodes must be >= 1 and --seconds > 0")
    if not 0.0 <= cfg.time_of_day <= 1.0 or cfg.sensitivity <= 0:
        raise ConfigError("--time-of-day must lie in 0..1 and --sensitivity be > 0")
    missing = [b for b in ("minetest", "Xvfb") if find_binary(b) is None]
    if missing:
        raise ConfigError(f"{' and '.join(missing)} not installed: run `{APT_INSTALL}`")
    out = Path(cfg.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-"):
            pass
    except OSError as e:
        raise ConfigError(f"{out}: output folder is not writable ({e.strerror or e})") from None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", cfg.port))
        except OSError as e:
            raise ConfigError(f"UDP port {cfg.port} is not available ({e.strerror}); choose another --port") from None
    return size


@dataclass
class _View:
    """What the policy reads of the player (the block world's PlayerState has more)."""

    pitch: float
    in_water: bool


def _last_pose(game: Session) -> tuple[float, float, bool]:
    """Yaw (+right) and pitch in degrees and in-water of the newest pose record."""
    f = game.pose.lines[-1].split()
    return -float(np.degrees(float(f[4]))), float(np.degrees(float(f[5]))), f[7] == "1"


def _wait(game: Session, seconds: float) -> None:
    end = clock() + seconds
    while clock() < end:
        game.check_alive()
        game.pose.poll()
        time.sleep(min(0.05, max(0.0, end - clock())))


def calibrate(game: Session, cfg: RecordConfig) -> float:
    """Degrees per mouse pixel as the engine turns them: a turn right and back, read from the pose log.
    Right after joining the client may draw a frame a second, so each turn waits for the log to move."""
    game.focus()
    _wait(game, 0.2)
    turns = []
    for px in (CALIBRATION_PX, -CALIBRATION_PX):
        before = _last_pose(game)[0]
        game.move_mouse(px, 0)
        game.flush()
        end = clock() + CALIBRATION_WAIT_S
        while clock() < end and abs(_last_pose(game)[0] - before) < 1e-3:
            _wait(game, 0.05)
        _wait(game, 0.3)
        turns.append(float(wrap_deg(np.array(_last_pose(game)[0] - before))) / px)
    dpp = float(np.mean(turns))
    if abs(dpp / cfg.sensitivity - 1.0) > 0.05:
        raise EpisodeError(f"mouse calibration: the engine turned {turns[0]:.4f} and {turns[1]:.4f} deg/pixel, "
                           f"expected {cfg.sensitivity}")
    return dpp


def drive(game: Session, cfg: RecordConfig, part: int, dpp: float,
          tick: Callable[[], None]) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """Grab frame i at t0 + i/16, then send action i+1. Returns frames, grab and due times [n], actions
    [n, 9] (action i produced frame i; action 0 is a no-op)."""
    n = int(round(cfg.seconds * FPS))
    dt = 1.0 / FPS
    policy = GameFactoryPolicy(np.random.default_rng([cfg.seed, part]))
    frames: list[np.ndarray] = []
    grab_t, due_t = np.zeros(n), np.zeros(n)
    raw = noop(n)
    carry = np.zeros(2)
    last_pose_at, last_count = clock(), len(game.pose.lines)
    t0 = clock() + 0.05
    for i in range(n):
        due_t[i] = t0 + i * dt
        time.sleep(max(0.0, due_t[i] - clock()))
        grab_t[i] = clock()
        frames.append(game.grab())
        tick()
        game.check_alive()
        game.pose.poll()
        if len(game.pose.lines) > last_count:
            last_pose_at, last_count = clock(), len(game.pose.lines)
        elif clock() - last_pose_at > STALL_S:
            raise EpisodeError(f"the game stalled: no pose for {STALL_S:.0f} s at frame {i}")
        if i + 1 == n:
            break
        _, pitch, wet = _last_pose(game)
        raw[i + 1] = action = policy.next(_View(pitch, wet))
        game.set_keys({k for k in KEYSYMS if action[RAW[k]] >= 0.5})
        # Whole pixels only; the remainder carries over so the total turn is exact.
        want = action[[RAW["yaw_deg"], RAW["pitch_deg"]]] / dpp + carry
        px = np.round(want)
        carry = want - px
        game.move_mouse(int(px[0]), int(px[1]))
        game.flush()
    game.set_keys(set())
    game.flush()
    return frames, grab_t, due_t, raw


def record_episode(cfg: RecordConfig, part: int, size: tuple[int, int],
                   tick: Callable[[], None]) -> dict[str, Any]:
    """Record, verify and write one episode; raises EpisodeError (or anything else) and then leaves
    nothing behind."""
    out = Path(cfg.out)
    name = episode_name(cfg.seed, part)
    work = out / ".recording" / name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    settings = GameSettings(size=size, map_seed=cfg.seed + part, port=cfg.port, viewing_range=cfg.viewing_range,
                            fov=cfg.fov, sensitivity=cfg.sensitivity, time_of_day=cfg.time_of_day)
    start = time.perf_counter()
    try:
        with Session(work, settings, cfg.start_timeout) as game:
            _wait(game, cfg.warmup)
            dpp = calibrate(game, cfg)
            frames, grab_t, due_t, raw = drive(game, cfg, part, dpp, tick)
            _wait(game, TAIL_S)
            lines = list(game.pose.lines)
        # Read after teardown: the client has flushed its log by then.
        client_log = work / CLIENT_LOG
        client = parse_client(client_log.read_text(errors="replace"), str(client_log))
        server = parse_server(lines, str(work / "world" / POSE_LOG))
        if client.t[-1] < grab_t[-1]:
            raise EpisodeError(f"{client_log}: the client's pose log ends before the last frame")
        same = np.array([i > 0 and np.array_equal(frames[i], frames[i - 1]) for i in range(len(frames))])
        report = verify(client, server, grab_t, due_t, raw, same, 1.0 / FPS)
        j = report.pop("pose_index")
        # The camera entries are the turns the frames show (the client's own camera at each grab), so a turn
        # the client drew a frame late, or an input event it lost, stays true to the video; the commanded
        # turns are kept beside them and the report says how often the two differ.
        shown = raw.copy()
        shown[1:, RAW["yaw_deg"]] = np.round(np.diff(client.yaw[j]), 3)
        shown[1:, RAW["pitch_deg"]] = np.round(np.diff(client.pitch[j]), 3)
        actions = {str(i): to_gamefactory(shown[i], float(wrap_deg(client.yaw[j[i]])), float(client.pitch[j[i]]),
                                          client.pos[j[i]]) for i in range(len(frames))}
        biome = server.biome[int(index_at(server.track.t, grab_t[:1])[0])]
        meta = {"biome": biome, "initial_weather": "clear", "start_time": f"{cfg.time_of_day:g} of a day",
                "actions": actions,
                "minetest": {"game": "minetest_game", "map_seed": settings.map_seed, "mapgen": settings.mapgen,
                             "seed": [cfg.seed, part], "part": part, "size": list(size), "fps": FPS,
                             "viewing_range": cfg.viewing_range, "fov": cfg.fov, "mouse_sensitivity": cfg.sensitivity,
                             "deg_per_pixel": dpp, "time_of_day": cfg.time_of_day,
                             "policy": "gamefactory_isolated_actions",
                             "commanded_camera_deg": raw[:, :2].round(4).tolist(), "report": report}}
        # Staged under names that do not pair up as an episode, then moved into place: video first, JSON
        # last, so a reader never finds a JSON without its video.
        write_mp4(work / "staged_video.mp4", frames, fps=FPS, crf=cfg.crf)
        atomic_write_json(work / "staged_meta.json", json_safe(meta))
        (out / "video").mkdir(exist_ok=True)
        (out / "metadata").mkdir(exist_ok=True)
        os.replace(work / "staged_video.mp4", out / "video" / f"{name}.mp4")
        os.replace(work / "staged_meta.json", out / "metadata" / f"{name}.json")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"name": name, "frames": len(frames), "biome": meta["biome"],
            "seconds": time.perf_counter() - start, "report": json_safe(report)}


def _summary_line(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"FAILED {r['name']}: {r['error']}"
    rep = r["report"]
    sp = rep["median_speed_blocks_per_s"]
    # Percentages over no steps (an episode without camera steps) are NaN, stored as null.
    fmt = lambda v, spec=".2f": "n/a" if v is None else format(v, spec)  # noqa: E731
    return (f"{r['name']} ({r['biome']}): {rep['frames']} frames = {rep['actions']} actions, "
            f"client {rep['client_fps']:.1f} fps, late {rep['late_frames']}, stale {rep['stale_frames']} "
            f"({rep['dropped_or_duplicated_pct']:.1f}%), camera {fmt(rep['camera_match_pct'], '.1f')}% of "
            f"{rep['camera_steps']} steps within 0.5 deg, keys {fmt(rep['keys_match_pct'], '.1f')}%, "
            f"walk {fmt(sp['walk'])} sprint {fmt(sp['sprint'])} sneak {fmt(sp['sneak'])} blocks/s, "
            f"jump rise {fmt(rep.get('median_jump_rise_blocks'))} blocks, "
            f"turn total off by {rep['camera_total_error_deg']:.2f} deg, {r['seconds']:.1f} s")


def run(cfg: RecordConfig, size: tuple[int, int]) -> dict[str, Any]:
    from tqdm import tqdm

    out = Path(cfg.out)
    save_config(cfg, out / "minetest_record.json")
    parts = list(range(cfg.first_part, cfg.first_part + cfg.episodes))
    results: list[dict[str, Any]] = []
    start = time.perf_counter()
    with tqdm(total=int(round(cfg.seconds * FPS)) * len(parts), unit="frame", desc="minetest",
              file=sys.stderr) as bar:
        for part in parts:
            try:
                results.append(record_episode(cfg, part, size, lambda: bar.update(1)))
            except Exception as e:  # a crashed or stalled episode is discarded; the next one goes on
                results.append({"name": episode_name(cfg.seed, part), "error": f"{type(e).__name__}: {e}",
                                "traceback": traceback.format_exc()})
            bar.write(_summary_line(results[-1]), file=sys.stderr)
    wall = time.perf_counter() - start
    write_annotation(out, results)
    shutil.rmtree(out / ".recording", ignore_errors=True)
    ok = [r for r in results if "error" not in r]
    summary = {"out": cfg.out, "episodes": len(ok), "failed": len(results) - len(ok),
               "frames": sum(r["frames"] for r in ok), "recorded_seconds": len(ok) * cfg.seconds,
               "wall_seconds": round(wall, 1), "episodes_report": results}
    atomic_write_json(out / "record_report.json", json_safe(summary))
    return summary


def _terminate(signum: int, _frame: Any) -> None:
    # SIGTERM unwinds like Ctrl-C, so the running episode's teardown still kills its process group.
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    cfg = main_config(RecordConfig, argv=argv, doc=__doc__)
    try:
        size = preflight(cfg)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    try:
        summary = run(cfg, size)
    except KeyboardInterrupt:
        print("interrupted: the running episode was discarded and its game stopped", file=sys.stderr)
        return 130
    print(json.dumps({k: v for k, v in summary.items() if k != "episodes_report"}))
    return 1 if summary["failed"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
