"""Train the ConvGRU + FiLM world model on VQ-VAE token shards.

    python train.py --data DIR --vqvae CKPT --run-dir DIR [--preset tiny|laptop|a100] [--max-steps N] [--resume]
    torchrun --nproc_per_node G train.py ...        # data parallel (nccl on GPU, gloo on CPU)

With no arguments it trains the laptop preset on the block-world shards `make demo` prepares.

One training step on a window of `seq_len` frames (tokens [B, L, h, w], actions [B, L-1, 15]):
- the window never changes size; the AR curriculum decides how many of its L-1 predictions are
  autoregressive (`curriculum.ar_length`), the rest are teacher-forced;
- teacher-forced step t feeds frame t (corrupted in a few random tokens, or replaced by the model's own
  previous prediction with the scheduled-sampling probability) and action t, and is scored against frame
  t+1: never the target frame as input (v4.8.0 fix);
- AR steps feed the model's own greedy prediction, *detached* (v4.9.0's BPTT through AR feedback
  exploded), and stream: every `ar_bptt` steps the chunk's loss is backpropagated and the recurrent state
  detached, so memory does not grow with the AR length;
- losses (losses.py): token CE, the Gumbel-softmax semantic codebook loss, LPIPS on frames decoded from
  soft embeddings *every step* with gradients (v4.6.x: no_grad and every-5th-step LPIPS caused the
  flat loss and the 5-frame flashing), the variable-span IDM and the action-ranking hinge;
- LPIPS cost is bounded by scoring `lpips_per_sample` randomly chosen frames of every sample each step.

Every random choice of a step (corruption, scheduled sampling, Gumbel noise, LPIPS frames, IDM spans,
ranking alternatives) is drawn from a generator seeded by (seed, step, global sample index). So a resumed
run replays exactly, and N data-parallel processes with batch B compute the same update as one process
with batch N*B. Data parallelism all-reduces gradients once per optimizer step, after all of the step's
backward passes (the streaming AR chunks make several per step, which DistributedDataParallel's per-
backward hooks would sync, or need `no_sync` bookkeeping for; one flat all-reduce is exact and simple).

Outputs in --run-dir: config.json, metrics.jsonl, images/, checkpoints/state_*.pt (full training state,
kind world_model_train_state), exports/world_model_*.pt and world_model.pt (weights only, kind
world_model, see world_model_io.py), and wandb/ (offline by default).
"""
from __future__ import annotations

import json
import math
import os
import random
import signal
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import torch
import torch.nn.functional as F

import ckpt_io
import config as config_mod
from actions import ENC_DIM, ActionEncoding, make_raw
from curriculum import (BrakeState, CurriculumConfig, ar_length, brake_update, check_window,
                        corruption_prob, gumbel_tau, initial_brake, lr_factor, teacher_prob)
from losses import (action_rank_per_sample, gumbel_softmax_probs, idm_per_item, lpips_per_sample,
                    prediction_stats, semantic_per_sample, soft_embeddings, span_action_targets,
                    spatial_gradient, token_ce_per_sample)
from model_convGru import (ModelArchConfig, State, WorldModel, WorldModelConfig, check_vqvae_compat,
                           param_groups)
from world_model_io import save_world_model

TRAIN_STATE_KIND = "world_model_train_state"
TRAIN_STATE_FORMAT_VERSION = 1

# Actions the diagnostics swap in (action_response/<name>) and the ranking loss draws alternatives from.
PRESET_ACTIONS: dict[str, np.ndarray] = {
    "noop": make_raw(),
    "forward": make_raw(forward=1),
    "back": make_raw(back=1),
    "left": make_raw(left=1),
    "right": make_raw(right=1),
    "jump": make_raw(jump=1),
    "sprint_forward": make_raw(forward=1, sprint=1),
    "sneak": make_raw(sneak=1),
    "yaw_left": make_raw(yaw_deg=-8.0),
    "yaw_right": make_raw(yaw_deg=8.0),
    "pitch_up": make_raw(pitch_deg=-3.0),
    "pitch_down": make_raw(pitch_deg=3.0),
}


