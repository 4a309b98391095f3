"""Train the frame tokenizer on video folders.

    python -m vq_vae.train --data DIR [DIR ...] --run-dir DIR [--preset tiny|laptop|a100] [--max-steps N]
                           [--resume] [--key value ...]

Frames come straight from every *.mp4 under the --data folders (vq_vae/data.py), resized to 128x72.
Loss: L1 + LPIPS (AlexNet with real weights, lpips_loader) + commitment, plus an optional PatchGAN hinge
loss after a warm-up. Mixed precision on CUDA (bf16 where supported, else fp16 with a GradScaler), fp32 on
CPU; gradient clipping; linear warm-up then cosine learning rate.

Writes into --run-dir: config.json (resolved config), metrics.jsonl (+ wandb, offline unless WANDB_MODE
says otherwise), images/step_NNNNNNN.png (originals over reconstructions), state.pt (full training state
for --resume) and vqvae.pt (weights only, what every other script loads), all atomically.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F

import ckpt_io
import config as config_mod
import video_io
from devices import amp_settings, autocast, resolve_device
from lpips_loader import load_lpips
from run_files import MetricsLog
from vq_vae.checkpoint import model_from_payload, save_vqvae, vqvae_payload
from vq_vae.data import FramePool, find_videos
from vq_vae.model import VQVAE, PatchDiscriminator, VQVAEConfig

STATE_KIND = "vqvae_train_state"
STATE_FORMAT_VERSION = 1


@dataclass
class VQTrainConfig(VQVAEConfig):
    """Tokenizer training. Inherits the architecture fields of VQVAEConfig (codebook_size, code_dim, ...)."""

    data: tuple[str, ...] = ()
    """Folders (or mp4 files) to read frames from; every *.mp4 below them is used. `--data A B C`."""
    run_dir: str = "runs/vqvae"
    """Output folder: config.json, metrics.jsonl, images/, state.pt, vqvae.pt."""
    preset: str = "laptop"
    """Preset applied before the overrides (tiny, laptop, a100); recorded for reference."""
    resume: bool = False
    """Continue from run_dir/state.pt (model, optimiser, scaler, RNG, step); --max-steps may be raised."""
    max_steps: int = 1500
    """Optimiser steps in total (the cosine schedule ends here)."""
    batch_size: int = 8
    """Frames per step."""
    lr: float = 1e-3
    """Peak AdamW learning rate."""
    lr_min_ratio: float = 0.1
    """Final learning rate as a fraction of lr (1.0: constant after warm-up)."""
    warmup_steps: int = 50
    """Linear learning-rate warm-up steps."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    grad_clip: float = 1.0
    """Clip the gradient norm to this (0: no clipping)."""
    l1_weight: float = 1.0
    """Weight of the L1 pixel loss (images in [-1, 1])."""
    lpips_weight: float = 1.0
    """Weight of the LPIPS perceptual loss (what keeps reconstructions from going blurry and grey)."""
    lpips_net: Literal["alex", "vgg"] = "alex"
    """LPIPS trunk."""
    commitment_weight: float = 0.25
    """Weight of the commitment loss ||z - sg(q)||^2 (fsq: ||bounded(z) - sg(q)||^2, which keeps latents
    away from rounding boundaries)."""
    reencode_weight: float = 0.0
    """Weight of the re-encoding consistency loss ||bounded(E(D(q))) - sg(q)||^2: the reconstruction,
    encoded again, should land on the code it was decoded from (idempotence). Costs an encoder pass."""
    reencode_grad_decoder: bool = False
    """Let the re-encoding loss train the decoder too (else the reconstruction is detached there and only
    the encoder learns to read decoded frames back; cheaper, and the decoder keeps optimising pixels)."""
    consistency_frames: int = 0
    """Frames of each batch the re-encoding and perturbation losses use (0: all; fewer is cheaper)."""
    consistency_start_step: int = 0
    """Step after which the re-encoding and perturbation losses apply: from step 1 they collapse a fresh
    encoder onto one code (a constant output is perfectly consistent)."""
    perturb_weight: float = 0.0
    """Weight of the perturbation consistency loss ||bounded(E(x')) - sg(q(x))||^2, x' = x shifted by up to
    perturb_shift pixels and with +-perturb_noise grey levels of noise: near-identical pictures should keep
    their codes (patch stability). Costs an encoder pass."""
    perturb_shift: int = 1
    """Largest shift (pixels, each axis, edges replicated) of the perturbed copy; 0: no shift."""
    perturb_noise: float = 2.0
    """Uniform per-pixel noise of the perturbed copy, in grey levels (0..255 units)."""
    fsq_dither_steps: int = 0
    """FSQ only: for the first n steps the decoder sees the bounded latents plus uniform noise of one lattice
    step instead of the rounded codes (the additive-noise proxy for rounding). A fresh encoder's near-zero
    latents all round to the centre code, a decoder fed one constant cannot tell the encoder which way to
    move, and how long that lasts varies from seed to seed; through the noise the decoder sees the latents."""
    disc_weight: float = 0.0
    """Weight of the PatchGAN generator loss (0: no discriminator at all)."""
    disc_start_step: int = 0
    """Step from which the discriminator trains and its loss applies (a warm-up on reconstruction first)."""
    disc_channels: int = 32
    """Width of the PatchGAN discriminator."""
    disc_lr: float = 2e-4
    """Discriminator Adam learning rate."""
    pool_frames: int = 20000
    """Frames held in memory; if all data fits it is loaded once, else a thread keeps swapping videos in."""
    frame_stride: int = 1
    """Keep every n-th frame of each video (neighbouring frames are near duplicates)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where to train (auto: CUDA when available)."""
    amp: bool = True
    """Mixed precision on CUDA (bf16 if supported, else fp16 + GradScaler); CPU always trains in fp32."""
    cpu_threads: int = 0
    """torch CPU threads (0: torch's default)."""
    seed: int = 0
    """Seed for weights, frame sampling and code restarts."""
    log_every: int = 25
    """Write metrics every n steps."""
    image_every: int = 250
    """Write a reconstruction grid every n steps (and at the end)."""
    ckpt_every: int = 250
    """Save state.pt and vqvae.pt every n steps (and at the end)."""
    wandb_project: str = "ochre-vqvae"
    """wandb project (mode from $WANDB_MODE, offline by default; 'disabled' skips wandb)."""


