"""Train the ConvGRU + FiLM world model on VQ-VAE token shards.

    python train.py --data DIR --vqvae CKPT --run-dir DIR [--preset tiny|laptop|a100] [--max-steps N] [--resume]
    torchrun --nproc_per_node G train.py ...        # data parallel (nccl on GPU, gloo on CPU)

With no arguments it trains the laptop preset on the block-world shards `make demo` prepares.

What one step computes on a window of `seq_len` frames (teacher-forced and autoregressive parts, the
losses, the per-sample random plan) is objective.py; this file is the loop around it: data, optimizer,
curriculum state, checkpoints, stop signals and logging. Every random choice of a step is drawn from a
generator seeded by (seed, step, global sample index), so a resumed run replays exactly, and N
data-parallel processes with batch B compute the same update as one process with batch N*B. Data
parallelism all-reduces gradients once per optimizer step, after all of the step's backward passes (the
streaming AR chunks make several per step, which DistributedDataParallel's per-backward hooks would sync,
or need `no_sync` bookkeeping for; one flat all-reduce is exact and simple).

Outputs in --run-dir: config.json, metrics.jsonl, images/, checkpoints/state_*.pt (full training state,
kind world_model_train_state), exports/world_model_*.pt and world_model.pt (weights only, kind
world_model, see world_model_io.py), and wandb/ (offline by default).
"""
from __future__ import annotations

import json
import math
import random
import signal
import sys
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import numpy as np
import torch

import ckpt_io
import config as config_mod
import train_diagnostics
from actions import ActionEncoding
import texture
from calibration import MOTION_FIELDS, calibrate_motion, token_maps
from compat import check_compatible, shards_side, vqvae_side
from curriculum import BrakeState, CurriculumConfig, brake_update, check_window, initial_brake, lr_factor
from devices import Dist, PhaseTimer, all_reduce_mean_grads, amp_settings, autocast, resolve_device
from model_convGru import ModelArchConfig, WorldModel, WorldModelConfig, param_groups
from objective import (PROBE_ACTIONS, Objective, ObjectiveConfig, WindowResult, loss_metrics, lpips_means,
                       make_plan, sample_generators)
from run_files import MetricsLog, RunFiles
from world_model_io import save_world_model

TRAIN_STATE_KIND = "world_model_train_state"
TRAIN_STATE_FORMAT_VERSION = 1


