"""A procedural first-person block world in numpy: terrain, physics, renderer and oracle.

    from blockworld import World, render, step
    world = World(seed)
    state = world.spawn(0)                      # PlayerState
    state = step(world, state, raw_action)      # one 1/16 s tick, raw action as in actions.py
    frame = render(world, state, (128, 72))     # uint8 [72, 128, 3]
"""
from .oracle import context_start, episode_start, oracle_from, rollout, rollout_states
from .physics import TICKS_PER_SECOND, step
from .renderer import DEFAULT_SIZE, RENDER_VERSION, render, render_with_depth
from .state import PlayerState
from .world import BIOMES, FlatWorld, World

__all__ = ["World", "FlatWorld", "PlayerState", "render", "render_with_depth", "step", "rollout", "rollout_states",
           "episode_start", "context_start", "oracle_from", "BIOMES", "DEFAULT_SIZE", "RENDER_VERSION", "TICKS_PER_SECOND"]
