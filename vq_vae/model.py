"""The frame tokenizer: a convolutional VQ-VAE, 128x72 RGB frames <-> 32x18 grids of codebook indices.

Encoder and decoder are plain residual conv stacks without normalisation layers (EDSR-style: a
reconstruction network does not need them, and they cost CPU time in the live decoder), with two
stride-2 stages (4x down) and a 1x1 / 3x3 projection into and out of the code space.

The quantiser is hand-written (`EMAQuantizer`, ~100 lines) rather than `vector-quantize-pytorch`:
- the checkpoint format is ours: its state is four plain buffers (codebook, EMA counts, EMA sums, an
  init flag) that `load_vqvae` loads strictly; a third-party module's buffer names change between
  releases, which would break strict loads of old tokenizers;
- every behaviour the tokenizer needs is a few lines each and tested here: EMA codebook updates,
  k-means initialisation from the first batch, dead-code restart from encoder outputs, and distances in
  fp32 even under autocast (bf16/fp16 distances pick wrong codes for near ties);
- no extra dependency (that package pulls einops and follows torch closely).

`FSQuantizer` (config `quantizer="fsq"`) is the alternative: finite scalar quantisation (Mentzer et al.
2023). The encoder outputs len(fsq_levels) channels, each bounded by tanh and rounded to a fixed number of
levels; the codes are the points of that lattice, so neighbouring codes are equally spaced, no code can die
or duplicate another, and there is no codebook to learn (no EMA, no k-means, no restarts).

API used by the rest of Ochre (see `VQVAE`): `encode`, `decode_code`, `decode_embeddings`, `codebook`,
`codebook_size`, `code_dim`, `grid`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

FRAME_W, FRAME_H = 128, 72


@dataclass
class VQVAEConfig:
    """Architecture of the tokenizer; stored in every checkpoint and rebuilt from it (never assumed)."""

    frame_width: int = FRAME_W
    """Input/output frame width in pixels (must be divisible by 4)."""
    frame_height: int = FRAME_H
    """Input/output frame height in pixels (must be divisible by 4)."""
    quantizer: Literal["vq", "fsq"] = "vq"
    """vq: learned codebook (EMAQuantizer); fsq: finite scalar quantisation on a fixed lattice
    (FSQuantizer), whose codebook_size and code_dim follow from fsq_levels."""
    fsq_levels: tuple[int, ...] = (8, 5, 5, 5)
    """FSQ only: levels per latent channel; K = their product, D = their count."""
    codebook_size: int = 1024
    """Number of codes K; the world model reads it from the checkpoint (fsq: set to prod(fsq_levels))."""
    code_dim: int = 32
    """Dimension D of each code vector (small D keeps codebook usage high; fsq: set to len(fsq_levels))."""
    enc_channels: tuple[int, int, int] = (16, 32, 64)
    """Encoder channels at full, 1/2 and 1/4 resolution."""
    enc_res_blocks: tuple[int, int, int] = (0, 1, 1)
    """Encoder residual blocks at full, 1/2 and 1/4 resolution."""
    dec_channels: tuple[int, int, int] = (64, 32, 16)
    """Decoder channels at 1/4, 1/2 and full resolution (the live decoder's cost is set by these)."""
    dec_res_blocks: tuple[int, int, int] = (1, 1, 0)
    """Decoder residual blocks at 1/4, 1/2 and full resolution."""
    ema_decay: float = 0.99
    """EMA decay of codebook counts and sums."""
    dead_code_threshold: float = 1.0
    """A code whose recent usage (EMA of its count per batch) falls below this is restarted from a random
    encoder output of the current batch."""
    usage_decay: float = 0.9
    """EMA decay of the usage count that detects dead codes: faster than ema_decay, so a collapse is
    caught within tens of steps rather than hundreds."""
    kmeans_iters: int = 10
    """k-means iterations for the codebook initialisation on the first training batch (0: random data init)."""

    def __post_init__(self) -> None:
        if self.frame_width % 4 or self.frame_height % 4:
            raise ValueError(f"frame size {self.frame_width}x{self.frame_height} must be divisible by 4")
        for name in ("enc_channels", "enc_res_blocks", "dec_channels", "dec_res_blocks"):
            value = tuple(getattr(self, name))
            if len(value) != 3:
                raise ValueError(f"{name} needs 3 values (one per resolution), got {value}")
            setattr(self, name, value)
        self.fsq_levels = tuple(int(v) for v in self.fsq_levels)
        if self.quantizer == "fsq":
            if not self.fsq_levels or min(self.fsq_levels) < 2:
                raise ValueError(f"fsq_levels needs at least one level count >= 2, got {self.fsq_levels}")
            self.codebook_size = int(np.prod(self.fsq_levels))
            self.code_dim = len(self.fsq_levels)
        elif self.quantizer != "vq":
            raise ValueError(f"quantizer must be 'vq' or 'fsq', got {self.quantizer!r}")


class ResBlock(nn.Module):
    """x + conv(act(conv(act(x)))); the second conv starts at zero so a new block is the identity."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.silu(self.conv1(F.silu(x))))


class Encoder(nn.Module):
    """[B, 3, H, W] in [-1, 1] -> [B, D, H/4, W/4] continuous latents."""

    def __init__(self, cfg: VQVAEConfig) -> None:
        super().__init__()
        c0, c1, c2 = cfg.enc_channels
        r0, r1, r2 = cfg.enc_res_blocks
        self.net = nn.Sequential(
            nn.Conv2d(3, c0, 3, padding=1),
            *[ResBlock(c0) for _ in range(r0)],
            nn.SiLU(),
            nn.Conv2d(c0, c1, 4, stride=2, padding=1),
            *[ResBlock(c1) for _ in range(r1)],
            nn.SiLU(),
            nn.Conv2d(c1, c2, 4, stride=2, padding=1),
            *[ResBlock(c2) for _ in range(r2)],
            nn.SiLU(),
            nn.Conv2d(c2, cfg.code_dim, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Decoder(nn.Module):
    """[B, D, H/4, W/4] code vectors -> [B, 3, H, W] in roughly [-1, 1] (clamped by the caller).

    Up-sampling is a 4x4 stride-2 transposed conv: a quarter of the cost of nearest-upsample + 3x3 conv
    at the higher resolution, which matters because this network runs every frame in live play."""

    def __init__(self, cfg: VQVAEConfig) -> None:
        super().__init__()
        c2, c1, c0 = cfg.dec_channels
        r2, r1, r0 = cfg.dec_res_blocks
        self.net = nn.Sequential(
            nn.Conv2d(cfg.code_dim, c2, 3, padding=1),
            *[ResBlock(c2) for _ in range(r2)],
            nn.SiLU(),
            nn.ConvTranspose2d(c2, c1, 4, stride=2, padding=1),
            *[ResBlock(c1) for _ in range(r1)],
            nn.SiLU(),
            nn.ConvTranspose2d(c1, c0, 4, stride=2, padding=1),
            *[ResBlock(c0) for _ in range(r0)],
            nn.SiLU(),
            nn.Conv2d(c0, 3, 3, padding=1),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class PatchDiscriminator(nn.Module):
    """PatchGAN critic for the optional adversarial loss: [B, 3, H, W] in [-1, 1] -> logits [B, 1, H/8, W/8]."""

    def __init__(self, ch: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, ch, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(ch, ch * 2, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(ch * 2, ch * 4, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(ch * 4, 1, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class EMAQuantizer(nn.Module):
    """Nearest-code vector quantiser with EMA codebook updates, k-means init and dead-code restart.

    Buffers (all saved): embed [K, D] (the codebook), cluster_size [K] and embed_avg [K, D] (EMA counts and
    sums per code), usage [K] (fast EMA of counts, for dead-code detection), initted (whether the codebook
    has been initialised from data)."""

    def __init__(self, codebook_size: int, code_dim: int, decay: float = 0.99, dead_threshold: float = 1.0,
                 usage_decay: float = 0.9, kmeans_iters: int = 10, eps: float = 1e-5) -> None:
        super().__init__()
        self.codebook_size, self.code_dim = codebook_size, code_dim
        self.decay, self.dead_threshold, self.kmeans_iters, self.eps = decay, dead_threshold, kmeans_iters, eps
        self.usage_decay = usage_decay
        self.register_buffer("embed", torch.randn(codebook_size, code_dim))
        self.register_buffer("cluster_size", torch.ones(codebook_size))
        self.register_buffer("usage", torch.ones(codebook_size))
        self.register_buffer("embed_avg", self.embed.clone())
        self.register_buffer("initted", torch.zeros((), dtype=torch.bool))

    def nearest(self, flat: torch.Tensor) -> torch.Tensor:
        """flat [N, D] (any float dtype) -> nearest code indices [N], distances computed in fp32."""
        with torch.autocast(device_type=flat.device.type, enabled=False):
            flat = flat.float()
            embed = self.embed.float()
            dist = (flat.pow(2).sum(1, keepdim=True) - 2 * flat @ embed.t()
                    + embed.pow(2).sum(1)[None, :])  # [N, K]
            return dist.argmin(1)

    def indices(self, z: torch.Tensor) -> torch.Tensor:
        """Encoder output [B, D, h, w] -> code indices [B, h, w]."""
        b, d, h, w = z.shape
        return self.nearest(z.permute(0, 2, 3, 1).reshape(-1, d)).view(b, h, w)  # [B*h*w, D] -> [B, h, w]

    def bounded(self, z: torch.Tensor) -> torch.Tensor:
        """The encoder output in code space (identity for a VQ: codes live where the encoder writes)."""
        return z

    @torch.no_grad()
    def _kmeans_init(self, flat: torch.Tensor) -> None:
        k = self.codebook_size
        n = flat.shape[0]
        # seed centroids with distinct samples when there are enough, else with jittered repeats
        idx = torch.randperm(n, device=flat.device)[:k] if n >= k else torch.randint(n, (k,), device=flat.device)
        centroids = flat[idx].clone()
        if n < k:
            centroids += 0.01 * flat.std() * torch.randn_like(centroids)
        for _ in range(self.kmeans_iters):
            with torch.autocast(device_type=flat.device.type, enabled=False):
                dist = torch.cdist(flat, centroids)  # [N, K]
            assign = dist.argmin(1)
            counts = torch.bincount(assign, minlength=k).float()
            sums = torch.zeros_like(centroids).index_add_(0, assign, flat)
            filled = counts > 0
            centroids[filled] = sums[filled] / counts[filled, None]
        # EMA state as if this batch had been seen: codes nobody chose are restarted on the next update
        with torch.autocast(device_type=flat.device.type, enabled=False):
            assign = torch.cdist(flat, centroids).argmin(1)
        counts = torch.bincount(assign, minlength=k).float()
        self.embed.copy_(centroids)
        self.cluster_size.copy_(counts)
        self.usage.copy_(counts)
        self.embed_avg.copy_(centroids * counts[:, None])
        self.initted.fill_(True)

    @torch.no_grad()
    def _ema_update(self, flat: torch.Tensor, idx: torch.Tensor) -> int:
        k = self.codebook_size
        counts = torch.bincount(idx, minlength=k).float()
        sums = torch.zeros(k, self.code_dim, device=flat.device).index_add_(0, idx, flat)
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.embed_avg.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        n = self.cluster_size.sum()
        # Laplace smoothing keeps a never-used code's division finite
        smoothed = (self.cluster_size + self.eps) / (n + k * self.eps) * n
        self.embed.copy_(self.embed_avg / smoothed[:, None])
        self.usage.mul_(self.usage_decay).add_(counts, alpha=1 - self.usage_decay)
        dead = self.usage < self.dead_threshold
        n_dead = int(dead.sum())
        if n_dead:
            pick = torch.randint(flat.shape[0], (n_dead,), device=flat.device)
            self.embed[dead] = flat[pick]
            self.embed_avg[dead] = flat[pick] * self.dead_threshold
            self.cluster_size[dead] = self.dead_threshold
            # a few steps' grace before a restarted code that still attracts nothing is restarted again
            self.usage[dead] = 2 * self.dead_threshold
        return n_dead

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, float]]:
        """z [B, D, h, w] -> (straight-through quantised z [B, D, h, w], indices [B, h, w],
        commitment term ||z - sg(q)||^2 (fp32 scalar), stats)."""
        b, d, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, d).float()  # [B*h*w, D]
        if self.training and not bool(self.initted):
            if self.kmeans_iters > 0:
                self._kmeans_init(flat.detach())
            else:
                with torch.no_grad():
                    pick = torch.randint(flat.shape[0], (self.codebook_size,), device=flat.device)
                    self.embed.copy_(flat[pick])
                    self.embed_avg.copy_(self.embed)
                    self.initted.fill_(True)
        idx = self.nearest(flat.detach())
        quant = F.embedding(idx, self.embed).view(b, h, w, d).permute(0, 3, 1, 2)  # [B, D, h, w]
        commit = F.mse_loss(z.float(), quant.detach())
        stats: dict[str, float] = {}
        if self.training:
            with torch.no_grad():
                probs = torch.bincount(idx, minlength=self.codebook_size).float() / idx.numel()
                stats["perplexity"] = float(torch.exp(-(probs * torch.log(probs + 1e-10)).sum()))
                stats["codes_in_batch"] = float((probs > 0).sum())
            stats["dead_restarts"] = float(self._ema_update(flat.detach(), idx))
        quant = quant.to(z.dtype)
        # straight-through estimator when gradients are wanted; the exact code vectors otherwise
        z_q = z + (quant - z).detach() if z.requires_grad else quant
        return z_q, idx.view(b, h, w), commit, stats  # indices [B, h, w]


class FSQuantizer(nn.Module):
    """Finite scalar quantisation: each of the D = len(levels) channels is bounded by tanh to
    (-(L-1)/2, (L-1)/2) (shifted by 1/2 for even L), rounded to an integer and scaled by 1/(L // 2), so
    every channel takes L values in [-1, 1]. Codes are the K = prod(levels) lattice points; the index is
    the mixed-radix number of the per-channel digits (first channel fastest).

    Buffer `embed` [K, D] holds the lattice points in index order (saved, so a checkpoint carries the
    codebook the world model reads, and a strict load checks it). Gradients pass straight through the
    rounding. The returned auxiliary term is the distance of the bounded latents to their lattice points
    (a commitment term: it pulls latents to cell centres, away from the rounding boundaries where a tiny
    change of the picture flips the code)."""

    def __init__(self, levels: tuple[int, ...], eps: float = 1e-3) -> None:
        super().__init__()
        self.levels = tuple(int(v) for v in levels)
        self.codebook_size, self.code_dim, self.eps = int(np.prod(self.levels)), len(self.levels), eps
        lv = torch.tensor(self.levels, dtype=torch.float32)
        self.register_buffer("_levels", lv, persistent=False)
        self.register_buffer("_half_width", torch.floor(lv / 2), persistent=False)
        basis = torch.cumprod(torch.tensor((1,) + self.levels[:-1], dtype=torch.int64), 0)
        self.register_buffer("_basis", basis, persistent=False)
        self.register_buffer("embed", self.codes_of(torch.arange(self.codebook_size)))

    def codes_of(self, idx: torch.Tensor) -> torch.Tensor:
        """Indices [...] -> lattice points [..., D] in [-1, 1]."""
        digits = (idx[..., None] // self._basis) % self._levels.long()  # [..., D]
        return (digits.float() - self._half_width) / self._half_width

    def bounded(self, z: torch.Tensor) -> torch.Tensor:
        """[B, D, h, w] -> the latents in code units (before rounding), fp32: channel i lies in
        (-(L_i - 1)/2 - off_i, (L_i - 1)/2 - off_i) / (L_i // 2), off_i = 1/2 for even L_i."""
        lv = self._levels.view(1, -1, 1, 1)
        half_l = (lv - 1) * (1 + self.eps) / 2
        offset = torch.where(lv % 2 == 0, 0.5, 0.0)
        shift = torch.atanh(offset / half_l)
        with torch.autocast(device_type=z.device.type, enabled=False):
            b = torch.tanh(z.float() + shift) * half_l - offset
        return b / self._half_width.view(1, -1, 1, 1)

    def dithered(self, z: torch.Tensor) -> torch.Tensor:
        """[B, D, h, w] -> the bounded latents plus uniform noise of +-half a lattice step per channel (fp32):
        the additive-noise stand-in for rounding that training uses while a fresh encoder would round
        everything to the centre code."""
        zb = self.bounded(z)
        step = 1.0 / self._half_width.view(1, -1, 1, 1)  # lattice step per channel, code units
        return zb + (torch.rand_like(zb) - 0.5) * step

    def _round(self, zb: torch.Tensor) -> torch.Tensor:
        """Bounded latents [B, D, h, w] -> integer digits in [0, L) [B, D, h, w] (int64)."""
        hw = self._half_width.view(1, -1, 1, 1)
        return (torch.round(zb * hw) + hw).long()

    def indices(self, z: torch.Tensor) -> torch.Tensor:
        """Encoder output [B, D, h, w] -> code indices [B, h, w]."""
        digits = self._round(self.bounded(z))
        return (digits * self._basis.view(1, -1, 1, 1)).sum(1)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, float]]:
        """z [B, D, h, w] -> (straight-through quantised z [B, D, h, w], indices [B, h, w],
        commitment term ||bounded(z) - sg(q)||^2 (fp32 scalar), stats)."""
        zb = self.bounded(z)
        digits = self._round(zb)
        idx = (digits * self._basis.view(1, -1, 1, 1)).sum(1)  # [B, h, w]
        # the exact lattice point, from the table, so the hard path equals decode_code bit for bit
        quant = F.embedding(idx, self.embed).permute(0, 3, 1, 2)  # [B, h, w, D] -> [B, D, h, w]
        commit = F.mse_loss(zb, quant)
        stats: dict[str, float] = {}
        if self.training:
            with torch.no_grad():
                probs = torch.bincount(idx.reshape(-1), minlength=self.codebook_size).float() / idx.numel()
                stats["perplexity"] = float(torch.exp(-(probs * torch.log(probs + 1e-10)).sum()))
                stats["codes_in_batch"] = float((probs > 0).sum())
        quant = quant.to(z.dtype)
        z_q = zb.to(z.dtype) + (quant - zb.to(z.dtype)).detach() if z.requires_grad else quant
        return z_q, idx, commit, stats


class VQVAE(nn.Module):
    """Frame tokenizer. Frames: uint8 [B, H, W, 3] (numpy or tensor) or float [B, 3, H, W] in [0, 1].
    Tokens: int64 [B, h, w] with (h, w) = `grid` = (H/4, W/4), i.e. (18, 32) for 128x72."""

    def __init__(self, cfg: VQVAEConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or VQVAEConfig()
        self.encoder = Encoder(self.cfg)
        self.decoder = Decoder(self.cfg)
        self.quantizer: EMAQuantizer | FSQuantizer
        if self.cfg.quantizer == "fsq":
            self.quantizer = FSQuantizer(self.cfg.fsq_levels)
        else:
            self.quantizer = EMAQuantizer(self.cfg.codebook_size, self.cfg.code_dim, self.cfg.ema_decay,
                                          self.cfg.dead_code_threshold, self.cfg.usage_decay,
                                          self.cfg.kmeans_iters)

    @property
    def codebook_size(self) -> int:
        return self.cfg.codebook_size

    @property
    def code_dim(self) -> int:
        return self.cfg.code_dim

    @property
    def grid(self) -> tuple[int, int]:
        """(rows, columns) of the token grid."""
        return self.cfg.frame_height // 4, self.cfg.frame_width // 4

    @property
    def codebook(self) -> torch.Tensor:
        """The current codebook [K, D]; soft embeddings z = einsum("bkhw,kd->bdhw", probs, codebook) are
        differentiable with respect to probs and decode with `decode_embeddings`."""
        return self.quantizer.embed

    def _device(self) -> torch.device:
        return self.quantizer.embed.device

    def preprocess(self, frames: Any) -> torch.Tensor:
        """Frames in any accepted form -> float [B, 3, H, W] in [-1, 1] on the model's device."""
        if isinstance(frames, np.ndarray):
            frames = torch.from_numpy(np.ascontiguousarray(frames))
        if not isinstance(frames, torch.Tensor):
            raise TypeError(f"frames must be a numpy array or tensor, got {type(frames).__name__}")
        if frames.dim() == 3:
            frames = frames[None]
        h, w = self.cfg.frame_height, self.cfg.frame_width
        if frames.dtype == torch.uint8:
            if tuple(frames.shape[1:]) != (h, w, 3):
                raise ValueError(f"uint8 frames must be [B, {h}, {w}, 3], got {tuple(frames.shape)}")
            x = frames.to(self._device()).permute(0, 3, 1, 2).float() / 127.5 - 1.0  # [B, 3, H, W]
        elif frames.is_floating_point():
            if tuple(frames.shape[1:]) != (3, h, w):
                raise ValueError(f"float frames must be [B, 3, {h}, {w}] in [0, 1], got {tuple(frames.shape)}")
            x = frames.to(self._device()).float() * 2.0 - 1.0
        else:
            raise TypeError(f"frames must be uint8 or float, got {frames.dtype}")
        return x.contiguous()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, float]]:
        """Training pass. x [B, 3, H, W] in [-1, 1] -> (reconstruction in [-1, 1]-ish [B, 3, H, W],
        indices [B, h, w], commitment term, quantiser stats)."""
        z = self.encoder(x)
        z_q, idx, commit, stats = self.quantizer(z)
        return self.decoder(z_q), idx, commit, stats

    @torch.no_grad()
    def encode(self, frames: Any) -> torch.Tensor:
        """Frames -> code indices int64 [B, h, w] (rows, columns)."""
        return self.quantizer.indices(self.encoder(self.preprocess(frames)))

    def embed_code(self, indices: torch.Tensor) -> torch.Tensor:
        """indices [B, h, w] -> code vectors [B, D, h, w]."""
        if isinstance(indices, np.ndarray):
            indices = torch.from_numpy(indices.astype(np.int64))
        indices = indices.to(self._device()).long()
        if indices.dim() == 2:
            indices = indices[None]
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.codebook_size):
            raise ValueError(f"token indices must lie in [0, {self.codebook_size}), got "
                             f"[{int(indices.min())}, {int(indices.max())}]")
        return F.embedding(indices, self.codebook).permute(0, 3, 1, 2).contiguous()  # [B, D, h, w]

    def decode_embeddings(self, z: torch.Tensor) -> torch.Tensor:
        """Code-space tensor [B, D, h, w] (hard or soft embeddings) -> frames float [B, 3, H, W] in [0, 1].
        Differentiable, so a perceptual loss on the frames reaches whatever produced z."""
        if z.dim() != 4 or z.shape[1] != self.code_dim:
            raise ValueError(f"embeddings must be [B, {self.code_dim}, h, w], got {tuple(z.shape)}")
        # a fixed memory layout so soft one-hot embeddings decode bit-identically to the hard path
        out = self.decoder(z.contiguous())
        return ((out.clamp(-1.0, 1.0) + 1.0) * 0.5).float()

    @torch.no_grad()
    def decode_code(self, indices: torch.Tensor) -> torch.Tensor:
        """Code indices [B, h, w] (or [h, w]) -> frames float [B, 3, H, W] in [0, 1] (no autograd graph;
        decode_embeddings is the differentiable path)."""
        return self.decode_embeddings(self.embed_code(indices))

    @staticmethod
    def to_uint8(frames: torch.Tensor) -> np.ndarray:
        """Decoded frames float [B, 3, H, W] in [0, 1] -> uint8 numpy [B, H, W, 3]."""
        # [B, 3, H, W] -> [B, H, W, 3]
        return (frames.detach().clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def decoder_flops(cfg: VQVAEConfig) -> int:
    """Multiply-adds x 2 of one decoder pass on one frame (convolutions only; activations are negligible)."""
    flops = 0
    h, w = cfg.frame_height // 4, cfg.frame_width // 4
    for m in Decoder(cfg).modules():
        if isinstance(m, nn.ConvTranspose2d):
            flops += 2 * h * w * m.in_channels * m.out_channels * m.kernel_size[0] * m.kernel_size[1]
            h, w = h * 2, w * 2
        elif isinstance(m, nn.Conv2d):
            flops += 2 * h * w * m.in_channels * m.out_channels * m.kernel_size[0] * m.kernel_size[1]
    return flops
