"""Procedural 16x16 block textures in Minecraft's style, with mip levels.

Textures are drawn once from a fixed random generator, so every world and every process renders the
same pixels. Each block has a top, side and bottom face. Mip levels (box-averaged 16->8->4->2->1 and
stored back at 16x16 by pixel repetition) keep distant faces from shimmering, as Minecraft's mipmapping
does.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from . import blocks as B

TEX = 16
MIP_LEVELS = 5
TOP, SIDE, BOTTOM = 0, 1, 2


def _rgb(c: tuple[int, int, int]) -> np.ndarray:
    return np.asarray(c, dtype=np.float32) / 255.0


def _shades(rng: np.random.Generator, levels: list[float], weights: list[float], blob: int = 1) -> np.ndarray:
    """A 16x16 map of brightness factors drawn from a small palette (Minecraft textures use few shades).
    blob > 1 draws the palette on a coarser grid for chunky patches."""
    n = TEX // blob
    idx = rng.choice(len(levels), size=(n, n), p=np.asarray(weights) / np.sum(weights))
    m = np.asarray(levels, dtype=np.float32)[idx]
    return m.repeat(blob, 0).repeat(blob, 1)


def _tex(base: tuple[int, int, int], shade: np.ndarray) -> np.ndarray:
    return np.clip(_rgb(base)[None, None, :] * shade[..., None], 0, 1)


def _speckle(rng: np.random.Generator, t: np.ndarray, colour: tuple[int, int, int], frac: float) -> np.ndarray:
    m = rng.random((TEX, TEX)) < frac
    t = t.copy()
    t[m] = _rgb(colour)
    return t


def _dirt(rng: np.random.Generator) -> np.ndarray:
    t = _tex((134, 96, 67), _shades(rng, [0.78, 0.9, 1.0, 1.1], [1, 3, 4, 2]))
    t = _speckle(rng, t, (95, 68, 46), 0.06)
    return _speckle(rng, t, (160, 120, 86), 0.04)


def _fringe(rng: np.random.Generator, under: np.ndarray, top: np.ndarray, depth: tuple[int, int]) -> np.ndarray:
    """Side texture: `top` pixels hanging over `under` with a ragged lower edge (grass/snow on dirt)."""
    t = under.copy()
    d = rng.integers(depth[0], depth[1] + 1, size=TEX)
    for x in range(TEX):
        t[: d[x], x] = top[: d[x], x]
    return t


def _rings(rng: np.random.Generator, wood: tuple[int, int, int], ring: tuple[int, int, int],
           bark: tuple[int, int, int]) -> np.ndarray:
    yy, xx = np.mgrid[0:TEX, 0:TEX]
    r = np.maximum(np.abs(xx - 7.5), np.abs(yy - 7.5))
    t = np.broadcast_to(_rgb(wood), (TEX, TEX, 3)).copy()
    t[(r > 1.5) & (r < 2.5)] = _rgb(ring)
    t[(r > 4.5) & (r < 5.5)] = _rgb(ring)
    t[r > 6.5] = _rgb(bark)
    return np.clip(t * _shades(rng, [0.93, 1.0, 1.05], [1, 3, 1])[..., None], 0, 1)


def _bark(rng: np.random.Generator, base: tuple[int, int, int], dark: tuple[int, int, int]) -> np.ndarray:
    t = _tex(base, _shades(rng, [0.9, 1.0, 1.1], [2, 3, 1]))
    cols = rng.choice(TEX, size=5, replace=False)
    for c in cols:
        rows = np.arange(rng.integers(0, 6), TEX - rng.integers(0, 6))
        t[rows, c] = _rgb(dark)
    return t


def _leaves(rng: np.random.Generator, base: tuple[int, int, int]) -> np.ndarray:
    t = _tex(base, _shades(rng, [0.62, 0.85, 1.0, 1.15], [2, 3, 3, 2]))
    holes = rng.random((TEX, TEX)) < 0.10
    t[holes] = t[holes] * 0.35
    return t


def _block_faces() -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(20240611)
    dirt = _dirt(rng)
    grass_top = _tex((106, 170, 64), _shades(rng, [0.78, 0.88, 1.0, 1.1], [2, 3, 4, 2]))
    grass_side = _fringe(rng, dirt, grass_top, (2, 5))
    stone = _tex((125, 125, 125), _shades(rng, [0.82, 0.92, 1.0, 1.08], [1, 3, 4, 2], blob=1))
    stone = _speckle(rng, stone, (100, 100, 100), 0.08)
    sand = _tex((219, 207, 160), _shades(rng, [0.94, 0.98, 1.0, 1.03], [1, 2, 3, 2]))
    sandstone_side = _tex((214, 201, 150), _shades(rng, [0.95, 1.0, 1.03], [1, 3, 1]))
    sandstone_side[3] *= 0.9
    sandstone_side[12:] *= 0.93
    sandstone_side[0] *= 1.04
    gravel = _tex((132, 124, 122), _shades(rng, [0.72, 0.85, 1.0, 1.18], [2, 3, 3, 2], blob=2))
    water = _tex((52, 92, 205), _shades(rng, [0.93, 1.0, 1.06], [1, 4, 1]))
    for r in (2, 7, 11):
        cs = rng.integers(0, TEX - 6)
        water[r, cs:cs + 6] = np.clip(water[r, cs:cs + 6] * 1.18, 0, 1)
    oak_side = _bark(rng, (109, 85, 50), (76, 59, 35))
    oak_top = _rings(rng, (176, 143, 88), (143, 113, 68), (104, 82, 48))
    oak_leaves = _leaves(rng, (62, 128, 38))
    snow = _tex((242, 250, 250), _shades(rng, [0.93, 0.97, 1.0], [1, 2, 4]))
    snowy_side = _fringe(rng, dirt, snow, (2, 4))
    cactus_side = _tex((84, 135, 42), _shades(rng, [0.92, 1.0, 1.05], [1, 3, 1]))
    for c in (1, 5, 10, 14):
        cactus_side[:, c] = _rgb((55, 92, 28))
    spines = rng.random((TEX, TEX)) < 0.05
    cactus_side[spines] = _rgb((200, 206, 160))
    cactus_top = _rings(rng, (102, 152, 58), (78, 124, 42), (62, 104, 32))
    spruce_side = _bark(rng, (70, 48, 26), (48, 32, 16))
    spruce_top = _rings(rng, (124, 92, 54), (98, 72, 40), (66, 46, 24))
    spruce_leaves = _leaves(rng, (52, 88, 56))
    ice = _tex((150, 188, 250), _shades(rng, [0.95, 1.0, 1.04], [1, 4, 1]))
    for k in range(-TEX, TEX, 6):
        for x in range(TEX):
            y = x + k
            if 0 <= y < TEX:
                ice[y, x] = np.clip(ice[y, x] * 1.12, 0, 1)
    return {
        B.GRASS: (grass_top, grass_side, dirt),
        B.DIRT: (dirt, dirt, dirt),
        B.STONE: (stone, stone, stone),
        B.SAND: (sand, sand, sand),
        B.WATER: (water, water, water),
        B.OAK_LOG: (oak_top, oak_side, oak_top),
        B.OAK_LEAVES: (oak_leaves, oak_leaves, oak_leaves),
        B.SNOWY_GRASS: (snow, snowy_side, dirt),
        B.CACTUS: (cactus_top, cactus_side, cactus_top),
        B.SANDSTONE: (sand, sandstone_side, sand),
        B.GRAVEL: (gravel, gravel, gravel),
        B.SPRUCE_LOG: (spruce_top, spruce_side, spruce_top),
        B.SPRUCE_LEAVES: (spruce_leaves, spruce_leaves, spruce_leaves),
        B.ICE: (ice, ice, ice),
        B.SNOW: (snow, snow, snow),
    }


def _mip(t: np.ndarray, level: int) -> np.ndarray:
    """Box-average a 16x16 texture to 16/2^level texels, then repeat back to 16x16."""
    f = 1 << level
    n = TEX // f
    small = t.reshape(n, f, n, f, 3).mean(axis=(1, 3))  # [n, n, 3]
    return small.repeat(f, 0).repeat(f, 1)


@lru_cache(maxsize=1)
def atlas() -> np.ndarray:
    """float32 [MIP_LEVELS, NUM_BLOCKS, 3 faces, 16, 16, 3] in [0, 1]; air is black (never looked up)."""
    out = np.zeros((MIP_LEVELS, B.NUM_BLOCKS, 3, TEX, TEX, 3), dtype=np.float32)
    for block, faces in _block_faces().items():
        for f, t in enumerate(faces):
            for level in range(MIP_LEVELS):
                out[level, block, f] = _mip(np.asarray(t, dtype=np.float32), level)
    return out


@lru_cache(maxsize=1)
def atlas_flat() -> np.ndarray:
    """atlas() as rows [MIP_LEVELS * NUM_BLOCKS * 3 * 16 * 16, 3] for a single gather per pixel."""
    return np.ascontiguousarray(atlas().reshape(-1, 3))  # [L*NB*3*16*16, 3]
