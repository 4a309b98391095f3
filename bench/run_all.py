"""`make bench`: run every bench/*.py script, store its JSON and regenerate the table in BENCHMARKS.md.

    python -m bench.run_all [--only live,vqvae] [--timeout 1800] [--bench-dir bench]
                            [--results bench/results] [--markdown BENCHMARKS.md]

Each script runs with its default options as `python -m bench.<name>` from the repository root and prints
one JSON object (the last stdout line that parses as a JSON object is taken; progress lines before it are
fine); its `headline` object, if it has one, holds the figures the table shows (else the first numbers
are shown). bench/results/<name>.json records that object with the machine, the date, the command, the exit
status and the wall time; a failing script is recorded too (ok: false, the tail of its stderr) and makes
run_all exit with status 1 after the others have run. The table between the markers
`<!-- bench-table:start -->` and `<!-- bench-table:end -->` in BENCHMARKS.md is rebuilt from every result
file present (so `--only` keeps the other rows); the hand-written sections around it are left alone.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

ROOT = Path(__file__).resolve().parents[1]
START = "<!-- bench-table:start -->"
END = "<!-- bench-table:end -->"
MAX_FIGURES = 8
"""Numbers shown per row of the table (all of them are in the result file)."""


def machine_info() -> dict[str, Any]:
    """CPU model, core count, load average (a shared machine makes figures noisy), OS, Python, torch and
    GPU (if any)."""
    info: dict[str, Any] = {"platform": platform.platform(), "python": platform.python_version(),
                            "cpu": platform.processor() or "unknown", "cores": os.cpu_count(),
                            "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg")
                            else None}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import torch

        info["torch"] = torch.__version__
        info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        info["torch"] = None
    return info


def discover(bench_dir: Path) -> list[str]:
    """Names of the bench scripts (every *.py but this runner, package files and gpu_check, which is
    `make gpu-check`), sorted."""
    return sorted(p.stem for p in bench_dir.glob("*.py") if p.stem not in ("run_all", "__init__", "gpu_check")
                  and not p.stem.startswith("_"))


def last_json(text: str) -> dict[str, Any] | None:
    """The last line of `text` that is a JSON object, else the whole text if it is one, else None."""
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(obj, dict):
                return obj
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


def run_one(name: str, bench_dir: Path, timeout: float, machine: dict[str, Any]) -> dict[str, Any]:
    """Run one script as a module of its folder's package; the record written to results/<name>.json."""
    cmd = [sys.executable, "-m", f"{bench_dir.name}.{name}"]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(bench_dir.parent), str(ROOT), env.get("PYTHONPATH"))
                                        if p)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=bench_dir.parent, env=env, capture_output=True, text=True, timeout=timeout)
        rc, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as e:
        rc = None
        stdout = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        stderr = f"timed out after {timeout:.0f} s"
    seconds = time.perf_counter() - t0
    result = last_json(stdout) if rc == 0 else None
    rec: dict[str, Any] = {"name": name, "ok": bool(rc == 0 and result is not None), "returncode": rc,
                           "result": result, "seconds": round(seconds, 2),
                           "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                           "machine": machine, "command": " ".join(["python", "-m", f"{bench_dir.name}.{name}"])}
    if not rec["ok"]:
        why = stderr.strip().splitlines()[-20:] if stderr.strip() else ["no JSON object on stdout"]
        rec["error"] = "\n".join(why)
    return rec


def flatten(obj: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Numeric and short string leaves of a nested result as (dotted key, value)."""
    out: list[tuple[str, Any]] = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += flatten(v, f"{prefix}{k}.")
    elif isinstance(obj, bool):
        out.append((prefix[:-1], obj))
    elif isinstance(obj, (int, float)):
        out.append((prefix[:-1], obj))
    return out


def _num(v: Any) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def table(records: Sequence[dict[str, Any]]) -> str:
    """The markdown table of bench results, one row per script."""
    lines = ["| bench | status | figures | seconds | machine | date |", "|---|---|---|---|---|---|"]
    for r in records:
        m = r.get("machine") or {}
        gpu = m.get("gpu")
        machine = f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores" + (f", {gpu}" if gpu else ", no GPU")
        if m.get("load_average"):
            machine += f", load {m['load_average'][0]}"
        if r.get("ok"):
            result = r.get("result") or {}
            figs = flatten(result.get("headline") or result)
            shown = ", ".join(f"{k} {_num(v)}" for k, v in figs[:MAX_FIGURES])
            if len(figs) > MAX_FIGURES:
                shown += f", ... ({len(figs) - MAX_FIGURES} more in bench/results/{r['name']}.json)"
            status = "ok"
        else:
            err = (r.get("error") or "").strip().splitlines()
            shown = (err[-1] if err else "failed").replace("|", "/")[:120]
            status = "FAILED"
        lines.append(f"| {r['name']} | {status} | {shown} | {r.get('seconds', '-')} | {machine} | "
                     f"{r.get('date', '-')} |")
    return "\n".join(lines)


def update_markdown(path: Path, body: str) -> None:
    """Replace the text between the markers with `body`; without markers, insert the block before the
    first section heading (or at the end)."""
    from ckpt_io import atomic_write_text

    block = (f"{START}\n## All benchmarks (generated by `make bench`, do not edit by hand)\n\n{body}\n{END}")
    text = path.read_text() if path.is_file() else "# Benchmarks\n"
    if START in text and END in text:
        head, rest = text.split(START, 1)
        tail = rest.split(END, 1)[1]
        text = head + block + tail
    else:
        idx = text.find("\n## ")
        if idx >= 0:
            text = text[:idx + 1] + block + "\n\n" + text[idx + 1:]
        else:
            text = text.rstrip() + "\n\n" + block + "\n"
    atomic_write_text(path, text)


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    from ckpt_io import atomic_write_json

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default="", help="comma-separated script names to run (default: all)")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds allowed per script")
    ap.add_argument("--bench-dir", default=str(ROOT / "bench"))
    ap.add_argument("--results", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--markdown", default=str(ROOT / "BENCHMARKS.md"))
    args = ap.parse_args(argv)
    bench_dir, results = Path(args.bench_dir).resolve(), Path(args.results)
    names = discover(bench_dir)
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = sorted(set(wanted) - set(names))
        if unknown:
            print(f"error: unknown bench script(s) {unknown}; available: {names}", file=sys.stderr)
            return 2
        names = [n for n in names if n in wanted]
    failed = []
    for name in names:
        print(f"== bench {name}", flush=True)
        rec = run_one(name, bench_dir, args.timeout, machine_info())
        atomic_write_json(results / f"{name}.json", rec)
        print(json.dumps(rec["result"]) if rec["ok"] else f"FAILED: {rec.get('error', '')}", flush=True)
        if not rec["ok"]:
            failed.append(name)
    present = set(discover(bench_dir))
    records = []
    for p in sorted(results.glob("*.json")):
        try:
            rec = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(rec, dict) and rec.get("name") in present:
            records.append(rec)
    update_markdown(Path(args.markdown), table(records))
    print(f"results in {results}; table regenerated in {args.markdown}"
          + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
