"""Frames for tokenizer training and evaluation, read straight from video folders.

Any folder holding `*.mp4` files (GameFactory layout `DIR/video/*.mp4`, block-world output, MineRL
`recording.mp4`) works: every mp4 below the given folders is a source. Frames are decoded with
`video_io`, resized to the tokenizer's size with `video_io.resize` (area interpolation, as preprocess.py
does) and kept in a uint8 pool in memory. When the pool holds every frame (block-world sized data) it is
filled once; otherwise (real data: hours of video) a background thread keeps replacing random slots with
frames of randomly chosen videos, so batches mix many videos without decoding per sample. That thread is
stopped and joined by `FramePool.close()` (also registered with atexit): a thread left inside PyAV /
OpenCV at interpreter shutdown aborts the process ("terminate called without an active exception",
exit status 134) after the run has finished.
"""
from __future__ import annotations

import atexit
import threading
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

import video_io


def find_videos(dirs: Sequence[str | Path]) -> list[Path]:
    """Every *.mp4 below the folders (a folder may also be a single mp4 file), sorted; error if none."""
    found: list[Path] = []
    for d in dirs:
        p = Path(d)
        if p.is_file() and p.suffix == ".mp4":
            found.append(p)
        elif p.is_dir():
            found.extend(sorted(q for q in p.rglob("*.mp4") if not q.name.startswith(".")))
        else:
            raise FileNotFoundError(f"{p}: no such folder or mp4 file")
    if not found:
        raise FileNotFoundError(f"no *.mp4 files under {', '.join(str(d) for d in dirs)}")
    return found


def load_video_frames(path: Path, size: tuple[int, int], stride: int = 1,
                      max_frames: int | None = None, stop: threading.Event | None = None) -> np.ndarray | None:
    """Every `stride`-th frame of one video resized to size=(w, h): uint8 [N, h, w, 3]; VideoError if bad.
    None if `stop` was set before the video was read to the end."""
    frames = []
    for i, f in enumerate(video_io.iter_frames(path)):
        if stop is not None and stop.is_set():
            return None
        if i % stride:
            continue
        frames.append(video_io.resize(f, size))
        if max_frames is not None and len(frames) >= max_frames:
            break
    return np.stack(frames)


class FramePool:
    """A uint8 [capacity, h, w, 3] pool of frames from many videos, sampled uniformly at random.

    Bad videos are skipped and listed in `bad` (path, reason) so the caller can report them."""

    def __init__(self, videos: Sequence[Path], size: tuple[int, int], capacity: int, stride: int = 1,
                 seed: int = 0, refresh: bool = True) -> None:
        self.videos = list(videos)
        self.size = size
        self.stride = stride
        self.bad: list[tuple[str, str]] = []
        self._rng = np.random.default_rng(seed)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        chunks: list[np.ndarray] = []
        total = 0
        order = self._rng.permutation(len(self.videos))
        for vi in order:
            frames = self._load(self.videos[vi])
            if frames is None:
                continue
            chunks.append(frames)
            total += len(frames)
            if total >= capacity:
                break
        if not chunks:
            raise video_io.VideoError("no readable video among " + ", ".join(str(v) for v in self.videos[:5])
                                      + (" ..." if len(self.videos) > 5 else ""))
        self.frames = np.concatenate(chunks)[:capacity] if total > capacity else np.concatenate(chunks)
        self.complete = total <= capacity and len(chunks) == len(self.videos) - len(self.bad)
        if refresh and not self.complete:
            # the pool holds a sample of the data: keep swapping in frames of other videos
            self._thread = threading.Thread(target=self._refresh_loop, daemon=True, name="FramePool-refresh")
            self._thread.start()
            # the last line of defence when the owner never reaches close() (an error before its finally)
            atexit.register(self.close)

    def _load(self, path: Path) -> np.ndarray | None:
        try:
            return load_video_frames(path, self.size, self.stride, stop=self._stop)
        except video_io.VideoError as e:
            self.bad.append((str(path), str(e)))
            return None

    def _refresh_loop(self) -> None:
        rng = np.random.default_rng(int(self._rng.integers(1 << 31)))
        while not self._stop.is_set():
            frames = self._load(self.videos[int(rng.integers(len(self.videos)))])
            if frames is None:
                continue
            slots = rng.choice(len(self.frames), size=min(len(frames), len(self.frames)), replace=False)
            self.frames[slots] = frames[: len(slots)]

    def close(self) -> None:
        """Stop the refresh thread and wait for it (it checks between decoded frames, so this is quick)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
            atexit.unregister(self.close)

    def __len__(self) -> int:
        return len(self.frames)

    def sample(self, batch: int, rng: np.random.Generator) -> np.ndarray:
        """uint8 [batch, h, w, 3] drawn uniformly (with replacement) from the pool."""
        return self.frames[rng.integers(len(self.frames), size=batch)]


def readable_videos(videos: Sequence[Path], size: tuple[int, int], bad: list[tuple[str, str]]
                    ) -> Iterator[np.ndarray]:
    """Each readable video's frames (uint8 [N, h, w, 3]); an unreadable one is added to `bad` as (path,
    reason) and skipped."""
    for v in videos:
        try:
            yield load_video_frames(v, size)
        except video_io.VideoError as e:
            bad.append((str(v), str(e)))


def heldout_frames(videos: Sequence[Path], size: tuple[int, int], count: int,
                   seed: int = 0) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """`count` frames spread evenly over all videos (same frames for the same inputs): uint8 [N, h, w, 3],
    plus the (path, reason) list of videos that could not be read."""
    per = max(1, -(-count // len(videos)))
    rng = np.random.default_rng(seed)
    out: list[np.ndarray] = []
    bad: list[tuple[str, str]] = []
    for frames in readable_videos(videos, size, bad):
        pick = np.sort(rng.choice(len(frames), size=min(per, len(frames)), replace=False))
        out.append(frames[pick])
    if not out:
        raise video_io.VideoError("no readable video among the held-out data")
    frames = np.concatenate(out)
    if len(frames) > count:
        frames = frames[np.sort(rng.choice(len(frames), size=count, replace=False))]
    return frames, bad


def heldout_clips(videos: Sequence[Path], size: tuple[int, int], clips_per_video: int, clip_frames: int,
                  seed: int = 0) -> tuple[list[np.ndarray], list[tuple[str, str]]]:
    """Runs of `clip_frames` consecutive frames (uint8 [T, h, w, 3] each), `clips_per_video` per video at
    random non-overlapping offsets (same clips for the same inputs), plus the (path, reason) list of
    videos that could not be read. Consecutive frames are what patch stability compares."""
    rng = np.random.default_rng(seed)
    out: list[np.ndarray] = []
    bad: list[tuple[str, str]] = []
    for frames in readable_videos(videos, size, bad):
        slots = max(1, len(frames) // clip_frames)
        for s in np.sort(rng.choice(slots, size=min(clips_per_video, slots), replace=False)):
            out.append(frames[s * clip_frames:(s + 1) * clip_frames])
    if not out:
        raise video_io.VideoError("no readable video among the held-out data")
    return out, bad
