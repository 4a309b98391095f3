"""Loading, sampling and rollout shared by inference.py, live_inference.py and evaluate.py.

Everything is loaded from checkpoints alone: the world model's weights-only export records its VQ-VAE (path
and identity) and its ActionEncoding, so `load_bundle(model_ckpt)` needs nothing else; `--vqvae` overrides
the recorded path, and any pair that cannot work together (codebook size, token grid, action schema, VQ-VAE
identity) is refused with a message naming both files.

Every frame is produced by the same `model.step(tokens, action, state)` the trainer unrolls:

    bundle = load_bundle("checkpoints/world_model.pt")
    ro = Rollout(bundle, Sampling("topk", temperature=0.9, top_k=8, seed=0))
    ro.warmup(context.tokens, context.actions)   # C frames and the C-1 actions between them
    for raw in actions:                          # raw actions [9] (actions.py)
        ro.next(raw); frame = ro.frame()         # uint8 [72, 128, 3]

Where a rollout starts (--context, --actions): contexts.py.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from actions import ENC_DIM, RAW_DIM, ActionEncoding, validate_raw
from compat import THIS_CODE, IncompatibleError, check_compatible, model_side, recorded_vqvae, vqvae_side
from devices import inference_autocast, resolve_device, sync
import texture
from motion import subtoken_shift
from vq_vae.model import FRAME_H, FRAME_W

SAMPLING_MODES = ("greedy", "temperature", "topk")
SHIPPED_MODEL = Path(__file__).resolve().parent / "checkpoints" / "blockworld_laptop" / "world_model.pt"
"""The pretrained block-world model committed with the repo (its card.md beside it)."""


# ----------------------------------------------------------------------------- bundle


@dataclass
class Bundle:
    """A world model and its VQ-VAE, checked compatible, on one device."""

    model: torch.nn.Module
    vqvae: torch.nn.Module
    encoding: ActionEncoding
    meta: dict[str, Any]
    model_path: Path
    vqvae_path: Path
    vqvae_identity: str
    device: torch.device
    step_fn: Callable[..., Any] = field(repr=False, default=None)  # type: ignore[assignment]
    """model.step, or its torch.compile'd version."""
    decode_fn: Callable[..., Any] = field(repr=False, default=None)  # type: ignore[assignment]
    """vqvae.decode_code, or its torch.compile'd version."""
    anchors: dict[float, texture.Anchor] = field(repr=False, default_factory=dict)
    """The fill anchors made for this VQ-VAE's codebook, by width (fill_anchor), so each rollout reuses one."""

    def __post_init__(self) -> None:
        self.step_fn = self.step_fn or self.model.step
        self.decode_fn = self.decode_fn or self.vqvae.decode_code

    @property
    def grid(self) -> tuple[int, int]:
        return tuple(int(x) for x in self.vqvae.grid)  # type: ignore[return-value]

    @property
    def codebook_size(self) -> int:
        return int(self.vqvae.codebook_size)

    @property
    def frame_size(self) -> tuple[int, int]:
        """(width, height) of the VQ-VAE's frames."""
        cfg = getattr(self.vqvae, "cfg", None)
        return int(getattr(cfg, "frame_width", FRAME_W)), int(getattr(cfg, "frame_height", FRAME_H))


def model_or_shipped(model: str) -> str:
    """`model` if given, else the shipped pretrained model (saying so in one line on stderr)."""
    import sys

    if model:
        return model
    if not SHIPPED_MODEL.is_file():
        raise ValueError(f"--model is required (no shipped model at {SHIPPED_MODEL})")
    print(f"no --model given: using the shipped block-world model {SHIPPED_MODEL} "
          f"(card: {SHIPPED_MODEL.parent / 'card.md'})", file=sys.stderr)
    return str(SHIPPED_MODEL)


