"""bench/train_step.py: world-model training speed and memory, per preset.

    .venv/bin/python -m bench.train_step [--presets tiny,laptop] [--device cpu] [--threads 2] [--steps 4]

For each preset: steps/s and frames/s of train.Trainer.train_step on random token windows (the preset's
batch and window, AR at the preset's full length: the schedule mid-training), the share of each phase
(data, forward, lpips, backward, optimizer), the LPIPS share of step time (time with LPIPS vs without:
forward and backward), peak memory (CPU: peak RSS of a fresh process per measurement; CUDA: peak
allocated), GFLOP per frame of one model.step (layer shapes and torch's FlopCounterMode) and the B=1
inference latency of model.step and of the VQ-VAE decode (live play's per-frame work).
Then peak memory vs AR length with the teacher-forced part fixed (should be flat: streaming AR).

VQ-VAE and LPIPS: the tokenizer architecture of vq_vae/train.py's matching preset with random weights and
the real LPIPS trunk (random weights cost the same, scores are not used). Prints one JSON object and
writes it to --out.
"""
from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import ckpt_io  # noqa: E402
from bench._common import SavedTensorMeter, times_ms  # noqa: E402
from devices import sync  # noqa: E402
from config import main_config, parse_config  # noqa: E402


@dataclass
class TrainBenchConfig:
    presets: str = "tiny,laptop"
    """Comma-separated train.py presets to time."""
    device: str = "cpu"
    """cpu or cuda."""
    threads: int = 1
    """torch intra-op threads of the training measurements (CPU; 1 on a shared machine: OpenMP spin-waits
    with more threads than free cores make steps several times slower)."""
    infer_threads: str = "1,2"
    """Comma-separated thread counts of the B=1 inference latencies."""
    steps: int = 4
    """Timed optimizer steps per measurement (after one warm-up step)."""
    ar_lengths: str = "0,2,4,8,16"
    """AR lengths of the memory sweep (laptop preset, teacher-forced part fixed at ar_tf)."""
    ar_tf: int = 3
    """Teacher-forced predictions per window in the memory sweep."""
    sweep_preset: str = "laptop"
    """Preset of the AR memory sweep."""
    job: str = ""
    """Internal: one measurement as JSON, run in a fresh process so peak RSS belongs to it alone."""
    out: str = "bench/results/train_step_cpu.json"
    """JSON results file."""


def _vqvae_for(preset: str):
    from vq_vae.model import VQVAE, VQVAEConfig
    from vq_vae.train import PRESETS as VQ_PRESETS
    from vq_vae.train import VQTrainConfig, model_config

    vq_preset = preset if preset in VQ_PRESETS else "laptop"
    cfg = model_config(parse_config(VQTrainConfig, ["--preset", vq_preset], VQ_PRESETS))
    vq = VQVAE(VQVAEConfig(**{k: getattr(cfg, k) for k in cfg.__dataclass_fields__})).eval()
    vq.quantizer.initted.fill_(True)
    return vq


def _lpips(device: torch.device):
    from lpips_loader import LPIPSWeightsError, load_lpips

    try:
        return load_lpips("alex", device=device), "real"
    except LPIPSWeightsError:
        return load_lpips("alex", allow_random=True, device=device), "random (weights missing)"


