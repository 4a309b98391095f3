"""scripts/gpu_check.sh: the CPU rehearsal of every stage end to end (so the GPU check cannot rot between the
rare sessions that have a GPU), failure bookkeeping, and option errors."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import gpu_check

ROOT = Path(__file__).resolve().parents[1]
STAGES = ["env", "pytest_cuda", "data", "ddp", "preprocess", "live", "train_bf16", "train_fp16"]


def run_script(*args: str, timeout: float = 400) -> subprocess.CompletedProcess:
    env = dict(os.environ, PY=sys.executable)
    return subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_cpu_rehearsal_runs_every_stage_and_passes(tmp_path):
    out, md = tmp_path / "gpu_check.json", tmp_path / "gpu_check.md"
    res = run_script("--device", "cpu", "--tiny", "--work-dir", str(tmp_path / "work"), "--out", str(out),
                     "--markdown", str(md), "--cpu-threads", "1")
    r = json.loads(out.read_text())
    failed = {k: s.get("error") for k, s in r["stages"].items() if s["status"] != "passed"}
    assert res.returncode == 0 and r["passed"] and not failed, (failed, res.stderr[-3000:])
    assert list(r["stages"]) == STAGES
    st = {k: s["figures"] for k, s in r["stages"].items()}
    assert "no GPU" in r["device_name"] and r["date"] and r["total_s"] > 0
    assert st["pytest_cuda"]["passed"] == 0 and st["pytest_cuda"]["skipped"] >= 5  # tests/test_cuda.py's
    assert st["data"]["shards"] == gpu_check.TINY.episodes and st["data"]["frames"] > 0
    ddp = st["ddp"]
    assert ddp["backend"] == "gloo" and ddp["final_step"] == gpu_check.TINY.ddp_steps
    assert gpu_check.TINY.ddp_kill_after <= ddp["resumed_from_step"] < ddp["final_step"]
    assert st["preprocess"]["pipeline_over_decode"] > 0 and st["preprocess"]["decode_only_frames_per_s"] > 0
    assert st["live"]["tiny"]["fps"] > 0 and st["live"]["tiny"]["tick_ms_median"] > 0
    for name, scaler in (("train_bf16", False), ("train_fp16", True)):
        f = st[name]
        t, mid = f["train_py"], f["mid_training"]
        assert t["steps"] >= gpu_check.TINY.min_train_steps and t["steps_per_s"] > 0 and t["frames_per_s"] > 0
        assert mid["steps_per_s"] > 0 and mid["frames_per_s"] > 0 and f["peak_memory_mb"] > 0
        assert -1 < mid["lpips_share_of_step"] < 1 and mid["lpips_weights"] == "real"
        assert t["nonfinite_skipped_steps"] < t["steps"]
        assert ("grad_scale_last" in t) == scaler
    text = md.read_text()
    assert text.startswith("### GPU check: ") and "every stage passed" in text
    assert all(f"| {name} | passed |" in text for name in STAGES)


def test_a_failing_stage_is_recorded_and_the_next_one_runs(tmp_path):
    cfg = gpu_check.GpuCheckConfig(device="cpu", tiny=True, work_dir=str(tmp_path))
    check = gpu_check.Check(cfg)

    def broken() -> dict:
        raise gpu_check.StageError("data: exit status 1; see data.log\nTraceback ...")

    check.record("data", broken)
    check.record("ddp", lambda: {}["backend"])  # a bug in a stage, not a failed command
    check.record("live", lambda: {"tiny": {"fps": 10.0, "tick_ms_median": 100.0, "tick_ms_p95": 120.0,
                                           "model_step_ms": 50.0, "vq_decode_ms": 40.0, "display_ms": 1.0,
                                           "device": "cpu"}})
    r = check.result()
    assert not r["passed"] and r["failed_stages"] == ["data", "ddp"]
    ddp_error = r["stages"]["ddp"]["error"]
    assert ddp_error.startswith("KeyError: 'backend'\n") and "Traceback" in ddp_error
    assert r["stages"]["data"]["status"] == "failed" and r["stages"]["live"]["status"] == "passed"
    text = gpu_check.markdown(r)
    assert "FAILED: data, ddp" in text and "| data | failed |" in text and "data: exit status 1; see data.log |" in text
    assert "| ddp | failed | " in text and "KeyError: 'backend' |" in text


@pytest.mark.parametrize("args, message", [(["--budget-s", "0"], "--budget-s must be > 0"),
                                           (["--frobnicate", "1"], "frobnicate")])
def test_bad_options_are_one_line_errors(args, message):
    res = run_script(*args, timeout=60)
    assert res.returncode == 2 and message in res.stderr
    assert "Traceback" not in res.stderr


def test_env_stage_on_a_gpu_reports_the_device(tmp_path, monkeypatch):
    """The env stage's GPU branch, with torch.cuda answering as on an H200 (no GPU needed)."""
    import types

    import torch

    props = types.SimpleNamespace(name="NVIDIA H200", total_memory=141 * 2 ** 30, major=9, minor=0,
                                  multi_processor_count=132)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: props)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    check = gpu_check.Check(gpu_check.GpuCheckConfig(device="cuda", work_dir=str(tmp_path)))
    check.record("env", check.stage_env)
    env = check.stages["env"]
    assert env["status"] == "passed", env
    f = env["figures"]
    assert f["device_name"] == "NVIDIA H200" and f["memory_gib"] == 141.0 and f["capability"] == "9.0"
    assert f["bf16"] is True and f["nccl"]
    r = check.result()
    assert r["device_name"] == "NVIDIA H200"
    assert "| env | passed |" in gpu_check.markdown(r) and "NVIDIA H200 141.0 GiB" in gpu_check.markdown(r)
