"""Window loader over preprocessed token shards, shared by train.py and evaluate.py.

Shards are `np.savez` files (uncompressed zip members). `np.load(..., mmap_mode="r")` silently loads
.npz members fully, so `open_shard` memory-maps each member in place instead: an uncompressed zip member is
the .npy bytes at a fixed offset, so the array is `np.memmap(file, offset=...)` and a window of L frames
reads only those L frames from disk (page cache shared across DataLoader workers and processes). A
compressed member (a shard written by something else) falls back to loading that member into memory.

`TokenWindowDataset` indexes every window of L frames that lies strictly inside one video; index i is
(file, start) with all valid starts of all files enumerated in manifest order, so uniform sampling over
indices is uniform over all valid start positions. `WindowSampler` turns it into an infinite,
deterministic stream of index batches, split across DDP ranks, with a state_dict for exact resumption.
"""
from __future__ import annotations

import json
import math
import struct
import zipfile
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from actions import DEFAULT_ENCODING, RAW_DIM, ActionEncoding

MANIFEST = "manifest.json"
META = "meta.json"
SHARD_MEMBERS = ("tokens", "actions", "frame_index")


class ShardError(ValueError):
    """A shard or manifest that is missing, unreadable or inconsistent; names the file."""


# ----------------------------------------------------------------------------- shard access

