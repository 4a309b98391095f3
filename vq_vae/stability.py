"""How predictable a tokenizer's codes are: idempotence, patch stability, codebook separation, usage.

A world model is trained to predict code indices, so the same picture content must map to the same code.
These metrics measure that on held-out video (definitions in vq_vae/README.md):

- idempotence: fraction of token positions with encode(decode(tokens)) == tokens;
- patch stability: between consecutive frames, of the token positions whose pixel patch changed by at
  most 2 grey levels (max abs over the patch's pixels and channels, uint8 units), the fraction that keep
  their code; the same for patches that changed by 3-8 grey levels;
- codebook separation: median distance from each code to its nearest other code / median code norm
  (0 when codes are duplicated);
- perplexity and usage of the code histogram;
- shift following: how far the reconstruction's content moves when the picture moves by less than a
  token (a tokenizer that draws content only where its token grid puts it turns a 1-px move into none and
  a 3-px move into a whole 4-px token).

`code_metrics(tokenizer, clips)` is the one entry point (tokenizer + frames in, dict of floats out); it
only needs `encode`, `decode_code`, `codebook`, `codebook_size` and `grid` from the tokenizer, so any
object with that interface (e.g. a test double) can be measured.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch

from vq_vae.model import VQVAE

STABLE_MAX = 2
"""A patch that changed by at most this many grey levels counts as unchanged."""
SMALL_CHANGE = (3, 8)
"""Inclusive range of grey-level changes that counts as a small change."""
FOLLOW_SHIFTS = (1, 2, 3)
"""Sub-token moves (px) at which shift following is measured."""
FOLLOW_FRAMES = 32
"""code_metrics measures shift following on at most this many frames (the first of each clip, then more)."""


def _as_clips(clips: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    """One uint8 [T, H, W, 3] clip or several -> list of clips (each [T, H, W, 3])."""
    if isinstance(clips, np.ndarray) and clips.ndim == 4:
        clips = [clips]
    out = [np.asarray(c) for c in clips]
    for c in out:
        if c.ndim != 4 or c.shape[-1] != 3 or c.dtype != np.uint8:
            raise ValueError(f"clips must be uint8 [T, H, W, 3], got {c.dtype} {tuple(c.shape)}")
    return out


@torch.no_grad()
def encode_frames(tokenizer: Any, frames: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """uint8 [N, H, W, 3] -> int64 tokens [N, h, w] (numpy), in batches."""
    out = [tokenizer.encode(frames[i:i + batch_size]).cpu().numpy() for i in range(0, len(frames), batch_size)]
    return np.concatenate(out).astype(np.int64)


@torch.no_grad()
def idempotence(tokenizer: Any, tokens: np.ndarray, batch_size: int = 64) -> float:
    """Fraction of positions where encode(decode_code(tokens)) == tokens. tokens: int [N, h, w]."""
    same = total = 0
    for i in range(0, len(tokens), batch_size):
        t = torch.as_tensor(tokens[i:i + batch_size], dtype=torch.int64)
        again = tokenizer.encode(tokenizer.decode_code(t)).cpu()  # decoded floats [B, 3, H, W] in [0, 1]
        same += int((again == t).sum())
        total += t.numel()
    return same / max(total, 1)


def patch_change(frames: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Max abs difference (grey levels) per token patch between consecutive frames.
    frames uint8 [T, H, W, 3] -> int [T-1, h, w]."""
    t, h, w, _ = frames.shape
    gh, gw = grid
    ph, pw = h // gh, w // gw
    diff = np.abs(frames[1:].astype(np.int16) - frames[:-1].astype(np.int16))  # [T-1, H, W, 3]
    # [T-1, H, W, 3] -> [T-1, gh, ph, gw, pw, 3] -> max over the patch and channels
    return diff.reshape(t - 1, gh, ph, gw, pw, 3).max(axis=(2, 4, 5))


