#!/usr/bin/env bash
# Everything this project measures on a lent GPU, in two calls of under ten minutes (the device
# machine is bare: no ddsx install, no registry). From the repository root, with $OUT the folder
# whose files come back:
#
#   bash experiments/gpu_session.sh bench     # part 1: timings, alone on the GPU
#   bash experiments/gpu_session.sh runs      # parts 2 and 3, side by side
#   bash experiments/gpu_session.sh reproduce # part 4: issue 13's reproduction, in one call
#   bash experiments/gpu_session.sh v2        # part 5: issue 23's pre-registered v2 runs (resumable)
#
# Inputs prepared on the CPU machine by experiments/gpu_prepare.sh (ignored by git; every call names
# them in the device tool's carry: [".whl", ".devrun"]):
#   .whl/                                     wheels the GPU image lacks (hydra-core, omegaconf, antlr4,
#                                             diffusers, mlxtend, importlib_metadata)
#   .devrun/ckpt/denoisers/mnist5k_ddpm/      the trained mnist5k DDPM
#   .devrun/sequential/lenet_sigma<S>/        LeNets of `ddsx-train experiment=mnist5k_gaussian sigma=S`
# Parts, in order (timings first, alone on the GPU; then the long jobs side by side):
#   1. make bench's GPU lines: experiments/bench/certify_speed.py and method_step.py on cuda
#   2. experiments/sequential_vs_fixed.py on cuda (issue 10's fixed vs sequential comparison)
#   3. experiments/mnist5k_compare.sh on cuda, full precision, then experiments/certify_multi_timing.py
#   4. experiments/mnist5k_reproduce.sh (train, certify, analyze) with the denoiser of
#      .devrun/repro_ckpt/denoisers/mnist5k_ddpm (make run's, with its quality.json), one pipeline per
#      sigma side by side (JOBS trainings at a time in each), then certify_multi_timing.py on sigma 0.5's
#      twelve DDS classifiers at n = 10,000 for the cost of separate fixed runs. Everything stops by
#      DEADLINE seconds after the start, so the results are packed before the call's limit; the
#      reproduction resumes from what came back (the tables are made on the CPU machine: STEPS=report).
#      ACCEL=cpu and the scale knobs of mnist5k_reproduce.sh make a local smoke run of this part.
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
for app in train certify denoiser report analyze; do
    printf '#!/bin/sh\nexec python3 -c "import sys; sys.argv[0] = \\"ddsx-%s\\"; from ddsx.cli.%s import main; r = main(); sys.exit(r if isinstance(r, int) else 0)" "$@"\n' \
        "$app" "$app" > .venv/bin/ddsx-$app
    chmod +x .venv/bin/ddsx-$app
done
{ nvidia-smi; python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0))"; } > "$OUT/machine.txt" 2>&1

PART=${1:-bench}
if [ "$PART" = reproduce ]; then
# 4. issue 13's reproduction
start=$(date +%s)
DEADLINE=${DEADLINE:-540}
ACCEL=${ACCEL:-gpu}
export DDSX_CHECKPOINTS=$ROOT/.devrun/repro_ckpt OMP_NUM_THREADS=1
R=outputs/mnist5k_reproduce
export TRAIN_EXTRA="trainer.accelerator=$ACCEL ${TRAIN_EXTRA:-}"
# bf16 autocast and NHWC for the certification's forward passes (about half the time of fp32 on the H100,
# experiments/bench/RESULTS.md); recorded in every result file's settings.
CERTIFY_FAST=${CERTIFY_FAST-certify.autocast_dtype=bfloat16 certify.channels_last=true}
export CERTIFY_EXTRA="trainer.accelerator=$ACCEL certify.batch_size=${CERTIFY_BATCH:-10000} $CERTIFY_FAST ${CERTIFY_EXTRA:-}"
export ANALYZE_EXTRA="trainer.accelerator=$ACCEL batch_size=500 ${ANALYZE_EXTRA:-}"
left() { echo $(( DEADLINE - ($(date +%s) - start) )); }
logs=$R/device_logs  # in reproduce.tgz: at most 8 files come back from $OUT
mkdir -p $logs
OUT=$R STEPS=denoiser bash experiments/mnist5k_reproduce.sh > $logs/denoiser_check.log 2>&1
for S in ${SIGMAS:-0.25 0.5 1.0}; do
    OUT=$R SIGMAS=$S JOBS=${JOBS:-5} STEPS="train certify analyze" timeout $(( $(left) - ${TIMING_S:-60} )) \
        bash experiments/mnist5k_reproduce.sh > $logs/pipeline_sigma$S.log 2>&1 &
