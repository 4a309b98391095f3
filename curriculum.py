"""Training schedules: pure functions of the global step, plus the adaptive AR brake as a pure update of an
explicit, saved state. Nothing here keeps hidden state, so a resumed run follows the same schedules.

Lessons kept here (ids of LESSONS.md):
- the training window never grows: the AR length is carved out of a fixed window of `seq_len` frames
  (`ar_length` <= seq_len - 1 - min_tf_steps, checked by `check_window`), so the bug (L5) where
  seq_len = max(BASE_SEQ_LEN, ar_len + 1) grew into an OOM cannot come back;
- the scheduled-sampling curve is a proper inverse sigmoid 1/(1+exp(x)) (L4);
- the learning rate of each parameter group is base_lr(step) * the group's multiplier, so warmup never
  overwrites the FiLM multiplier (L8);
- the AR brake has a guaranteed minimum AR length after the AR start, hysteresis between its lower and
  upper LPIPS-ratio thresholds and a minimum interval between changes (L9), and a missing
  measurement leaves it unchanged.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Mapping


@dataclass
class CurriculumConfig:
    """Schedules of train.py (LR, AR length and brake, scheduled sampling, Gumbel tau, corruption)."""

    total_steps: int = 20000
    """Length of the LR cosine and the reference for the schedules (training may stop earlier: max_steps)."""
    warmup_steps: int = 500
    """Linear LR warmup steps."""
    min_lr_ratio: float = 0.1
    """Cosine floor as a fraction of the peak learning rate."""
    ar_start_step: int = 1000
    """First step with autoregressive (AR) rollout steps in the window."""
    ar_ramp_steps: int = 5000
    """Steps over which the AR length ramps linearly from ar_min_len to ar_max_len."""
    ar_min_len: int = 2
    """AR length right after ar_start_step and the brake's floor (guaranteed AR exposure)."""
    ar_max_len: int = 6
    """Largest AR length; must leave min_tf_steps teacher-forced steps in the seq_len window."""
    min_tf_steps: int = 2
    """Teacher-forced steps that always open the window (the AR part is carved out of the rest)."""
    brake_lower: float = 1.3
    """AR/TF LPIPS ratio (EMA) below which the brake lets the AR length grow by one."""
    brake_upper: float = 1.8
    """AR/TF LPIPS ratio (EMA) above which the brake shortens the AR length by one."""
    brake_ema: float = 0.95
    """EMA factor of the brake's ratio estimate (per step with a measurement)."""
    brake_interval: int = 100
    """Minimum steps between two brake changes (hysteresis against oscillation)."""
    ss_start_prob: float = 1.0
    """Teacher-forcing probability at step 0 (scheduled sampling feeds the model's own prediction otherwise)."""
    ss_min_prob: float = 0.7
    """Teacher-forcing probability far into training."""
    ss_midpoint: int = 6000
    """Step where the teacher-forcing probability is half way between start and min."""
    ss_steepness: float = 1500.0
    """Width (in steps) of the inverse-sigmoid transition."""
    tau_start: float = 1.0
    """Gumbel-softmax temperature at step 0."""
    tau_end: float = 0.3
    """Gumbel-softmax temperature floor (a high floor avoids the collapse of fast hardening: L18)."""
    tau_steps: int = 15000
    """Steps of the exponential tau anneal from tau_start to tau_end."""
    corrupt_max: float = 0.05
    """Fraction of teacher-forced input tokens replaced by random codes once the ramp is done."""
    corrupt_ramp_steps: int = 2000
    """Steps over which the token-corruption fraction ramps from 0 to corrupt_max."""


def check_window(seq_len: int, cfg: CurriculumConfig) -> None:
    """The window is fixed at seq_len frames; the AR part must fit in it after min_tf_steps."""
    if cfg.min_tf_steps < 1:
        raise ValueError(f"min_tf_steps must be >= 1, got {cfg.min_tf_steps}")
    if cfg.ar_min_len < 0 or cfg.ar_max_len < cfg.ar_min_len:
        raise ValueError(f"need 0 <= ar_min_len <= ar_max_len, got {cfg.ar_min_len}, {cfg.ar_max_len}")
    room = seq_len - 1 - cfg.min_tf_steps
    if cfg.ar_max_len > room:
        raise ValueError(f"ar_max_len {cfg.ar_max_len} does not fit a window of seq_len={seq_len} frames "
                         f"with min_tf_steps={cfg.min_tf_steps} (at most {room}); the window never grows")


