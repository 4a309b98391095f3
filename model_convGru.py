"""The ConvGRU + FiLM world model: modules only, no training logic.

One frame of VQ-VAE tokens [B, h, w] and one encoded action [B, 15] go in, logits over the codebook for
the NEXT frame [B, K, h, w] come out, and the recurrent state is passed in and returned explicitly:

    state = model.init_state(batch_size, device)
    logits, state = model.step(tokens_t, action_t, state)      # logits predict frame t+1

The same `step()` serves training, inference and live play; `forward_sequence` (teacher forcing) gives the
same result as unrolling `step` (it only batches the work that does not depend on the recurrence).

Lessons of the earlier iteration built in (ids of LESSONS.md):
- FiLM is applied to each GRU layer's *input* before the GRU (L2), never to the recurrent state, and its
  gamma/beta are bounded with a smooth clamp (L14), so long unrolls with extreme actions stay bounded;
  the GRU state itself is a convex mix of the old state and a tanh, so |h| <= 1 always.
- Camera (yaw/pitch bins) and movement (keys) have separate FiLM pathways (L16).
- Codebook size and token grid come from the VQ-VAE (L3, L4): `compat.check_compatible` refuses a
  mismatch, naming the file.
- The temporal-attention memory is part of the explicit state (L17), with a relative
  attention-logit bias instead of additive position embeddings.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import motion
from actions import CAMERA_SLICE, ENC_DIM, KEYS_SLICE
from compat import IncompatibleError
from texture import TexturePrior

State = dict[str, torch.Tensor]


@dataclass
class ModelArchConfig:
    """Architecture hyper-parameters a user chooses (train.py exposes them as --key value)."""

    embed_dim: int = 64
    """Channels of the token embedding fed to the first GRU layer."""
    hidden_dim: int = 128
    """Channels of every ConvGRU hidden state."""
    num_layers: int = 2
    """Number of stacked ConvGRU cells; a residual connection spans every 2 layers."""
    kernel_size: int = 5
    """Spatial kernel of the GRU convolutions (odd)."""
    separable: bool = True
    """Depthwise-separable GRU convolutions (depthwise kxk + fused 1x1): ~k*k times cheaper, for CPU play."""
    film_hidden: int = 64
    """Width of each FiLM MLP (one for the camera bins, one for the movement keys)."""
    film_clamp: float = 2.0
    """Bound on every FiLM gamma and beta (smooth clamp c*tanh(x/c)); the input scale is 1+gamma."""
    head_dim: int = 64
    """Rank of the factorised output head (hidden -> head_dim -> K logits); 0 = a full 1x1 conv to K."""
    attn_ctx: int = 4
    """Recent pooled hidden states the causal temporal attention looks at (0 disables attention)."""
    attn_dim: int = 32
    """Query/key/value width of the temporal attention."""
    attn_heads: int = 2
    """Heads of the temporal attention (attn_dim must divide by it)."""
    attn_pool: tuple[int, int] = (3, 4)
    """Grid each hidden state is average-pooled to before it enters the attention memory (rows, cols)."""
    idm_max_span: int = 5
    """Largest span k of the inverse-dynamics head (predicts the actions between h[t-k] and h[t])."""
    idm_hidden: int = 128
    """Width of the inverse-dynamics MLP."""
    init_from_codebook: bool = True
    """Initialise the token embedding and the output embedding from the VQ-VAE codebook."""
    copy_prior: float = 4.0
    """Initial weight (logits, learned) of the motion path's prior: the previous frame warped by the action's
    calibrated motion (motion.py). 0 = no motion path: the earlier FiLM-only design."""
    edge_memory: int = 24
    """Rows remembered beyond the frame's top and bottom edges per column (motion.edge_step): content
    coming back into view from above or below is drawn from them instead of the edge row repeated (README,
    "The keys' flow field and the edge memory"). 0 = none; needs the motion path."""
    entering_prior: float = 4.0
    """Initial weight (logits, learned, separate from copy_prior) of a prior on the wrapped content where
    content enters the view (what left on the other side; motion.warp_sources). 0 = none: the network draws
    entering content from that input alone, and greedy decoding draws the likeliest code, a plain, so a
    turn fills the view with it (README, "How the model obeys the player")."""
    recycle: bool = False
    """Where the walk's zoom makes the warp read a source of a column twice, read instead a source of that
    column the warp pushed out (motion.recycle_sources): a walk keeps the codes it pushes out. Off: mixed in
    the full evaluation (README, "Walking: how far W moves, and the rows it pushes out"). Needs the motion
    path."""
    texture_dim: int = 64
    """Width of the texture prior (texture.TexturePrior: a code from the code above, the code to its left and
    its row), fitted on the training token maps before step 0; rollouts draw from it the positions where the
    warp reads a source of the column twice (a walk's repeated rows), instead of repeating the code (README,
    "Drawing what a walk repeats"). 0 = none; none either without the motion path, where nothing repeats."""


@dataclass
class WorldModelConfig(ModelArchConfig):
    """Full model config: the architecture plus the facts that come from the VQ-VAE checkpoint."""

    codebook_size: int = 1024
    """K, the VQ-VAE codebook size (read from the VQ-VAE, never chosen by hand)."""
    code_dim: int = 64
    """D, the VQ-VAE code vector width (used to initialise embeddings from the codebook)."""
    grid_h: int = 18
    """Token grid rows (from the VQ-VAE)."""
    grid_w: int = 32
    """Token grid columns (from the VQ-VAE)."""
    action_dim: int = ENC_DIM
    """Width of the encoded action (actions.ENC_DIM)."""
    motion_coef: tuple[float, ...] = tuple(motion.zero_coefficients())
    """Motion per encoded action dimension, flattened [3, action_dim] (motion.MOTION_ROWS), calibrated from
    the training data by motion.calibrate (never chosen by hand)."""
    jump_profile: tuple[float, ...] = ()
    """Content shift down per step, in tokens, over the motion.JUMP_STEPS steps after a jump starts,
    calibrated by motion.calibrate_jump; empty = jumps get no motion of their own."""
    edge_fill: tuple[int, int] = (-1, -1)
    """The code the edge memory assumes above the top edge and below the bottom one where it has seen nothing
    (the commonest top-row and bottom-row codes of the training data, calibration.edge_fill_codes: sky above,
    ground below); -1 = none, the edge row is repeated there."""
    key_field: tuple[float, ...] = ()
    """Motion of the movement keys W, A, S, D at every token position, flattened [4, 2, grid_h, grid_w] (tokens
    per step, x right and y down), calibrated by motion.fit_key_field; motion_coef's columns for
    those keys are then 0. Empty = the keys move the picture by motion_coef's shift and zoom."""

    def __post_init__(self) -> None:
        self.edge_fill = tuple(int(x) for x in self.edge_fill)  # type: ignore[assignment]
        if len(self.edge_fill) != 2 or not all(-1 <= x < self.codebook_size for x in self.edge_fill):
            raise ValueError(f"edge_fill must be two codes (or -1), got {self.edge_fill}")
        if self.kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {self.kernel_size}")
        if self.num_layers < 1:
            raise ValueError("num_layers must be >= 1")
        if self.attn_ctx > 0 and self.attn_dim % self.attn_heads:
            raise ValueError(f"attn_dim {self.attn_dim} must divide by attn_heads {self.attn_heads}")
        if self.action_dim != ENC_DIM:
            raise ValueError(f"action_dim must be {ENC_DIM} (actions.ENC_DIM), got {self.action_dim}")
        self.attn_pool = tuple(self.attn_pool)  # type: ignore[assignment]
        self.motion_coef = tuple(float(x) for x in self.motion_coef)
        self.jump_profile = tuple(float(x) for x in self.jump_profile)
        if len(self.motion_coef) != len(motion.MOTION_ROWS) * ENC_DIM:
            raise ValueError(f"motion_coef needs {len(motion.MOTION_ROWS) * ENC_DIM} values, "
                             f"got {len(self.motion_coef)}")
        self.key_field = tuple(float(x) for x in self.key_field)
        want = motion.MOVE_KEYS * 2 * self.grid_h * self.grid_w
        if len(self.key_field) not in (0, want):
            raise ValueError(f"key_field needs {want} values ([{motion.MOVE_KEYS}, 2, {self.grid_h}, "
                             f"{self.grid_w}]) or none, got {len(self.key_field)}")
        keys = np.asarray(self.motion_coef).reshape(len(motion.MOTION_ROWS), ENC_DIM)[:, motion.MOVE_SLICE]
        if self.key_field and np.any(keys != 0):
            raise ValueError("motion_coef's movement-key columns must be 0 when key_field carries their motion")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["attn_pool"] = list(self.attn_pool)
        d["motion_coef"] = list(self.motion_coef)
        d["jump_profile"] = list(self.jump_profile)
        d["key_field"] = list(self.key_field)
        d["edge_fill"] = list(self.edge_fill)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "WorldModelConfig":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown WorldModelConfig keys {sorted(unknown)}")
        kw = dict(d)
        kw.setdefault("copy_prior", 0.0)  # checkpoints from before the motion path had none
        kw.setdefault("entering_prior", 0.0)  # nor, before it, a prior where content enters
        kw.setdefault("edge_memory", 0)  # nor a memory beyond the top and bottom edges
        kw.setdefault("recycle", False)  # nor recycled the rows a walk pushes out
        kw.setdefault("texture_dim", 0)  # nor had a texture prior for the rows a walk repeats
        if "attn_pool" in kw:
            kw["attn_pool"] = tuple(kw["attn_pool"])
        return cls(**kw)

    @classmethod
    def from_arch(cls, arch: Any, *, codebook_size: int, code_dim: int, grid: tuple[int, int],
                  motion_coef: Any = None, jump_profile: Any = None, key_field: Any = None,
                  edge_fill: Any = None) -> "WorldModelConfig":
        """Architecture fields taken from any object that has them (e.g. train.py's TrainConfig), plus the
        calibrated motion (calibration.calibrate_motion)."""
        kw = {f.name: getattr(arch, f.name) for f in fields(ModelArchConfig)}
        for name, value in (("motion_coef", motion_coef), ("jump_profile", jump_profile), ("key_field", key_field)):
            if value is not None:
                kw[name] = tuple(float(x) for x in np.asarray(value).reshape(-1))  # flat, as saved
        if edge_fill is not None:
            kw["edge_fill"] = tuple(int(x) for x in edge_fill)
        return cls(**kw, codebook_size=int(codebook_size), code_dim=int(code_dim),
                   grid_h=int(grid[0]), grid_w=int(grid[1]))


