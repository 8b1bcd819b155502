# ddsx: `make run` (the main job on the embedded default) and `make test` each set themselves up.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.ddsx-installed
# Extra pip arguments, e.g. PIP_EXTRA="--index-url https://download.pytorch.org/whl/cu124" for your CUDA.
PIP_EXTRA ?=

.PHONY: install run test test-slow lint format sweep report clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(PIP_EXTRA) -e '.[dev,launchers]'
	touch $(STAMP)

# The main job on the embedded default (mnist5k, no network): see README.md.
run: install
	$(BIN)/ddsx-train experiment=mnist5k_gaussian

test: install
	$(BIN)/python -m pytest -q

test-slow: install
	$(BIN)/python -m pytest -q -m slow

lint: install
	$(BIN)/ruff check ddsx tests experiments
	$(BIN)/ruff format --check ddsx tests experiments

format: install
	$(BIN)/ruff format ddsx tests experiments
	$(BIN)/ruff check --fix ddsx tests experiments

clean:
	rm -rf outputs multirun wandb lightning_logs .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
