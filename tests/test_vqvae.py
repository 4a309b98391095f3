"""vq_vae: shapes, exact hard/soft decode paths, quantiser behaviour, strict checkpoints, training, resume."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import ckpt_io
import video_io
from vq_vae import VQVAE, VQVAEConfig, load_vqvae, save_vqvae, vqvae_identity
from vq_vae import train as vq_train
from vq_vae.model import EMAQuantizer, decoder_flops

@pytest.fixture(autouse=True)
def _one_thread():
    # tiny convolutions: one thread is faster, and far faster on a busy shared machine
    torch.set_num_threads(1)


TINY = VQVAEConfig(codebook_size=64, code_dim=8, enc_channels=(8, 16, 16), enc_res_blocks=(0, 0, 1),
                   dec_channels=(16, 8, 8), dec_res_blocks=(1, 0, 0), kmeans_iters=3)


def make_frames(n: int, seed: int = 0) -> np.ndarray:
    """Block-world-like frames uint8 [n, 72, 128, 3]: sky gradient, textured ground, moving boxes."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, 72, 128, 3), np.uint8)
    tex = rng.integers(0, 40, (19, 33, 1))
    boxes = [(rng.integers(0, 128), rng.integers(10, 40), rng.integers(6, 20), rng.integers(6, 25),
              rng.integers(0, 256, 3)) for _ in range(5)]
    for t in range(n):
        f = out[t]
        f[:] = np.array([110, 170, 230], np.uint8)
        f[:, :, 2] = np.linspace(200, 250, 72).astype(np.uint8)[:, None]
        horizon = 36 + (t % 7)
        ground = np.array([70, 130, 50]) + np.kron(tex, np.ones((4, 4, 1)))[:72, :128]
        f[horizon:] = np.roll(ground, t, axis=1)[horizon:].astype(np.uint8)
        for x0, y0, w, h, c in boxes:
            x = int((x0 + 3 * t) % 128)
            f[y0:y0 + h, x:x + w] = c
    return out


def initialised(cfg: VQVAEConfig = TINY, seed: int = 0) -> VQVAE:
    """A tiny model whose codebook has been k-means initialised from frames (one training-mode pass)."""
    torch.manual_seed(seed)
    m = VQVAE(cfg)
    m.train()
    with torch.no_grad():
        m(m.preprocess(make_frames(4, seed)))
    return m.eval()


@pytest.fixture(scope="module")
def video_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("vqdata")
    video_io.write_mp4(d / "video" / "a.mp4", make_frames(24, 1), fps=16)
    video_io.write_mp4(d / "video" / "b.mp4", make_frames(24, 2), fps=16)
    return d


def test_shapes_and_input_forms():
    m = initialised()
    frames = make_frames(3)
    idx = m.encode(frames)
    assert idx.shape == (3, 18, 32) and idx.dtype == torch.int64
    assert m.grid == (18, 32) and m.codebook_size == 64 and m.code_dim == 8
    assert m.codebook.shape == (64, 8)
    as_float = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0
    assert torch.equal(m.encode(as_float), idx)
    assert torch.equal(m.encode(torch.from_numpy(frames)), idx)
    out = m.decode_code(idx)
    assert out.shape == (3, 3, 72, 128) and out.dtype == torch.float32
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    torch.testing.assert_close(m.decode_code(idx[0]), out[:1])  # conv kernels may differ per batch size
    with pytest.raises(ValueError, match="72, 128, 3"):
        m.encode(np.zeros((1, 64, 64, 3), np.uint8))
    with pytest.raises(ValueError, match="token indices"):
        m.decode_code(torch.full((1, 18, 32), 64))


def test_decode_code_of_encode_equals_decoding_quantised_latents():
    m = initialised()
    x = m.preprocess(make_frames(2))
    with torch.no_grad():
        z = m.encoder(x)
        z_q, idx, _, _ = m.quantizer(z)
        # the chosen code is the nearest one (up to fp32 near-ties), checked by brute force in fp64
        flat = z.permute(0, 2, 3, 1).reshape(-1, 8).double()  # [B*h*w, D]
        dist = torch.cdist(flat, m.codebook.double())
        chosen = dist.gather(1, idx.reshape(-1, 1)).squeeze(1)
        assert float((chosen - dist.min(1).values).max()) < 1e-4
        assert torch.equal(m.encode(make_frames(2)), idx)
        assert torch.equal(m.decode_code(m.encode(make_frames(2))), m.decode_embeddings(z_q))