@dataclass
class TrainConfig(CurriculumConfig, ModelArchConfig):
    """train.py options. Architecture fields build the WorldModelConfig (codebook size and grid come from the
    VQ-VAE); curriculum fields drive curriculum.py."""

    data: str = "runs/demo/shards"
    """Token shard directory written by preprocess.py (manifest.json, meta.json, *.npz)."""
    vqvae: str = "runs/demo/vqvae/vqvae.pt"
    """VQ-VAE checkpoint the shards were encoded with (decodes frames for LPIPS and images)."""
    run_dir: str = "runs/demo/world_model"
    """Output directory: config, metrics, images, checkpoints, exports."""
    preset: str = "laptop"
    """Preset the other values started from (tiny | laptop | a100); recorded for reference."""
    resume: bool = False
    """Continue from the newest full training state in run_dir/checkpoints (fresh start if none)."""
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
    lr: float = 1e-3
    """Peak learning rate (AdamW)."""
    weight_decay: float = 0.01
    """AdamW weight decay (not applied to biases, norms or 1-d parameters)."""
    film_lr_mult: float = 5.0
    """Learning-rate multiplier of the FiLM/action parameters (their gradients are much weaker)."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0 = off)."""
    w_ce: float = 1.0
    """Weight of the token cross-entropy."""
    w_semantic: float = 1.0
    """Weight of the Gumbel-softmax codebook-embedding loss."""
    w_lpips: float = 1.0
    """Weight of LPIPS on frames decoded from soft embeddings (computed every step)."""
    w_idm: float = 0.5
    """Weight of the inverse-dynamics loss."""
    w_rank: float = 0.5
    """Weight of the action-ranking hinge."""
    rank_margin: float = 0.05
    """Margin (nats of mean token CE) by which the true action must beat another one."""
    ar_loss_weight: float = 1.0
    """Weight of AR frames' losses relative to teacher-forced frames."""
    ar_bptt: int = 1
    """AR steps backpropagated together before the state is detached (memory grows with this, not with AR length)."""
    gumbel_hard: bool = False
    """Straight-through one-hot Gumbel samples instead of soft ones for the semantic and LPIPS losses."""
    lpips_per_sample: int = 1
    """Frames per sample scored with LPIPS each step (random among its predictions, every step)."""
    lpips_net: str = "alex"
    """LPIPS trunk (alex | vgg)."""
    idm_key_weights: tuple[float, ...] = (3.0, 3.0, 3.0, 3.0, 2.0, 1.0, 1.0)
    """IDM BCE weights of W, A, S, D, jump, sprint, sneak (movement is the hardest to learn)."""
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
                 diag_every=5, image_every=10, val_every=10, val_batches=1, ckpt_every=10, keep_last=2),
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


# ----------------------------------------------------------------------------- small helpers

def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    return torch.device(name)


def amp_settings(device: torch.device, enabled: bool) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None, use GradScaler): bf16 if supported, else fp16 + scaler; CPU fp32."""
    if device.type != "cuda" or not enabled:
        return None, False
    if torch.cuda.is_bf16_supported():
        return torch.bfloat16, False
    return torch.float16, True


def sample_seed(seed: int, step: int, index: int) -> int:
    """Seed of the generator for one sample of one step (independent of batch split and process count)."""
    return int(np.random.SeedSequence([seed, step, index]).generate_state(1, np.uint64)[0] >> 1)


def sample_generators(seed: int, step: int, indices: list[int], device: torch.device) -> list[torch.Generator]:
    gens = []
    for i in indices:
        g = torch.Generator(device=device)
        g.manual_seed(sample_seed(seed, step, i))
        gens.append(g)
    return gens


def per_sample(gens: list[torch.Generator], draw: Callable[[torch.Generator], torch.Tensor]) -> torch.Tensor:
    """Stack one draw per sample's generator -> [B, ...]."""
    return torch.stack([draw(g) for g in gens])


def select_state(state: State, idx: torch.Tensor) -> State:
    return {k: v[idx] for k, v in state.items()}


def make_param_groups(model: WorldModel, cfg: TrainConfig) -> list[dict[str, Any]]:
    """AdamW groups: FiLM parameters get lr_mult = film_lr_mult; 1-d parameters get no weight decay."""
    film_ids = {id(p) for p in param_groups(model)["film"]}
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for p in model.parameters():
        groups.setdefault((id(p) in film_ids, p.dim() >= 2), []).append(p)
    out = []
    for (is_film, decay), params in sorted(groups.items()):
        out.append({"params": params, "lr_mult": cfg.film_lr_mult if is_film else 1.0,
                    "weight_decay": cfg.weight_decay if decay else 0.0,
                    "name": ("film" if is_film else "main") + ("" if decay else "_nodecay")})
    return out


def apply_lr(optimizer: torch.optim.Optimizer, base_lr: float) -> None:
    """Every group's lr = base_lr * its multiplier (warmup never overwrites the FiLM multiplier: v4.7.1)."""
    for g in optimizer.param_groups:
        g["lr"] = base_lr * g["lr_mult"]


