"""bench/vqvae.py: tokenizer speed on this machine: decoder (live play) and encoder (preprocessing).

    .venv/bin/python -m bench.vqvae [--preset laptop] [--vqvae CKPT] [--threads 1,2] [--device cpu]

Builds the preset's VQ-VAE (vq_vae/train.py's PRESETS; random weights: speed does not depend on them) or
loads --vqvae, then times decode_code on one frame (what live play does every tick), decode_code on a
batch, and encode on a batch, for each torch thread count. Prints one JSON object (also written to --out):
GFLOP per frame (from the layer shapes and from torch's FlopCounterMode), median and p95 milliseconds.
"""
from __future__ import annotations

import json
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import ckpt_io  # noqa: E402
from bench._common import times_ms  # noqa: E402
from config import main_config, to_dict  # noqa: E402


@dataclass
class VQBenchConfig:
    preset: str = "laptop"
    """vq_vae/train.py preset whose architecture is timed (ignored with --vqvae)."""
    vqvae: str = ""
    """Time this checkpoint instead of a preset."""
    threads: str = "1,2"
    """Comma-separated torch intra-op thread counts to time."""
    device: str = "cpu"
    """cpu or cuda."""
    repeats: int = 50
    """Timed single-frame decodes per thread count (batched timings use a fifth of this)."""
    batch: int = 16
    """Batch size of the batched encode/decode timings."""
    out: str = "bench/results/vqvae_cpu.json"
    """JSON results file."""


def counted_flops(module: torch.nn.Module, *args: Any) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        module(*args)
    return int(counter.get_total_flops())


def run(cfg: VQBenchConfig) -> dict[str, Any]:
    from vq_vae import VQVAE, load_vqvae
    from vq_vae.model import decoder_flops
    from vq_vae.train import PRESETS, VQTrainConfig, model_config

    device = torch.device(cfg.device)
    if cfg.vqvae:
        model = load_vqvae(cfg.vqvae, device=device)
    else:
        model = VQVAE(model_config(VQTrainConfig(**PRESETS[cfg.preset]))).to(device).eval()
    h, w = model.grid
    rng = np.random.default_rng(0)
    tokens1 = torch.from_numpy(rng.integers(model.codebook_size, size=(1, h, w))).to(device)
    tokens_b = torch.from_numpy(rng.integers(model.codebook_size, size=(cfg.batch, h, w))).to(device)
    frames_b = rng.integers(0, 256, size=(cfg.batch, model.cfg.frame_height, model.cfg.frame_width, 3),
                            dtype=np.uint8)
    z1 = model.embed_code(tokens1)
    x1 = model.preprocess(frames_b[:1])
    result: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} default threads",
        "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__, "device": str(device),
        "vqvae": cfg.vqvae or f"preset {cfg.preset} (random weights)",
        "decoder_gflop_per_frame": round(decoder_flops(model.cfg) / 1e9, 4),
        "decoder_gflop_per_frame_counted": round(counted_flops(model.decoder, z1) / 1e9, 4),
        "encoder_gflop_per_frame_counted": round(counted_flops(model.encoder, x1) / 1e9, 4),
        "decoder_params_M": round(sum(p.numel() for p in model.decoder.parameters()) / 1e6, 3),
        "encoder_params_M": round(sum(p.numel() for p in model.encoder.parameters()) / 1e6, 3),
        "timings": [],
    }
    for threads in [int(t) for t in cfg.threads.split(",") if t]:
        torch.set_num_threads(threads)
        with torch.no_grad():
            one = times_ms(lambda: model.decode_code(tokens1), cfg.repeats, device)
            batch = times_ms(lambda: model.decode_code(tokens_b), max(3, cfg.repeats // 5), device)
            enc = times_ms(lambda: model.encode(frames_b), max(3, cfg.repeats // 5), device)
        result["timings"].append({
            "threads": threads,
            "decode_1_frame_ms_median": round(float(np.median(one)), 2),
            "decode_1_frame_ms_p95": round(float(np.percentile(one, 95)), 2),
            "decode_batched_ms_per_frame": round(float(np.median(batch)) / cfg.batch, 2),
            "encode_batched_ms_per_frame": round(float(np.median(enc)) / cfg.batch, 2),
        })
    result["config"] = to_dict(cfg)
    result["vqvae_config"] = to_dict(model.cfg)
    result["headline"] = {"decoder GFLOP/frame": result["decoder_gflop_per_frame"],
                          **{f"decode 1 frame ms, {t['threads']} thread(s)": t["decode_1_frame_ms_median"]
                             for t in result["timings"]},
                          **{f"encode ms/frame, {t['threads']} thread(s)": t["encode_batched_ms_per_frame"]
                             for t in result["timings"]}}
    return result


def main() -> None:
    cfg = main_config(VQBenchConfig)
    result = run(cfg)
    ckpt_io.atomic_write_json(cfg.out, result)
    print(json.dumps({k: v for k, v in result.items() if k not in ("config", "vqvae_config")}))


if __name__ == "__main__":
    main()
