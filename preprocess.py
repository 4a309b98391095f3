"""preprocess.py: GameFactory / MineRL v0 / VPT / block-world video + actions -> VQ-VAE token shards.

    python preprocess.py --data DIR --vqvae CKPT --out preprocessed/NAME [--source auto|gamefactory|minerl|vpt]
        [--fps 16] [--size 128x72] [--skip-start-seconds 1.0] [--workers N] [--device auto] [--overwrite]
        [--strict]
    python preprocess.py --check DIR          # action/frame lag and action statistics, no VQ-VAE

Per video: `<out>/<name>.npz` with tokens uint16 [K, h, w], actions float32 [K-1, 9] (raw schema of
actions.py; row j is the action between kept frames j and j+1) and frame_index int32 [K] (source frame of
each kept frame); `<out>/manifest.json`, `<out>/meta.json`, `<out>/preprocess_report.json`.

Pipeline: decoding (PyAV), alignment, resampling and resizing run in a background thread (--workers 0) or
in --workers processes and stream frame chunks through a bounded queue; the main process only encodes with
the VQ-VAE (batched, CUDA + autocast when available) and writes shards, so encoding never waits on a
decode that could have run ahead. Under torchrun the videos are split across ranks (balanced by file size)
and rank 0 merges the manifest after a barrier. Alignment rules per source: sources.py.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import queue
import shutil
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np

from actions import ACTION_SCHEMA_VERSION, RAW, RAW_FIELDS
from ckpt_io import CheckpointError, atomic_path, atomic_write_json
from config import ConfigError, exit_on_error, main_config, parse_size, to_dict
from sources import (Aligned, Episode, SourceError, decode_kept, discover, load_alignment, plan_kept_frames,
                     resample_actions)
from video_io import VideoError, VideoInfo, probe

SHARD_FORMAT_VERSION = 1
# dataset.py (which imports torch) is imported inside functions: decode worker processes import this module
# and must stay light.
REPORT = "preprocess_report.json"
PARTS_DIR = ".parts"
# meta.json keys that must match for shards to be mixed in one directory (vqvae_path may move).
META_MATCH_KEYS = ("shard_format_version", "codebook_size", "grid", "fps", "frame_size",
                   "action_schema_version", "vqvae_identity", "skip_start_seconds")


@dataclass
class PreprocessConfig:
    data: str = ""
    """Input directory (GameFactory, MineRL v0, VPT or block-world layout; see sources.py)."""
    vqvae: str = ""
    """VQ-VAE checkpoint used to tokenise frames (vq_vae.save_vqvae format)."""
    out: str = ""
    """Output directory for shards, manifest.json, meta.json and preprocess_report.json (with --check:
    where check_report.json is written, optional)."""
    source: Literal["auto", "gamefactory", "minerl", "vpt"] = "auto"
    """Which layout to read; auto detects each episode's source from the files next to the video."""
    fps: float = 16.0
    """Target frame rate; sources are resampled on their own timeline (never upsampled)."""
    size: str = "128x72"
    """Frame size WxH fed to the VQ-VAE (area interpolation)."""
    skip_start_seconds: float = 1.0
    """Seconds dropped at the start of every video (spawn teleports)."""
    workers: int = 0
    """Decode processes; 0 decodes in one background thread of this process."""
    device: str = "auto"
    """Device for VQ-VAE encoding: auto (CUDA if available), cpu, cuda, cuda:N."""
    batch_size: int = 256
    """Frames per VQ-VAE encode call."""
    amp: bool = True
    """Encode under autocast on CUDA (bf16 where supported, else fp16)."""
    overwrite: bool = False
    """Delete existing shards in --out and re-encode everything (otherwise finished videos are skipped)."""
    strict: bool = False
    """Exit non-zero if any video was skipped."""
    check: str = ""
    """Instead of preprocessing, check this data directory: action/frame lag and action statistics."""


@dataclass(frozen=True)
class DecodeSettings:
    fps: float
    size: tuple[int, int]
    skip_start_seconds: float
    chunk: int = 128


