"""model_convGru.py: step vs sequence, bounded FiLM over long unrolls, pathways, heads, VQ-VAE checks."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from actions import ENC_DIM, KEYS_SLICE, YAW_SLICE
from compat import IncompatibleError, check_compatible, model_side, vqvae_side
from model_convGru import WorldModel, WorldModelConfig, analytic_step_flops, count_step_flops, param_groups


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny tensors: one thread avoids OpenMP hand-off costs on the shared 2-core machine.
    torch.set_num_threads(1)


def tiny_cfg(**kw) -> WorldModelConfig:
    base = dict(embed_dim=8, hidden_dim=12, num_layers=3, kernel_size=3, separable=True, film_hidden=8,
                film_clamp=2.0, head_dim=8, attn_ctx=3, attn_dim=8, attn_heads=2, attn_pool=(2, 2),
                idm_max_span=5, idm_hidden=16, codebook_size=32, code_dim=6, grid_h=6, grid_w=8)
    base.update(kw)
    return WorldModelConfig(**base)


def random_actions(b: int, t: int, gen: torch.Generator) -> torch.Tensor:
    a = torch.zeros(b, t, ENC_DIM)
    a[..., 0:5] = torch.nn.functional.one_hot(torch.randint(0, 5, (b, t), generator=gen), 5).float()
    a[..., 5:8] = torch.nn.functional.one_hot(torch.randint(0, 3, (b, t), generator=gen), 3).float()
    a[..., 8:] = (torch.rand(b, t, 7, generator=gen) > 0.5).float()
    return a


@pytest.mark.parametrize("kw", [{}, {"separable": False, "head_dim": 0, "attn_ctx": 0, "num_layers": 2},
                                {"embed_dim": 12, "num_layers": 1}])
def test_forward_sequence_equals_unrolled_step(kw):
    cfg = tiny_cfg(**kw)
    model = WorldModel(cfg, codebook=torch.randn(cfg.codebook_size, cfg.code_dim)).eval()
    gen = torch.Generator().manual_seed(1)
    b, t = 2, 7
    tokens = torch.randint(0, cfg.codebook_size, (b, t, cfg.grid_h, cfg.grid_w), generator=gen)
    actions = random_actions(b, t, gen)
    with torch.no_grad():
        seq_logits, seq_state = model.forward_sequence(tokens, actions)
        state = model.init_state(b)
        step_logits = []
        for i in range(t):
            lg, state = model.step(tokens[:, i], actions[:, i], state)
            step_logits.append(lg)
    step_logits = torch.stack(step_logits, 1)
    assert seq_logits.shape == (b, t, cfg.codebook_size, cfg.grid_h, cfg.grid_w)
    torch.testing.assert_close(seq_logits, step_logits, rtol=1e-5, atol=1e-5)
    assert seq_state.keys() == state.keys()
    for k in state:
        torch.testing.assert_close(seq_state[k], state[k], rtol=1e-5, atol=1e-5)
    # The step really depends on the past (state carries information): a different first frame changes
    # the last prediction.
    tokens2 = tokens.clone()
    tokens2[:, 0] = (tokens2[:, 0] + 1) % cfg.codebook_size
    with torch.no_grad():
        other, _ = model.forward_sequence(tokens2, actions)
    assert not torch.allclose(other[:, -1], seq_logits[:, -1])


def test_film_bounded_over_long_unroll_with_extreme_actions():
    cfg = tiny_cfg()
    model = WorldModel(cfg)
    # Make the action pathway as strong as training could: large weights everywhere in FiLM.
    with torch.no_grad():
        for p in model.film.parameters():
            p.mul_(0).add_(torch.randn_like(p) * 50)
    gen = torch.Generator().manual_seed(3)
    b = 2
    state = model.init_state(b)
    tokens = torch.randint(0, cfg.codebook_size, (b, cfg.grid_h, cfg.grid_w), generator=gen)
    max_logit = 0.0
    with torch.no_grad():
        for i in range(200):
            action = (torch.rand(b, ENC_DIM, generator=gen) * 2 - 1) * 1e4  # far outside the encoding
            gammas_betas = model.film_params(action)
            for g, be in gammas_betas:
                assert g.abs().max() <= cfg.film_clamp and be.abs().max() <= cfg.film_clamp
            logits, state = model.step(tokens, action, state)
            tokens = logits.argmax(1)  # feed back like an AR rollout
            for k, v in state.items():
                assert torch.isfinite(v).all(), f"{k} not finite at step {i}"
                if k.startswith("h"):
                    assert v.abs().max() <= 1.0 + 1e-6, f"{k} left [-1, 1] at step {i}"
            assert torch.isfinite(logits).all()
            max_logit = max(max_logit, logits.abs().max().item())
    assert max_logit < 1e4


def test_camera_and_movement_pathways_are_separate():
    cfg = tiny_cfg()
    model = WorldModel(cfg)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.film.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    base = random_actions(3, 1, gen)[:, 0]
    keys_changed = base.clone()
    keys_changed[:, KEYS_SLICE] = 1 - keys_changed[:, KEYS_SLICE]
    yaw_changed = base.clone()
    yaw_changed[:, YAW_SLICE] = yaw_changed[:, YAW_SLICE].roll(1, dims=1)
    # Changing only keys changes only the movement MLP's output; only yaw, only the camera MLP's.
    with torch.no_grad():
        assert torch.equal(model.film.camera(base[:, :8]), model.film.camera(keys_changed[:, :8]))
        assert not torch.allclose(model.film.movement(base[:, 8:]), model.film.movement(keys_changed[:, 8:]))
        assert not torch.allclose(model.film.camera(base[:, :8]), model.film.camera(yaw_changed[:, :8]))
        assert model.film.camera[0].in_features == 8 and model.film.movement[0].in_features == 7
        # And both reach the prediction.
        tokens = torch.randint(0, cfg.codebook_size, (3, cfg.grid_h, cfg.grid_w), generator=gen)
        outs = [model.step(tokens, a, model.init_state(3))[0] for a in (base, keys_changed, yaw_changed)]
    assert not torch.allclose(outs[0], outs[1]) and not torch.allclose(outs[0], outs[2])


def test_gradients_reach_every_prediction_parameter():
    coef = np.zeros((3, ENC_DIM))
    coef[0, 0:5] = [-2.0, -1.0, 0.0, 1.0, 2.0]  # the yaw bins move the view, so content enters it
    cfg = tiny_cfg(motion_coef=tuple(coef.reshape(-1)))  # [3 * 15] flat, as saved
    model = WorldModel(cfg)
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, cfg.codebook_size, (2, 4, cfg.grid_h, cfg.grid_w), generator=gen)
    actions = random_actions(2, 4, gen)
    logits, state = model.forward_sequence(tokens, actions)
    target = torch.randint(0, cfg.codebook_size, (2, 4, cfg.grid_h, cfg.grid_w), generator=gen)
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), target.flatten(0, 1))
    loss.backward()
    # The IDM head has its own loss; the texture prior is fitted before step 0 and frozen (texture.fit).
    missing = [n for n, p in model.named_parameters()
               if not n.startswith(("idm.", "texture.")) and (p.grad is None or p.grad.abs().sum() == 0)]
    assert not missing, missing
    assert model.texture is not None and not any(p.requires_grad for p in model.texture.parameters())
    groups = param_groups(model)
    assert groups["film"] and groups["dynamics"]
    assert {id(p) for p in groups["film"]} == {id(p) for n, p in model.named_parameters() if n.startswith("film.")}


def test_inverse_dynamics_head():
    cfg = tiny_cfg()
    model = WorldModel(cfg)
    h = torch.randn(4, cfg.hidden_dim, cfg.grid_h, cfg.grid_w).tanh()
    f = model.idm.features(h)
    out = model.idm(f, f.flip(0), torch.tensor([1, 2, 3, 5]))
    assert out.shape == (4, ENC_DIM)
    # The span embedding matters: same pair, different k, different prediction.
    out2 = model.idm(f, f.flip(0), torch.tensor([2, 2, 3, 5]))
    assert not torch.allclose(out[0], out2[0]) and torch.allclose(out[1:], out2[1:])
    with pytest.raises(ValueError, match="span"):
        model.idm(f, f, torch.tensor([0, 1, 1, 6]))


def test_embeddings_initialised_from_codebook():
    cfg = tiny_cfg(embed_dim=6, head_dim=6)
    codebook = torch.randn(cfg.codebook_size, cfg.code_dim)
    model = WorldModel(cfg, codebook=codebook)
    centred = codebook - codebook.mean(0)
    # Same geometry: embedding = centred codebook up to one global scale.
    scale = model.embed.weight.norm() / centred.norm()
    torch.testing.assert_close(model.embed.weight, centred * scale)
    # A different width goes through an orthogonal map, so pairwise distances keep their order.
    cfg2 = tiny_cfg(embed_dim=12, head_dim=10)
    model2 = WorldModel(cfg2, codebook=codebook)
    d_cb = torch.cdist(centred, centred)
    d_emb = torch.cdist(model2.embed.weight, model2.embed.weight)
    torch.testing.assert_close(d_emb / d_emb.max(), d_cb / d_cb.max(), rtol=1e-3, atol=1e-3)
    with pytest.raises(IncompatibleError):
        WorldModel(cfg, codebook=torch.randn(cfg.codebook_size + 1, cfg.code_dim))


def test_vqvae_mismatch_is_refused_naming_the_file():
    cfg = tiny_cfg()
    ok = SimpleNamespace(codebook_size=cfg.codebook_size, grid=(cfg.grid_h, cfg.grid_w))
    check_compatible(model_side(cfg, "wm.pt"), vqvae_side(ok, "vq.pt"))
    with pytest.raises(IncompatibleError, match=r"wm\.pt and VQ-VAE other_vq\.pt.*codebook size 32 \(world model\) "
                                                r"vs 64 \(VQ-VAE\)"):
        check_compatible(model_side(cfg, "wm.pt"),
                         vqvae_side(SimpleNamespace(codebook_size=64, grid=(cfg.grid_h, cfg.grid_w)), "other_vq.pt"))
    with pytest.raises(IncompatibleError, match=r"vq2\.pt.*token grid 6x8 \(world model\) vs 9x16"):
        check_compatible(model_side(cfg, "wm.pt"), vqvae_side(SimpleNamespace(codebook_size=32, grid=(9, 16)), "vq2.pt"))
    model = WorldModel(cfg)
    with pytest.raises(ValueError, match="token grid"):
        model.step(torch.zeros(1, 9, 16, dtype=torch.long), torch.zeros(1, ENC_DIM), model.init_state(1))


def test_config_round_trip_and_validation():
    cfg = tiny_cfg()
    assert WorldModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown"):
        WorldModelConfig.from_dict({**cfg.to_dict(), "bogus": 1})
    with pytest.raises(ValueError, match="odd"):
        tiny_cfg(kernel_size=4)


def test_flop_count_matches_layer_shapes():
    for kw in ({}, {"separable": False, "head_dim": 0}):
        cfg = tiny_cfg(**kw)
        model = WorldModel(cfg)
        counted = count_step_flops(model)
        # Elementwise ops and norms are not FLOP-counted by torch; the matmuls and convs dominate.
        assert abs(counted - analytic_step_flops(cfg)) / counted < 0.05


def test_mixed_precision_keeps_an_fp32_state():
    """Under autocast (bf16 here, on CPU; the trainer uses bf16 or fp16 on CUDA) the model runs, the
    recurrent state stays fp32 and gradients flow."""
    cfg = tiny_cfg()
    model = WorldModel(cfg)
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, cfg.codebook_size, (2, 3, cfg.grid_h, cfg.grid_w), generator=gen)
    actions = random_actions(2, 3, gen)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, state = model.forward_sequence(tokens, actions)
    assert all(v.dtype == torch.float32 for k, v in state.items()
               if k not in ("edge_mem", "repeated"))  # those hold codes and a mask
    assert torch.isfinite(logits.float()).all()
    logits.float().logsumexp(1).mean().backward()
    assert model.cells[0].x_proj[1].weight.grad.abs().sum() > 0
