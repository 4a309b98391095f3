"""evaluate.py: fidelity, controllability and long-rollout stability of a world model, against baselines.

    python evaluate.py --model CKPT --data preprocessed/NAME [--episodes N] [--context C] [--out DIR]
                       [--quick] [--source-data DIR] [--device auto]

Writes to --out: report.json (every number), report.md (the tables, each threshold stated), PNG plots
(fidelity.png, controllability.png, stability.png, counterfactuals.png) and side-by-side mp4s (videos/).

What is measured (the failure modes of the earlier iteration, ../shared/reference/project-ochre-changelog.md:
ignored WASD, collapse to a grey-brown average, a flash every 5 frames, drift while idle):
- Fidelity on held-out episodes (the world model's own validation split, read from its checkpoint): warm up
  on C true frames, roll out autoregressively with the episode's actions, compare with the ground truth at
  horizons 1, 4, 16, 64: PSNR, SSIM, LPIPS. The ground truth is the VQ-VAE decode of the true tokens (the
  best any token model can draw), so the numbers measure the world model, not the tokenizer. Teacher-forced
  token accuracy. Baselines on the same clips in every table: copy-last-frame, and the model with its
  future actions replaced by no-ops (the no-op encoding, not a zero vector). Delta-t PSNR (Genie): PSNR
  with the true actions minus PSNR with another clip's actions.
- Controllability from pixels (metrics.py, works on any dataset): yaw = horizontal shift per degree, pitch =
  vertical shift per degree, forward/back = radial expansion/contraction of optical flow, jump = the scene
  moving down then up, no-op = mean frame change while no input. Each as the model's response divided by
  the ground truth's on the same clips (1.0 perfect, 0 = ignored). An inverse-dynamics judge (idm_judge.py,
  trained on ground-truth frames of the training split, never the world model's own head) reads the
  actions back from generated frames: camera-bin accuracy and per-key F1.
- Counterfactuals on the block world (needs episodes written by blockworld.generate): from one start state,
  each action preset through the oracle and through the model; PSNR/LPIPS against the oracle per preset
  and the response ratios above.
- Long-rollout stability: 60 s (960 frames) of scripted play and of no input: codebook diversity
  relative to the ground truth's (codes per frame: collapse; codes per second: shimmer), colour variance
  (grey collapse), the spectrum of the
  frame-to-frame change (periodic flashing) and drift under no-op, each with its pass/fail threshold.

--quick shrinks everything (2 episodes, horizons 1/4/16, 4 s of stability, a 60-step judge) to finish in
about a minute on a CPU; its numbers are a smoke test, not a measurement.
"""
from __future__ import annotations

import dataclasses
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import torch

import metrics as M
from eval_inputs import (ActionOverride, Clip, CopyPredictor, ModelPredictor, Predictor, Rolled, Start,
                         blockworld_starts, clip_starts, heldout_files, load_clips, max_episode_length,
                         noop_actions, other_clip_actions)
from eval_report import (ClipFrames, CounterfactualFrames, SectionFrames, StabilityFrames,
                         log_wandb, plot_controllability, plot_counterfactuals, plot_fidelity, plot_stability,
                         summary_of, write_markdown, write_videos, fmt)
from actions import RAW, RAW_DIM
from compat import check_compatible, shards_side, vqvae_side
from action_scripts import TICK_HZ


# Pass/fail thresholds of the stability section (stated in the report).
COLLAPSE_MIN = 0.5
"""Distinct codes per frame relative to the truth's, averaged over the last quarter of the rollout: below is
collapse (few codes: a flat plain, blur or a memorised texture). Judged per frame, because this tokenizer
re-codes unchanged content from frame to frame: the truth has ~230 codes a frame but ~570 a second, so a
per-second count scores even a right, still picture at ~0.4."""
SHIMMER_MAX = 2.0
"""Distinct codes per second relative to the truth's, over the last quarter: above is noise or shimmer
(codes that change every frame where the truth's keep still)."""
GREY_THRESHOLD = 0.3
"""Colour variance over the last quarter of the rollout relative to the ground truth's over the same frames
(or, without an oracle, to the held-out data's mean): below this is a grey collapse. The same window as the
diversity check, in step with the truth, because a script may end looking at a plain field: against its own
minute's mean the oracle's last second on the first held-out start scores 0.31."""
DRIFT_ABS = 0.03
"""Mean absolute pixel drift (0..1 units, ~8/255) over the last second of the no-op rollout, measured from
its first generated frame (so a blurry first prediction counts as a fidelity error, not as drift),
allowed on top of twice the ground truth's own drift."""
FLASH_EXPLAINED = 0.5
"""A periodic peak in the model's frame change is excused when the ground truth has at least this fraction
of its amplitude at the same frequency (e.g. a scripted action that repeats)."""


COUNTERFACTUAL_SCRIPTS = ("turn-right-360", "turn-left-360", "look-up-down", "walk-forward", "walk-back",
                          "strafe-left", "strafe-right", "jump", "noop")
QUICK_SCRIPTS = ("turn-right-360", "look-up-down", "walk-forward", "walk-back", "strafe-left", "jump", "noop")
"""One preset per response, so even --quick reports a ratio for every action."""
# Scripted play for the stability rollouts: (preset, seconds), repeated to the requested length.
STABILITY_SCRIPT = (("walk-forward", 2.0), ("turn-right-360", 1.5), ("walk-forward+jump", 2.0),
                    ("look-up-down", 1.0), ("strafe-left", 1.0), ("turn-left-360", 1.5), ("walk-back", 1.0),
                    ("noop", 1.5), ("random", 3.0))