PRESETS: dict[str, dict[str, Any]] = {
    # seconds on a CPU: the test suite's configuration
    "tiny": dict(codebook_size=64, code_dim=8, enc_channels=(8, 16, 16), enc_res_blocks=(0, 0, 1),
                 dec_channels=(16, 8, 8), dec_res_blocks=(1, 0, 0), kmeans_iters=3, max_steps=30,
                 batch_size=4, lr=2e-3, warmup_steps=0, lr_min_ratio=1.0, pool_frames=512, log_every=1,
                 image_every=10, ckpt_every=10),
    # <= 20 minutes on 2 CPU cores, block-world data; the decoder is the one live play runs every frame
    "laptop": dict(max_steps=1500, batch_size=8, lr=1e-3, warmup_steps=50, log_every=25, image_every=250,
                   ckpt_every=250, pool_frames=20000),
    # the laptop preset with finite scalar quantisation (625 lattice codes) and the code-consistency losses:
    # the best trade-off of the ablation in vq_vae/README.md (stable, re-encodable codes, better PSNR than the
    # VQ); 1200 steps are about 6 minutes on one core
    "laptop_fsq": dict(max_steps=1200, batch_size=8, lr=1e-3, warmup_steps=50, log_every=25, image_every=250,
                       ckpt_every=250, pool_frames=20000, quantizer="fsq", fsq_levels=(5, 5, 5, 5),
                       fsq_dither_steps=150, commitment_weight=0.25, reencode_weight=2.5,
                       reencode_grad_decoder=True, perturb_weight=3.0, perturb_shift=0, consistency_frames=4,
                       consistency_start_step=300),
    # Real data (GameFactory, 70 h at 16 fps) on one A100; see vq_vae/README.md. Same live-cost decoder,
    # a wider encoder (it only runs in preprocessing), a PatchGAN after a reconstruction warm-up.
    "a100": dict(enc_channels=(64, 128, 256), enc_res_blocks=(1, 2, 3), max_steps=100000, batch_size=64,
                 lr=4e-4, warmup_steps=1000, lr_min_ratio=0.05, disc_weight=0.1, disc_start_step=30000,
                 disc_channels=64, pool_frames=200000, frame_stride=4, log_every=50, image_every=2000,
                 ckpt_every=2000),
}


