"""CUDA paths: model.step and the VQ-VAE on a GPU against the CPU, channels_last on CUDA, and the two
mixed-precision training paths (bf16 autocast with the recurrent state in fp32; fp16 with a GradScaler that
skips non-finite steps).

Tests marked `cuda` are skipped without a GPU (tests/conftest.py); `scripts/gpu_check.sh` runs them with
`pytest -m cuda`. The precision tests are device-independent logic and also run on the CPU (CPU autocast
supports bf16 and fp16), so normal CI keeps them honest.
"""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

import config as config_mod
import motion
import train
from actions import ENC_DIM, ActionEncoding
from model_convGru import WorldModel
from test_model import random_actions, tiny_cfg
from test_train import batch_from_data, save_tiny_vqvae, tiny_vqvae, write_shards

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture
def exact_fp32():
    """fp32 CUDA matmuls and convolutions without TF32 (on by default for cuDNN), so CPU and GPU agree to
    rounding."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def motion_model(**kw) -> WorldModel:
    """A tiny world model with the motion path on: yaw slots move the picture (the warp runs on device)."""
    coef = np.zeros((len(motion.MOTION_ROWS), ENC_DIM), np.float32)
    coef[0, 0:5] = [-1.6, -0.7, 0.0, 0.7, 1.6]  # fractional: whole-token moves and a carried remainder
    cfg = tiny_cfg(motion_coef=tuple(coef.reshape(-1)), copy_prior=4.0, **kw)  # [3 * 15] flat, as saved
    torch.manual_seed(0)
    return WorldModel(cfg, codebook=torch.randn(cfg.codebook_size, cfg.code_dim)).eval()


def unroll(model: WorldModel, tokens: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """model.step over every frame of tokens [B, T, h, w] with actions [B, T, 15] -> logits [B, T, K, h, w]."""
    state = model.init_state(tokens.shape[0], tokens.device)
    out = []
    with torch.no_grad():
        for t in range(tokens.shape[1]):
            logits, state = model.step(tokens[:, t], actions[:, t], state)
            out.append(logits)
    return torch.stack(out, 1), state


def inputs(model: WorldModel, b: int = 2, t: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    c = model.cfg
    return torch.randint(0, c.codebook_size, (b, t, c.grid_h, c.grid_w), generator=gen), random_actions(b, t, gen)


# ----------------------------------------------------------------------------- model and VQ-VAE on CUDA

@pytest.mark.cuda
def test_model_step_on_cuda_equals_cpu_in_fp32(exact_fp32):
    model = motion_model()
    tokens, actions = inputs(model)
    ref_logits, ref_state = unroll(model, tokens, actions)
    gpu = copy.deepcopy(model).cuda()
    logits, state = unroll(gpu, tokens.cuda(), actions.cuda())
    torch.testing.assert_close(logits.cpu(), ref_logits, rtol=1e-4, atol=1e-4)
    for k, v in ref_state.items():
        torch.testing.assert_close(state[k].cpu(), v, rtol=1e-4, atol=1e-4, msg=f"state {k}")
    assert ref_state["motion_res"].abs().sum() > 0  # the warp really moved the picture


@pytest.mark.cuda
def test_channels_last_on_cuda(exact_fp32):
    """The model keeps channels_last on CUDA (weights and the recurrent state stay in it step after step)
    and its kernels give the same answer as in the default layout."""
    model = motion_model(separable=False).cuda()
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)
    tokens, actions = inputs(model)
    logits, state = unroll(model, tokens.cuda(), actions.cuda())
    for i in range(model.cfg.num_layers):
        assert state[f"h{i}"].is_contiguous(memory_format=torch.channels_last), f"h{i} left channels_last"
    plain = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
    assert not plain.cells[0].h_cand.weight.is_contiguous(memory_format=torch.channels_last)
    ref, _ = unroll(plain, tokens.cuda(), actions.cuda())
    torch.testing.assert_close(logits, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.cuda
def test_vqvae_encode_decode_on_cuda_matches_cpu(exact_fp32):
    vq = tiny_vqvae(codebook_size=64)
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 256, (4, 6, 8, 3), dtype=np.uint8)  # [N, h, w, 3] blocks -> smooth frames
    frames = np.repeat(np.repeat(coarse, 8, axis=1), 8, axis=2)  # [N, 48, 64, 3]
    with torch.no_grad():
        idx_cpu = vq.encode(frames)
        gpu = copy.deepcopy(vq).cuda()
        idx_gpu = gpu.encode(frames)
        assert idx_gpu.device.type == "cuda"
        # a code on the edge between two nearest neighbours may flip by rounding: allow a few
        assert (idx_gpu.cpu() == idx_cpu).float().mean() >= 0.99
        rgb_cpu = vq.decode_code(idx_cpu)
        rgb_gpu = gpu.decode_code(idx_cpu.cuda())
    torch.testing.assert_close(rgb_gpu.cpu(), rgb_cpu, rtol=1e-4, atol=1e-4)
    assert np.abs(vq.to_uint8(rgb_gpu).astype(int) - vq.to_uint8(rgb_cpu)).max() <= 1


# ----------------------------------------------------------------------------- mixed-precision training

@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("cuda")
    vq_path, ident = save_tiny_vqvae(base / "vq.pt")
    return {"base": base, "vq": vq_path, "ident": ident, "data": write_shards(base / "shards", vq_path, ident)}


def trainer_on(data: dict, device: str, *args: str) -> train.Trainer:
    from lpips_loader import LPIPS
    from vq_vae import load_vqvae

    argv = ["--preset", "tiny", "--data", str(data["data"]), "--vqvae", str(data["vq"]),
            "--run-dir", str(Path(data["base"]) / "unused"), "--wandb", "disabled", "--progress", "false",
            "--device", device, "--ar-start-step", "0", *args]
    cfg = config_mod.parse_config(train.TrainConfig, argv, train.PRESETS)
    torch.manual_seed(0)
    lpips = LPIPS("alex").to(device)  # random trunk: precision paths, not scores
    return train.Trainer(cfg, load_vqvae(data["vq"]), str(data["vq"]), data["ident"], ActionEncoding(),
                         torch.device(device), lpips_net=lpips)


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("device", DEVICES)
def test_bf16_autocast_steps_stay_finite_with_the_state_in_fp32(data, device):
    trainer = trainer_on(data, device, "--amp-dtype", "bf16")
    assert trainer.amp_dtype == torch.bfloat16 and not trainer.scaler.is_enabled()
    states: list[dict[str, torch.Tensor]] = []
    real_step = trainer.model.step

    def spy(tokens, action, state):
        logits, new = real_step(tokens, action, state)
        states.append({"logits": logits, **new})
        return logits, new

    trainer.model.step = spy
    batch = batch_from_data(data, trainer.cfg.seq_len)
    before = weights(trainer.model)
    for _ in range(3):
        m = trainer.train_step(batch)
        assert m["nonfinite_skipped"] == 0.0 and np.isfinite(m["loss"]) and np.isfinite(m["lpips"])
    after = weights(trainer.model)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in after.values())
    assert states and any(s["logits"].dtype == torch.bfloat16 for s in states)  # autocast was on
    for s in states:
        for k, v in s.items():
            if k != "logits":  # the edge memory holds codes, "repeated" a mask
                want = {"edge_mem": torch.long, "repeated": torch.bool}.get(k, torch.float32)
                assert v.dtype == want, f"state {k} is {v.dtype} under bf16 autocast"


@pytest.mark.parametrize("device", DEVICES)
def test_fp16_gradscaler_steps_stay_finite_and_skip_a_nonfinite_step(data, device):
    trainer = trainer_on(data, device, "--amp-dtype", "fp16")
    assert trainer.amp_dtype == torch.float16 and trainer.scaler.is_enabled()
    batch = batch_from_data(data, trainer.cfg.seq_len)
    m = trainer.train_step(batch)
    assert np.isfinite(m["loss"]) and m["grad/scale"] > 0

    # An overflowing gradient (what fp16 gives at too large a scale): the scaler must skip the whole update
    # and lower its scale, and the step is reported as skipped.
    p = trainer.model.embed.weight
    hook = p.register_hook(lambda g: torch.full_like(g, float("inf")))
    scale, before = trainer.scaler.get_scale(), weights(trainer.model)
    m = trainer.train_step(batch)
    hook.remove()
    assert m["nonfinite_skipped"] == 1.0 and trainer.bad_streak == 1
    assert trainer.scaler.get_scale() < scale and m["grad/scale"] < scale
    after = weights(trainer.model)
    assert all(torch.equal(before[k], after[k]) for k in before), "a skipped step changed the weights"

    for _ in range(2):
        m = trainer.train_step(batch)
        assert m["nonfinite_skipped"] == 0.0 and np.isfinite(m["loss"]) and np.isfinite(m["grad/total_norm"])
    assert trainer.bad_streak == 0
    final = weights(trainer.model)
    assert any(not torch.equal(after[k], final[k]) for k in after)
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in final.values())


def test_amp_dtype_without_amp_is_a_config_error(data):
    with pytest.raises(config_mod.ConfigError, match="--amp-dtype fp16 needs --amp true"):
        trainer_on(data, "cpu", "--amp", "false", "--amp-dtype", "fp16")


def test_cuda_resolves_to_an_indexed_device(monkeypatch):
    """train.py calls torch.cuda.set_device(device), which raises on an index-less torch.device("cuda"):
    `--device cuda` once failed on every GPU."""
    import devices

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert devices.resolve_device("cuda") == torch.device("cuda:0")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert devices.resolve_device("cuda") == torch.device("cuda:1")
    assert devices.resolve_device("cuda:0") == torch.device("cuda:0")


def test_a_bf16_run_resumes_with_fp16_and_a_gradscaler(data, tmp_path):
    """A run started where bf16 exists (no scaler: its saved state is empty) resumes where only fp16 does
    (a P100), and the other way round."""
    bf16 = trainer_on(data, "cpu", "--amp-dtype", "bf16")
    batch = batch_from_data(data, bf16.cfg.seq_len)
    bf16.train_step(batch)
    rec = bf16.state_dict({"position": 0}, {})
    fp16 = trainer_on(data, "cpu", "--amp-dtype", "fp16")
    fp16.load_state_dict(rec, tmp_path / "state.pt")
    assert fp16.step == 1 and fp16.scaler.is_enabled()
    m = fp16.train_step(batch)
    assert np.isfinite(m["loss"]) and m["grad/scale"] > 0
    back = trainer_on(data, "cpu", "--amp-dtype", "bf16")
    back.load_state_dict(fp16.state_dict({"position": 0}, {}), tmp_path / "state.pt")
    assert back.step == 2 and not back.scaler.is_enabled()