def test_soft_one_hot_embeddings_decode_like_hard_path_and_carry_gradients():
    m = initialised()
    idx = m.encode(make_frames(2))
    probs = torch.nn.functional.one_hot(idx, 64).permute(0, 3, 1, 2).float().requires_grad_(True)
    z = torch.einsum("bkhw,kd->bdhw", probs, m.codebook)
    soft = m.decode_embeddings(z)
    assert torch.equal(soft, m.decode_code(idx))
    soft.mean().backward()
    assert probs.grad is not None and float(probs.grad.abs().sum()) > 0


def test_quantiser_kmeans_init_ema_and_dead_code_restart():
    torch.manual_seed(0)
    q = EMAQuantizer(16, 2, decay=0.9, dead_threshold=1.0, usage_decay=0.5, kmeans_iters=5)
    q.train()
    # four tight clusters: k-means puts codes on them
    centres = torch.tensor([[5.0, 5.0], [-5.0, 5.0], [5.0, -5.0], [-5.0, -5.0]])
    data = centres.repeat_interleave(64, 0) + 0.01 * torch.randn(256, 2)  # [256, 2]
    z = data.t().reshape(1, 2, 16, 16)  # [1, D, h, w]
    _, idx, commit, stats = q(z)
    assert bool(q.initted)
    assert float(commit) < 1e-3
    assert torch.cdist(centres, q.embed).min(1).values.max() < 0.1
    # a code moved far away attracts nothing and is restarted onto the data within a few steps
    q.embed[0] = torch.tensor([1000.0, 1000.0])
    q.embed_avg[0] = q.embed[0] * q.cluster_size[0]
    restarted = 0.0
    for _ in range(12):
        _, _, _, stats = q(z)
        restarted += stats["dead_restarts"]
    assert restarted > 0
    assert torch.cdist(q.embed[:1], centres).min() < 1.0


def test_distances_stay_fp32_under_autocast():
    torch.manual_seed(0)
    q = EMAQuantizer(512, 16)
    q.embed.copy_(torch.randn(512, 16))
    flat = torch.randn(4096, 16)
    expect = torch.cdist(flat.double(), q.embed.double()).argmin(1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = q.nearest(flat)
        # what an autocast matmul would pick: visibly wrong, so the check above has teeth
        naive = (q.embed.pow(2).sum(1)[None] - 2 * flat @ q.embed.t()).argmin(1)
    assert (got == expect).float().mean() > 0.999
    assert (naive == expect).float().mean() < 0.99


def test_checkpoint_round_trip_is_bitwise_and_strict(tmp_path):
    cfg = VQVAEConfig(**{**TINY.__dict__, "codebook_size": 48})
    m = initialised(cfg)
    path = tmp_path / "vq.pt"
    ident = save_vqvae(m, path)
    back = load_vqvae(path)
    assert not back.training and back.codebook_size == 48  # read from the file, not assumed
    for comp in ("encoder", "decoder", "quantizer"):
        a, b = getattr(m, comp).state_dict(), getattr(back, comp).state_dict()
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a)
    frames = make_frames(2)
    assert torch.equal(back.decode_code(back.encode(frames)), m.decode_code(m.encode(frames)))
    assert vqvae_identity(path) == ident
    other = tmp_path / "other.pt"
    assert save_vqvae(initialised(cfg, seed=1), other) != ident

    wrong_kind = tmp_path / "wm.pt"
    ckpt_io.save_checkpoint(wrong_kind, "world_model", 1, {"model": {}})
    with pytest.raises(ckpt_io.CheckpointError, match="wm.pt.*world_model"):
        load_vqvae(wrong_kind)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ckpt_io.CheckpointError, match="corrupt.pt"):
        load_vqvae(corrupt)
    record = torch.load(path, weights_only=False)
    del record["decoder"]["net.0.weight"]
    broken = tmp_path / "broken.pt"
    torch.save(record, broken)
    with pytest.raises(ckpt_io.CheckpointError, match="broken.pt: decoder"):
        load_vqvae(broken)


