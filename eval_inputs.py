"""What evaluate.py runs on: the predictors (the world model and its baselines behind one interface), the
held-out clips and the start states of the counterfactual and stability rollouts."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from actions import noop


# ----------------------------------------------------------------------------- predictors

@dataclass
class Rolled:
    """A predictor's rollout: tokens [B, N, h, w] (numpy int64) and where each frame is drawn between
    whole-token moves, offsets [B, N, 2, h, w] (tokens; rollout.decode_tokens), or None to draw the tokens
    as they lie. Indexing indexes both."""

    tokens: np.ndarray
    offsets: np.ndarray | None = None

    def __getitem__(self, idx: Any) -> "Rolled":
        return Rolled(self.tokens[idx], None if self.offsets is None else self.offsets[idx])


class Predictor:
    """Something that continues token clips: the world model, or a baseline. Tokens are numpy int64."""

    name = "predictor"

    def rollout(self, ctx_tokens: np.ndarray, ctx_actions: np.ndarray, future_actions: np.ndarray) -> Rolled:
        """ctx_tokens [B, C, h, w], ctx_actions [B, C-1, 9], future_actions [B, N, 9] -> Rolled [B, N, ...];
        frame n follows future action n (future_actions[:, 0] acts on the last context frame)."""
        raise NotImplementedError

    def teacher_forced(self, tokens: np.ndarray, actions: np.ndarray, first: int) -> np.ndarray:
        """Given true frames tokens [B, L, h, w] and actions [B, L-1, 9], the argmax prediction of each
        frame t+1 from frames 0..t, for t = first..L-2 -> [B, L-1-first, h, w]."""
        raise NotImplementedError


class ModelPredictor(Predictor):
    """The world model through rollout.rollout_batch (the same step() as training and play)."""

    name = "model"

    def __init__(self, bundle: Any, sampling: Any, batch_size: int, subtoken: bool = False) -> None:
        self.bundle, self.sampling, self.batch_size, self.subtoken = bundle, sampling, batch_size, subtoken

    def rollout(self, ctx_tokens: np.ndarray, ctx_actions: np.ndarray, future_actions: np.ndarray) -> Rolled:
        from rollout import rollout_batch

        toks, offs = [], []
        for i in range(0, len(ctx_tokens), self.batch_size):
            sl = slice(i, i + self.batch_size)
            tok, off = rollout_batch(self.bundle, ctx_tokens[sl], ctx_actions[sl], future_actions[sl],
                                     self.sampling, self.subtoken)
            toks.append(tok.cpu().numpy())
            if off is not None:
                offs.append(off.cpu().numpy())
        return Rolled(np.concatenate(toks), np.concatenate(offs) if offs else None)

    @torch.inference_mode()
    def teacher_forced(self, tokens: np.ndarray, actions: np.ndarray, first: int) -> np.ndarray:
        from devices import inference_autocast

        b = self.bundle
        out = []
        for i in range(0, len(tokens), self.batch_size):
            t = torch.from_numpy(tokens[i:i + self.batch_size]).to(b.device)  # [b, L, h, w]
            enc = torch.from_numpy(b.encoding.encode(actions[i:i + self.batch_size])).to(b.device)
            state = b.model.init_state(t.shape[0], b.device)
            preds = []
            # Step by step, keeping only the argmax: full teacher-forced logits [B, L, K, h, w] would not
            # fit in memory for long clips.
            with inference_autocast(b.device):
                for s in range(t.shape[1] - 1):
                    logits, state = b.step_fn(t[:, s], enc[:, s], state)
                    if s >= first:
                        preds.append(logits.float().argmax(1))
            out.append(torch.stack(preds, 1).cpu().numpy())
        return np.concatenate(out)


class CopyPredictor(Predictor):
    """Copy-last-frame: every future frame is the last context frame."""

    name = "copy"

    def rollout(self, ctx_tokens: np.ndarray, ctx_actions: np.ndarray, future_actions: np.ndarray) -> Rolled:
        n = future_actions.shape[1]
        return Rolled(np.repeat(ctx_tokens[:, -1:], n, axis=1))

    def teacher_forced(self, tokens: np.ndarray, actions: np.ndarray, first: int) -> np.ndarray:
        return tokens[:, first:-1].copy()


class ActionOverride(Predictor):
    """Another predictor with its actions replaced: `future` maps the future actions [B, N, 9] of a
    rollout; teacher forcing replaces every action the same way."""

    def __init__(self, inner: Predictor, name: str, future: Callable[[np.ndarray], np.ndarray]) -> None:
        self.inner, self.name, self.future = inner, name, future

    def rollout(self, ctx_tokens: np.ndarray, ctx_actions: np.ndarray, future_actions: np.ndarray) -> Rolled:
        return self.inner.rollout(ctx_tokens, ctx_actions, self.future(future_actions))

    def teacher_forced(self, tokens: np.ndarray, actions: np.ndarray, first: int) -> np.ndarray:
        return self.inner.teacher_forced(tokens, self.future(actions), first)


def noop_actions(actions: np.ndarray) -> np.ndarray:
    """Raw no-ops of the same shape (they encode to the no-op encoding: yaw/pitch 'none' bins set)."""
    return np.zeros_like(actions)


def other_clip_actions(actions: np.ndarray, seed: int) -> np.ndarray:
    """Each clip gets another clip's actions [B, N, 9] (a random derangement); with one clip, its own
    steps in a random order."""
    rng = np.random.default_rng(seed)
    b = actions.shape[0]
    if b < 2:
        return actions[:, rng.permutation(actions.shape[1])]
    perm = rng.permutation(b)
    return actions[np.roll(perm, 1)][np.argsort(perm)]


# ----------------------------------------------------------------------------- data

def heldout_files(root: Path, meta: dict[str, Any], val_fraction: float = -1.0, split_seed: int = -1
                  ) -> tuple[list[str], str]:
    """The episodes the model did not train on. A model that records its training episodes (`train_files`)
    is checked by name: every episode here that is not one of them, whichever path either run reached the
    data by (a relative path means another folder from another directory). A model without that record:
    when it was trained on this folder, dataset.split_files with its own fraction and seed; when on another
    folder, every episode here. val_fraction >= 0 forces a split (split_seed >= 0 its seed). Falls back to all files, saying so."""
    from dataset import read_manifest, split_files

    tc = meta.get("train_config") or {}
    frac = val_fraction if val_fraction >= 0 else float(tc.get("val_fraction", 0.1))
    seed = split_seed if split_seed >= 0 else int(tc.get("seed", 0))
    every = sorted(e["file"] for e in read_manifest(root))
    seen = meta.get("train_files")
    if seen is not None and val_fraction < 0:
        unseen = sorted(set(every) - set(seen))
        if not unseen:
            return every, (f"all {len(every)} episodes of {root}: the model trained on every one of them "
                           f"(NOT held out)")
        if len(unseen) == len(every):
            return every, (f"all {len(every)} episodes of {root}: none is among the model's {len(seen)} "
                           f"training episodes")
        return unseen, (f"held-out episodes of {root}: the {len(unseen)} of {len(every)} that are not among "
                        f"the model's training episodes")
    trained_on = str(tc.get("data", ""))
    if trained_on and Path(trained_on).resolve() != root.resolve() and val_fraction < 0:
        return every, (f"all {len(every)} episodes of {root}: the model was trained on {trained_on}, so none "
                       f"of them was seen in training")
    _, val = split_files(root, frac, seed) if frac > 0 else ([], [])
    if not val:
        return every, f"all {len(every)} episodes of {root}: the split has no held-out episode (NOT held out)"
    return val, f"held-out split of {root} (val_fraction {frac}, seed {seed}: {len(val)} of {len(every)} episodes)"


@dataclass
class Clip:
    tokens: np.ndarray
    """int64 [C + N, h, w]: C context frames then N future frames."""
    actions: np.ndarray
    """raw float32 [C + N - 1, 9]; actions[i] is the action between frames i and i+1."""
    file: str
    start: int


def load_clips(root: Path, files: Sequence[str], context: int, horizon: int, per_episode: int,
               max_episodes: int) -> tuple[list[Clip], list[str]]:
    """Clips of C + horizon frames, `per_episode` evenly spaced per episode; notes on skipped episodes."""
    from dataset import open_shard

    clips, notes, used = [], [], 0
    length = context + horizon
    for f in files:
        if used >= max_episodes:
            break
        sh = open_shard(root / f)
        k = len(sh["tokens"])
        if k < length:
            notes.append(f"{f}: {k} frames, shorter than a {length}-frame clip; skipped")
            continue
        starts = np.unique(np.linspace(0, k - length, per_episode).round().astype(int))
        for s in starts:
            clips.append(Clip(np.asarray(sh["tokens"][s:s + length]).astype(np.int64),
                              np.asarray(sh["actions"][s:s + length - 1], np.float32), f, int(s)))
        used += 1
    return clips, notes


def max_episode_length(root: Path, files: Sequence[str]) -> int:
    from dataset import shard_length

    return max((shard_length(root / f) for f in files), default=0)


# ----------------------------------------------------------------------------- starts (block world)

@dataclass
class Start:
    """Where counterfactual and stability rollouts begin: C context frames and, for block-world episodes,
    the oracle that renders the truth of any action sequence from the last context frame."""

    name: str
    tokens: np.ndarray
    """int64 [C, h, w]."""
    actions: np.ndarray
    """raw [C-1, 9]."""
    oracle: Callable[[np.ndarray], np.ndarray] | None
    """raw actions [N, 9] -> true frames uint8 [N, H, W, 3] (the frame after each action)."""
    frame: np.ndarray | None = None
    """The last context frame as the oracle renders it, uint8 [H, W, 3] (None without an oracle)."""


def blockworld_starts(root: Path, files: Sequence[str], source_data: str, context: int, n: int,
                      encode: Callable[[np.ndarray], np.ndarray], frame_size: tuple[int, int]
                      ) -> tuple[list[Start], str]:
    """Start states of held-out block-world episodes: blockworld.episode_start from each episode's metadata
    JSON (the manifest's actions_file, else <source_data>/metadata/<stem>.json), then C-1 no-op ticks
    through the simulator, rendered and encoded as the context. More starts than episodes turn the player
    round by a quarter per pass over the episodes (a small held-out split still gives several views, and a
    view of mostly sky, where no motion can be measured, does not decide a response alone). ([], reason)
    when unavailable."""
    from blockworld import context_start, episode_start
    from dataset import read_manifest

    entries = {e["file"]: e for e in read_manifest(root)}
    starts: list[Start] = []
    reasons: list[str] = []
    for k in range(n if files else 0):
        f = files[k % len(files)]
        turn = 90.0 * (k // len(files))
        e = entries.get(f, {})
        cands = []
        if e.get("actions_file"):
            cands.append(Path(e["actions_file"]))
        stem = Path(str(e.get("video") or f)).stem
        if source_data:
            cands.append(Path(source_data) / "metadata" / f"{stem}.json")
        path = next((c for c in cands if c.is_file()), None)
        if path is None:
            reasons.append(f"{f}: no episode JSON found (tried {[str(c) for c in cands] or 'nothing'}; "
                           f"pass --source-data)")
            continue
        try:
            world, state = episode_start(json.loads(path.read_text()))
        except (ValueError, OSError) as err:
            reasons.append(f"{path}: {err}")
            continue
        state = dataclasses.replace(state, yaw=state.yaw + turn)
        acts = noop(context - 1)
        frames, oracle = context_start(world, state, acts, frame_size)  # frames [C, H, W, 3]
        starts.append(Start(f"{stem}" + (f" turned {turn:.0f} deg" if turn else ""), encode(frames), acts, oracle,
                            frames[-1]))
    return starts, "; ".join(reasons) if not starts else ""


def clip_starts(clips: Sequence[Clip], context: int, n: int) -> list[Start]:
    """Starts from the contexts of held-out clips (no oracle: only dataset statistics as reference)."""
    return [Start(f"{c.file}@{c.start}", c.tokens[:context], c.actions[:context - 1], None) for c in clips[:n]]