@dataclass
class EvalConfig:
    """evaluate.py options."""

    model: str = ""
    """World-model checkpoint (weights-only export, kind world_model)."""
    data: str = ""
    """Token shard folder (preprocess.py output) whose held-out episodes are evaluated."""
    out: str = ""
    """Output folder; empty = runs/eval/<model file stem>."""
    source_data: str = ""
    """Original block-world folder (metadata/*.json); only needed when the shards' manifest does not point
    at the episodes' JSON files (counterfactuals re-create the episodes' start states from them)."""
    vqvae: str = ""
    """VQ-VAE checkpoint overriding the one the world model records."""
    episodes: int = 8
    """Held-out episodes used (at most)."""
    clips_per_episode: int = 4
    """Evaluation clips taken from each episode, evenly spaced."""
    context: int = 8
    """C: true frames the model is warmed up on before each rollout."""
    horizons: tuple[int, ...] = (1, 4, 16, 64)
    """Rollout horizons (frames) at which fidelity is reported; clips are C + max(horizons) frames long."""
    val_fraction: float = -1.0
    """Held-out fraction for dataset.split_files; negative = the one in the model's train_config."""
    split_seed: int = -1
    """Seed of the split; negative = the model's train_config seed."""
    sampling: Literal["greedy", "temperature", "topk"] = "greedy"
    """How rollout tokens are drawn from the logits."""
    temperature: float = 1.0
    """Sampling temperature (temperature / topk modes)."""
    top_k: int = 0
    """Codes kept per position in topk mode."""
    fill: bool = True
    """Draw the rows a walk's warp repeats from the model's texture prior (rollout.Sampling.fill), when it has
    one; false = keep the sampling mode's codes there."""
    fill_anchor: float = 128.0
    """Weigh the fill's draw towards the code the warp put there (rollout.Sampling.fill_anchor: the kernel's
    width in median nearest-code distances); 0 = the prior alone."""
    subtoken: bool = False
    """Draw the model's frames where their content is between whole-token moves (motion.subtoken_shift), as
    live play does. Off by default: against the tokenizer's reconstruction of the truth, which moves in steps
    too, it costs fidelity (shipped model, held-out seed: PSNR@1 28.1 against 29.6 dB, LPIPS@16 0.245
    against 0.232) while the judge reads the motion better (camera 0.66 against 0.56; README)."""
    stability_seconds: float = 60.0
    """Length of the scripted-play and no-op stability rollouts."""
    stability_episodes: int = 2
    """Start states for the stability rollouts."""
    counterfactual_frames: int = 48
    """Frames per action preset in the counterfactual rollouts."""
    counterfactual_starts: int = 4
    """Block-world start states for counterfactuals (beyond one per held-out episode: turned by 90 degrees)."""
    judge: str = ""
    """Inverse-dynamics judge checkpoint; trained on the training split and cached there when missing.
    Empty = <data>/idm_judge.pt."""
    judge_steps: int = 1000
    """Training steps when the judge has to be trained."""
    judge_frames: int = 40000
    """At most this many training-split frames are decoded for the judge."""
    lpips: bool = True
    """Compute LPIPS (real AlexNet weights; reported as unavailable without them, never a random trunk)."""
    videos: int = 3
    """Side-by-side mp4s written for this many clips (and each counterfactual start)."""
    batch_size: int = 16
    """Rollouts run together."""
    quick: bool = False
    """Smoke-test sizes, about a minute on a CPU: at most 2 episodes, 4 clips each, horizons up to 16,
    4 s of stability from 1 start, 12 counterfactual frames from 1 start with 5 presets, a judge of 60
    steps on 2000 frames, 1 video."""
    device: str = "auto"
    """auto, cpu or cuda."""
    cpu_threads: int = 0
    """torch intra-op threads on CPU (0 = torch's default, one per core; use fewer on a shared machine)."""
    seed: int = 0
    """Seed for sampling and for the random-action baseline."""
    wandb: Literal["offline", "online", "disabled"] = "disabled"
    """Also log the summary and plots to wandb."""
    wandb_project: str = "ochre"
    """wandb project name."""


QUICK: dict[str, Any] = dict(episodes=2, clips_per_episode=4, horizons=(1, 4, 16), stability_seconds=4.0,
                             stability_episodes=1, counterfactual_frames=12, counterfactual_starts=4,
                             judge_steps=60, judge_frames=2000, videos=1, batch_size=8)
"""--quick caps each of these options at this value (horizons: those not above 16)."""


def apply_quick(cfg: EvalConfig) -> EvalConfig:
    """The config with --quick's caps applied (no-op without --quick)."""
    if not cfg.quick:
        return cfg
    kw: dict[str, Any] = {}
    for k, v in QUICK.items():
        cur = getattr(cfg, k)
        if k == "horizons":
            kw[k] = tuple(h for h in cur if h <= max(v)) or v
        else:
            kw[k] = min(cur, v)
    return dataclasses.replace(cfg, **kw)


# ----------------------------------------------------------------------------- held-out episodes

# ----------------------------------------------------------------------------- fidelity

