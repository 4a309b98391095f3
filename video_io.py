"""Video reading and writing with PyAV (H.264), plus frame resizing.

Readers raise VideoError naming the file for anything unreadable (missing, corrupt, truncated, no video
stream, zero frames), so batch jobs can skip that file and report it.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

import numpy as np

if TYPE_CHECKING:
    import av


class VideoError(ValueError):
    """A video file that cannot be read."""


@dataclass(frozen=True)
class VideoInfo:
    fps: float
    width: int
    height: int
    frames: int
    """Frame count from the container header; 0 when the container does not say (count by decoding)."""


def probe(path: str | Path) -> VideoInfo:
    """fps, size and header frame count of a video, without decoding it."""
    import av

    path = Path(path)
    if not path.is_file():
        raise VideoError(f"{path}: video file not found")
    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                raise VideoError(f"{path}: no video stream")
            s = c.streams.video[0]
            rate = s.average_rate or s.guessed_rate or s.base_rate
            if not rate:
                raise VideoError(f"{path}: frame rate unknown")
            return VideoInfo(float(rate), s.codec_context.width, s.codec_context.height, int(s.frames or 0))
    except av.error.FFmpegError as e:
        raise VideoError(f"{path}: unreadable video ({e})") from e


def iter_av_frames(path: str | Path) -> Iterator[av.VideoFrame]:
    """Decode every frame as a PyAV frame, not yet converted to an array (callers that keep only some
    frames convert only those). Raises VideoError naming the file: missing, no video stream, corrupt or
    truncated (with how many frames decoded first), or no frames at all."""
    import av

    path = Path(path)
    if not path.is_file():
        raise VideoError(f"{path}: video file not found")
    n = 0
    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                raise VideoError(f"{path}: no video stream")
            stream = c.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in c.decode(stream):
                n += 1
                yield frame
    except av.error.FFmpegError as e:
        raise VideoError(f"{path}: corrupt or truncated video, decode failed after {n} frames ({e})") from e
    if n == 0:
        raise VideoError(f"{path}: video has no frames")


def iter_frames(path: str | Path) -> Iterator[np.ndarray]:
    """Decode every frame as RGB uint8 [H, W, 3]; a decode error mid-file raises VideoError."""
    for frame in iter_av_frames(path):
        yield frame.to_ndarray(format="rgb24")


def read_frames(path: str | Path) -> np.ndarray:
    """All frames of a video, RGB uint8 [N, H, W, 3]."""
    return np.stack(list(iter_frames(path)))


def resize(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an RGB frame to size=(width, height) with area interpolation (nearest when enlarging is
    not wanted is the caller's business: this is for downscaling source video)."""
    import cv2

    w, h = size
    if frame.shape[1] == w and frame.shape[0] == h:
        return frame
    return cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA)


def upscale_nearest(frames: np.ndarray, factor: int) -> np.ndarray:
    """[..., H, W, C] -> [..., H*factor, W*factor, C] by pixel repetition."""
    return frames.repeat(factor, axis=-3).repeat(factor, axis=-2)


def write_mp4(path: str | Path, frames: Iterable[np.ndarray], fps: float, crf: int = 18) -> int:
    """Write RGB uint8 frames as an H.264 mp4 (yuv420p, so any player opens it), atomically.
    Returns the number of frames written. Width and height must be even (yuv420p)."""
    import av

    from ckpt_io import atomic_path

    path = Path(path)
    n = 0
    with atomic_path(path, suffix=".mp4") as tmp:
        with av.open(str(tmp), mode="w") as c:
            stream = None
            for frame in frames:
                frame = np.ascontiguousarray(frame, dtype=np.uint8)
                if stream is None:
                    h, w = frame.shape[:2]
                    if h % 2 or w % 2:
                        raise VideoError(f"{path}: H.264/yuv420p needs even width and height, got {w}x{h}")
                    stream = c.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
                    stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
                    stream.options = {"crf": str(crf), "preset": "veryfast"}
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    c.mux(packet)
                n += 1
            if stream is None:
                raise VideoError(f"{path}: no frames to write")
            for packet in stream.encode():
                c.mux(packet)
    return n
