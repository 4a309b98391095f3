"""Where a rollout loses its picture: the stability script from a held-out block-world start, step by step.

    python scripts/rollout_diagnostics.py --model runs/demo/world_model/world_model.pt \
        --data runs/demo/shards --source-data runs/demo/blockworld

For each generated frame it prints the action script's segment, the share of the view whose content
entered this step (its source lay outside the previous frame: the network draws it), the share of moved
tokens the model kept (drew the warped previous code), and the distinct codes in the frame. A picture that
goes flat while "kept" stays near 1 is losing detail in what enters the view, not in what it moves.

    python scripts/rollout_diagnostics.py ... --by-action true --seconds 20 --starts 2

instead plays each of the stability script's actions alone for the whole time, from each start, and prints
evaluate.py's stability numbers for it against the oracle: which action loses the picture over a long
rollout (README, "The camera fit is a rotation").
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

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
    by_action: bool = False
    """Each stability-script action alone for `seconds`, from `starts` starts: evaluate.py's stability
    numbers per action instead of the step-by-step table."""
    starts: int = 2
    """Held-out block-world starts for --by-action."""


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


def by_action(cfg: DiagnosticsConfig) -> dict[str, list[dict[str, float]]]:
    """Action -> per start: codes per frame and per second relative to the oracle (last quarter) and the
    colour variance relative to the oracle's over the same last quarter, for that action repeated for cfg.seconds."""
    import evaluate as E
    from action_scripts import TICK_HZ, named_script_actions
    from eval_inputs import blockworld_starts, heldout_files
    from rollout import load_bundle

    ecfg = E.EvalConfig(model=cfg.model, data=cfg.data, source_data=cfg.source_data, context=cfg.context,
                        lpips=False)  # the stability numbers need no LPIPS network
    bundle = load_bundle(cfg.model, device="cpu")
    ev = E.Evaluation(ecfg, bundle)
    files, _ = heldout_files(Path(cfg.data), bundle.meta)
    starts, why = blockworld_starts(Path(cfg.data), files, cfg.source_data, cfg.context, cfg.starts, ev.encode,
                                    bundle.frame_size)
    if not starts:
        raise ValueError(f"{cfg.data}: no block-world start ({why})")
    n = max(2, int(round(cfg.seconds * TICK_HZ)))
    out: dict[str, list[dict[str, float]]] = {}
    for name in dict(E.STABILITY_SCRIPT):
        report, _ = ev.stability_section(starts, np.zeros(0), (0.0, 0.0), named_script_actions(name, n, seed=0))
        out[name] = [{"codes_per_frame": r["diversity"]["relative_per_frame_last_quarter"],
                      "codes_per_second": r["diversity"]["relative_per_second_last_quarter"],
                      "colour_variance": r["grey"]["relative"]} for r in report["starts"]]
    return out


def main(argv: Sequence[str] | None = None) -> int:
    from ckpt_io import CheckpointError
    from config import exit_on_error, main_config

    cfg = main_config(DiagnosticsConfig, argv=argv, doc=__doc__)

    def body() -> Any:
        if not cfg.model or not cfg.data or not cfg.source_data:
            raise ValueError("--model, --data and --source-data are required")
        torch.set_num_threads(1)
        return by_action(cfg) if cfg.by_action else diagnose(cfg)

    result = exit_on_error(body, (ValueError, CheckpointError, FileNotFoundError))
    if cfg.by_action:
        print(f"{cfg.seconds:g} s of each action alone, relative to the oracle (pass: codes per frame >= 0.5, "
              f"colour variance >= 0.3); one column per start")
        print(f"{'action':<20s} {'codes/frame':<20s} {'codes/second':<20s} colour variance")
        for name, per in result.items():
            cols = ["  ".join(f"{p[k]:6.3f}" for p in per)
                    for k in ("codes_per_frame", "codes_per_second", "colour_variance")]
            print(f"{name:<20s} " + " ".join(f"{c:<20s}" for c in cols))
        print(json.dumps(result))
        return 0
    rows = result
    print("step  segment              entered  kept   distinct codes")
    for r in rows[::max(1, cfg.every)]:
        print(f"{r['step']:4d}  {r['segment']:<20s} {r['entered']:.2f}     {r['kept']:.3f}  {r['distinct']:.0f}")
    kept = np.array([r["kept"] for r in rows])
    print(f"mean kept {np.nanmean(kept):.3f}; distinct codes {rows[0]['distinct']:.0f} -> {rows[-1]['distinct']:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
