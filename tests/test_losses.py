"""losses.py and curriculum.py: gradient flow of LPIPS/semantic into the model, finiteness, IDM targets,
ranking hinge, schedules, the fixed window and the AR brake."""
import math

import pytest
import torch

from actions import ENC_DIM
from curriculum import (BrakeState, CurriculumConfig, ar_length, ar_schedule, brake_update, check_window,
                        corruption_prob, gumbel_tau, initial_brake, lr_factor, teacher_prob)
from losses import (action_rank_per_sample, change_weight, gumbel_softmax_probs, idm_per_item, lpips_per_sample,
                    near_duplicate_targets, prediction_stats, semantic_per_sample, soft_embeddings,
                    span_action_targets, spatial_gradient, token_ce_per_sample)
from model_convGru import WorldModel, WorldModelConfig
from objective import gumbel_noise


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def tiny_vqvae(codebook_size: int = 32, code_dim: int = 8):
    from vq_vae.model import VQVAE, VQVAEConfig

    cfg = VQVAEConfig(frame_width=64, frame_height=48, codebook_size=codebook_size, code_dim=code_dim,
                      enc_channels=(8, 8, 8), enc_res_blocks=(0, 0, 0), dec_channels=(8, 8, 8),
                      dec_res_blocks=(0, 0, 0), kmeans_iters=0)
    vq = VQVAE(cfg).eval()
    vq.quantizer.initted.fill_(True)
    for p in vq.parameters():
        p.requires_grad_(False)
    return vq


def model_for(vq) -> WorldModel:
    gh, gw = vq.grid
    cfg = WorldModelConfig(embed_dim=8, hidden_dim=8, num_layers=2, kernel_size=3, film_hidden=8,
                           head_dim=8, attn_ctx=2, attn_dim=8, attn_pool=(2, 2), idm_hidden=16,
                           codebook_size=vq.codebook_size, code_dim=vq.code_dim, grid_h=gh, grid_w=gw)
    return WorldModel(cfg, codebook=vq.codebook)


def _one_step(model, vq, gen):
    gh, gw = vq.grid
    tokens = torch.randint(0, vq.codebook_size, (2, gh, gw), generator=gen)
    action = torch.zeros(2, ENC_DIM)
    action[:, 2] = 1
    action[:, 6] = 1
    # Two steps, so the hidden-state convolutions act on a non-zero state and get gradients too.
    _, state = model.step(tokens, action, model.init_state(2))
    logits, _ = model.step(tokens, action, state)
    target = torch.randint(0, vq.codebook_size, (2, gh, gw), generator=gen)
    return logits, target


