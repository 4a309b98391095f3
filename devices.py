"""Device choice, data-parallel processes, mixed precision and device-synchronised timing: one place for
every script.

`resolve_device` follows torchrun's LOCAL_RANK so each data-parallel process (train.py, preprocess.py) takes
its own GPU; a single process gets cuda:0, the same device as plain "cuda".
"""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass

import torch


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """"auto" -> this process's GPU when CUDA is available, else cpu; "cuda" -> this process's GPU, with its
    index (torch.cuda.set_device refuses an index-less "cuda"); asking for CUDA without a GPU is an error."""
    if isinstance(spec, torch.device):
        return spec
    local = int(os.environ.get("LOCAL_RANK", 0))
    if spec == "auto":
        return torch.device(f"cuda:{local}") if torch.cuda.is_available() else torch.device("cpu")
    if spec == "cuda":
        spec = f"cuda:{local}"
    dev = torch.device(spec)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {spec} was asked for but no CUDA GPU is available")
    return dev


@dataclass
class Dist:
    """This process's place among torchrun's data-parallel training processes."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str = ""
    """The joined process group's backend (nccl or gloo); empty when not in one (a plain single process)."""

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def group(self) -> bool:
        """In a process group: collectives (gradient all-reduce, parameter broadcast) run."""
        return bool(self.backend)

    @classmethod
    def from_env(cls, device: str = "auto") -> "Dist":
        """RANK/WORLD_SIZE/LOCAL_RANK from torchrun; with several processes, or any number under torchrun,
        joins the process group (NCCL when `device` may be a GPU and one is available, else gloo). One
        process under torchrun joins too, so `torchrun --nproc_per_node 1` runs the same collectives as a
        multi-GPU job (on a one-GPU machine the only way to exercise NCCL)."""
        d = cls(rank=int(os.environ.get("RANK", 0)), world=int(os.environ.get("WORLD_SIZE", 1)),
                local_rank=int(os.environ.get("LOCAL_RANK", 0)))
        if d.world > 1 or "TORCHELASTIC_RUN_ID" in os.environ:
            import torch.distributed as tdist

            if not tdist.is_initialized():
                tdist.init_process_group("nccl" if device != "cpu" and torch.cuda.is_available() else "gloo")
            d.backend = str(tdist.get_backend())
        return d


def all_reduce_mean_grads(params: list[torch.nn.Parameter], world: int) -> None:
    """Average the gradients over the processes in one flat all-reduce (missing gradients count as 0)."""
    import torch.distributed as tdist

    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])  # [n_params]
    tdist.all_reduce(flat)
    flat /= world
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset:offset + n].view_as(p).clone()
        offset += n


AMP_DTYPES = ("auto", "bf16", "fp16")


def amp_settings(device: torch.device, enabled: bool, dtype: str = "auto") -> tuple[torch.dtype | None, bool]:
    """Training precision: (autocast dtype or None for fp32, use a GradScaler). "auto": bf16 where supported,
    else fp16 with a scaler (P100); CPU trains in fp32. "bf16" or "fp16" forces that autocast dtype on any
    device, fp16 always with a scaler: the P100 path runs on a bf16 card, and both run on a CPU."""
    if dtype not in AMP_DTYPES:
        raise ValueError(f"amp dtype {dtype!r} is not one of {AMP_DTYPES}")
    if not enabled:
        return None, False
    if dtype == "fp16":
        return torch.float16, True
    if dtype == "bf16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ValueError(f"--amp-dtype bf16: {torch.cuda.get_device_name(device)} has no bf16; use fp16")
        return torch.bfloat16, False
    if device.type != "cuda":
        return None, False
    if torch.cuda.is_bf16_supported():
        return torch.bfloat16, False
    return torch.float16, True


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Autocast to `dtype` on `device`; dtype None runs in fp32."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def inference_autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on GPUs that support it; fp32 elsewhere (P100 and CPU), where inference is exact."""
    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    return autocast(device, torch.bfloat16 if bf16 else None)


def sync(device: torch.device) -> None:
    """Wait for queued GPU work so a wall-clock timing covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PhaseTimer:
    """Wall time per phase of a step (synchronising CUDA so GPU work is charged to the right phase)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.totals: dict[str, float] = {}
        self._name: str | None = None
        self._t0 = 0.0

    def start(self, name: str) -> None:
        self.stop()
        sync(self.device)
        self._name, self._t0 = name, time.perf_counter()

    def stop(self) -> None:
        if self._name is None:
            return
        sync(self.device)
        self.totals[self._name] = self.totals.get(self._name, 0.0) + time.perf_counter() - self._t0
        self._name = None

    def pop(self) -> dict[str, float]:
        self.stop()
        out, self.totals = self.totals, {}
        return out
