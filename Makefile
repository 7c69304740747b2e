# Every target bootstraps .venv from nothing with the pinned versions.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
BACKENDS := jax tensorflow torch

.PHONY: venv demo test lint clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch==2.13.0 exactly: the CPU wheel cached on these machines.
	$(PY) -m pip install --quiet -e ".[jax,tensorflow,torch,dev]"
	touch $(STAMP)

demo: $(STAMP)
	KERAS_BACKEND=$${KERAS_BACKEND:-jax} $(PY) examples/demo_digits.py

# One process per backend: Keras picks its backend once per process.
test: $(STAMP)
	@set -e; for b in $(BACKENDS); do \
		echo "=== KERAS_BACKEND=$$b"; \
		KERAS_BACKEND=$$b $(PY) -m pytest tests; \
	done

clean:
	rm -rf $(VENV) build *.egg-info
