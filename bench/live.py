"""bench/live.py: live-play speed per frame, split into model step, VQ decode and display, at preset sizes.

    .venv/bin/python -m bench.live [--presets tiny,laptop] [--frames 96] [--device cpu] [--compile true]

For each preset it builds the world model (train.py's preset) and the VQ-VAE (vq_vae/train.py's preset)
with RANDOM weights (speed does not depend on the weights), saves them as checkpoints, loads them back
through rollout.load_bundle as the scripts do, and runs live_inference's real loop headless (SDL dummy
driver: the window is scaled and flipped, but not shown) driven by the "random" action preset as key
and mouse events. Prints and writes JSON: per-frame latency (median, p95) of model step (with sampling),
VQ decode, display and the whole tick, FPS, GFLOP per frame (counted by torch's FlopCounterMode and
from the layer shapes) and the achieved GFLOP/s of step + decode.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench._common import cpu_name  # noqa: E402
from config import main_config, to_dict  # noqa: E402


@dataclass
class LiveBenchConfig:
    presets: str = "tiny,laptop"
    """Comma-separated model/VQ-VAE presets to time."""
    frames: int = 96
    """Measured ticks per preset."""
    warmup: int = 8
    """Ticks run before measuring (allocation, torch.compile)."""
    device: str = "cpu"
    """cpu, cuda or auto."""
    threads: str = "1,2"
    """Comma-separated torch intra-op thread counts to time (0: torch's default, the machine's cores)."""
    compile: bool = False
    """torch.compile the model step and the VQ decoder."""
    scale: int = 6
    """Window scale of the (dummy) display."""
    out: str = "bench/results/live_cpu.json"
    """JSON results file."""


def preset_configs(name: str, codebook_size: int | None = None) -> tuple[Any, Any]:
    """(WorldModelConfig, VQVAEConfig) of a preset, as train.py and vq_vae/train.py resolve it."""
    import config as config_mod
    from model_convGru import WorldModelConfig
    from vq_vae.train import PRESETS as VQ_PRESETS
    from vq_vae.train import VQTrainConfig, model_config

    vq_cfg = model_config(config_mod.parse_config(VQTrainConfig, [], VQ_PRESETS, default_preset=name))
    import train

    train_cfg = config_mod.parse_config(train.TrainConfig, [], train.PRESETS, default_preset=name)
    wm_cfg = WorldModelConfig.from_arch(train_cfg, codebook_size=codebook_size or vq_cfg.codebook_size,
                                        code_dim=vq_cfg.code_dim,
                                        grid=(vq_cfg.frame_height // 4, vq_cfg.frame_width // 4))
    return wm_cfg, vq_cfg


def write_random_checkpoints(out_dir: str | Path, wm_cfg: Any, vq_cfg: Any, seed: int = 0
                             ) -> tuple[Path, Path]:
    """A randomly initialised VQ-VAE and world model saved as the real formats (for timing and tests);
    returns (world model path, VQ-VAE path). The world model records the VQ-VAE's path and identity."""
    from model_convGru import WorldModel
    from vq_vae import VQVAE, save_vqvae
    from world_model_io import save_world_model

    from actions import ActionEncoding

    out_dir = Path(out_dir)
    torch.manual_seed(seed)
    vq = VQVAE(vq_cfg)
    vq.quantizer.initted.fill_(True)  # a random codebook stands in for a trained one
    vq_path = out_dir / "vqvae.pt"
    identity = save_vqvae(vq, vq_path)
    model = WorldModel(wm_cfg, codebook=vq.codebook)
    wm_path = out_dir / "world_model.pt"
    save_world_model(wm_path, model, encoding=ActionEncoding(), vqvae_path=str(vq_path), vqvae_identity=identity,
                     train_config={"random_init": True, "seed": seed}, step=0)
    return wm_path, vq_path


