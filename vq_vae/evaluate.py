"""Evaluate a trained tokenizer on held-out video frames.

    python -m vq_vae.evaluate --vqvae CKPT --data DIR [DIR ...] [--frames 512] [--out DIR]

Reports PSNR, SSIM and LPIPS (AlexNet, real weights) between frames and their reconstructions
decode_code(encode(frame)), codebook usage over all held-out frames (unique codes, perplexity), the
code-predictability metrics of vq_vae/stability.py on runs of consecutive frames (idempotence, patch
stability, codebook separation, usage and perplexity on the clips; keys `codes/...`), and writes
`<out>/report.json` and `<out>/reconstructions.png` (originals over reconstructions). The metric
functions are the repository's shared ones (metrics.py), so numbers compare with evaluate.py's.
"""
from __future__ import annotations

import dataclasses
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import torch

import ckpt_io
import config as config_mod
import video_io
import metrics
from devices import resolve_device
from lpips_loader import load_lpips
from run_files import write_png
from vq_vae.checkpoint import load_vqvae, vqvae_identity
from vq_vae.data import find_videos, heldout_clips, heldout_frames
from vq_vae.stability import code_metrics, codebook_usage, reconstruct
from vq_vae.train import recon_grid, split_data_args


@dataclass
class VQEvalConfig:
    """Held-out evaluation of a tokenizer checkpoint."""

    vqvae: str = ""
    """Tokenizer checkpoint (vqvae.pt written by vq_vae.train)."""
    data: tuple[str, ...] = ()
    """Held-out folders (or mp4 files); every *.mp4 below them is used. `--data A B`."""
    out: str = ""
    """Folder for report.json and reconstructions.png (default: <checkpoint folder>/eval, or for a checkpoint
    under checkpoints/, which the repo ships, runs/vq_eval/<its folder name>)."""
    frames: int = 512
    """Frames to evaluate, spread evenly over the videos."""
    batch_size: int = 64
    """Frames per encode/decode batch."""
    grid_frames: int = 8
    """Frames shown in the reconstruction grid."""
    clips_per_video: int = 4
    """Runs of consecutive frames per video for the code-predictability metrics (0: skip them)."""
    clip_frames: int = 32
    """Consecutive frames per run (patch stability compares each frame with the next)."""
    seed: int = 0
    """Which frames and clips are picked."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where to run."""
    cpu_threads: int = 0
    """torch CPU threads (0: torch's default)."""


SHIPPED_DIR = Path(__file__).resolve().parent.parent / "checkpoints"
"""The repo's checkpoints/ folder, whose shipped files a default output must not land beside."""


def default_out(vqvae: Path) -> Path:
    """<checkpoint folder>/eval, except for a checkpoint under the repo's checkpoints/ (runs/vq_eval/<folder>),
    so evaluating the shipped tokenizer leaves the committed folder as it is."""
    folder = vqvae.resolve().parent
    if folder == SHIPPED_DIR or SHIPPED_DIR in folder.parents:
        return Path("runs/vq_eval") / folder.name
    return vqvae.parent / "eval"


def evaluate(cfg: VQEvalConfig) -> dict[str, Any]:
    if not cfg.vqvae:
        raise config_mod.ConfigError("--vqvae CKPT is required")
    if not cfg.data:
        raise config_mod.ConfigError("--data needs at least one folder of held-out videos")
    if cfg.cpu_threads > 0:
        torch.set_num_threads(cfg.cpu_threads)
    device = resolve_device(cfg.device)
    model = load_vqvae(cfg.vqvae, device=device)
    size = (model.cfg.frame_width, model.cfg.frame_height)
    videos = find_videos(cfg.data)
    frames, bad = heldout_frames(videos, size, cfg.frames, cfg.seed)
    t0 = time.perf_counter()
    recs, tokens = reconstruct(model, frames, cfg.batch_size)
    seconds = time.perf_counter() - t0
    lp = metrics.lpips_distance(load_lpips("alex", device=device), frames, recs, device=device)
    psnr, ssim = metrics.psnr(frames, recs), metrics.ssim(frames, recs)
    codes: dict[str, float] = {}
    if cfg.clips_per_video > 0:
        clips, _ = heldout_clips(videos, size, cfg.clips_per_video, cfg.clip_frames, cfg.seed)
        codes = {f"codes/{k}": v for k, v in code_metrics(model, clips, cfg.batch_size).items()}
    report = {
        "vqvae": str(cfg.vqvae), "vqvae_identity": vqvae_identity(cfg.vqvae),
        "data": list(cfg.data), "videos": len(videos), "frames": int(len(frames)),
        "psnr_db": float(psnr.mean()), "ssim": float(ssim.mean()), "lpips": float(lp.mean()),
        "psnr_db_p10": float(np.percentile(psnr, 10)), "lpips_p90": float(np.percentile(lp, 90)),
        **codebook_usage(tokens, model.codebook_size), **codes,
        "encode_decode_frames_per_s": len(frames) / max(seconds, 1e-9), "device": str(device),
        "skipped_videos": [{"path": p, "reason": r} for p, r in bad],
        "config": config_mod.to_dict(cfg),
    }
    out = Path(cfg.out) if cfg.out else default_out(Path(cfg.vqvae))
    pick = np.linspace(0, len(frames) - 1, min(cfg.grid_frames, len(frames))).astype(int)
    write_png(out / "reconstructions.png", recon_grid(frames[pick], recs[pick]))
    ckpt_io.atomic_write_json(out / "report.json", report)
    report["out"] = str(out)
    return report


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    data, rest = split_data_args(argv)
    cfg = config_mod.main_config(VQEvalConfig, argv=rest)
    if data:
        cfg = dataclasses.replace(cfg, data=tuple(data))
    errors = (ckpt_io.CheckpointError, FileNotFoundError, config_mod.ConfigError, video_io.VideoError)
    report = config_mod.exit_on_error(lambda: evaluate(cfg), errors)
    for path, why in (tuple(d.values()) for d in report["skipped_videos"]):
        print(f"warning: skipped {path}: {why}", file=sys.stderr)
    print(json.dumps({k: v for k, v in report.items() if k not in ("config", "skipped_videos")}, indent=2))
    return report


if __name__ == "__main__":
    main()
