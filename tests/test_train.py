"""train.py: teacher forcing inputs, loss wiring, streaming AR memory, resume equivalence, signals,
checkpoints and exports, VQ-VAE mismatch, non-finite handling, and a tiny run that learns.

Data: synthetic token shards whose dynamics are learnable from the actions (a yaw-left/right action rolls
the token grid one column), written in preprocess.py's documented shard format, with a tiny randomly
initialised VQ-VAE. LPIPS uses a random AlexNet trunk: these tests check wiring and gradients, never scores.
"""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

import calibration
import config as config_mod
import devices
import motion
import objective
import train
from actions import ENC_DIM, RAW, RAW_DIM, ActionEncoding
from bench._common import SavedTensorMeter
from ckpt_io import atomic_write_json
from compat import IncompatibleError
from world_model_io import load_world_model

GRID_FRAME = (64, 48)  # frame (w, h) of the tiny VQ-VAE -> token grid 12 x 16


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


# ----------------------------------------------------------------------------- fixtures

def tiny_vqvae(codebook_size: int = 32, frame: tuple[int, int] = GRID_FRAME, seed: int = 0):
    from vq_vae.model import VQVAE, VQVAEConfig

    torch.manual_seed(seed)
    cfg = VQVAEConfig(frame_width=frame[0], frame_height=frame[1], codebook_size=codebook_size, code_dim=8,
                      enc_channels=(8, 8, 8), enc_res_blocks=(0, 0, 0), dec_channels=(8, 8, 8),
                      dec_res_blocks=(0, 0, 0), kmeans_iters=0)
    vq = VQVAE(cfg).eval()
    vq.quantizer.initted.fill_(True)
    return vq


def save_tiny_vqvae(path: Path, **kw) -> tuple[Path, str]:
    from vq_vae import save_vqvae

    ident = save_vqvae(tiny_vqvae(**kw), path)
    return path, ident


