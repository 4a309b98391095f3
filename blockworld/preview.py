"""Preview a dataset in GameFactory's layout: a contact-sheet PNG and a tiled mp4.

    python -m blockworld.preview --data DIR --out DIR

contact_sheet.png: one row per episode (frames evenly spaced in time, upscaled by pixel repetition),
labelled with the episode's name, biome and length, and each frame with its index. preview.mp4: up to
--video-episodes episodes side by side, upscaled, at the source frame rate (episodes that end early hold
their last frame). Only the frames shown are kept in memory.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ckpt_io import atomic_write_bytes
from config import main_config
from video_io import VideoError, iter_frames, probe, upscale_nearest, write_mp4

LABEL_H = 14
GAP = 2


@dataclass
class PreviewConfig:
    data: str = ""
    """Dataset folder (video/*.mp4 with metadata/*.json), e.g. the --out of blockworld.generate."""
    out: str = ""
    """Where to write contact_sheet.png and preview.mp4."""
    frames_per_episode: int = 8
    """Columns of the contact sheet: frames taken evenly across each episode."""
    max_episodes: int = 24
    """Rows of the contact sheet at most (episodes sorted by name)."""
    scale: int = 2
    """Pixel repetition factor for both outputs."""
    video_episodes: int = 8
    """Episodes tiled in preview.mp4."""
    video_columns: int = 4
    """Tiles per row in preview.mp4."""
    video_seconds: float = 30.0
    """Length of preview.mp4 at most (long episodes are cut)."""


def _label(img: np.ndarray, text: str, org: tuple[int, int], scale: float = 0.4) -> None:
    import cv2

    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)


def _episodes(data: Path) -> list[tuple[str, Path, dict[str, Any]]]:
    videos = sorted((data / "video").glob("*.mp4")) or sorted(data.glob("*.mp4"))
    out = []
    for v in videos:
        meta_path = data / "metadata" / f"{v.stem}.json"
        meta: dict[str, Any] = {}
        if meta_path.is_file():
            try:
                meta = json.loads(meta_path.read_text())
            except json.JSONDecodeError:
                meta = {}
        out.append((v.stem, v, meta))
    return out


def _png_bytes(rgb: np.ndarray) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]))
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def contact_sheet(rows: list[tuple[str, np.ndarray, dict[str, Any]]], scale: int) -> np.ndarray:
    """rows: (name, the frames to show [C, H, W, 3], meta with 'frames' = the episode's length) -> RGB
    sheet, one labelled row per episode, each frame labelled with its index in the episode."""
    h, w = rows[0][1].shape[1:3]
    cols = max(len(f) for _, f, _ in rows)
    th, tw = h * scale, w * scale
    row_h = LABEL_H + th + GAP
    sheet = np.full((row_h * len(rows) + GAP, cols * (tw + GAP) + GAP, 3), 32, dtype=np.uint8)
    for r, (name, frames, meta) in enumerate(rows):
        y = r * row_h + GAP
        n = int(meta.get("frames", len(frames)))
        idx = np.linspace(0, n - 1, len(frames)).round().astype(int)
        for c, (i, f) in enumerate(zip(idx, frames)):
            x = GAP + c * (tw + GAP)
            if f.shape[:2] != (h, w):
                import cv2
                f = cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA)
            sheet[y + LABEL_H:y + LABEL_H + th, x:x + tw] = upscale_nearest(f, scale)
            _label(sheet, f"{i}", (x + 2, y + LABEL_H - 3), 0.35)
        _label(sheet, f"{name}  {meta.get('biome', '?')}  {n} frames", (GAP + tw + GAP + 40, y + LABEL_H - 3), 0.4)
    return sheet


def tiled_video(episodes: list[tuple[str, np.ndarray, dict[str, Any]]], columns: int, scale: int) -> np.ndarray:
    """Frames [T, H', W', 3] with the episodes side by side (T = the longest episode)."""
    h, w = episodes[0][1].shape[1:3]
    th, tw = h * scale, w * scale
    cols = min(columns, len(episodes))
    rows = -(-len(episodes) // cols)
    T = max(len(f) for _, f, _ in episodes)
    out = np.zeros((T, rows * th, cols * tw, 3), dtype=np.uint8)
    for k, (name, frames, meta) in enumerate(episodes):
        r, c = divmod(k, cols)
        if frames.shape[1:3] != (h, w):
            continue
        idx = np.minimum(np.arange(T), len(frames) - 1)
        out[:, r * th:(r + 1) * th, c * tw:(c + 1) * tw] = upscale_nearest(frames[idx], scale)
        for t in range(T):
            _label(out[t], f"{name} {meta.get('biome', '')}", (c * tw + 3, r * th + 11), 0.33)
    return out


def main() -> int:
    cfg = main_config(PreviewConfig)
    if not cfg.data or not cfg.out:
        print("error: --data and --out are required", file=sys.stderr)
        return 2
    data, out = Path(cfg.data), Path(cfg.out)
    found = _episodes(data)
    if not found:
        print(f"error: {data}: no videos in video/ (or *.mp4 at the top level)", file=sys.stderr)
        return 2
    # Only what is shown is kept in memory: a few frames per episode for the sheet, and the first
    # video_seconds of video_episodes episodes for the mp4.
    sheet_rows: list[tuple[str, np.ndarray, dict[str, Any]]] = []
    clips: list[tuple[str, np.ndarray, dict[str, Any]]] = []
    failed = []
    fps = 16.0
    for k, (name, path, meta) in enumerate(found[:max(cfg.max_episodes, cfg.video_episodes)]):
        try:
            info = probe(path)
            fps = info.fps
            keep_clip = k < cfg.video_episodes
            max_clip = int(round(cfg.video_seconds * fps))
            frames: list[np.ndarray] = []
            picked: dict[int, np.ndarray] = {}
            want = set(np.linspace(0, info.frames - 1, cfg.frames_per_episode).round().astype(int).tolist()) \
                if info.frames > 0 else None
            n = 0
            for i, f in enumerate(iter_frames(path)):
                n += 1
                if keep_clip and i < max_clip:
                    frames.append(f)
                if want is None or i in want:
                    picked[i] = f
            if want is None:  # no frame count in the header: pick from what was decoded
                idx = np.linspace(0, n - 1, cfg.frames_per_episode).round().astype(int)
                picked = {i: picked[i] for i in idx}
            if k < cfg.max_episodes:
                sheet_rows.append((name, np.stack([picked[i] for i in sorted(picked)]), dict(meta, frames=n)))
            if keep_clip:
                clips.append((name, np.stack(frames), meta))
        except VideoError as e:
            failed.append(str(e))
    if not sheet_rows and not clips:
        print("error: no readable videos:\n" + "\n".join(failed), file=sys.stderr)
        return 1
    out.mkdir(parents=True, exist_ok=True)
    if sheet_rows:
        sheet = contact_sheet(sheet_rows, cfg.scale)
        atomic_write_bytes(out / "contact_sheet.png", _png_bytes(sheet))
    if clips:
        write_mp4(out / "preview.mp4", tiled_video(clips, cfg.video_columns, cfg.scale), fps=fps)
    print(json.dumps({"contact_sheet": str(out / "contact_sheet.png"), "preview": str(out / "preview.mp4"),
                      "episodes": len(sheet_rows), "failed": len(failed)}))
    for f in failed:
        print(f"FAILED {f}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
