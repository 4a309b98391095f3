"""The one action schema of Ochre.

Two forms:
- the *raw record*: float32[9] per step, what shards store, so the model encoding can change without
  re-preprocessing: camera change in degrees over the step (+yaw turns right, +pitch looks down) and,
  for each key, the fraction of the step it was held (0..1);
- the *model encoding*: float32[15], yaw over 5 bins, pitch over 3 bins, W/A/S/D and jump/sprint/sneak
  as (soft) multi-hot. The camera is *graded* by default: the degrees are split linearly between the two
  nearest bin centres, so 1 and 2.5 degrees per step (or any live mouse motion) encode differently and the
  exact value can be read back; `camera="bins"` is the earlier one-hot encoding. Edges and centres are
  configuration and travel with checkpoints.

Converters from every source (GameFactory, MineRL v0, VPT, block world, live input) produce raw records.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

ACTION_SCHEMA_VERSION = 1

RAW_FIELDS: tuple[str, ...] = (
    "yaw_deg", "pitch_deg", "forward", "back", "left", "right", "jump", "sneak", "sprint",
)
RAW_DIM = len(RAW_FIELDS)
RAW = {name: i for i, name in enumerate(RAW_FIELDS)}
KEY_FIELDS = RAW_FIELDS[2:]

ENC_FIELDS: tuple[str, ...] = (
    "yaw_hard_left", "yaw_left", "yaw_none", "yaw_right", "yaw_hard_right",
    "pitch_up", "pitch_none", "pitch_down",
    "W", "A", "S", "D", "jump", "sprint", "sneak",
)
ENC_DIM = len(ENC_FIELDS)
YAW_SLICE = slice(0, 5)
PITCH_SLICE = slice(5, 8)
CAMERA_SLICE = slice(0, 8)
KEYS_SLICE = slice(8, 15)
YAW_NONE_BIN = 2
PITCH_NONE_BIN = 1

# Degrees per unit of GameFactory's yaw_delta / pitch_delta (data-formats.md).
GAMEFACTORY_DEG_PER_UNIT = 15.0
# VPT: camera degrees per mouse pixel (data-formats.md).
VPT_DEG_PER_PIXEL = 360.0 / 2400.0


@dataclass(frozen=True)
class ActionEncoding:
    """Bin edges of the model encoding, in degrees per step. Stored with every checkpoint."""

    yaw_edges: tuple[float, float, float, float] = (-4.0, -0.5, 0.5, 4.0)
    """Yaw bin edges (camera="bins"): below e0 hard left, e0..e1 left, e1..e2 none, e2..e3 right, above e3
    hard right."""
    pitch_edges: tuple[float, float] = (-0.5, 0.5)
    """Pitch bin edges (camera="bins"): below e0 up, e0..e1 none, above e1 down (+pitch looks down)."""
    camera: str = "graded"
    """graded: degrees split linearly between the two nearest centres (continuous); bins: one-hot by edges."""
    yaw_centres: tuple[float, float, float, float, float] = (-10.0, -2.5, 0.0, 2.5, 10.0)
    """Degrees per step that each yaw slot stands for (camera="graded"); beyond the outer ones it saturates."""
    pitch_centres: tuple[float, float, float] = (-6.0, 0.0, 6.0)
    """Degrees per step that each pitch slot stands for (camera="graded")."""

    def __post_init__(self) -> None:
        for name, edges, n in (("yaw_edges", self.yaw_edges, 4), ("pitch_edges", self.pitch_edges, 2),
                               ("yaw_centres", self.yaw_centres, 5), ("pitch_centres", self.pitch_centres, 3)):
            if len(edges) != n or any(b <= a for a, b in zip(edges, edges[1:])):
                raise ValueError(f"ActionEncoding.{name} must be {n} increasing numbers, got {edges}")
        if self.camera not in ("graded", "bins"):
            raise ValueError(f"ActionEncoding.camera must be 'graded' or 'bins', got {self.camera!r}")
        if self.yaw_centres[YAW_NONE_BIN] != 0.0 or self.pitch_centres[PITCH_NONE_BIN] != 0.0:
            raise ValueError("ActionEncoding: the middle yaw and pitch centres must be 0 (no turn)")

    def to_dict(self) -> dict[str, Any]:
        return {k: (v if isinstance(v, str) else list(v)) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ActionEncoding":
        # Checkpoints written before the graded camera existed used one-hot bins.
        kw: dict[str, Any] = {"camera": str(d.get("camera", "bins"))}
        for name in ("yaw_edges", "pitch_edges", "yaw_centres", "pitch_centres"):
            if name in d:
                kw[name] = tuple(float(x) for x in d[name])
        return cls(**kw)

    def mirrored_columns(self) -> list[tuple[int, int]]:
        """Pairs of encoded camera columns that stand for opposite turns (c and -c degrees per step): every
        yaw and pitch slot pair when the axis's centres (graded) or edges (bins) are symmetric about 0, none
        for an axis whose are not."""
        pairs: list[tuple[int, int]] = []
        for sl, values in ((YAW_SLICE, self.yaw_centres if self.camera == "graded" else self.yaw_edges),
                           (PITCH_SLICE, self.pitch_centres if self.camera == "graded" else self.pitch_edges)):
            v = np.asarray(values, dtype=np.float64)
            if np.allclose(v, -v[::-1]):
                n = sl.stop - sl.start
                pairs += [(sl.start + i, sl.stop - 1 - i) for i in range(n // 2)]
        return pairs

    def encode(self, raw: np.ndarray) -> np.ndarray:
        """raw [..., 9] -> encoded [..., 15] float32."""
        raw = np.asarray(raw, dtype=np.float32)
        if raw.shape[-1] != RAW_DIM:
            raise ValueError(f"raw actions must have last dim {RAW_DIM}, got shape {raw.shape}")
        out = np.zeros(raw.shape[:-1] + (ENC_DIM,), dtype=np.float32)
        keys = np.clip(raw[..., [RAW["forward"], RAW["left"], RAW["back"], RAW["right"],
                                 RAW["jump"], RAW["sprint"], RAW["sneak"]]], 0.0, 1.0)
        out[..., KEYS_SLICE] = keys
        if self.camera == "graded":
            out[..., YAW_SLICE] = _interpolation_weights(raw[..., RAW["yaw_deg"]], self.yaw_centres)
            out[..., PITCH_SLICE] = _interpolation_weights(raw[..., RAW["pitch_deg"]], self.pitch_centres)
            return out
        # np.digitize bins are half-open [e_i, e_i+1); the none-bin is made closed on both sides so that
        # a tiny symmetric jitter around zero is never read as a turn in one direction only.
        yaw_bin = np.digitize(raw[..., RAW["yaw_deg"]], self.yaw_edges, right=False)
        yaw = raw[..., RAW["yaw_deg"]]
        yaw_bin = np.where((yaw >= self.yaw_edges[1]) & (yaw <= self.yaw_edges[2]), YAW_NONE_BIN, yaw_bin)
        pitch = raw[..., RAW["pitch_deg"]]
        pitch_bin = np.digitize(pitch, self.pitch_edges, right=False)
        pitch_bin = np.where((pitch >= self.pitch_edges[0]) & (pitch <= self.pitch_edges[1]),
                             PITCH_NONE_BIN, pitch_bin)
        np.put_along_axis(out, yaw_bin[..., None].astype(np.int64), 1.0, axis=-1)
        np.put_along_axis(out, (PITCH_SLICE.start + pitch_bin[..., None]).astype(np.int64), 1.0, axis=-1)
        return out


def _interpolation_weights(value: np.ndarray, centres: Sequence[float]) -> np.ndarray:
    """value [...] -> weights [..., len(centres)]: the value split linearly between its two nearest
    centres (weights sum to 1, sum(w * centres) == value inside the range; saturates outside it)."""
    c = np.asarray(centres, dtype=np.float32)
    v = np.clip(np.asarray(value, dtype=np.float32), c[0], c[-1])
    hi = np.clip(np.searchsorted(c, v, side="right"), 1, len(c) - 1)  # upper centre index
    lo = hi - 1
    frac = (v - c[lo]) / (c[hi] - c[lo])
    out = np.zeros(v.shape + (len(c),), dtype=np.float32)
    np.put_along_axis(out, lo[..., None], (1.0 - frac)[..., None], axis=-1)
    np.put_along_axis(out, hi[..., None], frac[..., None], axis=-1)
    return out


DEFAULT_ENCODING = ActionEncoding()


def noop(n: int | None = None) -> np.ndarray:
    """A zero raw action ([9]) or n of them ([n, 9])."""
    return np.zeros((RAW_DIM,) if n is None else (n, RAW_DIM), dtype=np.float32)


def make_raw(yaw_deg: float = 0.0, pitch_deg: float = 0.0, **keys: float) -> np.ndarray:
    """Build one raw record by field name, e.g. make_raw(yaw_deg=3, forward=1, jump=1)."""
    a = noop()
    a[RAW["yaw_deg"]] = yaw_deg
    a[RAW["pitch_deg"]] = pitch_deg
    for k, v in keys.items():
        if k not in KEY_FIELDS:
            raise ValueError(f"unknown action key {k!r}; expected one of {KEY_FIELDS}")
        a[RAW[k]] = v
    return a


def validate_raw(raw: np.ndarray, source: str) -> np.ndarray:
    """Check a raw action array [N, 9]; raise ValueError naming `source` on any problem."""
    raw = np.asarray(raw)
    if raw.ndim != 2 or raw.shape[1] != RAW_DIM:
        raise ValueError(f"{source}: actions must have shape [N, {RAW_DIM}], got {raw.shape}")
    bad = ~np.isfinite(raw)
    if bad.any():
        step, col = np.argwhere(bad)[0]
        raise ValueError(f"{source}: non-finite action value {raw[step, col]} in field "
                         f"{RAW_FIELDS[col]!r} at step {step}")
    keys = raw[:, 2:]
    if (keys < -1e-6).any() or (keys > 1 + 1e-6).any():
        raise ValueError(f"{source}: key fractions must lie in [0, 1]")
    return raw.astype(np.float32, copy=False)


def aggregate(raw: np.ndarray, axis: int = 0) -> np.ndarray:
    """Combine consecutive raw steps into one: camera degrees summed, keys as the fraction held."""
    raw = np.asarray(raw, dtype=np.float32)
    cam = raw.take([0, 1], axis=-1).sum(axis=axis)
    keys = raw.take(range(2, RAW_DIM), axis=-1).mean(axis=axis)
    return np.concatenate([cam, keys], axis=-1).astype(np.float32)


def aggregate_intervals(raw: np.ndarray, bounds: Sequence[int]) -> np.ndarray:
    """raw [N, 9] per source step, bounds [K] increasing step indices -> [K-1, 9], interval i = steps
    bounds[i]..bounds[i+1]-1 aggregated (camera summed, keys as fraction held)."""
    raw = np.asarray(raw, dtype=np.float32)
    out = np.zeros((len(bounds) - 1, RAW_DIM), dtype=np.float32)
    for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        if b <= a:
            raise ValueError(f"interval {i} is empty ({a}..{b})")
        out[i] = aggregate(raw[a:b])
    return out


# ----------------------------------------------------------------------------- source converters

def _finite(value: Any, what: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{what} is not a number: {value!r}") from e
    if not math.isfinite(v):
        raise ValueError(f"{what} is not finite: {value!r}")
    return v


def from_gamefactory(entry: Mapping[str, Any]) -> np.ndarray:
    """One GameFactory `actions[str(i)]` entry -> raw [9].

    ws: 0 none, 1 W, 2 S; ad: 0 none, 1 A, 2 D; scs: 0 none, 1 jump, 2 sneak, 3 sprint;
    yaw_delta/pitch_delta in units of 15 degrees."""
    try:
        ws, ad, scs = int(entry.get("ws", 0)), int(entry.get("ad", 0)), int(entry.get("scs", 0))
    except (TypeError, ValueError) as e:
        raise ValueError(f"bad ws/ad/scs in entry {dict(entry)!r}") from e
    if ws not in (0, 1, 2) or ad not in (0, 1, 2) or scs not in (0, 1, 2, 3):
        raise ValueError(f"ws/ad/scs out of range in entry: ws={ws} ad={ad} scs={scs}")
    yaw = _finite(entry.get("yaw_delta", 0.0), "yaw_delta") * GAMEFACTORY_DEG_PER_UNIT
    pitch = _finite(entry.get("pitch_delta", 0.0), "pitch_delta") * GAMEFACTORY_DEG_PER_UNIT
    return make_raw(yaw, pitch, forward=float(ws == 1), back=float(ws == 2), left=float(ad == 1),
                    right=float(ad == 2), jump=float(scs == 1), sneak=float(scs == 2), sprint=float(scs == 3))


def to_gamefactory(raw: np.ndarray, yaw: float, pitch: float, pos: Sequence[float]) -> dict[str, Any]:
    """Raw [9] + absolute camera angles and position -> a GameFactory action entry.

    GameFactory holds one of jump/sneak/sprint at a time; jump wins, then sneak, then sprint."""
    r = np.asarray(raw, dtype=np.float32)
    held = lambda k: r[RAW[k]] >= 0.5  # noqa: E731
    ws = 1 if held("forward") and not held("back") else 2 if held("back") and not held("forward") else 0
    ad = 1 if held("left") and not held("right") else 2 if held("right") and not held("left") else 0
    scs = 1 if held("jump") else 2 if held("sneak") else 3 if held("sprint") else 0
    return {"ws": ws, "ad": ad, "scs": scs, "pitch": float(pitch), "yaw": float(yaw),
            "pitch_delta": float(r[RAW["pitch_deg"]]) / GAMEFACTORY_DEG_PER_UNIT,
            "yaw_delta": float(r[RAW["yaw_deg"]]) / GAMEFACTORY_DEG_PER_UNIT,
            "pos": [float(p) for p in pos]}


MINERL_KEYS = {"forward": "action$forward", "back": "action$back", "left": "action$left",
               "right": "action$right", "jump": "action$jump", "sneak": "action$sneak",
               "sprint": "action$sprint"}


def from_minerl(npz: Mapping[str, np.ndarray]) -> np.ndarray:
    """MineRL v0 rendered.npz arrays -> raw [N, 9]. `action$camera` is [pitch, yaw] in degrees."""
    if "action$camera" not in npz:
        raise ValueError("MineRL rendered.npz has no 'action$camera'")
    cam = np.asarray(npz["action$camera"], dtype=np.float32)
    if cam.ndim != 2 or cam.shape[1] != 2:
        raise ValueError(f"MineRL 'action$camera' must be [N, 2], got {cam.shape}")
    n = cam.shape[0]
    out = noop(n)
    out[:, RAW["pitch_deg"]] = cam[:, 0]
    out[:, RAW["yaw_deg"]] = cam[:, 1]
    for field, key in MINERL_KEYS.items():
        if key in npz:
            v = np.asarray(npz[key], dtype=np.float32).reshape(-1)
            if v.shape[0] != n:
                raise ValueError(f"MineRL {key!r} has {v.shape[0]} steps but action$camera has {n}")
            out[:, RAW[field]] = np.clip(v, 0, 1)
    return out


VPT_KEYS = {"forward": "key.keyboard.w", "back": "key.keyboard.s", "left": "key.keyboard.a",
            "right": "key.keyboard.d", "jump": "key.keyboard.space", "sneak": "key.keyboard.left.shift",
            "sprint": "key.keyboard.left.control"}


def from_vpt_line(line: Mapping[str, Any] | None) -> np.ndarray:
    """One parsed VPT JSONL line -> raw [9]. Null lines (GUI open, recorder gaps) and null keyboard are
    no-ops; camera = mouse delta * 360/2400 degrees kept as floats (the official loader truncates)."""
    out = noop()
    if line is None:
        return out
    mouse = line.get("mouse") or {}
    out[RAW["yaw_deg"]] = _finite(mouse.get("dx", 0.0), "mouse.dx") * VPT_DEG_PER_PIXEL
    out[RAW["pitch_deg"]] = _finite(mouse.get("dy", 0.0), "mouse.dy") * VPT_DEG_PER_PIXEL
    keyboard = line.get("keyboard") or {}
    keys = set(keyboard.get("keys") or [])
    for field, name in VPT_KEYS.items():
        out[RAW[field]] = float(name in keys)
    return out


def from_live(keys_down: Iterable[str], mouse_dx: float, mouse_dy: float,
              sensitivity: float) -> np.ndarray:
    """Live input -> raw [9]. keys_down names raw key fields ("forward", "jump", ...); mouse motion in
    pixels over the tick times `sensitivity` degrees/pixel (+dx right, +dy down, as the screen)."""
    held = set(keys_down)
    return make_raw(float(mouse_dx) * sensitivity, float(mouse_dy) * sensitivity,
                    **{k: 1.0 for k in KEY_FIELDS if k in held})


def encode(raw: np.ndarray, encoding: ActionEncoding = DEFAULT_ENCODING) -> np.ndarray:
    """Shorthand for encoding.encode(raw)."""
    return encoding.encode(raw)