def write_shards(root: Path, vq_path: Path, ident: str, codebook_size: int = 32, grid: tuple[int, int] = (12, 16),
                 n_files: int = 3, length: int = 24, seed: int = 0) -> Path:
    """Shards in preprocess.py's format: yaw +-8 degrees rolls the token grid by one column."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    manifest = []
    for f in range(n_files):
        frame = rng.integers(0, codebook_size, grid)
        tokens, raw = [frame], np.zeros((length - 1, RAW_DIM), np.float32)
        for t in range(length - 1):
            turn = int(rng.integers(-1, 2))
            raw[t, RAW["yaw_deg"]] = 8.0 * turn
            raw[t, RAW["forward"]] = float(rng.integers(0, 2))
            frame = np.roll(frame, -turn, axis=1)
            tokens.append(frame)
        name = f"ep{f:02d}.npz"
        with open(root / name, "wb") as fh:
            np.savez(fh, tokens=np.stack(tokens).astype(np.uint16), actions=raw,
                     frame_index=np.arange(length, dtype=np.int32))
        manifest.append({"file": name, "length": length, "source": "synthetic", "fps": 16.0})
    atomic_write_json(root / "manifest.json", manifest)
    atomic_write_json(root / "meta.json", {"shard_format_version": 1, "codebook_size": codebook_size,
                                           "grid": list(grid), "fps": 16.0, "frame_size": list(GRID_FRAME),
                                           "action_schema_version": 1, "vqvae_identity": ident,
                                           "vqvae_path": str(vq_path)})
    return root


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("wm")
    vq_path, ident = save_tiny_vqvae(base / "vq.pt")
    data = write_shards(base / "shards", vq_path, ident)
    return {"base": base, "vq": vq_path, "ident": ident, "data": data}


@pytest.fixture(scope="module")
def lpips_net():
    from lpips_loader import LPIPS

    torch.manual_seed(0)
    return LPIPS("alex")  # random trunk: gradient flow and wiring only


def make_cfg(setup, run_dir: Path, *args: str) -> train.TrainConfig:
    argv = ["--preset", "tiny", "--data", str(setup["data"]), "--vqvae", str(setup["vq"]),
            "--run-dir", str(run_dir), "--wandb", "disabled", "--progress", "false", "--val-fraction", "0",
            "--image-every", "0", *args]
    return config_mod.parse_config(train.TrainConfig, argv, train.PRESETS)


def test_negative_key_field_thresholds_are_a_config_error(setup, tmp_path):
    for flag in ("--key-min-field", "--key-min-moving-px"):
        with pytest.raises(config_mod.ConfigError, match="must be >= 0"):
            make_cfg(setup, tmp_path / "run", flag, "-0.1")
    with pytest.raises(config_mod.ConfigError, match="--key-expected true needs --key-min-moving-px"):
        make_cfg(setup, tmp_path / "run", "--key-expected", "true")
    with pytest.raises(config_mod.ConfigError, match="--recycle true needs the motion path"):
        make_cfg(setup, tmp_path / "run", "--recycle", "true", "--copy-prior", "0")
    with pytest.raises(config_mod.ConfigError, match="--denoise-targets needs the motion path"):
        make_cfg(setup, tmp_path / "run", "--denoise-targets", "0.5", "--copy-prior", "0")
    assert make_cfg(setup, tmp_path / "run", "--key-expected", "true", "--key-min-moving-px", "0.05").key_expected


def make_trainer(setup, lpips_net, *args: str) -> train.Trainer:
    from vq_vae import load_vqvae

    cfg = make_cfg(setup, setup["base"] / "unused", *args)
    vq = load_vqvae(setup["vq"])
    return train.Trainer(cfg, vq, str(setup["vq"]), setup["ident"], ActionEncoding(), torch.device("cpu"),
                         lpips_net=lpips_net)


def batch_from_data(setup, seq_len: int, n: int = 2) -> dict:
    from dataset import TokenWindowDataset
    from torch.utils.data import default_collate

    ds = TokenWindowDataset(setup["data"], seq_len)
    return default_collate([ds[i] for i in range(0, n * 5, 5)])


def params(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ----------------------------------------------------------------------------- teacher forcing

def test_teacher_forcing_feeds_the_previous_frame_and_ar_feeds_predictions(setup, lpips_net, monkeypatch):
    """LESSONS.md L11: teacher forcing once fed the target frame. A spy on model.step and on the CE records what goes
    in at each step and what it is scored against."""
    trainer = make_trainer(setup, lpips_net, "--corrupt-max", "0", "--ss-start-prob", "1", "--ss-min-prob", "1",
                           "--w-rank", "0", "--ar-start-step", "0", "--ar-min-len", "2", "--ar-max-len", "3")
    batch = batch_from_data(setup, trainer.cfg.seq_len)
    tokens = batch["tokens"]
    calls, targets = [], []
    real_step = trainer.model.step

    def spy_step(tok, action, state):
        logits, new_state = real_step(tok, action, state)
        calls.append((tok.clone(), action.clone(), logits.detach().argmax(1)))
        return logits, new_state

    real_ce = objective.token_ce_per_sample

    def spy_ce(logits, target, weight=None):
        targets.append(target.clone())
        return real_ce(logits, target, weight)

    monkeypatch.setattr(trainer.model, "step", spy_step)
    monkeypatch.setattr(objective, "token_ce_per_sample", spy_ce)
    m = trainer.train_step(batch)
    t_total = tokens.shape[1] - 1
    ar = int(m["ar_len"])
    tf = t_total - ar
    assert ar == 2 and len(calls) == t_total and len(targets) == t_total
    for t in range(t_total):
        assert torch.equal(targets[t], tokens[:, t + 1]), f"step {t} not scored against frame t+1"
        assert torch.equal(calls[t][1], batch["actions"][:, t]), f"step {t} not given action t"
        if t < tf:
            assert torch.equal(calls[t][0], tokens[:, t]), f"teacher-forced step {t} not fed frame t"
            assert not torch.equal(calls[t][0], tokens[:, t + 1])
        else:
            assert torch.equal(calls[t][0], calls[t - 1][2]), f"AR step {t} not fed the previous prediction"
            assert not calls[t][0].requires_grad


def test_scheduled_sampling_and_corruption_change_teacher_inputs(setup, lpips_net, monkeypatch):
    trainer = make_trainer(setup, lpips_net, "--corrupt-max", "0.5", "--corrupt-ramp-steps", "0",
                           "--ss-start-prob", "0", "--ss-min-prob", "0", "--w-rank", "0", "--ar-start-step", "99")
    batch = batch_from_data(setup, trainer.cfg.seq_len)
    calls = []
    real_step = trainer.model.step

    def spy_step(tok, action, state):
        logits, new_state = real_step(tok, action, state)
        calls.append((tok.clone(), logits.detach().argmax(1)))
        return logits, new_state

    monkeypatch.setattr(trainer.model, "step", spy_step)
    trainer.train_step(batch)
    first = calls[0][0]
    frac = (first != batch["tokens"][:, 0]).float().mean()
    assert 0.3 < frac < 0.7  # about half the tokens corrupted (some random codes equal the original)
    for t in range(1, len(calls)):  # teacher prob 0: every later input is the previous prediction
        assert torch.equal(calls[t][0], calls[t - 1][1])


# ----------------------------------------------------------------------------- losses in the loop

def test_every_loss_is_finite_and_lpips_runs_every_step(setup, lpips_net):
    trainer = make_trainer(setup, lpips_net, "--ar-start-step", "2")
    batch = batch_from_data(setup, trainer.cfg.seq_len)
    for _ in range(4):
        m = trainer.train_step(batch)
        for key in ("loss", "ce", "semantic", "lpips", "idm", "idm_yaw", "idm_pitch", "idm_keys", "action_rank",
                    "grad/total_norm", "grad/film_norm", "grad/dynamics_norm"):
            assert key in m and np.isfinite(m[key]), (key, m.get(key))
        assert m["nonfinite_skipped"] == 0.0
    assert m["ar_len"] > 0 and np.isfinite(m["loss_ar"]) and ("lpips_ar" in m or "lpips_tf" in m)


def test_near_duplicate_targets_replace_the_true_codes_in_the_token_loss(setup, lpips_net, monkeypatch):
    calls = []
    real = objective.near_duplicate_targets

    def spy(target, warped, inside, codebook, radius):
        calls.append((target.clone(), radius))
        return real(target, warped, inside, codebook, radius)

    monkeypatch.setattr(objective, "near_duplicate_targets", spy)
    plain = make_trainer(setup, lpips_net, "--ar-start-step", "1000")
    batch = batch_from_data(setup, plain.cfg.seq_len)
    ce_plain = plain.train_step(batch)["ce"]
    assert not calls  # off by default
    denoised = make_trainer(setup, lpips_net, "--ar-start-step", "1000", "--denoise-targets", "1e9")
    ce_denoised = denoised.train_step(batch)["ce"]
    tokens = batch["tokens"].long()
    assert len(calls) == tokens.shape[1] - 1  # one per teacher-forced frame, with the true next frame
    assert all(torch.equal(target, tokens[:, t + 1]) and radius == 1e9 for t, (target, radius) in enumerate(calls))
    # Every code is a near duplicate at this radius: the loss scores the warped previous frame instead.
    assert ce_denoised != pytest.approx(ce_plain)


@pytest.mark.parametrize("only", ["w_lpips", "w_semantic"])
def test_lpips_and_semantic_alone_move_the_model(setup, lpips_net, only):
    weights = {"w_ce": "0", "w_semantic": "0", "w_lpips": "0", "w_idm": "0", "w_rank": "0"}
    weights[only] = "1"
    args = [x for k, v in weights.items() for x in (f"--{k}", v)]
    trainer = make_trainer(setup, lpips_net, *args, "--grad-clip", "0")
    batch = batch_from_data(setup, trainer.cfg.seq_len)
    grads = {}
    real_step = trainer.optimizer.step

    def spy_opt_step(*a, **kw):
        for name, p in trainer.model.named_parameters():
            grads[name] = 0.0 if p.grad is None else float(p.grad.abs().sum())
        return real_step(*a, **kw)

    trainer.optimizer.step = spy_opt_step
    m = trainer.train_step(batch)
    assert m["grad/total_norm"] > 0
    for name in ("head_proj.weight", "cells.0.x_proj.1.weight", "cells.1.h_gates.1.weight",
                 "film.camera.2.weight", "film.movement.2.weight", "embed.weight"):
        assert grads[name] > 0, f"{only} gives no gradient to {name}"


def test_mixed_precision_training_step(setup, lpips_net):
    """The autocast path of the trainer (bf16 on CPU here; CUDA uses bf16, or fp16 with a GradScaler on a
    P100) gives finite losses and updates the parameters."""
    trainer = make_trainer(setup, lpips_net, "--ar-start-step", "0")
    assert trainer.amp_dtype is None and not trainer.scaler.is_enabled()  # CPU default: fp32
    assert devices.amp_settings(torch.device("cpu"), True) == (None, False)
    trainer.amp_dtype = torch.bfloat16
    batch = batch_from_data(setup, trainer.cfg.seq_len)
    before = params(trainer.model)
    m = trainer.train_step(batch)
    assert m["nonfinite_skipped"] == 0.0 and np.isfinite(m["loss"]) and np.isfinite(m["lpips"])
    after = params(trainer.model)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert all(v.dtype == torch.float32 for v in after.values())


def _peak_saved_bytes(setup, lpips_net, ar: int, bptt: int) -> int:
    trainer = make_trainer(setup, lpips_net, "--seq-len", str(3 + ar), "--min-tf-steps", "2",
                           "--ar-start-step", "0", "--ar-min-len", str(ar), "--ar-max-len", str(ar),
                           "--ar-bptt", str(bptt), "--lpips-per-sample", "1")
    gen = torch.Generator().manual_seed(0)
    g = trainer.model_cfg
    batch = {"tokens": torch.randint(0, g.codebook_size, (2, 3 + ar, g.grid_h, g.grid_w), generator=gen),
             "actions": torch.zeros(2, 2 + ar, ENC_DIM)}
    batch["actions"][..., 2] = 1
    batch["actions"][..., 6] = 1
    meter = SavedTensorMeter()
    with torch.autograd.graph.saved_tensors_hooks(meter.pack, meter.unpack):
        m = trainer.train_step(batch)
    assert int(m["ar_len"]) == ar
    return meter.peak


def test_streaming_ar_memory_does_not_grow_with_ar_length(setup, lpips_net):
    """AR feedback is detached and each chunk is backpropagated before the next: the autograd memory of a
    step with 8 AR steps equals that with 2 (the window's teacher-forced part is the same)."""
    short = _peak_saved_bytes(setup, lpips_net, ar=2, bptt=1)
    long = _peak_saved_bytes(setup, lpips_net, ar=8, bptt=1)
    assert long <= short * 1.05
    # Negative control: backpropagating the whole AR rollout at once does grow (the meter can tell).
    full = _peak_saved_bytes(setup, lpips_net, ar=8, bptt=8)
    assert full > short * 1.3


def test_lr_groups_keep_the_film_multiplier_through_warmup(setup, lpips_net):
    trainer = make_trainer(setup, lpips_net, "--film-lr-mult", "7", "--lr", "0.01", "--warmup-steps", "10")
    train.apply_lr(trainer.optimizer, 0.01 * train.lr_factor(0, trainer.cfg))
    lrs = {g["name"]: g["lr"] for g in trainer.optimizer.param_groups}
    assert lrs["film"] == pytest.approx(7 * lrs["main"]) and lrs["main"] == pytest.approx(0.001)
    film_ids = {id(p) for p in trainer.model.film.parameters()}
    for g in trainer.optimizer.param_groups:
        assert all((id(p) in film_ids) == g["name"].startswith("film") for p in g["params"])


def test_nonfinite_loss_skips_the_step_then_stops(setup, lpips_net, monkeypatch):
    trainer = make_trainer(setup, lpips_net, "--max-bad-steps", "3")
    batch = batch_from_data(setup, trainer.cfg.seq_len)
    before = params(trainer.model)
    monkeypatch.setattr(objective, "token_ce_per_sample",
                        lambda logits, target, weight=None: torch.full((logits.shape[0],), float("nan")))
    for _ in range(2):
        m = trainer.train_step(batch)
        assert m["nonfinite_skipped"] == 1.0
    after = params(trainer.model)
    assert all(torch.equal(before[k], after[k]) for k in before)
    with pytest.raises(train.TrainingError, match="3 steps in a row had a non-finite"):
        trainer.train_step(batch)


# ----------------------------------------------------------------------------- whole runs

def test_resume_is_exact(setup, lpips_net, tmp_path):
    """N steps + resume + N steps gives bit-identical parameters to 2N steps (CPU)."""
    full = train.run(make_cfg(setup, tmp_path / "a", "--max-steps", "6", "--ckpt-every", "100"), lpips_net=lpips_net)
    train.run(make_cfg(setup, tmp_path / "b", "--max-steps", "3", "--ckpt-every", "100"), lpips_net=lpips_net)
    resumed = train.run(make_cfg(setup, tmp_path / "b", "--max-steps", "6", "--ckpt-every", "100", "--resume"),
                        lpips_net=lpips_net)
    assert full["step"] == resumed["step"] == 6
    pa, pb = params(full["trainer"].model), params(resumed["trainer"].model)
    for k in pa:
        assert torch.equal(pa[k], pb[k]), f"{k} differs after resume"
    assert full["trainer"].brake == resumed["trainer"].brake
    # The AR curriculum was active (tiny preset starts AR at step 2), so the brake state mattered.
    assert full["metrics"]["ar_len"] > 0


def test_resume_reads_a_training_state_saved_before_a_model_field_existed(setup, lpips_net, tmp_path):
    import ckpt_io
    run_dir = tmp_path / "old"
    train.run(make_cfg(setup, run_dir, "--max-steps", "3", "--ckpt-every", "100"), lpips_net=lpips_net)
    (state_path,) = (run_dir / "checkpoints").glob("*.pt")
    rec = ckpt_io.load_checkpoint(state_path, train.TRAIN_STATE_KIND, train.TRAIN_STATE_FORMAT_VERSION)
    del rec["model_config"]["recycle"]  # as written by the code before --recycle
    ckpt_io.save_checkpoint(state_path, train.TRAIN_STATE_KIND, train.TRAIN_STATE_FORMAT_VERSION, rec)
    out = train.run(make_cfg(setup, run_dir, "--max-steps", "4", "--ckpt-every", "100", "--resume"),
                    lpips_net=lpips_net)
    assert out["step"] == 4 and out["trainer"].model_cfg.recycle is False
    with pytest.raises(train.TrainingError, match="architecture differs.*recycle"):
        train.run(make_cfg(setup, run_dir, "--max-steps", "5", "--resume", "--recycle", "true"), lpips_net=lpips_net)


def test_a_resume_continues_the_saved_runs_options_and_changes_only_those_given(setup, lpips_net, tmp_path):
    run_dir = tmp_path / "run"
    first = make_cfg(setup, run_dir, "--max-steps", "2", "--ckpt-every", "100", "--keep-last", "7",
                     "--lr", "0.0007")
    train.run(first, lpips_net=lpips_net)
    essentials = ["--data", str(setup["data"]), "--vqvae", str(setup["vq"]), "--run-dir", str(run_dir)]
    resumed = train.parse_args([*essentials, "--resume", "--max-steps", "3"])
    assert (resumed.keep_last, resumed.lr, resumed.seq_len) == (7, 0.0007, first.seq_len)
    assert resumed.max_steps == 3 and resumed.resume
    fresh = train.parse_args([*essentials, "--max-steps", "3"])  # no --resume: the defaults, as before
    assert fresh.keep_last != 7
    assert train.parse_args([*essentials, "--resume", "--keep-last", "2"]).keep_last == 2
    out = train.run(resumed, lpips_net=lpips_net)
    assert out["step"] == 3
    saved = json.loads((run_dir / "config.json").read_text())["train_config"]
    assert saved["keep_last"] == 7 and saved["max_steps"] == 3
    (run_dir / "config.json").write_text("{not json")
    with pytest.raises(config_mod.ConfigError, match=r"config\.json.*not a run's config"):
        train.parse_args([*essentials, "--resume"])


def test_checkpoints_exports_logs_and_retention(setup, lpips_net, tmp_path):
    run_dir = tmp_path / "run"
    cfg = make_cfg(setup, run_dir, "--max-steps", "6", "--ckpt-every", "2", "--keep-last", "2",
                   "--image-every", "3", "--diag-every", "3", "--val-fraction", "0.34", "--val-every", "3")
    out = train.run(cfg, lpips_net=lpips_net)
    assert out["step"] == 6
    states = sorted(p.name for p in (run_dir / "checkpoints").glob("*.pt"))
    assert states == ["state_00000004.pt", "state_00000006.pt"]
    assert sorted(p.name for p in (run_dir / "exports").glob("*.pt")) == ["world_model_00000004.pt",
                                                                           "world_model_00000006.pt"]
    assert not list(run_dir.rglob("*.tmp"))
    model, meta = load_world_model(run_dir / "world_model.pt")
    assert meta["step"] == 6 and meta["vqvae"]["identity"] == setup["ident"]
    assert isinstance(meta["encoding"], ActionEncoding) and meta["train_config"]["preset"] == "tiny"
    # The export names the episodes it trained on (evaluate.py holds out the others by name).
    from dataset import split_files
    assert meta["train_files"] == split_files(cfg.data, 0.34, seed=cfg.seed)[0] and len(meta["train_files"]) >= 1
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, out["trainer"].model.state_dict()[k])
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["train_config"]["seq_len"] == cfg.seq_len and saved["model_config"]["codebook_size"] == 32
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 7))
    keys = set().union(*rows)
    for k in ("train/loss", "train/ce", "train/semantic", "train/lpips", "train/idm", "train/action_rank",
              "train/loss_teacher", "train/loss_ar", "train/ar_len", "train/lpips_tf", "train/unique_codes",
              "train/entropy", "train/confidence", "train/spatial_gradient", "train/film/gamma_abs",
              "train/film/beta_abs", "grad/film_norm", "grad/dynamics_norm", "timing/data_ms",
              "timing/forward_ms", "timing/lpips_ms", "timing/backward_ms", "timing/optimizer_ms",
              "timing/steps_per_s", "train/action_response/forward", "train/action_response/average",
              "val/loss_teacher", "val/loss_ar", "brake/cap"):
        assert k in keys, k
    assert sorted(p.name for p in (run_dir / "images").glob("*.png")) == ["step_00000003.png", "step_00000006.png"]
    import cv2

    img = cv2.imread(str(run_dir / "images" / "step_00000003.png"))
    assert img.shape == (3 * GRID_FRAME[1], (cfg.seq_len - 1) * GRID_FRAME[0], 3)
    # A second run in the same directory without --resume is refused (no silent overwrite).
    with pytest.raises(train.TrainingError, match="--resume"):
        train.run(cfg, lpips_net=lpips_net)