class PhaseTimer:
    """Wall time per phase of a step (synchronising CUDA so GPU work is charged to the right phase)."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.totals: dict[str, float] = {}
        self._name: str | None = None
        self._t0 = 0.0

    def start(self, name: str) -> None:
        self.stop()
        if self.cuda:
            torch.cuda.synchronize()
        self._name, self._t0 = name, time.perf_counter()

    def stop(self) -> None:
        if self._name is None:
            return
        if self.cuda:
            torch.cuda.synchronize()
        self.totals[self._name] = self.totals.get(self._name, 0.0) + time.perf_counter() - self._t0
        self._name = None

    def pop(self) -> dict[str, float]:
        self.stop()
        out, self.totals = self.totals, {}
        return out


# ----------------------------------------------------------------------------- the trainer

@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


class Trainer:
    """Model, frozen VQ-VAE + LPIPS, optimizer and curriculum state; `train_step` does one optimizer step."""

    def __init__(self, cfg: TrainConfig, vqvae: Any, vqvae_path: str, vqvae_ident: str,
                 encoding: ActionEncoding, device: torch.device, dist: Dist = Dist(),
                 lpips_net: Any = None) -> None:
        self.cfg, self.device, self.dist, self.encoding = cfg, device, dist, encoding
        self.vqvae = vqvae.to(device).eval()
        for p in self.vqvae.parameters():
            p.requires_grad_(False)
        self.vqvae_path, self.vqvae_ident = vqvae_path, vqvae_ident
        self.model_cfg = WorldModelConfig.from_arch(cfg, codebook_size=vqvae.codebook_size,
                                                    code_dim=vqvae.code_dim, grid=tuple(vqvae.grid))
        check_vqvae_compat(self.model_cfg, vqvae, vqvae_path)
        torch.manual_seed(cfg.seed)
        self.model = WorldModel(self.model_cfg, codebook=vqvae.codebook).to(device)
        if lpips_net is None and cfg.w_lpips > 0:
            from lpips_loader import load_lpips

            lpips_net = load_lpips(cfg.lpips_net, device=device)
        self.lpips = lpips_net
        self.optimizer = torch.optim.AdamW(make_param_groups(self.model, cfg), lr=cfg.lr, betas=(0.9, 0.95))
        self.amp_dtype, use_scaler = amp_settings(device, cfg.amp)
        self.scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
        self.step = 0
        self.brake: BrakeState = initial_brake(cfg)
        self.bad_streak = 0
        self.stop_synced = False
        self.timer = PhaseTimer(device)
        self.presets = torch.from_numpy(np.stack([encoding.encode(a) for a in PRESET_ACTIONS.values()])
                                        ).to(device)  # [P, 15]
        self.key_weights = torch.tensor(cfg.idm_key_weights, device=device)
        self.codebook = self.vqvae.codebook.detach()
        if dist.world > 1:
            import torch.distributed as tdist

            for t in list(self.model.parameters()) + list(self.model.buffers()):
                tdist.broadcast(t.data, src=0)

    # ------------------------------------------------------------------ helpers

    def autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss).backward()

    def _soft_z(self, logits: torch.Tensor, noise: torch.Tensor, tau: float) -> torch.Tensor:
        return soft_embeddings(gumbel_softmax_probs(logits, tau, noise, self.cfg.gumbel_hard), self.codebook)

    def _lpips(self, z: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """LPIPS of soft embeddings z [N, D, h, w] vs the decoded target tokens [N, h, w] ->
        (distances [N], predicted frames, target frames)."""
        with torch.no_grad():
            target_rgb = self.vqvae.decode_code(target)
        with self.autocast():
            d, pred = lpips_per_sample(z, target_rgb, self.vqvae.decode_embeddings, self.lpips)
        return d, pred, target_rgb

    def _plan(self, gens: list[torch.Generator], t_total: int, tf: int) -> dict[str, torch.Tensor]:
        """Every per-sample random choice of the step except Gumbel noise, drawn in a fixed order."""
        cfg, dev = self.cfg, self.device
        gh, gw, k = self.model_cfg.grid_h, self.model_cfg.grid_w, self.model_cfg.codebook_size
        u_ss = per_sample(gens, lambda g: torch.rand(t_total, generator=g, device=dev))
        u_cor = per_sample(gens, lambda g: torch.rand(t_total, gh, gw, generator=g, device=dev))
        codes = per_sample(gens, lambda g: torch.randint(0, k, (t_total, gh, gw), generator=g, device=dev))
        lp_order = per_sample(gens, lambda g: torch.randperm(t_total, generator=g, device=dev))
        u_rank = per_sample(gens, lambda g: torch.rand(2, generator=g, device=dev))
        u_idm = per_sample(gens, lambda g: torch.rand(t_total, generator=g, device=dev))
        lpips_mask = torch.zeros(len(gens), t_total, dtype=torch.bool, device=dev)
        lpips_mask.scatter_(1, lp_order[:, :cfg.lpips_per_sample], True)
        t_idx = torch.arange(t_total, device=dev)
        span_max = t_idx.clamp(max=self.model_cfg.idm_max_span)  # [T]
        return {"feed_pred": u_ss >= teacher_prob(self.step, cfg),
                "corrupt": u_cor < corruption_prob(self.step, cfg), "codes": codes,
                "lpips": lpips_mask if cfg.w_lpips > 0 else torch.zeros_like(lpips_mask),
                "rank_t": (u_rank[:, 0] * tf).long().clamp(max=tf - 1),
                "rank_alt": (u_rank[:, 1] * len(self.presets)).long().clamp(max=len(self.presets) - 1),
                "idm_k": 1 + (u_idm * span_max).long().clamp(max=(span_max - 1).clamp(min=0))}

    def _alt_actions(self, true: torch.Tensor, pick: torch.Tensor) -> torch.Tensor:
        """A preset action different from each row of `true` [N, 15], starting at preset index `pick`."""
        p = len(self.presets)
        out = torch.empty_like(true)
        for i in range(true.shape[0]):
            for j in range(p):
                cand = self.presets[(int(pick[i]) + j) % p]
                if not torch.allclose(cand, true[i]):
                    break
            out[i] = cand
        return out

    def _frame_losses(self, logits: torch.Tensor, target: torch.Tensor, noise: torch.Tensor, tau: float
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(CE [B], semantic [B], soft embeddings [B, D, h, w]) of one predicted frame."""
        ce = token_ce_per_sample(logits, target)
        z = self._soft_z(logits, noise, tau)
        sem = semantic_per_sample(z, self.codebook, target) if self.cfg.w_semantic > 0 else torch.zeros_like(ce)
        return ce, sem, z

    # ------------------------------------------------------------------ one optimizer step

    def train_step(self, batch: dict[str, Any]) -> dict[str, float]:
        """One optimizer step on this process's slice of the global batch; returns metrics (global means
        where they matter for control: the brake and the skip decision)."""
        cfg, model, dev, timer = self.cfg, self.model, self.device, self.timer
        timer.start("forward")
        tokens = batch["tokens"].to(dev, non_blocking=True).long()  # [B, L, h, w]
        actions = batch["actions"].to(dev, non_blocking=True).float()  # [B, L-1, 15]
        b, length = tokens.shape[:2]
        t_total = length - 1
        if length != cfg.seq_len:
            raise TrainingError(f"batch window {length} != seq_len {cfg.seq_len}")
        ar = ar_length(self.step, self.brake, cfg)
        tf = t_total - ar
        tau = gumbel_tau(self.step, cfg)
        schedules = {"ar_len": float(ar), "tf_len": float(tf), "gumbel_tau": tau,
                     "teacher_prob": teacher_prob(self.step, cfg), "corrupt_prob": corruption_prob(self.step, cfg)}
        k, gh, gw = self.model_cfg.codebook_size, self.model_cfg.grid_h, self.model_cfg.grid_w
        gens = sample_generators(cfg.seed, self.step, [self.dist.rank * b + i for i in range(b)], dev)
        plan = self._plan(gens, t_total, tf)

        def noise() -> torch.Tensor:
            """Gumbel noise [B, K, h, w], drawn codes-last like the logits (no layout copies downstream)."""
            out = torch.empty(len(gens), gh, gw, k, device=dev)  # [B, h, w, K]
            for row, g in zip(out, gens):  # each sample from its own generator, written in place
                row.uniform_(generator=g)
            return out.log_().neg_().log_().neg_().movedim(-1, 1)  # -log(-log U) is Gumbel

        frame_w = torch.ones(t_total, device=dev)
        frame_w[tf:] = cfg.ar_loss_weight
        norm = 1.0 / t_total
        m: dict[str, torch.Tensor] = {}

        def acc(name: str, value: torch.Tensor) -> None:
            m[name] = m.get(name, torch.zeros((), device=dev)) + value.detach().float()

        self.optimizer.zero_grad(set_to_none=True)
        bad = False
        last_logits: dict[str, torch.Tensor] = {}
        pred_frames: list[torch.Tensor] = []
        target_frames: list[torch.Tensor] = []

        def lpips_chunk(items: list[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]]) -> torch.Tensor:
            """items: (t, sample mask [B], z [B, D, h, w], target [B, h, w]) -> weighted LPIPS loss."""
            if not items:
                return torch.zeros((), device=dev)
            sel_z = torch.cat([z[mask] for _, mask, z, _ in items])
            sel_t = torch.cat([tgt[mask] for _, mask, _, tgt in items])
            w = torch.cat([frame_w[t].expand(int(mask.sum())) for t, mask, _, _ in items])
            is_ar = torch.cat([torch.full((int(mask.sum()),), t >= tf, device=dev) for t, mask, _, _ in items])
            timer.start("lpips")
            d, pred, target_rgb = self._lpips(sel_z, sel_t)
            timer.start("forward")
            acc("lpips_tf_sum", d[~is_ar].sum())
            acc("lpips_tf_n", (~is_ar).sum())
            acc("lpips_ar_sum", d[is_ar].sum())
            acc("lpips_ar_n", is_ar.sum())
            pred_frames.append(pred[:2].detach())
            target_frames.append(target_rgb[:2])
            return cfg.w_lpips * (w * d).sum() / (b * cfg.lpips_per_sample)

        def predict(inp: torch.Tensor, t: int, state: Any, kind: str,
                    lp_items: list) -> tuple[torch.Tensor, Any, torch.Tensor, torch.Tensor]:
            """model.step on frame t's tokens and action t, scored against frame t+1: (logits, new state,
            weighted CE + semantic loss, per-sample CE [B]); queues the frame for LPIPS when planned."""
            with self.autocast():
                logits, new_state = model.step(inp, actions[:, t], state)
            target = tokens[:, t + 1]
            ce, sem, z = self._frame_losses(logits, target, noise(), tau)
            acc(f"ce_{kind}", ce.mean())
            acc("semantic", sem.mean())
            lp_mask = plan["lpips"][:, t]
            if lp_mask.any():
                lp_items.append((t, lp_mask, z, target))
            return logits, new_state, norm * frame_w[t] * (cfg.w_ce * ce + cfg.w_semantic * sem).mean(), ce

        # ---- teacher-forced part: frames 0..tf-1 in, frames 1..tf scored; full BPTT within the window
        state = model.init_state(b, dev)
        loss_tf = torch.zeros((), device=dev)
        lp_items = []
        h_tops = []
        ce_true_rank = torch.zeros(b, device=dev)
        ce_alt_rank = torch.zeros(b, device=dev)
        prev_pred = None
        for t in range(tf):
            inp = torch.where(plan["corrupt"][:, t], plan["codes"][:, t], tokens[:, t])
            if t > 0:
                inp = torch.where(plan["feed_pred"][:, t, None, None], prev_pred, inp)
            logits, new_state, frame_loss, ce = predict(inp, t, state, "tf", lp_items)
            loss_tf = loss_tf + frame_loss
            if cfg.w_rank > 0:
                sel = plan["rank_t"] == t
                if sel.any():
                    alt = self._alt_actions(actions[sel, t], plan["rank_alt"][sel])
                    with self.autocast():
                        alt_logits, _ = model.step(inp[sel], alt, select_state(state, sel))
                    ce_alt_rank = ce_alt_rank.index_put((sel.nonzero()[:, 0],),
                                                        token_ce_per_sample(alt_logits, tokens[sel, t + 1]))
                    ce_true_rank = ce_true_rank.index_put((sel.nonzero()[:, 0],), ce[sel])
            prev_pred = logits.detach().argmax(1)
            h_tops.append(model.top_hidden(new_state))
            state = new_state
            if t == tf - 1:
                last_logits["tf"] = logits.detach()
        loss_tf = loss_tf + lpips_chunk(lp_items)
        if cfg.w_rank > 0:
            rank = action_rank_per_sample(ce_true_rank, ce_alt_rank, cfg.rank_margin).mean()
            loss_tf = loss_tf + cfg.w_rank * rank
            acc("action_rank", rank)
            acc("action_rank_gap", (ce_alt_rank - ce_true_rank).mean())
        if cfg.w_idm > 0 and tf >= 2:
            hs = torch.stack(h_tops, 1)  # [B, tf, H, gh, gw]
            with self.autocast():
                feats = model.idm.features(hs.flatten(0, 1)).unflatten(0, (b, tf))  # [B, tf, F]
            t_end = torch.arange(1, tf, device=dev).expand(b, -1)  # [B, tf-1]
            span = plan["idm_k"][:, 1:tf]  # [B, tf-1]
            f_prev = feats.gather(1, (t_end - span)[..., None].expand(-1, -1, feats.shape[-1]))
            f_cur = feats[:, 1:tf]
            with self.autocast():
                idm_logits = model.idm(f_prev.flatten(0, 1), f_cur.flatten(0, 1), span.flatten())
            idm_target = span_action_targets(actions, t_end, span).flatten(0, 1)  # [B*(tf-1), 15]
            parts = idm_per_item(idm_logits, idm_target, self.key_weights)
            idm = sum(v.mean() for v in parts.values())
            loss_tf = loss_tf + cfg.w_idm * idm
            acc("idm", idm)
            for name, v in parts.items():
                acc(name, v.mean())
        if torch.isfinite(loss_tf):
            timer.start("backward")
            self.backward(loss_tf)
            timer.start("forward")
        else:
            bad = True
        acc("loss", loss_tf)
        del h_tops, lp_items

        # ---- AR part: own greedy predictions fed back detached; streamed in chunks of ar_bptt steps
        if ar > 0 and not bad:
            state = model.detach_state(state)
            inp = prev_pred
            for c0 in range(tf, t_total, cfg.ar_bptt):
                chunk_loss = torch.zeros((), device=dev)
                lp_items = []
                for t in range(c0, min(c0 + cfg.ar_bptt, t_total)):
                    logits, state, frame_loss, _ = predict(inp, t, state, "ar", lp_items)
                    chunk_loss = chunk_loss + frame_loss
                    inp = logits.detach().argmax(1)
                    last_logits["ar"] = logits.detach()
                chunk_loss = chunk_loss + lpips_chunk(lp_items)
                acc("loss", chunk_loss)
                if not torch.isfinite(chunk_loss):
                    bad = True
                    break
                timer.start("backward")
                self.backward(chunk_loss)
                timer.start("forward")
                state = model.detach_state(state)
                del lp_items

        # ---- all-reduce gradients and control scalars, then the optimizer step
        timer.start("optimizer")
        metrics = self._finish_step(bad, m, ar, tf)
        timer.stop()
        metrics.update(schedules)
        self._last = {"logits": last_logits, "pred_frames": pred_frames, "target_frames": target_frames,
                      "actions": actions}
        return metrics

    def _finish_step(self, bad: bool, m: dict[str, torch.Tensor], ar: int, tf: int) -> dict[str, float]:
        cfg, dev = self.cfg, self.device
        params = [p for p in self.model.parameters()]
        keys = sorted(m)
        vec = torch.stack([m[k] for k in keys] + [torch.tensor(float(bad), device=dev),
                                                   torch.tensor(float(_STOP.requested), device=dev)])
        if self.dist.world > 1:
            import torch.distributed as tdist

            tdist.all_reduce(vec)
            vec = vec / self.dist.world
            if not vec[-2] > 0:
                grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
                flat = torch.cat([g.reshape(-1) for g in grads])
                tdist.all_reduce(flat)
                flat /= self.dist.world
                offset = 0
                for p in params:
                    n = p.numel()
                    p.grad = flat[offset:offset + n].view_as(p).clone()
                    offset += n
        vals = dict(zip(keys, vec[:-2].tolist()))
        bad = bool(vec[-2] > 0)
        # Every process stops after the same step: a signal seen by any of them (all-reduced here).
        self.stop_synced = bool(vec[-1] > 0)
        out: dict[str, float] = {}
        grad_norm = float("nan")
        if not bad:
            self.scaler.unscale_(self.optimizer)
            groups = param_groups(self.model)
            for name in ("film", "dynamics"):
                gs = [p.grad.detach().float().norm() for p in groups[name] if p.grad is not None]
                out[f"grad/{name}_norm"] = float(torch.stack(gs).norm()) if gs else 0.0
            total = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
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
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.bad_streak = 0
            out["nonfinite_skipped"] = 0.0
        out["grad/total_norm"] = grad_norm
        out["lr"] = cfg.lr * lr_factor(self.step, cfg)
        # Brake on the global LPIPS means of this step's teacher-forced and AR frames.
        lp_tf = vals["lpips_tf_sum"] / vals["lpips_tf_n"] if vals.get("lpips_tf_n", 0) > 0 else None
        lp_ar = vals["lpips_ar_sum"] / vals["lpips_ar_n"] if vals.get("lpips_ar_n", 0) > 0 else None
        if not bad:
            self.brake = brake_update(self.brake, self.step, lp_tf, lp_ar, cfg)
        self.step += 1
        out["loss"] = vals.get("loss", float("nan"))
        out["loss_teacher"] = vals.get("ce_tf", 0.0) / max(tf, 1)
        if ar > 0:
            out["loss_ar"] = vals.get("ce_ar", 0.0) / ar
            out["ar_loss_gap"] = out["loss_ar"] - out["loss_teacher"]
        out["ce"] = (vals.get("ce_tf", 0.0) + vals.get("ce_ar", 0.0)) / (tf + ar)
        out["semantic"] = vals.get("semantic", 0.0) / (tf + ar)
        for name in ("idm", "idm_yaw", "idm_pitch", "idm_keys", "action_rank", "action_rank_gap"):
            if name in vals:
                out[name] = vals[name]
        if lp_tf is not None:
            out["lpips_tf"] = lp_tf
        if lp_ar is not None:
            out["lpips_ar"] = lp_ar
        if lp_tf is not None or lp_ar is not None:
            n = vals["lpips_tf_n"] + vals["lpips_ar_n"]
            out["lpips"] = (vals["lpips_tf_sum"] + vals["lpips_ar_sum"]) / n
        if lp_tf and lp_ar is not None:
            out["lpips_ratio"] = lp_ar / lp_tf
        out["brake/cap"] = float(self.brake.cap)
        out["brake/ratio_ema"] = float("nan") if self.brake.ratio_ema is None else self.brake.ratio_ema
        out["brake/n_up"], out["brake/n_down"] = float(self.brake.n_up), float(self.brake.n_down)
        out["brake/n_hold"] = float(self.brake.n_hold)
        return out

    # ------------------------------------------------------------------ diagnostics (no grad)

    @torch.no_grad()
    def cheap_diagnostics(self) -> dict[str, float]:
        """Prediction statistics of the last step and FiLM magnitudes on its actions."""
        out: dict[str, float] = {}
        last = getattr(self, "_last", None)
        if not last:
            return out
        for phase, logits in last["logits"].items():
            prefix = "" if phase == "tf" else "ar/"
            out.update({prefix + k: v for k, v in prediction_stats(logits).items()})
        if last["pred_frames"]:
            out["spatial_gradient"] = spatial_gradient(torch.cat(last["pred_frames"]))
            out["spatial_gradient_gt"] = spatial_gradient(torch.cat(last["target_frames"]))
        acts = last["actions"].flatten(0, 1)
        cam = self.model.film.camera(acts[:, :8])
        mov = self.model.film.movement(acts[:, 8:])
        film = self.model.film_params(acts)
        out["film/gamma_abs"] = float(torch.stack([g.abs().mean() for g, _ in film]).mean())
        out["film/beta_abs"] = float(torch.stack([b.abs().mean() for _, b in film]).mean())
        out["film/gamma_max"] = float(torch.stack([g.abs().max() for g, _ in film]).max())
        out["film/camera_abs"] = float(cam.abs().mean())
        out["film/movement_abs"] = float(mov.abs().mean())
        return out

    @torch.no_grad()
    def action_response(self, tokens: torch.Tensor, actions: torch.Tensor, horizon: int = 5
                        ) -> dict[str, float]:
        """Change of the predicted frame when the true action is swapped for each preset (1 step, mean
        absolute pixel difference of greedy decoded frames), and after `horizon` AR steps holding each
        preset vs holding noop (v4.8.1: 1-step responses hide multi-step failures)."""
        model, n = self.model, min(2, tokens.shape[0])
        tokens, actions = tokens[:n].to(self.device).long(), actions[:n].to(self.device).float()
        ctx = max(1, min(self.cfg.min_tf_steps, tokens.shape[1] - 1))
        state = model.init_state(n, self.device)
        for t in range(ctx - 1):
            _, state = model.step(tokens[:, t], actions[:, t], state)
        base_logits, _ = model.step(tokens[:, ctx - 1], actions[:, ctx - 1], state)
        base = self.vqvae.decode_code(base_logits.argmax(1))
        out = {}
        finals = {}
        for i, name in enumerate(PRESET_ACTIONS):
            a = self.presets[i].expand(n, -1)
            logits, st = model.step(tokens[:, ctx - 1], a, state)
            out[f"action_response/{name}"] = float((self.vqvae.decode_code(logits.argmax(1)) - base).abs().mean())
            tok = logits.argmax(1)
            for _ in range(horizon - 1):
                logits, st = model.step(tok, a, st)
                tok = logits.argmax(1)
            finals[name] = self.vqvae.decode_code(tok)
        out["action_response/average"] = float(np.mean([out[f"action_response/{k}"] for k in PRESET_ACTIONS]))
        out[f"action_response/average_{horizon}step"] = float(np.mean(
            [float((finals[k] - finals["noop"]).abs().mean()) for k in PRESET_ACTIONS if k != "noop"]))
        return out

    @torch.no_grad()
    def image_grid(self, tokens: torch.Tensor, actions: torch.Tensor) -> np.ndarray:
        """uint8 [3*H, T*W, 3]: rows ground truth (decoded tokens), teacher-forced predictions, AR rollout
        from the first min_tf_steps frames; columns frames 1..T."""
        model = self.model
        tokens, actions = tokens[:1].to(self.device).long(), actions[:1].to(self.device).float()
        t_total = tokens.shape[1] - 1
        tf_logits, _ = model.forward_sequence(tokens[:, :t_total], actions)
        tf_tok = tf_logits[0].argmax(1)  # [T, h, w]
        ctx = max(1, min(self.cfg.min_tf_steps, t_total))
        state = model.init_state(1, self.device)
        ar_tok = []
        for t in range(t_total):
            inp = tokens[:, t] if t < ctx else ar_tok[-1][None]
            logits, state = model.step(inp, actions[:, t], state)
            ar_tok.append(logits[0].argmax(0))
        rows = [tokens[0, 1:], tf_tok, torch.stack(ar_tok)]
        imgs = [self.vqvae.to_uint8(self.vqvae.decode_code(r)) for r in rows]  # each [T, H, W, 3]
        return np.concatenate([np.concatenate(list(r), axis=1) for r in imgs], axis=0)

    @torch.no_grad()
    def validate(self, batches: list[dict[str, Any]]) -> dict[str, float]:
        """Teacher-forced CE over all frames, and CE / token accuracy of a greedy AR rollout from
        min_tf_steps context frames, on fixed held-out windows."""
        ce_tf, ce_ar, acc_ar, n = 0.0, 0.0, 0.0, 0
        for batch in batches:
            tokens = batch["tokens"].to(self.device).long()
            actions = batch["actions"].to(self.device).float()
            t_total = tokens.shape[1] - 1
            logits, _ = self.model.forward_sequence(tokens[:, :t_total], actions)
            ce_tf += float(F.cross_entropy(logits.flatten(0, 1).float(), tokens[:, 1:].flatten(0, 1)))
            ctx = self.cfg.min_tf_steps
            state = self.model.init_state(tokens.shape[0], self.device)
            inp = tokens[:, 0]
            ces, accs = [], []
            for t in range(t_total):
                lg, state = self.model.step(inp, actions[:, t], state)
                if t >= ctx:
                    ces.append(float(F.cross_entropy(lg.float(), tokens[:, t + 1])))
                    accs.append(float((lg.argmax(1) == tokens[:, t + 1]).float().mean()))
                inp = tokens[:, t + 1] if t + 1 < ctx else lg.argmax(1)
            ce_ar += float(np.mean(ces)) if ces else 0.0
            acc_ar += float(np.mean(accs)) if accs else 0.0
            n += 1
        return {"val/loss_teacher": ce_tf / n, "val/loss_ar": ce_ar / n, "val/token_acc_ar": acc_ar / n}

    # ------------------------------------------------------------------ state

    def export_record(self) -> dict[str, Any]:
        return {"model_config": self.model_cfg.to_dict(), "train_config": config_mod.to_dict(self.cfg)}

    def state_dict(self, sampler_state: dict[str, int], extra: dict[str, Any]) -> dict[str, Any]:
        rng = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
               "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}
        return {"model": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
                "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
                "scheduler": {"kind": "warmup_cosine", "step": self.step}, "step": self.step,
                "brake": self.brake.to_dict(), "bad_streak": self.bad_streak, "rng": rng,
                "sampler": sampler_state, "world_size": self.dist.world,
                "vqvae": {"path": self.vqvae_path, "identity": self.vqvae_ident},
                "encoding": self.encoding.to_dict(), **self.export_record(), **extra}

    def load_state_dict(self, rec: dict[str, Any], path: Path) -> None:
        if rec["model_config"] != self.model_cfg.to_dict():
            diff = {k: (rec["model_config"].get(k), v) for k, v in self.model_cfg.to_dict().items()
                    if rec["model_config"].get(k) != v}
            raise TrainingError(f"{path}: model architecture differs from this run's config "
                                f"(saved vs now): {diff}")
        if rec["vqvae"]["identity"] != self.vqvae_ident:
            raise TrainingError(f"{path}: was trained with VQ-VAE {rec['vqvae']['path']} (identity "
                                f"{rec['vqvae']['identity']}), this run uses {self.vqvae_path} "
                                f"({self.vqvae_ident})")
        self.model.load_state_dict(rec["model"], strict=True)
        self.optimizer.load_state_dict(rec["optimizer"])
        self.scaler.load_state_dict(rec["scaler"])
        self.step = int(rec["step"])
        self.brake = BrakeState.from_dict(rec["brake"])
        self.bad_streak = int(rec["bad_streak"])
        rng = rec["rng"]
        random.setstate(rng["python"])
        np.random.set_state(rng["numpy"])
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


