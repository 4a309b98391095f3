"""Print a markdown ablation table from evaluate.py reports: one row per run, the same columns for all.

    python scripts/ablation_table.py "earlier design=runs/abl/baseline/eval/report.json" "motion path=..."
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

COLUMNS = ("PSNR@16 model / copy", "LPIPS@16 model / copy", "PSNR@16 changed region model / copy",
           "delta-t PSNR@16", "yaw", "pitch", "forward", "back", "strafe", "jump", "judge camera bal. acc model / truth",
           "stability: diversity / grey / flashing / idle drift", "TF token acc (secondary) model / copy")
"""yaw ... jump: the counterfactual response ratios (model / oracle) from block-world starts."""


def fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "pass" if v else "FAIL"
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 10 else f"{v:.2f}"
    return str(v)


def row(report: dict[str, Any]) -> list[str]:
    fid = report["fidelity"]
    t = fid["tables"]

    def pair(metric: str) -> str:
        return f"{fmt(t['model'][metric]['16']['mean'])} / {fmt(t['copy'][metric]['16']['mean'])}"

    ratios = {v["response"]: v["ratio"] for v in report["counterfactuals"]["summary"].values()}
    judge = report["controllability"].get("judge", {})
    jb = (f"{fmt(judge['model']['camera_balanced_acc'])} / {fmt(judge['truth']['camera_balanced_acc'])}"
          if judge else "-")
    st = report["stability"]["starts"]
    stab = " / ".join(fmt(all(s[k]["pass"] for s in st)) for k in ("diversity", "grey", "flashing", "noop_drift"))
    tf = fid["teacher_forced_token_accuracy"]
    return [pair("psnr"), pair("lpips"), pair("psnr_changed"), fmt(fid["delta_t_psnr"]["16"]["mean"]),
            *[fmt(ratios.get(k)) for k in ("yaw", "pitch", "forward", "back", "strafe", "jump")],
            jb, stab, f"{fmt(tf['model'])} / {fmt(tf['copy'])}"]


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    lines = ["| run | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for arg in argv:
        name, _, path = arg.partition("=")
        try:
            cells = row(json.loads(Path(path).read_text()))
        except (OSError, ValueError, KeyError) as e:
            print(f"error: {path}: not a readable evaluate.py report.json ({type(e).__name__}: {e})", file=sys.stderr)
            return 2
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
