"""evaluate.py's outputs: report.md, the plots, the side-by-side videos, the summary and wandb logging.

Everything here reads the JSON-ready report dict, or the frames the evaluation sections return with it
(`SectionFrames`); nothing measures.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

import metrics as M
from metrics import RESPONSE_ACTIONS
from action_scripts import TICK_HZ
from run_files import write_png

PRED_LABELS = {"model": "model", "model_noop_actions": "model, no-op actions",
               "model_random_actions": "model, other clip's actions", "copy": "copy last frame",
               "truth": "ground truth"}


@dataclass
class ClipFrames:
    """The held-out clips' frames: truth and each predictor's, uint8 [B, N, H, W, 3], and their actions."""

    truth: np.ndarray
    predicted: dict[str, np.ndarray]
    actions: np.ndarray
    """raw [B, N, 9]."""


@dataclass
class CounterfactualFrames:
    """One start's counterfactuals: oracle (VQ-VAE reconstruction) and model frames [P, N, H, W, 3]."""

    start: str
    presets: Sequence[str]
    oracle: np.ndarray
    model: np.ndarray


@dataclass
class StabilityFrames:
    """One start's long rollouts [n, H, W, 3]: scripted play, the oracle of the same script (or None) and
    the rollout with no input."""

    start: str
    play: np.ndarray
    oracle: np.ndarray | None
    idle: np.ndarray


@dataclass
class SectionFrames:
    """What the sections drew, for the plots and videos."""

    clips: ClipFrames | None = None
    counterfactuals: list[CounterfactualFrames] = field(default_factory=list)
    stability: list[StabilityFrames] = field(default_factory=list)


def fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, bool):
        return "PASS" if v else "FAIL"
    if isinstance(v, (int, np.integer)):
        return str(v)
    return f"{v:.{digits}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r if isinstance(r, str) else fmt(r) for r in row) + " |" for row in rows]
    return "\n".join(lines)


