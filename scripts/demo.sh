#!/usr/bin/env bash
# `make demo`: the whole pipeline on the built-in block world, no downloads. Steps are added as the
# pipeline's pieces land; each writes under $1 (default runs/demo).
set -euo pipefail
OUT=${1:-runs/demo}
PY=.venv/bin/python
mkdir -p "$OUT"
echo "== 1/2 generate a block-world dataset (GameFactory layout) -> $OUT/blockworld"
$PY -m blockworld.generate --out "$OUT/blockworld" --episodes 8 --seconds 20 --seed 0 --workers 2
echo "== 2/2 preview: contact sheet and mp4 -> $OUT/preview"
$PY -m blockworld.preview --data "$OUT/blockworld" --out "$OUT/preview"
echo "demo finished: see $OUT/preview"