def _member_memmap(path: Path, zf: zipfile.ZipFile, name: str) -> np.ndarray:
    info = zf.getinfo(name + ".npy")
    if info.compress_type != zipfile.ZIP_STORED:
        with zf.open(info) as f:
            return np.lib.format.read_array(f, allow_pickle=False)
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)
        if local[:4] != b"PK\x03\x04":
            raise ShardError(f"{path}: bad zip local header for {name}")
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        f.seek(info.header_offset + 30 + name_len + extra_len)
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:  # a .npy version this reader does not parse: load the member instead of mapping it
            with zf.open(info) as m:
                return np.lib.format.read_array(m, allow_pickle=False)
        offset = f.tell()
    if dtype.hasobject:
        raise ShardError(f"{path}: member {name} holds Python objects")
    if math.prod(shape) == 0:
        return np.zeros(shape, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")


def open_shard(path: str | Path) -> dict[str, np.ndarray]:
    """Memory-map a shard's tokens [K, h, w], actions [K-1, 9] and frame_index [K]; ShardError if bad."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as zf:
            arrays = {m: _member_memmap(path, zf, m) for m in SHARD_MEMBERS}
    except (OSError, zipfile.BadZipFile, KeyError, ValueError) as e:
        raise ShardError(f"{path}: unreadable shard ({e})") from e
    t, a, fi = arrays["tokens"], arrays["actions"], arrays["frame_index"]
    if t.ndim != 3 or a.ndim != 2 or a.shape[1] != RAW_DIM or len(a) != len(t) - 1 or fi.shape != (len(t),):
        raise ShardError(f"{path}: inconsistent shard shapes tokens {t.shape}, actions {a.shape}, "
                         f"frame_index {fi.shape}")
    return arrays


def shard_length(path: str | Path) -> int:
    """Number of frames K in a shard, reading only its headers."""
    return int(open_shard(path)["tokens"].shape[0])


def read_meta(root: str | Path) -> dict[str, Any]:
    """The shard directory's meta.json (codebook_size, grid, fps, frame_size, action schema, VQ-VAE)."""
    path = Path(root) / META
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ShardError(f"{path}: not found; run preprocess.py first") from None
    except (OSError, json.JSONDecodeError) as e:
        raise ShardError(f"{path}: unreadable ({e})") from e


def read_manifest(root: str | Path) -> list[dict[str, Any]]:
    """The manifest entries [{file, length, source, fps, ...}] of a shard directory."""
    path = Path(root) / MANIFEST
    try:
        entries = json.loads(path.read_text())
    except FileNotFoundError:
        raise ShardError(f"{path}: not found; run preprocess.py first") from None
    except (OSError, json.JSONDecodeError) as e:
        raise ShardError(f"{path}: unreadable ({e})") from e
    if not isinstance(entries, list) or not all(isinstance(e, dict) and "file" in e and "length" in e
                                                for e in entries):
        raise ShardError(f"{path}: expected a list of {{file, length, ...}} entries")
    return entries


def split_files(root: str | Path, val_fraction: float, seed: int = 0) -> tuple[list[str], list[str]]:
    """Split the manifest's files into (train, val) by whole video, deterministically for a seed.

    At least one validation file when val_fraction > 0 and there are two or more files."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    files = sorted(e["file"] for e in read_manifest(root))
    n_val = int(round(val_fraction * len(files)))
    if val_fraction > 0 and len(files) >= 2:
        n_val = min(max(n_val, 1), len(files) - 1)
    order = np.random.default_rng(seed).permutation(len(files))
    val = sorted(files[i] for i in order[:n_val])
    train = sorted(files[i] for i in order[n_val:])
    return train, val


# ----------------------------------------------------------------------------- dataset

class TokenWindowDataset(Dataset):
    """Windows of `window` consecutive frames strictly inside one video.

    Item: dict(tokens=int64 [L, h, w], actions=float32 [L-1, 15] (model encoding), raw_actions=float32
    [L-1, 9], file=str, start=int); actions[t] is the action between frames t and t+1. `seed` is the
    default seed of `sampler()`; indexing itself is deterministic."""

    def __init__(self, root: str | Path, window: int, encoding: ActionEncoding = DEFAULT_ENCODING,
                 files: Sequence[str] | None = None, seed: int = 0) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.root = Path(root)
        self.window = int(window)
        self.encoding = encoding
        self.seed = int(seed)
        self.meta = read_meta(self.root)
        entries = read_manifest(self.root)
        if files is not None:
            known = {e["file"] for e in entries}
            unknown = sorted(set(files) - known)
            if unknown:
                raise ShardError(f"{self.root / MANIFEST}: files not in the manifest: {unknown[:5]}")
            wanted = set(files)
            entries = [e for e in entries if e["file"] in wanted]
        self.entries = [e for e in entries if int(e["length"]) >= self.window]
        self.files = [e["file"] for e in self.entries]
        counts = np.array([int(e["length"]) - self.window + 1 for e in self.entries], dtype=np.int64)
        # cum[i] = number of windows in files before i; index -> file by searchsorted.
        self._cum = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self._shards: dict[int, dict[str, np.ndarray]] = {}

    def __len__(self) -> int:
        return int(self._cum[-1])

    def __getstate__(self) -> dict[str, Any]:
        # DataLoader workers started with spawn get a pickled copy: re-map shards there instead of
        # pickling the mapped arrays' contents.
        state = dict(self.__dict__)
        state["_shards"] = {}
        return state

    def locate(self, index: int) -> tuple[int, int]:
        """Window index -> (file number, start frame)."""
        if not 0 <= index < len(self):
            raise IndexError(f"window index {index} out of range [0, {len(self)})")
        f = int(np.searchsorted(self._cum, index, side="right") - 1)
        return f, int(index - self._cum[f])

    def window_index(self, f: int, start: np.ndarray) -> np.ndarray:
        """File number f and window start frames [N] -> window indices [N] (locate's inverse)."""
        return self._cum[f] + np.asarray(start, np.int64)

    def raw_actions(self, f: int) -> np.ndarray:
        """File number f's raw actions [T-1, 9] (actions[t] between frames t and t+1)."""
        return np.asarray(self._shard(f)["actions"], np.float32)

    def _shard(self, f: int) -> dict[str, np.ndarray]:
        shard = self._shards.get(f)
        if shard is None:
            path = self.root / self.files[f]
            shard = open_shard(path)
            if len(shard["tokens"]) != int(self.entries[f]["length"]):
                raise ShardError(f"{path}: has {len(shard['tokens'])} frames, manifest says "
                                 f"{self.entries[f]['length']}")
            self._shards[f] = shard
        return shard

    def __getitem__(self, index: int) -> dict[str, Any]:
        f, start = self.locate(int(index))
        shard = self._shard(f)
        end = start + self.window
        tokens = np.asarray(shard["tokens"][start:end], dtype=np.int64)
        raw = np.array(shard["actions"][start:end - 1], dtype=np.float32)
        return {"tokens": torch.from_numpy(tokens), "actions": torch.from_numpy(self.encoding.encode(raw)),
                "raw_actions": torch.from_numpy(raw), "file": self.files[f], "start": start}

    def sampler(self, batch_size: int, seed: int | None = None, rank: int = 0,
                world_size: int = 1) -> "WindowSampler":
        return WindowSampler(self, batch_size, self.seed if seed is None else seed, rank, world_size)

    def evenly_spaced(self, n: int) -> list[int]:
        """n window indices spread evenly over the dataset (fixed evaluation sets)."""
        if len(self) == 0:
            return []
        return sorted({int(i) for i in np.linspace(0, len(self) - 1, min(n, len(self))).round()})


class WindowSampler:
    """Infinite deterministic stream of window-index batches for one DDP rank.

    Epoch e is a permutation of all windows drawn from (seed, e); rank r takes every world_size-th batch
    slot, so ranks see disjoint windows and the same number of batches (the remainder of an epoch that
    cannot fill a batch on every rank is left out of that epoch). Use as
    `DataLoader(ds, batch_sampler=sampler, num_workers=k)`.

    Resumption: the position is the number of batches this rank consumed. Without DataLoader prefetching
    `state_dict()` is exact; with workers the loader runs ahead, so save
    `state_dict(consumed=batches_the_trainer_used)` and `load_state_dict` resumes at the next unused one."""

    def __init__(self, dataset: Dataset | int, batch_size: int, seed: int = 0, rank: int = 0,
                 world_size: int = 1) -> None:
        self.num_windows = dataset if isinstance(dataset, int) else len(dataset)  # type: ignore[arg-type]
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} not in [0, {world_size})")
        self.batch_size, self.seed, self.rank, self.world_size = int(batch_size), int(seed), rank, world_size
        self.batches_per_epoch = self.num_windows // (self.batch_size * world_size)
        if self.batches_per_epoch < 1:
            raise ValueError(f"{self.num_windows} windows are fewer than one batch of {batch_size} on each "
                             f"of {world_size} ranks")
        self.position = 0
        self._perm_epoch = -1
        self._perm = np.zeros(0, dtype=np.int64)

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.num_windows)
            self._perm_epoch = epoch
        return self._perm

    def batch_at(self, position: int) -> list[int]:
        """The index batch this rank gets at `position` (batches consumed so far)."""
        epoch, b = divmod(position, self.batches_per_epoch)
        slot = b * self.world_size + self.rank
        perm = self._permutation(epoch)
        return perm[slot * self.batch_size:(slot + 1) * self.batch_size].tolist()

    def epoch_of(self, position: int | None = None) -> float:
        return (self.position if position is None else position) / self.batches_per_epoch

    def __iter__(self) -> Iterator[list[int]]:
        while True:
            batch = self.batch_at(self.position)
            self.position += 1
            yield batch

    def state_dict(self, consumed: int | None = None) -> dict[str, int]:
        return {"position": self.position if consumed is None else int(consumed), "seed": self.seed,
                "batch_size": self.batch_size, "world_size": self.world_size, "num_windows": self.num_windows}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume at a saved position. Seed, batch size and dataset must match; a different world size
        resumes at the same number of samples seen (approximately the same place in the epoch)."""
        for key in ("seed", "batch_size", "num_windows"):
            if int(state[key]) != getattr(self, key):
                raise ValueError(f"sampler state has {key}={state[key]}, this sampler has "
                                 f"{getattr(self, key)}: not the same data stream")
        position = int(state["position"])
        if int(state["world_size"]) != self.world_size:
            position = position * int(state["world_size"]) // self.world_size
        self.position = position