def write_markdown(report: dict[str, Any], path: Path) -> None:
    from ckpt_io import atomic_write_text

    r = report
    md = [f"# Evaluation: {r['model']}", "",
          f"Data: `{r['data']}` - {r['split']}. {r['n_clips']} clips, context {r['config']['context']} frames, "
          f"sampling {r['config']['sampling']}. Device {r['device']}; {r['seconds']:.0f} s. "
          f"{'**--quick: smoke-test sizes, not a measurement.**' if r['config']['quick'] else ''}", "",
          "Ground truth in fidelity tables is the VQ-VAE decode of the true tokens (the best a token model can "
          "draw). Baselines run on the same clips: *copy last frame*; *model, no-op actions* (future actions "
          "replaced by no-ops); *model, other clip's actions* (for delta-t PSNR).", ""]
    for note in r.get("notes", []):
        md.append(f"- note: {note}")
    md += ["", "## Summary", "", _table(["check", "value"], [[k, v] for k, v in r["summary"].items()]), ""]
    if "fidelity" in r:
        fid = r["fidelity"]
        hs = list(fid["tables"]["model"]["psnr"].keys())
        names = [n for n in ("model", "model_noop_actions", "model_random_actions", "copy") if n in fid["tables"]]
        md += ["## Fidelity (held-out clips)", "", "![fidelity](fidelity.png)", ""]
        rows = []
        for metric in fid["tables"]["model"]:
            better = "higher" if metric.startswith(("psnr", "ssim")) else "lower"
            for h in hs:
                rows.append([f"{metric_label(metric)} @ {h} ({better} is better)"] +
                            [fid["tables"][n][metric][h]["mean"] for n in names])
        for h in hs:
            rows.append([f"token accuracy @ {h} (secondary)"] + [fid["token_accuracy_rollout"][n][h] for n in names])
        md.append(_table(["metric", *[PRED_LABELS[n] for n in names]], rows))
        md += ["", "*Changed region*: only the pixels where the truth differs from the last context frame by more "
               "than 8 grey levels (what copying the last frame gets wrong); LPIPS there is measured with the "
               "unchanged pixels pasted from the truth. Token accuracy is secondary: the tokenizer maps the same "
               "content to several codes, so a right picture can score low.", "",
               "Teacher-forced token accuracy (secondary; each next frame from the true frames before it): "
               + ", ".join(f"{PRED_LABELS[k]} {fmt(v)}" for k, v in fid["teacher_forced_token_accuracy"].items()),
               "", "Delta-t PSNR (true actions minus another clip's actions; > 0 means the actions help): "
               + ", ".join(f"@{h}: {fmt(v['mean'])} (±{fmt(v['sem'])})" for h, v in fid["delta_t_psnr"].items()),
               ""]
    if "controllability" in r:
        ctl = r["controllability"]
        md += ["## Controllability from pixels", "", "![controllability](controllability.png)", "",
               "Responses: yaw/pitch in px of scene shift per degree (positive = the camera turned the commanded "
               "way: +yaw turns right and moves the scene left), forward/back = mean radial expansion of "
               "optical flow per frame while held, jump = peak downward scene shift after a press (px), "
               "no-op = mean frame change while nothing is pressed. Ratio = predictor / ground truth on the "
               "same clips (1.0 perfect, 0 ignored; for no-op, above 1 is idle drift). '-' = the ground truth "
               "shows no measurable response (below the floor) or the action never occurs.", ""]
        first = next(iter(ctl["responses"].values()))
        names = [n for n in ("model", "model_noop_actions", "copy") if f"{n}_ratio" in first]
        rows = []
        for action, row in ctl["responses"].items():
            rows.append([action, ctl["action_counts"].get(action, 0), row["truth"]] +
                        [row[n] for n in names] + [row[f"{n}_ratio"] for n in names])
        md.append(_table(["action", "steps", "truth", *[PRED_LABELS[n] for n in names],
                          *[f"ratio: {PRED_LABELS[n]}" for n in names]], rows))
        if "judge" in ctl:
            j = ctl["judge"]
            keys = list(next(iter(j.values()))["key_f1"].keys())
            md += ["", f"Inverse-dynamics judge ({r.get('judge_note', '')}) reading the commanded actions back "
                   "from frames; the ground-truth row is the ceiling.", ""]
            md.append(_table(["frames", "camera balanced acc", "camera macro-F1", "yaw acc", "pitch acc",
                              "key mean F1", *[f"F1 {k}" for k in keys]],
                             [[PRED_LABELS[n], v["camera_balanced_acc"], v["camera_macro_f1"], v["yaw_acc"],
                               v["pitch_acc"], v["key_mean_f1"], *[v["key_f1"][k] for k in keys]]
                              for n, v in j.items()]))
            classes = list(next(iter(j.values()))["class_recall"].keys())
            md += ["", "Judge recall per camera class (balanced accuracy is their mean per axis; plain accuracy "
                   "rewards always answering 'no turn' on mostly still clips):", ""]
            md.append(_table(["frames", *classes], [[PRED_LABELS[n], *[v["class_recall"].get(c) for c in classes]]
                                                    for n, v in j.items()]))
        md.append("")
    cf = r.get("counterfactuals", {})
    md += ["## Counterfactuals on the block world", ""]
    if cf.get("summary"):
        md += [f"The first {cf['frames']} frames of each named action script (action_scripts.py, at its natural 6 s length) "
               f"from the same start state, through the oracle and through the model; truth = {cf['truth']}. "
               f"PSNR/LPIPS are means over the frames; the ratio is the model's pixel response over the "
               f"oracle's (as in the controllability table). The tokenizer's ratio is the same measure on the "
               f"oracle's frames encoded and decoded by the VQ-VAE: what a model that predicted the oracle's "
               f"tokens exactly would score (not a ceiling: the decoder's screen-fixed pattern reads as less "
               f"motion than its content makes, and a whole-token warp moves the pattern too).", "",
               "![counterfactuals](counterfactuals.png)", ""]
        md.append(_table(["preset", "PSNR model", "PSNR no-op actions", "PSNR copy", "PSNR changed: model",
                          "PSNR changed: copy", "LPIPS model", "LPIPS no-op actions", "LPIPS copy", "response",
                          "ratio: model / oracle", "ratio: tokenizer / oracle"],
                         [[k, v["psnr"], v["noop_actions_psnr"], v["copy_psnr"], v["psnr_changed"],
                           v["copy_psnr_changed"], v["lpips"], v["noop_actions_lpips"], v["copy_lpips"],
                           v["response"] or "-", v["ratio"], v.get("tokenizer_ratio")]
                          for k, v in cf["summary"].items()]))
        if cf.get("tokenizer_codes"):
            c = cf["tokenizer_codes"]
            md += ["", "Tokenizer codes on the oracle's frames of these presets (definitions: vq_vae/README.md): "
                   + ", ".join(f"{k} {fmt(c[k])}" for k in ("idempotence", "stability_le2", "stability_3to8",
                                                            "separation", "perplexity", "usage_fraction",
                                                            "follow_1px", "follow_2px", "follow_3px")
                               if k in c)]
    else:
        md.append(f"Skipped: {cf.get('skipped', 'no block-world episodes')}")
    md.append("")
    st = r.get("stability")
    if st:
        th = st["thresholds"]
        md += [f"## Long-rollout stability ({st['seconds']:.0f} s of scripted play and of no input)", "",
               "![stability](stability.png)", "",
               f"Thresholds: over the last quarter and relative to the truth, distinct codes per frame >= "
               f"{th['collapse_relative_min']} (collapse) and per second <= {th['shimmer_relative_max']} "
               f"(shimmer); colour variance >= {th['grey_relative_min']} of the truth's over the same frames "
               f"(grey collapse); no periodic peak in the "
               f"frame-change spectrum (periods 2-10 frames) unless the truth has >= {th['flash_explained_fraction']} "
               f"of its amplitude; no-op drift (last second, from the first generated frame) <= {th['drift_abs']} + "
               f"2x the truth's.",
               ""]
        rows = []
        for s in st["starts"]:
            fl = s["flashing"]
            d = s["diversity"]
            rows.append([s["start"], d["relative_per_frame_last_quarter"], d["relative_per_second_last_quarter"],
                         d["pass"],
                         s["grey"]["relative"], s["grey"]["pass"],
                         "rollout too short to judge" if not fl.get("judged", True) else
                         f"{fmt(fl['period'], 1)} / {fmt(fl['relative_amplitude'], 2)}" if fl["period"] else "-",
                         fl["pass"], s["noop_drift"]["last_second"], s["noop_drift"]["limit"], s["noop_drift"]["pass"],
                         s["pass"]])
        md.append(_table(["start", "codes/frame rel.", "codes/s rel.", "ok", "colour var. rel.", "ok", "peak period / rel. amp.",
                          "ok", "no-op drift", "limit", "ok", "all"], rows))
        md += ["", "Reference per start: " + "; ".join(f"{s['start']}: {s['reference']}" for s in st["starts"]), ""]
    if r.get("videos"):
        md += ["## Videos", ""] + [f"- [{Path(v).name}](videos/{Path(v).name})" for v in r["videos"]] + [""]
    md += ["## Timings (seconds)", "", ", ".join(f"{k} {v:.1f}" for k, v in r.get("timings", {}).items()), ""]
    atomic_write_text(path, "\n".join(md) + "\n")


