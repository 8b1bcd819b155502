#!/usr/bin/env bash
# Prepare, on this CPU machine, what experiments/gpu_session.sh needs on the bare device machine:
#   .whl/     the wheels its image lacks, at the versions installed here (its Python is 3.12)
#   .devrun/  the trained mnist5k DDPM (from DDSX_CHECKPOINTS) and, for `gpu_session.sh v2`, the state
#             an earlier v2 call brought back (pass the folder holding its v2_state.tgz.part-* files)
# Both are ignored by git, so every device call names them in `carry`: [".whl", ".devrun"].
set -euo pipefail
CHECKPOINTS=${DDSX_CHECKPOINTS:-checkpoints}
DENOISER=$CHECKPOINTS/denoisers/mnist5k_ddpm
[ -f "$DENOISER/model_index.json" ] || { echo "gpu_prepare.sh: no trained denoiser at $DENOISER (make run makes it)" >&2; exit 2; }
version() { python -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$1"; }
rm -rf .whl && mkdir -p .whl
pure=()
for package in hydra-core omegaconf diffusers mlxtend importlib_metadata; do pure+=("$package==$(version "$package")"); done
python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_17_x86_64 -d .whl "${pure[@]}"
# antlr4's runtime (omegaconf's parser) is published as a source archive only: build its wheel here.
python -m pip wheel -q --no-deps -w .whl "antlr4-python3-runtime==$(version antlr4-python3-runtime)"
mkdir -p .devrun/ckpt/denoisers
rm -rf .devrun/ckpt/denoisers/mnist5k_ddpm && cp -r "$DENOISER" .devrun/ckpt/denoisers/
rm -f .devrun/v2_state.tgz.part-*
if [ $# -ge 1 ]; then cp "$1"/v2_state.tgz.part-* .devrun/; fi
du -sh .whl .devrun
