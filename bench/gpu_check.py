"""bench/gpu_check.py: one command that exercises every CUDA path and writes the figures for BENCHMARKS.md.

    bash scripts/gpu_check.sh [--budget-s 480]          # on a GPU (make gpu-check)
    bash scripts/gpu_check.sh --device cpu --tiny       # the CPU rehearsal (tests/test_gpu_check.py runs it)

Every stage runs the repository's own scripts in subprocesses; a stage that fails is recorded (with the tail
of its log) and the next one runs; the exit status is 1 if any stage failed.

  env          torch, CUDA and driver versions, the device and its memory
  pytest_cuda  `pytest -m cuda tests`: on a GPU every cuda test must pass (on a CPU they must all skip)
  data         blockworld.generate -> vq_vae.train (a short tokenizer run on --device) -> preprocess.py
  ddp          `torchrun --nproc_per_node 1 train.py` (NCCL on a GPU, gloo on a CPU): steps, a SIGKILL of the
               whole job after a checkpoint, then --resume to the final step
  preprocess   bench.preprocess on --device with worker processes: the whole pipeline against decode alone
  live         bench.live on --device: FPS and ms per frame of the live loop per preset
  train_bf16   bench.train_step's figures (steps/s, frames/s, peak memory, LPIPS share of the step; mid-
               training, AR at full length) and a train.py run on the data stage's shards, in bf16 autocast
  train_fp16   the same with fp16 + GradScaler, forced (the P100 path), also on a bf16-capable card

The training stages run last and share what the others left of --budget-s: the budget sets their step
counts. Writes --out (one JSON: every stage's status, seconds and figures; the device, the date) and
--markdown (a dated section to paste into BENCHMARKS.md).
"""
from __future__ import annotations

import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
import traceback
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Literal

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from config import ConfigError, main_config, to_dict  # noqa: E402

SEEDS_A100_STEPS_PER_S = 1.24
"""The earlier iteration's a100-preset training speed on an A100 (LPIPS 60% of the step): the issue's yardstick."""
SEEDS_LPIPS_SHARE = 0.60
PHASES = ("data", "forward", "lpips", "backward", "optimizer")


@dataclass
class GpuCheckConfig:
    """bench/gpu_check.py options (scripts/gpu_check.sh passes its arguments here)."""

    device: Literal["cuda", "cpu"] = "cuda"
    """Device under test; cpu rehearses the same stages (gloo instead of NCCL)."""
    tiny: bool = False
    """Tiny sizes everywhere: the CPU rehearsal (under 3 minutes on one core)."""
    budget_s: float = 480.0
    """Wall-clock budget of the whole check in seconds; the training stages get what the others leave."""
    work_dir: str = "runs/gpu_check"
    """Scratch folder (data, tokenizer, shards, runs, logs/); emptied at the start."""
    out: str = "bench/results/gpu_check.json"
    """The JSON result."""
    markdown: str = "bench/results/gpu_check.md"
    """The dated section for BENCHMARKS.md."""
    cpu_threads: int = 1
    """torch CPU threads of every training and live-play process (1 on a shared machine)."""

    def __post_init__(self) -> None:
        if self.budget_s <= 0:
            raise ConfigError(f"--budget-s must be > 0, got {self.budget_s}")
        if self.cpu_threads < 1:
            raise ConfigError(f"--cpu-threads must be >= 1, got {self.cpu_threads}")
        if ROOT.is_relative_to(Path(self.work_dir).resolve()):
            raise ConfigError(f"--work-dir {self.work_dir} holds the repository; it is emptied at the start")


