"""`preprocess.py --check DIR`: does a data folder's action log line up with its frames? Estimates the
action/frame lag per video (horizontal image motion against yaw, correlated at lags -3..3) and reports
action statistics, without a VQ-VAE."""
from __future__ import annotations

import math
import multiprocessing as mp
from pathlib import Path
from typing import Any

import numpy as np

from actions import KEY_FIELDS, RAW, RAW_FIELDS, ActionEncoding
from ckpt_io import atomic_write_json, json_safe
from preprocess import DecodeSettings, PreprocessConfig, log, probe_and_align
from sources import Episode, SourceError, decode_kept, discover, plan_kept_frames, resample_actions
from video_io import VideoError

CHECK_REPORT = "check_report.json"
CHECK_LAGS = tuple(range(-3, 4))
MIN_YAW_CHANGES = 3
# the best lag's |r| must beat every other lag's by this factor to count as a clear estimate
PEAK_RATIO = 1.5
# phase-correlation peak height below which a frame pair's shift is not trusted
MIN_PHASE_RESPONSE = 0.4


def _phase_shifts(frames: np.ndarray) -> np.ndarray:
    """Horizontal shift (pixels) from frame i-1 to frame i for i >= 1, greyscale [n, h, w] in; entry 0 and
    shifts whose phase-correlation peak is weak (not a clean translation: eye-height changes, parallax
    while moving, lighting) are NaN and left out of the lag estimate."""
    import cv2

    f = frames.astype(np.float32)
    win = cv2.createHanningWindow((f.shape[2], f.shape[1]), cv2.CV_32F)
    dx = np.full(len(f), np.nan)
    for i in range(1, len(f)):
        (sx, _sy), response = cv2.phaseCorrelate(f[i - 1], f[i], win)
        if response >= MIN_PHASE_RESPONSE:
            dx[i] = sx
    return dx


def _changes(a: np.ndarray) -> np.ndarray:
    """a[i] - a[i-1] for i >= 2 (entry 0 of a per-frame series is unused), NaN elsewhere."""
    d = np.full(len(a), np.nan)
    d[2:] = a[2:] - a[1:-1]
    return d


def lag_moments(motion: np.ndarray, yaw: np.ndarray, lags: tuple[int, ...] = CHECK_LAGS
                ) -> dict[int, tuple[float, float, float]]:
    """Centred cross and auto moments (sxy, sxx, syy) of the frame-to-frame *changes* of image motion
    (motion[i]: into frame i) and of yaw[i + lag], per lag. Changes rather than levels: actions are held
    for many frames, and held levels correlate at every lag alike; their changes peak at the true lag."""
    dm, dy = _changes(np.asarray(motion, np.float64)), _changes(np.asarray(yaw, np.float64))
    n = len(dm)
    out: dict[int, tuple[float, float, float]] = {}
    for lag in lags:
        i = np.arange(max(0, -lag), min(n, n - lag))
        x, y = dm[i], dy[i + lag]
        ok = np.isfinite(x) & np.isfinite(y)
        x, y = x[ok], y[ok]
        if len(x):
            x, y = x - x.mean(), y - y.mean()
        out[lag] = (float(x @ y), float(x @ x), float(y @ y))
    return out


def moments_to_corr(m: dict[int, tuple[float, float, float]]) -> dict[int, float]:
    return {lag: sxy / math.sqrt(sxx * syy) if sxx > 1e-12 and syy > 1e-12 else float("nan")
            for lag, (sxy, sxx, syy) in m.items()}


def best_lag(corr: dict[int, float]) -> tuple[int | None, float]:
    valid = {k: v for k, v in corr.items() if math.isfinite(v)}
    if not valid:
        return None, float("nan")
    # Ties break towards the smallest |lag| so a clean signal never reports a spurious offset.
    lag = max(valid, key=lambda k: (abs(valid[k]), -abs(k)))
    return lag, valid[lag]


