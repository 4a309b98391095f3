"""World-model losses and prediction statistics: pure functions, no state, no randomness of their own.

Every loss returns per-sample values (a [B] tensor, suffix `_per_sample`; the IDM's per item) so the
training step (objective.py) can average over exactly the samples it owns (DDP ranks each own a slice of
the global batch and the mean of their means is the global mean) and log each term. Random inputs (Gumbel
noise: objective.gumbel_noise) are passed in, never drawn here, so the same batch always gives the same loss.

Layout: logits are [B, K, h, w] (the model's head returns that as a view of a codes-last [B, h, w, K]
tensor); the heavy functions work on the codes-last view (`movedim(1, -1)`, free for such logits) so
softmax, cross-entropy and the codebook matmul run over contiguous rows without layout copies.

Lessons kept here (ids of LESSONS.md):
- the semantic and LPIPS losses go through a Gumbel-softmax *soft* embedding (L7): probabilities over
  the codebook times the codebook, decoded by the VQ-VAE decoder, so gradients reach the logits (an argmax
  or a `no_grad` block silently disconnects LPIPS: L6);
- the IDM is cross-entropy over the yaw/pitch bins plus BCE over the keys (L15);
- the action-ranking hinge says the true action must explain the target better than another one (L10).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from actions import KEYS_SLICE, PITCH_SLICE, YAW_SLICE

# ----------------------------------------------------------------------------- token cross-entropy

def _codes_last(x: torch.Tensor) -> torch.Tensor:
    """[B, K, h, w] -> [B, h, w, K] (a free view when x is a codes-last tensor seen as [B, K, h, w])."""
    return x.movedim(1, -1)


def token_ce_per_sample(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
                        ) -> torch.Tensor:
    """logits [B, K, h, w], target [B, h, w] int64 -> CE per sample [B] (fp32): the mean over positions, or
    the `weight` [B, h, w]-weighted mean."""
    b, k = logits.shape[:2]
    flat = _codes_last(logits).float().reshape(-1, k)  # [B*h*w, K]
    ce = F.cross_entropy(flat, target.reshape(-1), reduction="none").view(b, -1)  # [B, h*w]
    if weight is None:
        return ce.mean(1)
    w = weight.reshape(b, -1).float()  # [B, h*w]
    return (ce * w).sum(1) / w.sum(1).clamp_min(1e-8)


def change_weight(target: torch.Tensor, previous: torch.Tensor, extra: float) -> torch.Tensor:
    """Per-position CE weights [B, h, w]: 1 + extra where the target code differs from the previous frame's.
    Most positions of a frame are copies of the last one; without this, their easy loss swamps the few
    positions where the action changed the picture, which are what the model must learn."""
    return 1.0 + extra * (target != previous).float()


def near_duplicate_targets(target: torch.Tensor, warped: torch.Tensor, inside: torch.Tensor | None,
                           codebook: torch.Tensor, radius: float) -> torch.Tensor:
    """Token targets [B, h, w]: the warped previous code where it lies inside the frame and within `radius`
    (codebook distance) of the true code, else the true code. The tokenizer re-codes still content into
    near-duplicate codes (re-encoding a decoded frame keeps 18-23% of codes), so the true code there is noise
    the network would learn to imitate, and a copy draws the same picture."""
    if inside is None:
        return target
    near = (codebook[target] - codebook[warped]).norm(dim=-1) <= radius  # [B, h, w]
    return torch.where(inside & near, warped, target)


# ----------------------------------------------------------------------------- Gumbel soft embeddings

def gumbel_softmax_probs(logits: torch.Tensor, tau: float, noise: torch.Tensor | None,
                         hard: bool = False) -> torch.Tensor:
    """Softmax((logits + noise) / tau) over the codes ([B, K, h, w], noise the same shape, best as a
    codes-last view); with `hard`, the straight-through one-hot (forward one-hot, backward soft).
    noise None = plain tempered softmax. Returns a [B, K, h, w] view of a codes-last tensor."""
    if tau <= 0:
        raise ValueError(f"Gumbel tau must be > 0, got {tau}")
    x = _codes_last(logits).float()  # [B, h, w, K]
    x = (x + _codes_last(noise)).mul_(1.0 / tau) if noise is not None else x * (1.0 / tau)
    soft = F.softmax(x, dim=-1)
    if hard:
        one_hot = F.one_hot(soft.argmax(-1), soft.shape[-1]).to(soft.dtype)  # [B, h, w, K]
        soft = one_hot - soft.detach() + soft
    return soft.movedim(-1, 1)


def soft_embeddings(probs: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """probs [B, K, h, w] x codebook [K, D] -> expected code vectors [B, D, h, w] (differentiable; a view of
    a codes-last [B, h, w, D] tensor)."""
    return torch.matmul(_codes_last(probs), codebook.to(probs.dtype)).movedim(-1, 1)


def semantic_per_sample(z_soft: torch.Tensor, codebook: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Squared distance between soft embeddings [B, D, h, w] and the target codes' vectors, divided by the
    codebook's mean squared spread so the scale does not depend on the tokenizer -> [B]."""
    cb = codebook.detach().float()
    tgt = F.embedding(target, cb)  # [B, h, w, D]
    spread = (cb - cb.mean(0)).pow(2).sum(1).mean().clamp_min(1e-8)
    return (_codes_last(z_soft).float() - tgt).pow(2).sum(-1).flatten(1).mean(1) / spread


