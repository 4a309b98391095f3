#!/usr/bin/env bash
# `make demo`: the whole pipeline on the built-in block world, no downloads:
# generate -> train tokenizer -> preprocess -> train world model -> rollout video -> evaluation report.
# Everything is written under $1 (default runs/demo). Step counts are sized for a 2-core CPU; raise
# VQ_STEPS / WM_STEPS (environment) for a better model. Training uses one torch thread: on a 2-core
# machine two threads lose badly as soon as anything else runs.
set -euo pipefail
OUT=${1:-runs/demo}
PY=.venv/bin/python
VQ_STEPS=${VQ_STEPS:-800}
WM_STEPS=${WM_STEPS:-400}
mkdir -p "$OUT"
t0=$(date +%s)
stage() { echo; echo "== [$(( $(date +%s) - t0 ))s] $*"; }

stage "1/7 generate a block-world dataset (GameFactory layout) -> $OUT/blockworld"
$PY -m blockworld.generate --out "$OUT/blockworld" --episodes 12 --seconds 30 --seed 0 --workers 2

stage "2/7 preview: contact sheet and mp4 -> $OUT/preview"
$PY -m blockworld.preview --data "$OUT/blockworld" --out "$OUT/preview"

stage "3/7 train the VQ-VAE tokenizer ($VQ_STEPS steps) -> $OUT/vqvae"
$PY -m vq_vae.train --data "$OUT/blockworld" --run-dir "$OUT/vqvae" --preset laptop --max-steps "$VQ_STEPS" --cpu-threads 1

stage "4/7 preprocess into token shards -> $OUT/shards"
$PY preprocess.py --data "$OUT/blockworld" --vqvae "$OUT/vqvae/vqvae.pt" --out "$OUT/shards" --workers 2

stage "5/7 train the world model ($WM_STEPS steps) -> $OUT/world_model"
$PY train.py --data "$OUT/shards" --vqvae "$OUT/vqvae/vqvae.pt" --run-dir "$OUT/world_model" \
    --preset laptop --max-steps "$WM_STEPS" --total-steps "$WM_STEPS" --cpu-threads 1

stage "6/7 rollout video from a scripted action sequence -> $OUT/rollout_turn.mp4"
$PY inference.py --model "$OUT/world_model/world_model.pt" --context blockworld:7 --actions turn-right-360 \
    --frames 96 --compare --out "$OUT/rollout_turn.mp4"

stage "7/7 evaluation report -> $OUT/eval"
$PY evaluate.py --model "$OUT/world_model/world_model.pt" --data "$OUT/shards" \
    --source-data "$OUT/blockworld" --out "$OUT/eval" --quick

stage "demo finished"
echo "preview:  $OUT/preview"
echo "rollout:  $OUT/rollout_turn.mp4"
echo "report:   $OUT/eval/report.md"
