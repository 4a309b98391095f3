"""Preview a dataset in GameFactory's layout: a contact-sheet PNG and a tiled mp4.

    python -m blockworld.preview --data DIR --out DIR

contact_sheet.png: one row per episode (frames evenly spaced in time, upscaled by pixel repetition),
labelled with the episode's name and biome. preview.mp4: up to --video-episodes episodes side by side,
upscaled, at the source frame rate (episodes that end early hold their last frame).
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
from video_io import VideoError, probe, read_frames, upscale_nearest, write_mp4

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


def contact_sheet(episodes: list[tuple[str, np.ndarray, dict[str, Any]]], cols: int, scale: int) -> np.ndarray:
    """episodes: (name, frames [N, H, W, 3], meta) -> RGB sheet, one labelled row per episode."""
    h, w = episodes[0][1].shape[1:3]
    th, tw = h * scale, w * scale
    row_h = LABEL_H + th + GAP
    sheet = np.full((row_h * len(episodes) + GAP, cols * (tw + GAP) + GAP, 3), 32, dtype=np.uint8)
    for r, (name, frames, meta) in enumerate(episodes):
        y = r * row_h + GAP
        idx = np.linspace(0, len(frames) - 1, cols).round().astype(int)
        for c, i in enumerate(idx):
            x = GAP + c * (tw + GAP)
            f = frames[i]
            if f.shape[:2] != (h, w):
                import cv2
                f = cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA)
            sheet[y + LABEL_H:y + LABEL_H + th, x:x + tw] = upscale_nearest(f, scale)
            _label(sheet, f"{i}", (x + 2, y + LABEL_H - 3), 0.35)
        biome = meta.get("biome", "?")
        _label(sheet, f"{name}  {biome}  {len(frames)} frames", (GAP + tw + GAP + 40, y + LABEL_H - 3), 0.4)
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
    loaded: list[tuple[str, np.ndarray, dict[str, Any]]] = []
    failed = []
    fps = 16.0
    for name, path, meta in found[:max(cfg.max_episodes, cfg.video_episodes)]:
        try:
            loaded.append((name, read_frames(path), meta))
            fps = probe(path).fps
        except VideoError as e:
            failed.append(str(e))
    if not loaded:
        print("error: no readable videos:\n" + "\n".join(failed), file=sys.stderr)
        return 1
    out.mkdir(parents=True, exist_ok=True)
    sheet = contact_sheet(loaded[:cfg.max_episodes], cfg.frames_per_episode, cfg.scale)
    atomic_write_bytes(out / "contact_sheet.png", _png_bytes(sheet))
    video = tiled_video(loaded[:cfg.video_episodes], cfg.video_columns, cfg.scale)
    write_mp4(out / "preview.mp4", video, fps=fps)
    print(json.dumps({"contact_sheet": str(out / "contact_sheet.png"), "preview": str(out / "preview.mp4"),
                      "episodes": len(loaded), "failed": len(failed)}))
    for f in failed:
        print(f"FAILED {f}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
