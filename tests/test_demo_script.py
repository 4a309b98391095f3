"""scripts/demo.sh (what `make demo` runs): its options fail fast. The pipeline itself is exercised stage by
stage in the other tests (each stage is one of the repo's scripts)."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_unknown_data_source_is_one_error_line_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    r = subprocess.run(["bash", str(ROOT / "scripts" / "demo.sh"), str(out)], cwd=ROOT, capture_output=True,
                       text=True, env={**os.environ, "DATA": "gamefactory"}, timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == ["error: DATA=gamefactory: use blockworld or minetest"]
    assert not out.exists()