def lr_factor(step: int, cfg: CurriculumConfig) -> float:
    """Multiplier of the peak LR: linear warmup, then cosine to min_lr_ratio at total_steps."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    span = max(1, cfg.total_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def ar_schedule(step: int, cfg: CurriculumConfig) -> int:
    """AR length the curriculum asks for at `step`, before the brake."""
    if step < cfg.ar_start_step or cfg.ar_max_len == 0:
        return 0
    frac = 1.0 if cfg.ar_ramp_steps <= 0 else min(1.0, (step - cfg.ar_start_step) / cfg.ar_ramp_steps)
    return int(cfg.ar_min_len + math.floor(frac * (cfg.ar_max_len - cfg.ar_min_len)))


def teacher_prob(step: int, cfg: CurriculumConfig) -> float:
    """Scheduled sampling: probability that a teacher-forced input is the true previous frame."""
    x = (step - cfg.ss_midpoint) / max(cfg.ss_steepness, 1e-9)
    sig = 1.0 / (1.0 + math.exp(min(60.0, max(-60.0, x))))
    return cfg.ss_min_prob + (cfg.ss_start_prob - cfg.ss_min_prob) * sig


def gumbel_tau(step: int, cfg: CurriculumConfig) -> float:
    """Exponential anneal tau_start -> tau_end over tau_steps, then constant."""
    frac = 1.0 if cfg.tau_steps <= 0 else min(1.0, step / cfg.tau_steps)
    return cfg.tau_start * (cfg.tau_end / cfg.tau_start) ** frac


def corruption_prob(step: int, cfg: CurriculumConfig) -> float:
    """Fraction of teacher-forced input tokens replaced by random codes (weakens the copy shortcut)."""
    frac = 1.0 if cfg.corrupt_ramp_steps <= 0 else min(1.0, step / cfg.corrupt_ramp_steps)
    return cfg.corrupt_max * frac


@dataclass(frozen=True)
class BrakeState:
    """The adaptive AR brake's saved state."""

    cap: int
    """Largest AR length the brake currently allows."""
    ratio_ema: float | None = None
    """EMA of LPIPS(AR frames) / LPIPS(teacher-forced frames); None before the first measurement."""
    last_change: int = -(10 ** 9)
    """Step of the last cap change."""
    n_up: int = 0
    n_down: int = 0
    n_hold: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "BrakeState":
        return cls(**d)


def initial_brake(cfg: CurriculumConfig) -> BrakeState:
    """The brake starts open (cap = ar_max_len): it only acts once AR frames look much worse than TF."""
    return BrakeState(cap=cfg.ar_max_len)


def brake_update(state: BrakeState, step: int, lpips_tf: float | None, lpips_ar: float | None,
                 cfg: CurriculumConfig) -> BrakeState:
    """New brake state after a step that measured mean LPIPS on teacher-forced and AR frames (either may be
    None or NaN when that step had no such frames: then nothing changes)."""
    if (lpips_tf is None or lpips_ar is None or not math.isfinite(lpips_tf) or not math.isfinite(lpips_ar)
            or lpips_tf <= 0 or step < cfg.ar_start_step):
        return state
    ratio = lpips_ar / lpips_tf
    ema = ratio if state.ratio_ema is None else cfg.brake_ema * state.ratio_ema + (1 - cfg.brake_ema) * ratio
    state = replace(state, ratio_ema=ema)
    if step - state.last_change < cfg.brake_interval:
        return state
    if ema > cfg.brake_upper and state.cap > cfg.ar_min_len:
        return replace(state, cap=state.cap - 1, last_change=step, n_down=state.n_down + 1)
    if ema < cfg.brake_lower and state.cap < cfg.ar_max_len:
        return replace(state, cap=state.cap + 1, last_change=step, n_up=state.n_up + 1)
    return replace(state, n_hold=state.n_hold + 1)


def ar_length(step: int, state: BrakeState, cfg: CurriculumConfig) -> int:
    """AR steps at the end of this step's window: the curriculum, limited by the brake (never below the
    guaranteed minimum once AR has started, never above ar_max_len)."""
    want = ar_schedule(step, cfg)
    if want == 0:
        return 0
    return min(cfg.ar_max_len, max(cfg.ar_min_len, min(want, state.cap)))