def summarize(values: np.ndarray) -> dict[str, float]:
    """mean and standard error of the mean."""
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if not v.size:
        return {"mean": float("nan"), "sem": float("nan"), "n": 0}
    sem = float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else 0.0
    return {"mean": float(v.mean()), "sem": sem, "n": int(v.size)}


def frame_metrics(pred: np.ndarray, truth: np.ndarray, lpips_net: Any, device: Any, last: np.ndarray
                  ) -> dict[str, np.ndarray]:
    """Per-clip, per-frame PSNR/SSIM/LPIPS of uint8 [B, N, H, W, 3] against the truth -> each [B, N], and
    PSNR/LPIPS on the changed region: the pixels where the truth differs from `last` [B, H, W, 3], the
    frame copy-last repeats (an average over the whole frame hides a frozen picture behind a still sky)."""
    b, n = pred.shape[:2]
    flat_p = pred.reshape((b * n,) + pred.shape[2:])  # [B*N, H, W, 3]
    flat_t = truth.reshape((b * n,) + truth.shape[2:])
    flat_l = np.repeat(last, n, axis=0)  # [B*N, H, W, 3], clip-major like flat_t
    mask = M.changed_mask(flat_t, flat_l)  # [B*N, H, W]
    out = {"psnr": M.psnr(flat_p, flat_t).reshape(b, n), "ssim": M.ssim(flat_p, flat_t).reshape(b, n),
           "psnr_changed": M.psnr_masked(flat_p, flat_t, mask).reshape(b, n)}
    if lpips_net is not None:
        out["lpips"] = M.lpips_distance(lpips_net, flat_p, flat_t, device=device).reshape(b, n)
        out["lpips_changed"] = M.lpips_distance(lpips_net, M.paste_unchanged(flat_p, flat_t, mask), flat_t,
                                                device=device).reshape(b, n)
    return out


def fidelity_tables(per_frame: dict[str, dict[str, np.ndarray]], horizons: Sequence[int]
                    ) -> dict[str, Any]:
    """{predictor: {metric: [B, N]}} -> {predictor: {metric: {h: summary at frame h}}}, the mean curves
    over all N frames, and delta-t PSNR (model minus model with other clips' actions, per clip)."""
    tables: dict[str, Any] = {}
    curves: dict[str, Any] = {}
    for name, mets in per_frame.items():
        tables[name] = {m: {str(h): summarize(v[:, h - 1]) for h in horizons} for m, v in mets.items()}
        curves[name] = {m: np.nanmean(v, axis=0).tolist() for m, v in mets.items()}
    delta = {}
    if "model" in per_frame and "model_random_actions" in per_frame:
        d = per_frame["model"]["psnr"] - per_frame["model_random_actions"]["psnr"]  # [B, N]
        delta = {str(h): summarize(d[:, h - 1]) for h in horizons}
    return {"tables": tables, "curves": curves, "delta_t_psnr": delta}


# ----------------------------------------------------------------------------- stability

def scripted_segments(n: int, seed: int) -> list[tuple[str, np.ndarray]]:
    """STABILITY_SCRIPT repeated until it covers n ticks: (script name, raw actions [m, 9]) per segment."""
    from action_scripts import named_script_actions

    parts, total, k = [], 0, 0
    while total < n:
        spec, secs = STABILITY_SCRIPT[k % len(STABILITY_SCRIPT)]
        m = max(1, int(round(secs * TICK_HZ)))
        parts.append((spec, named_script_actions(spec, m, seed=seed + k)))
        total += m
        k += 1
    return parts


def scripted_play(n: int, seed: int) -> np.ndarray:
    """STABILITY_SCRIPT repeated to n raw actions [n, 9]."""
    return np.concatenate([a for _, a in scripted_segments(n, seed)])[:n]



