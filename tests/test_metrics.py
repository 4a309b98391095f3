"""metrics.py on constructed inputs with known answers (shifts, zooms, flashes, collapse)."""
import cv2
import numpy as np
import pytest

import metrics as M

H, W = 72, 128


@pytest.fixture(scope="module")
def texture() -> np.ndarray:
    """A large smooth random colour texture in [0, 1], [300, 600, 3], to crop frames from."""
    rng = np.random.default_rng(0)
    big = cv2.GaussianBlur(rng.random((300, 600, 3)).astype(np.float32), (0, 0), 2.0)
    return (big - big.min()) / (big.max() - big.min())


def crop(tex: np.ndarray, x0: int, y0: int) -> np.ndarray:
    return tex[y0:y0 + H, x0:x0 + W]


def zoom(tex: np.ndarray, scale: float) -> np.ndarray:
    """The central HxW view of the texture magnified by `scale` about the view centre."""
    cy, cx = 150, 300
    m = cv2.getRotationMatrix2D((cx, cy), 0, scale)
    z = cv2.warpAffine(tex, m, (tex.shape[1], tex.shape[0]), flags=cv2.INTER_LINEAR)
    return z[cy - H // 2:cy + H // 2, cx - W // 2:cx + W // 2]


def pan(tex: np.ndarray, n: int) -> np.ndarray:
    """n frames of a camera turning right at 1 px/frame: the content moves left."""
    return np.stack([crop(tex, 10 + i, 100) for i in range(n)])


def test_psnr_known_values():
    a = np.zeros((2, H, W, 3), np.float32)
    b = a.copy()
    b[1] += 0.1
    p = M.psnr(a, b)
    assert p[0] == M.PSNR_CAP_DB
    assert p[1] == pytest.approx(20.0, abs=1e-4)
    assert M.psnr(np.zeros((1, 4, 4, 3), np.uint8), np.full((1, 4, 4, 3), 255, np.uint8))[0] == \
        pytest.approx(0.0)


def test_ssim_identity_noise_and_symmetry(texture):
    a = crop(texture, 0, 0)[None]
    rng = np.random.default_rng(1)
    b = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1).astype(np.float32)
    assert M.ssim(a, a)[0] == pytest.approx(1.0, abs=1e-9)
    s = M.ssim(a, b)[0]
    assert 0.0 < s < 0.9
    assert M.ssim(b, a)[0] == pytest.approx(s)
    c = np.clip(a + rng.normal(0, 0.02, a.shape), 0, 1).astype(np.float32)
    assert M.ssim(a, c)[0] > s


def test_token_accuracy():
    t = np.arange(24).reshape(2, 3, 4)
    p = t.copy()
    p[0, 0, :2] = -1
    assert M.token_accuracy(p, t) == pytest.approx(22 / 24)
    with pytest.raises(ValueError, match="shapes differ"):
        M.token_accuracy(p[:1], t)


@pytest.mark.parametrize("k", [1, 3, -4])
def test_shift_by_k_pixels(texture, k):
    a = crop(texture, 100, 100)
    right = crop(texture, 100 - k, 100)  # the content moved right by k
    down = crop(texture, 100, 100 - k)  # the content moved down by k
    dx, dy = M.image_shift(a, right)
    assert dx == pytest.approx(k, abs=0.15) and abs(dy) < 0.15
    dx, dy = M.image_shift(a, down)
    assert dy == pytest.approx(k, abs=0.2) and abs(dx) < 0.15
    assert M.image_shift(M.to_uint8(a), M.to_uint8(right))[0] == pytest.approx(k, abs=0.2)


def fourier_shift(tex: np.ndarray, sx: float, sy: float) -> np.ndarray:
    """The texture with its content moved by (sx, sy) px exactly (a band-limited sub-pixel shift)."""
    fy = np.fft.fftfreq(tex.shape[0])[:, None]
    fx = np.fft.fftfreq(tex.shape[1])[None, :]
    ramp = np.exp(-2j * np.pi * (fx * sx + fy * sy))
    return np.stack([np.real(np.fft.ifft2(np.fft.fft2(tex[..., c]) * ramp)) for c in range(3)], -1)


@pytest.mark.parametrize("sx,sy", [(0.5, 0.25), (2.5, -1.2), (-6.3, 3.1)])
def test_sub_pixel_shift(texture, sx, sy):
    a = crop(texture, 100, 100)
    b = crop(fourier_shift(texture, sx, sy), 100, 100)
    dx, dy = M.image_shift(a, b)
    # Vertical is less precise: 72 rows, of which a shifted frame replaces a larger fraction.
    assert dx == pytest.approx(sx, abs=0.05) and dy == pytest.approx(sy, abs=0.15)


