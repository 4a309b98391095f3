"""Atomic file writes and self-describing checkpoints.

Every file Ochre writes goes to a temporary sibling first and is renamed into place, so an interrupted job
never leaves a half-written file behind. Checkpoints are dicts saved with torch.save that carry their
`kind` (e.g. "vqvae", "world_model", "train_state"), a format version, the action schema version and
whatever identity the caller adds (config, VQ-VAE hash); `load_checkpoint` checks them strictly and names
the file in every error.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

from actions import ACTION_SCHEMA_VERSION


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable or incompatible."""


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success rename it onto `path`, on failure delete it.

    `suffix` keeps an extension that writers key on (e.g. ".mp4" for PyAV's container guess)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or ".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates the file owner-only; give it the mode a plain open() would have.
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def json_safe(obj: Any) -> Any:
    """Strict JSON values, recursively: NaN/inf -> None, numpy scalars and arrays -> plain numbers and lists,
    dict keys -> strings, tuples -> lists."""
    import numpy as np

    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def atomic_save(path: str | Path, save_fn: Callable[[Path], None], suffix: str | None = None) -> None:
    """Call save_fn(tmp_path) and move the result onto `path` atomically."""
    with atomic_path(path, suffix) as tmp:
        save_fn(tmp)


def file_sha256(path: str | Path, limit: int | None = None) -> str:
    """Hex sha256 of a file (first `limit` bytes if given)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        remaining = limit
        while True:
            chunk = f.read(1 << 20 if remaining is None else min(1 << 20, remaining))
            if not chunk:
                break
            h.update(chunk)
            if remaining is not None:
                remaining -= len(chunk)
                if remaining <= 0:
                    break
    return h.hexdigest()


def save_checkpoint(path: str | Path, kind: str, format_version: int, payload: dict[str, Any]) -> None:
    """torch.save `payload` plus its identity (kind, format and action schema versions), atomically."""
    import torch

    record = dict(payload)
    record.update(kind=kind, format_version=format_version, action_schema_version=ACTION_SCHEMA_VERSION)
    atomic_save(path, lambda tmp: torch.save(record, tmp))


def load_checkpoint(path: str | Path, kind: str, format_version: int,
                    map_location: Any = "cpu") -> dict[str, Any]:
    """Load and check a checkpoint written by save_checkpoint; every problem names the file."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        record = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # torch raises many types for a corrupt or foreign file
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(record, dict) or "kind" not in record:
        raise CheckpointError(f"{path}: not an Ochre checkpoint (no 'kind' field)")
    if record["kind"] != kind:
        raise CheckpointError(f"{path}: is a {record['kind']!r} checkpoint, expected {kind!r}")
    if record.get("format_version") != format_version:
        raise CheckpointError(f"{path}: {kind} format version {record.get('format_version')} is not "
                              f"supported (this code reads version {format_version})")
    if record.get("action_schema_version") != ACTION_SCHEMA_VERSION:
        raise CheckpointError(f"{path}: action schema version {record.get('action_schema_version')} "
                              f"differs from this code's {ACTION_SCHEMA_VERSION}")
    return record
