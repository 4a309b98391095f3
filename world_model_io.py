"""Weights-only world-model checkpoints: the file inference, live play and evaluation load.

A `kind="world_model"` checkpoint (ckpt_io.save_checkpoint: atomic, kind, format and action-schema
versions) holds `model_config` (WorldModelConfig as a dict), `model` (state_dict), `encoding`
(ActionEncoding.to_dict()), `vqvae` {"path", "identity"} (the tokenizer whose tokens it was trained on),
`train_config` (the resolved training config), `step`, and optionally `train_files` (the shard files it
trained on, so evaluation can hold out the others whatever path the data is reached by). Training state (optimizer, RNG, sampler...) lives
in separate files written by train.py; this file never needs them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

import ckpt_io
from actions import ActionEncoding
from model_convGru import WorldModel, WorldModelConfig

WORLD_MODEL_KIND = "world_model"
WORLD_MODEL_FORMAT_VERSION = 1
REQUIRED_KEYS = ("model_config", "model", "encoding", "vqvae", "train_config", "step")


def export_payload(model: WorldModel, encoding: ActionEncoding, vqvae_path: str, vqvae_identity: str,
                   train_config: Mapping[str, Any], step: int,
                   train_files: Sequence[str] | None = None) -> dict[str, Any]:
    """The dict a world_model checkpoint stores (CPU tensors)."""
    payload = {"model_config": model.cfg.to_dict(),
               "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
               "encoding": encoding.to_dict(),
               "vqvae": {"path": str(vqvae_path), "identity": str(vqvae_identity)},
               "train_config": dict(train_config), "step": int(step)}
    if train_files is not None:
        payload["train_files"] = sorted(str(f) for f in train_files)
    return payload


def save_world_model(path: str | Path, model: WorldModel, encoding: ActionEncoding, vqvae_path: str,
                     vqvae_identity: str, train_config: Mapping[str, Any], step: int,
                     train_files: Sequence[str] | None = None) -> None:
    """Write a weights-only world-model checkpoint atomically."""
    ckpt_io.save_checkpoint(path, WORLD_MODEL_KIND, WORLD_MODEL_FORMAT_VERSION,
                            export_payload(model, encoding, vqvae_path, vqvae_identity, train_config, step,
                                           train_files))


def model_from_record(record: Mapping[str, Any], path: str | Path) -> WorldModel:
    """Rebuild the model from a checkpoint record strictly; every problem names `path`."""
    missing = [k for k in REQUIRED_KEYS if k not in record]
    if missing:
        raise ckpt_io.CheckpointError(f"{path}: world_model checkpoint lacks {missing}")
    try:
        cfg = WorldModelConfig.from_dict(record["model_config"])
    except (TypeError, ValueError) as e:
        raise ckpt_io.CheckpointError(f"{path}: bad model_config ({e})") from e
    model = WorldModel(cfg)
    try:
        model.load_state_dict(record["model"], strict=True)
    except RuntimeError as e:
        raise ckpt_io.CheckpointError(f"{path}: weights do not fit the stored model_config: {e}") from e
    return model


def load_world_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[WorldModel, dict[str, Any]]:
    """(model in eval mode on `device`, meta). meta: encoding (ActionEncoding), vqvae {"path", "identity"}
    (read it with compat.recorded_vqvae), model_config, train_config, step, action_schema_version, path, and
    train_files (None for checkpoints that do not record them)."""
    record = ckpt_io.load_checkpoint(path, WORLD_MODEL_KIND, WORLD_MODEL_FORMAT_VERSION, map_location="cpu")
    model = model_from_record(record, path)
    try:
        encoding = ActionEncoding.from_dict(record["encoding"])
    except (KeyError, TypeError, ValueError) as e:
        raise ckpt_io.CheckpointError(f"{path}: bad action encoding ({e})") from e
    vq = record["vqvae"]
    if not isinstance(vq, Mapping) or "path" not in vq or "identity" not in vq:
        raise ckpt_io.CheckpointError(f"{path}: 'vqvae' must record its path and identity")
    meta = {"encoding": encoding, "vqvae": {"path": str(vq["path"]), "identity": str(vq["identity"])},
            "model_config": dict(record["model_config"]), "train_config": dict(record["train_config"]),
            "step": int(record["step"]), "action_schema_version": record["action_schema_version"],
            "path": str(path),
            "train_files": list(record["train_files"]) if record.get("train_files") is not None else None}
    return model.to(device).eval(), meta