def test_sigterm_saves_and_stops_cleanly(setup, lpips_net, tmp_path):
    run_dir = tmp_path / "sig"

    def kill_at_2(trainer, metrics):
        if trainer.step == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    out = train.run(make_cfg(setup, run_dir, "--max-steps", "8", "--ckpt-every", "100"), lpips_net=lpips_net,
                    on_step=kill_at_2)
    assert out["stopped_by_signal"] and out["step"] == 2
    assert (run_dir / "checkpoints" / "state_00000002.pt").is_file()
    assert signal.getsignal(signal.SIGTERM) == before
    again = train.run(make_cfg(setup, run_dir, "--max-steps", "3", "--resume"), lpips_net=lpips_net)
    assert again["step"] == 3 and not again["stopped_by_signal"]


def test_tiny_run_lowers_the_loss(setup, lpips_net, tmp_path):
    """30 steps of the whole objective: teacher-forced CE and AR token accuracy on fixed windows improve."""
    args = ("--max-steps", "30", "--ckpt-every", "1000", "--batch-size", "4", "--diag-every", "1000")
    fixed = batch_from_data(setup, make_cfg(setup, tmp_path).seq_len, n=4)
    before = make_trainer(setup, lpips_net, *args).validate([fixed])  # same seed: the run's initial model
    out = train.run(make_cfg(setup, tmp_path / "learn", *args), lpips_net=lpips_net)
    after = out["trainer"].validate([fixed])
    assert out["step"] == 30
    assert after["val/loss_teacher"] < before["val/loss_teacher"] - 0.2, (before, after)
    # The untrained model already copies (the motion path's prior); training must at least halve the errors.
    assert 1 - after["val/token_acc_ar"] < 0.5 * (1 - before["val/token_acc_ar"]), (before, after)


