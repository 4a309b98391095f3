"""Pure metric functions on frames, tokens and actions, used by evaluate.py and tests.

Frames are numpy arrays [..., H, W, 3], either uint8 or float in [0, 1] (`to_float01` normalises both).
Nothing here loads a model or touches the disk; LPIPS takes the network as an argument.

Image-motion sign conventions (image coordinates: x to the right, y down):
- `image_shift(a, b) -> (dx, dy)` is how far the *content* moved from frame a to frame b, in pixels:
  dx > 0 means the scene moved right, dy > 0 means it moved down.
- Turning right (+yaw in actions.py) moves the scene LEFT, so the yaw response in pixels per degree is
  -dx / yaw_deg. Looking down (+pitch) moves the scene UP, so the pitch response is -dy / pitch_deg.
  Both are positive for a camera that turns the way it was told to.
- Jumping raises the camera, so the scene first moves DOWN (dy > 0) and then back up as the player lands.
- `radial_expansion(a, b)` is the zoom factor minus one estimated from dense optical flow: > 0 when the
  scene expands from the centre (walking forward), < 0 when it contracts (walking back).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from actions import RAW

PSNR_CAP_DB = 100.0
"""PSNR of identical frames (MSE 0) is reported as this many dB instead of infinity, so means stay finite."""


# ----------------------------------------------------------------------------- conversions

def to_float01(frames: np.ndarray) -> np.ndarray:
    """uint8 [..., H, W, 3] or float in [0, 1] -> float32 in [0, 1]."""
    frames = np.asarray(frames)
    if frames.dtype == np.uint8:
        return frames.astype(np.float32) / 255.0
    return np.clip(frames.astype(np.float32, copy=False), 0.0, 1.0)


def to_uint8(frames: np.ndarray) -> np.ndarray:
    """Float in [0, 1] (or uint8) [..., H, W, 3] -> uint8, rounded."""
    frames = np.asarray(frames)
    if frames.dtype == np.uint8:
        return frames
    return np.clip(np.rint(frames * 255.0), 0, 255).astype(np.uint8)


def to_gray(frames: np.ndarray) -> np.ndarray:
    """[..., H, W, 3] -> float32 luma [..., H, W] in [0, 1] (ITU-R BT.601 weights)."""
    f = to_float01(frames)
    return (f[..., 0] * 0.299 + f[..., 1] * 0.587 + f[..., 2] * 0.114).astype(np.float32)


# ----------------------------------------------------------------------------- fidelity

def psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-frame PSNR in dB between frame batches [N, H, W, 3] (data range 1); identical frames give
    PSNR_CAP_DB."""
    a, b = to_float01(a), to_float01(b)
    if a.shape != b.shape:
        raise ValueError(f"psnr: shapes differ {a.shape} vs {b.shape}")
    mse = ((a.astype(np.float64) - b) ** 2).reshape(a.shape[0], -1).mean(axis=1)
    out = np.full(mse.shape, PSNR_CAP_DB)
    nz = mse > 0
    out[nz] = np.minimum(10.0 * np.log10(1.0 / mse[nz]), PSNR_CAP_DB)
    return out