def test_laptop_decoder_is_cheap():
    # live play decodes every frame on a laptop CPU next to the world model
    assert decoder_flops(VQVAEConfig()) < 0.3e9
    assert decoder_flops(TINY) < 0.02e9


def _losses(run: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())}


def test_tiny_training_run_lowers_the_loss(video_dir, tmp_path):
    run = tmp_path / "run"
    summary = vq_train.main(["--data", str(video_dir), "--run-dir", str(run), "--preset", "tiny",
                             "--max-steps", "24", "--lr", "3e-3", "--cpu-threads", "1"])
    assert summary["step"] == 24
    losses = _losses(run)
    first = np.mean([losses[s] for s in (1, 2, 3)])
    last = np.mean([losses[s] for s in (22, 23, 24)])
    assert last < 0.85 * first, (first, last)
    for name in ("config.json", "state.pt", "vqvae.pt", "images/step_0000020.png"):
        assert (run / name).is_file(), name
    assert json.loads((run / "config.json").read_text())["codebook_size"] == 64
    model = load_vqvae(run / "vqvae.pt")
    assert model.encode(make_frames(1)).shape == (1, 18, 32)


def test_resume_continues_exactly(video_dir, tmp_path):
    common = ["--data", str(video_dir), "--preset", "tiny", "--ckpt-every", "2", "--cpu-threads", "1"]
    vq_train.main(common + ["--run-dir", str(tmp_path / "a"), "--max-steps", "4"])
    vq_train.main(common + ["--run-dir", str(tmp_path / "b"), "--max-steps", "2"])
    with pytest.raises(SystemExit):  # an existing run is not overwritten silently
        vq_train.main(common + ["--run-dir", str(tmp_path / "b"), "--max-steps", "4"])
    vq_train.main(common + ["--run-dir", str(tmp_path / "b"), "--max-steps", "4", "--resume"])
    a, b = _losses(tmp_path / "a"), _losses(tmp_path / "b")
    assert sorted(b) == [1, 2, 3, 4]
    assert a == b  # the tiny preset's learning rate is constant, so the schedule matches too
    ma, mb = load_vqvae(tmp_path / "a" / "vqvae.pt"), load_vqvae(tmp_path / "b" / "vqvae.pt")
    assert all(torch.equal(x, y) for x, y in zip(ma.state_dict().values(), mb.state_dict().values()))


FSQ = VQVAEConfig(**{**TINY.__dict__, "quantizer": "fsq", "fsq_levels": (8, 5, 5, 5)})


def test_fsq_config_derives_codebook_size_and_dim_and_keeps_the_world_model_interface():
    assert (FSQ.codebook_size, FSQ.code_dim) == (1000, 4)
    m = VQVAE(FSQ).eval()
    assert m.codebook.shape == (1000, 4) and float(m.codebook.abs().max()) == 1.0
    frames = make_frames(2)
    idx = m.encode(frames)
    assert idx.shape == (2, 18, 32) and idx.dtype == torch.int64 and 0 <= int(idx.min()) <= int(idx.max()) < 1000
    with torch.no_grad():
        z_q, idx2, _, _ = m.quantizer(m.encoder(m.preprocess(frames)))
    assert torch.equal(idx, idx2) and torch.equal(m.decode_code(idx), m.decode_embeddings(z_q))
    probs = torch.nn.functional.one_hot(idx, 1000).permute(0, 3, 1, 2).float().requires_grad_(True)
    soft = m.decode_embeddings(torch.einsum("bkhw,kd->bdhw", probs, m.codebook))
    assert torch.equal(soft, m.decode_code(idx))
    soft.mean().backward()
    assert float(probs.grad.abs().sum()) > 0
    with pytest.raises(ValueError, match="fsq_levels"):
        VQVAEConfig(quantizer="fsq", fsq_levels=(8, 1))


