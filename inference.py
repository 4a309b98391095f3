"""inference.py: a video from a world-model checkpoint, a context and an action script.

    python inference.py --model CKPT --context SPEC --actions SCRIPT --frames N --out out.mp4

Writes out.mp4 (the N generated frames, native 128x72, H.264 at 16 fps), out_x4.mp4 (the same, upscaled
with nearest neighbour by --upscale) and out.json (what was run: context, sampling, the actions as a script,
timings). With --compare each frame is [model | ground truth] side by side (width doubled).

--context SPEC:
    shard:PATH.npz[:START]   C (--context-frames) frames of a token shard from START with their true actions
    video:PATH.mp4[:START]   C frames of a video, encoded with the VQ-VAE (actions from a GameFactory JSON
                             beside it: ../metadata/<stem>.json or <stem>.json; no-ops otherwise)
    png:A.png[,B.png,...]    still frames, or png:DIR for every *.png in DIR (sorted); no-op actions between
    blockworld:SEED[:BIOME]  the block world's spawn frame for World(SEED) (in BIOME if given: plains,
                             forest, desert, snow), then C-1 no-op ticks of the simulator
    (a bare path ending in .npz / .mp4 / .png, or a directory, is read as that kind)

--actions:
    episode                  the context episode's own actions after the context (shards, videos with JSON)
    PRESET                   turn-left-360, turn-right-360, walk-forward, walk-back, strafe-left,
                             strafe-right, look-up-down, jump, noop, random; "a+b" combines two
    FILE.json / FILE.csv     an action script: a list of objects with actions.py raw fields (yaw_deg,
                             pitch_deg in degrees per 1/16 s step, +yaw right, +pitch down; forward, back,
                             left, right, jump, sneak, sprint held fraction 0..1; missing = 0) and an
                             optional "repeat", e.g. [{"forward": 1, "repeat": 32}, {"yaw_deg": -4}]
                             (CSV: a header with the same names)

Ground truth for --compare: the episode's own frames with --actions episode (shard frames are shown as the
VQ-VAE's reconstruction of the true tokens), or, for any actions, the block-world oracle: blockworld contexts
and videos written by blockworld.generate (their JSON lets the simulator replay the episode).
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from config import exit_on_error, main_config, to_dict


@dataclass
class InferenceConfig:
    model: str = ""
    """World-model checkpoint (weights-only export); its VQ-VAE and action encoding come from it."""
    vqvae: str = ""
    """VQ-VAE checkpoint replacing the one the world model records (empty: use the recorded one)."""
    context: str = ""
    """Where to start: shard:PATH.npz[:START], video:PATH.mp4[:START], png:A.png[,B.png] or png:DIR,
    blockworld:SEED[:BIOME] (see the top of --help)."""
    context_frames: int = 8
    """C: context frames warming the hidden state (shard, video and block-world contexts)."""
    actions: str = "episode"
    """episode (the context's own), a preset name (turn-left-360, walk-forward, ..., random; a+b combines)
    or a .json/.csv action script."""
    frames: int = 0
    """N frames to generate; 0 = as many as the actions give (presets: 96)."""
    out: str = "runs/inference/out.mp4"
    """Output mp4 (native size); out_x{upscale}.mp4 and out.json are written beside it."""
    upscale: int = 4
    """Integer nearest-neighbour scale of the second video (1 writes none)."""
    compare: bool = False
    """Put the ground truth beside the model's frames (episode actions, or any actions in the block world)."""
    sampling: str = "greedy"
    """greedy, temperature or topk."""
    temperature: float = 1.0
    """Softmax temperature for temperature and topk sampling."""
    top_k: int = 0
    """Codes kept per position in topk sampling."""
    fill: bool = True
    """Draw the rows a walk's warp repeats from the model's texture prior (rollout.Sampling.fill), when it has
    one; false = keep the sampling mode's codes there."""
    fill_anchor: float = 128.0
    """Weigh the fill's draw towards the code the warp put there (rollout.Sampling.fill_anchor: the kernel's
    width in median nearest-code distances); 0 = the prior alone."""
    seed: int = 0
    """Seed of the sampler (and of the random preset)."""
    device: str = "auto"
    """auto, cpu or cuda."""
    cpu_threads: int = 0
    """torch CPU threads (0: torch's default). On a busy machine 1 can beat 2: fewer OpenMP barrier stalls."""
    subtoken: bool = False
    """Draw each frame where its content is between whole-token moves (the motion the token warp has not
    applied yet, motion.subtoken_shift), as live play does; off draws the tokens as they lie, as evaluate.py
    measures by default."""
    compile: bool = False
    """torch.compile the model step and the VQ decoder (slow first frame, faster after)."""


def upscaled_path(out: Path, factor: int) -> Path:
    return out.with_name(f"{out.stem}_x{factor}{out.suffix}")


def run(cfg: InferenceConfig) -> dict:
    """Generate the video; returns the summary also written to <out>.json."""
    import torch
    from tqdm import tqdm

    from ckpt_io import atomic_write_json
    from action_scripts import actions_to_entries
    from contexts import load_context, resolve_actions
    from rollout import Rollout, Sampling, decode_tokens, load_bundle, model_or_shipped
    from video_io import upscale_nearest, write_mp4

    model = model_or_shipped(cfg.model)
    if not cfg.context:
        raise ValueError("--context is required (e.g. blockworld:0 or shard:preprocessed/x.npz:0)")
    if cfg.upscale < 1:
        raise ValueError(f"--upscale must be >= 1, got {cfg.upscale}")
    out = Path(cfg.out)
    if out.suffix.lower() != ".mp4":
        raise ValueError(f"--out must end in .mp4, got {out}")
    sampling = Sampling.of(cfg)
    if cfg.cpu_threads > 0:
        torch.set_num_threads(cfg.cpu_threads)
    bundle = load_bundle(model, cfg.vqvae or None, cfg.device, cfg.compile)
    ctx = load_context(cfg.context, bundle, cfg.context_frames)
    actions, own = resolve_actions(cfg.actions, ctx, cfg.frames, cfg.seed)
    truth = ctx.ground_truth(actions, own) if cfg.compare else None

    ro = Rollout(bundle, sampling, subtoken=cfg.subtoken)
    t0 = time.perf_counter()
    ro.warmup(ctx.tokens, ctx.actions)
    warm_s = time.perf_counter() - t0
    tokens, offsets = [], []
    step_ms = []
    for a in tqdm(actions, desc="rollout", unit="frame", file=sys.stderr):
        tokens.append(ro.next(a))
        offsets.append(ro.pending_offset())
        step_ms.append(ro.step_ms)
    t1 = time.perf_counter()
    pending = None if offsets[0] is None else torch.stack(offsets)  # [N, 2, h, w]
    frames = decode_tokens(bundle, torch.stack(tokens), offsets=pending)  # [N, H, W, 3]
    decode_s = time.perf_counter() - t1
    if truth is not None:
        frames = np.concatenate([frames, truth[:len(frames)]], axis=2)  # [N, H, 2W, 3]

    fps = 16.0
    write_mp4(out, frames, fps)
    written = [str(out)]
    if cfg.upscale > 1:
        up = upscaled_path(out, cfg.upscale)
        write_mp4(up, (upscale_nearest(f, cfg.upscale) for f in frames), fps)
        written.append(str(up))
    summary = {
        "config": to_dict(cfg),
        "model": str(bundle.model_path), "vqvae": str(bundle.vqvae_path),
        "vqvae_identity": bundle.vqvae_identity, "device": str(bundle.device),
        "context": ctx.source, "context_frames": int(ctx.tokens.shape[0]),
        "frames": len(frames), "fps": fps, "compare": truth is not None,
        "own_episode_actions": own,
        "warmup_s": round(warm_s, 3), "decode_s": round(decode_s, 3),
        "model_ms_mean": round(float(np.mean(step_ms)), 3),
        "videos": written,
        "actions": actions_to_entries(actions),
    }
    atomic_write_json(out.with_suffix(".json"), summary)
    return summary


def main() -> None:
    cfg = main_config(InferenceConfig, doc=__doc__)
    # CheckpointError, VideoError and IncompatibleError are ValueErrors
    summary = exit_on_error(lambda: run(cfg))
    brief = {k: v for k, v in summary.items() if k not in ("actions", "config")}
    print(json.dumps(brief))


if __name__ == "__main__":
    main()
