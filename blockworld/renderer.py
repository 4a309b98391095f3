"""First-person renderer: one ray per pixel through the voxel grid, vectorised over all rays in numpy.

How the trace stays fast in numpy: a ray enters a new voxel only when it crosses an x, y or z cell
boundary, and the crossings along one axis are evenly spaced in t. So for every ray and axis we compute K
crossings at once ([rays, K] arrays), look up the voxel each one enters, and keep the first solid one; the
nearest over the three axes is the hit. Rays are processed in rounds of growing K and a ray leaves the
batch as soon as its best hit is nearer than its next unexamined crossing, so the many short rays (ground,
near walls) cost one cheap round and only the few long ones (towards the horizon) go on. Rays stop at the
view distance (hidden by fog) or when they climb above the highest block around.

Shading is Minecraft's: 16x16 textures (mip-mapped by distance), fixed per-face brightness (top 1.0,
north/south 0.8, east/west 0.6, bottom 0.5), biome-tinted grass and leaves, a sky gradient with a square
sun and blocky clouds, linear distance fog into the sky colour, and translucent water (a second short ray
finds the bottom under the surface).
"""
from __future__ import annotations

import math
import threading
from functools import lru_cache

import numpy as np

from . import blocks as B
from .state import PlayerState
from .textures import MIP_LEVELS, TEX, atlas_flat
from .world import BIOMES, CHUNK, TILE, Window, World
from .noise import fbm

FOV_Y = 70.0
EYE_HEIGHT = 1.62
SNEAK_EYE_HEIGHT = 1.27
VIEW_DIST = 40.0
"""Rays stop here; the fog reaches the sky colour here (Minecraft at a short render distance)."""
FOG_START = 0.5 * VIEW_DIST
WINDOW_RADIUS = math.ceil((VIEW_DIST + 3.0) / CHUNK)
UNDERWATER_FOG = 14.0
DEFAULT_SIZE = (128, 72)
RENDER_VERSION = 1
"""Bumped whenever the pixels a given state renders to change (stored with generated episodes)."""

SKY_TOP = np.array([0.47, 0.65, 1.0], dtype=np.float32)
SKY_HORIZON = np.array([0.75, 0.85, 1.0], dtype=np.float32)
WATER_FOG = np.array([0.08, 0.18, 0.5], dtype=np.float32)
SUN_DIR = np.array([-0.45, 0.62, 0.64])
SUN_DIR = SUN_DIR / np.linalg.norm(SUN_DIR)
SUN_HALF = 0.075
CLOUD_Y = 108.0
CLOUD_CELL = 12.0

# Face brightness: x faces (east/west), y faces (top; bottom below), z faces (north/south).
_AXIS_SHADE = np.array([0.6, 1.0, 0.8], dtype=np.float32)
_BOTTOM_SHADE = 0.5
_COARSE_K = (2, 4, 6, 8)


def _range_bits() -> np.ndarray:
    """uint64 [64 * 64]: entry lo * 64 + hi has bits lo..hi set (none when lo > hi)."""
    lo, hi = np.meshgrid(np.arange(64), np.arange(64), indexing="ij")
    bits = np.zeros((64, 64), dtype=np.uint64)
    for b in range(64):
        bits |= np.where((lo <= b) & (b <= hi), np.uint64(1) << np.uint64(b), np.uint64(0)).astype(np.uint64)
    return bits.reshape(-1)


_RANGE_BITS = _range_bits()
_ROUND_SPANS = (1.0, 1.5, 2.5, 4.0, 6.0, 9.0, 12.0)
"""Blocks of ray length examined per round of the trace (growing: the rays left are the long ones)."""

# Biome colour of grass tops and oak leaves, relative to the plains colour baked into the textures.
_BIOME_TINT = {"plains": (1.0, 1.0, 1.0), "forest": (0.82, 0.98, 0.8), "desert": (1.2, 1.02, 0.72),
               "snow": (0.86, 0.98, 1.02)}


