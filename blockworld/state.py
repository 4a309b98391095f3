"""The player's state: an immutable record, so step() can never mutate its input."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Mapping


@dataclass(frozen=True)
class PlayerState:
    """Feet position and velocity in blocks (velocity per 1/16 s tick); camera angles in degrees
    (Minecraft's: yaw 0 looks south (+z), +yaw turns right, +pitch looks down, pitch in [-90, 90])."""

    pos: tuple[float, float, float]
    vel: tuple[float, float, float] = (0.0, 0.0, 0.0)
    yaw: float = 0.0
    pitch: float = 0.0
    on_ground: bool = True
    in_water: bool = False
    sneak: float = 0.0
    """Fraction of the last tick the sneak key was held: lowers the eye from 1.62 towards 1.27."""
    tick: int = 0

    def replace(self, **changes: Any) -> "PlayerState":
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["pos"] = [float(v) for v in self.pos]
        d["vel"] = [float(v) for v in self.vel]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "PlayerState":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"PlayerState: unknown fields {sorted(unknown)}")
        if "pos" not in d:
            raise ValueError("PlayerState: 'pos' is required")
        kw = dict(d)
        kw["pos"] = tuple(float(v) for v in d["pos"])
        if "vel" in d:
            kw["vel"] = tuple(float(v) for v in d["vel"])
        for k in ("yaw", "pitch", "sneak"):
            if k in kw:
                kw[k] = float(kw[k])
        for k in ("on_ground", "in_water"):
            if k in kw:
                kw[k] = bool(kw[k])
        if "tick" in kw:
            kw["tick"] = int(kw["tick"])
        return cls(**kw)