def test_mismatched_vqvae_is_refused_naming_the_files(setup, lpips_net, tmp_path):
    other_k, _ = save_tiny_vqvae(tmp_path / "vq_k64.pt", codebook_size=64)
    cfg = make_cfg(setup, tmp_path / "r1", "--vqvae", str(other_k), "--max-steps", "1")
    with pytest.raises(IncompatibleError, match=r"vq_k64\.pt.*codebook size 32 \(shards\) vs 64"):
        train.run(cfg, lpips_net=lpips_net)
    other_grid, _ = save_tiny_vqvae(tmp_path / "vq_grid.pt", frame=(128, 72))
    with pytest.raises(IncompatibleError, match=r"vq_grid\.pt.*token grid 12x16 \(shards\) vs 18x32"):
        train.run(make_cfg(setup, tmp_path / "r2", "--vqvae", str(other_grid)), lpips_net=lpips_net)
    # Same shapes, different weights: the identity recorded in the shards catches the swap.
    same_shape, _ = save_tiny_vqvae(tmp_path / "vq_other.pt", seed=5)
    with pytest.raises(IncompatibleError, match=r"vq_other\.pt.*identity"):
        train.run(make_cfg(setup, tmp_path / "r3", "--vqvae", str(same_shape)), lpips_net=lpips_net)