def skip_line(file: str, reason: str) -> str:
    """One line naming the skipped file and why (reasons that already start with it are not repeated)."""
    first = reason.splitlines()[0] if reason else "unknown reason"
    return f"skip {first}" if first.startswith(file) else f"skip {file}: {first}"


def log(msg: str) -> None:
    from tqdm import tqdm

    tqdm.write(msg, file=sys.stdout)
    sys.stdout.flush()


# ----------------------------------------------------------------------------- decode side

def probe_and_align(ep: Episode) -> tuple[VideoInfo, Aligned]:
    """Container info and aligned actions of an episode; a frame count in the header that differs from
    what the actions cover is refused before any decoding."""
    info = probe(ep.video)
    al = load_alignment(ep, info.frames)
    if info.frames and info.frames != al.video_frames:
        more = "more" if al.video_frames > info.frames else "fewer"
        raise SourceError(f"{ep.actions}: actions cover {al.video_frames} frames but {ep.video} has "
                          f"{info.frames} ({more} action entries than frames)")
    return info, al


def produce_episode(index: int, ep: Episode, s: DecodeSettings, put: Callable[[tuple], None]) -> None:
    """Decode + align one episode and stream ("frames", i, chunk) ... ("end", i, info) or ("error", i,
    reason) through `put`. Runs in a thread or worker process; never raises for bad input."""
    try:
        info, al = probe_and_align(ep)
        kept = plan_kept_frames(al.frames, info.fps, s.fps, s.skip_start_seconds)
        if len(kept) < 2:
            raise SourceError(f"{ep.video}: too short: {al.frames} frames at {info.fps:g} fps leave "
                              f"{len(kept)} frame(s) after skipping {s.skip_start_seconds:g} s")
        actions = resample_actions(al.actions, kept)
        kept_abs = kept + al.offset
        for chunk in decode_kept(ep.video, kept_abs, s.size, al.video_frames, chunk=s.chunk):
            put(("frames", index, chunk))
        put(("end", index, {"actions": actions, "frame_index": kept_abs.astype(np.int32),
                            "label": al.label, "source_fps": info.fps, "source_size": [info.width, info.height],
                            "source_frames": al.video_frames}))
    except (SourceError, VideoError) as e:
        put(("error", index, str(e)))
    except OSError as e:
        put(("error", index, f"{ep.video}: unreadable file ({e})"))
    except Exception as e:  # a bug or an input we did not foresee: skip it but keep the evidence
        put(("error", index, f"{ep.video}: unexpected {type(e).__name__}: {e}\n{traceback.format_exc()}"))


def _decode_thread(tasks: list[tuple[int, Episode]], s: DecodeSettings, q: queue.Queue,
                   stop: threading.Event) -> None:
    def put(msg: tuple) -> None:
        while not stop.is_set():
            try:
                q.put(msg, timeout=0.2)
                return
            except queue.Full:
                continue
        raise _Stopped

    try:
        for index, ep in tasks:
            produce_episode(index, ep, s, put)
    except _Stopped:
        pass


class _Stopped(Exception):
    pass


def _decode_process(task_q: Any, result_q: Any, s: DecodeSettings) -> None:
    import cv2

    cv2.setNumThreads(1)  # one process per core already
    while True:
        task = task_q.get()
        if task is None:
            return
        produce_episode(task[0], task[1], s, result_q.put)


