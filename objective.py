"""The training objective: what one training step computes on a window, apart from the loop around it.

One window of `seq_len` frames (tokens [B, L, h, w], actions [B, L-1, 15]) makes L-1 predictions:
- the window never changes size; the AR curriculum decides how many of its L-1 predictions are
  autoregressive (`curriculum.ar_length`), the rest are teacher-forced;
- teacher-forced step t feeds frame t (corrupted in a few random tokens, or replaced by the model's own
  previous prediction with the scheduled-sampling probability) and action t, and is scored against frame
  t+1: never the target frame as input (L11);
- AR steps feed the model's own greedy prediction, *detached* (L13: BPTT through the AR feedback exploded),
  and stream: every `ar_bptt` steps the chunk's loss is backpropagated and the recurrent state detached, so
  memory does not grow with the AR length;
- losses (losses.py): token CE, the Gumbel-softmax semantic codebook loss, LPIPS on frames decoded from
  soft embeddings *every step* with gradients (L6, L7: no_grad and every-5th-step LPIPS caused the
  flat loss and the 5-frame flashing), the variable-span IDM on the
  teacher-forced hidden states and the action-ranking hinge;
- LPIPS cost is bounded by scoring `lpips_per_sample` randomly chosen frames of every sample each step.

Every random choice of a step (corruption, scheduled sampling, Gumbel noise, LPIPS frames, IDM spans,
ranking alternatives) is drawn from a generator seeded by (seed, step, global sample index) into a
`StepPlan` before the window runs (Gumbel noise: frame by frame, after the plan). So a resumed run replays
exactly, and N data-parallel processes with batch B compute the same update as one process with batch N*B.

`Objective.window_loss` returns detached *sums* of this process's loss terms; the trainer all-reduces them
and `loss_metrics` turns them into the logged means.
"""
from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch

from actions import make_raw
from curriculum import BrakeState, ar_length, corruption_prob, gumbel_tau, teacher_prob
from devices import PhaseTimer
from losses import (action_rank_per_sample, change_weight, gumbel_softmax_probs, idm_per_item, lpips_per_sample,
                    near_duplicate_targets, semantic_per_sample, soft_embeddings, span_action_targets,
                    token_ce_per_sample)
from model_convGru import State, WorldModel, WorldModelConfig

if TYPE_CHECKING:  # train.py imports this module
    from train import TrainConfig

# Probe actions: the ranking loss draws its alternatives from them, and train.py's diagnostics swap them
# in (action_response/<name>).
PROBE_ACTIONS: dict[str, np.ndarray] = {
    "noop": make_raw(),
    "forward": make_raw(forward=1),
    "back": make_raw(back=1),
    "left": make_raw(left=1),
    "right": make_raw(right=1),
    "jump": make_raw(jump=1),
    "sprint_forward": make_raw(forward=1, sprint=1),
    "sneak": make_raw(sneak=1),
    "yaw_left": make_raw(yaw_deg=-8.0),
    "yaw_right": make_raw(yaw_deg=8.0),
    "pitch_up": make_raw(pitch_deg=-3.0),
    "pitch_down": make_raw(pitch_deg=3.0),
}


@dataclass
class ObjectiveConfig:
    """Loss weights and the options of the window objective (train.py's TrainConfig inherits them)."""

    w_ce: float = 1.0
    """Weight of the token cross-entropy."""
    w_semantic: float = 1.0
    """Weight of the Gumbel-softmax codebook-embedding loss."""
    w_lpips: float = 1.0
    """Weight of LPIPS on frames decoded from soft embeddings (computed every step)."""
    w_idm: float = 0.5
    """Weight of the inverse-dynamics loss."""
    w_rank: float = 0.5
    """Weight of the action-ranking hinge."""
    rank_margin: float = 0.05
    """Margin (nats of mean token CE) by which the true action must beat another one."""
    w_changed: float = 4.0
    """Extra token-CE weight on positions whose next code differs from the current true frame's
    (losses.change_weight); 0 = every position counts the same (the earlier design)."""
    denoise_targets: float = 0.0
    """Where the true next code lies within this codebook distance of the warped previous code (a
    near-duplicate the tokenizer re-coded, not a change), the token targets are the warped code (needs the
    motion path); 0 = the true code everywhere."""
    ar_loss_weight: float = 1.0
    """Weight of AR frames' losses relative to teacher-forced frames."""
    ar_bptt: int = 1
    """AR steps backpropagated together before the state is detached (memory grows with this, not with AR length)."""
    gumbel_hard: bool = False
    """Straight-through one-hot Gumbel samples instead of soft ones for the semantic and LPIPS losses."""
    lpips_per_sample: int = 1
    """Frames per sample scored with LPIPS each step (random among its predictions, every step)."""
    lpips_net: str = "alex"
    """LPIPS trunk (alex | vgg)."""
    idm_key_weights: tuple[float, ...] = (3.0, 3.0, 3.0, 3.0, 2.0, 1.0, 1.0)
    """IDM BCE weights of W, A, S, D, jump, sprint, sneak (movement is the hardest to learn)."""


