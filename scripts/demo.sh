#!/usr/bin/env bash
# `make demo`: the whole pipeline on the built-in block world, no downloads:
# generate -> train tokenizer -> preprocess -> train world model -> rollout video -> evaluation report.
# Everything is written under $1 (default runs/demo). Step counts are sized for a 2-core CPU; raise
# VQ_STEPS / WM_STEPS (environment) for a better model. Training uses one torch thread: on a 2-core
# machine two threads lose badly as soon as anything else runs.
# DATA=minetest (`make demo DATA=minetest`) records real Minetest gameplay instead (python -m
# minetest_recorder: 10 x 30 s plus one held-out episode for the rollout video; needs
# `apt-get install minetest xvfb`); there is no oracle, so the evaluation has no counterfactuals.
set -euo pipefail
OUT=${1:-runs/demo}
PY=.venv/bin/python
VQ_STEPS=${VQ_STEPS:-800}
WM_STEPS=${WM_STEPS:-400}
DATA=${DATA:-blockworld}
case "$DATA" in
blockworld | minetest) ;;
*) echo "error: DATA=$DATA: use blockworld or minetest" >&2; exit 2 ;;
esac
mkdir -p "$OUT"
t0=$(date +%s)
stage() { echo; echo "== [$(( $(date +%s) - t0 ))s] $*"; }

case "$DATA" in
blockworld)
    RAW="$OUT/blockworld"
    stage "1/7 generate a block-world dataset (GameFactory layout) -> $RAW"
    $PY -m blockworld.generate --out "$RAW" --episodes 12 --seconds 30 --seed 0 --workers 2
    VIDEO="$OUT/rollout_turn.mp4"
    EVAL_SOURCE=(--source-data "$RAW") ;;
minetest)
    RAW="$OUT/minetest"
    stage "1/7 record Minetest gameplay (GameFactory layout) -> $RAW, held-out episode -> $OUT/minetest_heldout"
    $PY -m minetest_recorder --out "$RAW" --episodes 10 --seconds 30 --seed 100
    $PY -m minetest_recorder --out "$OUT/minetest_heldout" --episodes 1 --seconds 30 --seed 1000
    VIDEO="$OUT/rollout_heldout.mp4"
    EVAL_SOURCE=() ;;
esac

stage "2/7 preview: contact sheet and mp4 -> $OUT/preview"
$PY -m blockworld.preview --data "$RAW" --out "$OUT/preview"

stage "3/7 train the VQ-VAE tokenizer ($VQ_STEPS steps) -> $OUT/vqvae"
$PY -m vq_vae.train --data "$RAW" --run-dir "$OUT/vqvae" --preset laptop --max-steps "$VQ_STEPS" --cpu-threads 1

stage "4/7 preprocess into token shards -> $OUT/shards"
$PY preprocess.py --data "$RAW" --vqvae "$OUT/vqvae/vqvae.pt" --out "$OUT/shards" --workers 2

stage "5/7 train the world model ($WM_STEPS steps) -> $OUT/world_model"
$PY train.py --data "$OUT/shards" --vqvae "$OUT/vqvae/vqvae.pt" --run-dir "$OUT/world_model" \
    --preset laptop --max-steps "$WM_STEPS" --total-steps "$WM_STEPS" --cpu-threads 1

stage "6/7 rollout video beside the truth -> $VIDEO"
if [ "$DATA" = blockworld ]; then
    $PY inference.py --model "$OUT/world_model/world_model.pt" --context blockworld:7 --actions turn-right-360 \
        --frames 96 --compare --out "$VIDEO"
else  # the held-out episode's own frames and actions: its truth is the recording
    $PY preprocess.py --data "$OUT/minetest_heldout" --vqvae "$OUT/vqvae/vqvae.pt" --out "$OUT/heldout_shards" \
        --workers 2
    $PY inference.py --model "$OUT/world_model/world_model.pt" \
        --context "shard:$(ls "$OUT"/heldout_shards/*.npz | head -1)" --frames 96 --compare \
        --out "$VIDEO"
fi

stage "7/7 evaluation report -> $OUT/eval"
$PY evaluate.py --model "$OUT/world_model/world_model.pt" --data "$OUT/shards" \
    "${EVAL_SOURCE[@]}" --out "$OUT/eval" --quick

stage "demo finished"
echo "preview:  $OUT/preview"
echo "rollout:  $VIDEO"
echo "report:   $OUT/eval/report.md"
