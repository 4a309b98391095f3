"""Where a rollout starts: a `Context` (C frames' tokens, the actions between them and what is known of
the true continuation) built from a --context spec, and the actions it continues with (--actions).

Context specs (`load_context(spec, bundle, frames)`):
    shard:PATH.npz[:START]   C frames of a token shard from START (default 0) with their true actions;
                             the rest of the episode gives the ground truth and the episode's own actions
    video:PATH.mp4[:START]   C frames of a video, encoded with the VQ-VAE; a GameFactory metadata JSON
                             (../metadata/<stem>.json or <stem>.json) supplies the actions, else no-ops
    png:A.png[,B.png,...]    still frames (or a directory of *.png, sorted), encoded; no-op actions between
    blockworld:SEED[:BIOME]  a block-world start frame (spawn of World(SEED), in BIOME if given: plains,
                             forest, desert, snow), then C-1 no-op ticks of the simulator; the oracle renders
                             the ground truth of any action sequence
A video of blockworld.generate (its JSON has a "blockworld" section) also gets the oracle, replayed to the
last context frame, so --compare works with any actions there too.
A bare path ending in .npz, .mp4 or .png (or a directory) is read as the matching kind.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from actions import RAW_DIM, from_gamefactory, noop, validate_raw
from compat import THIS_CODE, IncompatibleError, Side, check_compatible, shards_side, vqvae_side
from rollout import Bundle, decode_tokens, encode_frames


@dataclass
class Context:
    """Where a rollout starts: C frames' tokens and the C-1 raw actions between them, plus what is known of
    the true continuation."""

    tokens: torch.Tensor
    """Context tokens int64 [C, h, w]."""
    actions: np.ndarray
    """Raw actions between the context frames, float32 [C-1, 9]."""
    source: str
    """The spec it came from."""
    episode_actions: np.ndarray | None = None
    """The episode's own raw actions after the context [M, 9] (action n produces future frame n), if known."""
    truth: Callable[[int], np.ndarray] | None = field(default=None, repr=False)
    """n -> the episode's true next n frames, uint8 [n, H, W, 3] (only valid with episode_actions)."""
    oracle: Callable[[np.ndarray], np.ndarray] | None = field(default=None, repr=False)
    """raw actions [N, 9] -> the true frames [N, H, W, 3] for any actions (block world)."""
    frames: np.ndarray | None = field(default=None, repr=False)
    """The context frames as pixels, uint8 [C, H, W, 3], where they came as pixels."""

    def ground_truth(self, actions: np.ndarray, own_actions: bool) -> np.ndarray:
        """True frames for `actions` [N, 9]: from the oracle for any actions, else the episode's own
        frames when `actions` are its own. ValueError when neither is available."""
        n = len(actions)
        if self.oracle is not None and not (own_actions and self.truth is not None):
            return self.oracle(actions)
        if self.truth is None:
            raise ValueError(f"{self.source}: this context has no ground truth to compare with")
        if not own_actions:
            raise ValueError(f"{self.source}: the ground truth exists only for the episode's own actions "
                             f"(--actions episode); a block-world context renders any actions")
        if self.episode_actions is None or n > len(self.episode_actions):
            have = 0 if self.episode_actions is None else len(self.episode_actions)
            raise ValueError(f"{self.source}: the episode has {have} frames after the context, {n} asked for")
        return self.truth(n)


def parse_context_spec(spec: str) -> tuple[str, str, int]:
    """"kind:rest[:START]" or a bare path -> (kind, path-or-seed, start)."""
    kinds = ("shard", "video", "png", "blockworld")
    kind, sep, rest = spec.partition(":")
    if not sep or kind not in kinds:
        p = Path(spec)
        suffix = p.suffix.lower()
        kind = {".npz": "shard", ".mp4": "video", ".png": "png"}.get(suffix, "png" if p.is_dir() else "")
        if not kind:
            raise ValueError(f"context {spec!r}: use shard:PATH.npz[:START], video:PATH.mp4[:START], "
                             f"png:A.png[,B.png...], png:DIR or blockworld:SEED")
        rest = spec
    start = 0
    if kind in ("shard", "video"):
        head, sep2, tail = rest.rpartition(":")
        if sep2 and tail.strip().isdigit():
            rest, start = head, int(tail)
    if kind == "blockworld":
        try:
            int(rest.partition(":")[0])
        except ValueError as e:
            raise ValueError(f"context {spec!r}: blockworld:SEED[:BIOME] needs an integer seed") from e
    return kind, rest, start