def _resolve_recorded_path(recorded: str, identity: str | None, model_ckpt: Path) -> Path:
    """The recorded VQ-VAE path as written (relative to the working directory), else relative to the world
    model checkpoint's folder, else the same file name beside it: the first that exists and, when the
    checkpoint records the VQ-VAE's identity, is that VQ-VAE (a shipped model's recorded training path may
    hold another run's tokenizer on this machine)."""
    from ckpt_io import CheckpointError
    from vq_vae import vqvae_identity

    def matches(cand: Path) -> bool:
        try:
            return vqvae_identity(cand) == identity
        except CheckpointError:
            return False

    p = Path(recorded)
    found = [c for c in (p, model_ckpt.parent / p, model_ckpt.parent / p.name) if c.is_file()]
    for cand in found:
        if identity is None or matches(cand):
            return cand
    return found[0] if found else p


def load_bundle(model_ckpt: str | Path, vqvae_override: str | Path | None = None,
                device: str | torch.device = "auto", compile: bool = False) -> Bundle:
    """Load a weights-only world model and the VQ-VAE it records (or `vqvae_override`), checked compatible."""
    from ckpt_io import CheckpointError
    from vq_vae import load_vqvae, vqvae_identity
    from world_model_io import load_world_model

    dev = resolve_device(device)
    model_path = Path(model_ckpt)
    model, meta = load_world_model(model_path, device=dev)
    recorded_path, recorded_ident = recorded_vqvae(meta)
    if vqvae_override is not None:
        vq_path = Path(vqvae_override)
    elif recorded_path:
        vq_path = _resolve_recorded_path(recorded_path, recorded_ident, model_path)
    else:
        raise IncompatibleError(f"{model_path}: the checkpoint records no VQ-VAE; pass --vqvae")
    if not vq_path.is_file():
        raise IncompatibleError(f"VQ-VAE {vq_path} (recorded by world model {model_path}) not found; "
                                f"pass --vqvae PATH")
    try:
        vqvae = load_vqvae(vq_path, device=dev)
        ident = vqvae_identity(vq_path)
    except CheckpointError as e:
        raise IncompatibleError(f"VQ-VAE {vq_path} for world model {model_path}: {e}") from e
    model_s = model_side(model.cfg, model_path, meta)
    check_compatible(model_s, vqvae_side(vqvae, vq_path, ident))
    check_compatible(model_s, THIS_CODE)
    model.eval()
    vqvae.eval()
    encoding = meta.get("encoding")
    if isinstance(encoding, dict):
        encoding = ActionEncoding.from_dict(encoding)
    if not isinstance(encoding, ActionEncoding):
        raise IncompatibleError(f"{model_path}: the checkpoint records no action encoding")
    bundle = Bundle(model, vqvae, encoding, meta, model_path, vq_path, ident, dev)
    if compile:
        bundle.step_fn = torch.compile(model.step)
        bundle.decode_fn = torch.compile(vqvae.decode_code)
    return bundle


# ----------------------------------------------------------------------------- sampling


