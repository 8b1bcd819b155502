# ddsx: `make run` (the main job on the embedded default) and `make test` each set themselves up.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.ddsx-installed
# Extra pip arguments, e.g. PIP_EXTRA="--index-url https://download.pytorch.org/whl/cu124" for your CUDA.
PIP_EXTRA ?=
# Where torch and torchvision come from, installed before ddsx (which then keeps them). Empty: the
# package index pip is set up with (PyPI's Linux torch brings the CUDA libraries, several GB). For a
# CPU-only machine: make install TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
TORCH_INDEX_URL ?=

.PHONY: install denoiser run test test-fast test-slow bench lint format sweep report clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(if $(TORCH_INDEX_URL),$(BIN)/python -m pip install --quiet --index-url $(TORCH_INDEX_URL) torch torchvision)
	$(BIN)/python -m pip install --quiet $(PIP_EXTRA) -e '.[dev,launchers]'
	@# Hydra finds plugins (hydra/sweeper=ddsx, DDSX_CONF_DIR) by listing the hydra_plugins namespace,
	@# which setuptools' editable finder does not list: put the checkout itself on sys.path, as the
	@# legacy `setup.py develop` did. A wheel install needs none of this.
	$(BIN)/python -c 'import pathlib, sysconfig; pathlib.Path(sysconfig.get_paths()["purelib"], "ddsx_checkout.pth").write_text(str(pathlib.Path.cwd()) + "\n")'
	touch $(STAMP)

# The main job on the embedded default (mnist5k, no network): see README.md.
DENOISER := $(or $(DDSX_CHECKPOINTS),checkpoints)/denoisers/mnist5k_ddpm
RUN_DIR := outputs/make_run/$(shell date +%Y-%m-%d_%H-%M-%S)
# The mnist5k DDPM denoiser, trained once to its quality target (20 epochs, about 12 idle CPU minutes);
# an existing one is reused only if its quality.json says it meets the target, else make stops with
# the command that continues its training.
denoiser: install
	if test -f $(DENOISER)/model_index.json; then \
		$(BIN)/ddsx-denoiser mode=check save_dir=$(DENOISER) hydra.output_subdir=null hydra.run.dir=$(RUN_DIR)/denoiser_check; \
	else \
		$(BIN)/ddsx-denoiser save_dir=$(DENOISER); \
	fi

run: denoiser
	@# 1. the denoiser (above); 2.+3. LeNet trained with the paper's method at sigma 0.5 through it,
	@#    then certified
	$(BIN)/ddsx-train experiment=mnist5k_dds_adv hydra.run.dir=$(RUN_DIR)
	@# 4. the certified-accuracy table
	$(BIN)/ddsx-report $(RUN_DIR)

# A real small sweep on the embedded default: sigma in {0.25, 0.5} x (dds_finetune, dds_adv), a short
# training and certification each (conf/sweep/mnist5k_small.yaml), the 4 jobs run side by side through
# the submitit_local launcher (the executor a SLURM sweep uses), one thread each; CSV and offline W&B
# logs; then the comparison report of the sweep folder (one table per sigma, the W&B runs).
SWEEP_DIR := multirun/make_sweep/$(shell date +%Y-%m-%d_%H-%M-%S)
sweep: denoiser
	@echo "make sweep: 4 jobs side by side, silent for minutes; each job's log: $(SWEEP_DIR)/<job>/train.log"
	$(BIN)/ddsx-train -m sweep=mnist5k_small 'logger=[csv,wandb]' hydra/launcher=submitit_local \
		hydra.launcher.cpus_per_task=1 hydra.launcher.timeout_min=60 hydra.sweep.dir=$(SWEEP_DIR)
	$(BIN)/ddsx-report $(SWEEP_DIR)

# What CI runs (.ci/run): the fast tests and the end-to-end ones (e2e: subprocesses, torch.compile).
test: install
	$(BIN)/python -m pytest -q

# While editing: the fast tests only (no e2e, no slow), spread over the CPU cores (pytest-xdist).
test-fast: install
	$(BIN)/python -m pytest -q -n auto -m 'not slow and not e2e'

test-slow: install
	$(BIN)/python -m pytest -q -m slow

# Speed figures (experiments/bench/RESULTS.md): certification throughput against the reference loop on
# three model sets, then one dds_adv training step against gaussian and dds_finetune, in full precision
# and under bf16 autocast. On a GPU machine: make bench DEVICE=cuda.
DEVICE ?= cpu
bench: install
	$(BIN)/python experiments/bench/certify_speed.py --device $(DEVICE)
	$(BIN)/python experiments/bench/method_step.py --device $(DEVICE) --autocast none,bf16

lint: install
	$(BIN)/ruff check ddsx tests experiments
	$(BIN)/ruff format --check ddsx tests experiments

format: install
	$(BIN)/ruff format ddsx tests experiments
	$(BIN)/ruff check --fix ddsx tests experiments

clean:
	rm -rf outputs multirun wandb lightning_logs .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
