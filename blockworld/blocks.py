"""Block ids of the block world and their properties."""
from __future__ import annotations

import numpy as np

AIR = 0
GRASS = 1
DIRT = 2
STONE = 3
SAND = 4
WATER = 5
OAK_LOG = 6
OAK_LEAVES = 7
SNOWY_GRASS = 8
CACTUS = 9
SANDSTONE = 10
GRAVEL = 11
SPRUCE_LOG = 12
SPRUCE_LEAVES = 13
ICE = 14
SNOW = 15

NAMES: tuple[str, ...] = (
    "air", "grass", "dirt", "stone", "sand", "water", "oak_log", "oak_leaves", "snowy_grass", "cactus",
    "sandstone", "gravel", "spruce_log", "spruce_leaves", "ice", "snow",
)
NUM_BLOCKS = len(NAMES)

# Solid for the player's hitbox: everything but air and water.
SOLID = np.ones(NUM_BLOCKS, dtype=bool)
SOLID[[AIR, WATER]] = False

# Blocks whose colour is tinted per biome (Minecraft's grass and foliage colour maps).
TINTED = np.zeros(NUM_BLOCKS, dtype=bool)
TINTED[[GRASS, OAK_LEAVES]] = True