class Decoders:
    """Background decoding of `tasks`; iterate `get()` for messages. A context manager that always stops
    its thread or processes, also when the consumer fails."""

    def __init__(self, tasks: list[tuple[int, Episode]], s: DecodeSettings, workers: int) -> None:
        self.workers = workers
        if workers <= 0:
            self.queue: Any = queue.Queue(maxsize=8)
            self.stop = threading.Event()
            self.thread = threading.Thread(target=_decode_thread, args=(tasks, s, self.queue, self.stop),
                                           daemon=True, name="preprocess-decode")
            self.thread.start()
            return
        ctx = mp.get_context("spawn")  # fork after CUDA initialisation is unsafe
        self.task_q = ctx.Queue()
        self.queue = ctx.Queue(maxsize=4 * workers)
        for t in tasks:
            self.task_q.put(t)
        for _ in range(workers):
            self.task_q.put(None)
        self.procs = [ctx.Process(target=_decode_process, args=(self.task_q, self.queue, s), daemon=True)
                      for _ in range(workers)]
        for p in self.procs:
            p.start()

    def get(self) -> tuple:
        if self.workers <= 0:
            while True:
                try:
                    return self.queue.get(timeout=1.0)
                except queue.Empty:
                    if not self.thread.is_alive() and self.queue.empty():
                        raise RuntimeError("decode thread ended without reporting all videos") from None
        while True:
            try:
                return self.queue.get(timeout=1.0)
            except queue.Empty:
                if not any(p.is_alive() for p in self.procs) and self.queue.empty():
                    codes = [p.exitcode for p in self.procs]
                    raise RuntimeError(f"decode workers died (exit codes {codes})") from None

    def __enter__(self) -> "Decoders":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.workers <= 0:
            self.stop.set()
            self.thread.join(timeout=10)
            return
        for p in self.procs:
            if p.is_alive():
                p.terminate()
        for p in self.procs:
            p.join(timeout=10)
        self.queue.cancel_join_thread()
        self.task_q.cancel_join_thread()


# ----------------------------------------------------------------------------- encode side

class TokenEncoder:
    """The VQ-VAE as a frames -> uint16 tokens function, batched, on `device`, autocast on CUDA."""

    def __init__(self, path: str, device: str, batch_size: int, amp: bool, size: tuple[int, int]) -> None:
        from devices import amp_settings, autocast, resolve_device
        from vq_vae import load_vqvae, vqvae_identity

        self.path = str(path)
        self.device = resolve_device(device)
        self.model = load_vqvae(path, device=str(self.device))
        self.identity = vqvae_identity(path)
        self.codebook_size = int(self.model.codebook_size)
        if self.codebook_size > 65536:
            raise ConfigError(f"{path}: codebook of {self.codebook_size} codes does not fit uint16 shards")
        self.batch_size = batch_size
        dtype, _ = amp_settings(self.device, amp)
        self.autocast: Callable[[], Any] = lambda: autocast(self.device, dtype)
        w, h = size
        try:
            grid = self(np.zeros((1, h, w, 3), dtype=np.uint8)).shape[1:]
        except Exception as e:
            raise ConfigError(f"{path}: VQ-VAE does not accept {w}x{h} frames (--size): {e}") from e
        self.grid = (int(grid[0]), int(grid[1]))

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        import torch

        out = []
        with torch.inference_mode(), self.autocast():
            for i in range(0, len(frames), self.batch_size):
                x = torch.from_numpy(np.ascontiguousarray(frames[i:i + self.batch_size]))
                if self.device.type == "cuda":
                    x = x.pin_memory().to(self.device, non_blocking=True)
                codes = self.model.encode(x)
                out.append(codes.to("cpu", torch.int32).numpy())
        tokens = np.concatenate(out)
        if tokens.min() < 0 or tokens.max() >= self.codebook_size:
            raise RuntimeError(f"{self.path}: VQ-VAE returned codes outside [0, {self.codebook_size})")
        return tokens.astype(np.uint16)


def write_shard(path: Path, tokens: np.ndarray, actions: np.ndarray, frame_index: np.ndarray) -> None:
    """Write one shard atomically (uncompressed, so dataset.py can memory-map it)."""
    if len(actions) != len(tokens) - 1 or len(frame_index) != len(tokens):
        raise AssertionError(f"{path}: {len(tokens)} tokens, {len(actions)} actions, "
                             f"{len(frame_index)} frame indices")
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, tokens=tokens.astype(np.uint16), actions=actions.astype(np.float32),
                     frame_index=frame_index.astype(np.int32))


# ----------------------------------------------------------------------------- distributed helpers