# ----------------------------------------------------------------------------- the step's random plan

def sample_seed(seed: int, step: int, index: int) -> int:
    """Seed of the generator for one sample of one step (independent of batch split and process count)."""
    return int(np.random.SeedSequence([seed, step, index]).generate_state(1, np.uint64)[0] >> 1)


def sample_generators(seed: int, step: int, indices: list[int], device: torch.device) -> list[torch.Generator]:
    gens = []
    for i in indices:
        g = torch.Generator(device=device)
        g.manual_seed(sample_seed(seed, step, i))
        gens.append(g)
    return gens


def per_sample(gens: list[torch.Generator], draw: Callable[[torch.Generator], torch.Tensor]) -> torch.Tensor:
    """Stack one draw per sample's generator -> [B, ...]."""
    return torch.stack([draw(g) for g in gens])


@dataclass
class StepPlan:
    """The curriculum's values at this step and every per-sample random choice except Gumbel noise."""

    ar: int
    """AR predictions of the window (the last `ar` of its L-1)."""
    tf: int
    """Teacher-forced predictions (the first `tf`)."""
    tau: float
    """Gumbel-softmax temperature."""
    schedules: dict[str, float]
    """The schedule values, logged with the step's metrics."""
    gens: list[torch.Generator]
    """One generator per sample; the Gumbel noise is drawn from them frame by frame."""
    feed_pred: torch.Tensor
    """[B, T] bool: teacher-forced input t is the previous prediction (scheduled sampling)."""
    corrupt: torch.Tensor
    """[B, T, h, w] bool: input token replaced by `codes`."""
    codes: torch.Tensor
    """[B, T, h, w] random codes for the corruption."""
    lpips: torch.Tensor
    """[B, T] bool: frames scored with LPIPS."""
    rank_t: torch.Tensor
    """[B] teacher-forced step of each sample's ranking comparison."""
    rank_alt: torch.Tensor
    """[B] probe index where the search for a different alternative action starts."""
    idm_k: torch.Tensor
    """[B, T] IDM span ending at each frame."""


def make_plan(cfg: TrainConfig, model_cfg: WorldModelConfig, step: int, brake: BrakeState,
              gens: list[torch.Generator], t_total: int, n_probes: int) -> StepPlan:
    """Draw the step's plan in a fixed order from the per-sample generators."""
    dev = gens[0].device
    gh, gw, k = model_cfg.grid_h, model_cfg.grid_w, model_cfg.codebook_size
    ar = ar_length(step, brake, cfg)
    tf = t_total - ar
    tau = gumbel_tau(step, cfg)
    p_teacher, p_corrupt = teacher_prob(step, cfg), corruption_prob(step, cfg)
    u_ss = per_sample(gens, lambda g: torch.rand(t_total, generator=g, device=dev))
    u_cor = per_sample(gens, lambda g: torch.rand(t_total, gh, gw, generator=g, device=dev))
    codes = per_sample(gens, lambda g: torch.randint(0, k, (t_total, gh, gw), generator=g, device=dev))
    lp_order = per_sample(gens, lambda g: torch.randperm(t_total, generator=g, device=dev))
    u_rank = per_sample(gens, lambda g: torch.rand(2, generator=g, device=dev))
    u_idm = per_sample(gens, lambda g: torch.rand(t_total, generator=g, device=dev))
    lpips_mask = torch.zeros(len(gens), t_total, dtype=torch.bool, device=dev)
    lpips_mask.scatter_(1, lp_order[:, :cfg.lpips_per_sample], True)
    span_max = torch.arange(t_total, device=dev).clamp(max=model_cfg.idm_max_span)  # [T]
    return StepPlan(
        ar=ar, tf=tf, tau=tau, gens=gens,
        schedules={"ar_len": float(ar), "tf_len": float(tf), "gumbel_tau": tau, "teacher_prob": p_teacher,
                   "corrupt_prob": p_corrupt},
        feed_pred=u_ss >= p_teacher, corrupt=u_cor < p_corrupt, codes=codes,
        lpips=lpips_mask if cfg.w_lpips > 0 else torch.zeros_like(lpips_mask),
        rank_t=(u_rank[:, 0] * tf).long().clamp(max=tf - 1),
        rank_alt=(u_rank[:, 1] * n_probes).long().clamp(max=n_probes - 1),
        idm_k=1 + (u_idm * span_max).long().clamp(max=(span_max - 1).clamp(min=0)))


