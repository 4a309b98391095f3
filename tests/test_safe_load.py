"""Loading a checkpoint never runs code from it (ckpt_io loads with weights_only=True).

A payload checkpoint (a pickle whose __reduce__ calls os.system) is refused by every checkpoint loader with
one CheckpointError that names the file, and its command never runs; RNG states round-trip in plain form,
and older train states holding numpy RNG arrays still load."""
from __future__ import annotations

import os
import pickle
import random
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch

import ckpt_io

REPO = Path(__file__).resolve().parents[1]


class _Payload:
    """Unpickling this runs `touch marker` (what a crafted checkpoint would do with a worse command)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def _write_payload(path: Path, kind: str, fmt: int, marker: Path, raw_pickle: bool = False) -> Path:
    """A checkpoint with a valid-looking header whose weights entry is the payload."""
    from actions import ACTION_SCHEMA_VERSION

    record = {"kind": kind, "format_version": fmt, "action_schema_version": ACTION_SCHEMA_VERSION,
              "model": _Payload(marker)}
    if raw_pickle:  # not a torch zip file: the legacy path of torch.load
        path.write_bytes(pickle.dumps(record, protocol=2))
    else:
        torch.save(record, path)
    return path


def _loaders() -> dict[str, tuple[str, int, Callable[[Path], Any]]]:
    import idm_judge
    import train
    import vq_vae
    import world_model_io

    return {
        "world_model": (world_model_io.WORLD_MODEL_KIND, world_model_io.WORLD_MODEL_FORMAT_VERSION,
                        world_model_io.load_world_model),
        "vqvae": (vq_vae.VQVAE_KIND, vq_vae.VQVAE_FORMAT_VERSION, vq_vae.load_vqvae),
        "train_state": (train.TRAIN_STATE_KIND, train.TRAIN_STATE_FORMAT_VERSION,
                        lambda p: ckpt_io.load_checkpoint(p, train.TRAIN_STATE_KIND,
                                                          train.TRAIN_STATE_FORMAT_VERSION)),
        "judge": (idm_judge.JUDGE_KIND, idm_judge.JUDGE_FORMAT_VERSION, idm_judge.load_judge),
    }


def test_payload_is_live(tmp_path: Path) -> None:
    """The payload used below really runs its command under a plain (unsafe) unpickle."""
    marker = tmp_path / "ran"
    path = _write_payload(tmp_path / "world_model.pt", "world_model", 1, marker)
    torch.load(path, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("raw_pickle", [False, True], ids=["torch_zip", "raw_pickle"])
@pytest.mark.parametrize("which", ["world_model", "vqvae", "train_state", "judge"])
def test_payload_checkpoint_is_refused_without_running(tmp_path: Path, which: str, raw_pickle: bool) -> None:
    kind, fmt, load = _loaders()[which]
    marker = tmp_path / "marker"
    path = _write_payload(tmp_path / f"{which}.pt", kind, fmt, marker, raw_pickle)
    with pytest.raises(ckpt_io.CheckpointError) as info:
        load(path)
    msg = str(info.value)
    assert str(path) in msg and "not allowed" in msg and "\n" not in msg
    if not raw_pickle:  # the zip format lets the loader list what the pickle would call
        assert "system" in msg
    assert not marker.exists()


def test_script_reports_payload_as_one_error_line(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    path = _write_payload(tmp_path / "world_model.pt", "world_model", 1, marker)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "inference.py", "--model", str(path), "--context", "blockworld:0",
                           "--out", str(tmp_path / "out.mp4")], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "not allowed" in lines[0], proc.stderr
    assert str(path) in lines[0]
    assert not marker.exists()


def test_rng_states_round_trip_in_plain_form(tmp_path: Path) -> None:
    random.seed(3)
    np.random.seed(4)
    np.random.standard_normal()  # leaves a cached gaussian in the state
    rng = {"python": random.getstate(), "numpy": ckpt_io.numpy_rng_state(), "torch": torch.get_rng_state()}
    want = (random.random(), np.random.standard_normal(3).tolist(), np.random.randint(0, 1 << 30, 3).tolist())
    path = tmp_path / "state.pt"
    ckpt_io.save_checkpoint(path, "train_state", 1, {"rng": rng})
    assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == []
    back = ckpt_io.load_checkpoint(path, "train_state", 1)["rng"]
    random.setstate(back["python"])
    ckpt_io.set_numpy_rng_state(back["numpy"])
    got = (random.random(), np.random.standard_normal(3).tolist(), np.random.randint(0, 1 << 30, 3).tolist())
    assert got == want


def test_older_numpy_rng_tuple_still_loads(tmp_path: Path) -> None:
    """Train states written before the plain form hold np.random.get_state()'s tuple with a uint32 array."""
    np.random.seed(5)
    path = tmp_path / "old_state.pt"
    ckpt_io.save_checkpoint(path, "train_state", 1, {"rng": {"numpy": np.random.get_state()}})
    want = np.random.random(4).tolist()
    back = ckpt_io.load_checkpoint(path, "train_state", 1)["rng"]["numpy"]
    ckpt_io.set_numpy_rng_state(back)
    assert np.random.random(4).tolist() == want


def test_numpy_arrays_do_not_open_the_door_to_code(tmp_path: Path) -> None:
    """A file that mixes the older numpy RNG types with a payload is still refused as a whole."""
    marker = tmp_path / "marker"
    record = {"kind": "train_state", "format_version": 1, "rng": np.random.get_state(),
              "model": _Payload(marker)}
    path = tmp_path / "mixed.pt"
    torch.save(record, path)
    with pytest.raises(ckpt_io.CheckpointError, match="not allowed"):
        ckpt_io.load_checkpoint(path, "train_state", 1)
    assert not marker.exists()