@dataclass
class TrainConfig(ObjectiveConfig, CurriculumConfig, ModelArchConfig):
    """train.py options. Architecture fields build the WorldModelConfig (codebook size and grid come from the
    VQ-VAE); curriculum fields drive curriculum.py; loss fields drive objective.py."""

    data: str = "runs/demo/shards"
    """Token shard directory written by preprocess.py (manifest.json, meta.json, *.npz)."""
    vqvae: str = "runs/demo/vqvae/vqvae.pt"
    """VQ-VAE checkpoint the shards were encoded with (decodes frames for LPIPS and images)."""
    run_dir: str = "runs/demo/world_model"
    """Output directory: config, metrics, images, checkpoints, exports."""
    preset: str = "laptop"
    """Preset the other values started from (tiny | laptop | a100); recorded for reference."""
    resume: bool = False
    """Continue from the newest full training state in run_dir/checkpoints (fresh start if none), with the
    run's saved options (run_dir/config.json) except those given on the command line."""
    max_steps: int = 0
    """Stop after this global step (0 = total_steps). Schedules follow total_steps, not this."""
    seed: int = 0
    """Seed of model initialisation and of every per-step random choice."""
    device: str = "auto"
    """auto (cuda:LOCAL_RANK if available, else cpu), cpu, cuda or cuda:N."""
    cpu_threads: int = 0
    """torch intra-op threads on CPU (0 = torch's default, one per core; use fewer on a shared machine)."""
    amp: bool = True
    """Mixed precision on CUDA: bf16 where supported, else fp16 with a GradScaler (P100). CPU is fp32."""
    amp_dtype: Literal["auto", "bf16", "fp16"] = "auto"
    """With --amp: auto (as above), or force bf16, or fp16 with a GradScaler, on any device (fp16 runs the
    P100 path on a bf16 card; on a CPU both run under CPU autocast)."""
    batch_size: int = 8
    """Windows per process per step (the global batch is batch_size x processes)."""
    seq_len: int = 12
    """Frames per training window (fixed for the whole run; predictions per window = seq_len - 1)."""
    num_workers: int = 0
    """DataLoader worker processes (0 = load in the training process)."""
    val_fraction: float = 0.1
    """Fraction of videos held out for validation (whole videos)."""
    yaw_edges: tuple[float, ...] = (-4.0, -0.5, 0.5, 4.0)
    """Yaw bin edges of the action encoding in degrees per step (actions.ActionEncoding; stored in exports)."""
    pitch_edges: tuple[float, ...] = (-0.5, 0.5)
    """Pitch bin edges of the action encoding in degrees per step."""
    camera_encoding: Literal["graded", "bins"] = "graded"
    """Camera input: graded (degrees split between bin centres, continuous) or bins (one-hot by edges)."""
    motion_pairs: int = 600
    """Training transitions the motion path is calibrated on before step 0 (with copy_prior > 0)."""
    motion_from: str = ""
    """World-model checkpoint whose calibrated motion (calibration.MOTION_FIELDS) this run takes instead
    of calibrating its own; it must share this run's tokenizer and action encoding. For a fair comparison of
    data or objectives at the same motion, or a calibration measured on other data. Empty = calibrate."""
    key_motion: Literal["field", "zoom"] = "field"
    """How the movement keys move the picture: a calibrated flow field per token position (motion.fit_key_field:
    the ground moves, the sky stays) or one shift and zoom about the centre per key (README, "The keys' flow
    field")."""
    edge_fill: bool = False
    """Rows the edge memory has never seen come in as the commonest top-row / bottom-row code of the training
    data (calibration.edge_fill_codes) instead of the repeated edge row. Off: on the held-out seed it lowers PSNR@16
    by 0.3 dB for little more code diversity (README, "The keys' flow field and the edge memory")."""
    key_min_moving_px: float = 0.0
    """Transitions whose picture moves less than this (mean optical flow, px) are left out of the keys' field
    fit (motion.fit_key_field): a key held against a wall moves nothing."""
    key_expected: bool = False
    """With key_min_moving_px > 0: scale each key's field by the share of its presses that moved
    (motion.fit_key_field's `expected`), the mean motion of a press rather than that of a press that moves:
    forward 0.42 -> 0.71 for 0.23 dB of PSNR@16 (README, "Walking: how far W moves, and the rows it pushes
    out")."""
    key_min_field: float = 0.02
    """Entries of the keys' field under this many tokens per step are set to 0 (motion.fit_key_field): a slow
    motion moves content a whole token every 1/x steps, so over a long walk the rows under the field's still
    band convey what lies above them down over the ground (README, "The camera fit is a rotation")."""
    texture_steps: int = 800
    """Adam steps (batch 4096 positions) fitting the texture prior (texture.fit; with texture_dim > 0) on the
    training token maps before step 0: about a minute on one CPU core."""
    texture_frames: int = 20000
    """At most this many training frames (evenly spaced) the texture prior is fitted on."""
    motion_frames: Literal["tokens", "video"] = "video"
    """What the calibration measures motion on: the tokenizer's decoding of the shards' tokens, or the source
    video the manifest names (decoded tokens where it is gone). Decoded frames under-measure sub-token motion
    (pitch, walking), the video fit over-measures strafing and walking back: README, motion ablation."""
    lr: float = 1e-3
    """Peak learning rate (AdamW)."""
    weight_decay: float = 0.01
    """AdamW weight decay (not applied to biases, norms or 1-d parameters)."""
    film_lr_mult: float = 5.0
    """Learning-rate multiplier of the FiLM/action parameters (their gradients are much weaker)."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0 = off)."""
    max_bad_steps: int = 20
    """Stop with an error after this many consecutive steps with a non-finite loss or gradient."""
    log_every: int = 10
    """Steps between metrics.jsonl / wandb records."""
    diag_every: int = 200
    """Steps between action-response diagnostics."""
    image_every: int = 1000
    """Steps between GT / teacher-forced / AR image grids."""
    val_every: int = 1000
    """Steps between validation passes (0 = never)."""
    val_batches: int = 4
    """Batches of fixed held-out windows per validation pass."""
    ckpt_every: int = 1000
    """Steps between checkpoints (full state + weights-only export)."""
    ckpt_minutes: float = 20.0
    """Also checkpoint when this many minutes passed since the last one (0 = off)."""
    keep_last: int = 3
    """Checkpoints and exports kept (older ones are deleted)."""
    wandb: Literal["offline", "online", "disabled"] = "offline"
    """wandb mode: offline (default, sync later with `wandb sync`), online or disabled."""
    wandb_project: str = "ochre"
    """wandb project name."""
    progress: bool = True
    """Show a tqdm progress bar."""

    def __post_init__(self) -> None:
        self.attn_pool = tuple(self.attn_pool)  # type: ignore[assignment]
        self.idm_key_weights = tuple(float(x) for x in self.idm_key_weights)
        self.yaw_edges = tuple(float(x) for x in self.yaw_edges)
        self.pitch_edges = tuple(float(x) for x in self.pitch_edges)
        try:
            check_window(self.seq_len, self)
        except ValueError as e:
            raise config_mod.ConfigError(str(e)) from None
        if len(self.idm_key_weights) != 7:
            raise config_mod.ConfigError(f"idm_key_weights needs 7 values, got {len(self.idm_key_weights)}")
        if not 1 <= self.lpips_per_sample <= self.seq_len - 1:
            raise config_mod.ConfigError(f"lpips_per_sample must be in 1..seq_len-1, got {self.lpips_per_sample}")
        if self.ar_bptt < 1 or self.batch_size < 1:
            raise config_mod.ConfigError("ar_bptt and batch_size must be >= 1")
        if self.key_min_field < 0 or self.key_min_moving_px < 0:
            raise config_mod.ConfigError(f"--key-min-field and --key-min-moving-px must be >= 0, got "
                                         f"{self.key_min_field} and {self.key_min_moving_px}")
        if self.key_expected and not self.key_min_moving_px > 0:
            raise config_mod.ConfigError("--key-expected true needs --key-min-moving-px > 0 (without it every "
                                         "press counts as moving and the field is unchanged)")
        if self.recycle and not self.copy_prior > 0:
            raise config_mod.ConfigError("--recycle true needs the motion path (--copy-prior > 0): with no warp "
                                         "there is nothing to recycle")
        if self.texture_steps < 0 or self.texture_frames < 1:
            raise config_mod.ConfigError(f"--texture-steps must be >= 0 and --texture-frames >= 1, got "
                                         f"{self.texture_steps} and {self.texture_frames}")
        if self.denoise_targets > 0 and not self.copy_prior > 0:
            raise config_mod.ConfigError("--denoise-targets needs the motion path (--copy-prior > 0): the targets "
                                         "are replaced by the warped previous codes")
        if not self.amp and self.amp_dtype != "auto":
            raise config_mod.ConfigError(f"--amp-dtype {self.amp_dtype} needs --amp true")

    @property
    def last_step(self) -> int:
        return self.max_steps if self.max_steps > 0 else self.total_steps