def _noise(logits: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Gumbel noise shaped like logits [B, K, h, w], as the training step draws it."""
    return gumbel_noise([gen] * logits.shape[0], tuple(logits.shape[2:]), logits.shape[1])


def _semantic(logits: torch.Tensor, target: torch.Tensor, codebook: torch.Tensor, tau: float,
              noise: torch.Tensor | None, hard: bool = False) -> torch.Tensor:
    """The semantic loss per sample [B] as the training step composes it: Gumbel-softmax, soft embeddings."""
    return semantic_per_sample(soft_embeddings(gumbel_softmax_probs(logits, tau, noise, hard), codebook), codebook,
                               target)


def _grad_norms(model) -> dict[str, float]:
    return {n: (0.0 if p.grad is None else float(p.grad.norm())) for n, p in model.named_parameters()}


def test_lpips_gradients_reach_the_model():
    from lpips_loader import load_lpips

    vq = tiny_vqvae()
    model = model_for(vq)
    gen = torch.Generator().manual_seed(0)
    logits, target = _one_step(model, vq, gen)
    lpips_net = load_lpips("alex", allow_random=True)  # gradient flow only: the scores are not used
    with torch.no_grad():
        target_rgb = vq.decode_code(target)
    probs = gumbel_softmax_probs(logits, 0.7, _noise(logits, gen))
    d, pred = lpips_per_sample(soft_embeddings(probs, vq.codebook), target_rgb, vq.decode_embeddings, lpips_net)
    assert d.shape == (2,) and torch.isfinite(d).all() and pred.shape == target_rgb.shape
    d.mean().backward()
    g = _grad_norms(model)
    for name in ("head_proj.weight", "out_embed", "cells.0.x_proj.1.weight", "cells.1.h_cand.1.weight",
                 "embed.weight", "film.camera.2.weight", "film.movement.2.weight"):
        assert g[name] > 0, f"LPIPS gradient does not reach {name}"
    # The frozen decoder and LPIPS trunk receive none.
    assert all(p.grad is None for p in vq.parameters())


@pytest.mark.parametrize("hard", [False, True])
def test_semantic_gradients_reach_the_model(hard):
    vq = tiny_vqvae()
    model = model_for(vq)
    gen = torch.Generator().manual_seed(1)
    logits, target = _one_step(model, vq, gen)
    per = _semantic(logits, target, vq.codebook, 0.5, _noise(logits, gen), hard=hard)
    assert per.shape == (2,) and torch.isfinite(per).all()
    per.mean().backward()
    g = _grad_norms(model)
    assert g["head_proj.weight"] > 0 and g["cells.0.x_proj.1.weight"] > 0 and g["film.camera.2.weight"] > 0


def test_argmax_path_would_carry_no_gradient():
    """Negative control: decoding the argmax tokens (LESSONS.md L6) cannot train the model,
    which is why the soft path above exists."""
    vq = tiny_vqvae()
    model = model_for(vq)
    logits, target = _one_step(model, vq, torch.Generator().manual_seed(2))
    pred_rgb = vq.decode_code(logits.argmax(1))
    assert not pred_rgb.requires_grad


def test_semantic_loss_is_zero_for_a_confident_correct_prediction():
    vq = tiny_vqvae()
    target = torch.randint(0, vq.codebook_size, (2, 3, 4))
    logits = torch.nn.functional.one_hot(target, vq.codebook_size).movedim(-1, 1).float() * 50
    assert _semantic(logits, target, vq.codebook, 1.0, None).max() < 1e-6
    assert _semantic(logits.roll(1, dims=1), target, vq.codebook, 1.0, None).min() > 0.1


def test_gumbel_softmax_properties():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 3, 4, generator=gen, requires_grad=True)
    p = gumbel_softmax_probs(logits, 0.5, _noise(logits, gen))
    torch.testing.assert_close(p.sum(1), torch.ones(2, 3, 4))
    torch.testing.assert_close(gumbel_softmax_probs(logits, 1.0, None), logits.softmax(1))
    hard = gumbel_softmax_probs(logits, 0.5, None, hard=True)
    assert set(hard.detach().unique().tolist()) <= {0.0, 1.0}
    (hard * torch.arange(5.0).view(1, 5, 1, 1)).sum().backward()
    assert logits.grad.abs().sum() > 0
    with pytest.raises(ValueError):
        gumbel_softmax_probs(logits, 0.0, None)


def test_token_ce_per_sample():
    target = torch.randint(0, 7, (3, 2, 2))
    good = torch.nn.functional.one_hot(target, 7).movedim(-1, 1).float() * 20
    assert token_ce_per_sample(good, target).max() < 1e-4
    uniform = token_ce_per_sample(torch.zeros(3, 7, 2, 2), target)
    torch.testing.assert_close(uniform, torch.full((3,), math.log(7)))
    # Each sample's CE is its own: a wrong second sample leaves the first one's at zero.
    mixed = good.clone()
    mixed[1] = mixed[1].roll(1, dims=0)
    per = token_ce_per_sample(mixed, target)
    assert per[0] < 1e-4 and per[2] < 1e-4 and per[1] > 1.0


def test_near_duplicate_targets_keep_the_warped_code_only_where_it_is_near_and_inside():
    codebook = torch.tensor([[0.0, 0.0], [0.1, 0.0], [3.0, 0.0], [3.0, 0.2]])  # 0~1 and 2~3 near duplicates
    target = torch.tensor([[[1, 2, 3, 0]]])
    warped = torch.tensor([[[0, 0, 2, 0]]])
    inside = torch.tensor([[[True, True, False, True]]])
    out = near_duplicate_targets(target, warped, inside, codebook, radius=0.5)
    # near and inside -> warped; far (1 vs 2) -> truth; near but entering -> truth; equal -> either
    assert out.tolist() == [[[0, 2, 3, 0]]]
    assert torch.equal(near_duplicate_targets(target, warped, None, codebook, 0.5), target)  # no motion path
    assert torch.equal(near_duplicate_targets(target, warped, inside, codebook, 0.01), target)


def test_span_action_targets_are_means_of_the_actions_between():
    gen = torch.Generator().manual_seed(0)
    actions = torch.rand(2, 8, ENC_DIM, generator=gen)
    t = torch.tensor([[5, 7], [1, 6]])
    k = torch.tensor([[3, 1], [1, 5]])
    got = span_action_targets(actions, t, k)
    for b in range(2):
        for m in range(2):
            want = actions[b, t[b, m] - k[b, m]:t[b, m]].mean(0)
            torch.testing.assert_close(got[b, m], want)


def test_idm_loss_prefers_the_true_action():
    target = torch.zeros(4, ENC_DIM)
    target[:, 3] = 1  # yaw right
    target[:, 6] = 1  # pitch none
    target[:, 8] = 1  # W
    good = (target * 2 - 1) * 10
    bad = -good
    per_good, per_bad = idm_per_item(good, target), idm_per_item(bad, target)
    assert set(per_good) == {"idm_yaw", "idm_pitch", "idm_keys"}
    assert all(v.shape == (4,) for v in per_good.values())
    assert sum(v.mean() for v in per_good.values()) < 0.01 < sum(v.mean() for v in per_bad.values())
    w = torch.ones(7)
    w[:4] = 10.0
    per = idm_per_item(bad, target, key_weights=w)
    assert per["idm_keys"].shape == (4,) and torch.isfinite(per["idm_keys"]).all()


def test_action_rank_hinge():
    ce_true = torch.tensor([1.0, 1.0, 1.0])
    ce_other = torch.tensor([2.0, 1.02, 0.5])
    per = action_rank_per_sample(ce_true, ce_other, margin=0.05)
    torch.testing.assert_close(per, torch.tensor([0.0, 0.03, 0.55]))


def test_prediction_stats_and_spatial_gradient():
    k = 16
    uniform = torch.zeros(2, k, 4, 4)
    s = prediction_stats(uniform)
    assert math.isclose(s["entropy"], math.log(k), rel_tol=1e-5) and math.isclose(s["confidence"], 1 / k)
    codes = torch.arange(16).view(1, 4, 4).repeat(2, 1, 1)
    peaked = torch.nn.functional.one_hot(codes, k).movedim(-1, 1).float() * 30
    s2 = prediction_stats(peaked)
    assert s2["unique_codes"] == 16 and s2["confidence"] > 0.99 and s2["entropy"] < 1e-3
    assert spatial_gradient(torch.full((1, 3, 8, 8), 0.5)) == 0.0
    checker = (torch.arange(8).view(1, 8) + torch.arange(8).view(8, 1)) % 2
    assert spatial_gradient(checker.float().expand(1, 3, 8, 8)) == pytest.approx(2.0)


# ----------------------------------------------------------------------------- curriculum

def test_lr_warmup_and_cosine():
    cfg = CurriculumConfig(total_steps=1000, warmup_steps=100, min_lr_ratio=0.1)
    assert lr_factor(0, cfg) == pytest.approx(0.01)
    assert lr_factor(99, cfg) == pytest.approx(1.0)
    assert lr_factor(100, cfg) == pytest.approx(1.0)
    assert lr_factor(550, cfg) == pytest.approx(0.55)
    assert lr_factor(1000, cfg) == pytest.approx(0.1) and lr_factor(5000, cfg) == pytest.approx(0.1)
    vals = [lr_factor(s, cfg) for s in range(100, 1001, 50)]
    assert all(a >= b for a, b in zip(vals, vals[1:]))


def test_window_never_grows_with_the_ar_curriculum():
    """LESSONS.md L5: seq_len = max(BASE, ar_len + 1) grew the window into an OOM. Here the AR length is carved
    out of the fixed window, for every step and every brake state."""
    seq_len = 10
    cfg = CurriculumConfig(ar_start_step=10, ar_ramp_steps=50, ar_min_len=2, ar_max_len=7, min_tf_steps=2,
                           brake_interval=1)
    check_window(seq_len, cfg)
    states = [initial_brake(cfg), BrakeState(cap=0), BrakeState(cap=100), BrakeState(cap=3)]
    for step in range(0, 500, 3):
        for st in states:
            n = ar_length(step, st, cfg)
            assert 0 <= n <= cfg.ar_max_len <= seq_len - 1 - cfg.min_tf_steps
            if step >= cfg.ar_start_step:
                assert n >= cfg.ar_min_len
    assert ar_schedule(9, cfg) == 0 and ar_schedule(10, cfg) == 2 and ar_schedule(60, cfg) == 7
    with pytest.raises(ValueError, match="never grows"):
        check_window(seq_len, CurriculumConfig(ar_max_len=8, min_tf_steps=2))


def test_brake_reacts_with_hysteresis_and_keeps_minimum():
    cfg = CurriculumConfig(ar_start_step=0, ar_min_len=2, ar_max_len=6, brake_lower=1.3, brake_upper=1.8,
                           brake_ema=0.0, brake_interval=10)
    st = initial_brake(cfg)
    assert st.cap == 6
    st = brake_update(st, 100, 0.1, 0.3, cfg)  # ratio 3: too much AR damage -> shorter
    assert st.cap == 5 and st.n_down == 1
    st2 = brake_update(st, 105, 0.1, 0.3, cfg)  # within the interval: no change
    assert st2.cap == 5
    st3 = brake_update(st2, 111, 0.1, 0.15, cfg)  # ratio 1.5: between thresholds, hold
    assert st3.cap == 5 and st3.n_hold == 1
    st4 = brake_update(st3, 122, 0.1, 0.11, cfg)  # ratio 1.1: grow
    assert st4.cap == 6 and st4.n_up == 1
    assert brake_update(st4, 200, None, 0.5, cfg) == st4
    assert brake_update(st4, 200, 0.1, float("nan"), cfg) == st4
    low = st4
    for i in range(20):
        low = brake_update(low, 300 + 10 * i, 0.1, 1.0, cfg)
    assert low.cap == cfg.ar_min_len
    assert BrakeState.from_dict(low.to_dict()) == low
    assert ar_length(10_000, low, cfg) == cfg.ar_min_len


def test_brake_ema_smooths_single_spikes():
    cfg = CurriculumConfig(ar_start_step=0, brake_ema=0.9, brake_interval=0, brake_upper=1.8)
    st = brake_update(initial_brake(cfg), 1, 0.1, 0.12, cfg)
    st = brake_update(st, 2, 0.1, 0.5, cfg)  # one bad measurement: EMA 1.2*0.9 + 5*0.1 = 1.58
    assert st.ratio_ema == pytest.approx(1.58) and st.cap == cfg.ar_max_len


def test_scheduled_sampling_tau_and_corruption_schedules():
    cfg = CurriculumConfig(ss_start_prob=1.0, ss_min_prob=0.6, ss_midpoint=1000, ss_steepness=100,
                           tau_start=1.0, tau_end=0.25, tau_steps=1000, corrupt_max=0.1,
                           corrupt_ramp_steps=100)
    assert teacher_prob(0, cfg) == pytest.approx(1.0, abs=1e-3)
    assert teacher_prob(1000, cfg) == pytest.approx(0.8)
    assert teacher_prob(10 ** 7, cfg) == pytest.approx(0.6)
    probs = [teacher_prob(s, cfg) for s in range(0, 3000, 100)]
    assert all(a >= b for a, b in zip(probs, probs[1:]))
    assert gumbel_tau(0, cfg) == 1.0 and gumbel_tau(500, cfg) == pytest.approx(0.5)
    assert gumbel_tau(10 ** 6, cfg) == pytest.approx(0.25)
    assert corruption_prob(0, cfg) == 0.0 and corruption_prob(50, cfg) == pytest.approx(0.05)
    assert corruption_prob(10 ** 6, cfg) == pytest.approx(0.1)


def test_change_weight_counts_changed_positions_more():
    prev = torch.zeros(2, 3, 4, dtype=torch.long)
    target = prev.clone()
    target[0, 0, 0] = 5  # one changed position in sample 0, none in sample 1
    w = change_weight(target, prev, 3.0)
    assert w[0, 0, 0] == 4.0 and w.sum() == 2 * 12 + 3.0
    logits = torch.zeros(2, 8, 3, 4)
    logits[:, 0] = 5.0  # confident "code 0" everywhere: right except at the changed position
    plain = token_ce_per_sample(logits, target)
    weighted = token_ce_per_sample(logits, target, w)
    assert weighted[0] > plain[0] * 2  # the one wrong position now weighs 4 of 15 instead of 1 of 12
    torch.testing.assert_close(weighted[1], plain[1])
    torch.testing.assert_close(token_ce_per_sample(logits, target, torch.ones(2, 3, 4)), plain)
