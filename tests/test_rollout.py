"""rollout.py and presets.py: presets, action scripts, sampling, checkpoint-only loading, compatibility checks,
contexts and rollouts (tiny randomly initialised models saved to checkpoints in tmp_path)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from actions import RAW, RAW_DIM, ActionEncoding, make_raw
from presets import (DEFAULT_PRESET_FRAMES, PRESET_NAMES, actions_to_entries, is_preset, load_action_script,
                     preset_actions)
from rollout import (IncompatibleError, Rollout, Sampling, decode_tokens, load_bundle, load_context,
                     parse_context_spec, resolve_actions, rollout_batch, sample_tokens)

# ----------------------------------------------------------------------------- presets


def test_turn_presets_sum_to_a_full_turn_in_the_right_direction() -> None:
    for n in (96, 50, 7):
        left = preset_actions("turn-left-360", n)
        right = preset_actions("turn-right-360", n)
        assert left.shape == (n, RAW_DIM) and left.dtype == np.float32
        assert left[:, RAW["yaw_deg"]].sum() == pytest.approx(-360.0, abs=1e-3)
        assert right[:, RAW["yaw_deg"]].sum() == pytest.approx(360.0, abs=1e-3)
        assert (left[:, RAW["yaw_deg"]] < 0).all() and (right[:, RAW["yaw_deg"]] > 0).all()
        assert not left[:, 1:].any() and not right[:, 1:].any()


@pytest.mark.parametrize("name,key", [("walk-forward", "forward"), ("walk-back", "back"),
                                      ("strafe-left", "left"), ("strafe-right", "right")])
def test_movement_presets_hold_exactly_their_key(name: str, key: str) -> None:
    a = preset_actions(name, 40)
    assert (a[:, RAW[key]] == 1).all()
    others = np.delete(a, RAW[key], axis=1)
    assert not others.any()


def test_look_up_down_goes_up_then_down_and_returns() -> None:
    for n in (96, 10):
        p = preset_actions("look-up-down", n)[:, RAW["pitch_deg"]]
        cum = np.cumsum(p)
        assert p.sum() == pytest.approx(0.0, abs=1e-4)
        assert cum.min() == pytest.approx(-45.0, abs=1e-3) and cum.max() == pytest.approx(45.0, abs=1e-3)
        assert p[0] < 0 and p[n // 2] > 0 and p[-1] < 0  # up (-pitch), down, up


def test_jump_noop_random_and_combinations() -> None:
    j = preset_actions("jump", 48)
    assert j[:, RAW["jump"]].sum() == 12 and j[0, RAW["jump"]] == 1 and j[8, RAW["jump"]] == 0
    assert not np.delete(j, RAW["jump"], axis=1).any()
    assert not preset_actions("noop", 20).any()
    r1, r2, r3 = (preset_actions("random", 200, seed=s) for s in (1, 1, 2))
    assert np.array_equal(r1, r2) and not np.array_equal(r1, r3)
    assert r1[:, 2:].min() >= 0 and r1[:, 2:].max() <= 1 and r1[:, RAW["forward"]].any()
    combo = preset_actions("walk-forward+turn-left-360", 30)
    assert combo[:, RAW["forward"]].all() and combo[:, RAW["yaw_deg"]].sum() == pytest.approx(-360, abs=1e-3)
    assert all(is_preset(n) for n in PRESET_NAMES) and not is_preset("turn-left")
    with pytest.raises(ValueError, match="unknown action preset"):
        preset_actions("walk-sideways", 10)


def test_action_scripts_json_csv_and_errors(tmp_path: Path) -> None:
    entries = [{"forward": 1, "repeat": 3}, {"yaw_deg": -4.5, "jump": 1}, {"repeat": 2}]
    p = tmp_path / "a.json"
    p.write_text(json.dumps(entries))
    a = load_action_script(p)
    assert a.shape == (6, RAW_DIM)
    assert a[:3, RAW["forward"]].tolist() == [1, 1, 1] and a[3, RAW["yaw_deg"]] == -4.5 and not a[4:].any()
    c = tmp_path / "a.csv"
    c.write_text("yaw_deg,forward,jump,repeat\n0,1,0,3\n-4.5,0,1,\n0,0,0,2\n")
    assert np.array_equal(load_action_script(c), a)
    # the JSON form folds runs into "repeat" and round-trips
    p2 = tmp_path / "b.json"
    p2.write_text(json.dumps(actions_to_entries(a)))
    assert np.array_equal(load_action_script(p2), a)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"forwrd": 1}]))
    with pytest.raises(ValueError, match=r"bad\.json.*forwrd"):
        load_action_script(bad)
    bad.write_text(json.dumps([{"forward": 2}]))
    with pytest.raises(ValueError, match="bad.json"):
        load_action_script(bad)
    bad.write_text(json.dumps([{"forward": 1, "repeat": 0}]))
    with pytest.raises(ValueError, match="repeat"):
        load_action_script(bad)


# ----------------------------------------------------------------------------- sampling


def test_greedy_is_argmax_and_top1_is_greedy() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 37, 3, 5, generator=g)
    greedy = sample_tokens(logits, "greedy")
    assert greedy.shape == (2, 3, 5) and greedy.dtype == torch.int64
    assert torch.equal(greedy, logits.argmax(1))
    for seed in range(3):
        top1 = sample_tokens(logits, "topk", temperature=5.0, top_k=1, generator=torch.Generator().manual_seed(seed))
        assert torch.equal(top1, greedy)


def test_seeded_temperature_sampling_is_reproducible_and_follows_softmax() -> None:
    logits = torch.randn(1, 16, 6, 7, generator=torch.Generator().manual_seed(1))
    a = sample_tokens(logits, "temperature", 2.0, generator=torch.Generator().manual_seed(5))
    b = sample_tokens(logits, "temperature", 2.0, generator=torch.Generator().manual_seed(5))
    c = sample_tokens(logits, "temperature", 2.0, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    # one position's distribution, 20000 draws in one batch: frequencies match softmax(logits / T)
    row = torch.tensor([2.0, 1.0, 0.0, -1.0])
    many = row.view(1, 4, 1, 1).expand(1, 4, 100, 200)
    draws = sample_tokens(many, "temperature", 0.7, generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(draws.flatten(), minlength=4).float() / draws.numel()
    assert torch.allclose(freq, torch.softmax(row / 0.7, 0), atol=0.015)


def test_topk_only_draws_from_the_top_k() -> None:
    logits = torch.randn(3, 50, 4, 4, generator=torch.Generator().manual_seed(2))
    k = 3
    draws = sample_tokens(logits, "topk", 10.0, top_k=k, generator=torch.Generator().manual_seed(0))
    allowed = logits.topk(k, dim=1).indices  # [3, k, 4, 4]
    assert (allowed == draws[:, None]).any(1).all()
    assert not torch.equal(draws, logits.argmax(1))  # at T=10 some positions leave the argmax
    with pytest.raises(ValueError):
        Sampling("topk", top_k=0)
    with pytest.raises(ValueError):
        Sampling("temperature", temperature=0.0)
    with pytest.raises(ValueError):
        Sampling("beam")


# ----------------------------------------------------------------------------- contexts


def test_context_spec_parsing(tmp_path: Path) -> None:
    assert parse_context_spec("shard:data/x.npz:120") == ("shard", "data/x.npz", 120)
    assert parse_context_spec("shard:data/x.npz") == ("shard", "data/x.npz", 0)
    assert parse_context_spec("video:v.mp4:30") == ("video", "v.mp4", 30)
    assert parse_context_spec("blockworld:42") == ("blockworld", "42", 0)
    assert parse_context_spec("png:a.png,b.png") == ("png", "a.png,b.png", 0)
    assert parse_context_spec("clip.mp4")[0] == "video"
    assert parse_context_spec(str(tmp_path))[0] == "png"
    with pytest.raises(ValueError, match="blockworld:SEED"):
        parse_context_spec("blockworld:forest")
    with pytest.raises(ValueError, match="shard:PATH"):
        parse_context_spec("something.txt")