def check_episode(ep: Episode, s: DecodeSettings) -> dict[str, Any]:
    """Lag estimate and resampled actions of one episode (for --check)."""
    try:
        info, al = probe_and_align(ep)
        start = int(math.ceil(s.skip_start_seconds * info.fps - 1e-9))
        rel = np.arange(min(start, al.frames), al.frames)
        if len(rel) < 8:
            raise SourceError(f"{ep.video}: too short to check ({len(rel)} frames after the skip)")
        scale = min(1.0, 160.0 / info.width)
        size = (max(16, int(round(info.width * scale / 2)) * 2), max(16, int(round(info.height * scale / 2)) * 2))
        frames = np.concatenate(list(decode_kept(ep.video, rel + al.offset, size, al.video_frames,
                                                 chunk=512, gray=True)))
        # phaseCorrelate's shift is how far the content moved; turning right (+yaw) moves it left.
        motion = -_phase_shifts(frames)
        yaw = al.actions[rel, RAW["yaw_deg"]].astype(np.float64)
        moments = lag_moments(motion, yaw)
        corr = moments_to_corr(moments)
        yaw_changes = int((np.abs(np.diff(yaw[1:])) > 0.5).sum())
        # a lag needs several camera changes to be measured; fewer gives a number, not an estimate
        lag, r = best_lag(corr) if yaw_changes >= MIN_YAW_CHANGES else (None, float("nan"))
        try:
            kept = plan_kept_frames(al.frames, info.fps, s.fps, s.skip_start_seconds)
            resampled = resample_actions(al.actions, kept)
        except SourceError:
            resampled = np.zeros((0, len(RAW_FIELDS)), np.float32)
        return {"name": ep.name, "video": str(ep.video), "source": al.label, "frames": int(len(rel)),
                "yaw_changes": yaw_changes, "lag": lag, "corr": r, "corr_by_lag": corr, "moments": moments,
                "actions": resampled}
    except (SourceError, VideoError, OSError) as e:
        return {"name": ep.name, "video": str(ep.video), "error": str(e)}


def _check_worker(args: tuple[Episode, DecodeSettings]) -> dict[str, Any]:
    return check_episode(*args)


def action_statistics(actions: np.ndarray, encoding: ActionEncoding = ActionEncoding()) -> dict[str, Any]:
    """Key-held frequencies, camera histograms and movement/camera co-occurrence over raw actions [N, 9]."""
    n = len(actions)
    if n == 0:
        return {"steps": 0}
    keys = {k: round(float((actions[:, RAW[k]] >= 0.5).mean()), 4) for k in KEY_FIELDS}
    edges = [-math.inf, -15.0, -4.0, -0.5, 0.5, 4.0, 15.0, math.inf]
    labels = ["< -15", "-15..-4", "-4..-0.5", "-0.5..0.5", "0.5..4", "4..15", "> 15"]
    hist = {}
    for field in ("yaw_deg", "pitch_deg"):
        counts, _ = np.histogram(actions[:, RAW[field]], bins=edges)
        hist[field] = dict(zip(labels, (round(c / n, 4) for c in counts.tolist())))
    move = (actions[:, [RAW["forward"], RAW["back"], RAW["left"], RAW["right"]]] >= 0.5).any(axis=1)
    yaw, pitch = actions[:, RAW["yaw_deg"]], actions[:, RAW["pitch_deg"]]
    cam = ((yaw < encoding.yaw_edges[1]) | (yaw > encoding.yaw_edges[2])
           | (pitch < encoding.pitch_edges[0]) | (pitch > encoding.pitch_edges[1]))
    both = float((move & cam).mean())
    return {
        "steps": n, "key_held_fraction": keys, "camera_histogram_deg_per_step": hist,
        "cooccurrence": {"move": round(float(move.mean()), 4), "camera": round(float(cam.mean()), 4),
                         "move_and_camera": round(both, 4),
                         "camera_given_move": round(both / max(float(move.mean()), 1e-12), 4) if move.any() else None,
                         "move_given_camera": round(both / max(float(cam.mean()), 1e-12), 4) if cam.any() else None},
    }


