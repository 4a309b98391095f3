"""Synthetic source datasets for the preprocess / sources / dataset tests, built from the documented formats
(../shared/reference/data-formats.md): a textured 360-degree panorama viewed through a 128x72 window whose
horizontal position follows the cumulative yaw, so image motion and yaw actions are consistent under each
source's alignment rule and `--check` can measure a lag."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from actions import GAMEFACTORY_DEG_PER_UNIT, VPT_DEG_PER_PIXEL
from video_io import write_mp4

W, H = 128, 72
PX_PER_DEG = 2.0
PANORAMA_W = int(360 * PX_PER_DEG)


def panorama(seed: int = 0) -> np.ndarray:
    """A wrap-around texture [H, PANORAMA_W, 3] with structure at several scales."""
    import cv2

    rng = np.random.default_rng(seed)
    img = np.zeros((H, PANORAMA_W, 3), np.float32)
    for k, scale in ((9, 60.0), (3, 50.0), (1, 30.0)):
        noise = rng.normal(0, 1, (H, PANORAMA_W, 3)).astype(np.float32)
        pad = 4 * k
        wrapped = np.pad(noise, ((0, 0), (pad, pad), (0, 0)), mode="wrap")  # [H, W + 2 pad, 3]
        img += scale * cv2.GaussianBlur(wrapped, (0, 0), k)[:, pad:-pad]
    return np.clip(img * 2.0 + 128, 0, 255).astype(np.uint8)


def view(pano: np.ndarray, yaw_deg: float) -> np.ndarray:
    """The 128x72 window of the panorama at camera yaw (turning right moves the window right)."""
    x0 = int(round(yaw_deg * PX_PER_DEG)) % PANORAMA_W
    return np.take(pano, np.arange(x0, x0 + W) % PANORAMA_W, axis=1)


def frames_for(produced_yaw: np.ndarray, seed: int = 0) -> np.ndarray:
    """produced_yaw[i] = yaw (degrees) of the action that produced frame i (entry 0 unused) -> frames."""
    pano = panorama(seed)
    cum = np.cumsum(np.concatenate([[0.0], produced_yaw[1:]]))
    return np.stack([view(pano, c) for c in cum])


def random_yaw(n: int, rng: np.random.Generator) -> np.ndarray:
    """Per-step yaw in degrees with runs of turning and standing still (multiples of 1.5 degrees)."""
    yaw = np.zeros(n)
    i = 0
    while i < n:
        run = int(rng.integers(1, 5))
        yaw[i:i + run] = rng.choice([-6.0, -3.0, 0.0, 0.0, 3.0, 6.0, 9.0])
        i += run
    return yaw


def gamefactory_actions(yaw_deg: np.ndarray, rng: np.random.Generator) -> dict[str, dict]:
    """GameFactory `actions` dict with entry str(i) producing frame i (yaw_deg[0] is ignored)."""
    actions = {}
    yaw_abs = 0.0
    for i in range(len(yaw_deg)):
        dy = 0.0 if i == 0 else float(yaw_deg[i])
        yaw_abs += dy
        actions[str(i)] = {"ws": int(rng.integers(0, 3)), "ad": int(rng.integers(0, 3)),
                           "scs": int(rng.integers(0, 4)), "pitch": 0.0, "yaw": yaw_abs,
                           "pitch_delta": 0.0, "yaw_delta": dy / GAMEFACTORY_DEG_PER_UNIT, "pos": [0, 64, 0]}
    return actions


def write_gamefactory(root: Path, name: str, n: int, seed: int, fps: float = 16.0, lag: int = 0,
                      layout: str = "standard") -> dict:
    """One GameFactory episode (standard layout video/ + metadata/, or 'sibling': JSON next to the mp4).
    With lag=k the stored actions are delayed by k frames (entry i holds what produced frame i-k)."""
    rng = np.random.default_rng(seed)
    yaw = random_yaw(n, rng)
    frames = frames_for(yaw, seed)
    actions = gamefactory_actions(yaw, rng)
    if lag:
        keys = [str(i) for i in range(n)]
        shifted = {k: dict(actions[keys[max(0, min(n - 1, i - lag))]]) for i, k in enumerate(keys)}
        shifted["0"] = actions["0"]
        actions = shifted
    doc = {"biome": "plains", "initial_weather": "clear", "start_time": "Noon", "actions": actions}
    vdir, jdir = (root / "video", root / "metadata") if layout == "standard" else (root, root)
    vdir.mkdir(parents=True, exist_ok=True)
    jdir.mkdir(parents=True, exist_ok=True)
    write_mp4(vdir / f"{name}.mp4", frames, fps)
    (jdir / f"{name}.json").write_text(json.dumps(doc))
    return {"video": vdir / f"{name}.mp4", "json": jdir / f"{name}.json", "yaw": yaw, "doc": doc}


def write_minerl(root: Path, env: str, stream: str, n_actions: int, lead: int, seed: int,
                 fps: float = 20.0) -> dict:
    """A MineRL v0 episode: `lead` junk frames, then n_actions + 1 states; action[k] is taken on state k
    (so it produces state k + 1). Keys: forward held on even steps, jump every third step."""
    rng = np.random.default_rng(seed)
    yaw_steps = random_yaw(n_actions, rng)
    pitch_steps = rng.choice([-1.0, 0.0, 1.0], size=n_actions)
    produced = np.concatenate([[0.0], yaw_steps])
    states = frames_for(produced, seed)
    junk = np.full((lead, H, W, 3), 40, np.uint8)
    d = root / env / stream
    d.mkdir(parents=True, exist_ok=True)
    write_mp4(d / "recording.mp4", np.concatenate([junk, states]), fps)
    steps = np.arange(n_actions)
    arrays = {"reward": np.zeros(n_actions, np.float32),
              "action$camera": np.stack([pitch_steps, yaw_steps], 1).astype(np.float32),
              "action$forward": (steps % 2 == 0).astype(np.int64), "action$back": np.zeros(n_actions, np.int64),
              "action$left": np.zeros(n_actions, np.int64), "action$right": np.zeros(n_actions, np.int64),
              "action$jump": (steps % 3 == 0).astype(np.int64), "action$sneak": np.zeros(n_actions, np.int64),
              "action$sprint": np.zeros(n_actions, np.int64), "action$attack": np.ones(n_actions, np.int64)}
    np.savez_compressed(d / "rendered.npz", **arrays)
    total = lead + n_actions + 1
    (d / "metadata.json").write_text(json.dumps({
        "success": True, "duration_ms": n_actions * 50, "duration_steps": n_actions, "total_reward": 0,
        "stream_name": stream, "true_video_frame_count": total}))
    return {"dir": d, "yaw": yaw_steps, "pitch": pitch_steps, "arrays": arrays, "lead": lead, "total": total}


def write_vpt(root: Path, name: str, n: int, seed: int, fps: float = 20.0) -> dict:
    """A VPT segment: n frames and n JSONL lines; line i is the action taken on frame i (its effect shows in
    frame i + 1). Includes a null line and a null keyboard, as real recordings do."""
    rng = np.random.default_rng(seed)
    yaw_deg = random_yaw(n, rng)
    dx = yaw_deg / VPT_DEG_PER_PIXEL
    produced = np.concatenate([[0.0], yaw_deg[:-1]])
    frames = frames_for(produced, seed)
    lines = []
    for i in range(n):
        keys = ["key.keyboard.w"] if i % 2 == 0 else ["key.keyboard.space", "key.keyboard.left.control"]
        lines.append({"mouse": {"x": 0, "y": 0, "dx": float(dx[i]), "dy": 0.0, "buttons": [], "newButtons": []},
                      "keyboard": {"keys": keys, "newKeys": [], "chars": ""}, "isGuiOpen": False,
                      "tick": i, "milli": i * 50})
    null_line = n // 2
    lines[null_line] = None
    lines[null_line + 1]["keyboard"] = None
    root.mkdir(parents=True, exist_ok=True)
    write_mp4(root / f"{name}.mp4", frames, fps)
    (root / f"{name}.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return {"video": root / f"{name}.mp4", "jsonl": root / f"{name}.jsonl", "yaw": yaw_deg, "lines": lines,
            "null_line": null_line}


def write_zero_frame_mp4(path: Path) -> None:
    """An mp4 written by an H.264 encoder that never got a frame (the muxer drops the empty track)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as c:
        s = c.add_stream("libx264", rate=16)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        c.start_encoding()


