"""The engine's own pose logs: parse them, find the pose behind each grabbed frame, and check every commanded
action against what the engine did.

Two logs, both stamped with minetest.get_us_time():
- the client's (mod/ochre_client, in the client log): one line per frame the client draws, with the camera
  that frame shows; it says which pose each grabbed frame holds and whether the client drew a new frame
  between two grabs;
- the server's (mod/ochre_pose): one line per server step with the controls the server received, whether
  the player is in water, and the biome.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from actions import KEY_FIELDS, RAW

# Column order of the server mod's control string: up down left right jump sneak aux1 (aux1 is sprint).
CONTROL_KEYS = ("forward", "back", "left", "right", "jump", "sneak", "sprint")
CLIENT_TAG = "OCHRE_FRAME"
CAMERA_TOLERANCE_DEG = 0.5
# Candidate offsets between a client frame's log time and the grab that first holds it (negative: the frame
# is drawn and shown after its log line).
SHOW_DELAYS_S = np.arange(-0.15, 0.0501, 0.005)
# Candidate delays of the server's copy of the controls behind the input (client -> server packets).
SERVER_DELAYS_S = np.arange(0.0, 0.3001, 0.01)


@dataclass
class Track:
    """Poses over time, one row per logged step."""

    t: np.ndarray
    """Seconds on CLOCK_MONOTONIC_RAW (minetest.get_us_time) [n]."""
    pos: np.ndarray
    """Player position (x, y, z) in blocks [n, 3]."""
    yaw: np.ndarray
    """Yaw in degrees, unwrapped, +right (Minetest's look_horizontal turns the other way) [n]."""
    pitch: np.ndarray
    """Pitch in degrees, +down (as the server's look_vertical) [n]."""


@dataclass
class ServerLog:
    """The server mod's log."""

    track: Track
    """The pose as the server had it."""
    keys: np.ndarray
    """Controls the server saw, bool [n, 7] in CONTROL_KEYS order."""
    wet: np.ndarray
    """Player's body in water, bool [n]."""
    biome: list[str]
    """Biome name at the player's position [n]."""


def _track(num: np.ndarray, yaw_rad: np.ndarray, pitch_rad: np.ndarray) -> Track:
    return Track(t=num[:, 0] / 1e6, pos=num[:, 1:4], yaw=-np.degrees(np.unwrap(yaw_rad)), pitch=np.degrees(pitch_rad))


def parse_server(lines: list[str], source: str) -> ServerLog:
    rows = []
    for k, line in enumerate(lines):
        f = line.split()
        if len(f) != 9 or len(f[6]) != len(CONTROL_KEYS):
            raise ValueError(f"{source}: line {k + 1} is not a pose record: {line!r}")
        rows.append(f)
    if not rows:
        raise ValueError(f"{source}: no pose records")
    num = np.array([[float(v) for v in r[:6]] for r in rows], dtype=np.float64)
    return ServerLog(track=_track(num, num[:, 4], num[:, 5]),
                     keys=np.array([[c == "1" for c in r[6]] for r in rows]),
                     wet=np.array([r[7] == "1" for r in rows]), biome=[r[8] for r in rows])


def parse_client(text: str, source: str) -> Track:
    """The client mod's lines out of the client log. The client camera's yaw is the player's plus 90 degrees
    and its pitch is negated; both are turned into the server's convention."""
    rows = [line.split(CLIENT_TAG, 1)[1].split() for line in text.splitlines() if CLIENT_TAG in line]
    if not rows or any(len(r) != 6 for r in rows):
        raise ValueError(f"{source}: no client pose records, or a malformed one")
    num = np.array(rows, dtype=np.float64)
    return _track(num, num[:, 4] - math.pi / 2, -num[:, 5])


def index_at(t: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Row of the last logged step at or before each time (its pose holds until the next step)."""
    return np.clip(np.searchsorted(t, times, side="right") - 1, 0, len(t) - 1)


def wrap_deg(a: np.ndarray) -> np.ndarray:
    return (a + 180.0) % 360.0 - 180.0


def camera_match(track: Track, grab_t: np.ndarray, raw: np.ndarray, delay: float) -> np.ndarray:
    """Per step i >= 1: did the yaw and pitch change between frames i-1 and i match action i?"""
    j = index_at(track.t, grab_t + delay)
    dyaw, dpitch = np.diff(track.yaw[j]), np.diff(track.pitch[j])
    return ((np.abs(dyaw - raw[1:, RAW["yaw_deg"]]) <= CAMERA_TOLERANCE_DEG)
            & (np.abs(dpitch - raw[1:, RAW["pitch_deg"]]) <= CAMERA_TOLERANCE_DEG))


def _best(delays: np.ndarray, score: Any) -> float:
    """The delay with the best score; ties go to the one nearest zero."""
    scores = np.array([score(d) for d in delays])
    best = np.flatnonzero(scores == scores.max())
    return float(delays[best[np.argmin(np.abs(delays[best]))]])


def _median(x: np.ndarray) -> float | None:
    return float(np.median(x)) if len(x) else None


def _pct(x: np.ndarray) -> float:
    return 100.0 * float(x.mean()) if len(x) else math.nan


JUMP_WINDOW_S = 0.8
"""Seconds after a jump press over which the rise is measured (a Minetest jump lands within ~0.7 s)."""


def jump_rises(server: ServerLog, grab_t: np.ndarray, raw: np.ndarray, dt: float) -> np.ndarray:
    """Peak rise in blocks after each press of jump on land (raw [n, 9]: action i produced frame i, grabbed
    at grab_t[i]), from the server's positions: from the last step before the press to the highest within
    JUMP_WINDOW_S. Presses in water (swimming) are left out."""
    jump = raw[:, RAW["jump"]] >= 0.5
    rises = []
    for i in np.flatnonzero(jump[1:] & ~jump[:-1]) + 1:
        a, b = index_at(server.track.t, np.array([grab_t[i] - dt, grab_t[i] + JUMP_WINDOW_S]))
        if b > a and not server.wet[a:b + 1].any():
            y = server.track.pos[a:b + 1, 1]
            rises.append(float(y.max() - y[0]))
    return np.array(rises)


def verify(client: Track, server: ServerLog, grab_t: np.ndarray, due_t: np.ndarray, raw: np.ndarray,
           same_frame: np.ndarray, dt: float) -> dict[str, Any]:
    """The episode's report: timing (late grabs, stale frames), camera and key fidelity, speeds; and
    `pose_index`, the client log row each frame shows.

    grab_t/due_t [n]: when each frame was grabbed and when it was due; raw [n, 9]: action i produced frame
    i; same_frame [n] bool: frame i is pixel-identical to frame i-1."""
    n = len(grab_t)
    show = _best(SHOW_DELAYS_S, lambda d: camera_match(client, grab_t, raw, d).mean())
    j = index_at(client.t, grab_t + show)
    ok = camera_match(client, grab_t, raw, show)
    cam_steps = np.any(raw[1:, :2] != 0, axis=1)
    # No client frame between two grabs: frame i repeats frame i-1 and the step's motion shows up a frame late.
    stale = np.diff(j) == 0
    late = np.abs(grab_t - due_t) > dt / 2
    want = raw[1:, [RAW[k] for k in CONTROL_KEYS]] >= 0.5

    def keys_ok(d: float) -> np.ndarray:
        # Keys held over step i as the server saw them half-way through it.
        return np.all(server.keys[index_at(server.track.t, grab_t[1:] - dt / 2 + d)] == want, axis=1)

    server_delay = _best(SERVER_DELAYS_S, lambda d: keys_ok(d).mean())
    steps_s = np.maximum(np.diff(client.t[j]), 1e-6)
    speed = np.linalg.norm(np.diff(client.pos[j][:, [0, 2]], axis=0), axis=1) / steps_s
    # Speeds only from steps inside a run of one key set (past the acceleration), on land, with a fresh frame.
    steady = np.zeros(n - 1, dtype=bool)
    steady[2:] = np.all(raw[3:, 2:] == raw[2:-1, 2:], axis=1) & np.all(raw[2:-1, 2:] == raw[1:-2, 2:], axis=1)
    steady &= ~server.wet[index_at(server.track.t, grab_t[1:])] & ~stale

    def keys_are(**held: float) -> np.ndarray:
        target = np.array([held.get(k, 0.0) for k in KEY_FIELDS], dtype=np.float32)
        return np.all(raw[1:, 2:] == target, axis=1) & steady

    speeds = {name: _median(speed[keys_are(**k)]) for name, k in (
        ("walk", {"forward": 1.0}), ("sprint", {"forward": 1.0, "sprint": 1.0}),
        ("sneak", {"forward": 1.0, "sneak": 1.0}), ("still", {}))}
    # Over the whole episode (to the last record, logged after every action has landed) the turn must add
    # up exactly, however the client's frames fell between grabs.
    total_error = max(abs(float(client.yaw[-1] - client.yaw[j[0]] - raw[1:, RAW["yaw_deg"]].sum())),
                      abs(float(client.pitch[-1] - client.pitch[j[0]] - raw[1:, RAW["pitch_deg"]].sum())))
    in_episode = (client.t >= grab_t[0]) & (client.t <= grab_t[-1])
    return {
        "frames": n, "actions": n,
        "client_fps": float(in_episode.sum() / max(grab_t[-1] - grab_t[0], 1e-6)),
        "server_step_ms": _median(np.diff(server.track.t) * 1000.0),
        "show_delay_ms": round(show * 1000.0, 1), "server_delay_ms": round(server_delay * 1000.0, 1),
        "late_frames": int(late.sum()), "stale_frames": int(stale.sum()),
        "identical_frames": int(same_frame.sum()),
        "dropped_or_duplicated_pct": 100.0 * float(late.sum() + stale.sum()) / n,
        "max_grab_error_ms": float(np.abs(grab_t - due_t).max() * 1000.0),
        "camera_steps": int(cam_steps.sum()),
        "camera_match_pct": _pct(ok[cam_steps]), "camera_match_all_steps_pct": _pct(ok),
        "camera_total_error_deg": total_error,
        "keys_match_pct": _pct(keys_ok(server_delay)),
        "median_speed_blocks_per_s": speeds,
        "median_jump_rise_blocks": _median(jump_rises(server, grab_t, raw, dt)),
        "pose_index": j,
    }
