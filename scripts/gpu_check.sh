#!/usr/bin/env bash
# `make gpu-check`: exercise every CUDA path (tests, tokenizer, a100-preset training in bf16 and in fp16 +
# GradScaler, torchrun with NCCL and a resume, preprocessing and live play on the GPU) within --budget-s
# (480 s), writing bench/results/gpu_check.json and bench/results/gpu_check.md (a section for BENCHMARKS.md).
# The stages are bench/gpu_check.py; options go to it (--help lists them). `--device cpu --tiny` is the
# CPU rehearsal that tests/test_gpu_check.py runs. Exit status 1 if any stage failed.
#
# PY picks the interpreter (default .venv/bin/python, else python3). A machine without network access that
# has torch but not the rest (the lent GPU machines) gets it from .gpu_carry/, which scripts/gpu_carry.sh
# fills on a machine with network: av and pygame wheels and the LPIPS trunk weights.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PY:-}" ]; then
    if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
if [ -d .gpu_carry ] && ! "$PY" -c "import av, pygame" >/dev/null 2>&1; then
    if [ ! -d .gpu_carry/site ]; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --target .gpu_carry/site .gpu_carry/*.whl \
            || { echo "error: could not install the wheels in .gpu_carry/ with $PY" >&2; exit 2; }
    fi
    export PYTHONPATH="$PWD/.gpu_carry/site${PYTHONPATH:+:$PYTHONPATH}"
fi
if [ -z "${OCHRE_LPIPS_WEIGHTS:-}" ] && [ -f .gpu_carry/alexnet.ckpt ]; then
    export OCHRE_LPIPS_WEIGHTS="$PWD/.gpu_carry/alexnet.ckpt"
fi
export WANDB_MODE=disabled PYTHONUNBUFFERED=1
exec "$PY" -m bench.gpu_check "$@"