# ----------------------------------------------------------------------------- run directory

class RunFiles:
    """Paths and retention inside --run-dir."""

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

    @staticmethod
    def prune(paths: list[Path], keep: int) -> None:
        for p in paths[:-keep] if keep > 0 else []:
            p.unlink(missing_ok=True)


class MetricsLog:
    """metrics.jsonl always (one JSON object per line, appended), plus wandb when enabled."""

    def __init__(self, files: RunFiles, cfg: TrainConfig, run_id: str, enabled: bool) -> None:
        self.files, self.enabled, self.wandb = files, enabled, None
        if not enabled:
            return
        files.root.mkdir(parents=True, exist_ok=True)
        self._fh = open(files.metrics, "a", buffering=1)
        if cfg.wandb != "disabled":
            try:
                os.environ.setdefault("WANDB_SILENT", "true")
                import wandb

                self.wandb = wandb.init(project=cfg.wandb_project, dir=str(files.root), mode=cfg.wandb,
                                        config=config_mod.to_dict(cfg), id=run_id, resume="allow",
                                        name=files.root.name)
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

    def image(self, step: int, grid: np.ndarray) -> Path | None:
        if not self.enabled:
            return None
        import cv2

        path = self.files.image_dir / f"step_{step:08d}.png"
        with ckpt_io.atomic_path(path, suffix=".png") as tmp:
            if not cv2.imwrite(str(tmp), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR)):
                raise OSError(f"{path}: could not write PNG")
        if self.wandb is not None:
            import wandb

            self.wandb.log({"images/gt_tf_ar": wandb.Image(grid, caption="rows: GT, teacher-forced, AR")},
                           step=step)
        return path

    def close(self) -> None:
        if self.enabled:
            self._fh.close()
            if self.wandb is not None:
                self.wandb.finish()


