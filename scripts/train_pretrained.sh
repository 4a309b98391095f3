#!/usr/bin/env bash
# Reproduce checkpoints/blockworld_laptop from scratch (about 2.5 hours on a 2-core CPU):
#   1. the make-demo block world (seed 0, 12 x 30 s) and its laptop tokenizer (800 steps);
#   2. the laptop world model for WM_STEPS of TOTAL_STEPS steps on one torch thread, checkpointing every 300 steps
#      (an interrupted run resumes when the script is started again: finished stages are skipped);
#   3. held-out block-world seeds (seed 1000, 4 x 30 s: none of it is training data) and the full
#      evaluate.py report on them;
#   4. the weights-only tokenizer and world model copied to $SHIP (the world model finds vqvae.pt beside it).
# Usage: bash scripts/train_pretrained.sh [OUT] (default runs/pretrained); SHIP=dir to ship elsewhere.
set -euo pipefail
OUT=${1:-runs/pretrained}
SHIP=${SHIP:-checkpoints/blockworld_laptop}
PY=.venv/bin/python
WM_STEPS=${WM_STEPS:-4200}      # the shipped model stopped here (2 h on one core)
TOTAL_STEPS=${TOTAL_STEPS:-4500}  # the schedules (LR cosine, curricula) follow this
mkdir -p "$OUT"

[ -f "$OUT/blockworld/annotation.csv" ] ||
    $PY -m blockworld.generate --out "$OUT/blockworld" --episodes 12 --seconds 30 --seed 0 --workers 2
[ -f "$OUT/vqvae/vqvae.pt" ] ||
    $PY -m vq_vae.train --data "$OUT/blockworld" --run-dir "$OUT/vqvae" --preset laptop --max-steps 800 --cpu-threads 1
[ -f "$OUT/shards/manifest.json" ] ||
    $PY preprocess.py --data "$OUT/blockworld" --vqvae "$OUT/vqvae/vqvae.pt" --out "$OUT/shards" --workers 2

resume=()
if compgen -G "$OUT/world_model/checkpoints/*.pt" > /dev/null; then resume=(--resume); fi
$PY train.py --data "$OUT/shards" --vqvae "$OUT/vqvae/vqvae.pt" --run-dir "$OUT/world_model" --preset laptop \
    --max-steps "$WM_STEPS" --total-steps "$TOTAL_STEPS" --cpu-threads 1 --ckpt-every 300 --keep-last 20 "${resume[@]}"

[ -f "$OUT/heldout/annotation.csv" ] ||
    $PY -m blockworld.generate --out "$OUT/heldout" --episodes 4 --seconds 30 --seed 1000 --workers 2
[ -f "$OUT/heldout_shards/manifest.json" ] ||
    $PY preprocess.py --data "$OUT/heldout" --vqvae "$OUT/vqvae/vqvae.pt" --out "$OUT/heldout_shards" --workers 2
$PY evaluate.py --model "$OUT/world_model/world_model.pt" --data "$OUT/heldout_shards" --source-data "$OUT/heldout" \
    --out "$OUT/eval" --cpu-threads 1

mkdir -p "$SHIP"
cp "$OUT/vqvae/vqvae.pt" "$SHIP/vqvae.pt.tmp" && mv "$SHIP/vqvae.pt.tmp" "$SHIP/vqvae.pt"
cp "$OUT/world_model/world_model.pt" "$SHIP/world_model.pt.tmp" && mv "$SHIP/world_model.pt.tmp" "$SHIP/world_model.pt"
echo "shipped: $SHIP (write its card.md from $OUT/eval/report.md)"