@dataclass(frozen=True)
class Sizes:
    """Everything that differs between the GPU check and the tiny rehearsal."""

    episodes: int
    """Block-world episodes generated (one of them becomes the validation video)."""
    seconds: float
    """Length of each episode (16 frames per second)."""
    gen_workers: int
    """blockworld.generate processes."""
    vq_preset: str
    """vq_vae/train.py preset of the tokenizer (laptop: the real decoder, so LPIPS costs what it will)."""
    vq_steps: int
    """Tokenizer training steps."""
    pp_workers: int
    """preprocess.py decode processes."""
    motion_pairs: int
    """train.py --motion-pairs (the motion calibration before step 0)."""
    train_preset: str
    """train.py preset of the two training stages."""
    ddp_preset: str
    """train.py preset of the torchrun stage (small: it checkpoints every 2 steps)."""
    ddp_kill_after: int
    """The torchrun job is killed once a checkpoint at this step or later exists."""
    ddp_steps: int
    """The step the resumed torchrun job must reach."""
    bench_steps: int
    """Timed steps of each bench.train_step measurement (after one warm-up step)."""
    min_train_steps: int
    """train.py steps per precision whatever the budget says."""
    max_train_steps: int
    """train.py steps per precision however much budget is left."""
    bench_pp_args: tuple[str, ...]
    """Arguments of bench.preprocess besides --device and --out."""
    live_presets: str
    """bench.live presets."""
    live_frames: int
    """bench.live measured ticks per preset."""


GPU = Sizes(episodes=8, seconds=6.0, gen_workers=8, vq_preset="laptop", vq_steps=150, pp_workers=4,
            motion_pairs=600, train_preset="a100", ddp_preset="laptop", ddp_kill_after=4, ddp_steps=40,
            bench_steps=3, min_train_steps=10, max_train_steps=300, bench_pp_args=("--workers", "4"),
            live_presets="laptop,a100", live_frames=96)
TINY = Sizes(episodes=3, seconds=2.0, gen_workers=1, vq_preset="tiny", vq_steps=4, pp_workers=2,
             motion_pairs=48, train_preset="tiny", ddp_preset="tiny", ddp_kill_after=4, ddp_steps=12,
             bench_steps=2, min_train_steps=4, max_train_steps=8,
             bench_pp_args=("--workers", "2", "--videos", "1", "--seconds", "2", "--src-size", "320x180",
                            "--tokenizer", "tiny", "--repeats", "1", "--batch-size", "32"),
             live_presets="tiny", live_frames=16)


class StageError(RuntimeError):
    """A stage failed; the message says how (one line, plus a log tail where there is one)."""