@dataclass
class Sampling:
    """How next-frame tokens are drawn from the model's logits."""

    mode: str = "greedy"
    """greedy (argmax), temperature (softmax(logits / T)) or topk (the k most likely codes, with T)."""
    temperature: float = 1.0
    """Softmax temperature for temperature and topk modes (> 0)."""
    top_k: int = 0
    """Codes kept per position in topk mode (>= 1)."""
    seed: int = 0
    """Seed of the sampling generator: the same seed gives the same rollout."""
    fill: bool = True
    """Where the warp repeated a row (a walk), draw the codes from the model's texture prior (texture.fill)
    when it has one; False = keep what `mode` drew there."""
    fill_anchor: float = 128.0
    """Width of the kernel that weighs the fill's draw towards the code the warp put there (texture.Anchor:
    exp(-d^2 / (width x the median nearest-code d^2)), d between VQ-VAE code vectors); 0 = the prior alone.
    README, "Anchoring the texture prior"."""

    def __post_init__(self) -> None:
        if self.mode not in SAMPLING_MODES:
            raise ValueError(f"sampling mode {self.mode!r} is not one of {SAMPLING_MODES}")
        if self.mode != "greedy" and not self.temperature > 0:
            raise ValueError(f"temperature must be > 0 for {self.mode} sampling, got {self.temperature}")
        if self.mode == "topk" and self.top_k < 1:
            raise ValueError(f"topk sampling needs top_k >= 1, got {self.top_k}")
        if not self.fill_anchor >= 0:
            raise ValueError(f"fill_anchor must be >= 0 (0 = no anchor), got {self.fill_anchor}")

    @classmethod
    def of(cls, cfg: Any) -> "Sampling":
        """The sampling a script's config asks for (its `sampling`, `temperature`, `top_k`, `seed`, `fill` and
        `fill_anchor` options: evaluate.py, inference.py and live_inference.py name them alike)."""
        return cls(cfg.sampling, cfg.temperature, cfg.top_k, cfg.seed, cfg.fill, cfg.fill_anchor)

    def generator(self, device: torch.device) -> torch.Generator:
        g = torch.Generator(device=device)
        g.manual_seed(self.seed)
        return g