# ----------------------------------------------------------------------------- LPIPS on decoded frames

def lpips_per_sample(z_soft: torch.Tensor, target_rgb: torch.Tensor,
                     decode: Callable[[torch.Tensor], torch.Tensor],
                     lpips_net: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode soft embeddings z_soft [N, D, h, w] (VQVAE.decode_embeddings: [0, 1] frames) and compare to
    target_rgb [N, 3, H, W] in [0, 1] -> (LPIPS distances [N], predicted frames [N, 3, H, W]).
    Differentiable w.r.t. z_soft; never wrap this in no_grad (L6)."""
    pred = decode(z_soft)
    d = lpips_net(pred * 2.0 - 1.0, target_rgb.to(pred.dtype) * 2.0 - 1.0)
    return d.float(), pred


# ----------------------------------------------------------------------------- inverse dynamics

def idm_per_item(logits: torch.Tensor, target: torch.Tensor, key_weights: torch.Tensor | None = None
                 ) -> dict[str, torch.Tensor]:
    """IDM logits [N, 15] vs aggregate action targets [N, 15] (encoding layout; yaw/pitch parts are
    distributions: the fraction of the span's steps in each bin; keys: the fraction held).
    Returns per-item [N] terms: yaw CE, pitch CE (soft targets) and keys BCE (optionally weighted)."""
    logits = logits.float()
    target = target.float()
    yaw = -(target[:, YAW_SLICE] * F.log_softmax(logits[:, YAW_SLICE], dim=1)).sum(1)
    pitch = -(target[:, PITCH_SLICE] * F.log_softmax(logits[:, PITCH_SLICE], dim=1)).sum(1)
    bce = F.binary_cross_entropy_with_logits(logits[:, KEYS_SLICE], target[:, KEYS_SLICE], reduction="none")
    if key_weights is not None:
        bce = bce * key_weights.to(bce)
        keys = bce.sum(1) / key_weights.sum()
    else:
        keys = bce.mean(1)
    return {"idm_yaw": yaw, "idm_pitch": pitch, "idm_keys": keys}


def span_action_targets(actions: torch.Tensor, t: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """actions [B, T, 15], end indices t [B, M], spans k [B, M] -> mean of actions[t-k .. t-1] [B, M, 15]:
    the actions that took the world from frame t-k to frame t (what h[t-k] -> h[t] must explain)."""
    csum = torch.cat([torch.zeros_like(actions[:, :1]), actions.cumsum(1)], dim=1)  # [B, T+1, 15]
    hi = csum.gather(1, t[..., None].expand(-1, -1, actions.shape[-1]))
    lo = csum.gather(1, (t - k)[..., None].expand(-1, -1, actions.shape[-1]))
    return (hi - lo) / k[..., None].to(actions.dtype)


# ----------------------------------------------------------------------------- action ranking

def action_rank_per_sample(ce_true: torch.Tensor, ce_other: torch.Tensor, margin: float) -> torch.Tensor:
    """Hinge: the true action's CE on the target must be lower than another action's by `margin` -> [B]."""
    return F.relu(margin + ce_true - ce_other)


# ----------------------------------------------------------------------------- prediction statistics

@torch.no_grad()
def prediction_stats(logits: torch.Tensor) -> dict[str, float]:
    """Collapse/blur diagnostics of logits [B, K, h, w]: unique argmax codes per frame (mean), softmax
    entropy (nats), confidence (mean max probability) and its spread."""
    probs = F.softmax(logits.float(), dim=1)
    logp = torch.log(probs.clamp_min(1e-12))
    entropy = -(probs * logp).sum(1)  # [B, h, w]
    conf = probs.max(1).values  # [B, h, w]
    arg = probs.argmax(1).flatten(1)  # [B, h*w]
    unique = sum(int(torch.unique(row).numel()) for row in arg) / arg.shape[0]
    return {"unique_codes": float(unique), "entropy": float(entropy.mean()),
            "confidence": float(conf.mean()), "confidence_std": float(conf.std())}


@torch.no_grad()
def spatial_gradient(frames: torch.Tensor) -> float:
    """Mean absolute difference between neighbouring pixels (x plus y) of frames [N, 3, H, W] in [0, 1]:
    a sharpness proxy, 0 for a flat image, larger for crisp edges."""
    f = frames.float()
    dx = (f[..., :, 1:] - f[..., :, :-1]).abs().mean()
    dy = (f[..., 1:, :] - f[..., :-1, :]).abs().mean()
    return float(dx + dy)
