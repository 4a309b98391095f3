"""vq_vae.stability: invariants of the code-predictability metrics (idempotence, patch stability,
separation, usage), on exact test doubles and on a tiny real tokenizer."""
import math

import numpy as np
import pytest
import torch

from vq_vae.stability import (code_metrics, codebook_separation, codebook_usage, idempotence, patch_change,
                              patch_stability, shift_following, shift_px)
from test_vqvae import initialised, make_frames


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


class PatchMeanTokenizer:
    """An exactly idempotent tokenizer: a token is the grey mean of its 4x4 patch, quantised to K levels;
    decoding paints the level's grey back. Quantisation bins are `step` grey levels wide."""

    def __init__(self, levels: int = 16) -> None:
        self.codebook_size = levels
        self.step = 256 // levels
        self.grid = (18, 32)
        self.codebook = torch.arange(levels, dtype=torch.float32)[:, None] * torch.ones(1, 3)  # [K, 3]

    def encode(self, frames):
        if isinstance(frames, np.ndarray):
            x = torch.from_numpy(frames).float().permute(0, 3, 1, 2) / 255.0  # [B, 3, H, W]
        else:
            x = frames.float()
        mean = torch.nn.functional.avg_pool2d(x.mean(1, keepdim=True), 4)[:, 0]  # [B, h, w]
        return (mean * 255.0 / self.step).floor().clamp(0, self.codebook_size - 1).long()

    def decode_code(self, tokens):
        grey = (tokens.float() * self.step + self.step / 2) / 255.0  # [B, h, w], bin centres
        return grey[:, None].repeat_interleave(4, 2).repeat_interleave(4, 3).expand(-1, 3, -1, -1)


def test_an_exactly_idempotent_tokenizer_scores_one():
    tok = PatchMeanTokenizer()
    frames = make_frames(6)
    tokens = tok.encode(frames).numpy()
    assert idempotence(tok, tokens, batch_size=4) == 1.0
    assert code_metrics(tok, frames)["idempotence"] == 1.0


def test_a_tokenizer_that_always_changes_the_code_scores_zero():
    tok = PatchMeanTokenizer()

    class Shifted(PatchMeanTokenizer):
        def decode_code(self, tokens):
            return tok.decode_code((tokens + 1) % self.codebook_size)

    tokens = tok.encode(make_frames(2)).numpy()
    assert idempotence(Shifted(), tokens) == 0.0


def test_an_unchanged_video_is_stable_exactly_when_the_encoder_is_deterministic():
    frozen = np.repeat(make_frames(1), 5, axis=0)  # [5, 72, 128, 3], identical frames
    m = code_metrics(PatchMeanTokenizer(), frozen)
    assert m["stability_le2"] == 1.0
    assert m["stability_le2_positions"] == 4 * 18 * 32
    assert math.isnan(m["stability_3to8"]) and m["stability_3to8_positions"] == 0
    # a real (deterministic) encoder too
    assert code_metrics(initialised(), frozen)["stability_le2"] == 1.0


def test_patch_change_and_binning():
    frames = np.full((3, 72, 128, 3), 100, np.uint8)
    frames[1, 0:4, 0:4, 0] = 102      # patch (0, 0): 2 levels, then back
    frames[1, 4:8, 8:12, 1] = 105     # patch (1, 2): 5 levels
    frames[2, 4:8, 8:12, 1] = 105
    frames[2, 8, 8, 2] = 200          # patch (2, 2): a 100-level change of one pixel counts in no bin
    change = patch_change(frames, (18, 32))
    assert change.shape == (2, 18, 32)
    assert change[0, 0, 0] == 2 and change[1, 0, 0] == 2 and change[0, 1, 2] == 5 and change[1, 1, 2] == 0
    assert change[1, 2, 2] == 100
    # tokens that keep every code but the 5-level patch
    toks = np.zeros((3, 18, 32), np.int64)
    toks[1, 1, 2] = 7
    out = patch_stability([toks], [frames], (18, 32))
    assert out["stability_3to8_positions"] == 1 and out["stability_3to8"] == 0.0
    assert out["stability_le2_positions"] == 2 * 18 * 32 - 2  # all but the 5- and 100-level patches
    # position (1, 2) changed 0 levels between frames 1 and 2 but its code went 7 -> 0
    assert out["stability_le2"] == pytest.approx(1 - 1 / out["stability_le2_positions"])


def test_separation_is_zero_with_duplicated_codes_and_the_lattice_step_on_a_lattice():
    rng = np.random.default_rng(0)
    cb = rng.normal(size=(32, 4))
    assert codebook_separation(np.concatenate([cb, cb]))["separation"] == 0.0
    # integer lattice {-2..2}^2 scaled by 0.5: every NN distance is 0.5
    g = np.stack(np.meshgrid(np.arange(-2, 3), np.arange(-2, 3)), -1).reshape(-1, 2) * 0.5
    sep = codebook_separation(torch.tensor(g))
    assert sep["codebook_nn_distance"] == pytest.approx(0.5)
    assert sep["separation"] == pytest.approx(0.5 / np.median(np.linalg.norm(g, axis=1)))
    # scale-free
    assert codebook_separation(g * 7)["separation"] == pytest.approx(sep["separation"])


