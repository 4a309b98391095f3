"""The texture prior: a small model of the token maps themselves, P(code | code above, code to the left, row),
fitted on the training shards before step 0, from which a rollout draws the positions a walk's warp repeats.

Why: walking forward moves the lower rows faster than the upper ones, so the whole-token warp reads some rows
twice. The copy prior then repeats their codes, greedy decoding keeps the repeats, and over a minute of play
the picture loses its codes (README, "Drawing what a walk repeats"), where the game shows new detail as the
ground comes closer. The network's own choice there is the likeliest code, a plain; independent draws from
its softmax give speckle. Drawn from this prior in raster order, each repeated position continues the texture
around it (grass next to grass, a dirt edge under grass), as a texture-synthesis step in token space.
The draw is weighed towards the code the warp put there (`Anchor`), so on a world the prior never saw the
texture stays the one on screen (README, "Anchoring the texture prior").
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn


class TexturePrior(nn.Module):
    """logits [N, K] of a position's code from the code above, the code to its left (K = none: the edge or a
    position not drawn yet) and its row."""

    def __init__(self, codebook_size: int, dim: int, rows: int) -> None:
        super().__init__()
        self.k = codebook_size
        self.up = nn.Embedding(codebook_size + 1, dim)
        self.left = nn.Embedding(codebook_size + 1, dim)
        self.row = nn.Embedding(rows, dim)
        self.mlp = nn.Sequential(nn.GELU(), nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, codebook_size))

    def forward(self, up: torch.Tensor, left: torch.Tensor, row: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.up(up) + self.left(left) + self.row(row))


def neighbours(tokens: torch.Tensor, none: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """tokens [B, h, w] -> (code above, code to the left, row), each [B, h, w]; `none` beyond the edges."""
    b, h, w = tokens.shape
    up = torch.cat([torch.full_like(tokens[:, :1], none), tokens[:, :-1]], 1)  # [B, h, w]
    left = torch.cat([torch.full_like(tokens[:, :, :1], none), tokens[:, :, :-1]], 2)
    row = torch.arange(h, device=tokens.device)[None, :, None].expand(b, h, w)
    return up, left, row


def fit(prior: TexturePrior, token_maps: np.ndarray, steps: int, batch_size: int = 4096, lr: float = 3e-3,
        seed: int = 0) -> dict[str, float]:
    """Fit `prior` on token maps [N, h, w] (the training shards' frames) by cross-entropy over all positions.
    Uses its own generator, so the run's global random stream (the network's initialisation, the batches) is
    the same with and without a prior. Returns the final loss and a uniform guess's, in nats a code."""
    dev = next(prior.parameters()).device
    maps = torch.as_tensor(np.asarray(token_maps, np.int64))
    if maps.dim() != 3 or not len(maps):
        raise ValueError(f"texture prior: token maps must be [N, h, w] with N >= 1, got {tuple(maps.shape)}")
    up, left, row = (t.reshape(-1).to(dev) for t in neighbours(maps, prior.k))  # [N*h*w] each
    target = maps.reshape(-1).to(dev)
    gen = torch.Generator().manual_seed(seed)
    prior.requires_grad_(True)
    opt = torch.optim.Adam(prior.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(1, steps), pct_start=0.1)
    loss = torch.tensor(float("nan"))
    prior.train()
    for _ in range(steps):
        i = torch.randint(0, len(target), (batch_size,), generator=gen).to(dev)
        loss = nn.functional.cross_entropy(prior(up[i], left[i], row[i]).float(), target[i])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    prior.zero_grad(set_to_none=True)  # no stale gradients for the trainer's clipping to count
    prior.eval().requires_grad_(False)
    return {"texture_nll": float(loss.detach()), "texture_uniform_nll": float(np.log(prior.k))}


class Anchor:
    """Keeps the prior's draw near the code the warp put there (the anchor): each code c is weighed by
    exp(-|e_c - e_a|^2 / (width * s)), with e the VQ-VAE's code vectors, a the anchor and s the median
    squared distance from a code to its nearest other code. The prior knows the training worlds' textures;
    on a world unlike them (the held-out seed's snow fields) its draw alone puts beige specks into snow, and
    the anchor keeps the drawn texture among codes that look like what was there."""

    def __init__(self, codebook: torch.Tensor, width: float) -> None:
        if not width > 0:
            raise ValueError(f"the fill anchor's width must be > 0, got {width}")
        self.codebook = codebook.detach().float()  # [K, D]
        self.scale = float(width) * nearest_sq_median(self.codebook)

    def log_weights(self, anchor: torch.Tensor) -> torch.Tensor:
        """anchor codes [n] -> log-weights [n, K] to add to the prior's logits."""
        return -torch.cdist(self.codebook[anchor], self.codebook).pow(2) / self.scale


def nearest_sq_median(codebook: torch.Tensor, chunk: int = 1024) -> float:
    """The median over codes [K, D] of the squared distance to the nearest other code (in chunks of rows,
    so a large codebook never needs a K x K matrix)."""
    k = codebook.shape[0]
    if k < 2:
        raise ValueError(f"a fill anchor needs at least 2 codes, got {k}")
    nearest = []
    for i in range(0, k, chunk):
        d2 = torch.cdist(codebook[i:i + chunk], codebook).pow(2)  # [c, K]
        rows = torch.arange(d2.shape[0], device=d2.device)
        d2[rows, rows + i] = float("inf")  # not the code itself
        nearest.append(d2.min(1).values)
    return max(float(torch.cat(nearest).median()), 1e-12)


@torch.no_grad()
def fill(prior: TexturePrior, tokens: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None,
         anchor: Anchor | None = None) -> torch.Tensor:
    """tokens [B, h, w] with the positions in mask [B, h, w] redrawn from the prior, in raster order: a
    position is drawn after the ones above and to its left, so each diagonal y + x = d is one batched draw.
    With `anchor`, each position's draw is weighed towards the code `tokens` holds there."""
    from rollout import sample_tokens  # here: rollout imports the model, which imports this module

    if not bool(mask.any()):
        return tokens
    out = tokens.clone()
    b, h, w = tokens.shape
    ys, xs = torch.meshgrid(torch.arange(h, device=tokens.device), torch.arange(w, device=tokens.device),
                            indexing="ij")
    diag = (ys + xs)[None].expand(b, h, w)
    for d in torch.unique(diag[mask]).tolist():
        bi, yi, xi = torch.nonzero(mask & (diag == d), as_tuple=True)
        none = torch.full_like(yi, prior.k)
        up = torch.where(yi > 0, out[bi, (yi - 1).clamp_min(0), xi], none)
        left = torch.where(xi > 0, out[bi, yi, (xi - 1).clamp_min(0)], none)
        logits = prior(up, left, yi).float()  # [n, K]
        if anchor is not None:
            logits = logits + anchor.log_weights(tokens[bi, yi, xi])
        out[bi, yi, xi] = sample_tokens(logits[:, :, None, None], "temperature", 1.0, generator=generator)[:, 0, 0]
    return out