# ----------------------------------------------------------------------------- the run

def _dist_from_env() -> Dist:
    return Dist(rank=int(os.environ.get("RANK", 0)), world=int(os.environ.get("WORLD_SIZE", 1)),
                local_rank=int(os.environ.get("LOCAL_RANK", 0)))


def _check_data_meta(meta: dict[str, Any], data: str, vqvae: Any, vqvae_path: str, ident: str) -> None:
    """The shards must have been encoded by this VQ-VAE: codebook size, grid and identity."""
    problems = []
    if int(meta.get("codebook_size", -1)) != int(vqvae.codebook_size):
        problems.append(f"codebook size {meta.get('codebook_size')} (shards) vs {vqvae.codebook_size} (VQ-VAE)")
    if [int(x) for x in meta.get("grid", [])] != [int(x) for x in vqvae.grid]:
        problems.append(f"grid {meta.get('grid')} (shards) vs {list(vqvae.grid)} (VQ-VAE)")
    if meta.get("vqvae_identity") not in (None, ident):
        problems.append(f"VQ-VAE identity {meta.get('vqvae_identity')} (shards) vs {ident} (this file)")
    if problems:
        raise TrainingError(f"shards {data} and VQ-VAE {vqvae_path} do not match: " + "; ".join(problems))


def _loader(dataset: Any, sampler: Any, workers: int, device: torch.device):
    from torch.utils.data import DataLoader

    return DataLoader(dataset, batch_sampler=sampler, num_workers=workers, pin_memory=device.type == "cuda",
                      persistent_workers=workers > 0)


