"""Measurement helpers shared by the bench scripts (and the memory test that checks the trainer); the
leading underscore keeps bench.run_all from running it as a benchmark."""
from __future__ import annotations

import platform
import time
import weakref
from pathlib import Path
from typing import Any, Callable

import torch

from devices import sync


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def times_ms(fn: Callable[[], Any], repeats: int, device: torch.device, warmup: int = 3) -> list[float]:
    """Milliseconds of each of `repeats` calls of fn after `warmup` untimed ones (CUDA synchronised, so
    the time covers the kernels and not just their launch)."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        out.append((time.perf_counter() - t) * 1e3)
    return out


class SavedTensorMeter:
    """Peak bytes of tensors autograd keeps for backward (freed when their graph is released).
    Use as `with torch.autograd.graph.saved_tensors_hooks(meter.pack, meter.unpack): ...`."""

    def __init__(self) -> None:
        self.live = 0
        self.peak = 0

    def _free(self, n: int) -> None:
        self.live -= n

    def pack(self, t: torch.Tensor) -> Any:
        n = t.numel() * t.element_size()
        self.live += n
        self.peak = max(self.peak, self.live)
        box = _Box(t)
        weakref.finalize(box, self._free, n)
        return box

    @staticmethod
    def unpack(box: Any) -> torch.Tensor:
        return box.value


class _Box:
    """Holds a saved tensor; its finalizer fires when autograd drops the box with the graph."""

    def __init__(self, value: torch.Tensor) -> None:
        self.value = value
