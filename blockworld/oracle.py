"""The ground-truth oracle: roll any action sequence from any state and render the true frames, and
re-create a generated episode's start from its metadata JSON."""
from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

from actions import validate_raw

from .physics import step
from .renderer import DEFAULT_SIZE, RENDER_VERSION, render
from .state import PlayerState
from .world import World


def rollout_states(world: World, state: PlayerState, raw_actions: np.ndarray) -> list[PlayerState]:
    """States after each action: out[i] = step(out[i-1], raw_actions[i]) (out[-1] being `state`)."""
    acts = validate_raw(np.asarray(raw_actions, dtype=np.float32).reshape(-1, 9), "oracle.rollout")
    out = []
    for a in acts:
        state = step(world, state, a)
        out.append(state)
    return out


def rollout(world: World, state: PlayerState, raw_actions: np.ndarray,
            size: tuple[int, int] = DEFAULT_SIZE) -> np.ndarray:
    """True frames uint8 [N, H, W, 3]: frame i is rendered after applying raw_actions[i] ([N, 9])."""
    states = rollout_states(world, state, raw_actions)
    w, h = size
    frames = np.empty((len(states), h, w, 3), dtype=np.uint8)
    for i, s in enumerate(states):
        frames[i] = render(world, s, size)
    return frames


def episode_start(meta: Mapping[str, Any]) -> tuple[World, PlayerState]:
    """(world, state of frame 0) of an episode written by blockworld.generate, from its metadata JSON
    dict. Frame i > 0 of the episode is rollout(world, state, actions[1..i])[-1]."""
    info = meta.get("blockworld")
    if not isinstance(info, Mapping):
        raise ValueError("metadata has no 'blockworld' section: not an episode of blockworld.generate")
    version = info.get("render_version")
    if version != RENDER_VERSION:
        raise ValueError(f"episode was rendered by block-world version {version}, this code renders version "
                         f"{RENDER_VERSION}: its frames cannot be reproduced; regenerate the data")
    try:
        world = World(int(info["world_seed"]))
        state = PlayerState.from_dict(info["spawn"])
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"bad 'blockworld' section in metadata: {e}") from e
    return world, state


def oracle_from(world: World, state: PlayerState, size: tuple[int, int] = DEFAULT_SIZE
                ) -> Callable[[np.ndarray], np.ndarray]:
    """raw actions [N, 9] -> the true frames uint8 [N, H, W, 3] from `state` (the frame after each action)."""
    return lambda actions: rollout(world, state, np.asarray(actions, np.float32), size)


def context_start(world: World, state: PlayerState, actions: np.ndarray, size: tuple[int, int] = DEFAULT_SIZE,
                  render_frames: bool = True) -> tuple[np.ndarray | None, Callable[[np.ndarray], np.ndarray]]:
    """Where a model's rollout starts in the block world: `state` stepped through the context's actions
    [C-1, 9]. Returns the C context frames uint8 [C, H, W, 3] (None unless render_frames) and the oracle
    from the last context frame (oracle_from)."""
    states = [state] + rollout_states(world, state, actions)
    frames = np.stack([render(world, s, size) for s in states]) if render_frames else None
    return frames, oracle_from(world, states[-1], size)