PRESETS: dict[str, dict[str, Any]] = {
    # Tests and smoke runs: seconds on a CPU.
    "tiny": dict(embed_dim=8, hidden_dim=16, num_layers=2, kernel_size=3, separable=True, film_hidden=16,
                 head_dim=8, attn_ctx=2, attn_dim=8, attn_heads=2, attn_pool=(2, 2), idm_hidden=32,
                 batch_size=2, seq_len=6, total_steps=40, warmup_steps=2, lr=1e-2, ar_start_step=2,
                 ar_ramp_steps=4, ar_min_len=1, ar_max_len=3, min_tf_steps=2, brake_interval=2,
                 ss_midpoint=20, ss_steepness=5.0, tau_steps=40, corrupt_ramp_steps=10, log_every=1,
                 diag_every=5, image_every=10, val_every=10, val_batches=1, ckpt_every=10, keep_last=2,
                 texture_dim=8, texture_steps=20),
    # CPU-friendly model: ~0.33 GFLOP per frame so live play reaches 30 FPS with the VQ decode; a training
    # schedule sized for a CPU (a few thousand steps of ~1-2 s on 2 cores; see BENCHMARKS.md).
    "laptop": dict(embed_dim=64, hidden_dim=128, num_layers=2, kernel_size=5, separable=True, film_hidden=64,
                   head_dim=64, attn_ctx=4, attn_dim=32, attn_heads=2, attn_pool=(3, 4), idm_hidden=128,
                   batch_size=4, seq_len=10, total_steps=3000, warmup_steps=100, lr=1e-3, ar_start_step=300,
                   ar_ramp_steps=1200, ar_min_len=2, ar_max_len=4, min_tf_steps=2, brake_interval=50,
                   ss_midpoint=1500, ss_steepness=300.0, tau_steps=2500, corrupt_ramp_steps=500, log_every=10,
                   diag_every=100, image_every=250, val_every=250, ckpt_every=250),
    # GPU recipe (A100 40/80 GB; a P100 gets fp16 + GradScaler automatically): full 3x3 convolutions,
    # 4 layers of 384 channels, ~35 GFLOP per frame (~108x laptop), 36 M parameters. Not yet timed on a GPU.
    "a100": dict(embed_dim=192, hidden_dim=384, num_layers=4, kernel_size=3, separable=False, film_hidden=512,
                 head_dim=256, attn_ctx=8, attn_dim=128, attn_heads=4, attn_pool=(3, 4), idm_hidden=512,
                 batch_size=32, seq_len=24, total_steps=100000, warmup_steps=2000, lr=3e-4, ar_start_step=5000,
                 ar_ramp_steps=30000, ar_min_len=3, ar_max_len=16, min_tf_steps=4, ss_midpoint=30000,
                 ss_steepness=6000.0, tau_steps=60000, corrupt_ramp_steps=10000, lpips_per_sample=2,
                 num_workers=4, log_every=50, diag_every=1000, image_every=5000, val_every=5000,
                 ckpt_every=5000),
}


class TrainingError(RuntimeError):
    """The run cannot continue (non-finite losses, incompatible resume, ...)."""


# ----------------------------------------------------------------------------- optimizer

def make_param_groups(model: WorldModel, cfg: TrainConfig) -> list[dict[str, Any]]:
    """AdamW groups: FiLM parameters get lr_mult = film_lr_mult; 1-d parameters get no weight decay."""
    film_ids = {id(p) for p in param_groups(model)["film"]}
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not name.startswith("texture."):  # fitted before step 0 (texture.fit), not trained with the rest
            groups.setdefault((id(p) in film_ids, p.dim() >= 2), []).append(p)
    out = []
    for (is_film, decay), params in sorted(groups.items()):
        out.append({"params": params, "lr_mult": cfg.film_lr_mult if is_film else 1.0,
                    "weight_decay": cfg.weight_decay if decay else 0.0,
                    "name": ("film" if is_film else "main") + ("" if decay else "_nodecay")})
    return out


