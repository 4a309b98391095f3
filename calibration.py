"""The data-calibrated parts of a world model, measured before training step 0 (train.py calls
`calibrate_motion`): the motion path's coefficients, the jump's profile and the movement keys' flow field
(motion.py fits them; here they are read from the training shards and their source video), and the edge
memory's fill. The result is a dict of WorldModelConfig fields (MOTION_FIELDS), saved with every checkpoint."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

import motion
import video_io
from actions import ENC_FIELDS, ActionEncoding, make_raw

MOTION_FIELDS = ("motion_coef", "jump_profile", "key_field", "edge_fill")
"""The WorldModelConfig fields calibrated from the data before step 0 (calibrate_motion)."""


def source_frame_pairs(root: Path, entries: dict[str, dict[str, Any]], items: list[dict[str, Any]],
                       size: tuple[int, int]) -> list[tuple[np.ndarray, np.ndarray] | None]:
    """The frames (uint8 [H, W, 3] twice, resized as preprocess.py resized them) of each 2-frame window in
    `items` (TokenWindowDataset items) from the source video its shard's manifest entry names, at the
    shard's frame_index; None where that video is gone or unreadable."""
    from dataset import open_shard
    from sources import SourceError, count_frames, decode_kept

    out: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(items)
    by_file: dict[str, list[int]] = {}
    for k, it in enumerate(items):
        by_file.setdefault(it["file"], []).append(k)
    for f, ks in by_file.items():
        video = entries[f].get("video")
        if not video or not Path(video).is_file():
            continue
        index = np.asarray(open_shard(root / f)["frame_index"])
        want = {k: (int(index[items[k]["start"]]), int(index[items[k]["start"] + 1])) for k in ks}
        frames_at = sorted({i for pair in want.values() for i in pair})
        try:
            got = np.concatenate(list(decode_kept(video, np.asarray(frames_at), size, count_frames(video))))
        except (OSError, SourceError, video_io.VideoError, IndexError):
            continue
        pos = {i: n for n, i in enumerate(frames_at)}
        for k, (a, b) in want.items():
            out[k] = (got[pos[a]], got[pos[b]])
    return out


def edge_fill_codes(root: str, files: list[str]) -> tuple[int, int]:
    """The commonest code of the top row and of the bottom row of every frame of the training files: what
    the edge memory assumes beyond an edge it has not seen (model_convGru.WorldModelConfig.edge_fill)."""
    from dataset import open_shard

    top, bottom = np.zeros(1 << 16, np.int64), np.zeros(1 << 16, np.int64)
    for f in files:
        tokens = np.asarray(open_shard(Path(root) / f)["tokens"])  # [T, gh, gw]
        top += np.bincount(tokens[:, 0].ravel(), minlength=len(top))
        bottom += np.bincount(tokens[:, -1].ravel(), minlength=len(bottom))
    return int(top.argmax()), int(bottom.argmax())


def token_maps(root: str, files: list[str], max_frames: int) -> np.ndarray:
    """The token maps [N, gh, gw] of the training files' frames, at most `max_frames` of them evenly spaced:
    what the texture prior is fitted on (texture.fit)."""
    from dataset import open_shard

    shards = [open_shard(Path(root) / f)["tokens"] for f in files]  # memory-mapped [T_i, gh, gw] each
    starts = np.cumsum([0] + [len(t) for t in shards])
    keep = np.linspace(0, starts[-1] - 1, min(max_frames, starts[-1])).round().astype(int)
    # Only the kept frames are read: a large dataset's maps never sit in memory whole.
    return np.concatenate([t[keep[(keep >= a) & (keep < b)] - a] for t, a, b in zip(shards, starts, starts[1:])]
                          ).astype(np.int64)


