"""Preprocessing speed: decode alone vs the whole pipeline (decode + align + resize + VQ-VAE encode + write)
on the same videos, in source frames per second. Target: whole pipeline >= half the decode-only speed.

    python -m bench.preprocess [--data DIR] [--vqvae CKPT] [--workers N] [--device auto] [--out FILE.json]

Without --data it synthesises GameFactory-layout videos (--videos x --seconds at --src-size, 16 fps: a
textured scene panning by the yaw actions, H.264 like the real data); without --vqvae it uses a randomly
initialised tokenizer (--tokenizer default: the real architecture and cost; tiny: encoding nearly free, as
on a GPU, so the number shows the cost of everything else). Prints one JSON object.
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from config import main_config, to_dict  # noqa: E402


@dataclass
class BenchPreprocessConfig:
    data: str = ""
    """Videos to measure (any preprocess.py layout); empty synthesises GameFactory-like videos."""
    vqvae: str = ""
    """Tokenizer checkpoint; empty uses a random tokenizer built with --tokenizer."""
    tokenizer: Literal["default", "tiny", "none"] = "default"
    """Random tokenizer without --vqvae: default architecture (the real encode cost), tiny (a cheap
    network), or none (the encode call returns zeros at once, an infinitely fast GPU: measures what the
    rest of the pipeline costs)."""
    videos: int = 4
    """Synthetic videos (without --data)."""
    seconds: float = 10.0
    """Length of each synthetic video in seconds (16 fps)."""
    src_size: str = "640x360"
    """Synthetic source size WxH (GameFactory is 640x360)."""
    workers: int = 0
    """Decode processes, as preprocess.py --workers (0: one background thread)."""
    device: str = "auto"
    """Encoding device, as preprocess.py --device."""
    batch_size: int = 256
    """Frames per encode call, as preprocess.py --batch-size."""
    repeats: int = 2
    """Each measurement is repeated and the best run kept (the machine may be shared)."""
    out: str = ""
    """Also write the JSON result to this file."""


def synthesize(root: Path, videos: int, seconds: float, size: tuple[int, int]) -> None:
    import cv2

    from actions import GAMEFACTORY_DEG_PER_UNIT
    from video_io import write_mp4

    w, h = size
    rng = np.random.default_rng(0)
    pano_w = 4 * w
    noise = rng.normal(0, 1, (h, pano_w + 64, 3)).astype(np.float32)
    pano = np.clip(cv2.GaussianBlur(noise, (0, 0), 6) * 400 + 128, 0, 255).astype(np.uint8)[:, :pano_w]
    n = int(round(seconds * 16))
    (root / "video").mkdir(parents=True, exist_ok=True)
    (root / "metadata").mkdir(parents=True, exist_ok=True)
    for v in range(videos):
        yaw = rng.choice([-6.0, -3.0, 0.0, 3.0, 6.0], size=n)
        yaw[0] = 0.0
        x = (np.cumsum(yaw) * w / 90).astype(int)  # 90 degree field of view
        frames = (np.take(pano, (np.arange(w) + xi) % pano_w, axis=1) for xi in x)
        write_mp4(root / "video" / f"bench_{v}.mp4", frames, 16.0, crf=23)
        actions = {str(i): {"ws": int(rng.integers(0, 3)), "ad": 0, "scs": 0, "pitch": 0.0, "yaw": 0.0,
                            "pitch_delta": 0.0, "yaw_delta": float(yaw[i]) / GAMEFACTORY_DEG_PER_UNIT,
                            "pos": [0, 64, 0]} for i in range(n)}
        (root / "metadata" / f"bench_{v}.json").write_text(json.dumps({"actions": actions}))


def decode_only(data: str, cfg_pp, workers: int) -> tuple[int, float]:
    """Run just the decode side of preprocess.py (same threads/processes), draining its queue."""
    from config import parse_size
    from preprocess import Decoders, DecodeSettings
    from sources import discover

    episodes, _ = discover(data, cfg_pp.source)
    tasks = list(enumerate(episodes))
    s = DecodeSettings(cfg_pp.fps, parse_size(cfg_pp.size), cfg_pp.skip_start_seconds)
    t0 = time.perf_counter()
    done = source_frames = 0
    with Decoders(tasks, s, workers) as dec:
        while done < len(tasks):
            kind, _i, payload = dec.get()
            if kind == "end":
                source_frames += payload["source_frames"]
            if kind in ("end", "error"):
                done += 1
    return source_frames, time.perf_counter() - t0


def main() -> None:
    cfg = main_config(BenchPreprocessConfig)
    with tempfile.TemporaryDirectory(prefix="bench_preprocess_") as tmp:
        result = measure(cfg, Path(tmp))
    result["headline"] = {k: result[k] for k in ("decode_only_frames_per_s", "pipeline_frames_per_s",
                                                 "encode_only_frames_per_s", "pipeline_over_decode",
                                                 "target_pipeline_over_decode")}
    text = json.dumps(result, indent=2)
    print(text)
    if cfg.out:
        from ckpt_io import atomic_write_text

        atomic_write_text(cfg.out, text + "\n")


def measure(cfg: BenchPreprocessConfig, tmp: Path) -> dict:
    import torch

    import preprocess
    from devices import resolve_device
    from vq_vae import VQVAE, VQVAEConfig, save_vqvae

    data = cfg.data
    if not data:
        data = str(tmp / "data")
        w, h = (int(v) for v in cfg.src_size.split("x"))
        synthesize(Path(data), cfg.videos, cfg.seconds, (w, h))
    vq_path = cfg.vqvae
    if not vq_path:
        torch.manual_seed(0)
        arch = VQVAEConfig() if cfg.tokenizer == "default" else VQVAEConfig(
            codebook_size=64, code_dim=8, enc_channels=(8, 8, 8), enc_res_blocks=(0, 0, 0),
            dec_channels=(8, 8, 8), dec_res_blocks=(0, 0, 0))
        model = VQVAE(arch)
        model.quantizer.initted.fill_(True)
        vq_path = str(tmp / "vqvae_random.pt")
        save_vqvae(model, vq_path)
    if cfg.tokenizer == "none":
        class FreeEncoder(preprocess.TokenEncoder):
            def __call__(self, frames: np.ndarray) -> np.ndarray:
                return np.zeros((len(frames), frames.shape[1] // 4, frames.shape[2] // 4), np.uint16)

        preprocess.TokenEncoder = FreeEncoder  # run() builds its encoder from this name
    pp = preprocess.PreprocessConfig(data=data, vqvae=vq_path, out="", workers=cfg.workers, device=cfg.device,
                                     batch_size=cfg.batch_size, skip_start_seconds=0.0)
    decode = []
    for _ in range(cfg.repeats):
        frames, secs = decode_only(data, pp, cfg.workers)
        decode.append(frames / secs)
    whole = []
    for r in range(cfg.repeats):
        pp.out = str(tmp / f"out{r}")
        with contextlib.redirect_stdout(sys.stderr):  # keep stdout for the JSON result
            report = preprocess.run(pp)
        t = report["totals"]
        whole.append(t["source_frames_per_s"])
    enc = preprocess.TokenEncoder(vq_path, cfg.device, cfg.batch_size, True, (128, 72))
    n = 512 if enc.device.type == "cuda" else 96
    x = np.random.default_rng(0).integers(0, 256, (n, 72, 128, 3), dtype=np.uint8)
    enc(x[:8])  # warm-up
    t0 = time.perf_counter()
    enc(x)
    encode_fps = len(x) / (time.perf_counter() - t0)
    return {
        "bench": "preprocess", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                    "device": str(resolve_device(cfg.device)),
                    "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
        "config": to_dict(cfg), "source_frames": t["source_frames_decoded"],
        "decode_only_frames_per_s": round(max(decode), 1),
        "pipeline_frames_per_s": round(max(whole), 1),
        "encode_only_frames_per_s": round(encode_fps, 1),
        "pipeline_over_decode": round(max(whole) / max(decode), 3),
        "target_pipeline_over_decode": 0.5,
        # 1.0 means decoding is fully hidden behind encoding (or the reverse): the stages overlap
        "pipeline_over_slowest_stage": round(max(whole) / min(max(decode), encode_fps), 3),
    }


if __name__ == "__main__":
    main()
