"""Generate a block-world dataset in GameFactory's layout.

    python -m blockworld.generate --out DIR --episodes N --seconds S --seed K [--size WxH] [--workers W]

writes DIR/video/seed_K_part_i.mp4 (H.264, 16 fps), DIR/metadata/seed_K_part_i.json and
DIR/annotation.csv. Entry str(i) of the JSON's `actions` is the action that produced frame i: entry "0"
belongs to the first frame (a no-op: the episode's start), so an episode of S seconds has 16*S frames and
as many entries. The JSON's `blockworld` section (world seed, start state, render version) lets
`blockworld.episode_start` re-create the start exactly; rolling the JSON's actions 1.. through the oracle
reproduces frames 1.. . Episode i starts in biome BIOMES[(K + i) % 4], at a random place of world K; its
random generator is seeded with [K, i] (stored as blockworld.seed).
"""
from __future__ import annotations

import csv
import io
import json
import multiprocessing as mp
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from actions import noop, to_gamefactory
from ckpt_io import atomic_write_json, atomic_write_text
from config import main_config, parse_size, save_config, to_dict
from video_io import write_mp4

from .physics import TICKS_PER_SECOND, step
from .policy import GameFactoryPolicy
from .renderer import RENDER_VERSION, render
from .world import BIOMES, World

ANNOTATION_HEADER = ["Original video name", "Start frame index", "End frame index", "Prompt"]


@dataclass
class GenerateConfig:
    out: str = "runs/blockworld"
    """Output folder (GameFactory layout: video/, metadata/, annotation.csv)."""
    episodes: int = 8
    """Number of episodes (videos) to write."""
    seconds: float = 10.0
    """Length of each episode in seconds (16 frames per second)."""
    seed: int = 0
    """World seed K: names are seed_K_part_i; also seeds every episode's start and actions."""
    size: str = "128x72"
    """Frame size WIDTHxHEIGHT (even numbers, for H.264 yuv420p)."""
    workers: int = 1
    """Parallel processes (one episode each at a time)."""
    first_part: int = 0
    """Index i of the first episode, to add episodes to an existing dataset."""
    crf: int = 18
    """H.264 constant rate factor (lower is higher quality)."""


def episode_name(seed: int, part: int) -> str:
    return f"seed_{seed}_part_{part}"


def episode_frames(cfg: GenerateConfig, part: int, meta: dict[str, Any],
                   raw_actions: list[np.ndarray] | None = None) -> Iterator[np.ndarray]:
    """Simulate episode `part`, yielding its frames; fills `meta` (GameFactory JSON) as it goes and, if
    given, `raw_actions` with the raw action [9] behind each frame (a no-op for frame 0)."""
    size = parse_size(cfg.size, even=True)
    n = int(round(cfg.seconds * TICKS_PER_SECOND))
    rng = np.random.default_rng([cfg.seed, part])
    biome = BIOMES[(cfg.seed + part) % len(BIOMES)]
    world = World(cfg.seed)
    state = world.spawn(rng, biome=biome)
    policy = GameFactoryPolicy(rng)
    actions: dict[str, Any] = {}
    meta.update({"biome": world.biome_at(state.pos[0], state.pos[2]), "initial_weather": "clear",
                 "start_time": "Noon", "actions": actions,
                 "blockworld": {"render_version": RENDER_VERSION, "seed": [cfg.seed, part],
                                "world_seed": cfg.seed, "part": part,
                                "spawn": state.to_dict(), "size": list(size), "fps": TICKS_PER_SECOND,
                                "policy": "gamefactory_isolated_actions"}})
    action = noop()
    for i in range(n):
        if i > 0:
            action = policy.next(state)
            state = step(world, state, action)
        actions[str(i)] = to_gamefactory(action, state.yaw, state.pitch, state.pos)
        if raw_actions is not None:
            raw_actions.append(action)
        yield render(world, state, size)