def ssim(a: np.ndarray, b: np.ndarray, sigma: float = 1.5) -> np.ndarray:
    """Per-frame SSIM (Wang et al. 2004: Gaussian window sigma 1.5, K1 0.01, K2 0.03, data range 1),
    computed per colour channel with reflected borders and averaged over channels and pixels."""
    import cv2

    a, b = to_float01(a).astype(np.float64), to_float01(b).astype(np.float64)
    if a.shape != b.shape:
        raise ValueError(f"ssim: shapes differ {a.shape} vs {b.shape}")
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    out = np.empty(a.shape[0])

    def blur(x: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(x, (11, 11), sigma, borderType=cv2.BORDER_REFLECT)

    for i in range(a.shape[0]):
        x, y = a[i], b[i]
        mx, my = blur(x), blur(y)
        sxx = blur(x * x) - mx * mx
        syy = blur(y * y) - my * my
        sxy = blur(x * y) - mx * my
        s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
        out[i] = float(s.mean())
    return out


CHANGED_LEVELS = 8
"""A pixel counts as changed when the truth differs from the previous frame by more than this many grey
levels (of 255) in some channel: what a copy of the last frame gets wrong."""


def changed_mask(truth: np.ndarray, last: np.ndarray) -> np.ndarray:
    """truth [N, H, W, 3], last [N, H, W, 3] (the frame a copy-last predictor repeats) -> bool [N, H, W]."""
    diff = np.abs(to_float01(truth).astype(np.float64) - to_float01(last))
    return diff.max(axis=-1) > CHANGED_LEVELS / 255.0


def psnr_masked(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per-frame PSNR over the masked pixels only, frames [N, H, W, 3], mask [N, H, W] -> [N] (NaN where
    the mask is empty; capped like psnr)."""
    a, b = to_float01(a), to_float01(b)
    sq = ((a.astype(np.float64) - b) ** 2).mean(axis=-1) * mask  # [N, H, W]
    count = mask.reshape(mask.shape[0], -1).sum(axis=1)
    mse = sq.reshape(sq.shape[0], -1).sum(axis=1) / np.maximum(count, 1)
    out = np.full(mse.shape, PSNR_CAP_DB)
    nz = mse > 0
    out[nz] = np.minimum(10.0 * np.log10(1.0 / mse[nz]), PSNR_CAP_DB)
    return np.where(count > 0, out, np.nan)


def paste_unchanged(pred: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """pred with every unchanged pixel (mask False) replaced by the truth's: a perceptual metric of the
    result against the truth scores only the changed region."""
    return np.where(mask[..., None], pred, truth)


def lpips_distance(net: Any, a: np.ndarray, b: np.ndarray, batch_size: int = 32,
                   device: Any = "cpu") -> np.ndarray:
    """Per-frame LPIPS between frame batches [N, H, W, 3] with a network from lpips_loader.load_lpips
    (inputs scaled to [-1, 1] NCHW as it expects)."""
    import torch

    a, b = to_float01(a), to_float01(b)
    if a.shape != b.shape:
        raise ValueError(f"lpips: shapes differ {a.shape} vs {b.shape}")
    out = []
    with torch.no_grad():
        for i in range(0, a.shape[0], batch_size):
            # [n, H, W, 3] -> [n, 3, H, W] in [-1, 1]
            x = torch.from_numpy(a[i:i + batch_size]).permute(0, 3, 1, 2).to(device) * 2 - 1
            y = torch.from_numpy(b[i:i + batch_size]).permute(0, 3, 1, 2).to(device) * 2 - 1
            out.append(net(x, y).reshape(-1).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def token_accuracy(pred: np.ndarray, target: np.ndarray) -> float:
    """Fraction of token positions where pred equals target (any matching shapes)."""
    pred, target = np.asarray(pred), np.asarray(target)
    if pred.shape != target.shape:
        raise ValueError(f"token_accuracy: shapes differ {pred.shape} vs {target.shape}")
    return float((pred == target).mean()) if pred.size else float("nan")


# ----------------------------------------------------------------------------- motion from pixels

def frame_change(frames: np.ndarray) -> np.ndarray:
    """Mean absolute change between consecutive frames [T, H, W, 3] -> [T-1] (in [0, 1] units)."""
    f = to_float01(frames)
    if f.shape[0] < 2:
        return np.zeros(0, np.float32)
    return np.abs(f[1:] - f[:-1]).reshape(f.shape[0] - 1, -1).mean(axis=1)


def image_shift(a: np.ndarray, b: np.ndarray, upsample: int = 20) -> tuple[float, float]:
    """(dx, dy) in pixels that the content moved from frame a to frame b, by phase correlation on luma
    with a Hann window; see the module docstring for the sign convention.

    The integer peak of the correlation is refined by evaluating the inverse DFT on a grid 1/upsample px
    fine within one pixel of it (Guizar-Sicairos et al. 2008). cv2.phaseCorrelate's weighted-centroid
    refinement was measured to be off by up to 0.3 px on smooth textures, which is a large error for the
    1-4 px per frame that a camera turn produces at 128x72."""
    ga, gb = to_gray(a).astype(np.float64), to_gray(b).astype(np.float64)
    if ga.shape != gb.shape:
        raise ValueError(f"image_shift: shapes differ {ga.shape} vs {gb.shape}")
    h, w = ga.shape
    win = np.outer(np.hanning(h), np.hanning(w))
    # Removing each frame's mean keeps a global brightness change from dominating the correlation.
    fa = np.fft.fft2((ga - ga.mean()) * win)
    fb = np.fft.fft2((gb - gb.mean()) * win)
    cross = fb * np.conj(fa)
    cross /= np.abs(cross) + 1e-12
    corr = np.real(np.fft.ifft2(cross))
    iy, ix = np.unravel_index(int(np.argmax(corr)), corr.shape)
    py = iy - h if iy > h // 2 else iy
    px = ix - w if ix > w // 2 else ix
    offs = np.arange(-upsample, upsample + 1) / upsample
    # Inverse DFT at (py + offs) x (px + offs): [n, h] @ [h, w] @ [w, n] -> [n, n]
    ky = np.exp(2j * np.pi * (py + offs)[:, None] * np.fft.fftfreq(h)[None, :])
    kx = np.exp(2j * np.pi * np.fft.fftfreq(w)[:, None] * (px + offs)[None, :])
    fine = np.real(ky @ cross @ kx)
    jy, jx = np.unravel_index(int(np.argmax(fine)), fine.shape)

    def vertex(m: float, c: float, p: float) -> float:
        # Offset of the parabola through three equally spaced samples from the middle one, in samples.
        d = m - 2 * c + p
        return float(np.clip((m - p) / (2 * d), -0.5, 0.5)) if d < 0 else 0.0

    n = len(offs)
    sx = vertex(fine[jy, jx - 1], fine[jy, jx], fine[jy, jx + 1]) if 0 < jx < n - 1 else 0.0
    sy = vertex(fine[jy - 1, jx], fine[jy, jx], fine[jy + 1, jx]) if 0 < jy < n - 1 else 0.0
    return float(px + offs[jx] + sx / upsample), float(py + offs[jy] + sy / upsample)


def shifts(frames: np.ndarray) -> np.ndarray:
    """image_shift between consecutive frames [T, H, W, 3] -> [T-1, 2] (dx, dy)."""
    return np.array([image_shift(frames[i], frames[i + 1]) for i in range(len(frames) - 1)],
                    dtype=np.float64).reshape(-1, 2)


def optical_flow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Dense Farneback optical flow from a to b: [H, W, 2] (x, y) pixel displacements."""
    import cv2

    ga, gb = to_uint8(to_gray(a)[..., None])[..., 0], to_uint8(to_gray(b)[..., None])[..., 0]
    return cv2.calcOpticalFlowFarneback(ga, gb, None, pyr_scale=0.5, levels=3, winsize=11,
                                        iterations=5, poly_n=5, poly_sigma=1.1, flags=0)


def radial_expansion(a: np.ndarray, b: np.ndarray, margin: float = 0.1) -> float:
    """Zoom factor minus one between frames a and b from Farneback flow: the least-squares s in
    flow = t + s * r, r the offset from the image centre. A pure translation t contributes nothing
    because the sampled region is symmetric about the centre. `margin` (fraction of each side) drops the
    borders, where content enters and leaves the view and flow is unreliable."""
    flow = optical_flow(a, b).astype(np.float64)
    h, w = flow.shape[:2]
    my, mx = int(round(h * margin)), int(round(w * margin))
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    rx, ry = xs - (w - 1) / 2, ys - (h - 1) / 2
    sl = (slice(my, h - my), slice(mx, w - mx))
    fx, fy, rx, ry = flow[..., 0][sl], flow[..., 1][sl], rx[sl], ry[sl]
    # Removing the mean flow solves for t and s jointly (the region is symmetric, so mean(r) = 0).
    fx, fy = fx - fx.mean(), fy - fy.mean()
    return float((fx * rx + fy * ry).sum() / (rx * rx + ry * ry).sum())


def expansions(frames: np.ndarray) -> np.ndarray:
    """radial_expansion between consecutive frames [T, H, W, 3] -> [T-1]."""
    return np.array([radial_expansion(frames[i], frames[i + 1]) for i in range(len(frames) - 1)],
                    dtype=np.float64)


def response_slope(command: np.ndarray, measured: np.ndarray, min_abs: float = 0.5) -> float:
    """Least-squares slope through the origin of measured on command, over steps with |command| >=
    min_abs (e.g. pixels of shift per degree of yaw). NaN when no step qualifies."""
    c, m = np.asarray(command, np.float64).ravel(), np.asarray(measured, np.float64).ravel()
    keep = np.abs(c) >= min_abs
    if not keep.any():
        return float("nan")
    c, m = c[keep], m[keep]
    return float((c * m).sum() / (c * c).sum())


def jump_profile(dy: np.ndarray, onsets: Sequence[int], window: int) -> np.ndarray:
    """Cumulative vertical content shift after each jump onset: [n_onsets, window] (onset step first).
    Positive values mean the scene moved down, i.e. the camera rose. Onsets too close to the end are
    dropped."""
    dy = np.asarray(dy, np.float64)
    rows = [np.cumsum(dy[o:o + window]) for o in onsets if o + window <= len(dy)]
    return np.stack(rows) if rows else np.zeros((0, window))


def jump_response(profile: np.ndarray) -> tuple[float, float]:
    """(rise, return_fraction) of jump profiles [n, window]: rise is the mean peak of the cumulative
    downward scene shift (camera up) in pixels; return_fraction is how much of the rise is undone by the
    end of the window (1 = landed back where it started). NaN without profiles."""
    if profile.shape[0] == 0:
        return float("nan"), float("nan")
    peak = profile.max(axis=1)
    rise = float(peak.mean())
    back = float(((peak - profile[:, -1]).mean()) / rise) if rise > 1e-9 else float("nan")
    return rise, back


def ratio(model: float, truth: float, floor: float) -> float | None:
    """model / truth, or None when |truth| < floor (the ground truth shows no measurable response)."""
    if not np.isfinite(model) or not np.isfinite(truth) or abs(truth) < floor:
        return None
    return float(model / truth)


# ----------------------------------------------------------------------------- stability

def codebook_diversity(tokens: np.ndarray, fps: float) -> np.ndarray:
    """Distinct codes used in each whole second of a token sequence [T, h, w] -> [T // fps] counts
    (at least one window: a sequence shorter than a second counts as one)."""
    tokens = np.asarray(tokens)
    step = max(1, int(round(fps)))
    n = max(1, tokens.shape[0] // step)
    return np.array([len(np.unique(tokens[i * step:(i + 1) * step])) for i in range(n)], dtype=np.float64)


def codes_per_frame(tokens: np.ndarray, fps: float) -> np.ndarray:
    """Distinct codes of each frame of a token sequence [T, h, w], averaged over each whole second ->
    [T // fps] (at least one window). Unlike the per-second count, a tokenizer that re-codes unchanged
    content from frame to frame does not inflate it: it measures how much of the picture is drawn."""
    tokens = np.asarray(tokens)
    step = max(1, int(round(fps)))
    n = max(1, tokens.shape[0] // step)
    per = np.array([len(np.unique(f)) for f in tokens], dtype=np.float64)  # [T]
    return np.array([per[i * step:(i + 1) * step].mean() for i in range(n)], dtype=np.float64)


def colour_variance(frames: np.ndarray) -> np.ndarray:
    """Per-frame spatial variance of colour [T, H, W, 3] -> [T] (mean over channels, [0, 1] units).
    A collapse to a flat grey-brown average drives it towards zero."""
    f = to_float01(frames).astype(np.float64)
    return f.reshape(f.shape[0], -1, 3).var(axis=1).mean(axis=1)


def grey_collapse(frames: np.ndarray, reference: np.ndarray, window: int, threshold: float = 0.3,
                  aligned: bool = True) -> dict[str, Any]:
    """Mean colour variance of the last `window` frames of `frames` relative to the reference's: over the
    same frames of `reference` when `aligned` (the truth of the same actions, which may itself end in a
    plain field), else over all of `reference` (dataset statistics). Collapsed when below `threshold`.
    Also returns both per-frame variance curves (the report's plots)."""
    window = max(1, min(int(window), len(frames)))
    model_curve, ref_curve = colour_variance(frames), colour_variance(reference)  # [T], [R]
    last = model_curve[-window:].mean()
    ref = (ref_curve[len(frames) - window:len(frames)] if aligned else ref_curve).mean()
    rel = float(last / ref) if ref > 0 else float("nan")
    return {"window_frames": window, "model_variance": float(last), "reference_variance": float(ref),
            "relative": rel, "aligned": aligned, "threshold": threshold, "collapsed": bool(rel < threshold),
            "model_per_frame": model_curve.tolist(), "reference_per_frame": ref_curve.tolist()}


def change_spectrum(change: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Power spectrum of a frame-to-frame change signal [N] (mean and linear trend removed, Hann window):
    (frequencies in cycles per frame, power)."""
    c = np.asarray(change, np.float64)
    n = len(c)
    if n < 4:
        return np.zeros(0), np.zeros(0)
    t = np.arange(n)
    c = c - np.polyval(np.polyfit(t, c, 1), t)
    win = np.hanning(n)
    spec = np.fft.rfft(c * win)
    return np.fft.rfftfreq(n), np.abs(spec) ** 2


def periodic_flash(change: np.ndarray, min_period: float = 2.0, max_period: float = 10.0,
                   min_fraction: float = 0.6, min_relative: float = 0.1,
                   min_amplitude: float = 0.5 / 255, min_cycles: float = 10.0) -> dict[str, Any]:
    """Detect periodic flashing (e.g. a flash every 5 frames) in a frame-to-frame change signal [N].

    A flash every p frames puts the change signal's power at 1/p and its harmonics. For each candidate
    period between min_period and max_period frames, the "comb" sums the power at the fundamental and
    every harmonic (each with its neighbouring bins, for the Hann window's leakage); the chosen period is
    the shortest whose comb holds at least 90% of the best comb's power (so a flash every 5 frames is
    reported as 5, not as its subharmonic 10). It is flagged when the comb holds at least `min_fraction` of
    ALL the signal's varying power (mean and trend removed; a slow oscillation leaking into the band, or
    irregular jitter spread over all frequencies, stays below) and the fundamental's sinusoid amplitude
    is at least `min_relative` of the mean change and `min_amplitude` absolute, so that a nearly constant
    change signal (smooth motion, a still scene) is never flagged.

    A signal shorter than `min_cycles` of the longest period is not judged ("judged": False): on 64
    frames of white noise some comb holds over 60% of the power in about 3% of cases (measured), on 120
    frames never more than 46% in 300 trials."""
    c = np.asarray(change, np.float64)
    freqs, power = change_spectrum(c)
    result: dict[str, Any] = {"period": None, "frequency": None, "fraction": 0.0, "amplitude": 0.0,
                              "relative_amplitude": 0.0, "flagged": False,
                              "thresholds": {"min_fraction": min_fraction, "min_relative": min_relative,
                                             "min_amplitude": min_amplitude,
                                             "periods": [min_period, max_period], "min_cycles": min_cycles},
                              "judged": len(c) >= min_cycles * max_period}
    total = float(power[1:].sum()) if len(power) else 0.0
    if len(freqs) < 4 or total <= 0:
        return result
    band = np.flatnonzero((freqs >= 1.0 / max_period - 1e-12) & (freqs <= 1.0 / min_period + 1e-12))
    if len(band) == 0:
        return result
    last = len(power) - 1

    def comb(k: int) -> float:
        bins: set[int] = set()
        m = 1
        while m * k <= last + 1:
            centre = min(m * k, last)
            bins.update(j for j in (centre - 1, centre, centre + 1) if 0 < j <= last)
            m += 1
        return float(power[sorted(bins)].sum())

    combs = np.array([comb(int(k)) for k in band])
    good = band[combs >= 0.9 * combs.max()]
    k = int(good.max())
    fraction = comb(k) / total
    # Amplitude of a sinusoid whose Hann-windowed DFT peak has this power (exact at bin centres).
    amplitude = float(2.0 * np.sqrt(power[max(1, k - 1):k + 2].max()) / np.hanning(len(c)).sum())
    mean_change = float(np.abs(c).mean())
    relative = amplitude / mean_change if mean_change > 0 else 0.0
    result.update(period=float(1.0 / freqs[k]), frequency=float(freqs[k]), fraction=fraction,
                  amplitude=amplitude, relative_amplitude=relative,
                  flagged=bool(result["judged"] and fraction >= min_fraction and relative >= min_relative
                               and amplitude >= min_amplitude))
    return result


def spectrum_amplitude_at(change: np.ndarray, frequency: float) -> float:
    """Sinusoid amplitude of a change signal at the bin nearest `frequency` (same scaling as
    periodic_flash), to check whether a reference shows the same periodicity."""
    freqs, power = change_spectrum(change)
    if len(freqs) == 0:
        return 0.0
    k = int(np.argmin(np.abs(freqs - frequency)))
    lo, hi = max(0, k - 1), min(len(power), k + 2)
    return float(2.0 * np.sqrt(power[lo:hi].max()) / np.hanning(len(change)).sum())


def drift(frames: np.ndarray, reference_frame: np.ndarray) -> np.ndarray:
    """Mean absolute difference of each frame [T, H, W, 3] from one reference frame [H, W, 3] -> [T]."""
    f, r = to_float01(frames), to_float01(reference_frame)
    return np.abs(f - r[None]).reshape(f.shape[0], -1).mean(axis=1)


# ----------------------------------------------------------------------------- classification

def binary_scores(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """Accuracy, precision, recall and F1 of boolean predictions [N] against boolean targets [N]
    (precision/recall/F1 are NaN when undefined: no predicted or no true positives)."""
    p, t = np.asarray(pred, bool).ravel(), np.asarray(target, bool).ravel()
    tp, fp, fn = int((p & t).sum()), int((p & ~t).sum()), int((~p & t).sum())
    prec = tp / (tp + fp) if tp + fp else float("nan")
    rec = tp / (tp + fn) if tp + fn else float("nan")
    f1 = 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else float("nan")
    return {"accuracy": float((p == t).mean()) if p.size else float("nan"), "precision": float(prec),
            "recall": float(rec), "f1": float(f1), "positives": int(t.sum()), "n": int(t.size)}


def nanmean(x: Sequence[float] | np.ndarray) -> float:
    """Mean ignoring NaN and None; NaN for an empty input."""
    v = np.array([np.nan if e is None else e for e in np.asarray(x, dtype=object).ravel()], np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else float("nan")


# ----------------------------------------------------------------------------- controllability of clips

RESPONSE_ACTIONS = ("yaw", "pitch", "forward", "back", "strafe", "jump", "noop")
# Controllability: a ground-truth response smaller than this cannot be divided by (the ratio is omitted).
RESPONSE_FLOORS = {"yaw": 0.05, "pitch": 0.05, "forward": 0.002, "back": 0.002, "strafe": 0.1, "jump": 0.5,
                   "noop": 0.5 / 255}
JUMP_WINDOW = 10
"""Frames after a jump press over which the vertical shift is accumulated (a jump lasts ~0.6 s)."""


def pixel_measures(frames: np.ndarray, actions: np.ndarray) -> dict[str, np.ndarray]:
    """Motion measured in each transition of clips: frames uint8 [B, T+1, H, W, 3], actions [B, T, 9] ->
    dx, dy [B, T] (phase correlation), change [B, T], expansion [B, T] (NaN where neither forward nor back
    is held: optical flow is only computed where it is needed)."""
    b, t = actions.shape[:2]
    dx, dy, change = np.zeros((b, t)), np.zeros((b, t)), np.zeros((b, t))
    exp = np.full((b, t), np.nan)
    for i in range(b):
        sh = shifts(frames[i])
        dx[i], dy[i] = sh[:, 0], sh[:, 1]
        change[i] = frame_change(frames[i])
        for s in range(t):
            if actions[i, s, RAW["forward"]] >= 0.5 or actions[i, s, RAW["back"]] >= 0.5:
                exp[i, s] = radial_expansion(frames[i, s], frames[i, s + 1])
    return {"dx": dx, "dy": dy, "change": change, "expansion": exp}


def action_masks(actions: np.ndarray) -> dict[str, np.ndarray]:
    """Boolean masks [...] of the steps of raw actions [..., 9] where one movement is held alone, and of
    no-op steps (no key, camera still)."""
    a = actions
    yaw, pitch = a[..., RAW["yaw_deg"]], a[..., RAW["pitch_deg"]]
    keys = a[..., 2:] >= 0.5
    still_cam = (np.abs(yaw) < 0.5) & (np.abs(pitch) < 0.5)
    fwd = (a[..., RAW["forward"]] >= 0.5) & (a[..., RAW["back"]] < 0.5)
    back = (a[..., RAW["back"]] >= 0.5) & (a[..., RAW["forward"]] < 0.5)
    left = (a[..., RAW["left"]] >= 0.5) & (a[..., RAW["right"]] < 0.5)
    right = (a[..., RAW["right"]] >= 0.5) & (a[..., RAW["left"]] < 0.5)
    return {"forward": fwd, "back": back, "strafe_left": left, "strafe_right": right,
            "noop": still_cam & ~keys.any(-1)}


def responses(meas: dict[str, np.ndarray], actions: np.ndarray) -> dict[str, float]:
    """Per-action responses of one predictor on clips (see the module docstring for units and signs):
    yaw and pitch in px per degree (positive = turns the commanded way), forward/back as the mean
    expansion per frame while held (forward > 0, back < 0), strafe as the mean sideways scene shift per
    frame against the step (px; strafing left moves the scene right, counted positive), jump as the mean
    peak downward scene shift after a press (px), noop as the mean frame change while nothing is pressed."""
    yaw, pitch = actions[..., RAW["yaw_deg"]], actions[..., RAW["pitch_deg"]]
    m = action_masks(actions)
    out = {"yaw": response_slope(yaw, -meas["dx"]), "pitch": response_slope(pitch, -meas["dy"])}
    for k in ("forward", "back"):
        v = meas["expansion"][m[k]]
        out[k] = float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
    side = np.concatenate([meas["dx"][m["strafe_left"]], -meas["dx"][m["strafe_right"]]])
    out["strafe"] = float(side.mean()) if side.size else float("nan")
    jump = actions[..., RAW["jump"]] >= 0.5
    profiles = []
    for i in range(actions.shape[0]):
        onsets = [s for s in range(actions.shape[1]) if jump[i, s] and (s == 0 or not jump[i, s - 1])]
        profiles.append(jump_profile(meas["dy"][i], onsets, JUMP_WINDOW))
    out["jump"] = jump_response(np.concatenate(profiles))[0] if profiles else float("nan")
    nm = meas["change"][m["noop"]]
    out["noop"] = float(nm.mean()) if nm.size else float("nan")
    return out


def response_table(resp: dict[str, dict[str, float]]) -> dict[str, Any]:
    """{predictor: responses} (with "truth") -> per action: truth, each predictor and its ratio to truth."""
    truth = resp["truth"]
    table: dict[str, Any] = {}
    for action in RESPONSE_ACTIONS:
        row: dict[str, Any] = {"truth": truth[action], "floor": RESPONSE_FLOORS[action]}
        for name, r in resp.items():
            if name == "truth":
                continue
            row[name] = r[action]
            row[f"{name}_ratio"] = ratio(r[action], truth[action], RESPONSE_FLOORS[action])
        table[action] = row
    return table