def stability_checks(model_tokens: np.ndarray, model_frames: np.ndarray, ref_tokens: np.ndarray | None,
                     ref_frames: np.ndarray, ref_diversity: tuple[float, float] | None, noop_frames: np.ndarray,
                     noop_ref_frames: np.ndarray | None, last_context_frame: np.ndarray) -> dict[str, Any]:
    """The four stability checks for one start (see the thresholds at the top of this file).

    model_tokens [T, h, w] / model_frames [T, H, W, 3]: scripted play; ref_*: the oracle's truth for the
    same actions (tokens of its VQ-VAE reconstruction), or held-out ground-truth frames with the data's
    (codes per frame, codes per second) when there is no oracle; noop_frames [T, H, W, 3]: the model under
    no input, noop_ref_frames: the oracle's no-op truth (None without an oracle)."""
    fps = TICK_HZ
    diversity: dict[str, Any] = {}
    for i, (name, count) in enumerate((("frame", M.codes_per_frame), ("second", M.codebook_diversity))):
        div = count(model_tokens, fps)
        ref = count(ref_tokens, fps) if ref_tokens is not None else np.full(len(div), float(ref_diversity[i]))
        rel = div / np.maximum(ref[:len(div)], 1e-9)
        diversity.update({f"per_{name}": div.tolist(), f"reference_per_{name}": ref.tolist(),
                          f"relative_per_{name}": rel.tolist(),
                          f"relative_per_{name}_last_quarter": float(rel[-max(1, len(rel) // 4):].mean())})
    diversity["collapse_min"], diversity["shimmer_max"] = COLLAPSE_MIN, SHIMMER_MAX
    diversity["collapsed"] = bool(diversity["relative_per_frame_last_quarter"] < COLLAPSE_MIN)
    diversity["shimmer"] = bool(diversity["relative_per_second_last_quarter"] > SHIMMER_MAX)
    diversity["pass"] = not (diversity["collapsed"] or diversity["shimmer"])
    grey = M.grey_collapse(model_frames, ref_frames, max(1, len(model_frames) // 4), GREY_THRESHOLD,
                           aligned=ref_tokens is not None)
    grey["pass"] = not grey["collapsed"]
    change = M.frame_change(model_frames)
    ref_change = M.frame_change(ref_frames)
    flash = M.periodic_flash(change)
    ref_amp = M.spectrum_amplitude_at(ref_change, flash["frequency"]) if flash["frequency"] else 0.0
    explained = bool(flash["flagged"] and ref_amp >= FLASH_EXPLAINED * flash["amplitude"])
    freqs, power = M.change_spectrum(change)
    rfreqs, rpower = M.change_spectrum(ref_change)
    flashing = {**flash, "reference_amplitude": ref_amp, "explained_by_reference": explained,
                "pass": bool(not flash["flagged"] or explained),
                "spectrum": {"freq": freqs.tolist(), "power": power.tolist()},
                "reference_spectrum": {"freq": rfreqs.tolist(), "power": rpower.tolist()}}
    d = M.drift(noop_frames, noop_frames[0])
    last = float(d[-max(1, int(fps)):].mean())
    ref_last = 0.0
    ref_curve: list[float] = []
    if noop_ref_frames is not None:
        rd = M.drift(noop_ref_frames, noop_ref_frames[0])
        ref_last, ref_curve = float(rd[-max(1, int(fps)):].mean()), rd.tolist()
    limit = DRIFT_ABS + 2 * ref_last
    drift = {"curve": d.tolist(), "reference_curve": ref_curve, "last_second": last,
             "reference_last_second": ref_last, "limit": limit,
             "first_frame_error": float(M.drift(noop_frames[:1], last_context_frame)[0]),
             "mean_change_per_frame": float(M.frame_change(noop_frames).mean()) if len(noop_frames) > 1 else 0.0,
             "pass": bool(last <= limit)}
    return {"diversity": diversity, "grey": grey, "flashing": flashing, "noop_drift": drift}


# ----------------------------------------------------------------------------- the evaluation

class Evaluation:
    """Holds the loaded pieces; each section method returns a JSON-ready dict and the frames it drew."""

    def __init__(self, cfg: EvalConfig, bundle: Any, model: Predictor | None = None) -> None:
        from rollout import Sampling

        self.cfg = cfg
        self.bundle = bundle
        self.device = bundle.device
        self.sampling = Sampling.of(cfg)
        self.model = model or ModelPredictor(bundle, self.sampling, cfg.batch_size, cfg.subtoken)
        self.model.name = "model"
        self.predictors: dict[str, Predictor] = {
            "model": self.model,
            "model_noop_actions": ActionOverride(self.model, "model_noop_actions", noop_actions),
            "model_random_actions": ActionOverride(self.model, "model_random_actions",
                                                   lambda a: other_clip_actions(a, cfg.seed)),
            "copy": CopyPredictor(),
        }
        self.lpips_net, self.lpips_note = self._load_lpips()
        self.timings: dict[str, float] = {}

    def _load_lpips(self) -> tuple[Any, str]:
        if not self.cfg.lpips:
            return None, "LPIPS disabled (--lpips false)"
        from lpips_loader import LPIPSWeightsError, load_lpips

        try:
            return load_lpips("alex", device=self.device), "LPIPS v0.1 AlexNet (real weights)"
        except LPIPSWeightsError as e:
            return None, f"LPIPS unavailable: {e}"

    def decode(self, tokens: np.ndarray | Rolled) -> np.ndarray:
        """tokens [..., h, w] (or a Rolled, drawn at its offsets) -> uint8 frames [..., H, W, 3]."""
        from rollout import decode_tokens

        rolled = tokens if isinstance(tokens, Rolled) else Rolled(tokens)
        tok = rolled.tokens
        lead = tok.shape[:-2]
        flat = tok.reshape((-1,) + tok.shape[-2:])  # [N, h, w]
        off = None if rolled.offsets is None else rolled.offsets.reshape((-1,) + rolled.offsets.shape[-3:])
        frames = decode_tokens(self.bundle, flat, batch_size=64, offsets=off)  # off: [N, 2, h, w]
        return frames.reshape(lead + frames.shape[1:])

    def encode(self, frames: np.ndarray) -> np.ndarray:
        from rollout import encode_frames

        return encode_frames(self.bundle, frames).cpu().numpy()

    # ---- fidelity, controllability and judge on held-out clips
    def clips_section(self, clips: list[Clip], judge: Any) -> tuple[dict[str, Any], ClipFrames]:
        cfg = self.cfg
        c = cfg.context
        n = max(cfg.horizons)
        ctx = np.stack([cl.tokens[:c] for cl in clips])  # [B, C, h, w]
        ctx_a = np.stack([cl.actions[:c - 1] for cl in clips])  # [B, C-1, 9]
        fut_a = np.stack([cl.actions[c - 1:c - 1 + n] for cl in clips])  # [B, N, 9]
        truth_tok = np.stack([cl.tokens[c:c + n] for cl in clips])  # [B, N, h, w]
        t0 = time.perf_counter()
        pred_tok = {name: p.rollout(ctx, ctx_a, fut_a) for name, p in self.predictors.items()}
        self.timings["rollouts_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        truth = self.decode(truth_tok)  # [B, N, H, W, 3]
        last_ctx = self.decode(ctx[:, -1])  # [B, H, W, 3]
        frames = {name: self.decode(t) for name, t in pred_tok.items()}
        self.timings["decode_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        per_frame = {name: frame_metrics(f, truth, self.lpips_net, self.device, last_ctx)
                     for name, f in frames.items()}
        fid = fidelity_tables(per_frame, cfg.horizons)
        fid["token_accuracy_rollout"] = {
            name: {str(h): M.token_accuracy(t.tokens[:, h - 1], truth_tok[:, h - 1]) for h in cfg.horizons}
            for name, t in pred_tok.items()}
        self.timings["fidelity_metrics_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        full_tok = np.stack([cl.tokens[:c + n] for cl in clips])
        full_a = np.stack([cl.actions[:c + n - 1] for cl in clips])
        tf = {}
        for name in [k for k in ("model", "model_noop_actions", "copy") if k in self.predictors]:
            pred = self.predictors[name].teacher_forced(full_tok, full_a, c - 1)
            tf[name] = M.token_accuracy(pred, full_tok[:, c:])
        fid["teacher_forced_token_accuracy"] = tf
        self.timings["teacher_forced_s"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        seqs = {"truth": np.concatenate([last_ctx[:, None], truth], 1)}  # [B, N+1, H, W, 3]
        for name, f in frames.items():
            seqs[name] = np.concatenate([last_ctx[:, None], f], 1)
        resp = {name: M.responses(M.pixel_measures(s, fut_a), fut_a) for name, s in seqs.items()
                if name != "model_random_actions"}
        control = {"responses": M.response_table(resp), "action_counts": {
            k: int(v.sum()) for k, v in M.action_masks(fut_a).items()}}
        control["action_counts"].update(
            yaw=int((np.abs(fut_a[..., RAW["yaw_deg"]]) >= 0.5).sum()),
            pitch=int((np.abs(fut_a[..., RAW["pitch_deg"]]) >= 0.5).sum()),
            jump=int((fut_a[..., RAW["jump"]] >= 0.5).sum()))
        self.timings["controllability_s"] = time.perf_counter() - t0
        if judge is not None:
            t0 = time.perf_counter()
            flat_a = fut_a.reshape(-1, RAW_DIM)
            js = {}
            for name, s in seqs.items():
                preds = [judge.predict(s[i]) for i in range(len(s))]
                merged = {k: np.concatenate([p[k] for p in preds]) for k in preds[0]}
                js[name] = _judge_row(merged, flat_a, judge)
            control["judge"] = js
            self.timings["judge_scoring_s"] = time.perf_counter() - t0
        return {"fidelity": fid, "controllability": control}, ClipFrames(truth, frames, fut_a)

    # ---- counterfactuals
    def counterfactual_section(self, starts: list[Start]) -> tuple[dict[str, Any], list[CounterfactualFrames]]:
        cfg = self.cfg
        presets = QUICK_SCRIPTS if cfg.quick else COUNTERFACTUAL_SCRIPTS
        from action_scripts import DEFAULT_SCRIPT_FRAMES, named_script_actions

        n = cfg.counterfactual_frames
        # Each preset at its natural length (a full turn over 6 s: 3.75 degrees per frame), cut to n frames,
        # so a short run does not squeeze a 360-degree turn into a few frames that no image motion tracks.
        acts = np.stack([named_script_actions(p, max(n, DEFAULT_SCRIPT_FRAMES), seed=cfg.seed)[:n]
                         for p in presets])  # [P, N, 9]
        per_start = []
        oracle_clips = []  # the oracle's own consecutive frames, for the tokenizer's code metrics
        drawn = []
        for st in starts:
            p = len(presets)
            ctx = np.repeat(st.tokens[None], p, 0)
            ctx_a = np.repeat(st.actions[None], p, 0)
            model_tok = self.model.rollout(ctx, ctx_a, acts)
            copy_tok = CopyPredictor().rollout(ctx, ctx_a, acts)
            # The no-op-action baseline is the same rollout for every preset: run it once.
            idle_tok = self.model.rollout(ctx[:1], ctx_a[:1], np.zeros_like(acts[:1]))
            model_f = self.decode(model_tok)  # [P, N, H, W, 3]
            copy_f = self.decode(copy_tok)
            idle_f = np.repeat(self.decode(idle_tok), p, axis=0)
            oracle_raw = np.stack([st.oracle(a) for a in acts])  # [P, N, H, W, 3]
            oracle_clips += [np.concatenate([st.frame[None], o]) for o in oracle_raw]  # [N+1, H, W, 3] each
            oracle_tok = self.encode(oracle_raw.reshape((-1,) + oracle_raw.shape[2:]))
            oracle_f = self.decode(oracle_tok).reshape(oracle_raw.shape)  # the truth as the VQ-VAE draws it
            last = self.decode(st.tokens[-1:])[0]
            lasts = np.repeat(last[None], p, axis=0)  # [P, H, W, 3]
            mm = frame_metrics(model_f, oracle_f, self.lpips_net, self.device, lasts)
            cm = frame_metrics(copy_f, oracle_f, self.lpips_net, self.device, lasts)
            im = frame_metrics(idle_f, oracle_f, self.lpips_net, self.device, lasts)
            rows = {}
            for i, name in enumerate(presets):
                # The oracle's motion is measured on its own rendering: the tokenizer's fixed-pattern
                # artefacts stay put on the screen and pull a phase correlation of mostly-sky views to zero.
                key = _primary_response(name)
                ro = _preset_response(st.frame, oracle_raw[i], acts[i], key)
                rm = _preset_response(last, model_f[i], acts[i], key)
                # The same measure on the oracle's frames as the tokenizer draws them: the ratio of a model
                # that predicted the oracle's tokens exactly. Not a ceiling: the decoder's screen-fixed
                # pattern reads as less motion than its content makes, and a whole-token warp moves the
                # pattern too (README, "The tokenizer's content follows a sub-token move").
                rt = _preset_response(last, oracle_f[i], acts[i], key)
                rows[name] = {"psnr": float(np.mean(mm["psnr"][i])), "ssim": float(np.mean(mm["ssim"][i])),
                              "psnr_changed": M.nanmean(mm["psnr_changed"][i]),
                              "copy_psnr_changed": M.nanmean(cm["psnr_changed"][i]),
                              "lpips": float(np.mean(mm["lpips"][i])) if "lpips" in mm else None,
                              "copy_psnr": float(np.mean(cm["psnr"][i])),
                              "copy_lpips": float(np.mean(cm["lpips"][i])) if "lpips" in cm else None,
                              "noop_actions_psnr": float(np.mean(im["psnr"][i])),
                              "noop_actions_lpips": float(np.mean(im["lpips"][i])) if "lpips" in im else None,
                              "response": key, "oracle_response": ro, "model_response": rm,
                              "tokenizer_response": rt,
                              "ratio": M.ratio(rm, ro, M.RESPONSE_FLOORS[key]),
                              "tokenizer_ratio": M.ratio(rt, ro, M.RESPONSE_FLOORS[key])}
            per_start.append({"start": st.name, "presets": rows})
            drawn.append(CounterfactualFrames(st.name, presets, oracle_f, model_f))
        summary = {}
        for name in presets:
            vals = [s["presets"][name] for s in per_start]
            summary[name] = {k: M.nanmean([v[k] for v in vals]) for k in
                             ("psnr", "ssim", "lpips", "copy_psnr", "copy_lpips", "noop_actions_psnr",
                              "noop_actions_lpips", "psnr_changed", "copy_psnr_changed", "ratio",
                              "tokenizer_ratio")}
            summary[name]["response"] = vals[0]["response"] if vals else None
        from vq_vae.stability import code_metrics

        codes = code_metrics(self.bundle.vqvae, oracle_clips) if oracle_clips else {}
        return {"frames": n, "presets": list(presets), "per_start": per_start, "summary": summary,
                "tokenizer_codes": codes,
                "truth": "oracle frames re-encoded and decoded by the VQ-VAE (responses: the oracle's own frames)"}, drawn

    # ---- stability
    def stability_section(self, starts: list[Start], ref_frames: np.ndarray, ref_diversity: tuple[float, float],
                          script: np.ndarray | None = None) -> tuple[dict[str, Any], list[StabilityFrames]]:
        """The stability checks of each start under `script` (raw actions [n, 9]; default: STABILITY_SCRIPT
        for stability_seconds) and under no input for as long."""
        cfg = self.cfg
        described = [list(x) for x in STABILITY_SCRIPT] if script is None else "given by the caller"
        if script is None:
            script = scripted_play(max(2, int(round(cfg.stability_seconds * TICK_HZ))), cfg.seed)
        n = len(script)
        b = len(starts)
        ctx = np.stack([s.tokens for s in starts])
        ctx_a = np.stack([s.actions for s in starts])
        play_tok = self.model.rollout(ctx, ctx_a, np.repeat(script[None], b, 0))  # [B, n, h, w]
        idle_tok = self.model.rollout(ctx, ctx_a, np.zeros((b, n, RAW_DIM), np.float32))
        results = []
        drawn = []
        for i, st in enumerate(starts):
            play_f = self.decode(play_tok[i])
            idle_f = self.decode(idle_tok[i])
            last = self.decode(st.tokens[-1:])[0]
            if st.oracle is not None:
                o_tok = self.encode(st.oracle(script))
                o_f = self.decode(o_tok)
                idle_o = self.decode(self.encode(st.oracle(np.zeros((n, RAW_DIM), np.float32))))
                checks = stability_checks(play_tok.tokens[i], play_f, o_tok, o_f, None, idle_f, idle_o, last)
                ref = "block-world oracle, same actions (VQ-VAE reconstruction)"
            else:
                o_f = None
                checks = stability_checks(play_tok.tokens[i], play_f, None, ref_frames, ref_diversity, idle_f,
                                          None, last)
                ref = "held-out ground-truth clips (dataset statistics; no oracle for these actions)"
            checks["reference"] = ref
            checks["start"] = st.name
            checks["pass"] = all(checks[k]["pass"] for k in ("diversity", "grey", "flashing", "noop_drift"))
            results.append(checks)
            drawn.append(StabilityFrames(st.name, play_f, o_f, idle_f))
        return {"frames": n, "seconds": n / TICK_HZ, "script": described,
                "starts": results, "pass": all(r["pass"] for r in results),
                "thresholds": {"collapse_relative_min": COLLAPSE_MIN, "shimmer_relative_max": SHIMMER_MAX,
                               "grey_relative_min": GREY_THRESHOLD,
                               "drift_abs": DRIFT_ABS, "flash_explained_fraction": FLASH_EXPLAINED}}, drawn


def _primary_response(preset: str) -> str:
    """The response a counterfactual preset is meant to produce."""
    for part, key in (("turn", "yaw"), ("look", "pitch"), ("walk-forward", "forward"), ("walk-back", "back"),
                      ("strafe", "strafe"), ("jump", "jump")):
        if part in preset:
            return key
    return "noop"


def _preset_response(first: np.ndarray, frames: np.ndarray, actions: np.ndarray, key: str) -> float:
    """The `key` response (metrics.responses) of one preset's frames [N, H, W, 3] after `first` [H, W, 3]
    under its raw actions [N, 9]."""
    seq = np.concatenate([first[None], frames])[None]  # [1, N+1, H, W, 3]
    return M.responses(M.pixel_measures(seq, actions[None]), actions[None])[key]


def _judge_row(pred: dict[str, np.ndarray], raw: np.ndarray, judge: Any) -> dict[str, Any]:
    from idm_judge import score

    s = score(pred, raw, judge.encoding)
    recall = {name: v["recall"] for axis in ("yaw", "pitch") for name, v in s[axis]["classes"].items()}
    return {"camera_balanced_acc": s["camera_balanced_acc"], "camera_macro_f1": s["camera_macro_f1"],
            "class_recall": recall, "camera_acc": s["camera_acc"], "yaw_acc": s["yaw_acc"], "pitch_acc": s["pitch_acc"],
            "yaw_acc_turning": s["yaw_acc_turning"], "key_mean_f1": s["key_mean_f1"],
            "key_f1": {k: v["f1"] for k, v in s["keys"].items()},
            "key_acc": {k: v["accuracy"] for k, v in s["keys"].items()}, "n": s["n"]}


# ----------------------------------------------------------------------------- judge

def get_judge(cfg: EvalConfig, root: Path, bundle: Any, split: tuple[float, int]) -> tuple[Any, str]:
    """Load the judge at cfg.judge (default <data>/idm_judge.pt) when it matches this VQ-VAE and split;
    otherwise train it on the training split of the shards, decoded by the bundle's VQ-VAE, and cache it."""
    import idm_judge

    path = Path(cfg.judge) if cfg.judge else root / "idm_judge.pt"
    if path.is_file():
        judge = idm_judge.load_judge(path, device=bundle.device)
        info = judge.info
        if info.get("source") == "raw-video":
            return judge, f"judge {path} (trained on raw video: its image domain differs from decoded tokens)"
        same = (info.get("vqvae_identity") == bundle.vqvae_identity
                and info.get("val_fraction") == split[0] and info.get("split_seed") == split[1]
                and Path(str(info.get("data", ""))).resolve() == root.resolve())
        if same and int(info.get("steps", 0)) >= cfg.judge_steps:
            return judge, f"judge {path} (cached, {info.get('steps')} steps)"
        if cfg.judge and not same:
            raise ValueError(f"judge {path} was trained for other data, VQ-VAE or split ({info.get('data')}, "
                             f"VQ-VAE {info.get('vqvae_identity')}, split {info.get('val_fraction')}/"
                             f"{info.get('split_seed')}); delete it or pass another --judge")
    t0 = time.perf_counter()
    judge = idm_judge.train_from_shards(root, bundle.vqvae, bundle.vqvae_identity, bundle.encoding, split[0],
                                        split[1], cfg.judge_steps, max_frames=cfg.judge_frames,
                                        device=bundle.device, seed=cfg.seed)
    idm_judge.save_judge(path, judge.net, judge.encoding, judge.info)
    return judge, f"judge trained for {cfg.judge_steps} steps in {time.perf_counter() - t0:.0f} s, cached at {path}"


def evaluate(cfg: EvalConfig, bundle: Any = None, model: Predictor | None = None) -> dict[str, Any]:
    """Run every section and write the outputs; returns the report dict. `bundle` (rollout.Bundle) and
    `model` (a Predictor standing in for the world model) are for tests and notebooks."""
    from ckpt_io import atomic_write_json, json_safe
    from config import to_dict
    from dataset import read_meta
    from rollout import load_bundle

    t_start = time.perf_counter()
    cfg = apply_quick(cfg)
    if cfg.context < 1:
        raise ValueError(f"--context must be >= 1, got {cfg.context}")
    if not cfg.horizons or min(cfg.horizons) < 1:
        raise ValueError(f"--horizons must be positive, got {cfg.horizons}")
    if cfg.cpu_threads > 0:
        torch.set_num_threads(cfg.cpu_threads)
    root = Path(cfg.data)
    if bundle is None:
        if not cfg.model:
            raise ValueError("--model is required")
        bundle = load_bundle(cfg.model, cfg.vqvae or None, cfg.device)
    out = Path(cfg.out) if cfg.out else Path("runs/eval") / Path(cfg.model or "model").stem
    meta = read_meta(root)
    notes: list[str] = []
    check_compatible(shards_side(meta, root), vqvae_side(bundle.vqvae, bundle.vqvae_path, bundle.vqvae_identity))
    ev = Evaluation(cfg, bundle, model)
    notes.append(ev.lpips_note)
    files, split_note = heldout_files(root, bundle.meta, cfg.val_fraction, cfg.split_seed)
    tc = bundle.meta.get("train_config") or {}
    split = (cfg.val_fraction if cfg.val_fraction >= 0 else float(tc.get("val_fraction", 0.1)),
             cfg.split_seed if cfg.split_seed >= 0 else int(tc.get("seed", 0)))

    longest = max_episode_length(root, files)
    horizons = tuple(h for h in cfg.horizons if cfg.context + h <= longest)
    if not horizons:
        raise ValueError(f"{root}: the longest held-out episode has {longest} frames, too short for "
                         f"{cfg.context} context frames plus a rollout")
    if horizons != tuple(cfg.horizons):
        notes.append(f"horizons {sorted(set(cfg.horizons) - set(horizons))} dropped: held-out episodes are at "
                     f"most {longest} frames long")
        cfg = dataclasses.replace(cfg, horizons=horizons)
        ev.cfg = cfg
    clips, clip_notes = load_clips(root, files, cfg.context, max(horizons), cfg.clips_per_episode, cfg.episodes)
    notes += clip_notes

    judge, judge_note = None, ""
    t0 = time.perf_counter()
    try:
        judge, judge_note = get_judge(cfg, root, bundle, split)
    except ValueError as e:
        judge_note = f"judge unavailable: {e}"
    notes.append(judge_note)
    ev.timings["judge_s"] = time.perf_counter() - t0

    report: dict[str, Any] = {"model": cfg.model or "(in-memory model)", "data": str(root), "split": split_note,
                              "device": str(bundle.device), "config": to_dict(cfg), "n_clips": len(clips),
                              "clips": [{"file": c.file, "start": c.start} for c in clips],
                              "vqvae": {"path": str(bundle.vqvae_path), "identity": bundle.vqvae_identity}}
    if judge is not None:
        report["judge_note"] = judge_note
        report["judge_heldout_truth"] = judge.info.get("val", {})
    drawn = SectionFrames()
    clip_report, drawn.clips = ev.clips_section(clips, judge)
    report.update(clip_report)

    t0 = time.perf_counter()
    frame_size = (int(meta.get("frame_size", [128, 72])[0]), int(meta.get("frame_size", [128, 72])[1]))
    bw_starts, bw_reason = blockworld_starts(root, files, cfg.source_data, cfg.context,
                                             max(cfg.counterfactual_starts, cfg.stability_episodes), ev.encode,
                                             frame_size)
    if bw_starts:
        report["counterfactuals"], drawn.counterfactuals = ev.counterfactual_section(
            bw_starts[:cfg.counterfactual_starts])
    else:
        report["counterfactuals"] = {"skipped": bw_reason or "no block-world episodes among the held-out files"}
    ev.timings["counterfactuals_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    stab_starts = bw_starts[:cfg.stability_episodes] or clip_starts(clips, cfg.context, cfg.stability_episodes)
    ref_frames = drawn.clips.truth.reshape((-1,) + drawn.clips.truth.shape[2:])  # [B*N, H, W, 3]
    from dataset import open_shard

    shard_tokens = [np.asarray(open_shard(root / f)["tokens"]) for f in files[:cfg.episodes]]
    ref_div = (M.nanmean([M.codes_per_frame(t, TICK_HZ).mean() for t in shard_tokens]),
               M.nanmean([M.codebook_diversity(t, TICK_HZ).mean() for t in shard_tokens]))
    report["stability"], drawn.stability = ev.stability_section(stab_starts, ref_frames, ref_div)
    ev.timings["stability_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)  # only once there is something to write
    plot_fidelity(report["fidelity"], out / "fidelity.png")
    plot_controllability(report["controllability"], out / "controllability.png")
    plot_stability(report["stability"], out / "stability.png")
    if drawn.counterfactuals:
        plot_counterfactuals(drawn.counterfactuals, out / "counterfactuals.png")
    report["videos"] = write_videos(drawn, out, cfg.videos) if cfg.videos > 0 else []
    ev.timings["outputs_s"] = time.perf_counter() - t0
    report["notes"] = notes
    report["timings"] = {k: round(v, 2) for k, v in ev.timings.items()}
    report["seconds"] = time.perf_counter() - t_start
    report["summary"] = summary_of(report)
    report = json_safe(report)
    atomic_write_json(out / "report.json", report)
    write_markdown(report, out / "report.md")
    if cfg.wandb != "disabled":
        log_wandb(cfg.wandb, cfg.wandb_project, report, out)
    report["out"] = str(out)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    from ckpt_io import CheckpointError
    from config import ConfigError, exit_on_error, main_config

    cfg = main_config(EvalConfig, argv=argv)

    def body() -> dict[str, Any]:
        from rollout import model_or_shipped

        if not cfg.data:
            raise ConfigError("--data is required")
        cfg.model = model_or_shipped(cfg.model)
        return evaluate(cfg)

    report = exit_on_error(body, (ValueError, CheckpointError, FileNotFoundError))
    for k, v in report["summary"].items():
        print(f"  {k}: {fmt(v) if not isinstance(v, str) else v}")
    print(f"evaluation report: {Path(report['out']) / 'report.md'} (numbers: report.json, plots: *.png, "
          f"videos: videos/)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
