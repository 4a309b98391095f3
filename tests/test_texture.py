"""The texture prior (texture.py): fitted on token maps, it continues their texture where a walk repeats rows."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import motion
import texture
from model_convGru import WorldModel, WorldModelConfig
from rollout import Sampling, draw_tokens
from test_motion import GRID, enc, walking_field

K = 8


def diagonal_stripes(n: int, h: int, w: int, seed: int) -> np.ndarray:
    """Token maps [n, h, w] whose code is (y + 2x + phase) mod K: each code follows from the one above."""
    phase = np.random.default_rng(seed).integers(0, K, n)[:, None, None]
    ys, xs = np.mgrid[:h, :w]
    return (ys[None] + 2 * xs[None] + phase) % K


def test_fitted_prior_continues_the_training_texture_and_draws_only_where_asked():
    h, w = 6, 8
    prior = texture.TexturePrior(K, 16, h)
    logs = texture.fit(prior, diagonal_stripes(64, h, w, 0), steps=150, batch_size=512, lr=1e-2)
    assert logs["texture_nll"] < 0.2 * logs["texture_uniform_nll"]
    assert not any(p.requires_grad or p.grad is not None for p in prior.parameters())  # frozen, no gradients left
    truth = torch.as_tensor(diagonal_stripes(2, h, w, 1))
    tokens = truth.clone()
    mask = torch.zeros_like(truth, dtype=torch.bool)
    mask[:, 2:4, 1:7] = True  # two rows a walk repeated
    tokens[mask] = 0
    out = texture.fill(prior, tokens, mask, torch.Generator().manual_seed(0))
    assert torch.equal(out[~mask], tokens[~mask])  # nothing else changes
    assert (out[mask] == truth[mask]).float().mean() > 0.9  # the stripes go on through the filled rows
    again = texture.fill(prior, tokens, mask, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)  # a seeded draw repeats


def test_fit_leaves_the_global_random_stream_alone():
    prior = texture.TexturePrior(K, 4, 6)
    torch.manual_seed(3)
    expected = torch.rand(4)
    torch.manual_seed(3)
    texture.fit(prior, diagonal_stripes(4, 6, 8, 0), steps=3, batch_size=16)
    assert torch.equal(torch.rand(4), expected)


def walking_model(texture_dim: int) -> WorldModel:
    gh, gw = GRID
    field = walking_field(GRID)
    cfg = WorldModelConfig(embed_dim=8, hidden_dim=8, num_layers=1, kernel_size=3, film_hidden=8, head_dim=8,
                           attn_ctx=0, idm_hidden=8, codebook_size=64, code_dim=4, grid_h=gh, grid_w=gw,
                           copy_prior=50.0, key_field=tuple(field.reshape(-1)), texture_dim=texture_dim)
    return WorldModel(cfg)


def test_a_walks_repeated_rows_are_drawn_from_the_prior_and_a_turn_repeats_nothing():
    gh, gw = GRID
    model = walking_model(8)
    # Fitted on maps whose lower half is code 5, the prior draws 5 there: what the rollout puts where the
    # walk repeats rows (the field moves the lower half only).
    maps = np.random.default_rng(0).integers(0, 64, (64, gh, gw))
    maps[:, gh // 2:] = 5
    texture.fit(model.texture, maps, steps=200, batch_size=256, lr=1e-2)
    tokens, state = torch.arange(gh * gw).view(1, gh, gw) + 6, model.init_state(1)
    gen = torch.Generator().manual_seed(0)
    fives, filled = 0, 0
    for _ in range(10):
        logits, state = model.step(tokens, enc(forward=1.0), state)
        rep = model.repeated(state)
        drawn = draw_tokens(model, logits, state, Sampling(), gen)
        kept = draw_tokens(model, logits, state, Sampling(fill=False), gen)
        assert torch.equal(drawn[~rep], kept[~rep])  # the copy prior's greedy choice everywhere else
        assert torch.equal(kept, logits.argmax(1))
        fives, filled = fives + int((drawn[rep] == 5).sum()), filled + int(rep.sum())
        tokens = drawn
    assert filled >= 8 and fives >= 0.9 * filled  # a draw at temperature 1: nearly always the prior's 5
    assert not model.repeated(state)[0, : gh // 2].any()  # the still rows above the horizon never repeat
    _, state = model.step(tokens, enc(yaw_deg=4.0), model.init_state(1))
    assert not model.repeated(state).any()  # a turn moves every token alike


def test_vertical_repeats_are_the_second_reader_of_a_source_in_its_column():
    src = torch.tensor([[0, 1, 0, 3, 4, 5]])  # a 3x2 grid: position (1, 0) reads (0, 0) again
    inside = torch.ones(1, 3, 2, dtype=torch.bool)
    assert motion.vertical_repeats(src, inside).flatten().tolist() == [False, False, True, False, False, False]
    sideways = torch.tensor([[0, 0, 2, 3, 4, 5]])  # (0, 1) reads (0, 0): a strafe's spread, not counted
    assert not motion.vertical_repeats(sideways, inside).any()


def test_models_without_a_prior_draw_as_before_and_old_checkpoints_load_without_one():
    model = walking_model(0)
    assert model.texture is None
    _, state = model.step(torch.zeros(1, *GRID, dtype=torch.long), enc(forward=1.0), model.init_state(1))
    assert model.repeated(state) is None
    d = walking_model(8).cfg.to_dict()
    del d["texture_dim"]
    assert WorldModelConfig.from_dict(d).texture_dim == 0


def two_clusters() -> torch.Tensor:
    """A codebook [K, 2] of two tight clusters far apart: codes 0-3 near the origin, codes 4-7 near (10, 10)."""
    near = torch.tensor([[0.0, 0.0], [0.3, 0.0], [0.0, 0.3], [0.3, 0.3]])
    return torch.cat([near, near + 10.0])


def test_an_anchored_fill_draws_codes_that_look_like_the_one_that_was_there():
    h, w = 4, 6
    prior = texture.TexturePrior(K, 8, h)
    texture.fit(prior, np.random.default_rng(0).integers(0, K, (64, h, w)), steps=100, batch_size=512, lr=1e-2)
    tokens = torch.zeros(1, h, w, dtype=torch.int64)
    tokens[:, :, w // 2:] = 5  # the right half holds a code of the far cluster
    mask = torch.ones_like(tokens, dtype=torch.bool)
    anchor = texture.Anchor(two_clusters(), width=32.0)
    drawn = texture.fill(prior, tokens, mask, torch.Generator().manual_seed(0), anchor)
    assert ((drawn < 4) == (tokens < 4)).all()  # every draw stays in its anchor's cluster
    assert len(torch.unique(drawn)) > 2  # and is a draw within it, not a copy of the anchor
    free = texture.fill(prior, tokens, mask, torch.Generator().manual_seed(0))
    assert ((free < 4) != (tokens < 4)).any()  # the prior alone (fitted on uniform maps) crosses over


def test_the_anchor_scale_is_the_median_nearest_code_distance_and_a_width_must_be_positive():
    assert abs(texture.nearest_sq_median(two_clusters(), chunk=3) - 0.09) < 1e-6  # chunks agree with one pass
    a = texture.Anchor(two_clusters(), width=2.0)
    w = a.log_weights(torch.tensor([0, 5]))  # [2, K]
    assert w.shape == (2, K) and w[0, 0] == 0 and w[1, 5] == 0 and w[0, 5] < -1000
    for bad in (0.0, -1.0):
        with pytest.raises(ValueError, match="width"):
            texture.Anchor(two_clusters(), width=bad)
    with pytest.raises(ValueError, match="fill_anchor"):
        Sampling(fill_anchor=-1.0)
