"""Seeded, unbounded terrain: biomes, heights, water, trees and cacti, generated per 16x16 chunk on demand.

Every quantity is a pure function of (seed, x, z) (see noise.py), so chunks agree at their borders and a
World re-created from its seed holds exactly the same blocks. Chunks are cached (LRU); the renderer asks
for a `Window`, a block array around the player's chunk large enough for the view distance.
Coordinates are Minecraft's: +x east, +y up, +z south; block (x, y, z) fills [x, x+1) x [y, y+1) x [z, z+1).
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from . import blocks as B
from .noise import fbm, smoothstep, uniform2
from .state import PlayerState

CHUNK = 16
HEIGHT = 64
SEA = 24
"""The water surface is the plane y = SEA: water fills the air below it."""
PAD_Y = 2
TILE = 4
"""Columns per side of the coarse tiles the renderer skips over (see renderer.coarse_skip)."""
"""Air layers above HEIGHT in a Window, so rays leaving the top read air without a bounds check."""

BIOMES: tuple[str, ...] = ("plains", "forest", "desert", "snow")
PLAINS, FOREST, DESERT, SNOW = range(4)

_TREE_CELL = 4
_TREE_MARGIN = 3
# Chance that a 4x4 cell holds a tree (plains, forest, snow) or a cactus (desert).
_FEATURE_P = np.array([0.035, 0.3, 0.1, 0.2])


@dataclass
class Window:
    """Blocks of (2r+1)^2 chunks around a centre chunk, laid out for the renderer's flat gathers.

    ids[x, z, y] (uint8) covers world x in [x0, x0 + ids.shape[0]), z likewise, y in [0, HEIGHT + PAD_Y);
    flat index = (x - x0) * sx + (z - z0) * sz + y."""

    x0: int
    z0: int
    ids: np.ndarray
    occ: np.ndarray
    """Flat bool: any block (water included) stops a ray."""
    occ_dry: np.ndarray
    """Flat bool: solid blocks only (for rays starting under water and for looking through water)."""
    ids_flat: np.ndarray
    biome_cols: np.ndarray
    """Flat uint8 biome per column, index (x - x0) * nz + (z - z0)."""
    sx: int
    sz: int
    top: int
    """One above the highest non-air layer: a ray climbing past it can hit nothing."""
    tile_top: np.ndarray
    """Flat float32 [(nx / TILE) * ntz]: one above the highest non-air block of each TILE x TILE tile."""
    tile_mask: np.ndarray
    """Flat uint64 [(nx / TILE) * ntz]: bit y set when some column of the tile has a block at layer y."""
    ntz: int


class World:
    """A procedural block world. `World(seed)`; blocks are generated lazily and cached."""

    def __init__(self, seed: int, max_chunks: int = 2048, max_windows: int = 3) -> None:
        self.seed = int(seed)
        self._chunks: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._windows: OrderedDict[tuple[int, int, int], Window] = OrderedDict()
        self._max_chunks = max_chunks
        self._max_windows = max_windows

    # ------------------------------------------------------------------ climate and heights (pure)

    def _climate(self, x: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Temperature and humidity in [0, 1], smooth over a few hundred blocks."""
        t = fbm(x + 10007.0, z, 380.0, 3, self.seed * 8 + 1)
        m = fbm(x, z - 10007.0, 300.0, 3, self.seed * 8 + 2)
        return t, m

    def _biome_from_climate(self, t: np.ndarray, m: np.ndarray) -> np.ndarray:
        b = np.where(m > 0.5, FOREST, PLAINS)
        b = np.where(t > 0.61, DESERT, b)
        b = np.where(t < 0.39, SNOW, b)
        return b.astype(np.uint8)

    def biomes(self, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Biome index per column (see BIOMES)."""
        x = np.asarray(x, dtype=np.float64)
        z = np.asarray(z, dtype=np.float64)
        return self._biome_from_climate(*self._climate(x, z))

    def biome_at(self, x: float, z: float) -> str:
        """Biome name of the column containing (x, z)."""
        return BIOMES[int(self.biomes(np.floor([x]), np.floor([z]))[0])]

    def _heights(self, x: np.ndarray, z: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Integer surface height (y of the top terrain block) per column."""
        s = self.seed * 8
        cont = fbm(x, z, 240.0, 4, s + 3)
        det = fbm(x, z, 44.0, 3, s + 4)
        hill = smoothstep(0.5, 0.64, fbm(x, z, 280.0, 2, s + 5))
        mnt = fbm(x, z, 64.0, 4, s + 6)
        h = SEA - 1.0 + (cont - 0.44) * 36.0 + (det - 0.5) * 9.0 + hill * np.maximum(mnt - 0.32, 0.0) * 75.0
        # Terraces in the hills: flat steps joined by near-vertical risers read as stone cliffs.
        step = 5.0
        hs = h / step
        terraced = (np.floor(hs) + smoothstep(0.72, 0.95, hs - np.floor(hs))) * step
        cliff = hill * smoothstep(0.45, 0.6, fbm(x, z, 120.0, 2, s + 7))
        h = h + (terraced - h) * cliff
        # Deserts are flatter (dunes); blended over the climate so biome borders stay continuous.
        dry = smoothstep(0.57, 0.62, t)
        dunes = SEA + 2.0 + (det - 0.5) * 7.0 + np.maximum(h - SEA - 2.0, 0.0) * 0.35
        h = h + (dunes - h) * dry * (1.0 - hill * 0.6)
        return np.clip(np.floor(h), 3, HEIGHT - 14).astype(np.int64)

    def _columns(self, x: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """For integer column arrays [..., n, m] (a grid with a 1-column border used only for slopes):
        heights, biomes, top block and steepness of the inner [n-2, m-2] columns."""
        xf = x.astype(np.float64)
        zf = z.astype(np.float64)
        t, m = self._climate(xf, zf)
        h = self._heights(xf, zf, t)
        b = self._biome_from_climate(t, m)
        inner = (slice(1, -1), slice(1, -1))
        hc = h[inner]
        slope = np.maximum.reduce([np.abs(hc - h[:-2, 1:-1]), np.abs(hc - h[2:, 1:-1]),
                                   np.abs(hc - h[1:-1, :-2]), np.abs(hc - h[1:-1, 2:])])
        return hc, b[inner], slope, self._top_block(hc, b[inner], slope, xf[inner], zf[inner])

    def _top_block(self, h: np.ndarray, b: np.ndarray, slope: np.ndarray, x: np.ndarray,
                   z: np.ndarray) -> np.ndarray:
        top = np.full(h.shape, B.GRASS, dtype=np.uint8)
        top[b == SNOW] = B.SNOWY_GRASS
        top[b == DESERT] = B.SAND
        beach = (h >= SEA - 3) & (h <= SEA) & (b != SNOW)
        top[beach] = B.SAND
        deep = h < SEA - 3
        gravelly = uniform2(np.floor(x / 3).astype(np.int64), np.floor(z / 3).astype(np.int64),
                            self.seed + 99) < 0.5
        top[deep] = np.where(gravelly[deep], B.GRAVEL, np.where(b[deep] == DESERT, B.SAND, B.DIRT))
        rocky = ((slope >= 3) | (h > SEA + 21)) & ~deep
        top[rocky & (b != DESERT)] = B.STONE
        top[rocky & (b == DESERT)] = B.SANDSTONE
        top[(h > SEA + 16) & (b == SNOW)] = B.SNOW
        return top

    # ------------------------------------------------------------------ chunks

    def chunk(self, cx: int, cz: int) -> np.ndarray:
        """Block ids uint8 [16 (x), 16 (z), HEIGHT (y)] of chunk (cx, cz), generated on first use."""
        key = (int(cx), int(cz))
        c = self._chunks.get(key)
        if c is not None:
            self._chunks.move_to_end(key)
            return c
        c = self._generate_chunk(*key)
        self._chunks[key] = c
        if len(self._chunks) > self._max_chunks:
            self._chunks.popitem(last=False)
        return c

    def _generate_chunk(self, cx: int, cz: int) -> np.ndarray:
        x0, z0 = cx * CHUNK, cz * CHUNK
        m = _TREE_MARGIN
        # Columns of the chunk plus the tree margin, with the one-column border _columns needs for slopes.
        gx, gz = np.meshgrid(np.arange(x0 - m - 1, x0 + CHUNK + m + 1),
                             np.arange(z0 - m - 1, z0 + CHUNK + m + 1), indexing="ij")  # [24, 24]
        hm, bm, slm, topm = self._columns(gx, gz)  # [22, 22] each: chunk plus margin
        inner = (slice(m, m + CHUNK), slice(m, m + CHUNK))
        h, b, top = hm[inner], bm[inner], topm[inner]
        y = np.arange(HEIGHT)[None, None, :]
        h3 = h[..., None]
        b3 = b[..., None]
        ids = np.full((CHUNK, CHUNK, HEIGHT), B.STONE, dtype=np.uint8)
        filler = np.where(top[..., None] == B.SNOWY_GRASS, B.DIRT, top[..., None])
        filler = np.where(filler == B.GRASS, B.DIRT, filler)
        filler = np.where(filler == B.SNOW, B.STONE, filler)
        ids = np.where((y < h3) & (y >= h3 - 3), filler, ids)
        ids = np.where((y < h3 - 3) & (y >= h3 - 7) & (b3 == DESERT), B.SANDSTONE, ids)
        ids = np.where(y == h3, top[..., None], ids)
        ids = np.where(y > h3, B.AIR, ids)
        water = (y > h3) & (y < SEA)
        ids = np.where(water, B.WATER, ids)
        ids = np.where(water & (y == SEA - 1) & (b3 == SNOW), B.ICE, ids).astype(np.uint8)
        self._place_features(ids, x0, z0, hm, bm, slm, topm)
        return ids

    def _place_features(self, ids: np.ndarray, x0: int, z0: int, hm: np.ndarray, bm: np.ndarray,
                        slm: np.ndarray, topm: np.ndarray) -> None:
        """Trees and cacti whose blocks reach into this chunk (their roots may lie in a neighbour).
        hm, bm, slm, topm: column data of the chunk plus a _TREE_MARGIN border."""
        m = _TREE_MARGIN
        c0, c1 = (x0 - m) // _TREE_CELL, (x0 + CHUNK - 1 + m) // _TREE_CELL
        d0, d1 = (z0 - m) // _TREE_CELL, (z0 + CHUNK - 1 + m) // _TREE_CELL
        cgx, cgz = np.meshgrid(np.arange(c0, c1 + 1), np.arange(d0, d1 + 1), indexing="ij")
        cgx, cgz = cgx.ravel(), cgz.ravel()
        ox = (uniform2(cgx, cgz, self.seed + 502) * _TREE_CELL).astype(np.int64)
        oz = (uniform2(cgx, cgz, self.seed + 503) * _TREE_CELL).astype(np.int64)
        tx, tz = cgx * _TREE_CELL + ox, cgz * _TREE_CELL + oz
        lx, lz = tx - (x0 - m), tz - (z0 - m)
        ok = (lx >= 0) & (lx < CHUNK + 2 * m) & (lz >= 0) & (lz < CHUNK + 2 * m)
        tx, tz, lx, lz = tx[ok], tz[ok], lx[ok], lz[ok]
        h, b, slope, top = hm[lx, lz], bm[lx, lz], slm[lx, lz], topm[lx, lz]
        r = uniform2(tx, tz, self.seed + 501)
        kind = uniform2(tx, tz, self.seed + 504)
        keep = (r < _FEATURE_P[b]) & (h >= SEA) & (slope <= 2)
        keep &= np.where(b == DESERT, top == B.SAND, (top == B.GRASS) | (top == B.SNOWY_GRASS))
        logs: list[np.ndarray] = []
        leaves: list[np.ndarray] = []
        for i in np.flatnonzero(keep):
            x, y, z = int(tx[i]), int(h[i]) + 1, int(tz[i])
            if b[i] == DESERT:
                logs.append(np.array([[x, y + k, z, B.CACTUS] for k in range(1 + int(kind[i] * 3))]))
                continue
            lg, lv = (_spruce if b[i] == SNOW else _oak)(x, y, z, float(kind[i]), self.seed)
            logs.append(lg)
            leaves.append(lv)
        for group, only_air in ((leaves, True), (logs, False)):
            if not group:
                continue
            blk = np.concatenate(group)  # [n, 4] x, y, z, id
            bx, by, bz = blk[:, 0] - x0, blk[:, 1], blk[:, 2] - z0
            inside = (bx >= 0) & (bx < CHUNK) & (bz >= 0) & (bz < CHUNK) & (by >= 0) & (by < HEIGHT)
            bx, by, bz, bid = bx[inside], by[inside], bz[inside], blk[inside, 3]
            if only_air:
                free = ids[bx, bz, by] == B.AIR
                bx, by, bz, bid = bx[free], by[free], bz[free], bid[free]
            ids[bx, bz, by] = bid.astype(np.uint8)

    # ------------------------------------------------------------------ block queries

    def blocks_box(self, x0: int, y0: int, z0: int, sx: int, sy: int, sz: int) -> np.ndarray:
        """Block ids [sx, sy, sz] (x, y, z order) of the box starting at integer (x0, y0, z0); air above
        the world, stone below it."""
        out = np.empty((sx, sy, sz), dtype=np.uint8)
        ys = np.arange(y0, y0 + sy)
        yc = np.clip(ys, 0, HEIGHT - 1)
        for cx in range(x0 // CHUNK, (x0 + sx - 1) // CHUNK + 1):
            for cz in range(z0 // CHUNK, (z0 + sz - 1) // CHUNK + 1):
                c = self.chunk(cx, cz)
                ax0, ax1 = max(x0, cx * CHUNK), min(x0 + sx, (cx + 1) * CHUNK)
                az0, az1 = max(z0, cz * CHUNK), min(z0 + sz, (cz + 1) * CHUNK)
                sub = c[ax0 - cx * CHUNK:ax1 - cx * CHUNK, az0 - cz * CHUNK:az1 - cz * CHUNK][:, :, yc]
                out[ax0 - x0:ax1 - x0, :, az0 - z0:az1 - z0] = sub.transpose(0, 2, 1)
        out[:, ys >= HEIGHT, :] = B.AIR
        out[:, ys < 0, :] = B.STONE
        return out

    def set_block(self, x: int, y: int, z: int, block: int) -> None:
        """Change one block (scenarios and tests; generated episodes never edit the world)."""
        if not 0 <= y < HEIGHT:
            raise ValueError(f"y={y} outside the world (0..{HEIGHT - 1})")
        self.chunk(x // CHUNK, z // CHUNK)[x % CHUNK, z % CHUNK, y] = block
        self._windows.clear()

    def block(self, x: int, y: int, z: int) -> int:
        if y < 0:
            return B.STONE
        if y >= HEIGHT:
            return B.AIR
        return int(self.chunk(x // CHUNK, z // CHUNK)[x % CHUNK, z % CHUNK, y])

    def surface_y(self, x: int, z: int) -> int:
        """y of the highest non-air block of column (x, z)."""
        col = self.chunk(x // CHUNK, z // CHUNK)[x % CHUNK, z % CHUNK]
        return int(np.flatnonzero(col != B.AIR)[-1])

    def window(self, cx: int, cz: int, radius: int) -> Window:
        """The Window of chunks within `radius` chunks of (cx, cz) (cached, a few kept)."""
        key = (int(cx), int(cz), int(radius))
        w = self._windows.get(key)
        if w is not None:
            self._windows.move_to_end(key)
            return w
        n = 2 * radius + 1
        hp = HEIGHT + PAD_Y
        ids = np.zeros((n * CHUNK, n * CHUNK, hp), dtype=np.uint8)
        biome = np.zeros((n * CHUNK, n * CHUNK), dtype=np.uint8)
        x0, z0 = (cx - radius) * CHUNK, (cz - radius) * CHUNK
        for i in range(n):
            for j in range(n):
                ids[i * CHUNK:(i + 1) * CHUNK, j * CHUNK:(j + 1) * CHUNK, :HEIGHT] = \
                    self.chunk(cx - radius + i, cz - radius + j)
        gx, gz = np.meshgrid(np.arange(x0, x0 + n * CHUNK), np.arange(z0, z0 + n * CHUNK), indexing="ij")
        biome[:] = self.biomes(gx, gz)
        flat = ids.reshape(-1)  # [X * Z * hp]
        nt = n * CHUNK // TILE
        col_top = np.where((ids != B.AIR).any(axis=2), hp - np.argmax((ids != B.AIR)[:, :, ::-1], axis=2), 0)
        tile_top = col_top.reshape(nt, TILE, nt, TILE).max(axis=(1, 3)).astype(np.float32)  # [nt, nt]
        # Bit y of a column's uint64 = a block at layer y (HEIGHT is 64, so the layers fit one word).
        col_bits = np.packbits(ids[:, :, :HEIGHT] != B.AIR, axis=2, bitorder="little")  # [X, Z, 8]
        col_bits = col_bits.view("<u8")[..., 0]  # [X, Z]
        tile_mask = np.bitwise_or.reduce(col_bits.reshape(nt, TILE, nt, TILE), axis=(1, 3))  # [nt, nt]
        w = Window(x0=x0, z0=z0, ids=ids, occ=flat != B.AIR, occ_dry=B.SOLID[flat], ids_flat=flat,
                   biome_cols=biome.reshape(-1), sx=n * CHUNK * hp, sz=hp,
                   top=int(np.flatnonzero((ids != B.AIR).any(axis=(0, 1)))[-1]) + 1,
                   tile_top=tile_top.reshape(-1), tile_mask=tile_mask.reshape(-1).astype(np.uint64), ntz=nt)
        self._windows[key] = w
        if len(self._windows) > self._max_windows:
            self._windows.popitem(last=False)
        return w

    # ------------------------------------------------------------------ spawning

    def spawn(self, rng_or_seed: int | np.random.Generator = 0, biome: str | None = None,
              radius: int = 30000) -> PlayerState:
        """A standing start on dry ground with head room, at a random place (in `biome` if given),
        random yaw and a level-ish pitch."""
        rng = rng_or_seed if isinstance(rng_or_seed, np.random.Generator) else \
            np.random.default_rng(int(rng_or_seed))
        if biome is not None and biome not in BIOMES:
            raise ValueError(f"unknown biome {biome!r}; choose from {BIOMES}")
        # Start on the biome's own ground, below the mountain tops, like a player who just arrived.
        natural = {B.GRASS, B.SAND, B.SNOWY_GRASS, B.SNOW}
        for _ in range(5000):
            x, z = (int(v) for v in rng.integers(-radius, radius, size=2))
            if biome is not None and self.biome_at(x, z) != biome:
                continue
            y = self.surface_y(x, z)
            if self.block(x, y, z) not in natural or not SEA <= y <= SEA + 14:
                continue
            box = self.blocks_box(x - 1, y + 1, z - 1, 3, 3, 3)
            if (box != B.AIR).any():
                continue
            return PlayerState(pos=(x + 0.5, float(y + 1), z + 0.5), vel=(0.0, 0.0, 0.0),
                               yaw=float(rng.uniform(-180.0, 180.0)), pitch=float(rng.uniform(-5.0, 15.0)),
                               on_ground=True, in_water=False, sneak=0.0, tick=0)
        raise RuntimeError(f"World({self.seed}): no spawn point found"
                           + (f" in biome {biome!r}" if biome else ""))


class FlatWorld(World):
    """Flat grass at y = SEA (the top block) over stone, nothing else: a clean stage for physics tests
    and scenarios built with set_block. Biomes still follow the seed (they only tint the grass)."""

    def _generate_chunk(self, cx: int, cz: int) -> np.ndarray:
        ids = np.zeros((CHUNK, CHUNK, HEIGHT), dtype=np.uint8)
        ids[:, :, :SEA] = B.STONE
        ids[:, :, SEA - 3:SEA] = B.DIRT
        ids[:, :, SEA] = B.GRASS
        return ids


def _hash01(*v: int) -> float:
    """A cheap deterministic [0, 1) hash of a few ints (leaf corners: too many calls for numpy)."""
    h = 0x345678
    for k in v:
        h = ((h ^ (k & 0xFFFFFFFF)) * 0x01000193 + 0x9E3779B9) & 0xFFFFFFFF
        h ^= h >> 15
    return ((h * 0x2C1B3C6D) & 0xFFFFFFFF) / 4294967296.0


def _oak(x: int, y: int, z: int, r: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Minecraft's oak: 4-6 log trunk, two 5x5 leaf layers (corners sometimes missing), a 3x3 and a plus."""
    th = 4 + int(r * 3)
    logs = np.array([[x, y + k, z, B.OAK_LOG] for k in range(th)])
    lv = []
    top = y + th - 1
    for ly, rad in ((top - 2, 2), (top - 1, 2), (top, 1), (top + 1, 1)):
        for dx in range(-rad, rad + 1):
            for dz in range(-rad, rad + 1):
                corner = abs(dx) == rad and abs(dz) == rad
                if corner and (ly >= top or _hash01(seed, x + dx, ly, z + dz) < 0.5):
                    continue
                lv.append([x + dx, ly, z + dz, B.OAK_LEAVES])
    return logs, np.array(lv)


def _spruce(x: int, y: int, z: int, r: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A spruce: 6-8 log trunk under a cone of leaves with alternating radii."""
    th = 6 + int(r * 3)
    logs = np.array([[x, y + k, z, B.SPRUCE_LOG] for k in range(th)])
    lv = [[x, y + th, z, B.SPRUCE_LEAVES]]
    radii = [1, 0, 1, 2, 1, 2, 1, 2]
    for i, ly in enumerate(range(y + th - 1, y + 1, -1)):
        rad = radii[min(i, len(radii) - 1)]
        for dx in range(-rad, rad + 1):
            for dz in range(-rad, rad + 1):
                if rad == 2 and abs(dx) == 2 and abs(dz) == 2:
                    continue
                if rad == 1 and abs(dx) == 1 and abs(dz) == 1 and i < 2:
                    continue
                lv.append([x + dx, ly, z + dz, B.SPRUCE_LEAVES])
    return logs, np.array(lv)
