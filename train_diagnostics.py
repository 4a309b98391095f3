"""train.py's no-gradient looks at the model during a run: prediction statistics of the last step, the
response to probe actions, the GT / teacher-forced / AR image grid and validation on held-out windows."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from actions import CAMERA_SLICE, KEYS_SLICE
from losses import prediction_stats, spatial_gradient
from model_convGru import WorldModel
from objective import PROBE_ACTIONS, WindowResult


@torch.no_grad()
def step_statistics(model: WorldModel, last: WindowResult, actions: torch.Tensor) -> dict[str, float]:
    """Prediction statistics of the last step's logits and frames, and FiLM magnitudes on its actions
    [B, T, 15]."""
    out: dict[str, float] = {}
    for phase, logits in last.last_logits.items():
        prefix = "" if phase == "tf" else "ar/"
        out.update({prefix + k: v for k, v in prediction_stats(logits).items()})
    if last.pred_frames:
        out["spatial_gradient"] = spatial_gradient(torch.cat(last.pred_frames))
        out["spatial_gradient_gt"] = spatial_gradient(torch.cat(last.target_frames))
    acts = actions.flatten(0, 1)  # [B*T, 15]
    cam = model.film.camera(acts[:, CAMERA_SLICE])
    mov = model.film.movement(acts[:, KEYS_SLICE])
    film = model.film_params(acts)
    out["film/gamma_abs"] = float(torch.stack([g.abs().mean() for g, _ in film]).mean())
    out["film/beta_abs"] = float(torch.stack([b.abs().mean() for _, b in film]).mean())
    out["film/gamma_max"] = float(torch.stack([g.abs().max() for g, _ in film]).max())
    out["film/camera_abs"] = float(cam.abs().mean())
    out["film/movement_abs"] = float(mov.abs().mean())
    return out


@torch.no_grad()
def action_response(model: WorldModel, vqvae: Any, probes: torch.Tensor, tokens: torch.Tensor,
                    actions: torch.Tensor, ctx: int, horizon: int = 5) -> dict[str, float]:
    """Change of the predicted frame when the true action is swapped for each probe [P, 15] (1 step, mean
    absolute pixel difference of greedy decoded frames) after `ctx` context frames, and after `horizon` AR
    steps holding each probe vs holding noop (L12: 1-step responses hide multi-step failures)."""
    n = tokens.shape[0]
    state = model.init_state(n, tokens.device)
    for t in range(ctx - 1):
        _, state = model.step(tokens[:, t], actions[:, t], state)
    base_logits, _ = model.step(tokens[:, ctx - 1], actions[:, ctx - 1], state)
    base = vqvae.decode_code(base_logits.argmax(1))
    out = {}
    finals = {}
    for i, name in enumerate(PROBE_ACTIONS):
        a = probes[i].expand(n, -1)
        logits, st = model.step(tokens[:, ctx - 1], a, state)
        out[f"action_response/{name}"] = float((vqvae.decode_code(logits.argmax(1)) - base).abs().mean())
        tok = logits.argmax(1)
        for _ in range(horizon - 1):
            logits, st = model.step(tok, a, st)
            tok = logits.argmax(1)
        finals[name] = vqvae.decode_code(tok)
    out["action_response/average"] = float(np.mean([out[f"action_response/{k}"] for k in PROBE_ACTIONS]))
    out[f"action_response/average_{horizon}step"] = float(np.mean(
        [float((finals[k] - finals["noop"]).abs().mean()) for k in PROBE_ACTIONS if k != "noop"]))
    return out


@torch.no_grad()
def image_grid(model: WorldModel, vqvae: Any, tokens: torch.Tensor, actions: torch.Tensor, ctx: int
               ) -> np.ndarray:
    """tokens [1, L, h, w] -> uint8 [3*H, T*W, 3]: rows ground truth (decoded tokens), teacher-forced
    predictions, AR rollout from the first `ctx` frames; columns frames 1..T."""
    t_total = tokens.shape[1] - 1
    tf_logits, _ = model.forward_sequence(tokens[:, :t_total], actions)
    tf_tok = tf_logits[0].argmax(1)  # [T, h, w]
    state = model.init_state(1, tokens.device)
    ar_tok = []
    for t in range(t_total):
        inp = tokens[:, t] if t < ctx else ar_tok[-1][None]
        logits, state = model.step(inp, actions[:, t], state)
        ar_tok.append(logits[0].argmax(0))
    rows = [tokens[0, 1:], tf_tok, torch.stack(ar_tok)]
    imgs = [vqvae.to_uint8(vqvae.decode_code(r)) for r in rows]  # each [T, H, W, 3]
    return np.concatenate([np.concatenate(list(r), axis=1) for r in imgs], axis=0)


@torch.no_grad()
def validate(model: WorldModel, batches: list[dict[str, Any]], ctx: int, device: torch.device
             ) -> dict[str, float]:
    """Teacher-forced CE over all frames, and CE / token accuracy of a greedy AR rollout from `ctx`
    context frames, on fixed held-out windows."""
    ce_tf, ce_ar, acc_ar, n = 0.0, 0.0, 0.0, 0
    for batch in batches:
        tokens = batch["tokens"].to(device).long()
        actions = batch["actions"].to(device).float()
        t_total = tokens.shape[1] - 1
        logits, _ = model.forward_sequence(tokens[:, :t_total], actions)
        ce_tf += float(F.cross_entropy(logits.flatten(0, 1).float(), tokens[:, 1:].flatten(0, 1)))
        state = model.init_state(tokens.shape[0], device)
        inp = tokens[:, 0]
        ces, accs = [], []
        for t in range(t_total):
            lg, state = model.step(inp, actions[:, t], state)
            if t >= ctx:
                ces.append(float(F.cross_entropy(lg.float(), tokens[:, t + 1])))
                accs.append(float((lg.argmax(1) == tokens[:, t + 1]).float().mean()))
            inp = tokens[:, t + 1] if t + 1 < ctx else lg.argmax(1)
        ce_ar += float(np.mean(ces)) if ces else 0.0
        acc_ar += float(np.mean(accs)) if accs else 0.0
        n += 1
    return {"val/loss_teacher": ce_tf / n, "val/loss_ar": ce_ar / n, "val/token_acc_ar": acc_ar / n}