def gumbel_noise(gens: list[torch.Generator], grid: tuple[int, int], k: int) -> torch.Tensor:
    """Gumbel noise [B, K, h, w], each sample from its own generator, drawn codes-last like the logits (no
    layout copies downstream). U = 0 gives -inf: that code gets probability 0 for this draw, never a NaN."""
    out = torch.empty(len(gens), *grid, k, device=gens[0].device)  # [B, h, w, K]
    for row, g in zip(out, gens):  # in place: torch's exponential_ is several times slower on CPU
        row.uniform_(generator=g)
    return out.log_().neg_().log_().neg_().movedim(-1, 1)  # -log(-log U) is Gumbel


def select_state(state: State, idx: torch.Tensor) -> State:
    return {k: v[idx] for k, v in state.items()}


# ----------------------------------------------------------------------------- one window

@dataclass
class WindowResult:
    """What the trainer needs after a window's backward passes."""

    sums: dict[str, torch.Tensor]
    """Detached sums of this process's loss terms (all-reduced by the trainer, then `loss_metrics`)."""
    bad: bool
    """A loss was not finite: the optimizer step is skipped."""
    last_logits: dict[str, torch.Tensor] = field(default_factory=dict)
    """The last teacher-forced ("tf") and AR ("ar") logits, for prediction statistics."""
    pred_frames: list[torch.Tensor] = field(default_factory=list)
    """A few LPIPS-scored predicted frames [n, 3, H, W] and their targets, for the sharpness statistic."""
    target_frames: list[torch.Tensor] = field(default_factory=list)


LpipsItem = tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]
"""(step t, sample mask [B], soft embeddings z [B, D, h, w], target tokens [B, h, w])."""