def write_episode(cfg: GenerateConfig, part: int, progress: Any = None) -> dict[str, Any]:
    """Write one episode's mp4 and JSON (each atomically). Returns a summary; raises on failure."""
    out = Path(cfg.out)
    name = episode_name(cfg.seed, part)
    meta: dict[str, Any] = {}
    t = time.perf_counter()

    def frames() -> Iterator[np.ndarray]:
        for f in episode_frames(cfg, part, meta):
            if progress is not None:
                progress(1)
            yield f

    n = write_mp4(out / "video" / f"{name}.mp4", frames(), fps=TICKS_PER_SECOND, crf=cfg.crf)
    atomic_write_json(out / "metadata" / f"{name}.json", meta)
    return {"name": name, "frames": n, "biome": meta["biome"], "seconds": time.perf_counter() - t}


def _worker(args: tuple[dict[str, Any], int]) -> dict[str, Any]:
    cfg_dict, part = args
    cfg = GenerateConfig(**cfg_dict)
    try:
        return write_episode(cfg, part)
    except Exception as e:  # one bad episode must not stop the others; reported at the end
        return {"name": episode_name(cfg.seed, part), "error": f"{type(e).__name__}: {e}",
                "traceback": traceback.format_exc()}


def write_annotation(out: Path, results: list[dict[str, Any]]) -> None:
    """annotation.csv: keep rows of other videos already there, replace or add this run's."""
    path = out / "annotation.csv"
    rows: dict[str, list[str]] = {}
    if path.is_file():
        with open(path, newline="") as f:
            for row in list(csv.reader(f))[1:]:
                if row:
                    rows[row[0]] = row
    for r in results:
        if "error" in r:
            continue
        video = f"{r['name']}.mp4"
        rows[video] = [video, "0", str(r["frames"] - 1),
                       f"First-person view of a player in a {r['biome']} block world."]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(ANNOTATION_HEADER)
    for key in sorted(rows):
        writer.writerow(rows[key])
    atomic_write_text(path, buf.getvalue())


def run(cfg: GenerateConfig) -> list[dict[str, Any]]:
    from tqdm import tqdm

    parse_size(cfg.size, even=True)
    if cfg.episodes < 1 or cfg.seconds <= 0 or cfg.workers < 1:
        raise ValueError("--episodes and --workers must be >= 1 and --seconds > 0")
    out = Path(cfg.out)
    (out / "video").mkdir(parents=True, exist_ok=True)
    (out / "metadata").mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "blockworld_generate.json")
    parts = list(range(cfg.first_part, cfg.first_part + cfg.episodes))
    n_frames = int(round(cfg.seconds * TICKS_PER_SECOND))
    results: list[dict[str, Any]] = []
    start = time.perf_counter()
    with tqdm(total=n_frames * len(parts), unit="frame", desc="blockworld", file=sys.stderr) as bar:
        def tick(k: int) -> None:
            bar.update(k)
            bar.set_postfix(fps=f"{bar.n / max(time.perf_counter() - start, 1e-9):.0f}", refresh=False)

        if cfg.workers == 1:
            for part in parts:
                try:
                    results.append(write_episode(cfg, part, tick))
                except Exception as e:  # report and carry on with the other episodes
                    results.append({"name": episode_name(cfg.seed, part), "error": f"{type(e).__name__}: {e}",
                                    "traceback": traceback.format_exc()})
        else:
            ctx = mp.get_context("spawn")
            with ctx.Pool(cfg.workers) as pool:
                for r in pool.imap_unordered(_worker, [(to_dict(cfg), p) for p in parts]):
                    results.append(r)
                    if "error" not in r:
                        tick(r["frames"])
    write_annotation(out, results)
    return results


def main() -> int:
    cfg = main_config(GenerateConfig)
    try:
        results = run(cfg)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    failed = [r for r in results if "error" in r]
    ok = [r for r in results if "error" not in r]
    frames = sum(r["frames"] for r in ok)
    print(json.dumps({"out": cfg.out, "episodes": len(ok), "frames": frames, "failed": len(failed),
                      "biomes": sorted({r["biome"] for r in ok})}))
    for r in failed:
        print(f"FAILED {r['name']}: {r['error']}\n{r['traceback']}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
