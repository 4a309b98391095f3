"""Tokenizer checkpoints: one format, one loader for every script.

A `kind="vqvae"` checkpoint (ckpt_io.save_checkpoint: atomic, with kind and format version) holds the
encoder, decoder and quantiser state dicts separately, the `VQVAEConfig` they were built with, and the
tokenizer's identity hash. `load_vqvae` rebuilds the model from the stored config (codebook size, grid and
code dimension come from the file, never from defaults) and loads each component strictly: a missing or
unexpected key is an error naming the file and the component, never a half-loaded model that decodes noise.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

import ckpt_io
import config as config_mod
from vq_vae.model import VQVAE, EMAQuantizer, FSQuantizer, VQVAEConfig

VQVAE_KIND = "vqvae"
VQVAE_FORMAT_VERSION = 1
COMPONENTS = ("encoder", "decoder", "quantizer")

_IDENTITY_CACHE: dict[tuple[str, int, int], str] = {}


def _identity(cfg_dict: dict[str, Any], states: dict[str, dict[str, torch.Tensor]]) -> str:
    """12 hex digits of sha256 over the config and every tensor's bytes, in a fixed order: equal weights
    give equal identities whatever file they sit in."""
    h = hashlib.sha256(json.dumps(cfg_dict, sort_keys=True).encode())
    for comp in COMPONENTS:
        for key in sorted(states[comp]):
            t = states[comp][key].detach().cpu().contiguous()
            h.update(f"{comp}.{key}:{t.dtype}:{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")  # raw bytes [n]
    return h.hexdigest()[:12]


def vqvae_payload(model: VQVAE) -> dict[str, Any]:
    """The component-wise dict that a vqvae checkpoint stores (also embedded in training state)."""
    states = {comp: {k: v.detach().cpu().clone() for k, v in getattr(model, comp).state_dict().items()}
              for comp in COMPONENTS}
    cfg = config_mod.to_dict(model.cfg)
    return {"config": cfg, **states, "identity": _identity(cfg, states)}


def save_vqvae(model: VQVAE, path: str | Path, extra: dict[str, Any] | None = None) -> str:
    """Write a weights-only tokenizer checkpoint atomically; returns its identity. `extra` (e.g. the training
    config and step) is stored under "extra" for provenance."""
    payload = vqvae_payload(model)
    payload["extra"] = extra or {}
    ckpt_io.save_checkpoint(path, VQVAE_KIND, VQVAE_FORMAT_VERSION, payload)
    return payload["identity"]


def model_from_payload(payload: dict[str, Any], path: str | Path) -> VQVAE:
    """Rebuild a VQVAE from a stored payload, strictly; errors name `path`."""
    for key in ("config", *COMPONENTS):
        if key not in payload:
            raise ckpt_io.CheckpointError(f"{path}: vqvae checkpoint lacks its {key!r} entry")
    try:
        cfg = config_mod.from_dict(VQVAEConfig, payload["config"], strict=True)
    except (config_mod.ConfigError, TypeError, ValueError) as e:
        raise ckpt_io.CheckpointError(f"{path}: bad vqvae config ({e})") from e
    model = VQVAE(cfg)
    for comp in COMPONENTS:
        try:
            getattr(model, comp).load_state_dict(payload[comp], strict=True)
        except RuntimeError as e:
            raise ckpt_io.CheckpointError(f"{path}: {comp} weights do not fit the stored config: {e}") from e
    q = model.quantizer
    if isinstance(q, EMAQuantizer) and not bool(q.initted):
        raise ckpt_io.CheckpointError(f"{path}: the codebook was never initialised (untrained tokenizer)")
    if isinstance(q, FSQuantizer) and not torch.equal(q.embed, q.codes_of(torch.arange(q.codebook_size))):
        raise ckpt_io.CheckpointError(f"{path}: the stored FSQ codebook is not the lattice of {q.levels}")
    return model


def load_vqvae(path: str | Path, device: str | torch.device = "cpu") -> VQVAE:
    """The tokenizer stored at `path`, on `device`, in eval mode. Raises ckpt_io.CheckpointError naming the
    file for a missing, corrupt, wrong-kind or mismatched checkpoint."""
    record = ckpt_io.load_checkpoint(path, VQVAE_KIND, VQVAE_FORMAT_VERSION, map_location="cpu")
    model = model_from_payload(record, path)
    return model.to(device).eval()


def vqvae_identity(path: str | Path) -> str:
    """Short content hash of the tokenizer at `path` (recomputed from the weights, cached per file state);
    shards and world-model checkpoints store it to detect a tokenizer swap."""
    if not Path(path).is_file():
        raise ckpt_io.CheckpointError(f"{path}: checkpoint not found")
    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_mtime_ns, st.st_size)
    if key not in _IDENTITY_CACHE:
        record = ckpt_io.load_checkpoint(path, VQVAE_KIND, VQVAE_FORMAT_VERSION, map_location="cpu")
        for comp in ("config", *COMPONENTS):
            if comp not in record:
                raise ckpt_io.CheckpointError(f"{path}: vqvae checkpoint lacks its {comp!r} entry")
        _IDENTITY_CACHE[key] = _identity(record["config"], {c: record[c] for c in COMPONENTS})
    return _IDENTITY_CACHE[key]
