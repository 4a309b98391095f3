"""Deterministic integer hashing and value noise on world coordinates.

Every terrain quantity is a pure function of (seed, x, z), so chunks can be generated lazily, in any order,
and always agree at their borders.
"""
from __future__ import annotations

import numpy as np

_MASK64 = (1 << 64) - 1
_KX = np.uint64(0x9E3779B97F4A7C15)
_KZ = np.uint64(0xC2B2AE3D27D4EB4F)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _as_u64(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.int64)
    return a.view(np.uint64)


def hash2(x: np.ndarray, z: np.ndarray, seed: int) -> np.ndarray:
    """uint64 hash of integer lattice points (splitmix64 finaliser over a linear mix)."""
    s = np.uint64((int(seed) * 0x165667B19E3779F9 + 0x27D4EB2F165667C5) & _MASK64)
    with np.errstate(over="ignore"):
        h = (_as_u64(x) * _KX) ^ (_as_u64(z) * _KZ) ^ s
        h ^= h >> np.uint64(30)
        h *= _M1
        h ^= h >> np.uint64(27)
        h *= _M2
        h ^= h >> np.uint64(31)
    return h


def uniform2(x: np.ndarray, z: np.ndarray, seed: int) -> np.ndarray:
    """Uniform [0, 1) float64 per lattice point."""
    return (hash2(x, z, seed) >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def value_noise(x: np.ndarray, z: np.ndarray, scale: float, seed: int) -> np.ndarray:
    """Smooth value noise in [0, 1] with lattice spacing `scale` blocks."""
    fx = np.asarray(x, dtype=np.float64) / scale
    fz = np.asarray(z, dtype=np.float64) / scale
    xi = np.floor(fx)
    zi = np.floor(fz)
    tx = fx - xi
    tz = fz - zi
    # Quintic fade: continuous slope across lattice lines, so hills have no creases.
    tx = tx * tx * tx * (tx * (tx * 6 - 15) + 10)
    tz = tz * tz * tz * (tz * (tz * 6 - 15) + 10)
    xi = xi.astype(np.int64)
    zi = zi.astype(np.int64)
    if xi.size == 0:
        return np.zeros(xi.shape)
    x_lo, z_lo = int(xi.min()), int(zi.min())
    nx, nz = int(xi.max()) - x_lo + 2, int(zi.max()) - z_lo + 2
    if nx * nz <= 4 * xi.size + 64:
        # Dense inputs (a chunk, a window): hash each lattice point once and gather.
        gx, gz = np.meshgrid(np.arange(x_lo, x_lo + nx), np.arange(z_lo, z_lo + nz), indexing="ij")
        lat = uniform2(gx, gz, seed).reshape(-1)  # [nx * nz]
        i00 = (xi - x_lo) * nz + (zi - z_lo)
        v00, v10, v01, v11 = lat[i00], lat[i00 + nz], lat[i00 + 1], lat[i00 + nz + 1]
    else:
        v00 = uniform2(xi, zi, seed)
        v10 = uniform2(xi + 1, zi, seed)
        v01 = uniform2(xi, zi + 1, seed)
        v11 = uniform2(xi + 1, zi + 1, seed)
    a = v00 + (v10 - v00) * tx
    b = v01 + (v11 - v01) * tx
    return a + (b - a) * tz


def fbm(x: np.ndarray, z: np.ndarray, scale: float, octaves: int, seed: int,
        persistence: float = 0.5) -> np.ndarray:
    """Fractal sum of value-noise octaves, normalised to [0, 1] (mean 0.5)."""
    total = np.zeros(np.broadcast(np.asarray(x), np.asarray(z)).shape)
    amp, norm = 1.0, 0.0
    for o in range(octaves):
        total += amp * value_noise(x, z, scale / (2 ** o), seed * 7919 + o * 1013)
        norm += amp
        amp *= persistence
    return total / norm


def smoothstep(e0: float, e1: float, v: np.ndarray) -> np.ndarray:
    t = np.clip((v - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3 - 2 * t)
