"""Config dataclasses for every script: `--key value` overrides, presets, strict keys, saved with runs.

Each script defines one dataclass whose fields carry a docstring (a string literal right after the field,
as in cleanrl/tyro). `parse_config(Cls, argv, presets)` applies `--preset NAME` first, then each
`--key value` (dashes and underscores are interchangeable); an unknown key is an error that lists the
valid ones, and `--help` prints every field with its docstring, type and default.
"""
from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import sys
import textwrap
import typing
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class ConfigError(ValueError):
    """A bad command line or stored config."""


@lru_cache(maxsize=None)
def field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings of a dataclass (and its bases), parsed from the source."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body  # type: ignore[attr-defined]
        for node, nxt in zip(body, body[1:]):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                    and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                    and isinstance(nxt.value.value, str)):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _convert(text: str, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        if text.lower() in ("none", "null", "") and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(text, inner[0], key)
    if origin is typing.Literal:
        if text not in [str(a) for a in args]:
            raise ConfigError(f"--{key}: {text!r} is not one of {list(args)}")
        return type(args[0])(text)
    if origin in (tuple, list):
        items = [t for t in text.replace(",", " ").split() if t]
        elem = args[0] if args else str
        return (tuple if origin is tuple else list)(_convert(t, elem, key) for t in items)
    if tp is bool:
        low = text.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"--{key}: expected true/false, got {text!r}")
    if tp in (int, float, str):
        try:
            return tp(text)
        except ValueError as e:
            raise ConfigError(f"--{key}: expected {tp.__name__}, got {text!r}") from e
    raise ConfigError(f"--{key}: unsupported field type {tp}")


def _coerce(value: Any, tp: Any) -> Any:
    """Turn a JSON value (lists for tuples) back into the field's type."""
    if typing.get_origin(tp) is tuple and isinstance(value, list):
        return tuple(value)
    return value


def help_text(cls: type, presets: Mapping[str, Mapping[str, Any]] | None = None) -> str:
    docs, types = field_docs(cls), _field_types(cls)
    lines = [f"{cls.__name__} options (--key value; dashes or underscores):"]
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else "required")
        tname = getattr(types[f.name], "__name__", str(types[f.name]).replace("typing.", ""))
        lines.append(f"  --{f.name.replace('_', '-')} ({tname}, default {default!r})")
        if f.name in docs:
            lines.append(textwrap.indent(textwrap.fill(docs[f.name], 90), " " * 6))
    if presets:
        lines.append(f"  --preset {{{','.join(presets)}}}: apply a preset before the overrides")
    return "\n".join(lines)


def parse_config(cls: type[T], argv: Sequence[str] | None = None,
                 presets: Mapping[str, Mapping[str, Any]] | None = None,
                 default_preset: str | None = None, base: Mapping[str, Any] | None = None) -> T:
    """Build `cls` from `--preset NAME` and `--key value` pairs; unknown keys raise ConfigError.
    `base` (a stored config, e.g. the run a resume continues) replaces the defaults and the default preset:
    only the options given, and a --preset given, change it."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        print(help_text(cls, presets))
        raise SystemExit(0)
    types = _field_types(cls)
    values: dict[str, Any] = {}
    preset = default_preset
    if base is not None:
        stored = from_dict(cls, base)
        values = {f.name: getattr(stored, f.name) for f in dataclasses.fields(stored)}  # type: ignore[arg-type]
        preset = None
    pairs: list[tuple[str, str]] = []
    i = 0
    while i < len(argv):
        tok = argv[i]
        if not tok.startswith("--"):
            raise ConfigError(f"unexpected argument {tok!r}; options look like --key value")
        key, eq, val = tok[2:].partition("=")
        key = key.replace("-", "_")
        if not eq:
            field_tp = types.get(key)
            nxt_is_value = i + 1 < len(argv) and not argv[i + 1].startswith("--")
            if field_tp is bool and not nxt_is_value:
                val = "true"
            elif not nxt_is_value:
                raise ConfigError(f"--{key} needs a value")
            else:
                val = argv[i + 1]
                i += 1
        i += 1
        if key == "preset":
            preset = val
            continue
        pairs.append((key, val))
    if preset is not None:
        if not presets or preset not in presets:
            raise ConfigError(f"unknown preset {preset!r}; choose from {list(presets or {})}")
        for k, v in presets[preset].items():
            if k not in types:
                raise ConfigError(f"preset {preset!r} sets unknown key {k!r}")
            values[k] = v
        if "preset" in types:
            values["preset"] = preset
    for key, val in pairs:
        if key not in types:
            raise ConfigError(f"unknown option --{key.replace('_', '-')} for {cls.__name__}; valid: "
                              + ", ".join("--" + k.replace("_", "-") for k in types))
        values[key] = _convert(val, types[key], key)
    try:
        return cls(**values)
    except TypeError as e:
        raise ConfigError(str(e)) from e


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def from_dict(cls: type[T], data: Mapping[str, Any], strict: bool = True) -> T:
    """Rebuild a config from a stored dict; with strict, unknown or missing keys are errors."""
    types = _field_types(cls)
    unknown = set(data) - set(types)
    if unknown and strict:
        raise ConfigError(f"stored {cls.__name__} has unknown keys {sorted(unknown)}")
    kwargs = {k: _coerce(v, types[k]) for k, v in data.items() if k in types}
    return cls(**kwargs)


def parse_size(text: str, even: bool = False) -> tuple[int, int]:
    """A --size value "WxH" (e.g. 128x72) -> (width, height), both positive; `even` also requires even numbers
    (H.264 yuv420p video halves both). Raises ConfigError naming the value."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"--size must look like 128x72, got {text!r}") from None
    if w <= 0 or h <= 0:
        raise ConfigError(f"--size must be positive, got {text!r}")
    if even and (w % 2 or h % 2):
        raise ConfigError(f"--size {text}: width and height must be even numbers (H.264 yuv420p)")
    return w, h


def save_config(cfg: Any, path: str | Path) -> None:
    """Write the resolved config as JSON, atomically."""
    from ckpt_io import atomic_write_text
    atomic_write_text(Path(path), json.dumps(to_dict(cfg), indent=2) + "\n")


def exit_on_error(body: Callable[[], R], errors: tuple[type[BaseException], ...] = (ValueError,),
                  status: int = 2) -> R:
    """Run a script's body; an expected error (bad input, config, checkpoint or video) prints one
    `error: ...` line and exits with `status` instead of a traceback."""
    try:
        return body()
    except errors as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(status) from None


def main_config(cls: type[T], presets: Mapping[str, Mapping[str, Any]] | None = None,
                default_preset: str | None = None, argv: Sequence[str] | None = None,
                doc: str | None = None) -> T:
    """parse_config for a script's __main__: a ConfigError prints cleanly and exits with status 2.
    `doc` (the script's usage text) is printed above the field list for --help."""
    args = list(sys.argv[1:] if argv is None else argv)
    if doc and ("-h" in args or "--help" in args):
        print(doc)
    return exit_on_error(lambda: parse_config(cls, args, presets, default_preset), (ConfigError,))
