"""Response ratios against training time: evaluate every export of one train.py run and plot the curve.

    python scripts/response_curve.py --run runs/curve/wm --data runs/demo/shards \
        --source-data runs/demo/blockworld --out docs/response_curve

Each `exports/world_model_<step>.pt` gets its own `evaluate.py` report under OUT/eval_<step>/ (an export
that already has one is not evaluated again, so the script can be re-run while training goes on). Training
minutes come from the run's metrics.jsonl: wall time on the run's clock, with interruptions between
`--resume`s replaced by the expected time of the steps they span. OUT gets curve.json, curve.md (the
ablation-table columns, one row per export) and curve.png (yaw, pitch, forward, back and strafe ratios, and
the held-out PSNR@16 against copying the last frame).
"""
from __future__ import annotations

import json
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from ablation_table import COLUMNS, row  # noqa: E402
from run_files import RunFiles  # noqa: E402

PLOTTED = ("yaw", "pitch", "forward", "back", "strafe")


@dataclass
class CurveConfig:
    """scripts/response_curve.py options."""

    run: str = ""
    """A train.py run directory (its exports/ and metrics.jsonl)."""
    data: str = ""
    """Token shards to evaluate on (evaluate.py --data)."""
    source_data: str = ""
    """The shards' raw block-world folder, for oracle counterfactuals (evaluate.py --source-data)."""
    out: str = ""
    """Output folder (default RUN/curve)."""
    every: int = 1
    """Evaluate every N-th export (and always the last): a curve needs fewer points than a run keeps."""
    eval_args: str = "--quick --counterfactual-starts 4 --cpu-threads 1"
    """Further evaluate.py options, one shell-quoted string, the same for every export; it starts with
    dashes, so pass it as --eval-args="--quick ..."."""


def training_minutes(metrics: Path) -> dict[int, float]:
    """step -> minutes of training up to that logged step. A gap between two logged steps longer than
    three times what their own step time predicts is an interruption, and counts as the predicted time."""
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "step" in r and "time" in r and "timing/step_ms" in r]
    out: dict[int, float] = {}
    total, prev = 0.0, None
    for r in rows:
        expected = (r["step"] - (prev["step"] if prev else 0)) * r["timing/step_ms"] / 1000.0
        gap = r["time"] - prev["time"] if prev else expected
        total += gap if 0 <= gap <= 3 * expected else expected
        out[int(r["step"])] = total / 60.0
        prev = r
    return out


def minutes_at(step: int, minutes: dict[int, float]) -> float | None:
    """Minutes at the last logged step at or before `step` (None before the first)."""
    logged = [s for s in minutes if s <= step]
    return minutes[max(logged)] if logged else None


def evaluate_exports(cfg: CurveConfig, out: Path) -> tuple[list[tuple[int, Path]], list[str]]:
    """(step, report.json) for the selected exports (every N-th, the last, and any already evaluated, even
    one whose export a later --keep-last has pruned), evaluating those without a report; failures are
    reported and skipped."""
    import evaluate
    from ckpt_io import CheckpointError
    from config import parse_config

    exports = RunFiles(cfg.run).exports()
    if not exports:
        raise FileNotFoundError(f"{cfg.run}/exports: no world_model_<step>.pt to evaluate")
    exports = [(step, p) for i, (step, p) in enumerate(exports) if i % max(1, cfg.every) == 0
               or i == len(exports) - 1 or (out / f"eval_{step}" / "report.json").is_file()]
    kept = {step for step, _ in exports}
    reports = {r.parent.name.removeprefix("eval_"): r for r in out.glob("eval_*/report.json")}
    done = [(int(s), r) for s, r in reports.items()
            if s.isdigit() and int(s) not in kept]  # exports pruned since they were evaluated
    failed: list[str] = []
    for step, path in exports:
        report = out / f"eval_{step}" / "report.json"
        if not report.is_file():
            argv = ["--model", str(path), "--data", cfg.data, "--out", str(report.parent), *shlex.split(cfg.eval_args)]
            if cfg.source_data:
                argv += ["--source-data", cfg.source_data]
            print(f"evaluating {path}", flush=True)
            try:
                evaluate.evaluate(parse_config(evaluate.EvalConfig, argv))
            except (ValueError, CheckpointError, FileNotFoundError) as e:
                failed.append(f"{path}: {e}")
                print(f"skipped {path}: {e}", file=sys.stderr)
                continue
        done.append((step, report))
    return sorted(done), failed


def plot(points: list[dict[str, Any]], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, fid) = plt.subplots(1, 2, figsize=(11, 4))
    x = [p["minutes"] for p in points]
    for name in PLOTTED:
        ax.plot(x, [p["ratios"].get(name) if p["ratios"].get(name) is not None else float("nan") for p in points],
                marker="o", label=name)
    ax.axhspan(0.5, 1.5, color="green", alpha=0.08, label="yaw/pitch target 0.5-1.5")
    ax.axhline(0.3, color="grey", ls="--", lw=1, label="move target >= 0.3")
    ax.set_xlabel("training minutes (one CPU core)")
    ax.set_ylabel("response ratio model / oracle")
    ax.legend(fontsize=8, ncol=2)
    ax.grid(alpha=0.3)
    fid.plot(x, [p["psnr16"] for p in points], marker="o", label="model")
    fid.plot(x, [p["copy_psnr16"] for p in points], ls="--", color="grey", label="copy last frame")
    fid.set_xlabel("training minutes (one CPU core)")
    fid.set_ylabel("held-out PSNR@16 (dB)")
    fid.legend(fontsize=8)
    fid.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    from config import exit_on_error, main_config

    cfg = main_config(CurveConfig, argv=argv, doc=__doc__)

    def body() -> tuple[list[dict[str, Any]], list[str], Path]:
        if not cfg.run or not cfg.data:
            raise ValueError("--run and --data are required")
        out = Path(cfg.out or Path(cfg.run, "curve"))
        metrics = RunFiles(cfg.run).metrics
        if not metrics.is_file():
            raise FileNotFoundError(f"{metrics}: missing (not a train.py run directory?)")
        minutes = training_minutes(metrics)
        done, failed = evaluate_exports(cfg, out)
        points = []
        for step, report_path in done:
            report = json.loads(report_path.read_text())
            ratios = {v["response"]: v["ratio"] for v in report["counterfactuals"]["summary"].values()}
            psnr = report["fidelity"]["tables"]
            points.append({"step": step, "minutes": minutes_at(step, minutes), "ratios": ratios,
                           "psnr16": psnr["model"]["psnr"]["16"]["mean"],
                           "copy_psnr16": psnr["copy"]["psnr"]["16"]["mean"],
                           "cells": row(report), "report": str(report_path)})
        return points, failed, out

    points, failed, out = exit_on_error(body, (ValueError, FileNotFoundError))
    lines = ["| step | minutes | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 2) + "|"]
    for p in points:
        mins = "-" if p["minutes"] is None else f"{p['minutes']:.0f}"
        lines.append(f"| {p['step']} | {mins} | " + " | ".join(p["cells"]) + " |")
    table = "\n".join(lines)
    from ckpt_io import atomic_write_text
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "curve.md", table + "\n")
    atomic_write_text(out / "curve.json", json.dumps({"run": cfg.run, "points": points, "failed": failed},
                                                      indent=1) + "\n")
    plot([p for p in points if p["minutes"] is not None], out / "curve.png")
    print(table)
    print(f"curve: {out / 'curve.png'} ({len(points)} exports" + (f", {len(failed)} failed" if failed else "") + ")")
    return 0


if __name__ == "__main__":
    sys.exit(main())