class Check:
    """Runs the stages in order, records each, and writes the results."""

    def __init__(self, cfg: GpuCheckConfig) -> None:
        self.cfg = cfg
        self.sizes = TINY if cfg.tiny else GPU
        self.work = Path(cfg.work_dir).resolve()
        self.logs = self.work / "logs"
        self.t0 = time.monotonic()
        self.stages: dict[str, dict[str, Any]] = {}
        self.train_startup_s = 30.0  # until the ddp stage measures it
        self.env = dict(os.environ, PYTHONUNBUFFERED="1", WANDB_MODE="disabled")
        if cfg.device == "cpu":
            self.env["OMP_NUM_THREADS"] = str(cfg.cpu_threads)

    # ------------------------------------------------------------------ plumbing

    def left_s(self) -> float:
        return self.cfg.budget_s - (time.monotonic() - self.t0)

    def sh(self, name: str, cmd: list[str], timeout: float | None = None) -> str:
        """Run cmd from the repository root with its output in logs/<name>.log; returns the output, raises
        StageError on a non-zero exit or a timeout (default: the rest of the budget, at least 30 s, at most
        a third of it, so that one hung command leaves time for the stages after it)."""
        if timeout is None:
            timeout = min(max(30.0, self.left_s()), self.cfg.budget_s / 3)
        log = self.logs / f"{name}.log"
        with open(log, "w") as fh:
            fh.write("$ " + " ".join(cmd) + "\n")
            fh.flush()
            proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=fh, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            try:
                rc = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _kill_tree(proc.pid)
                proc.wait()
                raise StageError(f"{name}: no result after {timeout:.0f} s (killed); see {log}") from None
        text = log.read_text(errors="replace")
        if rc != 0:
            raise StageError(f"{name}: exit status {rc}; see {log}\n" + _tail(text))
        return text

    def py(self, name: str, args: list[str], timeout: float | None = None) -> str:
        return self.sh(name, [sys.executable, *args], timeout)

    def run(self) -> dict[str, Any]:
        shutil.rmtree(self.work, ignore_errors=True)
        self.logs.mkdir(parents=True)
        for name, fn in [("env", self.stage_env), ("pytest_cuda", self.stage_pytest), ("data", self.stage_data),
                         ("ddp", self.stage_ddp), ("preprocess", self.stage_preprocess),
                         ("live", self.stage_live), ("train_bf16", lambda: self.stage_train("bf16", 2)),
                         ("train_fp16", lambda: self.stage_train("fp16", 1))]:
            self.record(name, fn)
        return self.result()

    def record(self, name: str, fn: Callable[[], dict[str, Any]]) -> None:
        t = time.monotonic()
        print(f"== [{t - self.t0:5.0f}s] {name}", file=sys.stderr, flush=True)
        try:
            if self.left_s() <= 0:
                raise StageError(f"{name}: the --budget-s of {self.cfg.budget_s:.0f} s was spent before it")
            rec = {"status": "passed", "figures": fn()}
        except Exception as e:  # any failure is this stage's result; the next stage still runs
            # a bug in the stage itself (not a failed command) keeps its traceback for the session reading it
            msg = str(e) if isinstance(e, StageError) else f"{type(e).__name__}: {e}\n{_tail(traceback.format_exc())}"
            rec = {"status": "failed", "error": msg}
        rec["seconds"] = round(time.monotonic() - t, 1)
        self.stages[name] = rec
        line = rec["status"] + ("" if rec["status"] == "passed" else ": " + rec["error"].splitlines()[0])
        print(f"   {name}: {line} ({rec['seconds']} s)", file=sys.stderr, flush=True)

    def result(self) -> dict[str, Any]:
        env = self.stages.get("env", {}).get("figures", {})
        return {"bench": "gpu_check", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "device": self.cfg.device, "device_name": env.get("device_name", "unknown"),
                "machine": env, "config": to_dict(self.cfg), "tiny": self.cfg.tiny,
                "total_s": round(time.monotonic() - self.t0, 1),
                "passed": all(s["status"] == "passed" for s in self.stages.values()),
                "failed_stages": [k for k, s in self.stages.items() if s["status"] != "passed"],
                "stages": self.stages}

    # ------------------------------------------------------------------ stages

    def stage_env(self) -> dict[str, Any]:
        import torch

        from bench._common import cpu_name

        out: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                               "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
                               "platform": platform.platform(), "cpus": os.cpu_count(), "cpu": cpu_name()}
        if self.cfg.device == "cpu":
            out["device_name"] = f"{out['cpus']}-core CPU ({out['cpu']}), no GPU"
            return out
        if not torch.cuda.is_available():
            raise StageError(f"--device cuda, but torch {torch.__version__} sees no CUDA GPU")
        props = torch.cuda.get_device_properties(0)
        out.update(device_name=props.name, memory_gib=round(props.total_memory / 2 ** 30, 1),
                   capability=f"{props.major}.{props.minor}", multiprocessors=props.multi_processor_count,
                   bf16=torch.cuda.is_bf16_supported(), gpus=torch.cuda.device_count())
        try:
            v = torch.cuda.nccl.version()  # a tuple in recent torch, an int in older ones
            out["nccl"] = ".".join(map(str, v)) if isinstance(v, tuple) else str(v)
        except (AttributeError, RuntimeError):
            out["nccl"] = None
        try:
            smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=30)
            out["driver"] = smi.stdout.strip().splitlines()[0] if smi.returncode == 0 else None
        except (OSError, subprocess.TimeoutExpired, IndexError):
            out["driver"] = None
        return out

    def stage_pytest(self) -> dict[str, Any]:
        xml = self.work / "pytest_cuda.xml"
        cmd = ["-m", "pytest", "-q", "-m", "cuda", "tests", "-p", "no:cacheprovider",
               "--continue-on-collection-errors", f"--junitxml={xml}"]
        try:
            self.py("pytest_cuda", cmd)
        except StageError:
            if not xml.is_file():
                raise
        cases = ET.parse(xml).getroot().iter("testcase")
        counts = {"passed": 0, "failed": 0, "skipped": 0}
        failed, collection_errors = [], []
        for case in cases:
            cls, name = case.get("classname", ""), case.get("name", "")
            if case.find("skipped") is not None:
                counts["skipped"] += 1
            elif case.find("failure") is not None or case.find("error") is not None:
                # junit reports a module that cannot be imported here as a test with an empty class name
                (failed if cls else collection_errors).append(f"{cls}::{name}" if cls else name)
            else:
                counts["passed"] += 1
        counts["failed"] = len(failed)
        figures = {**counts, "failed_tests": failed, "collection_errors": collection_errors}
        if failed:
            raise StageError(f"pytest -m cuda: {len(failed)} failed: {', '.join(failed)}")
        if self.cfg.device == "cuda" and (counts["passed"] == 0 or counts["skipped"]):
            raise StageError(f"pytest -m cuda on a GPU: {counts['passed']} passed, {counts['skipped']} skipped "
                             f"(every cuda test must run)")
        if self.cfg.device == "cpu" and (counts["skipped"] == 0 or counts["passed"]):
            raise StageError(f"pytest -m cuda without a GPU: expected every cuda test skipped, got {counts}")
        return figures

    def stage_data(self) -> dict[str, Any]:
        s, w, dev = self.sizes, self.work, self.cfg.device
        out: dict[str, Any] = {}
        t = time.monotonic()
        self.py("data_generate", ["-m", "blockworld.generate", "--out", str(w / "blockworld"),
                                  "--episodes", str(s.episodes), "--seconds", str(s.seconds), "--seed", "0",
                                  "--workers", str(s.gen_workers)])
        out["generate_s"] = round(time.monotonic() - t, 1)
        out["frames"] = int(s.episodes * s.seconds * 16)
        t = time.monotonic()
        self.py("data_tokenizer", ["-m", "vq_vae.train", "--data", str(w / "blockworld"), "--run-dir",
                                   str(w / "vqvae"), "--preset", s.vq_preset, "--max-steps", str(s.vq_steps),
                                   "--device", dev, "--cpu-threads", str(self.cfg.cpu_threads),
                                   "--image-every", str(s.vq_steps), "--ckpt-every", str(s.vq_steps)])
        out["tokenizer_s"] = round(time.monotonic() - t, 1)
        out["tokenizer_steps"] = s.vq_steps
        out["tokenizer_preset"] = s.vq_preset
        t = time.monotonic()
        self.py("data_preprocess", ["preprocess.py", "--data", str(w / "blockworld"), "--vqvae", self.vqvae,
                                    "--out", str(w / "shards"), "--workers", str(s.pp_workers), "--device", dev,
                                    "--skip-start-seconds", "0"])
        out["preprocess_s"] = round(time.monotonic() - t, 1)
        report = json.loads((w / "shards" / "preprocess_report.json").read_text())
        out["preprocess_frames_per_s"] = report.get("totals", {}).get("source_frames_per_s")
        shards = sorted((w / "shards").glob("*.npz"))
        if len(shards) != s.episodes:
            raise StageError(f"preprocess wrote {len(shards)} shards for {s.episodes} episodes")
        out["shards"] = len(shards)
        return out

    @property
    def vqvae(self) -> str:
        return str(self.work / "vqvae" / "vqvae.pt")

    def train_args(self, preset: str, run_dir: Path, steps: int) -> list[str]:
        return ["--preset", preset, "--data", str(self.work / "shards"), "--vqvae", self.vqvae,
                "--run-dir", str(run_dir), "--device", self.cfg.device, "--max-steps", str(steps),
                "--cpu-threads", str(self.cfg.cpu_threads), "--motion-pairs", str(self.sizes.motion_pairs),
                "--wandb", "disabled", "--progress", "false", "--log-every", "1", "--diag-every", "1000000000",
                "--image-every", "0", "--val-every", "0", "--ckpt-minutes", "0"]

    def stage_ddp(self) -> dict[str, Any]:
        s = self.sizes
        run_dir = self.work / "ddp"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", "train.py",
               *self.train_args(s.ddp_preset, run_dir, s.ddp_steps), "--ckpt-every", "2", "--keep-last", "2"]
        backend = "nccl" if self.cfg.device == "cuda" else "gloo"
        log = self.logs / "ddp_first.log"
        t = time.monotonic()
        with open(log, "w") as fh:
            fh.write("$ " + " ".join(cmd) + "\n")
            fh.flush()
            proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=fh, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            killed_at, first_step_s = None, None
            deadline = time.monotonic() + min(max(30.0, self.left_s()), self.cfg.budget_s / 3)
            while proc.poll() is None and time.monotonic() < deadline:
                if first_step_s is None and (run_dir / "metrics.jsonl").is_file():
                    first_step_s = time.monotonic() - t
                steps = [_state_step(p) for p in (run_dir / "checkpoints").glob("state_*.pt")]
                if steps and max(steps) >= s.ddp_kill_after:
                    _kill_tree(proc.pid)  # a crash of the whole job: torchrun and its worker
                    killed_at = max(steps)
                    break
                time.sleep(0.05)
            if proc.poll() is None and killed_at is None:
                _kill_tree(proc.pid)
            proc.wait()
        text = log.read_text(errors="replace")
        if killed_at is None:
            raise StageError(f"ddp: no checkpoint at step >= {s.ddp_kill_after} before the job ended or the "
                             f"budget ran out (exit {proc.returncode}); see {log}\n" + _tail(text))
        if f"{backend} backend" not in text:
            raise StageError(f"ddp: train.py did not report joining a {backend} process group; see {log}")
        if first_step_s is not None:
            self.train_startup_s = first_step_s
        t2 = time.monotonic()
        text2 = self.sh("ddp_resume", cmd + ["--resume", "true"])
        m = re.search(r"resumed \S+ at step (\d+)", text2)
        if not m:
            raise StageError(f"ddp: --resume did not resume from a checkpoint; see {self.logs / 'ddp_resume.log'}")
        if int(m.group(1)) >= s.ddp_steps:
            raise StageError(f"ddp: the job outlived its kill and finished (resumed at step {m.group(1)})")
        records = _metrics(run_dir)
        last = records[-1] if records else {}
        if last.get("step") != s.ddp_steps or not (run_dir / "world_model.pt").is_file():
            raise StageError(f"ddp: the resumed run ended at step {last.get('step')}, expected {s.ddp_steps}")
        losses = [r.get("train/loss") for r in records]
        if any(v is None or not _finite(v) for v in losses):
            raise StageError("ddp: a non-finite loss")
        return {"backend": backend, "preset": s.ddp_preset, "killed_after_checkpoint_step": killed_at,
                "resumed_from_step": int(m.group(1)), "final_step": s.ddp_steps,
                "first_run_s": round(t2 - t, 1), "resume_run_s": round(time.monotonic() - t2, 1),
                "startup_to_first_step_s": None if first_step_s is None else round(first_step_s, 1)}

    def stage_preprocess(self) -> dict[str, Any]:
        out_json = self.work / "bench_preprocess.json"
        self.py("preprocess_bench", ["-m", "bench.preprocess", "--device", self.cfg.device,
                                     *self.sizes.bench_pp_args, "--out", str(out_json)])
        r = json.loads(out_json.read_text())
        figures = {k: r[k] for k in ("decode_only_frames_per_s", "pipeline_frames_per_s",
                                     "encode_only_frames_per_s", "pipeline_over_decode",
                                     "target_pipeline_over_decode", "pipeline_over_slowest_stage",
                                     "source_frames")}
        figures["meets_target"] = r["pipeline_over_decode"] >= r["target_pipeline_over_decode"]
        figures["workers"] = r["config"]["workers"]
        return figures

    def stage_live(self) -> dict[str, Any]:
        out_json = self.work / "bench_live.json"
        self.py("live_bench", ["-m", "bench.live", "--device", self.cfg.device, "--presets", self.sizes.live_presets,
                               "--frames", str(self.sizes.live_frames), "--threads", str(self.cfg.cpu_threads),
                               "--out", str(out_json)])
        r = json.loads(out_json.read_text())
        out = {}
        for res in r["results"]:
            med, p95 = res["latency_ms_median"], res["latency_ms_p95"]
            out[res["preset"]] = {"fps": res["fps_median_tick"], "tick_ms_median": med["tick"],
                                  "tick_ms_p95": p95["tick"], "model_step_ms": med["model_step"],
                                  "vq_decode_ms": med["vq_decode"], "display_ms": med["display"],
                                  "device": res["device"]}
        if set(out) != set(self.sizes.live_presets.split(",")):
            raise StageError(f"live: results for {sorted(out)}, expected {self.sizes.live_presets}")
        return out

    def stage_train(self, precision: str, stages_left: int) -> dict[str, Any]:
        """bench.train_step's measurement (with and without LPIPS) and a train.py run sized by the budget."""
        s, cfg = self.sizes, self.cfg
        t_stage = time.monotonic()
        slice_s = self.left_s() / stages_left
        job = {"preset": s.train_preset, "steps": s.bench_steps, "overrides": {"amp_dtype": precision}}
        bench = {}
        for key, extra in (("with_lpips", {}), ("without_lpips", {"w_lpips": 0})):
            j = {**job, "overrides": {**job["overrides"], **extra}}
            text = self.py(f"train_{precision}_bench_{key}", ["-m", "bench.train_step", "--job", json.dumps(j),
                                                              "--device", cfg.device, "--threads",
                                                              str(cfg.cpu_threads)])
            bench[key] = json.loads(text.strip().splitlines()[-1])
        w, wo = bench["with_lpips"], bench["without_lpips"]
        step_s = w["step_s_median"]
        spent = time.monotonic() - t_stage
        # 0.8: the a100 preset starts slower than the ddp stage's measured start-up (bigger model, workers)
        fit = int(0.8 * (slice_s - spent - self.train_startup_s) / step_s)
        steps = max(s.min_train_steps, min(s.max_train_steps, fit))
        run_dir = self.work / f"train_{precision}"
        t = time.monotonic()
        self.py(f"train_{precision}_run", ["train.py", *self.train_args(s.train_preset, run_dir, steps),
                                           "--amp-dtype", precision, "--ckpt-every", "1000000000"],
                timeout=max(30.0, self.left_s()) + 60.0)  # sized to fit: a slow start must not fail it
        run_s = time.monotonic() - t
        records = _metrics(run_dir)
        if len(records) != steps:
            raise StageError(f"train.py {precision}: {len(records)} steps logged, expected {steps}")
        bad = [r["step"] for r in records if not _finite(r.get("train/loss"))]
        if bad:
            raise StageError(f"train.py {precision}: non-finite loss at steps {bad}")
        skipped = sum(int(r.get("train/nonfinite_skipped") or 0) for r in records)
        if skipped == len(records):
            raise StageError(f"train.py {precision}: every step was skipped as non-finite")
        scales = [r["grad/scale"] for r in records if "grad/scale" in r]
        if (precision == "fp16") != bool(scales):
            raise StageError(f"train.py {precision}: GradScaler {'off' if scales == [] else 'on'}, expected "
                             f"{'on' if precision == 'fp16' else 'off'}")
        if not (run_dir / "world_model.pt").is_file():
            raise StageError(f"train.py {precision}: no export at the end of the run")
        timed = records[2:] if len(records) > 4 else records[1:]  # the first steps warm up allocator and kernels
        step_ms = sorted(r["timing/step_ms"] for r in timed)
        med_ms = step_ms[len(step_ms) // 2]
        frames = w["batch_size"] * (w["seq_len"] - 1)
        phases = {p: sum(r.get(f"timing/{p}_ms", 0.0) for r in timed) / sum(r["timing/step_ms"] for r in timed)
                  for p in PHASES}
        out: dict[str, Any] = {
            "precision": precision + (" + GradScaler" if precision == "fp16" else " autocast"),
            "preset": s.train_preset, "batch_size": w["batch_size"], "seq_len": w["seq_len"],
            "train_py": {"steps": steps, "steps_budgeted_for": fit, "run_s": round(run_s, 1),
                         "steps_per_s": round(1000 / med_ms, 3), "frames_per_s": round(frames * 1000 / med_ms, 1),
                         "phase_share": {k: round(v, 3) for k, v in phases.items()},
                         "loss_first_last": [records[0]["train/loss"], records[-1]["train/loss"]],
                         "nonfinite_skipped_steps": skipped,
                         **({"grad_scale_last": scales[-1]} if scales else {})},
            "mid_training": {"ar_len": w["ar_len"], "steps_per_s": w["steps_per_s"],
                             "frames_per_s": w["frames_per_s"], "lpips_share_of_step":
                             round(1 - wo["step_s_median"] / w["step_s_median"], 3),
                             "phase_share": w["phase_share"], "lpips_frames_per_step": w["lpips_frames_per_step"],
                             "lpips_weights": w["lpips"]},
            "peak_memory_mb": w.get("peak_cuda_mb", w.get("peak_rss_mb")),
            "peak_memory_kind": "CUDA max allocated" if "peak_cuda_mb" in w else "process peak RSS"}
        if s.train_preset == "a100" and cfg.device == "cuda":
            out["vs_seeds_steps_per_s"] = round(out["train_py"]["steps_per_s"] / SEEDS_A100_STEPS_PER_S, 2)
        return out


# ----------------------------------------------------------------------------- helpers

def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and v == v and abs(v) != float("inf")


def _kill_tree(pid: int) -> None:
    """SIGKILL pid and every process below it, the deepest first. By id, not by group: torchrun starts each
    worker in a session of its own, which a kill of torchrun's group would leave running."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # the process ended while we read
        children.setdefault(ppid, []).append(int(stat.parent.name))
    order, todo = [], [pid]
    while todo:
        p = todo.pop()
        order.append(p)
        todo.extend(children.get(p, []))
    for p in reversed(order):
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _state_step(path: Path) -> int:
    return int(path.stem.rsplit("_", 1)[1])


def _metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


# ----------------------------------------------------------------------------- the BENCHMARKS.md section

def markdown(r: dict[str, Any]) -> str:
    """A dated section for BENCHMARKS.md: one row per stage, then the training, preprocess and live figures."""
    st, m = r["stages"], r["machine"]
    versions = f"torch {m.get('torch')}, CUDA {m.get('cuda')}" + (f", driver {m['driver']}" if m.get("driver") else "")
    verdict = "every stage passed" if r["passed"] else "FAILED: " + ", ".join(r["failed_stages"])
    cmd = "scripts/gpu_check.sh" + (" --device cpu --tiny" if r["tiny"] else f" --device {r['device']}")
    lines = [f"### GPU check: {r['device_name']}, {r['date'][:16].replace('T', ' ')} UTC", "",
             f"`{cmd}` ({versions}): {r['total_s']:.0f} s in all (budget {r['config']['budget_s']:.0f} s); "
             f"{verdict}. Figures: `{r['config']['out']}`.", "",
             "| stage | status | s | figures |", "|---|---|---|---|"]
    for name, s in st.items():
        lines.append(f"| {name} | {s['status']} | {s['seconds']} | {_summary(name, s)} |")
    trains = [(k, st[k]["figures"]) for k in ("train_bf16", "train_fp16") if st.get(k, {}).get("status") == "passed"]
    if trains:
        f0 = trains[0][1]
        lines += ["", f"Training, {f0['preset']} preset, batch {f0['batch_size']} x {f0['seq_len'] - 1} predicted "
                  f"frames (train.py from step 0: teacher-forced; mid-training: bench.train_step with AR at full "
                  f"length):", "",
                  "| precision | train.py steps/s | frames/s | mid-training steps/s | frames/s | peak memory MB | "
                  "LPIPS share (mid-training) |", "|---|---|---|---|---|---|---|"]
        for _, f in trains:
            t, mt = f["train_py"], f["mid_training"]
            lines.append(f"| {f['precision']} | {t['steps_per_s']} | {t['frames_per_s']} | {mt['steps_per_s']} | "
                         f"{mt['frames_per_s']} | {f['peak_memory_mb']} ({f['peak_memory_kind']}) | "
                         f"{mt['lpips_share_of_step']:.0%} |")
        lines += ["", f"The seeds' figure: {SEEDS_A100_STEPS_PER_S} steps/s on an A100 (a100 preset), LPIPS "
                  f"{SEEDS_LPIPS_SHARE:.0%} of the step."]
        ratios = [f"{f['precision']} {f['vs_seeds_steps_per_s']}x" for _, f in trains if "vs_seeds_steps_per_s" in f]
        if ratios:
            lines[-1] += f" train.py steps/s over the seeds': {', '.join(ratios)} (target >= 3x at equal batch)."
    return "\n".join(lines) + "\n"


def _summary(name: str, s: dict[str, Any]) -> str:
    if s["status"] != "passed":
        return s["error"].splitlines()[0].replace("|", "/")
    f = s["figures"]
    if name == "env":
        mem = f" {f['memory_gib']} GiB, bf16 {f['bf16']}, NCCL {f['nccl']}" if "memory_gib" in f else ""
        return f"{f['device_name']}{mem}; Python {f['python']}"
    if name == "pytest_cuda":
        errs = f", collection errors: {', '.join(f['collection_errors'])}" if f["collection_errors"] else ""
        return f"{f['passed']} passed, {f['skipped']} skipped, {f['failed']} failed{errs}"
    if name == "data":
        return (f"{f['frames']} frames generated in {f['generate_s']} s; tokenizer ({f['tokenizer_preset']}, "
                f"{f['tokenizer_steps']} steps) {f['tokenizer_s']} s; preprocess {f['preprocess_s']} s "
                f"({f['preprocess_frames_per_s']} frames/s)")
    if name == "ddp":
        return (f"{f['backend']}, {f['preset']} preset: killed after the step-{f['killed_after_checkpoint_step']} "
                f"checkpoint, resumed from step {f['resumed_from_step']} to {f['final_step']}")
    if name == "preprocess":
        return (f"pipeline {f['pipeline_frames_per_s']} vs decode-only {f['decode_only_frames_per_s']} frames/s "
                f"= {f['pipeline_over_decode']}x (target >= {f['target_pipeline_over_decode']}x: "
                f"{'met' if f['meets_target'] else 'NOT met'}); encode alone {f['encode_only_frames_per_s']} "
                f"frames/s; {f['workers']} workers")
    if name == "live":
        return "; ".join(f"{p}: {v['fps']} FPS, tick {v['tick_ms_median']} ms (p95 {v['tick_ms_p95']}), model "
                         f"{v['model_step_ms']} ms, decode {v['vq_decode_ms']} ms" for p, v in f.items())
    t = f["train_py"]
    return (f"{f['precision']}: train.py {t['steps']} steps at {t['steps_per_s']} steps/s, "
            f"{t['nonfinite_skipped_steps']} skipped; LPIPS {f['mid_training']['lpips_share_of_step']:.0%} of a "
            f"mid-training step")


def main() -> int:
    cfg = main_config(GpuCheckConfig)
    result = Check(cfg).run()
    from ckpt_io import atomic_write_json, atomic_write_text

    atomic_write_json(cfg.out, result)
    atomic_write_text(cfg.markdown, markdown(result))
    print(f"wrote {cfg.out} and {cfg.markdown}: "
          + ("every stage passed" if result["passed"] else f"FAILED: {', '.join(result['failed_stages'])}"),
          file=sys.stderr)
    print(json.dumps({"passed": result["passed"], "failed_stages": result["failed_stages"],
                      "total_s": result["total_s"]}))
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
