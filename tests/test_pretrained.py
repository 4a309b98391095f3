"""The shipped block-world model (checkpoints/blockworld_laptop): its files load, belong together and draw a
moving picture; the scripts fall back to it without --model; `make play` without a display says what to do;
a recorded VQ-VAE path holding another tokenizer is passed over for the one beside the checkpoint."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import rollout
from actions import make_raw

ROOT = Path(__file__).resolve().parent.parent
SHIP = rollout.SHIPPED_MODEL.parent


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def test_shipped_files_load_match_and_draw_a_turning_picture(capsys):
    assert {"world_model.pt", "vqvae.pt", "card.md"} <= {p.name for p in SHIP.iterdir()}
    assert sum(p.stat().st_size for p in SHIP.iterdir()) <= 25 * 2 ** 20
    bundle = rollout.load_bundle(rollout.model_or_shipped(""), device="cpu")
    assert "using the shipped block-world model" in capsys.readouterr().err
    assert bundle.vqvae_identity == rollout.recorded_vqvae(bundle.meta)[1]  # the tokenizer it was trained with
    from contexts import load_context

    ctx = load_context("blockworld:7", bundle, 8)
    ro = rollout.Rollout(bundle)
    ro.warmup(ctx.tokens, ctx.actions)
    first = ro.frame()
    assert first.shape == (*bundle.frame_size[::-1], 3) and first.std() > 5  # a picture, not a flat field
    for _ in range(6):
        ro.next(make_raw(yaw_deg=6.0))
    turned = ro.frame()
    # Turning right moves the picture: a shipped model that ignored the mouse would draw the same frame.
    assert np.abs(turned.astype(np.float32) - first.astype(np.float32)).mean() > 3.0
    card = (SHIP / "card.md").read_text()
    for needed in ("train.py", "blockworld.generate", "PSNR@16", "yaw", "Known weaknesses"):
        assert needed in card, needed


def test_play_without_a_display_suggests_headless():
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    r = subprocess.run([sys.executable, "live_inference.py", "--context", "blockworld:7"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--headless" in r.stderr and "Traceback" not in r.stderr


def test_recorded_vqvae_path_with_another_tokenizer_is_passed_over(tmp_path):
    """A model moved beside its tokenizer, on a machine whose recorded path holds another run's tokenizer."""
    from vq_vae import load_vqvae, save_vqvae
    from world_model_io import load_world_model, save_world_model

    model, meta = load_world_model(rollout.SHIPPED_MODEL)
    recorded, ident = rollout.recorded_vqvae(meta)
    moved = tmp_path / "moved"
    moved.mkdir()
    shutil.copy(SHIP / "vqvae.pt", moved / "vqvae.pt")
    other = tmp_path / "elsewhere" / "vqvae.pt"
    other.parent.mkdir()
    vq = load_vqvae(SHIP / "vqvae.pt")
    with torch.no_grad():
        next(vq.parameters()).add_(1.0)  # another tokenizer: same shape, other weights
    save_vqvae(vq, other)
    save_world_model(moved / "world_model.pt", model, rollout.ActionEncoding.from_dict(meta["encoding"])
                     if isinstance(meta["encoding"], dict) else meta["encoding"], str(other), ident,
                     meta["train_config"], step=int(meta.get("step", 0)))
    bundle = rollout.load_bundle(moved / "world_model.pt", device="cpu")
    assert bundle.vqvae_path == moved / "vqvae.pt" and bundle.vqvae_identity == ident
