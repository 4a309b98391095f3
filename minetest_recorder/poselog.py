"""The engine's pose log (written by mod/ochre_pose): parse it, read the pose behind each frame, and check
every commanded action against what the engine did."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from actions import KEY_FIELDS, RAW

# Column order of the mod's control string: up down left right jump sneak aux1 (aux1 is the sprint key).
CONTROL_KEYS = ("forward", "back", "left", "right", "jump", "sneak", "sprint")
CAMERA_TOLERANCE_DEG = 0.5
# Candidate delays of the server's copy of the pose behind the screen (client -> server packets).
POSE_DELAYS_S = np.arange(0.0, 0.25, 0.005)
# A pose change above these counts as motion when judging whether an unchanged frame is a duplicate.
MOVED_DEG, MOVED_BLOCKS = 0.05, 0.01


@dataclass
class Poses:
    """The pose log as arrays, one row per server step."""

    t: np.ndarray
    """Seconds on CLOCK_MONOTONIC_RAW (minetest.get_us_time) [n]."""
    pos: np.ndarray
    """Player position (x, y, z) in blocks [n, 3]."""
    yaw: np.ndarray
    """Yaw in degrees, unwrapped, +right (Minetest's look_horizontal turns the other way) [n]."""
    pitch: np.ndarray
    """Pitch in degrees, +down (as Minetest's look_vertical) [n]."""
    keys: np.ndarray
    """Controls the server saw, bool [n, 7] in CONTROL_KEYS order."""
    wet: np.ndarray
    """Player's body in water, bool [n]."""
    biome: list[str]
    """Biome name at the player's position [n]."""


def parse(lines: list[str], source: str) -> Poses:
    rows = []
    for k, line in enumerate(lines):
        f = line.split()
        if len(f) != 9 or len(f[6]) != len(CONTROL_KEYS):
            raise ValueError(f"{source}: line {k + 1} is not a pose record: {line!r}")
        rows.append(f)
    if not rows:
        raise ValueError(f"{source}: no pose records")
    num = np.array([[float(v) for v in r[:6]] for r in rows], dtype=np.float64)
    return Poses(t=num[:, 0] / 1e6, pos=num[:, 1:4], yaw=-np.degrees(np.unwrap(num[:, 4])),
                 pitch=np.degrees(num[:, 5]), keys=np.array([[c == "1" for c in r[6]] for r in rows]),
                 wet=np.array([r[7] == "1" for r in rows]), biome=[r[8] for r in rows])


def index_at(poses: Poses, times: np.ndarray) -> np.ndarray:
    """Row of the last server step at or before each time (its pose holds until the next step)."""
    return np.clip(np.searchsorted(poses.t, times, side="right") - 1, 0, len(poses.t) - 1)


def wrap_deg(a: np.ndarray) -> np.ndarray:
    return (a + 180.0) % 360.0 - 180.0


def camera_match(poses: Poses, grab_t: np.ndarray, raw: np.ndarray, delay: float) -> np.ndarray:
    """Per step i >= 1: did the engine's yaw and pitch change between frames i-1 and i match action i?"""
    j = index_at(poses, grab_t + delay)
    dyaw, dpitch = np.diff(poses.yaw[j]), np.diff(poses.pitch[j])
    return ((np.abs(dyaw - raw[1:, RAW["yaw_deg"]]) <= CAMERA_TOLERANCE_DEG)
            & (np.abs(dpitch - raw[1:, RAW["pitch_deg"]]) <= CAMERA_TOLERANCE_DEG))


def pose_delay(poses: Poses, grab_t: np.ndarray, raw: np.ndarray) -> float:
    """How far the server's pose trails the screen: the delay at which most camera steps match (ties to the
    shortest). Measured per episode rather than assumed, and reported."""
    scores = [camera_match(poses, grab_t, raw, d).mean() for d in POSE_DELAYS_S]
    return float(POSE_DELAYS_S[int(np.argmax(scores))])


def _median(x: np.ndarray) -> float | None:
    return float(np.median(x)) if len(x) else None


def verify(poses: Poses, grab_t: np.ndarray, sched_t: np.ndarray, raw: np.ndarray, same_frame: np.ndarray,
           dt: float) -> dict[str, Any]:
    """The episode's report: timing (late grabs, duplicated frames), camera and key fidelity, speeds.

    grab_t/sched_t [n]: when each frame was grabbed and when it was due; raw [n, 9]: action i produced
    frame i; same_frame [n] bool: frame i is pixel-identical to frame i-1."""
    n = len(grab_t)
    delay = pose_delay(poses, grab_t, raw)
    j = index_at(poses, grab_t + delay)
    ok = camera_match(poses, grab_t, raw, delay)
    cam_steps = np.any(raw[1:, :2] != 0, axis=1)
    moved = ((np.abs(np.diff(poses.yaw[j])) > MOVED_DEG) | (np.abs(np.diff(poses.pitch[j])) > MOVED_DEG)
             | (np.linalg.norm(np.diff(poses.pos[j], axis=0), axis=1) > MOVED_BLOCKS))
    duplicated = same_frame[1:] & moved
    late = np.abs(grab_t - sched_t) > dt / 2
    # Keys held over step i as the server saw them half-way through it.
    mid = index_at(poses, grab_t[1:] - dt / 2 + delay)
    want = raw[1:, [RAW[k] for k in CONTROL_KEYS]] >= 0.5
    keys_ok = np.all(poses.keys[mid] == want, axis=1)
    speed = np.linalg.norm(np.diff(poses.pos[j][:, [0, 2]], axis=0), axis=1) / np.maximum(np.diff(grab_t), 1e-6)
    # Speeds only from steps inside a run of the same key set (past the acceleration), on land.
    steady = np.zeros(n - 1, dtype=bool)
    steady[2:] = np.all(raw[3:, 2:] == raw[2:-1, 2:], axis=1) & np.all(raw[2:-1, 2:] == raw[1:-2, 2:], axis=1)
    steady &= ~poses.wet[j[1:]]

    def keys_are(**held: float) -> np.ndarray:
        target = np.array([held.get(k, 0.0) for k in KEY_FIELDS], dtype=np.float32)
        return np.all(raw[1:, 2:] == target, axis=1) & steady

    speeds = {name: _median(speed[keys_are(**k)]) for name, k in (
        ("walk", {"forward": 1.0}), ("sprint", {"forward": 1.0, "sprint": 1.0}),
        ("sneak", {"forward": 1.0, "sneak": 1.0}), ("still", {}))}
    gaps = np.diff(poses.t)
    # Over the whole episode (to the last record, logged after every action has landed) the turn must add
    # up exactly, however the engine's steps fell between frames.
    total_error = max(abs(float(poses.yaw[-1] - poses.yaw[j[0]] - raw[1:, RAW["yaw_deg"]].sum())),
                      abs(float(poses.pitch[-1] - poses.pitch[j[0]] - raw[1:, RAW["pitch_deg"]].sum())))
    return {
        "frames": n, "actions": n, "pose_records": len(poses.t),
        "server_step_ms": _median(gaps * 1000.0),
        "pose_delay_ms": round(delay * 1000.0, 1),
        "late_frames": int(late.sum()), "duplicated_frames": int(duplicated.sum()),
        "dropped_or_duplicated_pct": 100.0 * float(late.sum() + duplicated.sum()) / n,
        "max_grab_error_ms": float(np.abs(grab_t - sched_t).max() * 1000.0),
        "camera_steps": int(cam_steps.sum()),
        "camera_match_pct": 100.0 * float(ok[cam_steps].mean()) if cam_steps.any() else math.nan,
        "camera_match_all_steps_pct": 100.0 * float(ok.mean()) if len(ok) else math.nan,
        "camera_total_error_deg": total_error,
        "keys_match_pct": 100.0 * float(keys_ok.mean()) if len(keys_ok) else math.nan,
        "median_speed_blocks_per_s": speeds,
        "pose_index": j,
    }