def soft_clamp(x: torch.Tensor, bound: float) -> torch.Tensor:
    """bound * tanh(x / bound): identity near 0, never beyond +-bound, gradient never exactly zero."""
    return bound * torch.tanh(x / bound)


class ActionFiLM(nn.Module):
    """Per-layer gamma/beta from the action, with separate camera and movement pathways.

    Each pathway is its own MLP, so movement gradients do not compete with the (much stronger) camera
    gradients for the same weights (L16). Their contributions are summed, then clamped."""

    def __init__(self, channels: list[int], hidden: int, clamp: float) -> None:
        super().__init__()
        self.channels = list(channels)
        out = 2 * sum(self.channels)
        cam_in = CAMERA_SLICE.stop - CAMERA_SLICE.start
        move_in = KEYS_SLICE.stop - KEYS_SLICE.start
        self.camera = nn.Sequential(nn.Linear(cam_in, hidden), nn.SiLU(), nn.Linear(hidden, out))
        self.movement = nn.Sequential(nn.Linear(move_in, hidden), nn.SiLU(), nn.Linear(hidden, out))
        self.clamp = float(clamp)
        # Start as the identity modulation; the action must earn its influence, which keeps early training
        # stable, but the last layer is not zero so gradients reach the first layer from step one.
        for mlp in (self.camera, self.movement):
            nn.init.normal_(mlp[-1].weight, std=1e-3)
            nn.init.zeros_(mlp[-1].bias)

    def forward(self, action: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """action [..., 15] -> per layer (gamma, beta), each [..., C_l]."""
        raw = self.camera(action[..., CAMERA_SLICE]) + self.movement(action[..., KEYS_SLICE])
        raw = soft_clamp(raw, self.clamp)
        out = []
        i = 0
        for c in self.channels:
            out.append((raw[..., i:i + c], raw[..., i + c:i + 2 * c]))
            i += 2 * c
        return out


def apply_film(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """x [B, C, h, w] scaled by (1 + gamma) and shifted by beta, both [B, C]."""
    return x * (1.0 + gamma[:, :, None, None]) + beta[:, :, None, None]


class ConvGRUCell(nn.Module):
    """ConvGRU with fused z/r gates. The input part of all three gates is one conv (`x_proj`, which can be
    precomputed for a whole sequence), the hidden part of z and r one conv (`h_gates`), and the candidate's
    hidden part acts on r*h (`h_cand`). With `separable`, every kxk conv is depthwise kxk then 1x1."""

    def __init__(self, cin: int, hidden: int, k: int, separable: bool) -> None:
        super().__init__()
        self.hidden = hidden
        self.x_proj = self._conv(cin, 3 * hidden, k, separable, bias=True)
        self.h_gates = self._conv(hidden, 2 * hidden, k, separable, bias=False)
        self.h_cand = self._conv(hidden, hidden, k, separable, bias=False)
        # Bias the update gate towards keeping the state (z small) so the state starts as a slow memory.
        with torch.no_grad():
            last = self.x_proj[-1] if isinstance(self.x_proj, nn.Sequential) else self.x_proj
            last.bias[:hidden].fill_(-1.0)

    @staticmethod
    def _conv(cin: int, cout: int, k: int, separable: bool, bias: bool) -> nn.Module:
        if separable:
            return nn.Sequential(nn.Conv2d(cin, cin, k, padding=k // 2, groups=cin, bias=False),
                                 nn.Conv2d(cin, cout, 1, bias=bias))
        return nn.Conv2d(cin, cout, k, padding=k // 2, bias=bias)

    def forward(self, xp: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """xp = x_proj(input) [B, 3H, h, w], h [B, H, h, w] -> new h. |h| <= 1 if it was before."""
        xz, xr, xc = xp.split(self.hidden, dim=1)
        hz, hr = self.h_gates(h).split(self.hidden, dim=1)
        z = torch.sigmoid(xz + hz)
        r = torch.sigmoid(xr + hr)
        c = torch.tanh(xc + self.h_cand(r * h))
        # The state keeps its own dtype (fp32) under autocast, so long unrolls do not accumulate bf16 error.
        return torch.lerp(h, c.to(h.dtype), z.to(h.dtype))


class TemporalAttention(nn.Module):
    """Causal attention from every position of the current top hidden state to the pooled hidden states of
    the last `ctx` steps (current included). The memory is a fixed-size FIFO carried in the state, so cost
    and memory are constant per step. Position in time enters only as a learned per-head bias on the
    attention logits (relative to the current step), never added to the values (L17)."""

    def __init__(self, hidden: int, dim: int, heads: int, ctx: int, pool: tuple[int, int]) -> None:
        super().__init__()
        self.ctx, self.heads, self.dim, self.pool = ctx, heads, dim, tuple(pool)
        self.norm = nn.GroupNorm(1, hidden)
        self.q = nn.Conv2d(hidden, dim, 1)
        self.kv = nn.Linear(hidden, 2 * dim)
        self.out = nn.Conv2d(dim, hidden, 1)
        # Near-zero output: the attention starts close to the identity and is learned in as it becomes
        # useful; not exactly zero, so its query/key/value weights get gradients from the first step.
        nn.init.normal_(self.out.weight, std=1e-3)
        nn.init.zeros_(self.out.bias)
        self.age_bias = nn.Parameter(torch.zeros(heads, ctx))

    @property
    def tokens(self) -> int:
        return self.pool[0] * self.pool[1]

    def forward(self, h: torch.Tensor, mem_kv: torch.Tensor, mem_valid: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """h [B, H, gh, gw]; mem_kv [B, ctx, P, 2*dim]; mem_valid [B, ctx] (1 = filled).
        Returns (h + attention, new mem_kv, new mem_valid)."""
        b, _, gh, gw = h.shape
        hn = self.norm(h)
        pooled = F.adaptive_avg_pool2d(hn, self.pool).flatten(2).transpose(1, 2)  # [B, P, H]
        cur = self.kv(pooled)  # [B, P, 2*dim]
        mem_kv = torch.cat([mem_kv[:, 1:], cur[:, None].to(mem_kv.dtype)], dim=1)  # [B, ctx, P, 2*dim]
        mem_valid = torch.cat([mem_valid[:, 1:], torch.ones_like(mem_valid[:, :1])], dim=1)
        dh = self.dim // self.heads
        p = self.tokens
        k, v = mem_kv.to(h.dtype).split(self.dim, dim=-1)
        k = k.reshape(b, self.ctx * p, self.heads, dh).transpose(1, 2)  # [B, heads, ctx*P, dh]
        v = v.reshape(b, self.ctx * p, self.heads, dh).transpose(1, 2)  # [B, heads, ctx*P, dh]
        q = self.q(hn).reshape(b, self.heads, dh, gh * gw).transpose(2, 3)  # [B, heads, N, dh]
        # Oldest slot first: slot i has age ctx-1-i. Empty slots get -inf (the current slot is always full).
        bias = self.age_bias.flip(-1).repeat_interleave(p, dim=-1)  # [heads, ctx*P]
        invalid = (mem_valid <= 0).repeat_interleave(p, dim=-1)  # [B, ctx*P]
        bias = bias[None].to(q.dtype).masked_fill(invalid[:, None], float("-inf"))  # [B, heads, ctx*P]
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=bias[:, :, None, :])  # [B, heads, N, dh]
        att = att.transpose(2, 3).reshape(b, self.dim, gh, gw)  # [B, dim, gh, gw]
        return h + self.out(att), mem_kv, mem_valid


class InverseDynamicsHead(nn.Module):
    """Predicts the aggregate action between two hidden states h[t-k] and h[t] (k in 1..max_span).

    A strided-conv compressor turns each hidden state into a vector (L17); a k embedding tells the MLP
    the span. Output: 15 logits laid out like the encoding (yaw 5 bins, pitch 3 bins, 7 keys)."""

    def __init__(self, hidden: int, width: int, max_span: int) -> None:
        super().__init__()
        c = max(16, hidden // 2)
        self.compress = nn.Sequential(
            nn.Conv2d(hidden, c, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(c, c, 3, stride=2, padding=1), nn.SiLU(),
            nn.AdaptiveAvgPool2d((2, 4)), nn.Flatten())
        feat = c * 8
        self.max_span = max_span
        self.span_embed = nn.Embedding(max_span + 1, width)
        self.mlp = nn.Sequential(nn.Linear(2 * feat, width), nn.SiLU(), nn.Linear(width, width),
                                 nn.SiLU(), nn.Linear(width, ENC_DIM))
        self.feat_dim = feat

    def features(self, h: torch.Tensor) -> torch.Tensor:
        """h [N, H, gh, gw] -> [N, feat]."""
        return self.compress(h)

    def forward(self, f_prev: torch.Tensor, f_cur: torch.Tensor, span: torch.Tensor) -> torch.Tensor:
        """Features [N, feat] of h[t-k] and h[t], span k [N] int64 -> logits [N, 15]."""
        if (span < 1).any() or (span > self.max_span).any():
            raise ValueError(f"IDM span must lie in 1..{self.max_span}")
        x = self.mlp[0](torch.cat([f_prev, f_cur], dim=-1)) + self.span_embed(span)
        for layer in self.mlp[1:]:
            x = layer(x)
        return x


class WorldModel(nn.Module):
    """Token embedding -> [FiLM(action) on the input -> ConvGRU] x L (residual every 2) -> optional temporal
    attention -> factorised head over the codebook. See the module docstring for the API."""

    def __init__(self, cfg: WorldModelConfig, codebook: torch.Tensor | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        k, e, hd = cfg.codebook_size, cfg.embed_dim, cfg.hidden_dim
        self.embed = nn.Embedding(k, e)
        ins = [e] + [hd] * (cfg.num_layers - 1)
        self.film = ActionFiLM(ins, cfg.film_hidden, cfg.film_clamp)
        self.in_norms = nn.ModuleList([nn.GroupNorm(1, c, affine=False) for c in ins])
        self.cells = nn.ModuleList([ConvGRUCell(c, hd, cfg.kernel_size, cfg.separable) for c in ins])
        # Residual from each pair's input to its output; the first pair's input may be narrower.
        self.skip_proj = nn.Conv2d(e, hd, 1, bias=False) if e != hd and cfg.num_layers >= 2 else None
        self.attn = (TemporalAttention(hd, cfg.attn_dim, cfg.attn_heads, cfg.attn_ctx, cfg.attn_pool)
                     if cfg.attn_ctx > 0 else None)
        if cfg.head_dim > 0:
            self.head_proj = nn.Conv2d(hd, cfg.head_dim, 1)
            self.out_embed = nn.Parameter(torch.randn(k, cfg.head_dim) / math.sqrt(cfg.head_dim))
            self.out_bias = nn.Parameter(torch.zeros(k))
        else:
            self.head = nn.Conv2d(hd, k, 1)
        self.idm = InverseDynamicsHead(hd, cfg.idm_hidden, cfg.idm_max_span)
        self.motion = cfg.copy_prior > 0
        if self.motion:
            self.copy_logit = nn.Parameter(torch.tensor(float(cfg.copy_prior)))
            self.enter_logit = (nn.Parameter(torch.tensor(float(cfg.entering_prior))) if cfg.entering_prior > 0
                                else None)
            coef = torch.tensor(cfg.motion_coef, dtype=torch.float32).view(len(motion.MOTION_ROWS), ENC_DIM)
            # A buffer, so it moves with the model's device; its value is the config's (saved there).
            self.register_buffer("motion_coef", coef, persistent=False)
            self.register_buffer("jump_profile", torch.tensor(cfg.jump_profile, dtype=torch.float32),
                                 persistent=False)
            field = torch.tensor(cfg.key_field, dtype=torch.float32)
            if len(field):
                field = field.view(motion.MOVE_KEYS, 2, cfg.grid_h, cfg.grid_w)  # flat, as saved
            self.register_buffer("key_field", field, persistent=False)
        if codebook is not None and cfg.init_from_codebook:
            self.init_from_codebook(codebook)
        self.texture: TexturePrior | None = None
        if self.motion and cfg.texture_dim > 0:
            # Its own random stream: the rest of the model (and the run after it) initialises as without it.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                self.texture = TexturePrior(k, cfg.texture_dim, cfg.grid_h).requires_grad_(False)
        # Channels-last throughout: the token embedding already comes out that way, and torch's CPU
        # depthwise-conv backward is ~3x faster in it (5x5: 8 ms vs 25 ms at [8, 128, 18, 32]).
        self.to(memory_format=torch.channels_last)

    # ------------------------------------------------------------------ set-up

    @torch.no_grad()
    def init_from_codebook(self, codebook: torch.Tensor) -> None:
        """Copy the VQ-VAE codebook [K, D] into the token and output embeddings (projected to their width
        by a fixed orthogonal map when D differs), scaled to unit RMS, so similar codes start similar."""
        cb = codebook.detach().float().cpu()
        if cb.shape[0] != self.cfg.codebook_size:
            raise IncompatibleError(f"codebook has {cb.shape[0]} codes, model expects "
                                    f"{self.cfg.codebook_size}")
        cb = cb - cb.mean(0, keepdim=True)
        gen = torch.Generator().manual_seed(0)

        def fit(width: int) -> torch.Tensor:
            x = cb
            if x.shape[1] != width:
                proj = torch.linalg.qr(torch.randn(max(x.shape[1], width), max(x.shape[1], width),
                                                   generator=gen))[0][:x.shape[1], :width]
                x = x @ proj  # [K, D] @ [D, width] -> [K, width]
            return x / x.pow(2).mean().sqrt().clamp_min(1e-8)

        self.embed.weight.copy_(fit(self.cfg.embed_dim))
        if self.cfg.head_dim > 0:
            self.out_embed.copy_(fit(self.cfg.head_dim) / math.sqrt(self.cfg.head_dim))

    def init_state(self, batch_size: int, device: torch.device | str = "cpu",
                   dtype: torch.dtype = torch.float32) -> State:
        """A fresh recurrent state: zero hidden states and an empty attention memory."""
        c = self.cfg
        st: State = {f"h{i}": torch.zeros(batch_size, c.grid_h, c.grid_w, c.hidden_dim, device=device,
                                          dtype=dtype).permute(0, 3, 1, 2)  # [B, H, gh, gw] channels-last
                     for i in range(c.num_layers)}
        if self.attn is not None:
            st["mem_kv"] = torch.zeros(batch_size, c.attn_ctx, self.attn.tokens, 2 * c.attn_dim,
                                       device=device, dtype=dtype)
            st["mem_valid"] = torch.zeros(batch_size, c.attn_ctx, device=device, dtype=dtype)
        if self.motion:
            # Motion not yet applied, in tokens (always fp32: it accumulates over the whole rollout).
            st["motion_res"] = torch.zeros(batch_size, 2, c.grid_h, c.grid_w, device=device)
            # Steps since the current jump began (-1: on the ground).
            st["jump_age"] = torch.full((batch_size,), -1.0, device=device)
            if c.edge_memory > 0:  # nothing seen there yet: the calibrated fill (or -1, none)
                fill = torch.tensor(c.edge_fill, device=device).repeat_interleave(c.edge_memory)  # [2R]
                st["edge_mem"] = fill[None, :, None].expand(batch_size, -1, c.grid_w).clone()  # [B, 2R, gw]
        return st

    @staticmethod
    def detach_state(state: State) -> State:
        return {k: v.detach() for k, v in state.items()}

    def top_hidden(self, state: State) -> torch.Tensor:
        """The last GRU layer's hidden state [B, H, gh, gw] (what the IDM reads)."""
        return state[f"h{self.cfg.num_layers - 1}"]

    # ------------------------------------------------------------------ computation

    def check_grid(self, tokens: torch.Tensor) -> None:
        c = self.cfg
        if tokens.shape[-2:] != (c.grid_h, c.grid_w):
            raise ValueError(f"token grid {tuple(tokens.shape[-2:])} != model grid ({c.grid_h}, {c.grid_w})")

    def embed_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [..., gh, gw] int64 -> [..., E, gh, gw]."""
        self.check_grid(tokens)
        x = self.embed(tokens)  # [..., gh, gw, E]
        return x.movedim(-1, -3)  # [..., E, gh, gw]

    def film_params(self, action: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """action [..., 15] -> per layer (gamma, beta) [..., C_l] (for diagnostics as well)."""
        return self.film(action)

    def _layer0_proj(self, x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        return self.cells[0].x_proj(apply_film(self.in_norms[0](x), gamma, beta))

    def _core(self, xp0: torch.Tensor, x0: torch.Tensor, film: list[tuple[torch.Tensor, torch.Tensor]],
              state: State) -> tuple[torch.Tensor, State]:
        """One recurrent step given layer 0's precomputed input projection. Returns (logits, state)."""
        new: State = {}
        inp = x0
        pair_in = x0 if self.skip_proj is None else self.skip_proj(x0)
        out = x0
        for i, cell in enumerate(self.cells):
            xp = xp0 if i == 0 else cell.x_proj(apply_film(self.in_norms[i](inp), *film[i]))
            h = cell(xp, state[f"h{i}"])
            new[f"h{i}"] = h
            out = h
            if i % 2 == 1:
                out = h + pair_in
                pair_in = out
            inp = out
        feat = out
        if self.attn is not None:
            feat, new["mem_kv"], new["mem_valid"] = self.attn(feat, state["mem_kv"], state["mem_valid"])
        return self.head_logits(feat), new

    def head_logits(self, feat: torch.Tensor) -> torch.Tensor:
        """feat [B, H, gh, gw] -> logits [B, K, gh, gw]."""
        if self.cfg.head_dim <= 0:
            return self.head(feat)
        p = self.head_proj(feat)  # [B, D, gh, gw]
        b, d, gh, gw = p.shape
        flat = p.movedim(1, -1).reshape(-1, d)  # [B*gh*gw, D]
        logits = torch.addmm(self.out_bias.to(p.dtype), flat, self.out_embed.to(p.dtype).t())  # [B*gh*gw, K]
        return logits.view(b, gh, gw, -1).movedim(-1, 1)  # [B, K, gh, gw], codes-last in memory

    def warp(self, tokens: torch.Tensor, action: torch.Tensor, state: State
             ) -> tuple[torch.Tensor, torch.Tensor | None, State]:
        """The motion path: frame t's tokens [B, gh, gw] and the recurrent state moved by action t's
        calibrated motion (whole tokens; the remainder carried in state["motion_res"]), and where the moved
        content came from inside the frame [B, gh, gw] (None without a motion path, where nothing moves)."""
        self.check_grid(tokens)
        if not self.motion:
            return tokens, None, state
        disp = motion.displacement(self.motion_coef, action.float(), tokens.shape[-2:],
                                   self.key_field)  # [B, 2, gh, gw]
        jump_age = state["jump_age"]
        if len(self.jump_profile):
            dy, jump_age = motion.jump_step(self.jump_profile, action[:, motion.JUMP_COLUMN] >= 0.5, jump_age)
            disp = disp + torch.stack([torch.zeros_like(dy), dy], 1)[:, :, None, None]  # [B, 2, 1, 1]
        src, inside, res = motion.warp_sources(state["motion_res"], disp)
        if self.cfg.recycle:
            src, inside = motion.recycle_sources(src, inside)
        new = {k: (motion.gather_map(v, src) if k.startswith("h") else v) for k, v in state.items()}
        new["motion_res"], new["jump_age"] = res, jump_age
        if self.texture is not None:
            new["repeated"] = motion.vertical_repeats(src, inside)
        warped = motion.gather_tokens(tokens, src)
        if "edge_mem" in state:
            moved = (state["motion_res"] + disp - res).round().long()  # [B, 2, gh, gw] whole tokens
            codes, known, new["edge_mem"] = motion.edge_step(state["edge_mem"], tokens, moved, self.cfg.edge_fill)
            warped = torch.where(known, codes, warped)
        return warped, inside, new

    def repeated(self, state: State) -> torch.Tensor | None:
        """Where the last step's warp read a source of the column twice [B, gh, gw] (the positions a rollout
        draws from the texture prior, texture.fill), or None without a texture prior."""
        return state.get("repeated") if self.texture is not None else None

    def pending_motion(self, state: State) -> torch.Tensor | None:
        """The motion the token warp has not applied yet [B, 2, gh, gw] (tokens; motion.subtoken_shift draws
        the frame there), or None without a motion path."""
        return state["motion_res"] if self.motion else None

    def add_copy_prior(self, logits: torch.Tensor, warped: torch.Tensor, inside: torch.Tensor | None
                       ) -> torch.Tensor:
        """logits [B, K, gh, gw] + copy_logit on each position's warped previous code where it is inside,
        and enter_logit (unless entering_prior is 0) where content enters."""
        if inside is None:
            return logits
        moved = inside[:, None].to(logits.dtype)  # [B, 1, gh, gw]
        bump = self.copy_logit.to(logits.dtype) * moved
        if self.enter_logit is not None:
            bump = bump + self.enter_logit.to(logits.dtype) * (1 - moved)
        return logits.scatter_add(1, warped[:, None], bump)

    def step(self, tokens: torch.Tensor, action: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """tokens [B, gh, gw] int64 (frame t), action [B, 15] (action t) -> (logits [B, K, gh, gw] for
        frame t+1, new state)."""
        warped, inside, state = self.warp(tokens, action, state)
        x = self.embed_tokens(warped)
        film = self.film_params(action)
        logits, new = self._core(self._layer0_proj(x, *film[0]), x, film, state)
        for k in ("motion_res", "jump_age", "edge_mem", "repeated"):  # the warp's state, already moved on
            if k in state:
                new[k] = state[k]
        return self.add_copy_prior(logits, warped, inside), new

    def forward_sequence(self, tokens: torch.Tensor, actions: torch.Tensor, state: State | None = None
                         ) -> tuple[torch.Tensor, State]:
        """Teacher forcing: tokens [B, T, gh, gw] (frames 0..T-1), actions [B, T, 15] -> (logits
        [B, T, K, gh, gw], logits[:, t] predicting frame t+1; final state). Equal to unrolling step();
        the embedding, FiLM and layer 0's input convolution run once for all T (L1)."""
        b, t = tokens.shape[:2]
        if actions.shape[:2] != (b, t):
            raise ValueError(f"actions {tuple(actions.shape)} do not match tokens {tuple(tokens.shape)}")
        if state is None:
            state = self.init_state(b, tokens.device)
        if self.motion:  # the warp depends only on the actions: the state's warp is replayed in the loop
            return self._unrolled(tokens, actions, state)
        x = self.embed_tokens(tokens.flatten(0, 1))  # [B*T, E, gh, gw]
        film = self.film_params(actions.flatten(0, 1))  # per layer ([B*T, C], [B*T, C])
        xp0 = self._layer0_proj(x, *film[0])  # [B*T, 3H, gh, gw]
        x = x.unflatten(0, (b, t))  # [B, T, E, gh, gw]
        xp0 = xp0.unflatten(0, (b, t))  # [B, T, 3H, gh, gw]
        film_bt = [(g.unflatten(0, (b, t)), be.unflatten(0, (b, t))) for g, be in film]  # [B, T, C]
        outs = []
        for i in range(t):
            logits, state = self._core(xp0[:, i], x[:, i], [(g[:, i], be[:, i]) for g, be in film_bt], state)
            outs.append(logits)
        return torch.stack(outs, dim=1), state

    def _unrolled(self, tokens: torch.Tensor, actions: torch.Tensor, state: State
                  ) -> tuple[torch.Tensor, State]:
        outs = []
        for i in range(tokens.shape[1]):
            logits, state = self.step(tokens[:, i], actions[:, i], state)
            outs.append(logits)
        return torch.stack(outs, dim=1), state

    def forward(self, tokens: torch.Tensor, action: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        return self.step(tokens, action, state)


def count_step_flops(model: WorldModel, batch_size: int = 1) -> int:
    """FLOPs of one model.step (inference, no IDM) counted by torch's FlopCounterMode (2 per MAC)."""
    from torch.utils.flop_counter import FlopCounterMode

    device = next(model.parameters()).device
    tokens = torch.zeros(batch_size, model.cfg.grid_h, model.cfg.grid_w, dtype=torch.long, device=device)
    action = torch.zeros(batch_size, ENC_DIM, device=device)
    state = model.init_state(batch_size, device)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model.step(tokens, action, state)
    return int(counter.get_total_flops())


def analytic_step_flops(cfg: WorldModelConfig) -> int:
    """FLOPs (2 per MAC) of one step per frame from the layer shapes: convolutions, head and attention.
    Cross-checks count_step_flops, which does not see depthwise convs on every torch build."""
    n = cfg.grid_h * cfg.grid_w
    k2 = cfg.kernel_size ** 2
    hd = cfg.hidden_dim
    macs = 0

    def conv(cin: int, cout: int) -> int:
        return (k2 * cin + cin * cout) if cfg.separable else k2 * cin * cout

    ins = [cfg.embed_dim] + [hd] * (cfg.num_layers - 1)
    for c in ins:
        macs += conv(c, 3 * hd) + conv(hd, 2 * hd) + conv(hd, hd)
    if cfg.embed_dim != hd and cfg.num_layers >= 2:
        macs += cfg.embed_dim * hd
    if cfg.attn_ctx > 0:
        macs += 2 * hd * cfg.attn_dim + 2 * cfg.attn_ctx * cfg.attn_pool[0] * cfg.attn_pool[1] * cfg.attn_dim
    macs += (hd * cfg.head_dim + cfg.head_dim * cfg.codebook_size) if cfg.head_dim > 0 else hd * cfg.codebook_size
    return 2 * macs * n


def param_groups(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """Parameters split into 'film' (action pathway), 'dynamics' (GRU cells) and 'other', by name."""
    groups: dict[str, list[nn.Parameter]] = {"film": [], "dynamics": [], "other": []}
    for name, p in model.named_parameters():
        key = "film" if ".film." in f".{name}" or name.startswith("film.") else (
            "dynamics" if name.startswith("cells.") else "other")
        groups[key].append(p)
    return groups
