# Two entry points for a fresh machine (only Python >= 3.11 and the package registries needed):
#   make demo   - set up .venv and run the demo (real models and data, offline-capable)
#   make test   - set up .venv and run the default test tier
PY ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.lmadapt-installed

.PHONY: demo test test-integration lint setup clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@$(PY) -c 'import sys; assert sys.version_info >= (3, 11), "lmadapt needs Python >= 3.11"'
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and pinned: a bare requirement could pull a multi-GB CUDA build on a CPU machine
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/lmadapt demo --out demo-out

test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider

test-integration: $(STAMP)
	$(BIN)/python -m pytest -q -m integration

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) demo-out .pytest_cache
