"""One-step fidelity by what the action does: where the motion path gains or loses against copying.

    python scripts/onestep_by_action.py --model checkpoints/blockworld_laptop/world_model.pt \
        --data runs/ship/heldout_shards [--frames 400] [--json out.json]

Each held-out episode (as evaluate.py picks them) is fed to the model frame by frame with its true tokens, the
state carried, and every prediction of the next frame (greedy) is decoded and scored by PSNR against the
decoded true next frame, beside two baselines on the same transitions: the warp alone (the true previous
tokens moved by the calibrated motion, `WorldModel.warp`, no network) and copying the last frame. The
transitions are grouped by the action: turn, look, W, S, A/D, jump, none (no input) and other (sprint or
sneak alone). evaluate.py's PSNR@1 is one number over mixed clips; this says which motion costs it (README,
"One step at a time").
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CLASSES = ("turn", "look", "W", "S", "A/D", "jump", "none", "other")


@dataclass
class OneStepConfig:
    """scripts/onestep_by_action.py options."""

    model: str = ""
    """World-model checkpoint (weights-only export) with a motion path."""
    data: str = ""
    """Its token shards (the held-out episodes of these are scored)."""
    frames: int = 400
    """At most this many transitions per episode."""
    json: str = ""
    """Also write the table as JSON here."""


def action_class(raw: np.ndarray) -> np.ndarray:
    """Raw actions [N, 9] -> class names [N], the first that applies: a turn (|yaw| > 0.5 deg), a look
    (|pitch| > 0.5 deg), W, S, A or D, a jump, no input at all, anything else."""
    from actions import RAW

    def key(name: str) -> np.ndarray:
        return raw[:, RAW[name]] > 0.5

    out = np.full(len(raw), "other", dtype=object)
    order = [("turn", np.abs(raw[:, RAW["yaw_deg"]]) > 0.5), ("look", np.abs(raw[:, RAW["pitch_deg"]]) > 0.5),
             ("W", key("forward")), ("S", key("back")), ("A/D", key("left") | key("right")), ("jump", key("jump")),
             ("none", ~np.any(np.abs(raw) > 1e-6, axis=1))]
    for name, hit in reversed(order):  # the first matching class wins
        out[hit] = name
    return out


def psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """uint8 frames [N, H, W, 3] -> PSNR per frame [N] (identical frames: 100 dB)."""
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean(axis=(1, 2, 3))
    return np.where(mse > 0, 10 * np.log10(255.0 ** 2 / np.maximum(mse, 1e-12)), 100.0)


@torch.inference_mode()
def score(cfg: OneStepConfig) -> dict[str, dict[str, float]]:
    """Class -> {n, model, warp, copy} (mean PSNR of one step), and "all"."""
    from eval_inputs import heldout_files
    from rollout import decode_tokens, load_bundle

    bundle = load_bundle(cfg.model, device="cpu")
    model = bundle.model.eval()
    if not model.motion:
        raise ValueError(f"{cfg.model}: this model has no motion path (there is no warp to score)")
    files, _ = heldout_files(Path(cfg.data), bundle.meta)
    classes, scores = [], []
    for f in files:
        path = Path(cfg.data) / f
        try:
            with np.load(path) as z:
                tokens = torch.from_numpy(z["tokens"].astype(np.int64))  # [T, h, w]
                raw = np.asarray(z["actions"], np.float32)  # [T-1, 9]
        except (OSError, ValueError, KeyError) as e:
            raise ValueError(f"{path}: not a readable token shard ({type(e).__name__}: {e})") from None
        n = min(len(raw), cfg.frames)
        enc = torch.from_numpy(bundle.encoding.encode(raw[:n])).float()  # [n, 15]
        state = model.init_state(1, torch.device("cpu"))
        preds, warps = [], []
        for t in range(n):
            warped, _, _ = model.warp(tokens[t:t + 1], enc[t:t + 1], state)  # what step() moves, not advancing
            logits, state = model.step(tokens[t:t + 1], enc[t:t + 1], state)
            preds.append(logits.argmax(dim=1)[0])
            warps.append(warped[0])
        truth = decode_tokens(bundle, tokens[1:n + 1])
        scores.append(np.stack([psnr(decode_tokens(bundle, torch.stack(preds)), truth),
                                psnr(decode_tokens(bundle, torch.stack(warps)), truth),
                                psnr(decode_tokens(bundle, tokens[:n]), truth)], 1))  # [n, 3]
        classes.append(action_class(raw[:n]))
    cls, s = np.concatenate(classes), np.concatenate(scores)
    out: dict[str, dict[str, float]] = {}
    for name in (*CLASSES, "all"):
        hit = cls == name if name != "all" else np.ones(len(cls), bool)
        if hit.any():
            out[name] = {"n": int(hit.sum()), **{k: float(s[hit, i].mean()) for i, k in
                                                  enumerate(("model", "warp", "copy"))}}
    return out


def main(argv: Sequence[str] | None = None) -> int:
    from ckpt_io import CheckpointError
    from config import exit_on_error, main_config

    cfg = main_config(OneStepConfig, argv=argv, doc=__doc__)

    def body() -> Any:
        if not cfg.model or not cfg.data:
            raise ValueError("--model and --data are required")
        torch.set_num_threads(1)
        return score(cfg)

    table = exit_on_error(body, (ValueError, CheckpointError, FileNotFoundError))
    print("one-step PSNR (dB) against the decoded true next frame, held-out episodes")
    print(f"{'action':<8s} {'n':>5s} {'model':>7s} {'warp':>7s} {'copy':>7s}")
    for name, r in table.items():
        print(f"{name:<8s} {r['n']:5d} {r['model']:7.2f} {r['warp']:7.2f} {r['copy']:7.2f}")
    if cfg.json:
        from ckpt_io import atomic_write_json
        atomic_write_json(Path(cfg.json), table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