def test_fsq_codes_are_a_lattice_that_requantises_to_itself():
    q = VQVAE(FSQ).quantizer
    # latents whose bounded value is exactly each lattice point: inverse of bounded()
    lv = q._levels.view(1, -1, 1, 1)
    half_l = (lv - 1) * (1 + q.eps) / 2
    off = torch.where(lv % 2 == 0, 0.5, 0.0)
    codes = q.embed.t().reshape(1, 4, 25, 40)  # [K, D] -> [1, D, 25, 40]
    z = torch.atanh((codes * q._half_width.view(1, -1, 1, 1) + off) / half_l) - torch.atanh(off / half_l)
    assert torch.equal(q.indices(z).reshape(-1), torch.arange(1000))
    # any latent, however large, lands on a valid code; gradients pass straight through
    big = (torch.randn(2, 4, 3, 3) * 100).requires_grad_(True)
    z_q, idx, commit, _ = q(big)
    assert int(idx.max()) < 1000 and torch.equal(z_q.detach(), q.embed[idx].permute(0, 3, 1, 2))
    z_q.sum().backward()
    assert big.grad is not None
    # neighbours are one level apart along one axis: the 8-level axis has the smallest step
    from vq_vae.stability import codebook_separation
    assert codebook_separation(q.embed)["codebook_nn_distance"] == pytest.approx(0.25)


def test_fsq_checkpoints_are_strict_and_old_vq_checkpoints_still_load(tmp_path):
    torch.manual_seed(0)
    m = VQVAE(FSQ).eval()
    path = tmp_path / "fsq.pt"
    save_vqvae(m, path)
    back = load_vqvae(path)
    assert back.cfg.quantizer == "fsq" and back.codebook_size == 1000 and back.cfg.fsq_levels == (8, 5, 5, 5)
    frames = make_frames(2)
    assert torch.equal(back.encode(frames), m.encode(frames))
    record = torch.load(path, weights_only=False)
    record["quantizer"]["embed"][3] += 0.1
    torch.save(record, tmp_path / "tampered.pt")
    with pytest.raises(ckpt_io.CheckpointError, match="tampered.pt.*lattice"):
        load_vqvae(tmp_path / "tampered.pt")
    # a checkpoint written before the quantizer field existed is a plain VQ
    vq = initialised()
    save_vqvae(vq, tmp_path / "vq.pt")
    record = torch.load(tmp_path / "vq.pt", weights_only=False)
    for key in ("quantizer", "fsq_levels"):
        del record["config"][key]
    torch.save(record, tmp_path / "old.pt")
    old = load_vqvae(tmp_path / "old.pt")
    assert old.cfg.quantizer == "vq" and torch.equal(old.encode(frames), vq.encode(frames))


def test_tiny_fsq_training_with_consistency_losses(video_dir, tmp_path):
    run = tmp_path / "fsq"
    summary = vq_train.main(["--data", str(video_dir), "--run-dir", str(run), "--preset", "tiny",
                             "--quantizer", "fsq", "--fsq-levels", "5,3,3", "--max-steps", "6",
                             "--commitment-weight", "0.1", "--reencode-weight", "0.5", "--perturb-weight", "0.5",
                             "--consistency-frames", "2", "--cpu-threads", "1"])
    assert summary["step"] == 6
    rows = [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite([r["reencode"], r["perturb"], r["commit"]]).all() for r in rows)
    model = load_vqvae(run / "vqvae.pt")
    assert model.codebook_size == 45 and model.encode(make_frames(1)).shape == (1, 18, 32)


def test_perturbed_copy_is_a_small_shift_plus_noise():
    x = torch.rand(3, 3, 72, 128) * 2 - 1
    assert torch.equal(vq_train.perturbed(x, 0, 0.0), x)
    y = vq_train.perturbed(x, 1, 2.0, torch.Generator().manual_seed(0))
    assert y.shape == x.shape
    noisy = vq_train.perturbed(x, 0, 2.0, torch.Generator().manual_seed(0))
    assert float((noisy - x).abs().max()) <= 2.0 / 127.5 + 1e-6


def test_frame_pool_close_stops_and_joins_the_refresh_thread(video_dir):
    from vq_vae.data import FramePool, find_videos

    pool = FramePool(find_videos([video_dir]), (128, 72), capacity=8, seed=0)
    assert pool._thread is not None and pool._thread.is_alive()  # 48 frames > 8: the pool refreshes
    thread = pool._thread
    pool.close()
    assert not thread.is_alive()
    pool.close()  # idempotent