class Objective:
    """The frozen pieces the losses need (VQ-VAE decoder, codebook, LPIPS, probe actions) and the loss
    weights. `autocast()` is asked for at every forward, so a caller may switch precision between steps."""

    def __init__(self, cfg: TrainConfig, vqvae: Any, lpips_net: Any, probes: torch.Tensor,
                 autocast: Callable[[], AbstractContextManager]) -> None:
        self.cfg, self.vqvae, self.lpips_net, self.autocast = cfg, vqvae, lpips_net, autocast
        self.probes = probes  # [P, 15] encoded PROBE_ACTIONS
        self.codebook = vqvae.codebook.detach()
        self.key_weights = torch.tensor(cfg.idm_key_weights, device=probes.device)

    def window_loss(self, model: WorldModel, tokens: torch.Tensor, actions: torch.Tensor, plan: StepPlan,
                    backward: Callable[[torch.Tensor], None], timer: PhaseTimer) -> WindowResult:
        """Teacher-forced part (one backward), then the AR part streamed in chunks (one backward each).
        tokens [B, L, h, w] int64, actions [B, L-1, 15]."""
        w = _Window(self, model, tokens, actions, plan, timer)
        loss_tf, state, prev_pred = self._teacher_forced(w)
        if torch.isfinite(loss_tf):
            backward(loss_tf)
        else:
            w.out.bad = True
        w.acc("loss", loss_tf)
        if plan.ar > 0 and not w.out.bad:
            self._autoregressive(w, state, prev_pred, backward)
        return w.out

    def _teacher_forced(self, w: "_Window") -> tuple[torch.Tensor, State, torch.Tensor | None]:
        """Frames 0..tf-1 in, frames 1..tf scored; full BPTT within the window. Returns (loss, final state,
        last greedy prediction)."""
        cfg, model, plan, tokens, b = self.cfg, w.model, w.plan, w.tokens, w.tokens.shape[0]
        state = model.init_state(b, tokens.device)
        loss = torch.zeros((), device=tokens.device)
        lp_items: list[LpipsItem] = []
        h_tops = []
        ce_true, ce_alt = torch.zeros(b, device=tokens.device), torch.zeros(b, device=tokens.device)
        prev_pred = None
        for t in range(plan.tf):
            inp = torch.where(plan.corrupt[:, t], plan.codes[:, t], tokens[:, t])
            if t > 0:
                inp = torch.where(plan.feed_pred[:, t, None, None], prev_pred, inp)
            logits, new_state, frame_loss, ce = w.predict(inp, t, state, "tf", lp_items)
            loss = loss + frame_loss
            if cfg.w_rank > 0:
                ce_true, ce_alt = self._rank_compare(w, inp, t, state, ce, ce_true, ce_alt)
            prev_pred = logits.detach().argmax(1)
            h_tops.append(model.top_hidden(new_state))
            state = new_state
            if t == plan.tf - 1:
                w.out.last_logits["tf"] = logits.detach()
        loss = loss + w.lpips_chunk(lp_items)
        if cfg.w_rank > 0:
            rank = action_rank_per_sample(ce_true, ce_alt, cfg.rank_margin).mean()
            loss = loss + cfg.w_rank * rank
            w.acc("action_rank", rank)
            w.acc("action_rank_gap", (ce_alt - ce_true).mean())
        if cfg.w_idm > 0 and plan.tf >= 2:
            loss = loss + cfg.w_idm * self._idm(w, h_tops)
        return loss, state, prev_pred

    def _rank_compare(self, w: "_Window", inp: torch.Tensor, t: int, state: State, ce: torch.Tensor,
                      ce_true: torch.Tensor, ce_alt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For the samples whose ranking step is t: the true action's CE [B] (from `ce`) and the target's CE
        under another probe action, written into copies of ce_true / ce_alt [B]."""
        sel = w.plan.rank_t == t
        if not sel.any():
            return ce_true, ce_alt
        alt = self._alt_actions(w.actions[sel, t], w.plan.rank_alt[sel])
        with self.autocast():
            alt_logits, _ = w.model.step(inp[sel], alt, select_state(state, sel))
        rows = (sel.nonzero()[:, 0],)
        return (ce_true.index_put(rows, ce[sel]),
                ce_alt.index_put(rows, self.token_ce(alt_logits, w.tokens[sel, t + 1], w.tokens[sel, t])))

    def _alt_actions(self, true: torch.Tensor, pick: torch.Tensor) -> torch.Tensor:
        """A probe action different from each row of `true` [N, 15], starting at probe index `pick`."""
        p = len(self.probes)
        out = torch.empty_like(true)
        for i in range(true.shape[0]):
            for j in range(p):
                cand = self.probes[(int(pick[i]) + j) % p]
                if not torch.allclose(cand, true[i]):
                    break
            out[i] = cand
        return out

    def _idm(self, w: "_Window", h_tops: list[torch.Tensor]) -> torch.Tensor:
        """Variable-span inverse dynamics on the teacher-forced top hidden states: from the features of
        frames t-k and t, predict the mean action between them."""
        model, b, tf, dev = w.model, w.tokens.shape[0], w.plan.tf, w.tokens.device
        hs = torch.stack(h_tops, 1)  # [B, tf, H, gh, gw]
        with self.autocast():
            feats = model.idm.features(hs.flatten(0, 1)).unflatten(0, (b, tf))  # [B, tf, F]
        t_end = torch.arange(1, tf, device=dev).expand(b, -1)  # [B, tf-1]
        span = w.plan.idm_k[:, 1:tf]  # [B, tf-1]
        f_prev = feats.gather(1, (t_end - span)[..., None].expand(-1, -1, feats.shape[-1]))
        f_cur = feats[:, 1:tf]
        with self.autocast():
            idm_logits = model.idm(f_prev.flatten(0, 1), f_cur.flatten(0, 1), span.flatten())
        idm_target = span_action_targets(w.actions, t_end, span).flatten(0, 1)  # [B*(tf-1), 15]
        parts = idm_per_item(idm_logits, idm_target, self.key_weights)
        idm = sum(v.mean() for v in parts.values())
        w.acc("idm", idm)
        for name, v in parts.items():
            w.acc(name, v.mean())
        return idm

    def _autoregressive(self, w: "_Window", state: State, inp: torch.Tensor,
                        backward: Callable[[torch.Tensor], None]) -> None:
        """Own greedy predictions fed back detached; streamed in chunks of ar_bptt steps, each chunk
        backpropagated before the next so memory does not grow with the AR length."""
        model, t_total, dev = w.model, w.actions.shape[1], w.tokens.device
        state = model.detach_state(state)
        for c0 in range(w.plan.tf, t_total, self.cfg.ar_bptt):
            chunk_loss = torch.zeros((), device=dev)
            lp_items: list[LpipsItem] = []
            for t in range(c0, min(c0 + self.cfg.ar_bptt, t_total)):
                logits, state, frame_loss, _ = w.predict(inp, t, state, "ar", lp_items)
                chunk_loss = chunk_loss + frame_loss
                inp = logits.detach().argmax(1)
                w.out.last_logits["ar"] = logits.detach()
            chunk_loss = chunk_loss + w.lpips_chunk(lp_items)
            w.acc("loss", chunk_loss)
            if not torch.isfinite(chunk_loss):
                w.out.bad = True
                return
            backward(chunk_loss)
            state = model.detach_state(state)
            del lp_items

    def token_ce(self, logits: torch.Tensor, target: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
        """The token CE [B] of logits [B, K, h, w] against target [B, h, w], weighted by change from
        `previous` [B, h, w] (the true frame before the target). The ranking hinge compares two of these,
        so both sides must be weighted alike."""
        weight = change_weight(target, previous, self.cfg.w_changed) if self.cfg.w_changed > 0 else None
        return token_ce_per_sample(logits, target, weight)

    def frame_losses(self, logits: torch.Tensor, target: torch.Tensor, previous: torch.Tensor,
                     noise: torch.Tensor, tau: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(CE [B], semantic [B], soft embeddings [B, D, h, w]) of one predicted frame; `previous` is the
        true frame before the target (for the change weighting)."""
        ce = self.token_ce(logits, target, previous)
        z = soft_embeddings(gumbel_softmax_probs(logits, tau, noise, self.cfg.gumbel_hard), self.codebook)
        sem = semantic_per_sample(z, self.codebook, target) if self.cfg.w_semantic > 0 else torch.zeros_like(ce)
        return ce, sem, z

    def lpips_distances(self, z: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """LPIPS of soft embeddings z [N, D, h, w] vs the decoded target tokens [N, h, w] ->
        (distances [N], predicted frames, target frames)."""
        with torch.no_grad():
            target_rgb = self.vqvae.decode_code(target)
        with self.autocast():
            d, pred = lpips_per_sample(z, target_rgb, self.vqvae.decode_embeddings, self.lpips_net)
        return d, pred, target_rgb


class _Window:
    """One window's inputs and running sums; `predict` and `lpips_chunk` are the per-frame pieces."""

    def __init__(self, obj: Objective, model: WorldModel, tokens: torch.Tensor, actions: torch.Tensor,
                 plan: StepPlan, timer: PhaseTimer) -> None:
        self.obj, self.model, self.tokens, self.actions, self.plan, self.timer = obj, model, tokens, actions, plan, timer
        t_total = actions.shape[1]
        self.frame_w = torch.ones(t_total, device=tokens.device)
        self.frame_w[plan.tf:] = obj.cfg.ar_loss_weight
        self.norm = 1.0 / t_total
        self.out = WindowResult(sums={}, bad=False)

    def acc(self, name: str, value: torch.Tensor) -> None:
        sums = self.out.sums
        sums[name] = sums.get(name, torch.zeros((), device=self.tokens.device)) + value.detach().float()

    def predict(self, inp: torch.Tensor, t: int, state: State, kind: str, lp_items: list[LpipsItem]
                ) -> tuple[torch.Tensor, State, torch.Tensor, torch.Tensor]:
        """model.step on frame t's tokens and action t, scored against frame t+1: (logits, new state,
        weighted CE + semantic loss, per-sample CE [B]); queues the frame for LPIPS when planned."""
        obj, cfg = self.obj, self.obj.cfg
        target = self.tokens[:, t + 1]
        scored = target
        if cfg.denoise_targets > 0 and self.model.motion:
            with torch.no_grad():
                warped, inside, _ = self.model.warp(inp, self.actions[:, t], state)
            scored = near_duplicate_targets(target, warped, inside, obj.codebook, cfg.denoise_targets)
        with obj.autocast():
            logits, new_state = self.model.step(inp, self.actions[:, t], state)
        noise = gumbel_noise(self.plan.gens, tuple(target.shape[1:]), logits.shape[1])
        ce, sem, z = obj.frame_losses(logits, scored, self.tokens[:, t], noise, self.plan.tau)
        self.acc(f"ce_{kind}", ce.mean())
        self.acc("semantic", sem.mean())
        lp_mask = self.plan.lpips[:, t]
        if lp_mask.any():
            lp_items.append((t, lp_mask, z, target))
        return logits, new_state, self.norm * self.frame_w[t] * (cfg.w_ce * ce + cfg.w_semantic * sem).mean(), ce

    def lpips_chunk(self, items: list[LpipsItem]) -> torch.Tensor:
        """LPIPS of the queued frames in one batched call -> their weighted loss."""
        dev = self.tokens.device
        if not items:
            return torch.zeros((), device=dev)
        sel_z = torch.cat([z[mask] for _, mask, z, _ in items])
        sel_t = torch.cat([tgt[mask] for _, mask, _, tgt in items])
        w = torch.cat([self.frame_w[t].expand(int(mask.sum())) for t, mask, _, _ in items])
        is_ar = torch.cat([torch.full((int(mask.sum()),), t >= self.plan.tf, device=dev) for t, mask, _, _ in items])
        self.timer.start("lpips")
        d, pred, target_rgb = self.obj.lpips_distances(sel_z, sel_t)
        self.timer.start("forward")
        self.acc("lpips_tf_sum", d[~is_ar].sum())
        self.acc("lpips_tf_n", (~is_ar).sum())
        self.acc("lpips_ar_sum", d[is_ar].sum())
        self.acc("lpips_ar_n", is_ar.sum())
        self.out.pred_frames.append(pred[:2].detach())
        self.out.target_frames.append(target_rgb[:2])
        cfg = self.obj.cfg
        return cfg.w_lpips * (w * d).sum() / (self.tokens.shape[0] * cfg.lpips_per_sample)


# ----------------------------------------------------------------------------- metrics of the sums

def lpips_means(sums: dict[str, float]) -> tuple[float | None, float | None]:
    """Mean LPIPS of the step's teacher-forced and AR frames (None where none was scored): the brake's input."""
    lp_tf = sums["lpips_tf_sum"] / sums["lpips_tf_n"] if sums.get("lpips_tf_n", 0) > 0 else None
    lp_ar = sums["lpips_ar_sum"] / sums["lpips_ar_n"] if sums.get("lpips_ar_n", 0) > 0 else None
    return lp_tf, lp_ar


def loss_metrics(sums: dict[str, float], ar: int, tf: int) -> dict[str, float]:
    """The logged loss values from the (all-reduced) window sums."""
    out: dict[str, float] = {}
    out["loss"] = sums.get("loss", float("nan"))
    out["loss_teacher"] = sums.get("ce_tf", 0.0) / max(tf, 1)
    if ar > 0:
        out["loss_ar"] = sums.get("ce_ar", 0.0) / ar
        out["ar_loss_gap"] = out["loss_ar"] - out["loss_teacher"]
    out["ce"] = (sums.get("ce_tf", 0.0) + sums.get("ce_ar", 0.0)) / (tf + ar)
    out["semantic"] = sums.get("semantic", 0.0) / (tf + ar)
    for name in ("idm", "idm_yaw", "idm_pitch", "idm_keys", "action_rank", "action_rank_gap"):
        if name in sums:
            out[name] = sums[name]
    lp_tf, lp_ar = lpips_means(sums)
    if lp_tf is not None:
        out["lpips_tf"] = lp_tf
    if lp_ar is not None:
        out["lpips_ar"] = lp_ar
    if lp_tf is not None or lp_ar is not None:
        n = sums["lpips_tf_n"] + sums["lpips_ar_n"]
        out["lpips"] = (sums["lpips_tf_sum"] + sums["lpips_ar_sum"]) / n
    if lp_tf and lp_ar is not None:
        out["lpips_ratio"] = lp_ar / lp_tf
    return out