def bench_preset(name: str, cfg: LiveBenchConfig, threads: int) -> dict[str, Any]:
    from live_inference import LiveConfig, LiveSession, events_from_actions
    from model_convGru import analytic_step_flops
    from action_scripts import named_script_actions
    from contexts import Context
    from rollout import gflop_per_frame, load_bundle
    from vq_vae.model import decoder_flops

    from actions import noop

    torch.set_num_threads(threads if threads > 0 else os.cpu_count() or 1)
    wm_cfg, vq_cfg = preset_configs(name)
    with tempfile.TemporaryDirectory() as tmp:
        wm_path, _ = write_random_checkpoints(tmp, wm_cfg, vq_cfg)
        bundle = load_bundle(wm_path, device=cfg.device, compile=cfg.compile)
    flops = gflop_per_frame(bundle)
    analytic = {"model_step_gflop": analytic_step_flops(wm_cfg) / 1e9, "decode_gflop": decoder_flops(vq_cfg) / 1e9}
    analytic["total_gflop"] = analytic["model_step_gflop"] + analytic["decode_gflop"]
    h, w = bundle.grid
    rng = np.random.default_rng(0)
    ctx = Context(torch.from_numpy(rng.integers(0, bundle.codebook_size, (4, h, w))), noop(3), "random tokens")
    live_cfg = LiveConfig(model=str(wm_path), context="random", scale=cfg.scale, device=cfg.device, hud=True,
                          headless=True)
    ticks = cfg.warmup + cfg.frames
    session = LiveSession(live_cfg, bundle, ctx)
    script = events_from_actions(named_script_actions("random", ticks, seed=0), live_cfg.sensitivity)
    load_before = os.getloadavg()[0]
    session.run(script, max_ticks=ticks, paced=False)
    load_after = os.getloadavg()[0]
    w0 = cfg.warmup

    def med(xs: list[float]) -> float:
        return round(float(np.median(xs[w0:])), 2)

    def p95(xs: list[float]) -> float:
        return round(float(np.percentile(xs[w0:], 95)), 2)

    model_ms, decode_ms = med(session.model_ms), med(session.decode_ms)
    tick_ms = med(session.tick_ms)
    # the flop counter misses depthwise convs on some builds: take the larger of counted and analytic
    gflop = max(flops["total_gflop"], analytic["total_gflop"])
    return {
        "preset": name, "device": str(bundle.device), "threads": torch.get_num_threads(), "compile": cfg.compile,
        "frames": cfg.frames,
        "model_params_M": round(sum(p.numel() for p in bundle.model.parameters()) / 1e6, 3),
        "decoder_params_M": round(sum(p.numel() for p in bundle.vqvae.decoder.parameters()) / 1e6, 3),
        "latency_ms_median": {"model_step": model_ms, "vq_decode": decode_ms,
                              "display": med(session.display_ms), "tick": tick_ms},
        "latency_ms_p95": {"model_step": p95(session.model_ms), "vq_decode": p95(session.decode_ms),
                           "display": p95(session.display_ms), "tick": p95(session.tick_ms)},
        "fps_median_tick": round(1e3 / tick_ms, 1),
        # process CPU time per tick: the wall time an unshared machine would need (1 thread; with more
        # threads it also counts OpenMP spinning, so it over-estimates)
        "tick_cpu_ms_median": med(session.tick_cpu_ms),
        "fps_from_cpu_time": round(1e3 / med(session.tick_cpu_ms), 1),
        "fps_mean": round(1e3 * len(session.tick_ms[w0:]) / sum(session.tick_ms[w0:]), 1),
        "gflop_per_frame": {"counted": {k: round(v, 4) for k, v in flops.items()},
                            "analytic": {k: round(v, 4) for k, v in analytic.items()}},
        "achieved_gflops": round(gflop / ((model_ms + decode_ms) / 1e3), 1),
        "loadavg_1min_before_after": [round(load_before, 2), round(load_after, 2)],
        "model_config": to_dict(wm_cfg), "vqvae_config": to_dict(vq_cfg),
    }


def main() -> None:
    cfg = main_config(LiveBenchConfig)
    results = {
        "bench": "live", "date": time.strftime("%Y-%m-%d %H:%M"), "cpu": cpu_name(), "cores": os.cpu_count(),
        "torch": torch.__version__, "weights": "random init at preset sizes",
        "note": "machine shared with other jobs; medians over the measured ticks",
        "results": [],
    }
    for name in [p.strip() for p in cfg.presets.split(",") if p.strip()]:
        for threads in [int(t) for t in cfg.threads.split(",") if t.strip()]:
            r = bench_preset(name, cfg, threads)
            results["results"].append(r)
            print(json.dumps({k: v for k, v in r.items() if k not in ("model_config", "vqvae_config")}), flush=True)
    from ckpt_io import atomic_write_json

    results["headline"] = {
        f"{r['preset']} {r['threads']} thread(s)": {"fps": r["fps_median_tick"],
                                                     "p95 tick ms": r["latency_ms_p95"]["tick"]}
        for r in results["results"]}
    atomic_write_json(cfg.out, results)
    print(f"wrote {cfg.out}", file=sys.stderr)
    # last line, for bench/run_all.py: the headline figures of every preset and thread count
    print(json.dumps({k: v for k, v in results.items() if k != "results"}))


if __name__ == "__main__":
    main()