def test_cli_exits_zero_every_time_with_a_refreshing_pool(video_dir, tmp_path):
    # a decode thread left running at interpreter shutdown used to abort some runs with status 134
    import os
    import subprocess
    import sys

    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    root = Path(__file__).resolve().parents[1]
    for i in range(5):
        run = subprocess.run([sys.executable, "-m", "vq_vae.train", "--data", str(video_dir), "--run-dir",
                              str(tmp_path / f"run{i}"), "--preset", "tiny", "--max-steps", "2", "--pool-frames",
                              "8", "--lpips-weight", "0", "--cpu-threads", "1"], cwd=root, env=env, capture_output=True, text=True,
                             timeout=60)
        assert run.returncode == 0, (i, run.returncode, run.stderr[-2000:])
        assert (tmp_path / f"run{i}" / "vqvae.pt").is_file()


def test_consistency_terms_wait_for_their_start_step_and_use_the_chosen_frames():
    cfg = vq_train.VQTrainConfig(**{**TINY.__dict__, "quantizer": "fsq", "fsq_levels": (5, 3, 3),
                                    "reencode_weight": 1.0, "perturb_weight": 1.0, "consistency_start_step": 10,
                                    "consistency_frames": 2})
    torch.manual_seed(0)
    m = VQVAE(vq_train.model_config(cfg))
    x = m.preprocess(make_frames(3))
    rec, idx, _, _ = m(x)
    assert vq_train.consistency_terms(m, x, rec, idx, cfg, step=10) == (None, None)
    reenc, pert = vq_train.consistency_terms(m, x, rec, idx, cfg, step=11)
    assert reenc.ndim == 0 and pert.ndim == 0 and reenc.item() >= 0 and pert.item() >= 0
    # the re-encoding term reaches the decoder only when asked to
    reenc.backward()
    assert all(p.grad is None for p in m.decoder.parameters())


def test_dithered_forward_feeds_the_decoder_noisy_latents_within_half_a_step():
    torch.manual_seed(0)
    m = VQVAE(FSQ)
    x = m.preprocess(make_frames(2))
    rec, idx, commit, _ = m(x)
    seen = []
    hook = m.decoder.register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach()))
    rec_a, idx_a, commit_a, _ = vq_train.dithered_forward(m, x)
    rec_b, _, _, _ = vq_train.dithered_forward(m, x)
    hook.remove()
    assert torch.equal(idx_a, idx) and torch.equal(commit_a, commit)  # same codes and commitment term
    assert not torch.equal(rec_a, rec_b)  # a fresh draw each call
    zb = m.quantizer.bounded(m.encoder(x)).detach()
    half_step = 0.5 / m.quantizer._half_width.view(1, -1, 1, 1)
    offset = (seen[0] - zb).abs()
    assert (offset <= half_step + 1e-6).all() and offset.mean() > 0.2 * half_step.mean()
    # the decoder sees the latents themselves, not a copy of the rounded codes: gradients reach the encoder
    vq_train.dithered_forward(m, x)[0].square().mean().backward()
    assert all(p.grad is not None for p in m.encoder.parameters())
    with pytest.raises(SystemExit):  # only a lattice has a step to dither by
        vq_train.main(["--data", "x", "--preset", "tiny", "--fsq-dither-steps", "5"])


def test_evaluate_cli_writes_its_report_with_reconstructions_and_code_metrics(video_dir, tmp_path):
    from vq_vae import evaluate as vq_evaluate

    ckpt = tmp_path / "vqvae.pt"
    save_vqvae(initialised(), ckpt)
    report = vq_evaluate.main(["--vqvae", str(ckpt), "--data", str(video_dir), "--frames", "8",
                               "--clips-per-video", "1", "--clip-frames", "4", "--out", str(tmp_path / "eval"),
                               "--device", "cpu"])
    assert report["frames"] == 8 and np.isfinite(report["psnr_db"])
    assert {"codes/idempotence", "codes/follow_1px"} <= set(report)
    assert (tmp_path / "eval" / "report.json").is_file() and (tmp_path / "eval" / "reconstructions.png").is_file()


def test_evaluate_default_output_stays_out_of_the_shipped_checkpoints_folder(tmp_path):
    from vq_vae import evaluate as vq_evaluate

    assert vq_evaluate.default_out(tmp_path / "run" / "vqvae.pt") == tmp_path / "run" / "eval"
    shipped = vq_evaluate.SHIPPED_DIR / "blockworld_laptop" / "vqvae.pt"
    assert vq_evaluate.default_out(shipped) == Path("runs/vq_eval/blockworld_laptop")