def calibrate_motion(cfg: Any, files: list[str], encoding: ActionEncoding, vqvae: Any,
                     verbose: bool) -> dict[str, Any]:
    """cfg: train.TrainConfig. The motion path's coefficients [3, 15] (motion.calibrate) from
    `cfg.motion_pairs` transitions of the training files, drawn with cfg.seed, measured on the VQ-VAE's
    decoding of their tokens or (motion_frames "video") on the source video where the manifest's file is
    still there; the jump's profile
    [motion.JUMP_STEPS] (motion.calibrate_jump) from up to as many clean jump onsets, each decoded by the
    VQ-VAE; and (key_motion "field") the movement keys' field [4, 2, gh, gw] (motion.fit_key_field) from up
    to as many transitions with a key pressed and the camera still, measured on the same frames."""
    from dataset import TokenWindowDataset, open_shard

    pairs_ds = TokenWindowDataset(cfg.data, 2, encoding, files=files)
    rng = np.random.default_rng(cfg.seed)
    idx = rng.choice(len(pairs_ds), size=min(cfg.motion_pairs, len(pairs_ds)), replace=False)
    items = [pairs_ds[int(i)] for i in idx]
    walk = [ENC_FIELDS.index("W"), ENC_FIELDS.index("S")]

    @torch.no_grad()
    def decode(tokens: np.ndarray) -> np.ndarray:
        dev = next(vqvae.parameters()).device
        return np.concatenate([vqvae.to_uint8(vqvae.decode_code(torch.from_numpy(tokens[i:i + 64]).to(dev)))
                               for i in range(0, len(tokens), 64)])

    gh, gw = vqvae.grid
    token_px = (vqvae.cfg.frame_width / gw, vqvae.cfg.frame_height / gh)

    def frame_pairs(items: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray, int]:
        """Each 2-frame item's frames (fa, fb: uint8 [N, H, W, 3]) and how many came from the video."""
        source: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(items)
        if cfg.motion_frames == "video":
            source = source_frame_pairs(Path(cfg.data), {e["file"]: e for e in pairs_ds.entries}, items,
                                        (vqvae.cfg.frame_width, vqvae.cfg.frame_height))
        missing = [k for k, s in enumerate(source) if s is None]
        if missing:  # the pairs the video did not supply, decoded in one pass
            decoded = decode(np.stack([items[k]["tokens"][:2].numpy() for k in missing]).reshape(-1, gh, gw))
            for n, k in enumerate(missing):  # decoded: [2 * len(missing), H, W, 3], pairs in order
                source[k] = (decoded[2 * n], decoded[2 * n + 1])
        return (np.stack([s[0] for s in source]), np.stack([s[1] for s in source]),  # type: ignore[index]
                len(items) - len(missing))

    fa, fb, on_video = frame_pairs(items)
    enc = np.stack([it["actions"][0].numpy() for it in items])
    coef, stats = motion.calibrate(fa, fb, enc, token_px, lambda e: bool((e[walk] >= 0.5).any()),
                                   encoding.mirrored_columns())
    field = np.zeros(0)
    if cfg.key_motion == "field":
        keyed = np.concatenate([pairs_ds.window_index(f, np.flatnonzero(motion.walking_still(
            encoding.encode(pairs_ds.raw_actions(f))))) for f in range(len(pairs_ds.files))])
        keyed = keyed[rng.permutation(len(keyed))[:cfg.motion_pairs]]
        if len(keyed):
            key_items = [pairs_ds[int(i)] for i in keyed]
            ka, kb, _ = frame_pairs(key_items)
            flow = np.stack([motion.cell_flow(ka[i], kb[i], (gh, gw)) for i in range(len(ka))])  # [N, gh, gw, 2]
            field = motion.fit_key_field(np.stack([it["actions"][0].numpy() for it in key_items]), flow, token_px,
                                         motion.key_field_from_coefficients(coef, (gh, gw)),
                                         min_moving_px=cfg.key_min_moving_px, min_field=cfg.key_min_field,
                                         expected=cfg.key_expected)
        else:
            field = motion.key_field_from_coefficients(coef, (gh, gw))
        coef[:, motion.MOVE_SLICE] = 0.0  # the field carries the keys' motion
    windows = []
    for f in files:
        shard = open_shard(Path(cfg.data) / f)
        windows += [np.asarray(shard["tokens"][s:s + motion.JUMP_STEPS + 1]).astype(np.int64)
                    for s in motion.jump_onsets(np.asarray(shard["actions"]))]
    if len(windows) > cfg.motion_pairs:
        windows = [windows[int(i)] for i in rng.choice(len(windows), size=cfg.motion_pairs, replace=False)]
    jump, jstats = motion.calibrate_jump(windows, decode, token_px[1])
    if verbose:
        yaw = coef[:2] @ encoding.encode(make_raw(yaw_deg=4.0))
        pitch = coef[:2] @ encoding.encode(make_raw(pitch_deg=3.0))
        if len(field):
            w_dy = field[0, 1]  # [gh, gw] W's downward motion
            walk_msg = (f"W moves the top row {w_dy[0].mean():+.3f} and the bottom row {w_dy[-1].mean():+.3f} "
                        f"tokens down per step (field)")
        else:
            walk_msg = f"W zooms {coef[2] @ encoding.encode(make_raw(forward=1.0)):+.3f} per step"
        print(f"motion calibration on {len(items)} transitions ({on_video} from the source video, the rest "
              f"decoded from tokens): yaw +4 deg moves the picture "
              f"{yaw[0]:+.2f} tokens, pitch +3 deg {pitch[1]:+.2f} tokens, {walk_msg} "
              f"(median error {stats['median_abs_error_px']:.2f} px); a jump rises "
              f"{jstats['peak_rise_tokens']:.2f} tokens at its peak ({len(windows)} onsets)", file=sys.stderr)
    out = {"motion_coef": coef, "jump_profile": jump, "key_field": field}
    if cfg.edge_memory > 0 and cfg.edge_fill:
        out["edge_fill"] = edge_fill_codes(cfg.data, files)
    return out
