"""One compatibility check: do a world model, a VQ-VAE, token shards and this code fit together?

Each party is a `Side`: what it says about the tokens and actions it makes or expects (None where it says
nothing). `check_compatible(a, b)` compares two sides field by field and raises one `IncompatibleError`
that names both files and every field on which they differ, e.g.

    shards data/ and VQ-VAE vq.pt do not match: codebook size 32 (shards) vs 64 (VQ-VAE)

Where the records live: a world-model checkpoint records its VQ-VAE as {"vqvae": {"path", "identity"}}
(world_model_io.py); a shard folder's meta.json as flat "vqvae_path"/"vqvae_identity" (older ones as
"vqvae": PATH). `recorded_vqvae` reads every form.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

from actions import ACTION_SCHEMA_VERSION, ENC_DIM


class IncompatibleError(ValueError):
    """A world model, VQ-VAE, token shards or context that cannot be used together; the message names the
    files."""


@dataclass(frozen=True)
class Side:
    """What one party says about the tokens and actions it makes or expects; None where it says nothing."""

    what: str
    """The kind of party: "world model", "VQ-VAE", "shards", "this code"..."""
    path: str | None = None
    """The file or folder it comes from (None for this code)."""
    codebook_size: int | None = None
    grid: tuple[int, int] | None = None
    vqvae_identity: str | None = None
    action_schema: int | None = None
    action_dim: int | None = None

    @property
    def name(self) -> str:
        return f"{self.what} {self.path}" if self.path else self.what


_LABELS = {"codebook_size": "codebook size", "grid": "token grid", "vqvae_identity": "VQ-VAE identity",
           "action_schema": "action schema", "action_dim": "action width"}
THIS_CODE = Side("this code", action_schema=ACTION_SCHEMA_VERSION, action_dim=ENC_DIM)


def _show(key: str, value: Any) -> str:
    if key == "grid":
        return f"{value[0]}x{value[1]}"
    return f"v{value}" if key == "action_schema" else str(value)


def check_compatible(a: Side, b: Side) -> None:
    """Raise IncompatibleError naming both sides if any field both of them state differs."""
    problems = [f"{_LABELS[f.name]} {_show(f.name, va)} ({a.what}) vs {_show(f.name, vb)} ({b.what})"
                for f in fields(Side) if f.name in _LABELS
                for va, vb in [(getattr(a, f.name), getattr(b, f.name))]
                if va is not None and vb is not None and va != vb]
    if problems:
        raise IncompatibleError(f"{a.name} and {b.name} do not match: " + "; ".join(problems))


def recorded_vqvae(meta: Mapping[str, Any] | None) -> tuple[str | None, str | None]:
    """(path, identity) of the VQ-VAE a world-model checkpoint's meta or a shard folder's meta.json records;
    None where absent."""
    meta = meta or {}
    v = meta.get("vqvae")
    nested = v if isinstance(v, Mapping) else {}
    path = nested.get("path") or meta.get("vqvae_path") or (v if isinstance(v, str) else None)
    ident = nested.get("identity") or meta.get("vqvae_identity")
    return (str(path) if path else None), (str(ident) if ident else None)


def _grid(g: Any) -> tuple[int, int] | None:
    return None if g is None else (int(g[0]), int(g[1]))


def vqvae_side(vqvae: Any, path: str | Path, identity: str | None = None) -> Side:
    """A loaded VQ-VAE: the codes and token grid it makes, and its identity (vq_vae.vqvae_identity)."""
    return Side("VQ-VAE", str(path), codebook_size=int(vqvae.codebook_size), grid=_grid(vqvae.grid),
                vqvae_identity=identity)


def model_side(cfg: Any, path: str | Path, meta: Mapping[str, Any] | None = None) -> Side:
    """A world model: codebook, grid and action width from its WorldModelConfig; the action schema and the
    VQ-VAE identity it was trained with from its checkpoint's meta."""
    schema = (meta or {}).get("action_schema_version")
    return Side("world model", str(path), codebook_size=int(cfg.codebook_size), grid=_grid((cfg.grid_h, cfg.grid_w)),
                vqvae_identity=recorded_vqvae(meta)[1], action_schema=None if schema is None else int(schema),
                action_dim=int(cfg.action_dim))


def shards_side(meta: Mapping[str, Any], path: str | Path, what: str = "shards") -> Side:
    """A shard folder's meta.json (dataset.read_meta); its codebook size and grid must be recorded."""
    missing = [k for k in ("codebook_size", "grid") if meta.get(k) is None]
    if missing:
        raise IncompatibleError(f"{what} {path}: meta.json records no {', '.join(missing)}")
    schema = meta.get("action_schema_version")
    return Side(what, str(path), codebook_size=int(meta["codebook_size"]), grid=_grid(meta["grid"]),
                vqvae_identity=recorded_vqvae(meta)[1], action_schema=None if schema is None else int(schema))