def _fit(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from video_io import resize

    return resize(np.ascontiguousarray(frame[..., :3]), size)


def _shard_context(bundle: Bundle, path: Path, start: int, c: int, spec: str) -> Context:
    if not path.is_file():
        raise ValueError(f"{path}: shard not found")
    vq = vqvae_side(bundle.vqvae, bundle.vqvae_path, bundle.vqvae_identity)
    meta_path = path.parent / "meta.json"
    if meta_path.is_file():
        shards = shards_side(json.loads(meta_path.read_text()), path, what="shard")
        check_compatible(shards, THIS_CODE)
        check_compatible(shards, vq)
    try:
        with np.load(path) as z:
            tokens, actions = np.asarray(z["tokens"]), np.asarray(z["actions"], dtype=np.float32)
    except (OSError, KeyError, ValueError) as e:
        raise ValueError(f"{path}: not a readable token shard ({e})") from e
    if tokens.ndim != 3:
        raise ValueError(f"{path}: tokens {tokens.shape} are not [frames, h, w]")
    check_compatible(Side("shard", str(path), grid=tuple(tokens.shape[1:])), vq)
    if int(tokens.max()) >= bundle.codebook_size:
        raise IncompatibleError(f"shard {path} holds code {int(tokens.max())}, beyond the {bundle.codebook_size} "
                                f"codes of VQ-VAE {bundle.vqvae_path}")
    if actions.shape != (tokens.shape[0] - 1, RAW_DIM):
        raise ValueError(f"{path}: actions {actions.shape} do not match {tokens.shape[0]} frames")
    if start < 0 or start + c > tokens.shape[0]:
        raise ValueError(f"{path}: {c} context frames from {start} do not fit in {tokens.shape[0]} frames")
    ctx_tokens = torch.from_numpy(tokens[start:start + c].astype(np.int64))
    future_tokens = tokens[start + c:].astype(np.int64)  # [M, h, w], M = len(episode actions)
    return Context(ctx_tokens, actions[start:start + c - 1], spec, episode_actions=actions[start + c - 1:],
                   truth=lambda n: decode_tokens(bundle, future_tokens[:n]))


def _gamefactory_actions(video: Path) -> tuple[np.ndarray | None, Path | None, dict[str, Any]]:
    """Per-transition raw actions [F-1, 9] from a GameFactory JSON beside a video (entry str(i) produced
    frame i), its path and its content; (None, None, {}) when there is none."""
    for cand in (video.parent.parent / "metadata" / f"{video.stem}.json", video.with_suffix(".json")):
        if cand.is_file():
            try:
                meta = json.loads(cand.read_text())
            except json.JSONDecodeError as e:
                raise ValueError(f"{cand}: not valid JSON ({e})") from e
            acts = meta.get("actions") if isinstance(meta, dict) else None
            if not isinstance(acts, dict):
                raise ValueError(f"{cand}: no 'actions' dict")
            try:
                n = max(int(k) for k in acts) if acts else 0
                raw = np.stack([from_gamefactory(acts[str(i)]) if str(i) in acts else noop()
                                for i in range(1, n + 1)]) if n else noop(0)
            except ValueError as e:
                raise ValueError(f"{cand}: {e}") from e
            return raw, cand, meta
    return None, None, {}


def _video_context(bundle: Bundle, path: Path, start: int, c: int, spec: str) -> Context:
    from video_io import iter_frames, probe

    info = probe(path)
    frames = np.stack([_fit(f, bundle.frame_size) for f in iter_frames(path)])  # [F, H, W, 3]
    if start < 0 or start + c > len(frames):
        raise ValueError(f"{path}: {c} context frames from {start} do not fit in {len(frames)} frames")
    if abs(info.fps - 16.0) > 0.5:
        print(f"note: {path} runs at {info.fps:g} fps; the model's tick is 16 Hz", file=sys.stderr)
    raw, meta_path, meta = _gamefactory_actions(path)
    ctx_frames = frames[start:start + c]
    future = frames[start + c:]
    if raw is None:
        return Context(encode_frames(bundle, ctx_frames), noop(c - 1), spec, frames=ctx_frames)
    if len(raw) < len(frames) - 1:
        raw = np.concatenate([raw, noop(len(frames) - 1 - len(raw))])
    raw = validate_raw(raw, str(meta_path))
    oracle = None
    if "blockworld" in meta:
        # An episode of blockworld.generate: the simulator replays it to the last context frame, and from
        # there renders the truth of any action sequence.
        from blockworld import context_start, episode_start

        try:
            world, state = episode_start(meta)
        except ValueError as e:
            raise ValueError(f"{meta_path}: {e}") from e
        _, oracle = context_start(world, state, raw[:start + c - 1], bundle.frame_size, render_frames=False)
    return Context(encode_frames(bundle, ctx_frames), raw[start:start + c - 1], spec,
                   episode_actions=raw[start + c - 1:len(frames) - 1], truth=lambda n: future[:n],
                   oracle=oracle, frames=ctx_frames)


def _png_context(bundle: Bundle, rest: str, spec: str) -> Context:
    import cv2

    p = Path(rest)
    paths = sorted(p.glob("*.png")) if p.is_dir() else [Path(x) for x in rest.split(",") if x]
    if not paths:
        raise ValueError(f"context {spec!r}: no PNG frames found")
    frames = []
    for fp in paths:
        img = cv2.imread(str(fp), cv2.IMREAD_COLOR)
        if img is None:
            raise ValueError(f"{fp}: not a readable image")
        frames.append(_fit(cv2.cvtColor(img, cv2.COLOR_BGR2RGB), bundle.frame_size))
    arr = np.stack(frames)
    return Context(encode_frames(bundle, arr), noop(len(arr) - 1), spec, frames=arr)


def _blockworld_context(bundle: Bundle, rest: str, c: int, spec: str) -> Context:
    from blockworld import World, context_start

    seed_text, _, biome = rest.partition(":")
    world = World(int(seed_text))
    try:
        state = world.spawn(int(seed_text), biome=biome or None)
    except (ValueError, RuntimeError) as e:
        raise ValueError(f"context {spec!r}: {e}") from e
    acts = noop(c - 1)
    frames, oracle = context_start(world, state, acts, bundle.frame_size)  # frames [C, H, W, 3]
    return Context(encode_frames(bundle, frames), acts, spec, oracle=oracle, frames=frames)


def load_context(spec: str, bundle: Bundle, frames: int = 8) -> Context:
    """Build the context a spec names (see the module docstring); `frames` is C for shards, videos and the
    block world (PNG contexts use the frames given)."""
    if frames < 1:
        raise ValueError(f"context frames must be >= 1, got {frames}")
    kind, rest, start = parse_context_spec(spec)
    if kind == "shard":
        return _shard_context(bundle, Path(rest), start, frames, spec)
    if kind == "video":
        return _video_context(bundle, Path(rest), start, frames, spec)
    if kind == "png":
        return _png_context(bundle, rest, spec)
    return _blockworld_context(bundle, rest, frames, spec)


def resolve_actions(spec: str, ctx: Context, frames: int, seed: int = 0) -> tuple[np.ndarray, bool]:
    """--actions: "episode" (the context episode's own), a preset name ("a+b" combines), or a JSON/CSV script
    -> (raw actions [N, 9], whether they are the episode's own). frames=0 means: as many as the source has
    (all remaining episode actions, the whole script, or action_scripts.DEFAULT_SCRIPT_FRAMES)."""
    from action_scripts import DEFAULT_SCRIPT_FRAMES, is_named_script, load_action_script, named_script_actions

    if spec == "episode":
        if ctx.episode_actions is None or len(ctx.episode_actions) == 0:
            raise ValueError(f"{ctx.source}: this context has no episode actions after it; pass --actions "
                             f"PRESET or a script")
        have = len(ctx.episode_actions)
        n = frames or have
        if n > have:
            raise ValueError(f"{ctx.source}: the episode has {have} actions after the context, {n} asked for")
        return ctx.episode_actions[:n], True
    if is_named_script(spec):
        return named_script_actions(spec, frames or DEFAULT_SCRIPT_FRAMES, seed=seed), False
    script = load_action_script(spec)
    n = frames or len(script)
    if n > len(script):
        raise ValueError(f"{spec}: the script has {len(script)} steps, {n} frames asked for")
    return script[:n], False
