"""Named action scripts (turn-left-360, walk-forward, ...) and action script files: raw action sequences
([N, 9], actions.py) at the 16 Hz tick. ("Preset" means a training config preset elsewhere.)

Named scripts (`named_script_actions(name, n)`), each N steps long:

| name            | what it does                                                                     |
|-----------------|----------------------------------------------------------------------------------|
| turn-left-360   | yaw -360 degrees spread evenly over the N steps (+yaw turns right)                |
| turn-right-360  | yaw +360 degrees spread evenly over the N steps                                   |
| walk-forward    | W held                                                                           |
| walk-back       | S held                                                                           |
| strafe-left     | A held                                                                           |
| strafe-right    | D held                                                                           |
| look-up-down    | look up 45 degrees, down 90, up 45 (quarter, half, quarter of N): pitch sums to 0 |
| jump            | Space held for the first 4 ticks of every second (one jump per second)            |
| noop            | nothing                                                                          |
| random          | piecewise-constant random key combinations and turn rates (seeded)                |

Presets combine with "+": `walk-forward+turn-left-360` sums the cameras and ORs the keys.

Action scripts (`load_action_script(path)`) are JSON or CSV. JSON: a list of objects whose keys are the raw
field names of actions.py (yaw_deg, pitch_deg in degrees per step, +yaw right, +pitch down; forward, back,
left, right, jump, sneak, sprint as the fraction of the step held, 0..1; missing fields are 0) plus an
optional integer "repeat" (default 1), e.g.
    [{"forward": 1, "repeat": 32}, {"yaw_deg": -4, "repeat": 16}, {"jump": 1}]
CSV: a header row naming some of the same fields (and optionally "repeat"), one row per entry.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from actions import KEY_FIELDS, RAW, RAW_FIELDS, noop, validate_raw

TICK_HZ = 16.0
DEFAULT_SCRIPT_FRAMES = 96
"""Six seconds at 16 Hz: turn-left-360 then turns 3.75 degrees per step."""

SCRIPT_NAMES: tuple[str, ...] = (
    "turn-left-360", "turn-right-360", "walk-forward", "walk-back", "strafe-left", "strafe-right",
    "look-up-down", "jump", "noop", "random",
)

_HELD = {"walk-forward": "forward", "walk-back": "back", "strafe-left": "left", "strafe-right": "right"}
JUMP_TICKS = 4
"""Ticks Space is held at the start of each second in the jump preset (a Minecraft jump lasts ~12 ticks)."""


def is_named_script(spec: str) -> bool:
    """True when `spec` names a script or a "+" combination of named scripts."""
    return all(part.strip() in SCRIPT_NAMES for part in spec.split("+"))


def _single_script(name: str, n: int, rng: np.random.Generator) -> np.ndarray:
    out = noop(n)
    if name in ("turn-left-360", "turn-right-360"):
        out[:, RAW["yaw_deg"]] = (-360.0 if name == "turn-left-360" else 360.0) / n
    elif name in _HELD:
        out[:, RAW[_HELD[name]]] = 1.0
    elif name == "look-up-down":
        # Quarter up, half down, quarter up; the per-segment rate makes each segment's sum exact even
        # when n is not a multiple of 4.
        q1 = n // 4
        q2 = n // 4 + n // 2
        for a, b, total in ((0, q1, -45.0), (q1, q2, 90.0), (q2, n, -45.0)):
            if b > a:
                out[a:b, RAW["pitch_deg"]] = total / (b - a)
    elif name == "jump":
        out[np.arange(n) % TICK_HZ < JUMP_TICKS, RAW["jump"]] = 1.0
    elif name == "random":
        i = 0
        while i < n:
            length = int(rng.integers(4, 17))
            seg = noop()
            seg[RAW["yaw_deg"]] = float(rng.choice([-8.0, -3.0, 0.0, 0.0, 3.0, 8.0]))
            seg[RAW["pitch_deg"]] = float(rng.choice([-2.0, 0.0, 0.0, 0.0, 2.0]))
            move = rng.choice(["forward", "forward", "back", "left", "right", None])
            if move is not None:
                seg[RAW[str(move)]] = 1.0
            for key, p in (("jump", 0.2), ("sprint", 0.15), ("sneak", 0.1)):
                if rng.random() < p:
                    seg[RAW[key]] = 1.0
            out[i:i + length] = seg
            i += length
    elif name != "noop":
        raise ValueError(f"unknown action preset {name!r}; choose from {', '.join(SCRIPT_NAMES)}")
    return out


def named_script_actions(spec: str, n: int = DEFAULT_SCRIPT_FRAMES, seed: int = 0) -> np.ndarray:
    """A preset (or "a+b" combination) as raw actions float32 [n, 9]; `seed` drives "random" only."""
    if n <= 0:
        raise ValueError(f"a preset needs a positive number of frames, got {n}")
    rng = np.random.default_rng(seed)
    total = noop(n)
    for part in spec.split("+"):
        a = _single_script(part.strip(), n, rng)
        total[:, :2] += a[:, :2]
        total[:, 2:] = np.maximum(total[:, 2:], a[:, 2:])
    return total


def _entry_to_raw(entry: Mapping[str, Any], where: str) -> tuple[np.ndarray, int]:
    if not isinstance(entry, Mapping):
        raise ValueError(f"{where}: expected an object of raw action fields, got {entry!r}")
    unknown = set(entry) - set(RAW_FIELDS) - {"repeat"}
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {sorted(unknown)}; valid: {', '.join(RAW_FIELDS)}, repeat")
    raw = noop()
    for k in RAW_FIELDS:
        v = entry.get(k, 0.0)
        if v in ("", None):
            v = 0.0
        try:
            raw[RAW[k]] = float(v)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{where}: field {k!r} is not a number: {v!r}") from e
    rep = entry.get("repeat", 1)
    if rep in ("", None):
        rep = 1
    try:
        repeat = int(rep)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: repeat is not an integer: {rep!r}") from e
    if repeat < 1 or float(rep) != repeat:
        raise ValueError(f"{where}: repeat must be a positive integer, got {rep!r}")
    return raw, repeat


def actions_from_entries(entries: Sequence[Mapping[str, Any]], source: str) -> np.ndarray:
    """Script entries (raw field names + optional repeat) -> raw actions [N, 9], validated."""
    if not isinstance(entries, (list, tuple)) or not entries:
        raise ValueError(f"{source}: an action script is a non-empty list of objects")
    rows = []
    for i, entry in enumerate(entries):
        raw, repeat = _entry_to_raw(entry, f"{source}: entry {i}")
        rows.append(np.repeat(raw[None], repeat, axis=0))  # [repeat, 9]
    return validate_raw(np.concatenate(rows), source)


def read_json_script(path: Path) -> Any:
    """The entries of a JSON script (action steps here, or live_inference's key/mouse events); a ValueError
    naming the file when it is not valid JSON."""
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e


def load_action_script(path: str | Path) -> np.ndarray:
    """A JSON or CSV action script (see the module docstring) -> raw actions [N, 9]."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: action script not found")
    if path.suffix.lower() == ".json":
        return actions_from_entries(read_json_script(path), str(path))
    if path.suffix.lower() == ".csv":
        with open(path, newline="") as f:
            entries = [{k.strip(): v.strip() for k, v in row.items() if k is not None}
                       for row in csv.DictReader(f)]
        return actions_from_entries(entries, str(path))
    raise ValueError(f"{path}: action scripts are .json or .csv")


def actions_to_entries(raw: np.ndarray) -> list[dict[str, float | int]]:
    """Raw actions [N, 9] -> the JSON script form, runs of identical steps folded into "repeat"."""
    raw = np.asarray(raw, dtype=np.float32)
    out: list[dict[str, float | int]] = []
    for row in raw:
        entry = {k: float(row[RAW[k]]) for k in RAW_FIELDS if row[RAW[k]] != 0}
        if out and {k: v for k, v in out[-1].items() if k != "repeat"} == entry:
            out[-1]["repeat"] = int(out[-1].get("repeat", 1)) + 1
        else:
            out.append(dict(entry))
    return out


def describe(raw: np.ndarray) -> str:
    """A short human description of one raw action, for HUDs and logs (e.g. "W+jump yaw -3.0")."""
    names = {"forward": "W", "left": "A", "back": "S", "right": "D"}
    keys = [names.get(k, k) for k in KEY_FIELDS if raw[RAW[k]] >= 0.5]
    text = "+".join(keys) if keys else "-"
    return f"{text} yaw {raw[RAW['yaw_deg']]:+.1f} pitch {raw[RAW['pitch_deg']]:+.1f}"