def apply_lr(optimizer: torch.optim.Optimizer, base_lr: float) -> None:
    """Every group's lr = base_lr * its multiplier (warmup never overwrites the FiLM multiplier: L8)."""
    for g in optimizer.param_groups:
        g["lr"] = base_lr * g["lr_mult"]


# ----------------------------------------------------------------------------- the trainer

class Trainer:
    """Model, frozen VQ-VAE + LPIPS, optimizer and curriculum state; `train_step` does one optimizer step
    (what it computes on the window: objective.py)."""

    def __init__(self, cfg: TrainConfig, vqvae: Any, vqvae_path: str, vqvae_ident: str,
                 encoding: ActionEncoding, device: torch.device, dist: Dist = Dist(),
                 lpips_net: Any = None, calibrated: dict[str, Any] | None = None) -> None:
        self.cfg, self.device, self.dist, self.encoding = cfg, device, dist, encoding
        self.vqvae = vqvae.to(device).eval()
        for p in self.vqvae.parameters():
            p.requires_grad_(False)
        self.vqvae_path, self.vqvae_ident = vqvae_path, vqvae_ident
        self.model_cfg = WorldModelConfig.from_arch(cfg, codebook_size=vqvae.codebook_size,
                                                    code_dim=vqvae.code_dim, grid=tuple(vqvae.grid),
                                                    **(calibrated or {}))
        torch.manual_seed(cfg.seed)
        self.model = WorldModel(self.model_cfg, codebook=vqvae.codebook).to(device)
        if lpips_net is None and cfg.w_lpips > 0:
            from lpips_loader import load_lpips

            lpips_net = load_lpips(cfg.lpips_net, device=device)
        self.optimizer = torch.optim.AdamW(make_param_groups(self.model, cfg), lr=cfg.lr, betas=(0.9, 0.95))
        self.amp_dtype, use_scaler = amp_settings(device, cfg.amp, cfg.amp_dtype)
        self.scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)
        self.step = 0
        self.brake: BrakeState = initial_brake(cfg)
        self.bad_streak = 0
        self.stop_synced = False
        self.timer = PhaseTimer(device)
        self.probes = torch.from_numpy(np.stack([encoding.encode(a) for a in PROBE_ACTIONS.values()])
                                       ).to(device)  # [P, 15]
        self.objective = Objective(cfg, self.vqvae, lpips_net, self.probes, self.autocast)
        self._last: WindowResult | None = None
        self._last_actions: torch.Tensor | None = None
        if dist.group:
            import torch.distributed as tdist

            for t in list(self.model.parameters()) + list(self.model.buffers()):
                tdist.broadcast(t.data, src=0)

    def autocast(self) -> AbstractContextManager:
        return autocast(self.device, self.amp_dtype)

    def backward(self, loss: torch.Tensor) -> None:
        self.timer.start("backward")
        self.scaler.scale(loss).backward()
        self.timer.start("forward")

    # ------------------------------------------------------------------ one optimizer step

    def train_step(self, batch: dict[str, Any]) -> dict[str, float]:
        """One optimizer step on this process's slice of the global batch; returns metrics (global means
        where they matter for control: the brake and the skip decision)."""
        cfg, dev, timer = self.cfg, self.device, self.timer
        timer.start("forward")
        tokens = batch["tokens"].to(dev, non_blocking=True).long()  # [B, L, h, w]
        actions = batch["actions"].to(dev, non_blocking=True).float()  # [B, L-1, 15]
        b, length = tokens.shape[:2]
        if length != cfg.seq_len:
            raise TrainingError(f"batch window {length} != seq_len {cfg.seq_len}")
        gens = sample_generators(cfg.seed, self.step, [self.dist.rank * b + i for i in range(b)], dev)
        plan = make_plan(cfg, self.model_cfg, self.step, self.brake, gens, length - 1, len(self.probes))
        self.optimizer.zero_grad(set_to_none=True)
        window = self.objective.window_loss(self.model, tokens, actions, plan, self.backward, timer)
        timer.start("optimizer")
        sums, bad = self._all_reduce(window.sums, window.bad)
        metrics = self._update(bad)
        lp_tf, lp_ar = lpips_means(sums)
        if not bad:
            self.brake = brake_update(self.brake, self.step, lp_tf, lp_ar, cfg)
        self.step += 1
        metrics.update(loss_metrics(sums, plan.ar, plan.tf))
        metrics.update(self.brake_metrics())
        timer.stop()
        metrics.update(plan.schedules)
        self._last, self._last_actions = window, actions
        return metrics

    def _all_reduce(self, sums: dict[str, torch.Tensor], bad: bool) -> tuple[dict[str, float], bool]:
        """Global means of the loss sums, the skip decision and the stop flag (one all-reduce), then the
        gradients (a second, skipped when the step is skipped). One process: the values as they are."""
        dev = self.device
        keys = sorted(sums)
        vec = torch.stack([sums[k] for k in keys] + [torch.tensor(float(bad), device=dev),
                                                      torch.tensor(float(_STOP.requested), device=dev)])
        if self.dist.group:
            import torch.distributed as tdist

            tdist.all_reduce(vec)
            vec = vec / self.dist.world
            if not vec[-2] > 0:
                all_reduce_mean_grads(list(self.model.parameters()), self.dist.world)
        # Every process stops after the same step: a signal seen by any of them (all-reduced here).
        self.stop_synced = bool(vec[-1] > 0)
        return dict(zip(keys, vec[:-2].tolist())), bool(vec[-2] > 0)

    def _update(self, bad: bool) -> dict[str, float]:
        """Clip and apply the gradients, or skip a non-finite step (and stop after max_bad_steps of them)."""
        cfg = self.cfg
        out: dict[str, float] = {}
        grad_norm = float("nan")
        if not bad:
            self.scaler.unscale_(self.optimizer)
            groups = param_groups(self.model)
            for name in ("film", "dynamics"):
                gs = [p.grad.detach().float().norm() for p in groups[name] if p.grad is not None]
                out[f"grad/{name}_norm"] = float(torch.stack(gs).norm()) if gs else 0.0
            total = torch.nn.utils.clip_grad_norm_(list(self.model.parameters()),
                                                   cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
            grad_norm = float(total)
            if not math.isfinite(grad_norm) and not self.scaler.is_enabled():
                bad = True
        if bad:
            self.optimizer.zero_grad(set_to_none=True)
            self.bad_streak += 1
            out["nonfinite_skipped"] = 1.0
            if self.bad_streak >= cfg.max_bad_steps:
                raise TrainingError(f"{self.bad_streak} steps in a row had a non-finite loss or gradient "
                                    f"(last at step {self.step}); stopping. Lower --lr, check the data, or "
                                    f"resume from an earlier checkpoint.")
        else:
            apply_lr(self.optimizer, cfg.lr * lr_factor(self.step, cfg))
            scale = self.scaler.get_scale() if self.scaler.is_enabled() else 0.0
            self.scaler.step(self.optimizer)
            self.scaler.update()
            # The GradScaler skips a step whose fp16 gradients overflowed and lowers its scale (the only sign
            # of it); such steps count as non-finite, so gradients that overflow at every scale stop the run.
            if self.scaler.is_enabled() and self.scaler.get_scale() < scale:
                self.bad_streak += 1
                out["nonfinite_skipped"] = 1.0
            else:
                self.bad_streak = 0
                out["nonfinite_skipped"] = 0.0
        if self.scaler.is_enabled():
            out["grad/scale"] = self.scaler.get_scale()
        out["grad/total_norm"] = grad_norm
        out["lr"] = cfg.lr * lr_factor(self.step, cfg)
        return out

    def brake_metrics(self) -> dict[str, float]:
        brake = self.brake
        return {"brake/cap": float(brake.cap),
                "brake/ratio_ema": float("nan") if brake.ratio_ema is None else brake.ratio_ema,
                "brake/n_up": float(brake.n_up), "brake/n_down": float(brake.n_down),
                "brake/n_hold": float(brake.n_hold)}

    # ------------------------------------------------------------------ diagnostics (no grad)

    def cheap_diagnostics(self) -> dict[str, float]:
        """Prediction statistics of the last step and FiLM magnitudes on its actions."""
        if self._last is None:
            return {}
        return train_diagnostics.step_statistics(self.model, self._last, self._last_actions)

    def _context_frames(self, length: int) -> int:
        """Context frames of the diagnostics' rollouts in a window of `length` frames."""
        return max(1, min(self.cfg.min_tf_steps, length - 1))

    def action_response(self, tokens: torch.Tensor, actions: torch.Tensor) -> dict[str, float]:
        n = min(2, tokens.shape[0])
        tokens, actions = tokens[:n].to(self.device).long(), actions[:n].to(self.device).float()
        return train_diagnostics.action_response(self.model, self.vqvae, self.probes, tokens, actions,
                                                 self._context_frames(tokens.shape[1]))

    def image_grid(self, tokens: torch.Tensor, actions: torch.Tensor) -> np.ndarray:
        tokens, actions = tokens[:1].to(self.device).long(), actions[:1].to(self.device).float()
        return train_diagnostics.image_grid(self.model, self.vqvae, tokens, actions,
                                            self._context_frames(tokens.shape[1]))

    def validate(self, batches: list[dict[str, Any]]) -> dict[str, float]:
        return train_diagnostics.validate(self.model, batches, self.cfg.min_tf_steps, self.device)

    # ------------------------------------------------------------------ state

    def export_record(self) -> dict[str, Any]:
        return {"model_config": self.model_cfg.to_dict(), "train_config": config_mod.to_dict(self.cfg)}

    def state_dict(self, sampler_state: dict[str, int], extra: dict[str, Any]) -> dict[str, Any]:
        rng = {"python": random.getstate(), "numpy": ckpt_io.numpy_rng_state(), "torch": torch.get_rng_state(),
               "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}
        return {"model": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
                "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
                "scheduler": {"kind": "warmup_cosine", "step": self.step}, "step": self.step,
                "brake": self.brake.to_dict(), "bad_streak": self.bad_streak, "rng": rng,
                "sampler": sampler_state, "world_size": self.dist.world,
                "vqvae": {"path": self.vqvae_path, "identity": self.vqvae_ident},
                "encoding": self.encoding.to_dict(), **self.export_record(), **extra}

    def load_state_dict(self, rec: dict[str, Any], path: Path) -> None:
        try:
            saved = WorldModelConfig.from_dict(rec["model_config"]).to_dict()  # fields added since: their old meaning
        except (TypeError, ValueError) as e:
            raise TrainingError(f"{path}: unreadable model config: {e}") from e
        if saved != self.model_cfg.to_dict():
            diff = {k: (saved.get(k), v) for k, v in self.model_cfg.to_dict().items() if saved.get(k) != v}
            raise TrainingError(f"{path}: model architecture differs from this run's config "
                                f"(saved vs now): {diff}")
        if rec["vqvae"]["identity"] != self.vqvae_ident:
            raise TrainingError(f"{path}: was trained with VQ-VAE {rec['vqvae']['path']} (identity "
                                f"{rec['vqvae']['identity']}), this run uses {self.vqvae_path} "
                                f"({self.vqvae_ident})")
        self.model.load_state_dict(rec["model"], strict=True)
        self.optimizer.load_state_dict(rec["optimizer"])
        if rec["scaler"]:  # empty from a run without a scaler (bf16 or fp32), e.g. an A100 run resumed on a P100
            self.scaler.load_state_dict(rec["scaler"])
        self.step = int(rec["step"])
        self.brake = BrakeState.from_dict(rec["brake"])
        self.bad_streak = int(rec["bad_streak"])
        rng = rec["rng"]
        random.setstate(rng["python"])
        ckpt_io.set_numpy_rng_state(rng["numpy"])
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(rng["cuda"])


# ----------------------------------------------------------------------------- stop signals

class _StopFlag:
    requested = False
    signum: int | None = None


_STOP = _StopFlag()


def _handle_signal(signum: int, frame: Any) -> None:
    if _STOP.requested:  # a second Ctrl-C: stop now, without the checkpoint
        signal.signal(signum, signal.SIG_DFL)
        raise KeyboardInterrupt
    _STOP.requested, _STOP.signum = True, signum
    print(f"\n{signal.Signals(signum).name} received: saving a checkpoint and stopping after this step "
          f"(send it again to stop at once)", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- the run

def _loader(dataset: Any, sampler: Any, workers: int, device: torch.device):
    from torch.utils.data import DataLoader

    return DataLoader(dataset, batch_sampler=sampler, num_workers=workers, pin_memory=device.type == "cuda",
                      persistent_workers=workers > 0)


def motion_of(path: str, vqvae_ident: str, encoding: ActionEncoding) -> dict[str, Any]:
    """The calibrated motion (MOTION_FIELDS) recorded in world-model checkpoint `path`, which must record the
    same tokenizer identity and action encoding as this run."""
    from world_model_io import load_world_model

    _, meta = load_world_model(path)
    if meta["vqvae"]["identity"] != vqvae_ident:
        raise TrainingError(f"--motion-from {path}: its tokenizer ({meta['vqvae']['identity']}) is not this "
                            f"run's ({vqvae_ident}); token motion is measured in that tokenizer's tokens")
    if meta["encoding"].to_dict() != encoding.to_dict():
        raise TrainingError(f"--motion-from {path}: its action encoding {meta['encoding'].to_dict()} is not "
                            f"this run's {encoding.to_dict()}")
    mc = meta["model_config"]
    if not mc.get("copy_prior", 0) > 0:
        raise TrainingError(f"--motion-from {path}: the model has no motion path (copy_prior 0)")
    return {k: mc[k] for k in MOTION_FIELDS if k in mc}


def run(cfg: TrainConfig, lpips_net: Any = None, on_step: Callable[["Trainer", dict[str, float]], None] | None = None
        ) -> dict[str, Any]:
    """Train per `cfg` until max_steps (or a stop signal). Returns a summary (final step, last metrics,
    paths). `lpips_net` replaces the LPIPS loader (tests); `on_step` is called after every step."""
    from dataset import TokenWindowDataset, read_meta, split_files
    from vq_vae import load_vqvae, vqvae_identity

    dist = Dist.from_env(cfg.device)
    device = resolve_device(cfg.device)
    if dist.group and dist.main:
        print(f"data parallel: {dist.world} process(es), {dist.backend} backend", file=sys.stderr)
    if cfg.cpu_threads > 0:
        torch.set_num_threads(cfg.cpu_threads)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    files = RunFiles(cfg.run_dir)
    existing = files.states()
    if existing and not cfg.resume:
        raise TrainingError(f"{files.ckpt_dir} already holds checkpoints; pass --resume to continue that run "
                            f"or choose another --run-dir")

    vqvae = load_vqvae(cfg.vqvae, device=device)
    ident = vqvae_identity(cfg.vqvae)
    check_compatible(shards_side(read_meta(cfg.data), cfg.data), vqvae_side(vqvae, cfg.vqvae, ident))
    encoding = ActionEncoding(yaw_edges=tuple(cfg.yaw_edges), pitch_edges=tuple(cfg.pitch_edges),
                              camera=cfg.camera_encoding)
    train_files, val_files = split_files(cfg.data, cfg.val_fraction, seed=cfg.seed)
    train_ds = TokenWindowDataset(cfg.data, cfg.seq_len, encoding, files=train_files, seed=cfg.seed)
    sampler = train_ds.sampler(cfg.batch_size, seed=cfg.seed, rank=dist.rank, world_size=dist.world)

    rec = None
    if cfg.resume and existing:
        for path in reversed(existing):  # newest readable state; a damaged newest falls back to older
            try:
                rec = ckpt_io.load_checkpoint(path, TRAIN_STATE_KIND, TRAIN_STATE_FORMAT_VERSION)
                break
            except ckpt_io.CheckpointError as e:
                print(f"warning: {e}; trying an older checkpoint", file=sys.stderr)
        if rec is None:
            raise TrainingError(f"{files.ckpt_dir}: no readable training state to resume from")
    if rec is not None:  # the motion calibration is part of the model: a resumed run keeps its own
        mc = rec["model_config"]
        calibrated = {k: mc[k] for k in MOTION_FIELDS if k in mc}
    elif cfg.copy_prior > 0 and cfg.motion_from:
        calibrated = motion_of(cfg.motion_from, ident, encoding)
        if dist.main:
            print(f"motion taken from {cfg.motion_from} (--motion-from; not calibrated on this data)",
                  file=sys.stderr)
    elif cfg.copy_prior > 0:
        calibrated = calibrate_motion(cfg, train_files, encoding, vqvae, dist.main)
    else:
        calibrated = {}
    trainer = Trainer(cfg, vqvae, cfg.vqvae, ident, encoding, device, dist, lpips_net=lpips_net,
                      calibrated=calibrated)
    run_id = f"{files.root.name}-{int(time.time())}"
    if rec is None and trainer.model.texture is not None:
        maps = token_maps(cfg.data, train_files, cfg.texture_frames)
        fitted = texture.fit(trainer.model.texture, maps, cfg.texture_steps, seed=cfg.seed)
        if dist.group:
            import torch.distributed as tdist

            for t in trainer.model.texture.parameters():
                tdist.broadcast(t.data, src=0)
        if dist.main:
            print(f"texture prior fitted on {len(maps)} frames: cross-entropy {fitted['texture_nll']:.2f} nats "
                  f"(uniform {fitted['texture_uniform_nll']:.2f})", file=sys.stderr)
    if rec is not None:
        trainer.load_state_dict(rec, path)
        sampler.load_state_dict(rec["sampler"])
        run_id = rec.get("wandb_run_id", run_id)
        changed = {k: (rec["train_config"].get(k), v) for k, v in config_mod.to_dict(cfg).items()
                   if rec["train_config"].get(k) != v and k not in ("resume", "max_steps")}
        if dist.main:
            print(f"resumed {path} at step {trainer.step}" + (f"; changed options (saved, now): {changed}"
                                                               if changed else ""), file=sys.stderr)
    elif cfg.resume and dist.main:
        print(f"--resume: no checkpoint in {files.ckpt_dir}, starting fresh", file=sys.stderr)

    if dist.main:
        files.root.mkdir(parents=True, exist_ok=True)
        ckpt_io.atomic_write_json(files.config, {"train_config": config_mod.to_dict(cfg),
                                                 "model_config": trainer.model_cfg.to_dict(),
                                                 "world_size": dist.world, "vqvae_identity": ident})
    log = MetricsLog(files.root, cfg.wandb, cfg.wandb_project, config_mod.to_dict(cfg), run_id, enabled=dist.main)
    val_batches: list[dict[str, Any]] = []
    if val_files and cfg.val_every > 0 and dist.main:
        val_ds = TokenWindowDataset(cfg.data, cfg.seq_len, encoding, files=val_files)
        idx = val_ds.evenly_spaced(cfg.val_batches * cfg.batch_size)
        from torch.utils.data import default_collate

        val_batches = [default_collate([val_ds[i] for i in idx[j:j + cfg.batch_size]])
                       for j in range(0, len(idx), cfg.batch_size)]

    def save() -> None:
        if not dist.main:
            return
        step = trainer.step
        state = trainer.state_dict(sampler.state_dict(consumed=consumed), {"wandb_run_id": run_id})
        ckpt_io.save_checkpoint(files.state_path(step), TRAIN_STATE_KIND, TRAIN_STATE_FORMAT_VERSION, state)
        export_args = (trainer.model, encoding, cfg.vqvae, ident, config_mod.to_dict(cfg), step, train_files)
        save_world_model(files.export_path(step), *export_args)
        save_world_model(files.latest_export, *export_args)
        RunFiles.prune(files.states(), cfg.keep_last)
        RunFiles.prune([p for _, p in files.exports()], cfg.keep_last)

    old_handlers = {s: signal.signal(s, _handle_signal) for s in (signal.SIGINT, signal.SIGTERM)} \
        if _in_main_thread() else {}
    _STOP.requested, _STOP.signum = False, None
    consumed = sampler.position
    last_save_time = time.monotonic()
    last_saved_step = trainer.step
    metrics: dict[str, float] = {}
    from tqdm import tqdm

    bar = tqdm(total=cfg.last_step, initial=trainer.step, disable=not (dist.main and cfg.progress),
               dynamic_ncols=True, desc="train")
    loader = iter(_loader(train_ds, sampler, cfg.num_workers, device))
    window_t0, window_steps = time.perf_counter(), 0
    window_phases: dict[str, float] = {}
    try:
        def should_stop() -> bool:
            # One process: at once. Several: only on the all-reduced flag, so all stop after the same step.
            return _STOP.requested if dist.world == 1 else trainer.stop_synced

        while trainer.step < cfg.last_step and not should_stop():
            t0 = time.perf_counter()
            trainer.timer.start("data")
            batch = next(loader)
            consumed += 1
            metrics = trainer.train_step(batch)
            for k, v in trainer.timer.pop().items():
                window_phases[k] = window_phases.get(k, 0.0) + v
            window_phases["step"] = window_phases.get("step", 0.0) + time.perf_counter() - t0
            window_steps += 1
            step = trainer.step
            if on_step is not None:
                on_step(trainer, metrics)
            if dist.main and (step % cfg.log_every == 0 or step == cfg.last_step):
                rec = {f"train/{k}" if not k.startswith(("grad/", "brake/")) else k: v for k, v in metrics.items()}
                rec.update({f"train/{k}": v for k, v in trainer.cheap_diagnostics().items()})
                elapsed = time.perf_counter() - window_t0
                rec["timing/steps_per_s"] = window_steps / elapsed
                rec["timing/frames_per_s"] = window_steps * cfg.batch_size * dist.world * (cfg.seq_len - 1) / elapsed
                rec.update({f"timing/{k}_ms": 1000 * v / window_steps for k, v in window_phases.items()})
                rec["epoch"] = sampler.epoch_of(consumed)
                if step % cfg.diag_every == 0:
                    rec.update({f"train/{k}": v for k, v in
                                trainer.action_response(batch["tokens"], batch["actions"]).items()})
                if val_batches and step % cfg.val_every == 0:
                    rec.update(trainer.validate(val_batches))
                log.log(step, rec)
                window_t0, window_steps, window_phases = time.perf_counter(), 0, {}
                bar.set_postfix(loss=f"{metrics['loss']:.3f}", ar=int(metrics["ar_len"]),
                                sps=f"{rec['timing/steps_per_s']:.2f}")
            if dist.main and cfg.image_every > 0 and step % cfg.image_every == 0:
                log.image(step, files.image_dir / f"step_{step:08d}.png",
                          trainer.image_grid(batch["tokens"], batch["actions"]), "images/gt_tf_ar",
                          "rows: GT, teacher-forced, AR")
            bar.update(1)
            due_time = cfg.ckpt_minutes > 0 and time.monotonic() - last_save_time > 60 * cfg.ckpt_minutes
            if step % cfg.ckpt_every == 0 or due_time:
                save()
                last_save_time, last_saved_step = time.monotonic(), step
        if trainer.step != last_saved_step:
            save()
    finally:
        bar.close()
        log.close()
        for s, h in old_handlers.items():
            signal.signal(s, h)
    stopped = _STOP.requested or trainer.stop_synced
    if stopped and dist.main:
        print(f"stopped by signal at step {trainer.step}; checkpoint saved, resume with --resume",
              file=sys.stderr)
    return {"step": trainer.step, "metrics": metrics, "stopped_by_signal": stopped, "run_dir": str(files.root),
            "trainer": trainer}


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def parse_args(argv: Sequence[str]) -> TrainConfig:
    """The run's config from the command line. With --resume and a run directory that holds a run, the saved
    config of that run with only the options given changed: a resume that names just --run-dir and --resume
    continues the same run (learning rate, loss weights, --keep-last, ...), not the defaults."""
    cfg = config_mod.parse_config(TrainConfig, argv, PRESETS, default_preset="laptop")
    saved_path = RunFiles(cfg.run_dir).config
    if not (cfg.resume and saved_path.exists()):
        return cfg
    try:
        saved = json.loads(saved_path.read_text())["train_config"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise config_mod.ConfigError(f"{saved_path}: not a run's config ({type(e).__name__}: {e}); "
                                     f"resume needs it to continue that run's options") from None
    try:
        return config_mod.parse_config(TrainConfig, argv, PRESETS, base=saved)
    except config_mod.ConfigError as e:
        raise config_mod.ConfigError(f"{saved_path}: {e}") from None


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    cfg = config_mod.exit_on_error(lambda: parse_args(args), (config_mod.ConfigError,))
    try:
        config_mod.exit_on_error(lambda: run(cfg),
                                 (TrainingError, ckpt_io.CheckpointError, ValueError, FileNotFoundError))
    finally:
        import torch.distributed as tdist

        if tdist.is_available() and tdist.is_initialized():
            tdist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