def run(cfg: TrainConfig, lpips_net: Any = None, on_step: Callable[["Trainer", dict[str, float]], None] | None = None
        ) -> dict[str, Any]:
    """Train per `cfg` until max_steps (or a stop signal). Returns a summary (final step, last metrics,
    paths). `lpips_net` replaces the LPIPS loader (tests); `on_step` is called after every step."""
    from dataset import TokenWindowDataset, read_meta, split_files
    from vq_vae import load_vqvae, vqvae_identity

    dist = _dist_from_env()
    if dist.world > 1:
        import torch.distributed as tdist

        if not tdist.is_initialized():
            backend = "nccl" if cfg.device != "cpu" and torch.cuda.is_available() else "gloo"
            tdist.init_process_group(backend)
    device = resolve_device(cfg.device, dist.local_rank)
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
    meta = read_meta(cfg.data)
    _check_data_meta(meta, cfg.data, vqvae, cfg.vqvae, ident)
    encoding = ActionEncoding(yaw_edges=tuple(cfg.yaw_edges), pitch_edges=tuple(cfg.pitch_edges))
    train_files, val_files = split_files(cfg.data, cfg.val_fraction, seed=cfg.seed)
    train_ds = TokenWindowDataset(cfg.data, cfg.seq_len, encoding, files=train_files, seed=cfg.seed)
    sampler = train_ds.sampler(cfg.batch_size, seed=cfg.seed, rank=dist.rank, world_size=dist.world)

    trainer = Trainer(cfg, vqvae, cfg.vqvae, ident, encoding, device, dist, lpips_net=lpips_net)
    run_id = f"{files.root.name}-{int(time.time())}"
    if cfg.resume and existing:
        rec = None
        for path in reversed(existing):  # newest readable state; a damaged newest falls back to older
            try:
                rec = ckpt_io.load_checkpoint(path, TRAIN_STATE_KIND, TRAIN_STATE_FORMAT_VERSION)
                break
            except ckpt_io.CheckpointError as e:
                print(f"warning: {e}; trying an older checkpoint", file=sys.stderr)
        if rec is None:
            raise TrainingError(f"{files.ckpt_dir}: no readable training state to resume from")
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
    log = MetricsLog(files, cfg, run_id, enabled=dist.main)
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
        RunFiles.prune(sorted(files.export_dir.glob("world_model_*.pt")), cfg.keep_last)

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
                log.image(step, trainer.image_grid(batch["tokens"], batch["actions"]))
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


def main(argv: list[str] | None = None) -> int:
    cfg = config_mod.main_config(TrainConfig, PRESETS, default_preset="laptop", argv=argv)
    try:
        run(cfg)
    except (TrainingError, ckpt_io.CheckpointError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        import torch.distributed as tdist

        if tdist.is_available() and tdist.is_initialized():
            tdist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