class Dist:
    """RANK/WORLD_SIZE from torchrun; barriers over gloo (CPU) so ranks may finish hours apart."""

    def __init__(self) -> None:
        self.rank = int(os.environ.get("RANK", 0))
        self.world = int(os.environ.get("WORLD_SIZE", 1))
        if self.world > 1:
            import torch.distributed as dist

            if not dist.is_initialized():
                dist.init_process_group("gloo", timeout=timedelta(days=2))

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


def split_for_rank(episodes: list[Episode], rank: int, world: int) -> list[Episode]:
    """Longest-processing-time assignment by video file size; every rank computes the same split."""
    if world == 1:
        return list(episodes)
    sizes = []
    for ep in episodes:
        try:
            sizes.append(ep.video.stat().st_size)
        except OSError:
            sizes.append(0)
    load = [0] * world
    mine = []
    for i in sorted(range(len(episodes)), key=lambda i: (-sizes[i], episodes[i].name)):
        r = min(range(world), key=lambda r: (load[r], r))
        load[r] += sizes[i]
        if r == rank:
            mine.append(episodes[i])
    return sorted(mine, key=lambda e: e.name)


# ----------------------------------------------------------------------------- the run

def build_meta(cfg: PreprocessConfig, enc: TokenEncoder) -> dict[str, Any]:
    w, h = parse_size(cfg.size)
    return {"shard_format_version": SHARD_FORMAT_VERSION, "codebook_size": enc.codebook_size,
            "grid": list(enc.grid), "fps": float(cfg.fps), "frame_size": [w, h],
            "action_schema_version": ACTION_SCHEMA_VERSION, "action_fields": list(RAW_FIELDS),
            "vqvae_identity": enc.identity, "vqvae_path": str(Path(enc.path).resolve()),
            "skip_start_seconds": float(cfg.skip_start_seconds)}


