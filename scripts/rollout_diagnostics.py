"""Where a rollout loses its picture: the stability script from a held-out block-world start, step by step.

    python scripts/rollout_diagnostics.py --model runs/demo/world_model/world_model.pt \
        --data runs/demo/shards --source-data runs/demo/blockworld

For each generated frame it prints the action script's segment, the share of the view whose content
entered this step (its source lay outside the previous frame: the network draws it), the share of moved
tokens the model kept (drew the warped previous code), and the distinct codes in the frame. A picture that
goes flat while "kept" stays near 1 is losing detail in what enters the view, not in what it moves.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


@dataclass
class DiagnosticsConfig:
    """scripts/rollout_diagnostics.py options."""

    model: str = ""
    """World-model checkpoint (weights-only export)."""
    data: str = ""
    """Its token shards (the start is a held-out episode of these)."""
    source_data: str = ""
    """The shards' raw block-world folder (the start's simulator state)."""
    seconds: float = 4.0
    """Length of the scripted play (evaluate.py's STABILITY_SCRIPT), in seconds."""
    context: int = 8
    """Context frames before the first generated one."""
    every: int = 1
    """Print every N-th step."""


@torch.inference_mode()
def diagnose(cfg: DiagnosticsConfig) -> list[dict[str, float | str]]:
    """One row per generated frame: segment, entered, kept, distinct."""
    import evaluate as E
    from action_scripts import TICK_HZ
    from eval_inputs import blockworld_starts, heldout_files
    from rollout import encode_frames, load_bundle

    bundle = load_bundle(cfg.model, device="cpu")
    model = bundle.model.eval()
    if not model.motion:
        raise ValueError(f"{cfg.model}: this model has no motion path (nothing is warped or kept)")
    files, _ = heldout_files(Path(cfg.data), bundle.meta)
    starts, why = blockworld_starts(Path(cfg.data), files, cfg.source_data, cfg.context, 1,
                                    lambda f: encode_frames(bundle, f).cpu().numpy(), bundle.frame_size)
    if not starts:
        raise ValueError(f"{cfg.data}: no block-world start ({why})")
    n = max(2, int(round(cfg.seconds * TICK_HZ)))
    parts = E.scripted_segments(n, 0)
    script = np.concatenate([a for _, a in parts])[:n]  # = E.scripted_play(n, 0)
    segments = [name for name, a in parts for _ in range(len(a))][:n]
    tokens = torch.from_numpy(starts[0].tokens).long()[None]  # [1, C, h, w]
    ctx_a = torch.from_numpy(bundle.encoding.encode(starts[0].actions)).float()[None]  # [1, C-1, 15]
    fut_a = torch.from_numpy(bundle.encoding.encode(script)).float()[None]  # [1, N, 15]
    state = model.init_state(1, torch.device("cpu"))
    for i in range(tokens.shape[1] - 1):
        _, state = model.step(tokens[:, i], ctx_a[:, i], state)
    cur = tokens[:, -1]
    rows = []
    for t in range(n):
        warped, inside, _ = model.warp(cur, fut_a[:, t], state)  # what step() moves, without advancing
        logits, state = model.step(cur, fut_a[:, t], state)
        cur = logits.argmax(dim=1)
        kept = (cur == warped)[inside].float().mean().item() if inside.any() else float("nan")
        rows.append({"step": t, "segment": segments[t], "entered": 1.0 - inside.float().mean().item(),
                     "kept": kept, "distinct": float(len(torch.unique(cur)))})
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    from ckpt_io import CheckpointError
    from config import exit_on_error, main_config

    cfg = main_config(DiagnosticsConfig, argv=argv, doc=__doc__)

    def body() -> list[dict[str, float | str]]:
        if not cfg.model or not cfg.data or not cfg.source_data:
            raise ValueError("--model, --data and --source-data are required")
        torch.set_num_threads(1)
        return diagnose(cfg)

    rows = exit_on_error(body, (ValueError, CheckpointError, FileNotFoundError))
    print("step  segment              entered  kept   distinct codes")
    for r in rows[::max(1, cfg.every)]:
        print(f"{r['step']:4d}  {r['segment']:<20s} {r['entered']:.2f}     {r['kept']:.3f}  {r['distinct']:.0f}")
    kept = np.array([r["kept"] for r in rows])
    print(f"mean kept {np.nanmean(kept):.3f}; distinct codes {rows[0]['distinct']:.0f} -> {rows[-1]['distinct']:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