def test_turning_right_is_a_positive_yaw_response(texture):
    frames = pan(texture, 6)
    sh = M.shifts(frames)
    assert sh.shape == (5, 2)
    yaw_deg = np.full(5, 2.0)  # +yaw turns right, the scene moves left
    slope = M.response_slope(yaw_deg, -sh[:, 0])
    assert slope == pytest.approx(0.5, abs=0.05)
    assert np.isnan(M.response_slope(np.zeros(5), sh[:, 0]))


def test_yaw_sign_against_blockworld_render():
    import blockworld as bw
    from actions import make_raw

    world = bw.World(3)
    state = world.spawn(0)
    a = bw.render(world, state)
    b = bw.render(world, bw.step(world, state, make_raw(yaw_deg=3.0)))
    c = bw.render(world, bw.step(world, state, make_raw(pitch_deg=3.0)))
    dx, _ = M.image_shift(a, b)
    _, dy = M.image_shift(a, c)
    assert dx < -0.5, "turning right must move the rendered scene left"
    assert dy < -0.5, "looking down must move the rendered scene up"


def test_zoom_gives_expansion_and_shrinking_gives_contraction(texture):
    grow = np.stack([zoom(texture, 1.03 ** i) for i in range(5)])
    shrink = np.stack([zoom(texture, 1.03 ** -i) for i in range(5)])
    assert np.allclose(M.expansions(grow), 0.03, atol=0.005)
    assert np.allclose(M.expansions(shrink), 1 / 1.03 - 1, atol=0.005)
    # A sideways shift on top of the zoom does not change the estimate.
    assert M.radial_expansion(zoom(texture, 1.0), np.roll(zoom(texture, 1.04), 2, axis=1)) == \
        pytest.approx(0.04, abs=0.006)
    assert abs(M.radial_expansion(crop(texture, 50, 50), crop(texture, 47, 50))) < 0.003


def test_constant_sequence_has_zero_change_and_no_drift(texture):
    frames = np.repeat(crop(texture, 0, 0)[None], 10, axis=0)
    assert np.all(M.frame_change(frames) == 0)
    assert np.all(M.drift(frames, frames[0]) == 0)
    assert M.periodic_flash(M.frame_change(frames))["flagged"] is False
    assert np.allclose(M.expansions(frames[:3]), 0, atol=1e-6)
    assert M.frame_change(frames[:1]).shape == (0,)


def test_five_periodic_flash_detected_and_smooth_sequence_not(texture):
    smooth = pan(texture, 120)
    flashing = smooth.copy()
    flashing[::5] = np.clip(flashing[::5] * 1.3 + 0.05, 0, 1)
    f = M.periodic_flash(M.frame_change(flashing))
    assert f["flagged"] and f["period"] == pytest.approx(5.0, abs=0.25)
    assert M.spectrum_amplitude_at(M.frame_change(flashing), 0.2) > 5 * \
        M.spectrum_amplitude_at(M.frame_change(smooth), 0.2)
    assert not M.periodic_flash(M.frame_change(smooth))["flagged"]
    rng = np.random.default_rng(2)
    noisy = np.clip(smooth + rng.normal(0, 0.02, smooth.shape), 0, 1)
    assert not M.periodic_flash(M.frame_change(noisy))["flagged"]
    # Irregular jitter (a camera that stutters at random) is not periodic.
    offsets = 10 + 2 * np.arange(120) + rng.integers(0, 4, 120)
    jerky = np.stack([texture[100:100 + H, o:o + W] for o in offsets])
    assert not M.periodic_flash(M.frame_change(jerky))["flagged"]
    # A slow brightness oscillation (period 60 frames) is drift, not flashing.
    slow = np.clip(smooth[:1] * (1 + 0.3 * np.sin(np.arange(120) / 60 * 2 * np.pi))[:, None, None, None], 0, 1)
    assert not M.periodic_flash(M.frame_change(slow))["flagged"]


def test_grey_collapse_detected(texture):
    frames = pan(texture, 48)
    mean = frames.mean(axis=(0, 1, 2))
    alpha = np.linspace(0, 1, 48)[:, None, None, None]
    fading = (1 - alpha) * frames + alpha * mean  # towards a flat average colour
    assert M.grey_collapse(fading, frames, window=12)["collapsed"]
    ok = M.grey_collapse(frames, frames, window=12)
    assert not ok["collapsed"] and ok["relative"] == pytest.approx(1.0)
    assert M.colour_variance(np.full((2, 8, 8, 3), 0.5))[0] == 0


