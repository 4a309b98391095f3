"""compat.py: one check for world models, VQ-VAEs, shards and this code; every form of the VQ-VAE record."""
from types import SimpleNamespace

import pytest

from actions import ACTION_SCHEMA_VERSION
from compat import THIS_CODE, IncompatibleError, Side, check_compatible, recorded_vqvae, shards_side, vqvae_side


def test_every_differing_field_is_named_with_both_files():
    shards = shards_side({"codebook_size": 32, "grid": [12, 16], "vqvae_identity": "aaa",
                          "action_schema_version": ACTION_SCHEMA_VERSION}, "data/")
    vq = vqvae_side(SimpleNamespace(codebook_size=64, grid=(18, 32)), "vq.pt", "bbb")
    with pytest.raises(IncompatibleError) as e:
        check_compatible(shards, vq)
    assert str(e.value) == ("shards data/ and VQ-VAE vq.pt do not match: codebook size 32 (shards) vs 64 (VQ-VAE); "
                            "token grid 12x16 (shards) vs 18x32 (VQ-VAE); VQ-VAE identity aaa (shards) vs bbb (VQ-VAE)")
    check_compatible(shards, THIS_CODE)  # the schema agrees; nothing else is stated by both
    with pytest.raises(IncompatibleError, match=r"world model old\.pt and this code .*action schema v99 \(world "):
        check_compatible(Side("world model", "old.pt", action_schema=99), THIS_CODE)


def test_unstated_fields_are_not_compared_but_shards_must_state_their_tokens():
    check_compatible(Side("shard", "a.npz", grid=(18, 32)), vqvae_side(SimpleNamespace(codebook_size=8, grid=(18, 32)),
                                                                        "vq.pt"))
    with pytest.raises(IncompatibleError, match=r"shards data/: meta\.json records no codebook_size, grid"):
        shards_side({"vqvae_identity": "aaa"}, "data/")


def test_recorded_vqvae_reads_checkpoint_and_shard_forms():
    assert recorded_vqvae({"vqvae": {"path": "vq.pt", "identity": "abc"}}) == ("vq.pt", "abc")  # world model
    assert recorded_vqvae({"vqvae_path": "/x/vq.pt", "vqvae_identity": "abc"}) == ("/x/vq.pt", "abc")  # meta.json
    assert recorded_vqvae({"vqvae": "old/vq.pt", "vqvae_identity": "abc"}) == ("old/vq.pt", "abc")  # older meta.json
    assert recorded_vqvae({}) == (None, None) and recorded_vqvae(None) == (None, None)