def patch_stability(clip_tokens: Sequence[np.ndarray], clips: Sequence[np.ndarray],
                    grid: tuple[int, int]) -> dict[str, float]:
    """Of the token positions whose patch changed by <= STABLE_MAX grey levels between consecutive frames,
    the fraction keeping their code (`stability_le2`), and the same for SMALL_CHANGE (`stability_3to8`);
    NaN when no position falls in a bin. Also the position counts per bin."""
    kept = {"le2": 0, "3to8": 0}
    count = {"le2": 0, "3to8": 0}
    lo, hi = SMALL_CHANGE
    for toks, frames in zip(clip_tokens, clips):
        if len(frames) < 2:
            continue
        change = patch_change(frames, grid)  # [T-1, h, w]
        same = toks[1:] == toks[:-1]  # [T-1, h, w]
        for name, mask in (("le2", change <= STABLE_MAX), ("3to8", (change >= lo) & (change <= hi))):
            kept[name] += int(same[mask].sum())
            count[name] += int(mask.sum())
    out: dict[str, float] = {}
    for name in ("le2", "3to8"):
        out[f"stability_{name}"] = kept[name] / count[name] if count[name] else math.nan
        out[f"stability_{name}_positions"] = float(count[name])
    return out


def codebook_separation(codebook: torch.Tensor | np.ndarray) -> dict[str, float]:
    """Median nearest-neighbour distance between codes, median code norm and their ratio.
    codebook [K, D]; duplicated codes have distance 0."""
    cb = torch.as_tensor(np.asarray(codebook.detach().cpu() if isinstance(codebook, torch.Tensor) else codebook),
                         dtype=torch.float64)
    if cb.shape[0] < 2:
        raise ValueError("separation needs at least two codes")
    dist = torch.cdist(cb, cb)  # [K, K]
    dist.fill_diagonal_(math.inf)
    nn_dist = float(dist.min(1).values.median())
    norm = float(cb.norm(dim=1).median())
    return {"codebook_nn_distance": nn_dist, "codebook_median_norm": norm,
            "separation": nn_dist / norm if norm > 0 else math.nan}


def codebook_usage(tokens: np.ndarray, codebook_size: int) -> dict[str, float]:
    """Unique codes, their fraction of the codebook, and the perplexity of the code histogram."""
    counts = np.bincount(np.asarray(tokens).reshape(-1), minlength=codebook_size).astype(np.float64)  # [K]
    p = counts / max(counts.sum(), 1.0)
    nz = p[p > 0]
    return {"unique_codes": float((counts > 0).sum()), "codebook_size": float(codebook_size),
            "usage_fraction": float((counts > 0).sum() / codebook_size),
            "perplexity": float(np.exp(-(nz * np.log(nz)).sum()))}