def meta_mismatch(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    return [f"{k}: existing {old.get(k)!r} vs this run {new.get(k)!r}" for k in META_MATCH_KEYS
            if old.get(k) != new.get(k)]


def _prepare_out(cfg: PreprocessConfig, out: Path, meta: dict[str, Any], d: Dist) -> None:
    from dataset import MANIFEST, META

    if d.rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        if cfg.overwrite:
            old = sorted(out.glob("*.npz"))
            if old:
                log(f"--overwrite: removing {len(old)} existing shards in {out}")
            for p in old:
                p.unlink()
            for name in (MANIFEST, META, REPORT):
                (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / PARTS_DIR, ignore_errors=True)
        if not (out / META).exists():
            if any(out.glob("*.npz")):
                raise SystemExit(f"error: {out} holds shards but no {META}; their settings are unknown, so "
                                 f"they cannot be resumed or mixed. Use --overwrite or a new --out.")
            atomic_write_json(out / META, meta)
    d.barrier()
    existing = json.loads((out / META).read_text())
    diffs = meta_mismatch(existing, meta)
    if diffs:
        raise SystemExit(f"error: {out / META} was made with other settings; refusing to mix shards:\n  "
                         + "\n  ".join(diffs) + "\nUse a new --out, or --overwrite to re-encode everything.")


def _manifest_entry(ep: Episode, out: Path, length: int, label: str, fps: float) -> dict[str, Any]:
    return {"file": f"{ep.name}.npz", "length": int(length), "source": label, "fps": fps,
            "video": str(ep.video), "actions_file": str(ep.actions)}


def _resumed_label(ep: Episode, previous: dict[str, dict[str, Any]]) -> str:
    """Manifest source label of an already finished shard: from the previous manifest, else by a look at
    the action file (an interrupted run wrote no manifest)."""
    if f"{ep.name}.npz" in previous:
        return str(previous[f"{ep.name}.npz"].get("source", ep.source))
    if ep.source != "gamefactory":
        return ep.source
    try:
        return "blockworld" if "blockworld" in json.loads(ep.actions.read_text()) else "gamefactory"
    except (OSError, ValueError):
        return "gamefactory"


def run(cfg: PreprocessConfig, after_shard: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Preprocess cfg.data into cfg.out; returns the report dict (also written as preprocess_report.json).

    `after_shard(name)` is called after each shard is written (tests use it to interrupt a run)."""
    from tqdm import tqdm

    from dataset import ShardError, shard_length

    if not cfg.data or not cfg.vqvae or not cfg.out:
        raise ConfigError("--data, --vqvae and --out are required (or --check DIR)")
    if cfg.fps <= 0 or cfg.skip_start_seconds < 0 or cfg.batch_size < 1:
        raise ConfigError("--fps and --batch-size must be positive and --skip-start-seconds >= 0")
    size = parse_size(cfg.size)
    out = Path(cfg.out)
    d = Dist()
    t0 = time.perf_counter()
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    try:
        episodes, problems = discover(cfg.data, cfg.source)
        enc = TokenEncoder(cfg.vqvae, cfg.device, cfg.batch_size, cfg.amp, size)
        meta = build_meta(cfg, enc)
        _prepare_out(cfg, out, meta, d)
        skipped = [{"file": f, "reason": r} for f, r in problems] if d.rank == 0 else []
        for s in skipped:
            log(skip_line(s["file"], s["reason"]))
        mine = split_for_rank(episodes, d.rank, d.world)
        try:
            previous = {e["file"]: e for e in json.loads((out / "manifest.json").read_text())}
        except (OSError, ValueError, TypeError, KeyError):
            previous = {}
        entries: list[dict[str, Any]] = []
        ok: list[dict[str, Any]] = []
        resumed: list[str] = []
        todo: list[tuple[int, Episode]] = []
        for ep in mine:
            path = out / f"{ep.name}.npz"
            if path.exists():
                try:
                    length = shard_length(path)
                except ShardError as e:
                    log(f"re-encoding {ep.name}: {e}")
                else:
                    entries.append(_manifest_entry(ep, out, length, _resumed_label(ep, previous), cfg.fps))
                    resumed.append(ep.name)
                    continue
            todo.append((len(todo), ep))
        if resumed:
            log(f"resume: {len(resumed)} videos already done in {out}, {len(todo)} to go")
        stats = {"source_frames": 0, "kept_frames": 0}
        s = DecodeSettings(cfg.fps, size, cfg.skip_start_seconds)
        t_work = time.perf_counter()
        parts: dict[int, list[np.ndarray]] = {}
        done = 0
        tty = sys.stderr.isatty()
        bar = tqdm(total=None, unit="frame", unit_scale=True, desc=f"encode r{d.rank}" if d.world > 1
                   else "encode", dynamic_ncols=True, mininterval=0.5 if tty else 30.0)
        with Decoders(todo, s, cfg.workers) as decoders:
            while done < len(todo):
                kind, i, payload = decoders.get()
                ep = todo[i][1]
                if kind == "frames":
                    parts.setdefault(i, []).append(enc(payload))
                    bar.update(len(payload))
                    continue
                done += 1
                chunks = parts.pop(i, [])
                if kind == "error":
                    skipped.append({"file": str(ep.video), "reason": payload})
                    log(skip_line(str(ep.video), payload))
                else:
                    tokens = np.concatenate(chunks)
                    if len(tokens) != len(payload["frame_index"]):
                        raise RuntimeError(f"{ep.video}: {len(tokens)} frames encoded, "
                                           f"{len(payload['frame_index'])} planned")
                    write_shard(out / f"{ep.name}.npz", tokens, payload["actions"], payload["frame_index"])
                    entries.append(_manifest_entry(ep, out, len(tokens), payload["label"], cfg.fps))
                    ok.append({"name": ep.name, "video": str(ep.video), "source": payload["label"],
                               "source_fps": payload["source_fps"], "source_size": payload["source_size"],
                               "source_frames": payload["source_frames"], "kept_frames": len(tokens),
                               "rank": d.rank})
                    stats["source_frames"] += payload["source_frames"]
                    stats["kept_frames"] += len(tokens)
                    if after_shard is not None:
                        after_shard(ep.name)
                bar.set_postfix_str(f"videos {done}/{len(todo)} skipped {len(skipped)}", refresh=False)
        bar.close()
        work_s = time.perf_counter() - t_work
        part = {"rank": d.rank, "entries": entries, "ok": ok, "resumed": resumed, "skipped": skipped,
                "work_seconds": work_s, **stats}
        if d.world > 1:
            atomic_write_json(out / PARTS_DIR / f"rank{d.rank:05d}.json", part)
            d.barrier()
            if d.rank != 0:
                return part
            part_files = sorted((out / PARTS_DIR).glob("rank*.json"))
            if len(part_files) != d.world:
                raise RuntimeError(f"{out / PARTS_DIR}: {len(part_files)} rank reports, expected {d.world}")
            parts_all = [json.loads(p.read_text()) for p in part_files]
        else:
            parts_all = [part]
        report = _finish(cfg, out, meta, parts_all, started, time.perf_counter() - t0)
        if d.world > 1:
            shutil.rmtree(out / PARTS_DIR, ignore_errors=True)
        return report
    finally:
        d.close()


def _finish(cfg: PreprocessConfig, out: Path, meta: dict[str, Any], parts: list[dict[str, Any]],
            started: str, seconds: float) -> dict[str, Any]:
    from dataset import MANIFEST

    entries = sorted((e for p in parts for e in p["entries"]), key=lambda e: e["file"])
    atomic_write_json(out / MANIFEST, entries)
    kept = sum(p["kept_frames"] for p in parts)
    source_frames = sum(p["source_frames"] for p in parts)
    work = max([p["work_seconds"] for p in parts] + [1e-9])
    h, w = meta["grid"]
    report = {
        "started": started, "seconds": round(seconds, 3), "config": to_dict(cfg), "meta": meta,
        "ranks": len(parts),
        "totals": {"videos_ok": sum(len(p["ok"]) for p in parts),
                   "videos_resumed": sum(len(p["resumed"]) for p in parts),
                   "videos_skipped": sum(len(p["skipped"]) for p in parts),
                   "manifest_videos": len(entries), "manifest_frames": sum(e["length"] for e in entries),
                   "source_frames_decoded": source_frames, "frames_encoded": kept,
                   "tokens_encoded": kept * h * w,
                   "frames_per_s": round(kept / work, 2), "source_frames_per_s": round(source_frames / work, 2),
                   "tokens_per_s": round(kept * h * w / work, 1)},
        "ok": [o for p in parts for o in p["ok"]],
        "resumed": sorted(r for p in parts for r in p["resumed"]),
        "skipped": [s for p in parts for s in p["skipped"]],
    }
    atomic_write_json(out / REPORT, report)
    t = report["totals"]
    log(f"done: {t['videos_ok']} ok, {t['videos_resumed']} resumed, {t['videos_skipped']} skipped; "
        f"{t['frames_encoded']} frames from {t['source_frames_decoded']} source frames "
        f"({t['tokens_encoded']} tokens) in {work:.1f} s: {t['frames_per_s']:.1f} frames/s, "
        f"{t['tokens_per_s']:.0f} tokens/s")
    log(f"manifest: {t['manifest_videos']} videos, {t['manifest_frames']} frames -> {out / MANIFEST}; "
        f"report -> {out / REPORT}")
    if report["skipped"]:
        log(f"skipped ({len(report['skipped'])}):")
        for s in report["skipped"]:
            log("  " + skip_line(s["file"], s["reason"]))
    return report


def exit_status(cfg: PreprocessConfig, report: dict[str, Any]) -> int:
    t = report["totals"]
    if t["videos_ok"] + t["videos_resumed"] == 0:
        return 1
    if cfg.strict and t["videos_skipped"]:
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    cfg = main_config(PreprocessConfig, argv=argv)
    errors = (ConfigError, FileNotFoundError, CheckpointError)
    if cfg.check:
        from preprocess_check import run_check

        report = exit_on_error(lambda: run_check(cfg), errors)
        return 0 if any("error" not in v for v in report["videos"]) else 1
    report = exit_on_error(lambda: run(cfg), errors)
    if int(os.environ.get("RANK", 0)) != 0:
        return 0
    return exit_status(cfg, report)


if __name__ == "__main__":
    sys.exit(main())