def _savefig(fig: Any, path: Path) -> None:
    from ckpt_io import atomic_path

    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100)


def plot_fidelity(fid: dict[str, Any], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = list(fid["curves"]["model"].keys())
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.4), layout="constrained")
    for ax, m in zip(np.atleast_1d(axes), metrics):
        for name, style in (("model", "-"), ("model_noop_actions", "--"), ("model_random_actions", ":"),
                            ("copy", "-.")):
            if name in fid["curves"]:
                y = np.asarray(fid["curves"][name][m])
                ax.plot(np.arange(1, len(y) + 1), y, style, label=PRED_LABELS[name])
        ax.set_xscale("log")
        ax.set_xlabel("rollout horizon (frames)")
        ax.set_title(m.upper() + (" (higher is better)" if m in ("psnr", "ssim") else " (lower is better)"))
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].legend(fontsize=8)
    fig.suptitle("Fidelity on held-out clips vs VQ-VAE-decoded ground truth")
    _savefig(fig, path)
    plt.close(fig)


def plot_controllability(ctl: dict[str, Any], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    has_judge = "judge" in ctl
    fig, axes = plt.subplots(1, 2 if has_judge else 1, figsize=(11 if has_judge else 6, 3.6), layout="constrained")
    axes = np.atleast_1d(axes)
    actions = list(ctl["responses"].keys())
    x = np.arange(len(actions))
    names = [n for n in ("model", "model_noop_actions", "copy") if f"{n}_ratio" in ctl["responses"][actions[0]]]
    shown: list[float] = [0.0, 1.0]
    for k, name in enumerate(names):
        vals = [ctl["responses"][a][f"{name}_ratio"] for a in actions]
        vals = [np.nan if v is None else v for v in vals]
        shown += [v for v in vals if np.isfinite(v)]
        axes[0].bar(x + (k - 1) * 0.27, vals, 0.27, label=PRED_LABELS[name])
    # Explicit limits: with every ratio unmeasurable, autoscaling has nothing to fit.
    axes[0].set_ylim(min(shown) - 0.2, max(shown) + 0.3)
    for i, a in enumerate(actions):
        if ctl["responses"][a]["model_ratio"] is None:
            axes[0].text(i, 0.05, "n/a", ha="center", fontsize=8, color="grey")
    axes[0].axhline(1.0, color="k", lw=0.8, ls="--")
    axes[0].set_xticks(x, actions)
    axes[0].set_ylabel("response / ground truth")
    axes[0].set_title("Pixel response ratios (1 = perfect, 0 = ignored)")
    axes[0].legend(fontsize=8)
    if has_judge:
        j = ctl["judge"]
        cols = ["camera_balanced_acc", "camera_macro_f1", "key_mean_f1"]
        xs = np.arange(len(cols))
        for k, (name, row) in enumerate(j.items()):
            axes[1].bar(xs + (k - len(j) / 2 + 0.5) * 0.8 / len(j), [row[c] for c in cols], 0.8 / len(j),
                        label=PRED_LABELS.get(name, name))
        axes[1].set_xticks(xs, ["camera bal. acc", "camera macro-F1", "key F1"])
        axes[1].set_ylim(0, 1)
        axes[1].set_title("Inverse-dynamics judge")
        axes[1].legend(fontsize=7)
    _savefig(fig, path)
    plt.close(fig)


def plot_stability(st: dict[str, Any], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(17, 3.6), layout="constrained")
    for s in st["starts"]:
        lbl = s["start"][:24]
        d = s["diversity"]
        rel = d["relative_per_frame"]
        axes[0].plot(np.arange(1, len(rel) + 1), rel, "o-", ms=3, label=f"{lbl} per frame")
        rel = d["relative_per_second"]
        axes[0].plot(np.arange(1, len(rel) + 1), rel, ":", color=axes[0].lines[-1].get_color(),
                     label=f"{lbl} per second")
        g = s["grey"]
        t = np.arange(len(g["model_per_frame"])) / TICK_HZ
        axes[1].plot(t, g["model_per_frame"], label=f"{lbl} model")
        axes[1].plot(np.arange(len(g["reference_per_frame"])) / TICK_HZ, g["reference_per_frame"], ls="--", lw=0.8,
                     color=axes[1].lines[-1].get_color())
        w0 = t[-g["window_frames"]]
        axes[1].hlines(g["threshold"] * g["reference_variance"], w0, t[-1], color="r", lw=0.8)
        f = s["flashing"]
        fr, pw = np.asarray(f["spectrum"]["freq"]), np.asarray(f["spectrum"]["power"])
        if len(fr) > 1:
            axes[2].semilogy(1 / np.maximum(fr[1:], 1e-9), pw[1:] + 1e-12, label=f"{lbl} model")
            rf, rp = np.asarray(f["reference_spectrum"]["freq"]), np.asarray(f["reference_spectrum"]["power"])
            if len(rf) > 1:
                axes[2].semilogy(1 / np.maximum(rf[1:], 1e-9), rp[1:] + 1e-12, ls="--", label=f"{lbl} truth")
        dr = s["noop_drift"]
        axes[3].plot(np.arange(1, len(dr["curve"]) + 1) / TICK_HZ, dr["curve"], label=f"{lbl} model")
        if dr["reference_curve"]:
            axes[3].plot(np.arange(1, len(dr["reference_curve"]) + 1) / TICK_HZ, dr["reference_curve"], ls="--",
                         label=f"{lbl} truth")
        axes[3].axhline(dr["limit"], color="r", lw=0.8)
    th = st["thresholds"]
    axes[0].axhspan(th["collapse_relative_min"], th["shimmer_relative_max"], color="g", alpha=0.08)
    axes[0].set(title="distinct codes / truth's (per frame: collapse; per s: shimmer)", xlabel="second")
    axes[1].set(title="colour variance (dashed: truth; red: collapse, judged window)", xlabel="s")
    axes[1].set_ylim(bottom=0)
    axes[2].set(title="spectrum of frame change", xlabel="period (frames)", xlim=(2, 20))
    axes[2].axvline(5, color="grey", lw=0.6, ls=":")
    axes[3].set(title="no-op drift from first generated frame", xlabel="s")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    _savefig(fig, path)
    plt.close(fig)


def plot_counterfactuals(cf_frames: list[CounterfactualFrames], path: Path) -> None:
    """Contact sheet of the first start: a row per preset, oracle and model side by side at four times."""
    from video_io import upscale_nearest

    first = cf_frames[0]
    name, presets, oracle_f, model_f = first.start, first.presets, first.oracle, first.model
    n = oracle_f.shape[1]
    times = sorted({max(0, int(round(x))) for x in np.linspace(0, n - 1, 4)})
    gap = np.full((oracle_f.shape[2] * 2, 6, 3), 255, np.uint8)  # [2H, 6, 3] white column between times
    rows = []
    for i, p in enumerate(presets):
        cells = []
        for t in times:
            cells += [_label(upscale_nearest(oracle_f[i, t], 2), f"oracle: {p}, frame {t + 1}"),
                      _label(upscale_nearest(model_f[i, t], 2), "model"), gap]
        rows.append(np.concatenate(cells[:-1], axis=1))
        rows.append(np.full((6, rows[-1].shape[1], 3), 255, np.uint8))
    sheet = np.concatenate(rows[:-1], axis=0)
    title = np.full((24, sheet.shape[1], 3), 255, np.uint8)
    import cv2

    cv2.putText(title, f"Counterfactuals from {name}: oracle (left) vs model (right) per preset", (6, 17),
                cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    write_png(path, np.concatenate([title, sheet], axis=0))


def _label(frame: np.ndarray, text: str, bottom: bool = False) -> np.ndarray:
    """The frame with white-on-black text in its top (or bottom) left corner."""
    import cv2

    out = frame.copy()
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.35, 1)
    x, y = (4, out.shape[0] - 5) if bottom else (4, 12)
    # A dark box behind the text keeps it readable on bright sky and snow.
    box = out[max(0, y - th - 3):y + base + 1, max(0, x - 2):x + tw + 2]
    box[:] = (box.astype(np.float32) * 0.35).astype(np.uint8)
    cv2.putText(out, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def write_videos(frames: SectionFrames, out: Path, n: int) -> list[str]:
    """Side by side (2x): truth | model | model with no-op actions | copy, for the first clips; oracle vs
    model per preset for each counterfactual start; scripted play (model | oracle) for stability."""
    from action_scripts import describe
    from video_io import upscale_nearest

    written = []
    vdir = out / "videos"
    cf = frames.clips
    if cf is not None:
        for i in range(min(n, len(cf.truth))):
            panels = [("truth", cf.truth[i])] + [(PRED_LABELS[name], cf.predicted[name][i])
                                                 for name in ("model", "model_noop_actions", "copy")]
            video = []
            for t in range(panels[0][1].shape[0]):
                row = np.concatenate([_label(upscale_nearest(p[t], 2), lbl) for lbl, p in panels], axis=1)
                video.append(_label(row, describe(cf.actions[i, t]), bottom=True))
            written.append(_write(vdir / f"clip_{i}.mp4", video))
    for k, c in enumerate(frames.counterfactuals[:n]):
        video = []
        for t in range(c.oracle.shape[1]):
            rows = [np.concatenate([_label(c.oracle[i, t], f"oracle {p}"), _label(c.model[i, t], "model")], 1)
                    for i, p in enumerate(c.presets)]
            video.append(np.concatenate(rows, 0))
        written.append(_write(vdir / f"counterfactual_{k}.mp4", video))
    for k, st in enumerate(frames.stability[:n]):
        video = []
        for t in range(st.play.shape[0]):
            panels = [_label(st.play[t], "model, scripted")]
            if st.oracle is not None:
                panels.append(_label(st.oracle[t], "oracle"))
            panels.append(_label(st.idle[t], "model, no input"))
            video.append(np.concatenate(panels, 1))
        written.append(_write(vdir / f"stability_{k}.mp4", video))
    return written


def _write(path: Path, video: list[np.ndarray]) -> str:
    from video_io import write_mp4

    write_mp4(path, video, TICK_HZ)
    return str(path)


def metric_label(metric: str) -> str:
    """psnr -> PSNR, lpips_changed -> LPIPS changed region."""
    base, _, tail = metric.partition("_")
    return base.upper() + (" changed region" if tail == "changed" else "")


def summary_of(report: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers of a report (also the wandb summary)."""
    s: dict[str, Any] = {}
    fid = report.get("fidelity")
    if fid:
        hs = list(fid["tables"]["model"]["psnr"].keys())
        h = "16" if "16" in hs else hs[-1]
        for n in ("model", "model_noop_actions", "copy"):
            s[f"PSNR@{h} {PRED_LABELS[n]}"] = fid["tables"][n]["psnr"][h]["mean"]
        if "lpips" in fid["tables"]["model"]:
            for n in ("model", "copy"):
                s[f"LPIPS@{h} {PRED_LABELS[n]}"] = fid["tables"][n]["lpips"][h]["mean"]
        for metric in [m for m in ("psnr_changed", "lpips_changed") if m in fid["tables"]["model"]]:
            s[f"{metric_label(metric)}@{h} (model / copy)"] = (
                f"{fmt(fid['tables']['model'][metric][h]['mean'])} / {fmt(fid['tables']['copy'][metric][h]['mean'])}")
        if fid["delta_t_psnr"]:
            s[f"delta-t PSNR@{h}"] = fid["delta_t_psnr"][h]["mean"]
        s["teacher-forced token accuracy, secondary (model / copy)"] = (
            f"{fmt(fid['teacher_forced_token_accuracy']['model'])} / "
            f"{fmt(fid['teacher_forced_token_accuracy']['copy'])}")
    ctl = report.get("controllability")
    if ctl:
        for a in RESPONSE_ACTIONS:
            s[f"{a} response ratio"] = ctl["responses"][a]["model_ratio"]
        if "judge" in ctl:
            s["judge camera balanced acc (model / truth)"] = (
                f"{fmt(ctl['judge']['model']['camera_balanced_acc'])} / "
                f"{fmt(ctl['judge']['truth']['camera_balanced_acc'])}")
            s["judge key mean F1 (model / truth)"] = (f"{fmt(ctl['judge']['model']['key_mean_f1'])} / "
                                                      f"{fmt(ctl['judge']['truth']['key_mean_f1'])}")
    cf = report.get("counterfactuals", {})
    codes = cf.get("tokenizer_codes")
    if codes:
        s["tokenizer idempotence / stability <=2 / stability 3-8 / separation"] = " / ".join(
            fmt(codes[k]) for k in ("idempotence", "stability_le2", "stability_3to8", "separation"))
        if "follow_1px" in codes:
            s["tokenizer shift following at 1 / 2 / 3 px"] = " / ".join(
                fmt(codes[f"follow_{k}px"]) for k in (1, 2, 3))
    if cf.get("summary"):
        s["counterfactual PSNR (mean over presets)"] = M.nanmean([v["psnr"] for v in cf["summary"].values()])
        for preset, v in cf["summary"].items():
            if v["response"] not in (None, "noop"):
                s[f"counterfactual {v['response']} ratio ({preset})"] = v["ratio"]
                s[f"counterfactual {v['response']} ratio of the tokenizer's truth ({preset})"] = v.get(
                    "tokenizer_ratio")
    st = report.get("stability")
    if st:
        for k, label in (("diversity", "no code collapse or shimmer"), ("grey", "no grey collapse"),
                         ("flashing", "no periodic flashing"), ("noop_drift", "no idle drift")):
            s[f"stability: {label}"] = all(x[k]["pass"] for x in st["starts"])
    return s


def log_wandb(mode: str, project: str, report: dict[str, Any], out: Path) -> None:
    try:
        import wandb

        run = wandb.init(project=project, mode=mode, dir=str(out), job_type="evaluate",
                         config=report["config"])
        run.summary.update({k: v for k, v in report["summary"].items() if isinstance(v, (int, float, bool, str))})
        run.log({p.stem: wandb.Image(str(p)) for p in sorted(out.glob("*.png"))})
        run.finish()
    except Exception as e:  # wandb problems must never lose the report already written
        print(f"warning: wandb logging failed ({type(e).__name__}: {e}); the report is on disk", file=sys.stderr)
