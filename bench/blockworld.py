"""Block-world speed: frames/s of render, step and render+step at 128x72 on one core. Prints JSON.

    taskset -c 0 .venv/bin/python -m bench.blockworld [--seconds 10] [--repeats 3] [--size 128x72]

One episode per biome is driven by the generator's policy (blockworld.policy). `render` and `step` are
timed separately over the recorded states and actions, `render_step` times the whole loop as the
generator runs it (chunks already generated: `warm`), and `render_step_cold` includes generating the
terrain from a fresh World. Each figure is the best of --repeats runs (the machine may be shared), and
both wall-clock and CPU-time rates are given.
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from actions import noop  # noqa: E402
from config import main_config, parse_size, to_dict  # noqa: E402
from action_scripts import TICK_HZ  # noqa: E402


@dataclass
class BenchConfig:
    seconds: float = 10.0
    """Length of each biome's episode (16 frames per second)."""
    repeats: int = 3
    """Timed runs per figure; the best is reported."""
    size: str = "128x72"
    """Frame size WIDTHxHEIGHT."""
    seed: int = 0
    """World seed."""


def _machine() -> dict[str, object]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    affinity = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {"cpu": cpu, "cores": os.cpu_count(), "affinity": affinity,
            "load_average": [round(v, 2) for v in os.getloadavg()], "python": platform.python_version(),
            "numpy": np.__version__, "platform": platform.platform()}


def _best(fn, repeats: int) -> tuple[float, float]:
    """(best wall seconds, best CPU seconds) of fn() over `repeats` runs."""
    wall, cpu = float("inf"), float("inf")
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall = min(wall, time.perf_counter() - w0)
        cpu = min(cpu, time.process_time() - c0)
    return wall, cpu


def main() -> None:
    from blockworld import BIOMES, World, render, step
    from blockworld.policy import GameFactoryPolicy

    cfg = main_config(BenchConfig)
    size = parse_size(cfg.size, even=True)
    n = int(round(cfg.seconds * TICK_HZ))
    episodes = []
    for k, biome in enumerate(BIOMES):
        rng = np.random.default_rng([cfg.seed, k])
        world = World(cfg.seed)
        start = world.spawn(rng, biome=biome)
        policy = GameFactoryPolicy(rng)
        states, actions = [start], [noop()]
        for _ in range(n - 1):
            actions.append(policy.next(states[-1]))
            states.append(step(world, states[-1], actions[-1]))
        for s in states:  # generate every chunk the episode needs before timing
            render(world, s, size)
        episodes.append((biome, world, start, states, actions))

    def run_render() -> None:
        for _, world, _, states, _ in episodes:
            for s in states:
                render(world, s, size)

    def run_step() -> None:
        for _, world, start, _, actions in episodes:
            s = start
            for a in actions[1:]:
                s = step(world, s, a)

    def run_both(fresh: bool) -> None:
        for _, world, start, _, actions in episodes:
            w = World(cfg.seed) if fresh else world
            s = start
            render(w, s, size)
            for a in actions[1:]:
                s = step(w, s, a)
                render(w, s, size)

    frames = n * len(episodes)
    steps = (n - 1) * len(episodes)
    out: dict[str, object] = {"size": list(size), "frames": frames, "biomes": list(BIOMES)}
    for name, fn, count in (("render", run_render, frames), ("step", run_step, steps),
                            ("render_step", lambda: run_both(False), frames),
                            ("render_step_cold", lambda: run_both(True), frames)):
        wall, cpu = _best(fn, cfg.repeats)
        out[f"{name}_fps"] = round(count / wall, 1)
        out[f"{name}_fps_cpu"] = round(count / cpu, 1)
    per_biome, per_biome_cpu = {}, {}
    for biome, world, _, states, _ in episodes:
        wall, cpu = _best(lambda: [render(world, s, size) for s in states], cfg.repeats)
        per_biome[biome] = round(len(states) / wall, 1)
        per_biome_cpu[biome] = round(len(states) / cpu, 1)
    out["render_fps_by_biome"] = per_biome
    out["render_fps_cpu_by_biome"] = per_biome_cpu
    out["config"] = to_dict(cfg)
    out["machine"] = _machine()
    out["date"] = datetime.datetime.now().isoformat(timespec="seconds")
    out["headline"] = {k: out[k] for k in ("render_step_fps", "render_step_fps_cpu", "render_fps", "step_fps")}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
