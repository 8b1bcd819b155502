#!/usr/bin/env bash
# Everything this project measures on a lent GPU, in two calls of under ten minutes (the device
# machine is bare: no ddsx install, no registry). From the repository root, with $OUT the folder
# whose files come back:
#
#   bash experiments/gpu_session.sh bench     # part 1: timings, alone on the GPU
#   bash experiments/gpu_session.sh runs      # parts 2 and 3, side by side
#
# Inputs prepared on the CPU machine (ignored by git, carried to the device):
#   .whl/                                     wheels the GPU image lacks (hydra-core, omegaconf, antlr4,
#                                             diffusers, mlxtend, importlib_metadata)
#   .devrun/ckpt/denoisers/mnist5k_ddpm/      the trained mnist5k DDPM
#   .devrun/sequential/lenet_sigma<S>/        LeNets of `ddsx-train experiment=mnist5k_gaussian sigma=S`
# Parts, in order (timings first, alone on the GPU; then the long jobs side by side):
#   1. make bench's GPU lines: experiments/bench/certify_speed.py and method_step.py on cuda
#   2. experiments/sequential_vs_fixed.py on cuda (issue 10's fixed vs sequential comparison)
#   3. experiments/mnist5k_compare.sh on cuda, full precision, then experiments/certify_multi_timing.py
set -u
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
ROOT=$PWD
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
fi
export PYTHONPATH=/tmp/site:$ROOT PYTHONUNBUFFERED=1 DDSX_CHECKPOINTS=$ROOT/.devrun/ckpt
# Hydra apps read their configs from the package ddsx.conf, which an install maps to conf/.
[ -e ddsx/conf ] || ln -s ../conf ddsx/conf
# Console scripts, as an install would make them (mnist5k_compare.sh puts .venv/bin first on PATH).
mkdir -p .venv/bin
for app in train certify denoiser report; do
    printf '#!/bin/sh\nexec python3 -c "import sys; sys.argv[0] = \\"ddsx-%s\\"; from ddsx.cli.%s import main; r = main(); sys.exit(r if isinstance(r, int) else 0)" "$@"\n' \
        "$app" "$app" > .venv/bin/ddsx-$app
    chmod +x .venv/bin/ddsx-$app
done
{ nvidia-smi; python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0))"; } > "$OUT/machine.txt" 2>&1

PART=${1:-bench}
if [ "$PART" = bench ]; then
# 1. timings, alone on the GPU
timeout 420 python3 experiments/bench/certify_speed.py --device cuda > "$OUT/bench_gpu.txt" 2>&1
echo "exit $?" >> "$OUT/bench_gpu.txt"
timeout 90 python3 experiments/bench/method_step.py --device cuda --autocast none,bf16 --repeats 10 \
    > "$OUT/method_step_gpu.txt" 2>&1
exit 0
fi

# 2. and 3. side by side
timeout 420 python3 experiments/sequential_vs_fixed.py --device cuda --batch-size 10000 \
    --runs .devrun/sequential --out results/sequential > "$OUT/sequential.log" 2>&1 &
(
    OUT=outputs/mnist5k_compare EXTRA=trainer.accelerator=gpu WITH_L2=1 timeout 400 bash experiments/mnist5k_compare.sh
    echo "compare exit $?"
    C=outputs/mnist5k_compare
    timeout 120 python3 experiments/certify_multi_timing.py --device cuda --denoiser "$DDSX_CHECKPOINTS/denoisers/mnist5k_ddpm" \
        --ckpt $C/dds/checkpoints/last.ckpt $C/dds_finetune/checkpoints/last.ckpt $C/dds_adv/checkpoints/last.ckpt \
        $C/dds_adv_l2/checkpoints/last.ckpt > "$OUT/certify_multi_timing_gpu.txt" 2>&1
) > "$OUT/compare.log" 2>&1 &
wait
# The result files of every run (no checkpoints) and the regenerated report, in one archive.
tar czf "$OUT/results.tgz" --exclude='*.ckpt' --exclude='wandb' results outputs/mnist5k_compare \
    experiments/results/mnist5k_sigma0.5 2> /dev/null
ls -la "$OUT"