def test_grey_collapse_compares_the_same_frames_of_the_truth(texture):
    """A truth that ends looking at a plain field: a rollout that shows the same plain field is no collapse
    (against the truth's whole mean it would be), a grey one still is; without an aligned truth the
    reference is the mean of the reference frames."""
    frames = pan(texture, 48)
    plain = frames.mean(axis=(1, 2), keepdims=True)
    truth = frames.copy()
    truth[36:] = 0.85 * plain[36:] + 0.15 * frames[36:]  # the last quarter: low contrast
    assert not M.grey_collapse(truth, truth, window=12)["collapsed"]
    assert M.grey_collapse(truth, truth, window=12, aligned=False)["collapsed"]
    grey = truth.copy()
    grey[36:] = plain[36:]
    assert M.grey_collapse(grey, truth, window=12)["collapsed"]
    aligned = M.grey_collapse(frames, truth, window=12)
    assert aligned["relative"] == pytest.approx(M.colour_variance(frames[36:]).mean()
                                                / M.colour_variance(truth[36:]).mean())
    loose = M.grey_collapse(frames[:40], truth, window=4, aligned=False)
    assert loose["reference_variance"] == pytest.approx(M.colour_variance(truth).mean())
    assert loose["model_per_frame"] == pytest.approx(M.colour_variance(frames[:40]).tolist())  # the plots' curves
    assert len(loose["reference_per_frame"]) == len(truth)


def test_codebook_diversity_per_second():
    tokens = np.zeros((40, 2, 2), np.int64)
    tokens[16:32] = np.arange(16)[:, None, None] % 5
    tokens[16, 0, 0] = 99
    d = M.codebook_diversity(tokens, fps=16)
    assert d.tolist() == [1.0, 6.0]
    assert M.codebook_diversity(tokens[:3], fps=16).tolist() == [1.0]


def test_codes_per_frame_averages_each_second():
    tokens = np.zeros((40, 2, 2), np.int64)
    tokens[16:32] = np.arange(4).reshape(2, 2)  # the second second: 4 codes in every frame
    tokens[16:24, 0, 0] = 1  # ... but 3 in its first half
    assert M.codes_per_frame(tokens, fps=16).tolist() == [1.0, 3.5]
    assert M.codes_per_frame(tokens[:3], fps=16).tolist() == [1.0]


def test_jump_profile_up_then_down():
    dy = np.zeros(30)
    dy[5:10] = 2.0  # camera rises: scene moves down
    dy[10:15] = -2.0  # lands
    prof = M.jump_profile(dy, onsets=[5, 28], window=12)
    assert prof.shape == (1, 12)  # the onset too near the end is dropped
    rise, back = M.jump_response(prof)
    assert rise == pytest.approx(10.0) and back == pytest.approx(1.0)
    half = np.where(np.arange(30) >= 10, dy / 2, dy)  # lands on a block 5 px higher
    assert M.jump_response(M.jump_profile(half, [5], 12))[1] == pytest.approx(0.5)
    assert np.isnan(M.jump_response(M.jump_profile(dy, [], 12))[0])


def test_ratio_and_scores():
    assert M.ratio(0.5, 1.0, floor=0.1) == 0.5
    assert M.ratio(0.5, 0.01, floor=0.1) is None
    s = M.binary_scores(np.array([1, 1, 0, 0]), np.array([1, 0, 1, 0]))
    assert (s["accuracy"], s["precision"], s["recall"], s["f1"]) == (0.5, 0.5, 0.5, 0.5)
    assert np.isnan(M.binary_scores(np.zeros(3), np.zeros(3))["f1"])
    assert M.nanmean([1.0, None, float("nan"), 3.0]) == 2.0


def test_lpips_distance_batches_and_scales_inputs():
    import torch

    class L1Net(torch.nn.Module):
        def forward(self, x, y):
            assert x.shape[1] == 3 and x.min() >= -1 and x.max() <= 1
            return (x - y).abs().mean(dim=(1, 2, 3))

    a = np.zeros((5, 8, 8, 3), np.uint8)
    b = np.full((5, 8, 8, 3), 255, np.uint8)
    d = M.lpips_distance(L1Net(), a, b, batch_size=2)
    assert d.shape == (5,) and np.allclose(d, 2.0)


def test_changed_region_metrics_ignore_what_did_not_change():
    rng = np.random.default_rng(0)
    last = rng.integers(0, 256, (2, 8, 8, 3)).astype(np.uint8)
    truth = last.copy()
    truth[:, :4] = rng.integers(0, 256, (2, 4, 8, 3))  # the top half changes
    mask = M.changed_mask(truth, last)
    assert mask[:, 4:].sum() == 0 and mask[:, :4].mean() > 0.9
    pred = truth.copy()
    pred[:, 4:] = 0  # wrong only where nothing changed
    assert (M.psnr_masked(pred, truth, mask) == M.PSNR_CAP_DB).all()
    assert (M.psnr(pred, truth) < 20).all()
    np.testing.assert_array_equal(M.paste_unchanged(pred, truth, mask), truth)
    # Copying the last frame is wrong exactly there.
    assert (M.psnr_masked(last, truth, mask) < M.psnr(last, truth)).all()
    assert np.isnan(M.psnr_masked(last, last, M.changed_mask(last, last))).all()
