"""The episode policy: runs of isolated actions, as GameFactory recorded its data.

GameFactory samples actions so that each one is well represented on its own: no-op, each movement key
alone, camera-only turns at several speeds, looking up and down, and a few combinations (forward+turn,
forward+jump, sprinting, sneaking). This policy draws such segments one after another, each held for
0.4-1.75 s. Keys are 0 or 1 and at most one of jump/sneak/sprint is held, so every action survives the
GameFactory JSON round trip (actions.to_gamefactory / from_gamefactory) exactly.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from actions import make_raw

from .state import PlayerState

TURN_SPEEDS = (1.0, 2.5, 5.0, 10.0)
"""Degrees per tick for camera-only turns (16 to 160 degrees/s)."""
WALK_TURN_SPEEDS = (1.0, 2.5, 5.0)
LOOK_SPEEDS = (1.5, 3.0, 6.0)
PITCH_LIMIT = 60.0
"""The policy turns a look segment round rather than push the pitch past this."""

# (segment kind, weight). Kinds with a camera part draw their speed and sign per segment.
KINDS: tuple[tuple[str, float], ...] = (
    ("noop", 1.0), ("forward", 1.3), ("back", 0.6), ("left", 0.6), ("right", 0.6), ("jump", 0.6),
    ("sneak", 0.4), ("sprint_forward", 0.8), ("sneak_forward", 0.4), ("forward_jump", 0.8),
    ("turn", 2.0), ("look", 1.2), ("forward_turn", 1.0), ("turn_look", 0.4),
)
_KEYS = {
    "noop": {}, "forward": {"forward": 1.0}, "back": {"back": 1.0}, "left": {"left": 1.0},
    "right": {"right": 1.0}, "jump": {"jump": 1.0}, "sneak": {"sneak": 1.0},
    "sprint_forward": {"forward": 1.0, "sprint": 1.0}, "sneak_forward": {"forward": 1.0, "sneak": 1.0},
    "forward_jump": {"forward": 1.0, "jump": 1.0}, "turn": {}, "look": {}, "forward_turn": {"forward": 1.0},
    "turn_look": {},
}


@dataclass
class Segment:
    kind: str
    action: np.ndarray
    """Raw action [9] held for the whole segment."""
    length: int


class GameFactoryPolicy:
    """Draws segments of isolated actions; `next(state)` gives the raw action for the coming tick."""

    def __init__(self, rng: np.random.Generator, min_len: int = 6, max_len: int = 28) -> None:
        self.rng = rng
        self.min_len, self.max_len = min_len, max_len
        self._kinds = [k for k, _ in KINDS]
        w = np.array([w for _, w in KINDS])
        self._p = w / w.sum()
        self.segment: Segment | None = None
        self._left = 0

    def _draw(self, state: PlayerState) -> Segment:
        rng = self.rng
        length = int(rng.integers(self.min_len, self.max_len + 1))
        kind = self._kinds[int(rng.choice(len(self._kinds), p=self._p))]
        if state.in_water and rng.random() < 0.5:
            kind = "forward_jump"  # swim towards land rather than drift
        yaw = pitch = 0.0
        if kind in ("turn", "turn_look"):
            yaw = float(rng.choice(TURN_SPEEDS)) * float(rng.choice((-1.0, 1.0)))
        if kind == "forward_turn":
            yaw = float(rng.choice(WALK_TURN_SPEEDS)) * float(rng.choice((-1.0, 1.0)))
        if kind in ("look", "turn_look"):
            pitch = float(rng.choice(LOOK_SPEEDS)) * float(rng.choice((-1.0, 1.0)))
            end = state.pitch + pitch * length
            if abs(end) > PITCH_LIMIT:
                pitch = -pitch if abs(state.pitch - pitch * length) <= abs(end) else pitch
                room = PITCH_LIMIT - np.sign(pitch) * state.pitch
                length = int(max(1, min(length, room // abs(pitch))))
        elif abs(state.pitch) > 40 and rng.random() < 0.5:
            # Drift the view back towards the horizon while walking about, as players do.
            pitch = -float(np.sign(state.pitch)) * 1.5
            length = int(min(length, (abs(state.pitch) - 10) // 1.5))
        return Segment(kind, make_raw(yaw_deg=yaw, pitch_deg=pitch, **_KEYS[kind]), max(1, length))

    def next(self, state: PlayerState) -> np.ndarray:
        if self._left <= 0:
            self.segment = self._draw(state)
            self._left = self.segment.length
        self._left -= 1
        assert self.segment is not None
        return self.segment.action.copy()