def model_config(cfg: VQTrainConfig) -> VQVAEConfig:
    """The architecture part of a training config."""
    return VQVAEConfig(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(VQVAEConfig)})


def lr_at(step: int, cfg: VQTrainConfig) -> float:
    """Learning rate for 1-based `step`: linear warm-up to cfg.lr, then cosine down to lr * lr_min_ratio."""
    if cfg.warmup_steps > 0 and step <= cfg.warmup_steps:
        return cfg.lr * step / cfg.warmup_steps
    span = max(1, cfg.max_steps - cfg.warmup_steps)
    t = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.lr * (cfg.lr_min_ratio + (1 - cfg.lr_min_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


def reconstruction_loss(x: torch.Tensor, rec: torch.Tensor, commit: torch.Tensor,
                        lpips_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None, cfg: VQTrainConfig,
                        gen_logits: torch.Tensor | None = None, reencode: torch.Tensor | None = None,
                        perturb: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Tokenizer loss (fp32). x, rec: [B, 3, H, W] in [-1, 1]; commit: scalar; gen_logits: discriminator
    logits on rec when the adversarial term is active; reencode, perturb: the consistency terms (scalars)
    when their weights are on. Returns (total, {name: value})."""
    rec = rec.float()
    l1 = (rec - x).abs().mean()
    lp = lpips_fn(rec, x).mean() if lpips_fn is not None else rec.new_zeros(())
    total = cfg.l1_weight * l1 + cfg.lpips_weight * lp + cfg.commitment_weight * commit
    parts = {"l1": l1.item(), "lpips": lp.item(), "commit": commit.item()}
    for name, term, weight in (("reencode", reencode, cfg.reencode_weight), ("perturb", perturb, cfg.perturb_weight)):
        if term is not None:
            total = total + weight * term
            parts[name] = term.item()
    if gen_logits is not None:
        g = -gen_logits.float().mean()
        total = total + cfg.disc_weight * g
        parts["gen"] = g.item()
    parts["loss"] = total.item()
    return total, parts


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """Hinge loss of the PatchGAN critic."""
    d = F.relu(1 - real_logits.float()).mean() + F.relu(1 + fake_logits.float()).mean()
    return d, {"disc": d.item()}


def perturbed(x: torch.Tensor, shift: int, noise: float, gen: torch.Generator | None = None) -> torch.Tensor:
    """x [B, 3, H, W] in [-1, 1] shifted by a random integer offset in [-shift, shift] per axis and frame
    (edges replicated) plus uniform noise of +-noise grey levels: a near-identical picture."""
    b, _, h, w = x.shape
    out = x
    if shift > 0:
        pad = F.pad(x, (shift, shift, shift, shift), mode="replicate")  # [B, 3, H + 2s, W + 2s]
        off = torch.randint(0, 2 * shift + 1, (b, 2), generator=gen)
        out = torch.stack([pad[i, :, int(dy):int(dy) + h, int(dx):int(dx) + w] for i, (dy, dx) in enumerate(off)])
    if noise > 0:
        out = out + (torch.rand(out.shape, generator=gen).to(x.device) * 2 - 1) * (noise / 127.5)
    return out


def dithered_forward(model: VQVAE, x: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, float]]:
    """model(x) with the decoder fed the bounded latents plus uniform noise of +-half a lattice step per
    channel instead of the rounded codes (FSQ; see VQTrainConfig.fsq_dither_steps). Same outputs."""
    z = model.encoder(x)
    _, idx, commit, stats = model.quantizer(z)
    return model.decoder(model.quantizer.dithered(z).to(z.dtype)), idx, commit, stats


def consistency_terms(model: VQVAE, x: torch.Tensor, rec: torch.Tensor, idx: torch.Tensor,
                      cfg: VQTrainConfig, step: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(re-encoding term, perturbation term), each None when its weight is 0 or before
    consistency_start_step. Both pull the bounded encoder output of a picture that should carry the same
    codes (the reconstruction; a shifted, noisy copy of x) onto the code vectors chosen for x
    (stop-gradient). idx: [B, h, w]."""
    if (cfg.reencode_weight <= 0 and cfg.perturb_weight <= 0) or step <= cfg.consistency_start_step:
        return None, None
    n = cfg.consistency_frames if cfg.consistency_frames > 0 else x.shape[0]
    x, rec, idx = x[:n], rec[:n], idx[:n]
    target = F.embedding(idx, model.codebook).permute(0, 3, 1, 2).detach().float()  # [n, D, h, w]
    reenc = pert = None
    if cfg.reencode_weight > 0:
        back = rec.clamp(-1.0, 1.0)
        back = back if cfg.reencode_grad_decoder else back.detach()
        reenc = F.mse_loss(model.quantizer.bounded(model.encoder(back)).float(), target)
    if cfg.perturb_weight > 0:
        xp = perturbed(x, cfg.perturb_shift, cfg.perturb_noise)
        pert = F.mse_loss(model.quantizer.bounded(model.encoder(xp)).float(), target)
    return reenc, pert


def to_model_input(frames: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 [B, H, W, 3] -> float [B, 3, H, W] in [-1, 1]."""
    t = torch.from_numpy(frames).to(device, non_blocking=True)
    return (t.permute(0, 3, 1, 2).float() / 127.5 - 1.0).contiguous()  # [B, 3, H, W]


def recon_grid(originals: np.ndarray, recons: np.ndarray, scale: int = 2) -> np.ndarray:
    """uint8 [N, H, W, 3] twice -> one image: originals on the top row, reconstructions below, 2px gaps."""
    n, h, w, _ = originals.shape
    gap = 2
    canvas = np.full((2 * h + gap, n * (w + gap) - gap, 3), 255, np.uint8)
    for i in range(n):
        x0 = i * (w + gap)
        canvas[:h, x0:x0 + w] = originals[i]
        canvas[h + gap:, x0:x0 + w] = recons[i]
    return video_io.upscale_nearest(canvas, scale)


def _metrics_log(cfg: VQTrainConfig, run_dir: Path) -> MetricsLog:
    """metrics.jsonl always; wandb unless WANDB_MODE=disabled (offline by default: no network needed), under
    a run id kept in the run folder so --resume continues the same wandb run."""
    mode = os.environ.get("WANDB_MODE", "offline")
    run_id = ""
    if mode != "disabled":
        id_file = run_dir / "wandb_id.txt"
        if not id_file.exists():
            ckpt_io.atomic_write_text(id_file, uuid.uuid4().hex[:8])
        run_id = id_file.read_text().strip()
    return MetricsLog(run_dir, mode, cfg.wandb_project, config_mod.to_dict(cfg), run_id)


def _rng_state(rng: np.random.Generator) -> dict[str, Any]:
    state: dict[str, Any] = {"numpy": rng.bit_generator.state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(rng: np.random.Generator, state: dict[str, Any]) -> None:
    rng.bit_generator.state = state["numpy"]
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _check_same_architecture(stored: dict[str, Any], cfg: VQTrainConfig, path: Path) -> None:
    now = config_mod.to_dict(model_config(cfg))
    # fields added since the state was written take their defaults (an old state is a plain VQ)
    stored = config_mod.to_dict(config_mod.from_dict(VQVAEConfig, stored, strict=False))
    diff = {k: (stored.get(k), v) for k, v in now.items() if stored.get(k) != v}
    if diff:
        raise ckpt_io.CheckpointError(f"{path}: --resume with a different architecture "
                                      f"(stored vs now): {diff}")


def train(cfg: VQTrainConfig) -> dict[str, Any]:
    """Run (or resume) a training job; returns a summary dict (final step, metrics, paths)."""
    if not cfg.data:
        raise config_mod.ConfigError("--data needs at least one folder of videos")
    if cfg.fsq_dither_steps > 0 and cfg.quantizer != "fsq":
        raise config_mod.ConfigError("--fsq-dither-steps needs --quantizer fsq (a VQ code has no lattice step)")
    from tqdm import tqdm

    if cfg.cpu_threads > 0:
        torch.set_num_threads(cfg.cpu_threads)
    device = resolve_device(cfg.device)
    amp_dtype, use_scaler = amp_settings(device, cfg.amp)
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    state_path, weights_path = run_dir / "state.pt", run_dir / "vqvae.pt"
    if cfg.resume and not state_path.is_file():
        raise ckpt_io.CheckpointError(f"{state_path}: --resume but no training state there")
    if not cfg.resume and state_path.exists():
        raise ckpt_io.CheckpointError(f"{state_path}: run folder already has a training state; pass "
                                      f"--resume to continue it or choose another --run-dir")
    config_mod.save_config(cfg, run_dir / "config.json")

    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    videos = find_videos(cfg.data)
    size = (cfg.frame_width, cfg.frame_height)
    pool = FramePool(videos, size, cfg.pool_frames, cfg.frame_stride, seed=cfg.seed)
    for path, why in pool.bad:
        print(f"warning: skipped {path}: {why}", file=sys.stderr)
    # a fixed set of frames for the reconstruction grids, independent of the training stream
    grid_frames = pool.sample(8, np.random.default_rng(cfg.seed + 1))

    model = VQVAE(model_config(cfg)).to(device)
    params = list(model.encoder.parameters()) + list(model.decoder.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.99), weight_decay=cfg.weight_decay)
    disc = opt_d = None
    if cfg.disc_weight > 0:
        disc = PatchDiscriminator(cfg.disc_channels).to(device)
        opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.disc_lr, betas=(0.5, 0.9))
    scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)
    # loading the LPIPS trunk (torchvision) is seconds of start-up that a run without the term skips
    lpips_fn = load_lpips(cfg.lpips_net, device=device) if cfg.lpips_weight > 0 else None

    step = 0
    if cfg.resume:
        st = ckpt_io.load_checkpoint(state_path, STATE_KIND, STATE_FORMAT_VERSION, map_location="cpu")
        _check_same_architecture(st["vqvae"]["config"], cfg, state_path)
        loaded = model_from_payload(st["vqvae"], state_path)
        model.load_state_dict(loaded.state_dict(), strict=True)
        opt.load_state_dict(st["optimizer"])
        scaler.load_state_dict(st["scaler"])
        if disc is not None:
            if st.get("disc") is None:
                raise ckpt_io.CheckpointError(f"{state_path}: --resume with a discriminator, but the stored "
                                              f"run had none (disc_weight was 0)")
            disc.load_state_dict(st["disc"], strict=True)
            opt_d.load_state_dict(st["disc_optimizer"])
        _set_rng_state(rng, st["rng"])
        step = int(st["step"])
        print(f"resumed {state_path} at step {step}", file=sys.stderr)

    def save(step: int) -> None:
        model.eval()
        extra = {"train_config": config_mod.to_dict(cfg), "step": step}
        ckpt_io.save_checkpoint(state_path, STATE_KIND, STATE_FORMAT_VERSION, {
            "vqvae": vqvae_payload(model), "optimizer": opt.state_dict(), "scaler": scaler.state_dict(),
            "disc": disc.state_dict() if disc is not None else None,
            "disc_optimizer": opt_d.state_dict() if opt_d is not None else None,
            "rng": _rng_state(rng), "step": step, "train_config": config_mod.to_dict(cfg)})
        save_vqvae(model, weights_path, extra=extra)
        model.train()

    def write_grid(step: int) -> None:
        model.eval()
        with torch.no_grad():
            rec = model.decode_code(model.encode(grid_frames))
        grid = recon_grid(grid_frames, VQVAE.to_uint8(rec))
        logger.image(step, run_dir / "images" / f"step_{step:07d}.png", grid, "reconstructions",
                     "top: originals, bottom: reconstructions")
        model.train()

    logger = _metrics_log(cfg, run_dir)
    model.train()
    last: dict[str, float] = {}
    t_log, frames_since = time.perf_counter(), 0
    t_start = time.perf_counter()
    pbar = tqdm(total=cfg.max_steps, initial=step, unit="step", dynamic_ncols=True, mininterval=2.0,
                desc="vqvae")
    try:
        while step < cfg.max_steps:
            step += 1
            lr = lr_at(step, cfg)
            for g in opt.param_groups:
                g["lr"] = lr
            x = to_model_input(pool.sample(cfg.batch_size, rng), device)
            adv = disc is not None and step > cfg.disc_start_step
            with autocast(device, amp_dtype):
                dither = step <= cfg.fsq_dither_steps
                rec, idx, commit, qstats = dithered_forward(model, x) if dither else model(x)
                gen_logits = disc(rec) if adv else None
                reenc, pert = consistency_terms(model, x, rec, idx, cfg, step)
                loss, parts = reconstruction_loss(x, rec, commit, lpips_fn, cfg, gen_logits, reenc, pert)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            gnorm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
            scaler.step(opt)
            if adv:
                with autocast(device, amp_dtype):
                    d_loss, d_parts = discriminator_loss(disc(x), disc(rec.detach()))
                opt_d.zero_grad(set_to_none=True)
                scaler.scale(d_loss).backward()
                scaler.step(opt_d)
                parts.update(d_parts)
            scaler.update()
            frames_since += cfg.batch_size
            pbar.update(1)
            if step % cfg.log_every == 0 or step == cfg.max_steps:
                now = time.perf_counter()
                fps = frames_since / max(now - t_log, 1e-9)
                t_log, frames_since = now, 0
                last = {**parts, **qstats, "lr": lr, "grad_norm": float(gnorm), "frames_per_s": fps,
                        "elapsed_s": now - t_start}
                logger.log(step, last)
                pbar.set_postfix(loss=f"{parts['loss']:.4f}", lpips=f"{parts['lpips']:.3f}",
                                 fps=f"{fps:.1f}", codes=int(qstats.get("codes_in_batch", 0)))
            if step % cfg.image_every == 0 or step == cfg.max_steps:
                write_grid(step)
            if step % cfg.ckpt_every == 0 or step == cfg.max_steps:
                save(step)
    finally:
        pbar.close()
        pool.close()
        logger.close()
    if pool.bad:
        print(f"skipped {len(pool.bad)} unreadable video(s):", file=sys.stderr)
        for path, why in pool.bad:
            print(f"  {path}: {why}", file=sys.stderr)
    return {"step": step, "metrics": last, "state": str(state_path), "vqvae": str(weights_path),
            "train_seconds": time.perf_counter() - t_start, "frames_in_pool": len(pool)}


def split_data_args(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Pull `--data A B C` (or --data=A) out of argv: config's parser takes one value per key."""
    rest: list[str] = []
    data: list[str] = []
    i = 0
    while i < len(argv):
        tok = argv[i]
        if tok == "--data":
            i += 1
            while i < len(argv) and not argv[i].startswith("--"):
                data.append(argv[i])
                i += 1
            continue
        if tok.startswith("--data="):
            data.extend(t for t in tok[len("--data="):].split(",") if t)
        else:
            rest.append(tok)
        i += 1
    return data, rest


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    data, rest = split_data_args(argv)
    cfg = config_mod.main_config(VQTrainConfig, PRESETS, default_preset="laptop", argv=rest)
    if data:
        cfg = dataclasses.replace(cfg, data=tuple(data))
    errors = (ckpt_io.CheckpointError, FileNotFoundError, config_mod.ConfigError, video_io.VideoError)
    summary = config_mod.exit_on_error(lambda: train(cfg), errors)
    print(json.dumps({k: v for k, v in summary.items()}, indent=2))
    return summary


if __name__ == "__main__":
    main()