def _gumbel(shape: Sequence[int], like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    u = torch.rand(tuple(shape), generator=generator, device=like.device, dtype=torch.float32)
    return -torch.log(-torch.log(u.clamp_(1e-10, 1.0 - 1e-7)))


def draw_tokens(model: Any, logits: torch.Tensor, state: Any, sampling: Sampling,
                generator: torch.Generator | None, anchor: texture.Anchor | None = None) -> torch.Tensor:
    """The next frame's tokens [B, h, w] from one model.step's logits and new state: `sampling.mode`'s draw,
    then the positions the warp repeated redrawn from the texture prior (with sampling.fill), weighed towards
    the drawn code with `anchor` (fill_anchor)."""
    tokens = sample_tokens(logits.float(), sampling.mode, sampling.temperature, sampling.top_k, generator)
    repeated = model.repeated(state) if sampling.fill else None
    return tokens if repeated is None else texture.fill(model.texture, tokens, repeated, generator, anchor)


def fill_anchor(bundle: Bundle, sampling: Sampling) -> texture.Anchor | None:
    """The texture.Anchor over the bundle's VQ-VAE codebook that `sampling` asks for (made once per bundle
    and width: its scale needs every code's nearest neighbour), or None (no fill, no anchor, or a model
    without a texture prior)."""
    if not (sampling.fill and sampling.fill_anchor > 0 and getattr(bundle.model, "texture", None) is not None):
        return None
    if sampling.fill_anchor not in bundle.anchors:
        bundle.anchors[sampling.fill_anchor] = texture.Anchor(bundle.vqvae.codebook, sampling.fill_anchor)
    return bundle.anchors[sampling.fill_anchor]


def sample_tokens(logits: torch.Tensor, mode: str = "greedy", temperature: float = 1.0, top_k: int = 0,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """logits [B, K, h, w] -> tokens int64 [B, h, w].

    greedy: argmax. temperature: a draw from softmax(logits / T) (Gumbel-max, which is exactly that
    distribution and needs one uniform per logit). topk: the same draw restricted to the top_k codes."""
    if logits.dim() != 4:
        raise ValueError(f"logits must be [B, K, h, w], got {tuple(logits.shape)}")
    if mode == "greedy":
        return logits.argmax(dim=1)
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    logits = logits.float() / temperature
    if mode == "temperature":
        return (logits + _gumbel(logits.shape, logits, generator)).argmax(dim=1)
    if mode == "topk":
        k = min(int(top_k), logits.shape[1])
        if k < 1:
            raise ValueError(f"topk sampling needs top_k >= 1, got {top_k}")
        vals, idx = logits.topk(k, dim=1)  # [B, k, h, w] each
        pick = (vals + _gumbel(vals.shape, vals, generator)).argmax(dim=1, keepdim=True)  # [B, 1, h, w]
        return idx.gather(1, pick).squeeze(1)
    raise ValueError(f"sampling mode {mode!r} is not one of {SAMPLING_MODES}")


# ----------------------------------------------------------------------------- encode / decode


def _as_tokens(tokens: Any, device: torch.device) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(tokens) if not isinstance(tokens, torch.Tensor) else tokens)
    return t.to(device=device, dtype=torch.int64)


@torch.inference_mode()
def decode_tokens(bundle: Bundle, tokens: Any, batch_size: int = 32, offsets: Any = None) -> np.ndarray:
    """tokens [N, h, w] -> RGB uint8 [N, H, W, 3]; with offsets [N, 2, h, w] (the model's pending motion,
    WorldModel.pending_motion) each frame is drawn that far on (motion.subtoken_shift)."""
    t = _as_tokens(tokens, bundle.device)
    off = None if offsets is None else torch.as_tensor(np.asarray(offsets, np.float32)).to(bundle.device)
    out = []
    for i in range(0, t.shape[0], batch_size):
        with inference_autocast(bundle.device):
            img = bundle.decode_fn(t[i:i + batch_size])  # [b, 3, H, W] in [0, 1]
        if off is not None:
            img = subtoken_shift(img, off[i:i + batch_size])
        out.append(to_uint8(img))
    w, h = bundle.frame_size
    return np.concatenate(out) if out else np.zeros((0, h, w, 3), np.uint8)


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """float [B, 3, H, W] in [0, 1] -> uint8 [B, H, W, 3]."""
    return (img.float().clamp(0, 1) * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


@torch.inference_mode()
def encode_frames(bundle: Bundle, frames: np.ndarray, batch_size: int = 32) -> torch.Tensor:
    """RGB uint8 [N, H, W, 3] (already at the VQ-VAE's frame size) -> tokens int64 [N, h, w]."""
    frames = np.asarray(frames, dtype=np.uint8)
    w, h = bundle.frame_size
    if frames.ndim != 4 or frames.shape[1:] != (h, w, 3):
        raise ValueError(f"frames must be uint8 [N, {h}, {w}, 3], got {frames.shape}")
    out = []
    for i in range(0, frames.shape[0], batch_size):
        x = torch.from_numpy(frames[i:i + batch_size]).to(bundle.device)
        with inference_autocast(bundle.device):
            out.append(bundle.vqvae.encode(x).to(torch.int64))
    return torch.cat(out)


# ----------------------------------------------------------------------------- rollout


class Rollout:
    """One autoregressive rollout driven by model.step: warm up on context, then one action per frame.

    The hidden state persists across `next` calls; `reset` returns to the state right after warmup (and
    re-seeds the sampler, so a reset rollout repeats itself under the same actions)."""

    def __init__(self, bundle: Bundle, sampling: Sampling | None = None, subtoken: bool = False) -> None:
        self.bundle = bundle
        self.sampling = sampling or Sampling()
        self.subtoken = subtoken
        """frame() draws the picture where its content is, between whole-token moves (pending_offset)."""
        self.device = bundle.device
        self.generator = self.sampling.generator(self.device)
        self.anchor = fill_anchor(bundle, self.sampling)
        self._ctx_tokens: torch.Tensor | None = None
        self._ctx_actions: torch.Tensor | None = None
        self.state: Any = None
        self.tokens: torch.Tensor | None = None
        self.frames_generated = 0
        self.step_ms = 0.0
        """Wall time of the last model step (and sampling), milliseconds."""
        self.decode_ms = 0.0
        """Wall time of the last VQ-VAE decode, milliseconds."""

    def _encode_action(self, raw: np.ndarray) -> torch.Tensor:
        enc = self.bundle.encoding.encode(np.asarray(raw, dtype=np.float32))
        return torch.from_numpy(enc).to(self.device)

    @torch.inference_mode()
    def warmup(self, tokens: Any, raw_actions: Any) -> None:
        """tokens [C, h, w] and the raw actions between them [C-1, 9]: the state sees frames 0..C-2 with
        their true actions and the current frame becomes tokens[C-1], as in teacher-forced training."""
        t = _as_tokens(tokens, self.device)
        if t.dim() != 3 or tuple(t.shape[1:]) != self.bundle.grid:
            raise ValueError(f"context tokens must be [C, {self.bundle.grid[0]}, {self.bundle.grid[1]}], "
                             f"got {tuple(t.shape)}")
        if int(t.max()) >= self.bundle.codebook_size or int(t.min()) < 0:
            raise ValueError(f"context tokens lie outside the codebook [0, {self.bundle.codebook_size})")
        a = validate_raw(np.asarray(raw_actions, dtype=np.float32).reshape(-1, RAW_DIM), "context actions")
        if a.shape[0] != t.shape[0] - 1:
            raise ValueError(f"{t.shape[0]} context frames need {t.shape[0] - 1} actions, got {a.shape[0]}")
        self._ctx_tokens = t
        self._ctx_actions = self._encode_action(a) if len(a) else torch.zeros(0, ENC_DIM, device=self.device)
        self.reset()

    @torch.inference_mode()
    def reset(self) -> None:
        """Back to the state right after warmup, sampler re-seeded."""
        if self._ctx_tokens is None:
            raise RuntimeError("Rollout.reset before warmup")
        self.generator.manual_seed(self.sampling.seed)
        model = self.bundle.model
        state = model.init_state(1, self.device)
        with inference_autocast(self.device):
            for i in range(self._ctx_tokens.shape[0] - 1):
                _, state = self.bundle.step_fn(self._ctx_tokens[i:i + 1], self._ctx_actions[i:i + 1], state)
        self.state = state
        self.tokens = self._ctx_tokens[-1].clone()
        self.frames_generated = 0

    @torch.inference_mode()
    def next(self, raw_action: Any) -> torch.Tensor:
        """Apply one raw action [9] to the current frame; returns the sampled next tokens [h, w] (int64, on
        the bundle's device), which become the current frame."""
        if self.tokens is None:
            raise RuntimeError("Rollout.next before warmup")
        t0 = time.perf_counter()
        act = self._encode_action(np.asarray(raw_action, dtype=np.float32).reshape(RAW_DIM))[None]  # [1, 15]
        with inference_autocast(self.device):
            logits, self.state = self.bundle.step_fn(self.tokens[None], act, self.state)
        self.tokens = draw_tokens(self.bundle.model, logits, self.state, self.sampling, self.generator,
                                  self.anchor)[0]
        sync(self.device)
        self.step_ms = (time.perf_counter() - t0) * 1e3
        self.frames_generated += 1
        return self.tokens

    @torch.inference_mode()
    def frame(self) -> np.ndarray:
        """The current frame decoded: RGB uint8 [H, W, 3]."""
        if self.tokens is None:
            raise RuntimeError("Rollout.frame before warmup")
        t0 = time.perf_counter()
        with inference_autocast(self.device):
            img = self.bundle.decode_fn(self.tokens[None])  # [1, 3, H, W]
        off = self.pending_offset()
        if off is not None:
            img = subtoken_shift(img, off[None])
        out = to_uint8(img)[0]
        self.decode_ms = (time.perf_counter() - t0) * 1e3
        return out

    def pending_offset(self) -> torch.Tensor | None:
        """The current frame's motion not yet applied by the token warp [2, h, w] (tokens), or None (no
        motion path, or subtoken off)."""
        off = self.bundle.model.pending_motion(self.state) if self.subtoken and self.state is not None else None
        return None if off is None else off[0].float()

    def run(self, raw_actions: np.ndarray) -> Iterator[torch.Tensor]:
        """next() for each raw action [N, 9], yielding the tokens."""
        for a in np.asarray(raw_actions, dtype=np.float32):
            yield self.next(a)


@torch.inference_mode()
def rollout_batch(bundle: Bundle, context_tokens: Any, context_actions: Any, future_actions: Any,
                  sampling: Sampling | None = None, subtoken: bool = False
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Batched rollouts: context tokens [B, C, h, w], context raw actions [B, C-1, 9], future raw actions
    [B, N, 9] -> (sampled tokens [B, N, h, w] (int64, bundle device), with `subtoken` each frame's pending
    motion [B, N, 2, h, w] (float32; decode_tokens' offsets), else or without a motion path None); frame n
    follows future action n."""
    sampling = sampling or Sampling()
    dev = bundle.device
    ctx = _as_tokens(context_tokens, dev)
    ca = np.asarray(context_actions, dtype=np.float32)
    fa = np.asarray(future_actions, dtype=np.float32)
    b, c = ctx.shape[:2]
    if ca.shape != (b, c - 1, RAW_DIM) or fa.ndim != 3 or fa.shape[0] != b or fa.shape[2] != RAW_DIM:
        raise ValueError(f"rollout_batch shapes: context {tuple(ctx.shape)}, context actions {ca.shape} "
                         f"(want {(b, c - 1, RAW_DIM)}), future actions {fa.shape} (want [{b}, N, {RAW_DIM}])")
    enc_ctx = torch.from_numpy(bundle.encoding.encode(ca)).to(dev)  # [B, C-1, 15]
    enc_fut = torch.from_numpy(bundle.encoding.encode(fa)).to(dev)  # [B, N, 15]
    gen = sampling.generator(dev)
    anchor = fill_anchor(bundle, sampling)
    state = bundle.model.init_state(b, dev)
    out = torch.empty((b, fa.shape[1]) + tuple(ctx.shape[2:]), dtype=torch.int64, device=dev)
    offsets = []
    with inference_autocast(dev):
        for i in range(c - 1):
            _, state = bundle.step_fn(ctx[:, i], enc_ctx[:, i], state)
        cur = ctx[:, -1]
        for n in range(fa.shape[1]):
            logits, state = bundle.step_fn(cur, enc_fut[:, n], state)
            cur = draw_tokens(bundle.model, logits, state, sampling, gen, anchor)
            out[:, n] = cur
            pending = bundle.model.pending_motion(state) if subtoken else None
            if pending is not None:
                offsets.append(pending.float())
    return out, (torch.stack(offsets, 1) if offsets else None)  # offsets [B, N, 2, h, w]


def gflop_per_frame(bundle: Bundle) -> dict[str, float]:
    """FLOPs of one model step and one VQ decode (torch's flop counter: matmuls and convolutions, 2 per
    multiply-add), in GFLOP."""
    from torch.utils.flop_counter import FlopCounterMode

    dev = bundle.device
    h, w = bundle.grid
    tokens = torch.zeros((1, h, w), dtype=torch.int64, device=dev)
    act = torch.zeros((1, ENC_DIM), device=dev)
    with torch.inference_mode():
        state = bundle.model.init_state(1, dev)
        with FlopCounterMode(display=False) as fc:
            bundle.model.step(tokens, act, state)
        step = fc.get_total_flops()
        with FlopCounterMode(display=False) as fc:
            bundle.vqvae.decode_code(tokens)
        dec = fc.get_total_flops()
    return {"model_step_gflop": step / 1e9, "decode_gflop": dec / 1e9, "total_gflop": (step + dec) / 1e9}


def summarize_ms(values: Sequence[float]) -> dict[str, float | None]:
    """mean / p50 / p95 / max of a latency list, milliseconds (None when empty, so the JSON stays valid)."""
    if not values:
        return {"mean": None, "p50": None, "p95": None, "max": None}
    a = np.asarray(values, dtype=np.float64)
    return {"mean": round(float(a.mean()), 3), "p50": round(float(np.percentile(a, 50)), 3),
            "p95": round(float(np.percentile(a, 95)), 3), "max": round(float(a.max()), 3)}
