"""Atomic file writes and self-describing checkpoints.

Every file Ochre writes goes to a temporary sibling first and is renamed into place, so an interrupted job
never leaves a half-written file behind. Checkpoints are dicts saved with torch.save that carry their
`kind` (e.g. "vqvae", "world_model", "train_state"), a format version, the action schema version and
whatever identity the caller adds (config, VQ-VAE hash); `load_checkpoint` checks them strictly and names
the file in every error.

Loading never runs code from the file: checkpoints are read with `torch.load(weights_only=True)`, so they
may hold only tensors and plain Python values (dicts, lists, tuples, str, numbers, None). RNG states are
stored in that form (`numpy_rng_state`); a file whose pickle names anything else (os.system, a class) is
refused with one CheckpointError before any of it is run.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import pickle
import tempfile
import zipfile
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
    record = _safe_load(path, map_location)
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


def _legacy_numpy_globals() -> list[Any]:
    """What an older train state's numpy RNG tuple (np.random.get_state(): a uint32 ndarray) needs to
    unpickle: array reconstruction and dtype classes only, under both numpy 1 and 2 module names. These
    build arrays from data; they call nothing named by the file."""
    import numpy as np
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy 1
        from numpy.core.multiarray import _reconstruct

    return [np.ndarray, np.dtype, type(np.dtype(np.uint32)),
            (_reconstruct, "numpy._core.multiarray._reconstruct"),
            (_reconstruct, "numpy.core.multiarray._reconstruct")]


_LEGACY_NUMPY_NAMES = frozenset({"numpy.ndarray", "numpy.dtype", "numpy.dtypes.UInt32DType",
                                 "numpy._core.multiarray._reconstruct", "numpy.core.multiarray._reconstruct"})


def _safe_load(path: Path, map_location: Any) -> Any:
    """torch.load with weights_only=True: tensors and plain values only, nothing in the file is called.
    A file that needs more is refused, except an older train state's numpy RNG arrays (_LEGACY_NUMPY_NAMES),
    which load with just those array types allowed."""
    import torch

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        refused = e
    except Exception as e:  # torch raises many types for a corrupt or foreign file
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})") from e
    if zipfile.is_zipfile(path):  # torch.save's format: list the globals its pickle names, running none
        try:
            names = sorted(torch.serialization.get_unsafe_globals_in_checkpoint(path))
        except Exception as e:
            raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})") from e
    else:
        names = _raw_pickle_objects(path)
        if names is None:
            raise CheckpointError(f"{path}: not a readable checkpoint (neither a torch checkpoint nor a "
                                  f"pickle)") from refused
    if names and set(names) <= _LEGACY_NUMPY_NAMES:
        try:
            with torch.serialization.safe_globals(_legacy_numpy_globals()):
                return torch.load(path, map_location=map_location, weights_only=True)
        except Exception as e:
            raise CheckpointError(f"{path}: written by an older version of Ochre (it holds numpy arrays) "
                                  f"and cannot be read safely ({type(e).__name__}); start a fresh run or "
                                  f"re-save it with this version") from e
    what = f" ({', '.join(names)})" if names else ""
    raise CheckpointError(f"{path}: contains code or objects that are not allowed in a checkpoint{what}; "
                          f"refused to load it and ran none of it") from refused


_OBJECT_OPS = frozenset({"GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "REDUCE", "NEWOBJ", "NEWOBJ_EX", "BUILD"})


def _raw_pickle_objects(path: Path) -> list[str] | None:
    """For a file that is not a torch zip: the globals its first pickle names (else any object-building
    opcodes it uses), read with pickletools without running anything; None when it is not a pickle or
    holds only plain values (then torch refused it for another reason)."""
    import pickletools

    found: list[str] = []
    ops: set[str] = set()
    strings: list[str] = []
    try:
        with open(path, "rb") as f:
            for op, arg, _ in pickletools.genops(f):
                if isinstance(arg, str):
                    strings.append(arg)
                if op.name == "GLOBAL":
                    found.append(str(arg).replace(" ", "."))
                elif op.name == "STACK_GLOBAL":  # module and name were the last two strings pushed
                    found.append(".".join(strings[-2:]))
                elif op.name in _OBJECT_OPS:
                    ops.add(op.name)
    except Exception:  # not a pickle (or a truncated one)
        return None
    return sorted(set(found)) or sorted(ops) or None


def numpy_rng_state() -> dict[str, Any]:
    """numpy's global RNG state in plain values (a weights_only checkpoint holds no ndarrays)."""
    import numpy as np

    st = np.random.get_state(legacy=False)
    return {"bit_generator": st["bit_generator"], "key": [int(k) for k in st["state"]["key"]],
            "pos": int(st["state"]["pos"]), "has_gauss": int(st["has_gauss"]), "gauss": float(st["gauss"])}


def set_numpy_rng_state(state: Any) -> None:
    """Restore numpy's global RNG from numpy_rng_state(), or from an older checkpoint's get_state() tuple."""
    import numpy as np

    if isinstance(state, dict):
        state = (state["bit_generator"], np.asarray(state["key"], dtype=np.uint32), state["pos"],
                 state["has_gauss"], state["gauss"])
    np.random.set_state(state)