def shift_px(frames: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """uint8 [N, H, W, 3] with their content moved dx px right and dy px down (whole pixels, the border
    repeated into the uncovered strip)."""
    n, h, w, _ = frames.shape
    pad = np.pad(frames, ((0, 0), (max(dy, 0), max(-dy, 0)), (max(dx, 0), max(-dx, 0)), (0, 0)), mode="edge")
    y0, x0 = max(-dy, 0), max(-dx, 0)
    return pad[:, y0:y0 + h, x0:x0 + w]  # [N, H, W, 3]


@torch.no_grad()
def reconstruct(tokenizer: Any, frames: np.ndarray, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """uint8 frames [N, H, W, 3] -> (their encode/decode round trip, uint8 [N, H, W, 3], tokens int64 [N, h, w])."""
    recs, toks = [], []
    for i in range(0, len(frames), batch_size):
        idx = tokenizer.encode(frames[i:i + batch_size])
        recs.append(VQVAE.to_uint8(tokenizer.decode_code(idx)))
        toks.append(idx.cpu().numpy())
    return np.concatenate(recs), np.concatenate(toks)


def shift_following(tokenizer: Any, frames: np.ndarray, shifts: Sequence[int] = FOLLOW_SHIFTS,
                    batch_size: int = 64, margin: int = 8) -> dict[str, float]:
    """For each s in `shifts` (px): how far the round trip of the frames moved s px sits, as a fraction of s
    -> {"follow_{s}px": ratio}, averaged over a move right and a move down. The position is the k (px, found
    to a fraction of a pixel by a parabola through the integer minimum) at which the input moved k px is
    closest (mean absolute error, `margin` px of border left out) to the round trip of the input moved s px.
    1 = the content moves as far as its input; a tokenizer that draws content only where its 4-px grid puts
    it scores 0 at 1 px and 1.33 at 3 px.

    Why against the input and not between the two round trips: a decoder's fixed-pattern artefacts stay put
    on the screen, and a phase correlation (or error) between two reconstructions is pulled to no motion by
    them: on the block world, the laptop tokenizer scored 0 at 1 px that way while its content moved 1 px."""
    h, w = frames.shape[1:3]
    inner = (slice(None), slice(margin, h - margin), slice(margin, w - margin))
    moved: dict[tuple[int, int], np.ndarray] = {}  # every shift s compares against the same moved inputs

    def moved_inner(axis: int, k: int) -> np.ndarray:
        if (axis, k) not in moved:
            moved[axis, k] = shift_px(frames, *((k, 0) if axis == 0 else (0, k))).astype(np.int16)[inner]
        return moved[axis, k]

    out = {}
    for s in shifts:
        ratios = []
        for axis in (0, 1):
            rec, _ = reconstruct(tokenizer, shift_px(frames, *((s, 0) if axis == 0 else (0, s))), batch_size)
            rec = rec.astype(np.int16)[inner]
            ks = np.arange(-1, s + 3)
            err = np.array([np.abs(rec - moved_inner(axis, k)).mean() for k in ks])
            i = int(np.clip(err.argmin(), 1, len(ks) - 2))
            curv = err[i - 1] - 2 * err[i] + err[i + 1]
            vertex = 0.5 * (err[i - 1] - err[i + 1]) / curv if curv > 0 else 0.0
            ratios.append((ks[i] + float(np.clip(vertex, -0.5, 0.5))) / s)
        out[f"follow_{s}px"] = float(np.mean(ratios))
    return out


def code_metrics(tokenizer: Any, clips: np.ndarray | Sequence[np.ndarray], batch_size: int = 64
                 ) -> dict[str, float]:
    """Every code-predictability metric of `tokenizer` on consecutive-frame clips (uint8 [T, H, W, 3] each,
    or one such array): idempotence, stability_le2, stability_3to8 (+ position counts), separation (+ its
    parts), perplexity, usage_fraction, unique_codes, codebook_size, follow_{1,2,3}px. Usage and idempotence
    use every frame; shift following the first frame of each clip, then the following ones, up to
    FOLLOW_FRAMES."""
    clips = _as_clips(clips)
    grid = tuple(int(g) for g in tokenizer.grid)
    clip_tokens = [encode_frames(tokenizer, c, batch_size) for c in clips]
    all_tokens = np.concatenate(clip_tokens)  # [N, h, w]
    return {"idempotence": idempotence(tokenizer, all_tokens, batch_size),
            **patch_stability(clip_tokens, clips, grid),
            **codebook_separation(tokenizer.codebook),
            **codebook_usage(all_tokens, int(tokenizer.codebook_size)),
            **shift_following(tokenizer, _spread(clips, FOLLOW_FRAMES), batch_size=batch_size)}


def _spread(clips: list[np.ndarray], n: int) -> np.ndarray:
    """Up to n frames taken across clips: frame 0 of every clip, then frame 1 of every clip, ..."""
    longest = max(len(c) for c in clips)
    picked = [c[t] for t in range(longest) for c in clips if t < len(c)][:n]
    return np.stack(picked)  # [n, H, W, 3]