@lru_cache(maxsize=1)
def _tint_lut() -> np.ndarray:
    """float32 [n_biomes * NUM_BLOCKS * 3 faces, 3]: colour multiplier per (biome, block, face)."""
    lut = np.ones((len(BIOMES), B.NUM_BLOCKS, 3, 3), dtype=np.float32)
    for bi, name in enumerate(BIOMES):
        tint = np.asarray(_BIOME_TINT[name], dtype=np.float32)
        lut[bi, B.GRASS, 0] = tint
        lut[bi, B.OAK_LEAVES, :] = tint
    return lut.reshape(-1, 3)  # [nb * NB * 3, 3]


@lru_cache(maxsize=8)
def _pixel_grid(width: int, height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image-plane offsets of pixel centres at distance 1 (right [N], up [N]) and 1 / |ray| [N]
    (the length of fwd + u * right + v * up is sqrt(1 + u^2 + v^2) whatever the camera's orientation)."""
    tan_y = math.tan(math.radians(FOV_Y) / 2)
    tan_x = tan_y * width / height
    xs = ((np.arange(width) + 0.5) / width * 2 - 1) * tan_x
    ys = (1 - (np.arange(height) + 0.5) / height * 2) * tan_y
    u, v = np.meshgrid(xs, ys)  # [H, W]
    u, v = u.reshape(-1), v.reshape(-1)  # [N] row-major from the top-left pixel
    return u, v, 1.0 / np.sqrt(1.0 + u * u + v * v)


def camera_basis(yaw: float, pitch: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Forward, right and up unit vectors (x east, y up, z south) for Minecraft yaw/pitch in degrees."""
    ya, pa = math.radians(yaw), math.radians(pitch)
    sy, cy, sp, cp = math.sin(ya), math.cos(ya), math.sin(pa), math.cos(pa)
    fwd = np.array([-sy * cp, -sp, cy * cp])
    right = np.array([-cy, 0.0, -sy])
    up = np.array([-sy * sp, cp, cy * sp])  # right x fwd
    return fwd, right, up


@lru_cache(maxsize=4)
def ray_directions(yaw: float, pitch: float, size: tuple[int, int]) -> np.ndarray:
    """Unit ray directions float32 [3, H * W] (x, y, z rows), pixels row-major from the top-left."""
    fwd, right, up = camera_basis(yaw, pitch)
    u, v, inv = _pixel_grid(*size)
    d = (fwd[:, None] + u[None, :] * right[:, None] + v[None, :] * up[:, None]) * inv[None, :]  # [3, N]
    d = d.astype(np.float32)
    d.flags.writeable = False
    return d


def eye_position(state: PlayerState) -> np.ndarray:
    x, y, z = state.pos
    return np.array([x, y + EYE_HEIGHT + (SNEAK_EYE_HEIGHT - EYE_HEIGHT) * state.sneak, z])


# ------------------------------------------------------------------------------------------ tracing

_SCRATCH = threading.local()


def _scratch(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Reusable flat work buffers (float32, int32, int32, bool) of at least `size` elements, one set per
    thread (so renders in several threads do not share them)."""
    bufs = getattr(_SCRATCH, "bufs", None)
    if bufs is None or bufs[0].size < size:
        cap = max(size, 1 << 16)
        bufs = (np.empty(cap, np.float32), np.empty(cap, np.int32), np.empty(cap, np.int32), np.empty(cap, bool))
        _SCRATCH.bufs = bufs
    return bufs


def trace(occ: np.ndarray, sx: int, sz: int, origin: np.ndarray, d: np.ndarray,
          t_lim: np.ndarray, t_start: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """First occupied voxel along each ray.

    occ: flat bool window (index x * sx + z * sz + y); origin [3] or [3, N] and d [3, N] float32 in window
    coordinates (positive, and at least 2 blocks inside the window while t <= t_lim + 1); t_lim [N];
    t_start [N]: where to begin (the ray is known to be clear before it; see coarse_skip).
    Returns (t [N] (inf where nothing within t_lim), axis [N] int8 of the crossed face, flat [N] int64
    index of the hit voxel)."""
    n = d.shape[1]
    if n == 0:
        return np.zeros(0, np.float32), np.zeros(0, np.int8), np.zeros(0, np.int64)
    o = np.broadcast_to(np.asarray(origin, dtype=np.float32).reshape(3, -1), (3, n))  # [3, N]
    pos = d > 0
    cell = np.floor(o)
    ad = np.maximum(np.abs(d), np.float32(1e-9))
    td = np.float32(1.0) / ad  # [3, N] t between crossings of one axis
    t0 = np.where(pos, cell + 1 - o, o - cell) * td  # [3, N] first crossing
    strides = np.array([sx, 1, sz], dtype=np.int32)
    inc = np.where(pos, 1, -1).astype(np.int32) * strides[:, None]  # [3, N] flat change per crossing
    entered = cell.astype(np.int32) * strides[:, None] + inc  # [3, N] axis part after the first crossing
    if t_start is not None:
        # Skip the crossings before t_start (one early is harmless, one late would miss a hit).
        kb = np.maximum(np.floor((t_start[None, :] - t0) / td) - 1, 0).astype(np.float32)  # [3, N]
        t0 = t0 + kb * td
        entered = entered + kb.astype(np.int32) * inc
    # Per axis a, the other two coordinates at its crossing k are c0 + k * c1 (strides s2[a]).
    others = ((1, 2), (0, 2), (0, 1))
    c0 = np.empty((3, 2, n), dtype=np.float32)
    c1 = np.empty((3, 2, n), dtype=np.float32)
    for a, (b, c) in enumerate(others):
        for q, oa in enumerate((b, c)):
            c0[a, q] = o[oa] + t0[a] * d[oa]
            c1[a, q] = td[a] * d[oa]
    s2 = np.array([[strides[b], strides[c]] for b, c in others], dtype=np.int32)  # [3, 2]

    best_t = np.full(n, np.inf, dtype=np.float32)
    best_ax = np.zeros(n, dtype=np.int8)
    idx = np.arange(n)  # rays still being traced; their per-ray data is compacted alongside
    lim = t_lim.astype(np.float32)
    ad_act = ad
    k0 = 0  # crossings examined so far on each axis (the same for every ray)
    inf = np.float32(np.inf)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        for r in range(10_000):
            span = _ROUND_SPANS[min(r, len(_ROUND_SPANS) - 1)]
            m = idx.size
            # Enough crossings to cover `span` blocks of t for the steepest ray; the three axes are
            # stacked in [3, K, m] arrays so that each step is one numpy call.
            K = int(math.ceil(span * float(np.maximum.reduce(ad_act, axis=None)))) + 1
            fbuf, ibuf, jbuf, hbuf = _scratch(3 * K * m)
            f, i, j, h = (buf[:3 * K * m].reshape(3, K, m) for buf in (fbuf, ibuf, jbuf, hbuf))
            kf = np.arange(k0, k0 + K, dtype=np.float32)[None, :, None]  # [1, K, 1]
            ki = np.arange(k0, k0 + K, dtype=np.int32)[None, :, None]
            np.multiply(ki, inc[:, None, :], out=j)
            np.add(j, entered[:, None, :], out=j)  # axis part of the flat index
            for q in (0, 1):
                np.multiply(kf, c1[:, q, None, :], out=f)
                np.add(f, c0[:, q, None, :], out=f)
                i[...] = f  # floor: coordinates are positive
                np.multiply(i, s2[:, q, None, None], out=i)
                np.add(j, i, out=j)
            occ.take(j, out=h, mode="clip")
            # (k + 1) / 0 = inf, so the minimum picks the first hit along each axis.
            np.divide(kf + 1, h.view(np.uint8), out=f)
            th = t0 + (np.minimum.reduce(f, axis=1) - 1) * td  # [3, m]
            ra = np.argmin(th, axis=0).astype(np.int8)
            rt = np.minimum.reduce(th, axis=0)
            if r:
                prev_t, prev_ax = best_t[idx], best_ax[idx]
                better = rt < prev_t
                rt = np.where(better, rt, prev_t)
                ra = np.where(better, ra, prev_ax)
            best_t[idx] = rt
            best_ax[idx] = ra
            k0 += K
            # A ray is finished when its hit is nearer than every unexamined crossing (or none is left).
            nxt = np.minimum.reduce(t0 + np.float32(k0) * td, axis=0)
            keep = (rt > nxt) & (nxt <= lim)
            if not keep.any():
                break
            if not keep.all():
                idx, lim = idx[keep], lim[keep]
                t0, td, entered, inc, ad_act = t0[:, keep], td[:, keep], entered[:, keep], inc[:, keep], \
                    ad_act[:, keep]
                c0, c1 = c0[:, :, keep], c1[:, :, keep]
    best_t = np.where(best_t <= t_lim, best_t, inf)
    return best_t, best_ax, _hit_voxel(o, d, best_t, best_ax, strides)


def coarse_skip(win: Window, o: np.ndarray, d: np.ndarray, t_lim: np.ndarray) -> np.ndarray:
    """A lower bound on where each ray can first meet a block, from the coarse tiles (TILE x TILE
    columns: which layers hold a block, and the highest one): [N] t, inf when the ray meets no tile with
    a block in the height range it crosses the tile at, until t_lim. Inside a tile nothing can be hit
    before the ray has come down to the tile's top, so a ray looking down at flat ground starts its voxel
    trace at the ground, and rays skimming over the land or climbing into the sky are settled here at a
    fraction of the voxel trace's cost. The test is conservative: a tile's exit is bounded by the next
    crossing on the same axis."""
    n = d.shape[1]
    T = np.float32(TILE)
    ntz = win.ntz
    tops = win.tile_top
    masks = win.tile_mask
    inf = np.float32(np.inf)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        pos = d > 0
        adh = np.maximum(np.abs(d), np.float32(1e-9))
        cellT = np.floor(o / T)  # [3] the eye's tile (y unused)
        # First tile-boundary crossing and spacing, rows x and z (row y unused).
        t0 = np.where(pos, (cellT[:, None] + 1) * T - o[:, None], o[:, None] - cellT[:, None] * T) / adh
        tdT = T / adh
        # Time to come down to a height: (top - o_y) * inv_down; 0 for rays going up (no bound).
        inv_down = np.where(d[1] < 0, np.float32(1) / np.minimum(d[1], np.float32(-1e-9)), np.float32(0))
        t_exit = np.minimum(np.minimum(t0[0], t0[2]), t_lim)
        start = int(cellT[0]) * ntz + int(cellT[2])
        start_top = tops[start]
        y_end = o[1] + d[1] * t_exit
        lo0 = np.clip(np.minimum(o[1], y_end), 0, 63).astype(np.int32)
        hi0 = np.clip(np.maximum(o[1], y_end), 0, 63).astype(np.int32)
        blocked0 = (_RANGE_BITS[lo0 * 64 + hi0] & masks[start]) != 0
        best = np.where(blocked0, np.maximum((start_top - o[1]) * inv_down, np.float32(0)), inf)
        step = np.where(pos, 1, -1).astype(np.int32)
        # Rows: crossings of x, then of z (b is the other axis). Tile index = base + k * inc +
        # floor(c0 + k * c1) * sb; the lowest height over the tile is >= y0 + k * y1.
        ta0 = np.stack([t0[0], t0[2]])  # [2, N]
        tda = np.stack([tdT[0], tdT[2]])
        inc = np.stack([step[0] * ntz, step[2]])
        base = np.array([[int(cellT[0]) * ntz], [int(cellT[2])]], dtype=np.int32) + inc
        c0 = np.stack([o[2] + t0[0] * d[2], o[0] + t0[2] * d[0]]) / T
        c1 = np.stack([tdT[0] * d[2], tdT[2] * d[0]]) / T
        sb = np.array([1, ntz], dtype=np.int32)[:, None, None]
        y1 = tda * d[1]
        y0 = o[1] + ta0 * d[1] + np.minimum(np.float32(0), y1)
        ay1 = np.abs(y1)
        idx = np.arange(n)
        rt = best
        lim = t_lim
        down = inv_down
        done = 0
        for r in range(10_000):
            K = _COARSE_K[min(r, len(_COARSE_K) - 1)]
            m = idx.size
            kf = np.arange(done, done + K, dtype=np.float32)[None, :, None]  # [1, K, 1]
            ki = np.arange(done, done + K, dtype=np.int32)[None, :, None]
            fbuf, ibuf, jbuf, hbuf = _scratch(2 * K * m)
            f, i, j, h = (buf[:2 * K * m].reshape(2, K, m) for buf in (fbuf, ibuf, jbuf, hbuf))
            g = np.empty((2, K, m), dtype=np.float32)
            lo = np.empty((2, K, m), dtype=np.int32)
            hi = np.empty((2, K, m), dtype=np.int32)
            u = np.empty((2, K, m), dtype=np.uint64)
            v = np.empty((2, K, m), dtype=np.uint64)
            np.multiply(ki, inc[:, None, :], out=j)
            np.add(j, base[:, None, :], out=j)
            np.multiply(kf, c1[:, None, :], out=f)
            np.add(f, c0[:, None, :], out=f)
            i[...] = f
            np.multiply(i, sb, out=i)
            np.add(j, i, out=j)  # tile index [2, K, m]
            # Layers the ray spans over the tile: y_min .. y_min + |y1|.
            np.multiply(kf, y1[:, None, :], out=f)
            np.add(f, y0[:, None, :], out=f)
            np.maximum(f, 0, out=g)
            lo[...] = g
            np.add(f, ay1[:, None, :], out=g)
            np.minimum(g, 63, out=g)
            hi[...] = g
            np.multiply(lo, 64, out=lo)
            np.add(lo, hi, out=lo)
            _RANGE_BITS.take(lo, out=u, mode="clip")
            masks.take(j, out=v, mode="clip")
            np.bitwise_and(u, v, out=u)
            np.not_equal(u, 0, out=h)  # some block of the tile lies in the ray's height range
            # Earliest possible hit in each tile: its entry, or when the ray comes down to its top.
            tops.take(j, out=g, mode="clip")
            np.subtract(g, o[1], out=g)
            np.multiply(g, down, out=g)
            np.multiply(kf, tda[:, None, :], out=f)
            np.add(f, ta0[:, None, :], out=f)
            np.maximum(f, g, out=f)
            np.divide(f, h.view(np.uint8), out=f)  # not blocked -> inf
            rt = np.minimum(rt, np.minimum.reduce(f, axis=(0, 1)))
            done += K
            nxt = np.minimum.reduce(ta0 + np.float32(done) * tda, axis=0)
            keep = (rt > nxt) & (nxt <= lim)
            best[idx] = rt
            if not keep.any():
                break
            if not keep.all():
                idx, rt, lim, down = idx[keep], rt[keep], lim[keep], down[keep]
                ta0, tda, inc, base = ta0[:, keep], tda[:, keep], inc[:, keep], base[:, keep]
                c0, c1, y0, y1, ay1 = c0[:, keep], c1[:, keep], y0[:, keep], y1[:, keep], ay1[:, keep]
    return np.where(best <= t_lim, best, inf)


def _landed_on_top(occ: np.ndarray, win: Window, o: np.ndarray, d: np.ndarray, t_skip: np.ndarray) -> np.ndarray:
    """Rays whose coarse bound is the moment they come down to a tile's top (a whole layer of air in
    that tile) hit the block just below that point through its top face, if there is one: nothing can
    be hit earlier. This settles most rays that look down at the ground without a voxel trace.
    Returns the flat index of that block per ray, -1 where the ray needs the full trace."""
    p = o[:, None] + t_skip[None, :] * d  # [3, n]
    top = np.rint(p[1])
    # Near a column's edge the block below might be entered through its side just after t_skip: leave
    # those few rays to the full trace.
    fx = p[0] - np.floor(p[0])
    fz = p[2] - np.floor(p[2])
    clear = (np.minimum(fx, 1 - fx) > 2e-3) & (np.minimum(fz, 1 - fz) > 2e-3)
    on_plane = (np.abs(p[1] - top) < 1e-4) & (d[1] < 0) & clear
    cell = np.floor(p).astype(np.int64)
    flat = cell[0] * win.sx + cell[2] * win.sz + top.astype(np.int64) - 1
    ok = on_plane & np.take(occ, flat, mode="clip")
    return np.where(ok, flat, -1)


def _hit_voxel(o: np.ndarray, d: np.ndarray, t: np.ndarray, ax: np.ndarray, strides: np.ndarray) -> np.ndarray:
    """Flat index of the voxel entered at distance t through a face normal to `ax` (0 where no hit)."""
    ok = np.isfinite(t)
    tt = np.where(ok, t, 0).astype(np.float32)
    p = o + tt[None, :] * d  # [3, N]
    cell = np.floor(p)
    # Along the crossed axis p sits on the boundary: the voxel is on the far side of it.
    cols = np.arange(len(t))
    on = np.rint(p[ax, cols])
    cell[ax, cols] = np.where(d[ax, cols] > 0, on, on - 1)
    flat = (cell.astype(np.int64) * strides.astype(np.int64)[:, None]).sum(axis=0)
    return np.where(ok, flat, 0)


# ------------------------------------------------------------------------------------------ shading

def _sky(dy: np.ndarray) -> np.ndarray:
    """Sky gradient [N, 3] from the rays' vertical components dy [N]."""
    s = np.minimum(np.maximum(dy * np.float32(1.8), np.float32(0)), np.float32(1))
    s = s * (np.float32(2) - s)  # eases out of the horizon colour, like Minecraft's gradient
    return SKY_HORIZON + (SKY_TOP - SKY_HORIZON) * s[:, None]


@lru_cache(maxsize=8)
def _cloud_table(seed: int) -> np.ndarray:
    """Periodic 256x256 cloud-cell mask (blocky clusters like Minecraft's cloud layer)."""
    gx, gz = np.meshgrid(np.arange(256.0), np.arange(256.0), indexing="ij")
    # Sample the noise on a torus so the 256-cell table wraps without a seam.
    a, b = gx / 256 * 2 * np.pi, gz / 256 * 2 * np.pi
    n = fbm(np.cos(a) * 40 + 100, np.sin(a) * 40 + np.cos(b) * 40, 6.0, 3, seed + 77) * 0.5 + \
        fbm(np.sin(b) * 40 - 100, np.cos(b) * 40 + np.sin(a) * 40, 6.0, 3, seed + 78) * 0.5
    return n > 0.55


_SUN_U = np.cross(SUN_DIR, [0.0, 1.0, 0.0])
_SUN_U /= np.linalg.norm(_SUN_U)
_SUN_V = np.cross(_SUN_U, SUN_DIR)
_SUN_BASIS = np.stack([SUN_DIR, _SUN_U, _SUN_V]).astype(np.float32)  # [3 (dir, u, v), 3 (xyz)]


def _sky_pixels(world: World, eye: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Colour [n, 3] of rays d [3, n] that hit nothing: gradient, a square sun and the cloud layer."""
    col = _sky(d[1])
    cs, su, sv = _SUN_BASIS @ d  # [n] each
    with np.errstate(divide="ignore", invalid="ignore"):
        pu, pv = np.abs(su / cs), np.abs(sv / cs)
    sun = (cs > 0) & (pu < SUN_HALF) & (pv < SUN_HALF)
    if sun.any():
        core = sun & (pu < SUN_HALF * 0.7) & (pv < SUN_HALF * 0.7)
        col[sun] = (1.0, 0.98, 0.78)
        col[core] = (1.0, 1.0, 0.93)
    up = np.flatnonzero(d[1] > 0.03)
    if up.size:
        du = d[:, up].astype(np.float64)
        tc = (CLOUD_Y - eye[1]) / du[1]
        cx = np.floor((eye[0] + tc * du[0]) / CLOUD_CELL).astype(np.int64) % 256
        cz = np.floor((eye[2] + tc * du[2]) / CLOUD_CELL).astype(np.int64) % 256
        cloudy = np.flatnonzero(_cloud_table(world.seed)[cx, cz])
        if cloudy.size:
            fade = np.clip((tc[cloudy] - 60.0) / 260.0, 0.0, 1.0)[:, None].astype(np.float32)
            ui = up[cloudy]
            col[ui] = np.float32(0.97) * (1 - fade) + col[ui] * fade
    return col


def _shade_hits(win: Window, o: np.ndarray, d: np.ndarray, t: np.ndarray, ax: np.ndarray,
                flat: np.ndarray, pix: float) -> tuple[np.ndarray, np.ndarray]:
    """Colour [n, 3] (texture, face shading, biome tint) and block id [n] at each hit.
    o [3] or [3, n], d [3, n]; pix: the angle one pixel spans (radians), for the mip level."""
    bid = win.ids_flat[flat].astype(np.int32)
    p = o.reshape(3, -1) + t[None, :] * d  # [3, n] hit points
    fr = p - np.floor(p)
    is_x, is_y = ax == 0, ax == 1
    u = np.where(is_x, fr[2], fr[0])
    v = np.where(is_y, fr[2], np.float32(1.0) - fr[1])
    tu = np.minimum((u * TEX).astype(np.int32), TEX - 1)
    tv = np.minimum((v * TEX).astype(np.int32), TEX - 1)
    down = d[1] < 0
    face = np.where(is_y, np.where(down, 0, 2), 1).astype(np.int32)
    # Mip level from the texel footprint of one pixel, widened at grazing angles as trilinear
    # mip-mapping does.
    dn = np.abs(np.where(is_x, d[0], np.where(is_y, d[1], d[2])))
    foot = t * np.float32(pix * TEX) / np.maximum(dn, np.float32(0.3))
    lev = np.clip(np.log2(np.maximum(foot, np.float32(1.0))).astype(np.int32), 0, MIP_LEVELS - 1)
    idx = (((lev * B.NUM_BLOCKS + bid) * 3 + face) * TEX + tv) * TEX + tu
    shade = np.where(is_y & ~down, np.float32(_BOTTOM_SHADE), _AXIS_SHADE[ax])
    biome = win.biome_cols[flat // win.sz].astype(np.int32)
    tint = _tint_lut()[(biome * B.NUM_BLOCKS + bid) * 3 + face]
    col = atlas_flat()[idx] * tint * shade[:, None]
    return col, bid


def render_with_depth(world: World, state: PlayerState,
                      size: tuple[int, int] = DEFAULT_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """(frame uint8 [H, W, 3], distance float32 [H, W] to the first block, inf for sky)."""
    width, height = int(size[0]), int(size[1])
    pix = 2 * math.tan(math.radians(FOV_Y) / 2) / height
    eye = eye_position(state)
    cx, cz = math.floor(eye[0]) // CHUNK, math.floor(eye[2]) // CHUNK
    win = world.window(cx, cz, WINDOW_RADIUS)
    o = np.array([eye[0] - win.x0, eye[1], eye[2] - win.z0], dtype=np.float32)
    d = ray_directions(float(state.yaw), float(state.pitch), (width, height))
    n = d.shape[1]
    underwater = world.block(math.floor(eye[0]), math.floor(eye[1]), math.floor(eye[2])) == B.WATER
    with np.errstate(divide="ignore"):
        t_top = np.where(d[1] > 1e-6, (np.float32(win.top + 0.5) - o[1]) / d[1], np.float32(np.inf))
    t_lim = np.minimum(np.float32(VIEW_DIST), np.maximum(t_top, 0)).astype(np.float32)
    occ = win.occ_dry if underwater else win.occ
    t_skip = coarse_skip(win, o, d, t_lim)
    t = np.full(n, np.inf, dtype=np.float32)
    ax = np.zeros(n, dtype=np.int8)
    flat = np.zeros(n, dtype=np.int64)
    near = np.flatnonzero(np.isfinite(t_skip))
    if near.size:
        landed = _landed_on_top(occ, win, o, d[:, near], t_skip[near])
        t[near[landed >= 0]] = t_skip[near[landed >= 0]]
        ax[near[landed >= 0]] = 1
        flat[near[landed >= 0]] = landed[landed >= 0]
        near = near[landed < 0]
    if near.size:
        t[near], ax[near], flat[near] = trace(occ, win.sx, win.sz, o, d[:, near], t_lim[near], t_skip[near])

    out = np.empty((n, 3), dtype=np.float32)
    hi = np.flatnonzero(np.isfinite(t))
    sky = np.flatnonzero(~np.isfinite(t))
    th = t[hi]
    if hi.size:
        dh = d[:, hi]
        col, bid = _shade_hits(win, o, dh, th, ax[hi], flat[hi], pix)
        wet = np.flatnonzero(bid == B.WATER)
        if wet.size:
            col[wet] = _through_water(win, o, dh[:, wet], th[wet], col[wet], pix)
        if underwater:
            fog = np.clip(th / np.float32(UNDERWATER_FOG), 0, 1)[:, None]
            col = col * (1 - fog) + WATER_FOG * fog
        else:
            fog = np.clip((th - np.float32(FOG_START)) / np.float32(VIEW_DIST - FOG_START), 0, 1)[:, None]
            col = col * (1 - fog) + _sky(dh[1]) * fog
        out[hi] = col
    if sky.size:
        out[sky] = WATER_FOG if underwater else _sky_pixels(world, eye, d[:, sky])
    frame = (np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8).reshape(height, width, 3)
    return frame, t.reshape(height, width)


def _through_water(win: Window, o: np.ndarray, d: np.ndarray, t: np.ndarray, water_col: np.ndarray,
                   pix: float) -> np.ndarray:
    """Minecraft water is see-through: blend the surface colour [n, 3] with whatever lies below it,
    more opaque the longer the path through the water. d [3, n], t [n] distance to the surface."""
    start = o[:, None] + (t[None, :] + np.float32(1e-3)) * d  # [3, n] just below the surface
    lim = np.full(len(t), 10.0, dtype=np.float32)
    t2, ax2, flat2 = trace(win.occ_dry, win.sx, win.sz, start, d, lim)
    out = water_col.copy()
    seen = np.flatnonzero(np.isfinite(t2))
    if seen.size:
        below, _ = _shade_hits(win, start[:, seen], d[:, seen], t2[seen], ax2[seen], flat2[seen], pix)
        # Depth fades the bottom into the water colour (light absorbed on the way).
        a = 1.0 - 0.55 * np.exp(-t2[seen] / 5.0)[:, None]
        out[seen] = below * (1 - a) + water_col[seen] * a
    return out


def render(world: World, state: PlayerState, size: tuple[int, int] = DEFAULT_SIZE) -> np.ndarray:
    """The player's view, uint8 [H, W, 3] RGB, size = (width, height). Deterministic."""
    return render_with_depth(world, state, size)[0]
