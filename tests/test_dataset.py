"""dataset.py: memory-mapped shards, windows strictly inside one video, deterministic DDP-aware sampling
with exact resumption, file splits."""
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from actions import ActionEncoding
from dataset import (ShardError, TokenWindowDataset, WindowSampler, open_shard, read_meta, shard_length,
                     split_files)
from preprocess_fixtures import write_token_shards

LENGTHS = [12, 5, 9, 3, 20]


@pytest.fixture()
def shards(tmp_path):
    return tmp_path, write_token_shards(tmp_path, LENGTHS)


def test_open_shard_is_memory_mapped_and_exact(shards):
    root, files = shards
    arrays = open_shard(root / files[0]["file"])
    assert isinstance(arrays["tokens"], np.memmap) and isinstance(arrays["actions"], np.memmap)
    with np.load(root / files[0]["file"]) as z:
        for key in ("tokens", "actions", "frame_index"):
            np.testing.assert_array_equal(arrays[key], z[key])
            assert arrays[key].dtype == z[key].dtype
    assert shard_length(root / files[4]["file"]) == 20
    assert read_meta(root)["grid"] == [3, 4]


def test_compressed_and_broken_shards(tmp_path, shards):
    root, files = shards
    src = files[0]
    np.savez_compressed(tmp_path / "c.npz", tokens=src["tokens"], actions=src["actions"],
                        frame_index=src["frame_index"])
    np.testing.assert_array_equal(open_shard(tmp_path / "c.npz")["tokens"], src["tokens"])
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(ShardError, match="bad.npz"):
        open_shard(tmp_path / "bad.npz")
    np.savez(tmp_path / "short.npz", tokens=src["tokens"], actions=src["actions"][:-1],
             frame_index=src["frame_index"])
    with pytest.raises(ShardError, match="inconsistent"):
        open_shard(tmp_path / "short.npz")


def test_windows_stay_inside_one_video_and_cover_all_starts(shards):
    root, files = shards
    L = 4
    ds = TokenWindowDataset(root, L)
    assert len(ds) == sum(k - L + 1 for k in LENGTHS if k >= L)
    assert "vid03.npz" not in ds.files  # shorter than the window
    seen = set()
    by_name = {f["file"]: f for f in files}
    enc = ActionEncoding()
    for i in range(len(ds)):
        item = ds[i]
        f = by_name[item["file"]]
        s = item["start"]
        assert 0 <= s and s + L <= len(f["tokens"])
        assert item["tokens"].dtype == torch.int64 and item["tokens"].shape == (L, 3, 4)
        np.testing.assert_array_equal(item["tokens"].numpy(), f["tokens"][s:s + L])
        np.testing.assert_array_equal(item["raw_actions"].numpy(), f["actions"][s:s + L - 1])
        np.testing.assert_array_equal(item["actions"].numpy(), enc.encode(f["actions"][s:s + L - 1]))
        assert item["actions"].shape == (L - 1, 15)
        seen.add((item["file"], s))
    assert len(seen) == len(ds)
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_files_subset_and_split(shards):
    root, _ = shards
    train, val = split_files(root, 0.4, seed=3)
    assert (train, val) == split_files(root, 0.4, seed=3)
    assert set(train).isdisjoint(val) and len(val) == 2 and sorted(train + val) == sorted(f"vid{i:02d}.npz" for i in range(5))
    assert split_files(root, 0.4, seed=4) != (train, val) or split_files(root, 0.4, seed=5) != (train, val)
    ds = TokenWindowDataset(root, 2, files=val)
    assert set(ds.files) == set(val)
    with pytest.raises(ShardError, match="not in the manifest"):
        TokenWindowDataset(root, 2, files=["nope.npz"])


def test_sampler_epochs_are_permutations_and_ranks_disjoint(shards):
    root, _ = shards
    ds = TokenWindowDataset(root, 3)  # 10 + 3 + 7 + 1 + 18 = 39 windows
    assert len(ds) == 39
    one = WindowSampler(ds, batch_size=3, seed=7)
    it = iter(one)
    epoch = [i for _ in range(one.batches_per_epoch) for i in next(it)]
    assert sorted(epoch) == list(range(39))  # uniform: every start exactly once per epoch
    ranks = [WindowSampler(ds, batch_size=4, seed=7, rank=r, world_size=2) for r in range(2)]
    assert ranks[0].batches_per_epoch == ranks[1].batches_per_epoch == 4
    got = [[i for b in range(4) for i in r.batch_at(b)] for r in ranks]
    assert set(got[0]).isdisjoint(got[1]) and len(set(got[0]) | set(got[1])) == 32
    # deterministic for a seed, different across seeds and epochs
    assert WindowSampler(ds, 3, seed=7).batch_at(5) == one.batch_at(5)
    assert WindowSampler(ds, 3, seed=8).batch_at(0) != one.batch_at(0)
    assert one.batch_at(0) != one.batch_at(one.batches_per_epoch)
    with pytest.raises(ValueError, match="fewer than one batch"):
        WindowSampler(ds, batch_size=40)


def test_sampler_resumes_exactly_with_dataloader_workers(shards):
    root, _ = shards
    ds = TokenWindowDataset(root, 3)

    def stream(sampler, n):
        loader = DataLoader(ds, batch_sampler=sampler, num_workers=2)
        out = []
        for batch in loader:
            out.append(list(zip(batch["file"], batch["start"].tolist())))
            if len(out) == n:
                break
        return out

    full = stream(WindowSampler(ds, 4, seed=1), 14)
    first = WindowSampler(ds, 4, seed=1)
    head = stream(first, 6)
    state = first.state_dict(consumed=6)  # the loader prefetched beyond 6; the trainer used 6
    assert first.state_dict()["position"] > 6
    resumed = WindowSampler(ds, 4, seed=1)
    resumed.load_state_dict(state)
    assert head + stream(resumed, 8) == full
    with pytest.raises(ValueError, match="seed"):
        WindowSampler(ds, 4, seed=2).load_state_dict(state)


def test_pickled_dataset_does_not_carry_mapped_shards(shards):
    import pickle

    root, _ = shards
    ds = TokenWindowDataset(root, 3)
    first = ds[0]
    blob = pickle.dumps(ds)
    assert len(blob) < 4000  # no shard contents inside
    again = pickle.loads(blob)[0]
    assert all(torch.equal(first[k], again[k]) for k in ("tokens", "actions", "raw_actions"))
