"""Per-source discovery, parsing and frame/action alignment for preprocess.py.

Every source ends up in one common form, `Aligned`: a run of consecutive video frames
`offset .. offset + n - 1` and, for each of them, the raw action (actions.py schema) that *produced* it,
i.e. was applied between the previous frame and this one (row 0 produced nothing and is zero). From
there resampling to the target fps and aggregating actions per kept interval is source-independent
(`plan_kept_frames`, `resample_actions`).

Alignment per source (../shared/reference/data-formats.md):
- GameFactory (and the block world, which writes the same layout): entry str(i) of `actions` produced
  frame i; entry "0" belongs to no frame. The entries must cover exactly the video's frames.
- MineRL v0: num_states = len(actions) + 1; the first true_video_frame_count - num_states video frames
  are skipped; video frame k after the skip is the observation on which action[k] was taken, so action[k]
  produced aligned frame k + 1.
- VPT: line i belongs to frame i in the same observation/action sense as MineRL (the official loader yields
  (frame i, action of line i) pairs for behaviour cloning), so line i produced frame i + 1; the last line
  produced no recorded frame. The line count must equal the frame count.

`preprocess.py --check` measures the lag between image motion and yaw for any of these, so a source whose
convention differs from the above shows up as a non-zero lag instead of a silently misaligned dataset.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from actions import (MINERL_KEYS, aggregate_intervals, from_gamefactory, from_minerl, from_vpt_line, noop,
                     validate_raw)
from video_io import VideoError, iter_av_frames, resize

SOURCES: tuple[str, ...] = ("gamefactory", "minerl", "vpt")
VIDEO_SUFFIX = ".mp4"
# Fps values closer than this (relative) count as equal: containers round rates (16 vs 15.9999).
FPS_TOLERANCE = 0.01


class SourceError(ValueError):
    """Bad input for one episode (missing, unreadable or inconsistent action data); names the file."""


@dataclass(frozen=True)
class Episode:
    """One video and its action log, as found on disk."""

    name: str
    """Unique shard name (no extension) derived from the path relative to the data root."""
    source: str
    """'gamefactory', 'minerl' or 'vpt'."""
    video: Path
    actions: Path
    """GameFactory JSON, MineRL rendered.npz or VPT JSONL."""
    metadata: Path | None = None
    """MineRL metadata.json (true_video_frame_count); None for the other sources."""


@dataclass(frozen=True)
class Aligned:
    """Actions aligned to a run of video frames."""

    offset: int
    """First aligned video frame (MineRL skips leading frames; 0 elsewhere)."""
    actions: np.ndarray
    """float32 [n, 9]: actions[i] produced aligned frame i (applied between frames i-1 and i); row 0 is 0."""
    video_frames: int
    """How many frames the video must decode to; anything else is a mismatch."""
    label: str
    """Source label for the manifest ('blockworld' for block-world GameFactory files)."""

    @property
    def frames(self) -> int:
        return int(self.actions.shape[0])


# ----------------------------------------------------------------------------- discovery

def _name(parts: tuple[str, ...]) -> str:
    return "__".join(p for p in parts if p) or "root"


def discover(root: str | Path, source: str = "auto") -> tuple[list[Episode], list[tuple[str, str]]]:
    """Find episodes under `root`. Returns (episodes sorted by name, problems as (file, reason)).

    Layouts: MineRL `<env>/<stream>/recording.mp4` + rendered.npz (+ metadata.json); GameFactory
    `<dir>/video/<stem>.mp4` + `<dir>/metadata/<stem>.json`, or the JSON next to the mp4; VPT `<stem>.mp4`
    + `<stem>.jsonl`. Files are matched by stem; a video without its action file (or the reverse) is a
    problem, reported, not an error."""
    root = Path(root)
    if source != "auto" and source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; expected auto or one of {SOURCES}")
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: data directory not found")
    want = set(SOURCES) if source == "auto" else {source}
    episodes: list[Episode] = []
    problems: list[tuple[str, str]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        d = Path(dirpath)
        rel = d.relative_to(root).parts
        files = set(filenames)
        mp4s = sorted(f for f in files if f.lower().endswith(VIDEO_SUFFIX) and not f.startswith("."))
        if "recording.mp4" in files and "minerl" in want:
            mp4s.remove("recording.mp4")
            video = d / "recording.mp4"
            if "rendered.npz" not in files:
                problems.append((str(video), "MineRL episode has no rendered.npz next to it"))
            else:
                meta = d / "metadata.json" if "metadata.json" in files else None
                episodes.append(Episode(_name(rel), "minerl", video, d / "rendered.npz", meta))
        if d.name == "metadata" and (d.parent / "video").is_dir() and "gamefactory" in want:
            continue  # handled with its video/ sibling
        if d.name == "video" and (d.parent / "metadata").is_dir() and "gamefactory" in want:
            meta_dir = d.parent / "metadata"
            jsons = {p.stem: p for p in meta_dir.glob("*.json") if not p.name.startswith(".")}
            for f in mp4s:
                stem = f[: -len(VIDEO_SUFFIX)]
                if stem in jsons:
                    episodes.append(Episode(_name(rel[:-1] + (stem,)), "gamefactory", d / f, jsons.pop(stem)))
                else:
                    problems.append((str(d / f), f"no matching action file {meta_dir / (stem + '.json')}"))
            for stem, p in sorted(jsons.items()):
                problems.append((str(p), f"no matching video {d / (stem + VIDEO_SUFFIX)}"))
            continue
        for f in mp4s:
            stem = f[: -len(VIDEO_SUFFIX)]
            if stem + ".jsonl" in files and "vpt" in want:
                episodes.append(Episode(_name(rel + (stem,)), "vpt", d / f, d / (stem + ".jsonl")))
            elif stem + ".json" in files and "gamefactory" in want:
                episodes.append(Episode(_name(rel + (stem,)), "gamefactory", d / f, d / (stem + ".json")))
            else:
                kinds = " or ".join(f"{stem}{s}" for s, k in ((".json", "gamefactory"), (".jsonl", "vpt"))
                                    if k in want) or "an action file"
                problems.append((str(d / f), f"no matching action file ({kinds}) next to the video"))
        stems = {f[: -len(VIDEO_SUFFIX)] for f in mp4s}
        for f in sorted(files):
            if f.endswith(".jsonl") and "vpt" in want and f[: -len(".jsonl")] not in stems:
                problems.append((str(d / f), f"no matching video {f[: -len('.jsonl')]}{VIDEO_SUFFIX}"))
    seen: dict[str, Episode] = {}
    unique: list[Episode] = []
    for ep in sorted(episodes, key=lambda e: (e.name, str(e.video))):
        if ep.name in seen:
            problems.append((str(ep.video), f"shard name {ep.name!r} already used by {seen[ep.name].video}"))
            continue
        seen[ep.name] = ep
        unique.append(ep)
    return unique, sorted(problems)


# ----------------------------------------------------------------------------- parsing + alignment

def _read_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise SourceError(f"{path}: unreadable file ({e.strerror or e})") from e
    except UnicodeDecodeError as e:
        raise SourceError(f"{path}: invalid JSON (not UTF-8 text)") from e
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise SourceError(f"{path}: invalid JSON ({e.msg} at line {e.lineno} column {e.colno})") from e


def _gamefactory(ep: Episode) -> Aligned:
    data = _read_json(ep.actions)
    if not isinstance(data, dict) or not isinstance(data.get("actions"), dict):
        raise SourceError(f"{ep.actions}: GameFactory JSON has no 'actions' object")
    entries: dict[int, Any] = {}
    for key, entry in data["actions"].items():
        try:
            i = int(key)
        except ValueError:
            raise SourceError(f"{ep.actions}: action key {key!r} is not a frame index") from None
        if i < 0 or not isinstance(entry, dict):
            raise SourceError(f"{ep.actions}: bad action entry {key!r}")
        entries[i] = entry
    if not entries or max(entries) < 1:
        raise SourceError(f"{ep.actions}: no action entries")
    n = max(entries) + 1
    missing = [i for i in range(1, n) if i not in entries]
    if missing:
        raise SourceError(f"{ep.actions}: action entries missing for {len(missing)} frames "
                          f"(first {missing[:5]}), fewer entries than frames")
    raw = noop(n)
    for i in range(1, n):
        try:
            raw[i] = from_gamefactory(entries[i])
        except ValueError as e:
            raise SourceError(f"{ep.actions}: action entry {i}: {e}") from None
    _validate(raw, ep.actions)
    label = "blockworld" if isinstance(data.get("blockworld"), dict) else "gamefactory"
    return Aligned(0, raw, n, label)


def _minerl(ep: Episode, header_frames: int | None) -> Aligned:
    try:
        with np.load(ep.actions, allow_pickle=False) as z:
            # only the numeric arrays we use: other members may be object arrays (pickles)
            wanted = {"reward", "action$camera", *MINERL_KEYS.values()}
            arrays = {k: z[k] for k in z.files if k in wanted}
    except (OSError, ValueError, EOFError) as e:
        raise SourceError(f"{ep.actions}: unreadable rendered.npz ({e})") from e
    try:
        steps = from_minerl(arrays)
    except ValueError as e:
        raise SourceError(f"{ep.actions}: {e}") from None
    n_actions = steps.shape[0]
    if "reward" in arrays and len(arrays["reward"]) != n_actions:
        raise SourceError(f"{ep.actions}: {len(arrays['reward'])} rewards but {n_actions} actions")
    _validate(steps, ep.actions)
    total = None
    if ep.metadata is not None:
        meta = _read_json(ep.metadata)
        if not isinstance(meta, dict):
            raise SourceError(f"{ep.metadata}: MineRL metadata.json is not an object")
        if meta.get("true_video_frame_count") is not None:
            try:
                total = int(meta["true_video_frame_count"])
            except (TypeError, ValueError):
                raise SourceError(f"{ep.metadata}: bad true_video_frame_count "
                                  f"{meta['true_video_frame_count']!r}") from None
    if total is None:
        if not header_frames:
            raise SourceError(f"{ep.video}: frame count unknown (no true_video_frame_count in metadata.json "
                              f"and none in the video header)")
        total = header_frames
    num_states = n_actions + 1
    skip = total - num_states
    if skip < 0:
        raise SourceError(f"{ep.actions}: {n_actions} actions need {num_states} frames but the video has "
                          f"{total}: more action entries than frames")
    raw = noop(num_states)
    raw[1:] = steps
    return Aligned(skip, raw, total, "minerl")


def _vpt(ep: Episode) -> Aligned:
    try:
        text = ep.actions.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SourceError(f"{ep.actions}: unreadable file ({e})") from e
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise SourceError(f"{ep.actions}: no action lines")
    raw = noop(len(lines))
    for i, line in enumerate(lines[:-1]):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise SourceError(f"{ep.actions}: invalid JSON on line {i + 1} ({e.msg})") from None
        if obj is not None and not isinstance(obj, dict):
            raise SourceError(f"{ep.actions}: line {i + 1} is not a JSON object")
        try:
            raw[i + 1] = from_vpt_line(obj)
        except ValueError as e:
            raise SourceError(f"{ep.actions}: line {i + 1}: {e}") from None
    try:
        json.loads(lines[-1])
    except json.JSONDecodeError as e:
        raise SourceError(f"{ep.actions}: invalid JSON on line {len(lines)} ({e.msg})") from None
    _validate(raw, ep.actions)
    return Aligned(0, raw, len(lines), "vpt")


def _validate(raw: np.ndarray, path: Path) -> None:
    try:
        validate_raw(raw, str(path))
    except ValueError as e:
        raise SourceError(str(e)) from None


def load_alignment(ep: Episode, header_frames: int | None = None) -> Aligned:
    """Parse the episode's action file and align it to video frames; SourceError on bad input.

    `header_frames` (the container's frame count, 0/None if unknown) is only needed for MineRL data
    without true_video_frame_count."""
    if ep.source == "gamefactory":
        return _gamefactory(ep)
    if ep.source == "minerl":
        return _minerl(ep, header_frames)
    if ep.source == "vpt":
        return _vpt(ep)
    raise ValueError(f"unknown source {ep.source!r}")


# ----------------------------------------------------------------------------- resampling

def plan_kept_frames(n_frames: int, src_fps: float, out_fps: float, skip_seconds: float) -> np.ndarray:
    """Aligned frame indices kept when resampling `n_frames` at `src_fps` to `out_fps`, after dropping the
    first `skip_seconds`: evenly spaced on the source timeline (linspace over source indices, rounded to
    the nearest frame). Raises SourceError when the source is slower than `out_fps` (no upsampling)."""
    if not (src_fps > 0 and math.isfinite(src_fps)):
        raise SourceError(f"invalid source fps {src_fps}")
    ratio = src_fps / out_fps
    if abs(ratio - 1.0) < FPS_TOLERANCE:
        ratio = 1.0
    elif ratio < 1.0:
        raise SourceError(f"source is {src_fps:g} fps, below the target {out_fps:g} fps (no upsampling)")
    start = int(math.ceil(skip_seconds * src_fps - 1e-9))
    if start >= n_frames:
        return np.zeros(0, dtype=np.int64)
    count = int(math.floor((n_frames - 1 - start) / ratio + 1e-9)) + 1
    # Round half up (not numpy's half-to-even) so the pattern of interval lengths is regular.
    return np.floor(np.linspace(start, start + (count - 1) * ratio, count) + 0.5).astype(np.int64)


def resample_actions(actions: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """Per-frame actions [n, 9] (row i produced frame i) -> [K-1, 9]: row j aggregates the actions that
    produced frames kept[j]+1 .. kept[j+1] (camera summed, keys as the fraction held)."""
    if len(kept) < 2:
        return np.zeros((0, actions.shape[1]), dtype=np.float32)
    return aggregate_intervals(actions, np.asarray(kept) + 1)


# ----------------------------------------------------------------------------- decoding

def count_frames(path: str | Path) -> int:
    """Number of video packets (= frames for the H.264 files these datasets use), without decoding."""
    import av

    try:
        with av.open(str(path)) as c:
            stream = c.streams.video[0]
            return sum(1 for p in c.demux(stream) if p.size)
    except (av.error.FFmpegError, IndexError) as e:
        raise VideoError(f"{path}: unreadable video ({e})") from e


def decode_kept(path: str | Path, kept: np.ndarray, size: tuple[int, int], expected_frames: int,
                chunk: int = 128, gray: bool = False) -> Iterator[np.ndarray]:
    """Decode a video and yield its frames at sorted absolute indices `kept`, resized to size=(w, h) with
    area interpolation, in chunks of up to `chunk` frames (uint8 [n, h, w, 3], or [n, h, w] with `gray`).
    Frames not kept are decoded but never converted. Raises VideoError if the file is unreadable or
    decodes to a frame count other than `expected_frames` (truncated or mismatched)."""
    path = Path(path)
    keep = np.zeros(expected_frames, dtype=bool)
    keep[kept] = True
    fmt = "gray" if gray else "rgb24"
    buf: list[np.ndarray] = []
    n = 0
    for frame in iter_av_frames(path):
        if n < expected_frames and keep[n]:
            buf.append(resize(frame.to_ndarray(format=fmt), size))
            if len(buf) >= chunk:
                yield np.stack(buf)
                buf = []
        n += 1
    if n != expected_frames:
        raise VideoError(f"{path}: decoded {n} frames but the actions cover {expected_frames} "
                         f"({'fewer' if n < expected_frames else 'more'} frames than action entries)")
    if buf:
        yield np.stack(buf)