def _random_batch(cfg: Any, grid: tuple[int, int], k: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    from actions import ActionEncoding

    b, length = cfg.batch_size, cfg.seq_len
    raw = np.zeros((b, length - 1, 9), np.float32)
    r = np.random.default_rng(0)
    raw[..., 0] = r.choice([-8.0, 0.0, 0.0, 8.0], size=(b, length - 1))
    raw[..., 2:] = r.integers(0, 2, size=(b, length - 1, 7))
    return {"tokens": torch.randint(0, k, (b, length, *grid), generator=gen),
            "actions": torch.from_numpy(ActionEncoding().encode(raw))}


def run_job(job: dict[str, Any], device: torch.device, threads: int) -> dict[str, Any]:
    """One measurement in this process: build the trainer, warm up, time `steps` steps."""
    import train

    torch.set_num_threads(threads)
    args = ["--preset", job["preset"], "--wandb", "disabled", "--progress", "false", "--device", str(device)]
    for k, v in job.get("overrides", {}).items():
        args += [f"--{k}", str(v)]
    cfg = parse_config(train.TrainConfig, args, train.PRESETS)
    vq = _vqvae_for(job["preset"])
    lp, lp_kind = _lpips(device) if cfg.w_lpips > 0 else (None, "off")
    trainer = train.Trainer(cfg, vq, "random", "bench", train.ActionEncoding(), device, lpips_net=lp)
    trainer.step = cfg.ar_start_step + cfg.ar_ramp_steps  # mid-training schedules: AR at full length
    gen = torch.Generator().manual_seed(0)
    batch = _random_batch(cfg, tuple(vq.grid), vq.codebook_size, gen)
    trainer.train_step(batch)
    trainer.timer.pop()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    meter = SavedTensorMeter()
    times, phases = [], {}
    for _ in range(job["steps"]):
        t = time.perf_counter()
        with torch.autograd.graph.saved_tensors_hooks(meter.pack, meter.unpack):
            m = trainer.train_step(batch)
        sync(device)
        times.append(time.perf_counter() - t)
        for k, v in trainer.timer.pop().items():
            phases[k] = phases.get(k, 0.0) + v
    step_s = float(np.median(times))
    total = sum(phases.values())
    frames = cfg.batch_size * (cfg.seq_len - 1)
    out = {"preset": job["preset"], "overrides": job.get("overrides", {}), "batch_size": cfg.batch_size,
           "seq_len": cfg.seq_len, "ar_len": int(m["ar_len"]), "lpips": lp_kind,
           "lpips_frames_per_step": cfg.lpips_per_sample * cfg.batch_size if cfg.w_lpips > 0 else 0,
           "step_s_median": round(step_s, 4), "steps_per_s": round(1 / step_s, 4),
           "frames_per_s": round(frames / step_s, 2),
           "phase_share": {k: round(v / total, 3) for k, v in sorted(phases.items())},
           "autograd_saved_peak_mb": round(meter.peak / 2 ** 20, 1)}
    if device.type == "cuda":
        out["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated(device) / 2 ** 20, 1)
    else:
        out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return out


def _subprocess_job(job: dict[str, Any], cfg: TrainBenchConfig) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.train_step", "--job", json.dumps(job), "--device", cfg.device,
           "--threads", str(cfg.threads)]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    if res.returncode != 0:
        raise RuntimeError(f"bench job {job} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def inference_latency(preset: str, device: torch.device, threads: int, repeats: int = 50) -> dict[str, Any]:
    """B=1 model.step and VQ decode milliseconds (median), GFLOP per frame."""
    import train
    from model_convGru import WorldModel, WorldModelConfig, analytic_step_flops, count_step_flops
    from vq_vae.model import decoder_flops

    torch.set_num_threads(threads)
    cfg = parse_config(train.TrainConfig, ["--preset", preset], train.PRESETS)
    vq = _vqvae_for(preset).to(device)
    mcfg = WorldModelConfig.from_arch(cfg, codebook_size=vq.codebook_size, code_dim=vq.code_dim,
                                      grid=tuple(vq.grid))
    model = WorldModel(mcfg).to(device).eval()
    tok = torch.zeros(1, *vq.grid, dtype=torch.long, device=device)
    act = torch.zeros(1, 15, device=device)

    def timed(fn: Any) -> float:
        return float(np.median(times_ms(fn, repeats, device)))

    with torch.inference_mode():
        state = model.init_state(1, device)
        step_ms = timed(lambda: model.step(tok, act, state))
        dec_ms = timed(lambda: vq.decode_code(tok))
    return {"preset": preset, "model_gflop_per_frame": round(analytic_step_flops(mcfg) / 1e9, 4),
            "model_gflop_per_frame_flopcounter": round(count_step_flops(model) / 1e9, 4),
            "vq_decode_gflop_per_frame": round(decoder_flops(vq.cfg) / 1e9, 4),
            "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
            "step_ms_b1": round(step_ms, 2), "vq_decode_ms_b1": round(dec_ms, 2),
            "live_fps_estimate": round(1000 / (step_ms + dec_ms), 1)}


def main() -> None:
    cfg = main_config(TrainBenchConfig)
    device = torch.device(cfg.device)
    if cfg.job:
        print(json.dumps(run_job(json.loads(cfg.job), device, cfg.threads)))
        return
    result: dict[str, Any] = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                    "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                    "threads": cfg.threads, "loadavg_start": os.getloadavg()},
        "date": time.strftime("%Y-%m-%d %H:%M"), "presets": {}, "ar_sweep": []}
    for preset in [p for p in cfg.presets.split(",") if p]:
        with_lp = _subprocess_job({"preset": preset, "steps": cfg.steps}, cfg)
        no_lp = _subprocess_job({"preset": preset, "steps": cfg.steps, "overrides": {"w_lpips": 0}}, cfg)
        with_lp["lpips_share_of_step"] = round(1 - no_lp["step_s_median"] / with_lp["step_s_median"], 3)
        with_lp["step_s_median_without_lpips"] = no_lp["step_s_median"]
        with_lp["inference"] = {f"threads_{t}": inference_latency(preset, device, int(t))
                                for t in cfg.infer_threads.split(",") if t}
        result["presets"][preset] = with_lp
        print(json.dumps({preset: with_lp}), file=sys.stderr)
    for ar in [int(a) for a in cfg.ar_lengths.split(",") if a]:
        over = {"seq_len": cfg.ar_tf + ar + 1, "min_tf_steps": min(2, cfg.ar_tf), "ar_min_len": ar,
                "ar_max_len": ar, "ar_start_step": 0, "ar_ramp_steps": 0}
        r = _subprocess_job({"preset": cfg.sweep_preset, "steps": 2, "overrides": over}, cfg)
        row = {"ar_len": r["ar_len"], "tf_len": cfg.ar_tf, "step_s": r["step_s_median"],
               "autograd_saved_peak_mb": r["autograd_saved_peak_mb"]}
        row.update({k: r[k] for k in ("peak_rss_mb", "peak_cuda_mb") if k in r})
        result["ar_sweep"].append(row)
        print(json.dumps(row), file=sys.stderr)
    result["machine"]["loadavg_end"] = os.getloadavg()
    rss = [r["peak_rss_mb"] for r in result["ar_sweep"] if "peak_rss_mb" in r]
    result["headline"] = {
        **{f"{p} steps/s": r["steps_per_s"] for p, r in result["presets"].items()},
        **{f"{p} LPIPS share": r["lpips_share_of_step"] for p, r in result["presets"].items()},
        **({"peak RSS MB over the AR sweep": {"min": min(rss), "max": max(rss)}} if rss else {})}
    ckpt_io.atomic_write_text(cfg.out, json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))  # one line: bench/run_all.py reads the last JSON line


if __name__ == "__main__":
    main()