def run_check(cfg: PreprocessConfig) -> dict[str, Any]:
    """`--check DIR`: per-video and overall action/frame lag, and action statistics. Returns the report."""
    s = DecodeSettings(cfg.fps, (0, 0), cfg.skip_start_seconds)
    episodes, problems = discover(cfg.check, cfg.source)
    for f, r in problems:
        log(skip_line(f, r))
    jobs = [(ep, s) for ep in episodes]
    if cfg.workers > 0 and len(jobs) > 1:
        with mp.get_context("spawn").Pool(cfg.workers) as pool:
            results = list(pool.imap(_check_worker, jobs))
    else:
        results = [check_episode(*j) for j in jobs]
    good = [r for r in results if "error" not in r]
    for r in results:
        if "error" in r:
            log(skip_line(r["video"], r["error"]))
    log(f"lag check (image motion vs yaw, lags {CHECK_LAGS[0]}..{CHECK_LAGS[-1]}; lag +k means the action "
        f"that moved the view into frame i is stored k frames late):")
    warnings: list[str] = []
    for r in good:
        if r["lag"] is None:
            log(f"  {r['name']}: {r['yaw_changes']} yaw changes, too few to measure the lag")
            continue
        log(f"  {r['name']}: best lag {r['lag']:+d} (r={r['corr']:.2f})")
        if r["lag"] != 0:
            warnings.append(f"{r['name']}: actions lag the frames by {r['lag']:+d}")
    # pooled over videos: each contributes in proportion to how much its camera changes
    # pooled over videos: each contributes in proportion to how much its camera changes
    pooled = {lag: tuple(sum(r["moments"][lag][k] for r in good) for k in range(3)) for lag in CHECK_LAGS}
    pooled_corr = moments_to_corr(pooled)  # type: ignore[arg-type]
    total_changes = sum(r["yaw_changes"] for r in good)
    overall, overall_r = best_lag(pooled_corr) if total_changes >= MIN_YAW_CHANGES else (None, float("nan"))
    if overall is None:
        log(f"overall: {total_changes} yaw changes in all videos, too few to measure the lag")
    else:
        log(f"overall: best lag {overall:+d} (pooled r={overall_r:.2f} over {total_changes} yaw changes; by lag "
            + ", ".join(f"{k:+d}: {v:.2f}" for k, v in pooled_corr.items() if math.isfinite(v)) + ")")
        if overall != 0:
            warnings.append(f"overall lag is {overall:+d}, not 0: frames and actions are misaligned")
        if overall_r < 0:
            warnings.append("image motion anti-correlates with yaw: the yaw sign looks inverted "
                            "(expected +yaw = turn right)")
        runner_up = max((abs(v) for k, v in pooled_corr.items() if k != overall and math.isfinite(v)),
                        default=0.0)
        if abs(overall_r) < PEAK_RATIO * runner_up:
            warnings.append(f"no clear peak (|r| {abs(overall_r):.2f} vs {runner_up:.2f} at another lag): "
                            f"the lag estimate is uncertain")
    all_actions = np.concatenate([r["actions"] for r in good]) if good else np.zeros((0, 9), np.float32)
    stats = action_statistics(all_actions)
    log(f"action statistics over {stats['steps']} steps at {cfg.fps:g} fps:")
    if stats["steps"]:
        log("  key held: " + ", ".join(f"{k} {v:.1%}" for k, v in stats["key_held_fraction"].items()))
        for field, hist in stats["camera_histogram_deg_per_step"].items():
            log(f"  {field}: " + ", ".join(f"[{k}] {v:.1%}" for k, v in hist.items()))
        c = stats["cooccurrence"]
        fmt = lambda v: "n/a" if v is None else f"{v:.1%}"  # noqa: E731
        log(f"  movement {fmt(c['move'])}, camera {fmt(c['camera'])}, both {fmt(c['move_and_camera'])}; "
            f"camera while moving {fmt(c['camera_given_move'])}, moving while camera {fmt(c['move_given_camera'])}")
        if c["camera_given_move"] is not None and c["camera_given_move"] > 0.5:
            warnings.append(f"camera moves in {c['camera_given_move']:.0%} of movement steps: movement "
                            f"effects may be masked by camera motion")
    for w in warnings:
        log(f"WARNING: {w}")
    report = {"data": cfg.check, "lags": list(CHECK_LAGS),
              "videos": [{k: v for k, v in r.items() if k not in ("actions", "moments")} for r in results],
              "skipped": [{"file": f, "reason": r} for f, r in problems]
              + [{"file": r["video"], "reason": r["error"]} for r in results if "error" in r],
              "overall_lag": overall, "overall_corr": overall_r, "pooled_corr_by_lag": pooled_corr,
              "statistics": stats, "warnings": warnings}
    if cfg.out:
        atomic_write_json(Path(cfg.out) / CHECK_REPORT, json_safe(report))
        log(f"check report -> {Path(cfg.out) / CHECK_REPORT}")
    return report
