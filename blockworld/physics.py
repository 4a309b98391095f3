"""Player movement at 16 ticks/s with Minecraft's numbers.

Minecraft runs 20 ticks/s. Rather than alternate one and two of its ticks per frame (uneven motion), the
per-tick constants are rescaled to 16 Hz: decay factors become f ** (20/16), gravity keeps its 32
blocks/s^2, and the jump speed is fitted so that a jump peaks at Minecraft's 1.25 blocks and lands after
about 0.6 s. Terminal speeds (walk 4.317, sprint 5.612, sneak 1.295 blocks/s, about 2 in water) are
Minecraft's.

Order within a tick is Minecraft's: camera, input to velocity (a jump sets the vertical speed), a move
with collisions (y, then x, then z, against the 0.6 x 1.8 hitbox; stepping up 0.6-block ledges; sneaking
stops at edges), then gravity and drag for the next tick.
"""
from __future__ import annotations

import math

import numpy as np

from actions import RAW, RAW_DIM
from action_scripts import TICK_HZ

from . import blocks as B
from .state import PlayerState
from .world import World

TICKS_PER_SECOND = int(TICK_HZ)
_R = 20.0 / TICKS_PER_SECOND  # Minecraft ticks per Ochre tick

WALK_SPEED = 4.317
"""blocks/s"""
SPRINT_FACTOR = 1.3  # 5.612 / 4.317
SNEAK_FACTOR = 0.3  # 1.295 / 4.317
WATER_FACTOR = 0.456  # walking in water: about 1.97 blocks/s

GROUND_KEEP = 0.546 ** _R
"""Fraction of horizontal velocity kept per tick on the ground (block slipperiness 0.6 x 0.91)."""
AIR_KEEP = 0.91 ** _R
WATER_KEEP = 0.8 ** _R
GRAVITY = 0.08 * _R * _R
"""blocks/tick^2 (32 blocks/s^2, as in Minecraft)."""
DRAG = 0.98 ** _R
JUMP_SPEED = 0.5125
"""blocks/tick: fitted so the jump's peak is 1.25 blocks (Minecraft: 0.42 blocks per 1/20 s tick)."""
SWIM_SPEED = 0.1
"""blocks/tick up while holding jump in water, and down otherwise (about 1.6 blocks/s)."""
WATER_EXIT_SPEED = 0.3 * _R
STEP_HEIGHT = 0.6
HALF_WIDTH = 0.3
BODY_HEIGHT = 1.8
_EPS = 1e-7


def _wrap_yaw(yaw: float) -> float:
    # Only shift when out of range: adding and removing 180 would round the angle on every tick.
    while yaw >= 180.0:
        yaw -= 360.0
    while yaw < -180.0:
        yaw += 360.0
    return yaw