done
wait
echo "pipelines ended after $(( $(date +%s) - start )) s" | tee -a $logs/times.txt
T=$R/train/sigma0.5
ckpts=() names=()
for name in standard dds_finetune dds_adv dds_adv_strong; do
    for seed in ${SEEDS:-0 1 2}; do ckpts+=("$T/${name}_seed$seed/checkpoints/last.ckpt"); names+=("${name}_seed$seed"); done
done
timing=$R/certify_multi_timing_n10000.txt
if ! grep -q "^exit 0" "$timing" 2> /dev/null; then
    timeout $(( $(left) > 10 ? $(left) : 10 )) python3 experiments/certify_multi_timing.py --device "${ACCEL/gpu/cuda}" \
        --denoiser "$DDSX_CHECKPOINTS/denoisers/mnist5k_ddpm" --ckpt "${ckpts[@]}" --names "${names[@]}" \
        --n "${N:-10000}" --max "${TIMING_DIGITS:-10}" --batch-size "${CERTIFY_BATCH:-10000}" > "$timing" 2>&1
    echo "exit $? after $(( $(date +%s) - start )) s" >> "$timing"
fi
cp "$timing" "$OUT/"
tail -n 3 "$timing" $logs/pipeline_sigma*.log; cat $R/reproduce.log | tail -n 30
# Back: every result, log and plot (no checkpoints), and each sigma's last.ckpt files (under 16 MiB each).
tar czf "$OUT/reproduce.tgz" --exclude='*.ckpt' --exclude=wandb $R 2> /dev/null
for S in ${SIGMAS:-0.25 0.5 1.0}; do
    tar czf "$OUT/ckpt_sigma$S.tgz" $(find $R/train/sigma$S -name last.ckpt) 2> /dev/null
done
ls -la "$OUT"
exit 0
fi
if [ "$PART" = v2 ]; then
# 5. issue 23's pre-registered reproduction (experiments/results/mnist5k_v2/PROTOCOL.md), resumable
# across calls: each call brings back outputs/mnist5k_v2 (each run's last.ckpt included) as
# v2_state.tgz.part-aa, -ab, ..., which `bash experiments/gpu_prepare.sh <folder of the parts>` puts
# in .devrun/ for the next call. Training and certification only: the tables are made on the CPU machine from what came back
# (`PROTOCOL=v2 STEPS=report bash experiments/mnist5k_reproduce.sh` with the same extras), so the
# protocol's every step runs from the committed script.
start=$(date +%s)
DEADLINE=${DEADLINE:-540}
export OMP_NUM_THREADS=1
if ls .devrun/v2_state.tgz.part-* > /dev/null 2>&1; then cat .devrun/v2_state.tgz.part-* | tar xzf -; fi
# The protocol allows only the device and the certification batch to be chosen (and every call of
# one OUT must pass the same, which the script checks).
export TRAIN_EXTRA="trainer.accelerator=gpu" CERTIFY_EXTRA="trainer.accelerator=gpu certify.batch_size=10000"
# setsid: the trainings and certifications the script starts in the background are one process
# group, stopped together at the deadline so that the state packed below is not being written.
OUT=outputs/mnist5k_v2 PROTOCOL=v2 V2_PHASE=${V2_PHASE:-primary} JOBS=${JOBS:-20} STEPS="denoiser train certify" \
    setsid bash experiments/mnist5k_reproduce.sh > "$OUT/v2.log" 2>&1 &
group=$!
while kill -0 $group 2> /dev/null && [ $(( $(date +%s) - start )) -lt $(( DEADLINE - 30 )) ]; do sleep 5; done
if kill -0 $group 2> /dev/null; then
    kill -TERM -- -$group; sleep 5; kill -KILL -- -$group 2> /dev/null
    echo "stopped at the deadline after $(( $(date +%s) - start )) s: call again to resume" >> "$OUT/v2.log"
else
    wait $group; echo "exit $? after $(( $(date +%s) - start )) s" >> "$OUT/v2.log"
fi
tail -n 20 outputs/mnist5k_v2/reproduce.log 2> /dev/null
# In 15 MB parts (a file that comes back from the device holds at most 16 MiB): with last.ckpt only,
# the 40 primary runs are about 31 MB.
tar czf - --exclude=wandb --exclude='epoch*.ckpt' outputs/mnist5k_v2 | split -b 15M - "$OUT/v2_state.tgz.part-"
ls -la "$OUT"
exit 0
fi
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
