# Every target bootstraps .venv from nothing with the pinned versions.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
BACKENDS := jax tensorflow torch
HUB_PACKAGES := keras-hub==0.32.0 regex==2026.11.19 tokenizers==0.23.3

.PHONY: venv demo test test-fast lint clean

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch==2.13.0 exactly: the CPU wheel cached on these machines.
	$(PY) -m pip install --quiet -e ".[jax,tensorflow,torch,dev]"
	# KerasHub without its declared dependencies: they pull the full
	# `tensorflow` wheel (through tensorflow-text) beside tensorflow-cpu;
	# importing it needs only regex and tokenizers.
	$(PY) -m pip install --quiet --no-deps $(HUB_PACKAGES)
	touch $(STAMP)

demo: $(STAMP)
	KERAS_BACKEND=$${KERAS_BACKEND:-jax} $(PY) examples/demo_digits.py

# One pytest run per backend: Keras picks its backend once per process.
# Every backend runs even when one fails; the target fails at the end.
# Each run spreads its test files over WORKERS processes (pytest-xdist; a
# file stays in one process, so module fixtures are built once); WORKERS=0
# runs in this process. `-rs` prints every skip with its reason.
# `make test-fast` leaves out the tests marked `slow` (subprocesses, example
# runs).
WORKERS ?= 2
PYTEST_ARGS ?=
test: $(STAMP)
	@$(MAKE) --no-print-directory _per_backend PYTEST_ARGS='$(PYTEST_ARGS)'

test-fast: $(STAMP)
	@$(MAKE) --no-print-directory _per_backend \
		PYTEST_ARGS='-m "not slow" $(PYTEST_ARGS)'

_per_backend:
	@failed=""; for b in $(BACKENDS); do \
		echo "=== KERAS_BACKEND=$$b"; \
		KERAS_BACKEND=$$b $(PY) -m pytest tests -rs --durations=15 \
			-n $(WORKERS) --dist loadfile $(PYTEST_ARGS) \
			|| failed="$$failed $$b"; \
	done; \
	if [ -n "$$failed" ]; then echo "=== failed on:$$failed"; exit 1; fi

# ruff (pinned in the dev extra), configured in pyproject.toml [tool.ruff].
lint: $(STAMP)
	$(VENV)/bin/ruff check keras_sparsity tests examples benchmarks

clean:
	rm -rf $(VENV) $(TFMOT_VENV) $(TP_VENV) build *.egg-info

# Benchmarks: `make bench` writes benchmarks/results/<script>.md (about 45
# minutes on 2 cores); `make bench-quick` is a smoke run of every script
# (jax only, no TFMOT, under 5 minutes) into benchmarks/results/quick/.
.PHONY: bench bench-quick
TFMOT_VENV := .venv-tfmot
TFMOT_STAMP := $(TFMOT_VENV)/.installed
RESULTS := benchmarks/results
BENCH_SCRIPTS := tfmot_recipe bench_compression overview mask_update train_overhead \
	bench_attach bench_allocation bench_dst bench_oneshot bench_structural \
	bench_transformer

# TFMOT runs on Keras 2 (tf_keras) in a virtualenv of its own, with
# TF_USE_LEGACY_KERAS=1 (benchmarks/tfmot_recipe.py sets it).
$(TFMOT_STAMP):
	$(PYTHON) -m venv $(TFMOT_VENV)
	$(TFMOT_VENV)/bin/python -m pip install --quiet tensorflow-cpu==2.21.0 \
		tf-keras==2.21.0 tensorflow-model-optimization==0.8.1 numpy==2.4.6
	touch $(TFMOT_STAMP)

TP_VENV := .venv-tp
TP_STAMP := $(TP_VENV)/.installed

# Torch-Pruning, the structural benchmark's PyTorch peer, in a virtualenv of
# its own for benchmarks/torch_pruning_worker.py (the CPU torch wheel).
$(TP_STAMP):
	$(PYTHON) -m venv $(TP_VENV)
	$(TP_VENV)/bin/python -m pip install --quiet torch==2.13.0 \
		torch-pruning==1.6.1 numpy==2.4.6
	touch $(TP_STAMP)

bench: $(STAMP) $(TFMOT_STAMP) $(TP_STAMP)
	@mkdir -p $(RESULTS)
	@set -e; for s in $(BENCH_SCRIPTS); do \
		echo "=== benchmarks/$$s.py"; \
		$(PY) benchmarks/$$s.py --out $(RESULTS)/$$s.md; \
	done

bench-quick: $(STAMP)
	@mkdir -p $(RESULTS)/quick
	@set -e; for s in $(BENCH_SCRIPTS); do \
		echo "=== benchmarks/$$s.py --quick"; \
		$(PY) benchmarks/$$s.py --quick --out $(RESULTS)/quick/$$s.md; \
	done
