"""A training run's folder and its metrics log, shared by train.py and vq_vae/train.py."""
from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import ckpt_io


class RunFiles:
    """Paths and retention inside a world-model --run-dir."""

    def __init__(self, run_dir: str | Path) -> None:
        self.root = Path(run_dir)
        self.ckpt_dir = self.root / "checkpoints"
        self.export_dir = self.root / "exports"
        self.image_dir = self.root / "images"
        self.metrics = self.root / "metrics.jsonl"
        self.config = self.root / "config.json"
        self.latest_export = self.root / "world_model.pt"

    def state_path(self, step: int) -> Path:
        return self.ckpt_dir / f"state_{step:08d}.pt"

    def export_path(self, step: int) -> Path:
        return self.export_dir / f"world_model_{step:08d}.pt"

    def states(self) -> list[Path]:
        return sorted(self.ckpt_dir.glob("state_*.pt"))

    def exports(self) -> list[tuple[int, Path]]:
        """(step, path) of every weights-only export, oldest first."""
        return sorted((int(p.stem.rsplit("_", 1)[1]), p) for p in self.export_dir.glob("world_model_*.pt")
                      if p.stem.rsplit("_", 1)[1].isdigit())

    @staticmethod
    def prune(paths: list[Path], keep: int) -> None:
        for p in paths[:-keep] if keep > 0 else []:
            p.unlink(missing_ok=True)


def write_png(path: Path, rgb: np.ndarray) -> None:
    """uint8 [H, W, 3] RGB -> PNG, atomically."""
    import cv2

    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]))
    if not ok:
        raise OSError(f"{path}: could not encode PNG")
    ckpt_io.atomic_write_bytes(path, buf.tobytes())


class MetricsLog:
    """metrics.jsonl (one JSON object per line, appended; non-finite values as null), plus wandb unless its
    mode is "disabled". `enabled=False` (data-parallel ranks other than 0) makes every call a no-op."""

    def __init__(self, root: Path, wandb_mode: str, project: str, config: dict[str, Any], run_id: str,
                 enabled: bool = True) -> None:
        self.root, self.enabled, self.wandb = Path(root), enabled, None
        if not enabled:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.root / "metrics.jsonl", "a", buffering=1)
        if wandb_mode != "disabled":
            try:
                os.environ.setdefault("WANDB_SILENT", "true")
                import wandb

                self.wandb = wandb.init(project=project, dir=str(self.root), mode=wandb_mode, config=config,
                                        id=run_id, resume="allow", name=self.root.name)
            except Exception as e:  # logging must never stop a training run
                print(f"warning: wandb disabled ({type(e).__name__}: {e}); metrics.jsonl still written",
                      file=sys.stderr)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()}
        self._fh.write(json.dumps({"step": step, "time": time.time(), **clean}) + "\n")
        if self.wandb is not None:
            self.wandb.log({k: v for k, v in metrics.items() if isinstance(v, (int, float))}, step=step)

    def image(self, step: int, path: Path, rgb: np.ndarray, key: str, caption: str) -> Path | None:
        """Write uint8 [H, W, 3] `rgb` to `path` and log it to wandb under `key`."""
        if not self.enabled:
            return None
        write_png(path, rgb)
        if self.wandb is not None:
            import wandb

            self.wandb.log({key: wandb.Image(rgb, caption=caption)}, step=step)
        return path

    def close(self) -> None:
        if self.enabled:
            self._fh.close()
            if self.wandb is not None:
                self.wandb.finish()