def test_cli_main_reports_errors_cleanly(setup, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        train.main(["--preset", "tiny", "--data", str(tmp_path / "missing"), "--vqvae", str(setup["vq"]),
                    "--run-dir", str(tmp_path / "x"), "--wandb", "disabled", "--progress", "false"])
    assert e.value.code == 2 and "meta.json" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        train.main(["--preset", "tiny", "--seq-len", "4", "--ar-max-len", "3"])
    assert e.value.code == 2 and "never grows" in capsys.readouterr().err


def still_tokens_beside_video(setup, tmp_path: Path, video: Path, raw: np.ndarray, grid: tuple[int, int]) -> Path:
    """One shard of len(raw) + 1 frames whose tokens never move, with actions `raw` and its manifest naming
    `video` as its source: calibrated on the video, the motion is the video's."""
    length = len(raw) + 1
    root = write_shards(tmp_path / "shards", setup["vq"], setup["ident"], n_files=1, length=length)
    with open(root / "ep00.npz", "wb") as fh:
        np.savez(fh, tokens=np.zeros((length, *grid), np.uint16), actions=raw,
                 frame_index=np.arange(length, dtype=np.int32))
    manifest = json.loads((root / "manifest.json").read_text())
    manifest[0]["video"] = str(video)
    atomic_write_json(root / "manifest.json", manifest)
    return root


def test_motion_calibration_measures_the_source_video_where_it_still_is(setup, tmp_path):
    """The tokens of these shards never move (a tokenizer that missed every sub-token motion) while their
    source video pans 2 px (half a token) per 8-degree turn: calibrated on the video (--motion-frames video),
    a turn moves half a token; on the decoded tokens (--motion-frames tokens, or the video gone) it moves
    nothing."""
    import video_io
    from vq_vae import load_vqvae

    vq = load_vqvae(setup["vq"])
    (w, h), (gh, gw), length = GRID_FRAME, vq.grid, 40
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 256, (h // 4, (w + 2 * length) // 4, 3)).astype(np.uint8)
    scene = video_io.resize(np.kron(coarse, np.ones((4, 4, 1), np.uint8)), (w + 2 * length, h))
    video = tmp_path / "pan.mp4"
    video_io.write_mp4(video, [scene[:, 2 * t:2 * t + w] for t in range(length)], fps=16)
    raw = np.zeros((length - 1, RAW_DIM), np.float32)
    raw[:, RAW["yaw_deg"]] = 8.0
    root = still_tokens_beside_video(setup, tmp_path, video, raw, (gh, gw))
    cfg = make_cfg(setup, tmp_path / "run", "--data", str(root), "--motion-pairs", "30", "--motion-frames", "video")
    enc = ActionEncoding()
    turn = enc.encode(np.eye(1, RAW_DIM, RAW["yaw_deg"], dtype=np.float32)[0] * 8.0)
    coef = calibration.calibrate_motion(cfg, ["ep00.npz"], enc, vq, verbose=False)["motion_coef"]
    assert (coef[0] @ turn) == pytest.approx(-2.0 / (w / gw), abs=0.1)  # content moves left, half a token
    tokens_cfg = make_cfg(setup, tmp_path / "run", "--data", str(root), "--motion-pairs", "30",
                          "--motion-frames", "tokens")
    got = calibration.calibrate_motion(tokens_cfg, ["ep00.npz"], enc, vq, verbose=False)
    assert got["motion_coef"][0] @ turn == 0.0
    video.unlink()
    coef = calibration.calibrate_motion(cfg, ["ep00.npz"], enc, vq, verbose=False)["motion_coef"]
    assert coef[0] @ turn == 0.0


def test_key_field_is_calibrated_where_walking_moves_the_picture(setup, tmp_path):
    """Source video of a walk: the bottom half scrolls down 2 px (half a token) per step while W is held and
    the top half (the sky) stays. Calibrated on it (--motion-frames video), the field moves the bottom rows
    about half a token down per W step and the top rows not at all, and W's global coefficients are 0;
    --key-motion zoom gives no field."""
    import video_io
    from vq_vae import load_vqvae

    vq = load_vqvae(setup["vq"])
    (w, h), (gh, gw), length = GRID_FRAME, vq.grid, 40
    rng = np.random.default_rng(0)
    sky = video_io.resize(np.kron(rng.integers(0, 256, (h // 8, w // 4, 3)).astype(np.uint8),
                                  np.ones((4, 4, 1), np.uint8)), (w, h // 2))
    ground = np.kron(rng.integers(0, 256, ((h + 2 * length) // 4, w // 4, 3)).astype(np.uint8),
                     np.ones((4, 4, 1), np.uint8))  # [h/2 + 2 * length + ..., w, 3]
    frames = [np.concatenate([sky, ground[2 * length - 2 * t:2 * length - 2 * t + h // 2]]) for t in range(length)]
    video = tmp_path / "walk.mp4"
    video_io.write_mp4(video, frames, fps=16)
    raw = np.zeros((length - 1, RAW_DIM), np.float32)
    raw[:, RAW["forward"]] = 1.0
    root = still_tokens_beside_video(setup, tmp_path, video, raw, (gh, gw))
    cfg = make_cfg(setup, tmp_path / "run", "--data", str(root), "--motion-pairs", "30", "--motion-frames", "video")
    got = calibration.calibrate_motion(cfg, ["ep00.npz"], ActionEncoding(), vq, verbose=False)
    coef, field = got["motion_coef"], got["key_field"]
    assert field.shape == (4, 2, gh, gw)
    assert not coef[:, motion.MOVE_SLICE].any()
    w_dy = field[0, 1]  # [gh, gw] W's downward motion in tokens per step
    assert np.abs(w_dy[:gh // 2 - 1]).max() < 0.05  # the sky stays
    assert np.median(w_dy[gh // 2 + 1:-1]) == pytest.approx(2.0 / (h / gh), abs=0.15)  # the ground comes down
    zoom_cfg = make_cfg(setup, tmp_path / "run", "--data", str(root), "--motion-pairs", "30",
                        "--motion-frames", "video", "--key-motion", "zoom")
    got = calibration.calibrate_motion(zoom_cfg, ["ep00.npz"], ActionEncoding(), vq, verbose=False)
    assert got["key_field"].size == 0


def test_edge_fill_is_the_commonest_top_and_bottom_row_code(tmp_path):
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 32, (20, 12, 16)).astype(np.uint16)  # [T, gh, gw]
    tokens[:, 0, :10], tokens[:, -1, :10] = 7, 3  # sky mostly one code, ground another
    tokens[:, 1:-1, :] = 5  # the commonest code overall is neither
    np.savez(tmp_path / "a.npz", tokens=tokens, actions=np.zeros((19, RAW_DIM), np.float32),
             frame_index=np.arange(20, dtype=np.int32))
    assert calibration.edge_fill_codes(str(tmp_path), ["a.npz"]) == (7, 3)


def test_motion_from_takes_another_models_calibration_and_refuses_another_tokenizer(setup, lpips_net, tmp_path):
    from model_convGru import WorldModel, WorldModelConfig
    from world_model_io import save_world_model

    cfg = make_cfg(setup, tmp_path / "unused")
    coef = np.zeros((3, ENC_DIM))
    coef[0, :5] = [1.5, 0.4, 0.0, -0.4, -1.5]  # a yaw no tiny shard could calibrate to
    jump = np.linspace(-0.3, 0.3, 10)
    src = WorldModel(WorldModelConfig.from_arch(cfg, codebook_size=32, code_dim=8, grid=(12, 16),
                                                motion_coef=coef, jump_profile=jump))
    donor = tmp_path / "donor.pt"
    save_world_model(donor, src, ActionEncoding(), str(setup["vq"]), setup["ident"], {}, 0)
    out = train.run(make_cfg(setup, tmp_path / "r", "--max-steps", "1", "--motion-from", str(donor)),
                    lpips_net=lpips_net)
    got = out["trainer"].model.cfg
    np.testing.assert_allclose(np.reshape(got.motion_coef, (3, -1)), coef)
    np.testing.assert_allclose(got.jump_profile, jump)
    save_world_model(donor, src, ActionEncoding(), str(setup["vq"]), "another-tokenizer", {}, 0)
    with pytest.raises(train.TrainingError, match=r"donor\.pt.*tokenizer"):
        train.run(make_cfg(setup, tmp_path / "r2", "--max-steps", "1", "--motion-from", str(donor)),
                  lpips_net=lpips_net)