class _Blocks:
    """Solid and water cells around the player for one tick (a small box read from the world)."""

    def __init__(self, world: World, lo: np.ndarray, hi: np.ndarray) -> None:
        self.x0, self.y0, self.z0 = (int(math.floor(v)) - 1 for v in lo)
        x1, y1, z1 = (int(math.floor(v)) + 2 for v in hi)
        ids = world.blocks_box(self.x0, self.y0, self.z0, x1 - self.x0, y1 - self.y0, z1 - self.z0)
        off = np.array([self.x0, self.y0, self.z0], dtype=np.float64)
        self.solid = np.argwhere(B.SOLID[ids]).astype(np.float64) + off  # [M, 3] min corners
        self.water = np.argwhere(ids == B.WATER).astype(np.float64) + off

    @staticmethod
    def _overlapping(cells: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        return ((cells < hi[None, :] - _EPS) & (cells + 1 > lo[None, :] + _EPS)).all(axis=1)

    def collides(self, lo: np.ndarray, hi: np.ndarray) -> bool:
        return bool(self._overlapping(self.solid, lo, hi).any())

    def in_water(self, lo: np.ndarray, hi: np.ndarray) -> bool:
        return bool(self._overlapping(self.water, lo, hi).any())

    def clip(self, lo: np.ndarray, hi: np.ndarray, axis: int, delta: float) -> float:
        """Largest move along `axis` (towards delta) before the box touches a solid cell."""
        if delta == 0.0 or self.solid.shape[0] == 0:
            return delta
        o1, o2 = [a for a in range(3) if a != axis]
        c = self.solid
        side = (c[:, o1] < hi[o1] - _EPS) & (c[:, o1] + 1 > lo[o1] + _EPS) & \
               (c[:, o2] < hi[o2] - _EPS) & (c[:, o2] + 1 > lo[o2] + _EPS)
        ca = c[side, axis]
        if delta > 0:
            ahead = ca[ca >= hi[axis] - _EPS]
            if ahead.size:
                delta = min(delta, float(ahead.min()) - hi[axis])
        else:
            ahead = ca[ca + 1 <= lo[axis] + _EPS] + 1
            if ahead.size:
                delta = max(delta, float(ahead.max()) - lo[axis])
        return delta


def _box(pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lo = np.array([pos[0] - HALF_WIDTH, pos[1], pos[2] - HALF_WIDTH])
    hi = np.array([pos[0] + HALF_WIDTH, pos[1] + BODY_HEIGHT, pos[2] + HALF_WIDTH])
    return lo, hi


def _move(blk: _Blocks, lo: np.ndarray, hi: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """Collide-and-slide: y, then x, then z. Returns the actual displacement."""
    out = np.zeros(3)
    lo, hi = lo.copy(), hi.copy()
    for axis in (1, 0, 2):
        m = blk.clip(lo, hi, axis, float(delta[axis]))
        out[axis] = m
        lo[axis] += m
        hi[axis] += m
    return out


def _back_off_edges(blk: _Blocks, lo: np.ndarray, hi: np.ndarray, dx: float, dz: float) -> tuple[float, float]:
    """Sneaking on the ground: shorten the move so the hitbox keeps something to stand on (Minecraft's
    maybeBackOffFromEdge, in 0.05-block steps)."""
    def supported(ox: float, oz: float) -> bool:
        off = np.array([ox, -STEP_HEIGHT, oz])
        return blk.collides(lo + off, hi + off)

    def shrink(v: float) -> float:
        return 0.0 if abs(v) < 0.05 else v - math.copysign(0.05, v)

    while dx != 0.0 and not supported(dx, 0.0):
        dx = shrink(dx)
    while dz != 0.0 and not supported(0.0, dz):
        dz = shrink(dz)
    while dx != 0.0 and dz != 0.0 and not supported(dx, dz):
        dx, dz = shrink(dx), shrink(dz)
    return dx, dz


def step(world: World, state: PlayerState, action: np.ndarray) -> PlayerState:
    """Advance one 1/16 s tick under a raw action [9] (actions.py). Returns a new state; deterministic."""
    a = np.asarray(action, dtype=np.float64).reshape(-1)
    if a.shape[0] != RAW_DIM or not np.isfinite(a).all():
        raise ValueError(f"step: action must be {RAW_DIM} finite numbers, got {action!r}")
    keys = np.clip(a[2:], 0.0, 1.0)
    fwd_k, back_k, left_k, right_k, jump_k, sneak_k, sprint_k = (float(v) for v in keys)

    yaw = _wrap_yaw(state.yaw + float(a[RAW["yaw_deg"]]))
    pitch = min(90.0, max(-90.0, state.pitch + float(a[RAW["pitch_deg"]])))
    jump = jump_k >= 0.5
    sneaking = sneak_k >= 0.5

    # Input -> target horizontal velocity (blocks/tick); diagonal input is normalised as in Minecraft.
    forward, strafe = fwd_k - back_k, right_k - left_k
    norm = math.hypot(forward, strafe)
    if norm > 1.0:
        forward, strafe = forward / norm, strafe / norm
    speed = WALK_SPEED * (1.0 - (1.0 - SNEAK_FACTOR) * sneak_k)
    if forward > 0 and not sneaking:
        speed *= 1.0 + (SPRINT_FACTOR - 1.0) * sprint_k
    if state.in_water:
        speed *= WATER_FACTOR
    ya = math.radians(yaw)
    fx, fz = -math.sin(ya), math.cos(ya)
    rx, rz = -math.cos(ya), -math.sin(ya)
    per_tick = speed / TICKS_PER_SECOND
    tx = per_tick * (forward * fx + strafe * rx)
    tz = per_tick * (forward * fz + strafe * rz)
    keep = WATER_KEEP if state.in_water else GROUND_KEEP if state.on_ground else AIR_KEEP
    vx = keep * state.vel[0] + (1.0 - keep) * tx
    vz = keep * state.vel[2] + (1.0 - keep) * tz
    vy = state.vel[1]
    if state.in_water:
        vy = WATER_KEEP * vy + (1.0 - WATER_KEEP) * (SWIM_SPEED if jump else -SWIM_SPEED)
    elif state.on_ground and jump:
        vy = JUMP_SPEED

    pos = np.array(state.pos, dtype=np.float64)
    lo, hi = _box(pos)
    reach = abs(vx) + abs(vz) + STEP_HEIGHT + 1.0
    blk = _Blocks(world, lo - [reach, reach + abs(vy), reach], hi + [reach, reach + abs(vy), reach])
    dx, dz = vx, vz
    if sneaking and state.on_ground and not state.in_water and vy <= 0:
        dx, dz = _back_off_edges(blk, lo, hi, dx, dz)
    want = np.array([dx, vy, dz])
    moved = _move(blk, lo, hi, want)
    hit_below = want[1] < 0 and moved[1] != want[1]
    blocked_h = moved[0] != want[0] or moved[2] != want[2]
    if blocked_h and (state.on_ground or hit_below):
        # Step up onto ledges up to STEP_HEIGHT: lift, move across, settle back down; keep whichever
        # attempt went further horizontally.
        up = blk.clip(lo, hi, 1, STEP_HEIGHT)
        lo2, hi2 = lo + [0, up, 0], hi + [0, up, 0]
        across = _move(blk, lo2, hi2, np.array([dx, 0.0, dz]))
        lo3, hi3 = lo2 + across, hi2 + across
        down = blk.clip(lo3, hi3, 1, -up + min(want[1], 0.0))
        stepped = across + [0, up + down, 0]
        if stepped[0] ** 2 + stepped[2] ** 2 > moved[0] ** 2 + moved[2] ** 2 + 1e-12:
            moved = stepped
            hit_below = True
            blocked_h = moved[0] != want[0] or moved[2] != want[2]
    pos = pos + moved
    on_ground = bool(hit_below)
    if moved[0] != want[0]:
        vx = 0.0
    if moved[2] != want[2]:
        vz = 0.0
    if moved[1] != want[1]:
        vy = 0.0
    lo, hi = _box(pos)
    shrink = np.array([0.001, 0.001, 0.001])
    in_water = blk.in_water(lo + shrink, hi - shrink)
    if in_water:
        if blocked_h and jump:
            # Climbing out over the edge of a pool, as Minecraft lets you when you swim against a bank.
            vy = WATER_EXIT_SPEED
    else:
        vy = (vy - GRAVITY) * DRAG
    return PlayerState(pos=(float(pos[0]), float(pos[1]), float(pos[2])), vel=(float(vx), float(vy), float(vz)),
                       yaw=float(yaw), pitch=float(pitch), on_ground=on_ground, in_water=bool(in_water),
                       sneak=float(sneak_k), tick=state.tick + 1)