def tiny_vqvae(path: Path, seed: int = 0) -> Path:
    """A randomly initialised small VQ-VAE built by the real code, saved in the real format."""
    import torch

    from vq_vae import save_vqvae
    from vq_vae.model import VQVAE, VQVAEConfig

    torch.manual_seed(seed)
    cfg = VQVAEConfig(codebook_size=64, code_dim=8, enc_channels=(8, 8, 8), enc_res_blocks=(0, 0, 0),
                      dec_channels=(8, 8, 8), dec_res_blocks=(0, 0, 0), kmeans_iters=0)
    model = VQVAE(cfg).eval()
    model.quantizer.initted.fill_(True)  # a random codebook counts as initialised for these tests
    save_vqvae(model, path)
    return path


def write_token_shards(root: Path, lengths: list[int], grid: tuple[int, int] = (3, 4), codebook: int = 50,
                       seed: int = 0) -> list[dict]:
    """Shards with random tokens/actions (no VQ-VAE) plus meta.json and manifest.json, as preprocess.py
    writes them. Returns the arrays per file."""
    from actions import ACTION_SCHEMA_VERSION
    from ckpt_io import atomic_write_json
    from preprocess import write_shard

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    out, manifest = [], []
    for i, k in enumerate(lengths):
        tokens = rng.integers(0, codebook, (k, *grid)).astype(np.uint16)
        actions = np.zeros((k - 1, 9), np.float32)
        actions[:, :2] = rng.normal(0, 5, (k - 1, 2))
        actions[:, 2:] = rng.integers(0, 2, (k - 1, 7))
        frame_index = (np.arange(k) * 2 + 16).astype(np.int32)
        name = f"vid{i:02d}.npz"
        write_shard(root / name, tokens, actions, frame_index)
        manifest.append({"file": name, "length": k, "source": "gamefactory", "fps": 16.0})
        out.append({"file": name, "tokens": tokens, "actions": actions, "frame_index": frame_index})
    atomic_write_json(root / "meta.json", {"codebook_size": codebook, "grid": list(grid), "fps": 16.0,
                                           "frame_size": [128, 72], "action_schema_version": ACTION_SCHEMA_VERSION,
                                           "vqvae_identity": "test", "vqvae_path": "none"})
    atomic_write_json(root / "manifest.json", manifest)
    return out


def inject_lag(json_path: Path, lag: int) -> None:
    """Delay a GameFactory JSON's actions by `lag` frames: entry i gets what produced frame i - lag (the
    first entries get a no-op), as a recorder that logs actions late would."""
    doc = json.loads(json_path.read_text())
    acts = doc["actions"]
    n = len(acts)
    still = {**acts["0"], "ws": 0, "ad": 0, "scs": 0, "yaw_delta": 0.0, "pitch_delta": 0.0}
    doc["actions"] = {str(i): (acts[str(i - lag)] if i - lag >= 1 else still) if i else acts["0"]
                      for i in range(n)}
    json_path.write_text(json.dumps(doc))