def test_usage_and_perplexity():
    u = codebook_usage(np.arange(8).repeat(3), 16)
    assert u["unique_codes"] == 8 and u["usage_fraction"] == 0.5 and u["perplexity"] == pytest.approx(8.0)
    assert codebook_usage(np.zeros(10, np.int64), 16)["perplexity"] == pytest.approx(1.0)


def test_code_metrics_on_a_real_tokenizer_are_floats_in_range():
    clips = [make_frames(6, seed=s) for s in (0, 1)]
    m = code_metrics(initialised(), clips, batch_size=4)
    assert all(isinstance(v, float) for v in m.values())
    for k in ("idempotence", "stability_le2", "usage_fraction"):
        assert 0.0 <= m[k] <= 1.0, k
    assert m["separation"] > 0 and 1 <= m["perplexity"] <= 64


class LosslessTokenizer:
    """Keeps every frame it encoded; a frame's tokens all carry its index, and decoding returns the frame
    exactly: a tokenizer whose reconstruction follows any move."""

    def __init__(self) -> None:
        self.frames: list[torch.Tensor] = []
        self.grid = (18, 32)

    def encode(self, frames):
        ids = []
        for f in frames:
            self.frames.append(torch.from_numpy(np.array(f)).float().permute(2, 0, 1) / 255.0)  # [3, H, W]
            ids.append(len(self.frames) - 1)
        return torch.tensor(ids)[:, None, None].expand(-1, *self.grid)  # [B, h, w]

    def decode_code(self, tokens):
        return torch.stack([self.frames[int(i)] for i in tokens[:, 0, 0]])  # [B, 3, H, W]


class GridSnapTokenizer(LosslessTokenizer):
    """Draws the picture only where its 4-px grid puts it: encoding rounds how far the content moved from
    `origin` (measured by phase correlation) to whole tokens, as a tokenizer whose codes describe
    grid-aligned patches would."""

    def __init__(self, origin: np.ndarray) -> None:
        super().__init__()
        self.origin = origin

    def encode(self, frames):
        from metrics import image_shift
        from vq_vae.stability import shift_px

        snapped = []
        for f in frames:
            dx, dy = image_shift(self.origin, f)
            snapped.append(shift_px(self.origin[None], 4 * int(np.floor(dx / 4 + 0.5)),
                                    4 * int(np.floor(dy / 4 + 0.5)))[0])
        return super().encode(np.stack(snapped))


def test_shift_px_moves_content_and_repeats_the_border():
    f = np.zeros((1, 4, 6, 3), np.uint8)
    f[0, :, 2] = 200
    right = shift_px(f, 2, 0)
    assert (right[0, :, 4] == 200).all() and (right[0, :, 2] == 0).all()
    up = shift_px(f, 0, -1)
    assert (up == f).all()  # a vertical stripe is unchanged by a vertical move with the border repeated
    f[0, 0] = 50
    down = shift_px(f, 0, 1)
    assert (down[0, 0] == 50).all() and (down[0, 1] == 50).all() and (down[0, 2] == f[0, 1]).all()


def test_a_lossless_tokenizer_follows_every_move():
    frames = make_frames(1)
    r = shift_following(LosslessTokenizer(), frames)
    assert set(r) == {"follow_1px", "follow_2px", "follow_3px"}
    for v in r.values():
        assert abs(v - 1.0) < 0.1


def test_a_grid_snapping_tokenizer_drops_one_pixel_and_rounds_three_up():
    frames = make_frames(1)
    r = shift_following(GridSnapTokenizer(frames[0]), frames)
    assert abs(r["follow_1px"]) < 0.1
    assert abs(r["follow_3px"] - 4 / 3) < 0.1
    four = shift_following(GridSnapTokenizer(frames[0]), frames, shifts=(4,))
    assert four["follow_4px"] == pytest.approx(1.0, abs=0.1)


def test_fixed_pattern_artefacts_do_not_hide_that_the_content_moves():
    frames = make_frames(1)

    class Stamped(LosslessTokenizer):
        """Lossless, plus a strong pattern fixed on the screen (a decoder's grid artefacts)."""

        def decode_code(self, tokens):
            img = super().decode_code(tokens).clone()
            img[:, :, ::4, ::4] = 1.0
            img[:, :, 2::4, 2::4] = 0.0
            return img

    assert shift_following(Stamped(), frames)["follow_1px"] == pytest.approx(1.0, abs=0.1)


def test_code_metrics_reports_shift_following():
    r = code_metrics(PatchMeanTokenizer(), make_frames(4))
    assert {"follow_1px", "follow_2px", "follow_3px"} <= set(r)
    assert all(np.isfinite(r[k]) for k in ("follow_1px", "follow_2px", "follow_3px"))
