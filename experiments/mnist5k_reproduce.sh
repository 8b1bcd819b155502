#!/usr/bin/env bash
# The reproduction of issue 13 on the embedded 5,000 MNIST digits, from a fresh clone, resumable:
#   1. the mnist5k DDPM denoiser (ddsx-denoiser, `make run`'s quality target; reused if it meets it);
#   2. LeNet at each sigma and seed with gaussian, smoothadv, standard (off-the-shelf, for dds: trained on
#      clean digits, certified behind the denoiser), dds_finetune, dds_adv (attack=mnist, the paper's) and
#      dds_adv_strong (a stronger attack, STRONG_ATTACK);
#   3. certification of the same test digits (every SKIP-th, DIGITS of them), alpha = 0.001, sequential
#      with budget N, all classifiers of one sigma behind the one denoiser in one multi-classifier run
#      (and gaussian + smoothadv, which have no denoiser, in another);
#   4. the result files copied to RESULTS/certify, and from them ddsx-report tables (with the spread over
#      seeds), paired comparisons per sigma and seed (McNemar per radius, bootstrap ACR interval) and their
#      one-line summary with a test over seeds, the copies saved, and each training run's last metrics;
#   5. ddsx-analyze on standard, dds_finetune and dds_adv (seed ANALYZE_SEED) of each sigma.
#
#   bash experiments/mnist5k_reproduce.sh          (from the repository root, after `make install`)
#
# Every step that finished leaves a .done marker in its run folder and is skipped on the next run; an
# interrupted training resumes from its run folder's last.ckpt (ddsx-train does that by itself), an
# interrupted certification from its result files (ddsx-certify does), the denoiser from its last.ckpt.
# JOBS=k runs k trainings at a time (each one's output then goes to its run folder's stdout.log): on a
# GPU the small LeNet steps leave the card mostly idle, so parallel runs share it well. STEPS picks the
# steps (default: all of "denoiser train certify report analyze"), e.g. STEPS=report to redo the tables.
# A tiny smoke scale (minutes):
#   TRUST_DENOISER=1 SIGMAS=0.5 SEEDS=0 EPOCHS=1 DIGITS=4 SKIP=250 N=200 ANALYZE_DIGITS=8 ANALYZE_SIGMAS=2 \
#     TRAIN_EXTRA="+trainer.limit_train_batches=2 +trainer.limit_val_batches=1 test=false" \
#     OUT=/tmp/repro RESULTS=/tmp/repro/results bash experiments/mnist5k_reproduce.sh
set -euo pipefail
[ -x "$PWD/.venv/bin/ddsx-train" ] && export PATH="$PWD/.venv/bin:$PATH"

OUT=${OUT:-outputs/mnist5k_reproduce}
RESULTS=${RESULTS:-experiments/results/mnist5k}
CHECKPOINTS=${DDSX_CHECKPOINTS:-checkpoints}
SIGMAS=${SIGMAS:-0.25 0.5 1.0}
SEEDS=${SEEDS:-0 1 2}
EPOCHS=${EPOCHS:-10}
DENOISER_EPOCHS=${DENOISER_EPOCHS:-20}
DIGITS=${DIGITS:-500}
SKIP=${SKIP:-2}
N=${N:-10000}
RADII=${RADII:-0 0.25 0.5 0.75 1.0 1.25 1.5 1.75 2.0}
STRONG_ATTACK=${STRONG_ATTACK:-attack=mnist attack.steps=3 attack.step_size=0.1 attack.epsilon=0.3}
ANALYZE_SEED=${ANALYZE_SEED:-0}
ANALYZE_DIGITS=${ANALYZE_DIGITS:-$DIGITS}
ANALYZE_SIGMAS=${ANALYZE_SIGMAS:-21}
# Extra overrides: TRAIN_EXTRA for every ddsx-train run, CERTIFY_EXTRA for every ddsx-certify run
# (e.g. trainer.accelerator=gpu), ANALYZE_EXTRA for ddsx-analyze.
TRAIN_EXTRA=${TRAIN_EXTRA:-}
CERTIFY_EXTRA=${CERTIFY_EXTRA:-}
ANALYZE_EXTRA=${ANALYZE_EXTRA:-}
JOBS=${JOBS:-1}
STEPS=${STEPS:-denoiser train certify report analyze}

DENOISER_DIR=$CHECKPOINTS/denoisers/mnist5k_ddpm
# Hydra list syntax for the radii: [0,0.25,...]
RADII_LIST="[$(echo $RADII | tr ' ' ',')]"
mkdir -p "$OUT"
started=$(date +%s)
log() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$OUT/reproduce.log"; }
# done_or_run <folder> <command...>: run unless <folder>/.done exists; mark it done when it succeeds.
done_or_run() {
    local folder=$1; shift
    if [ -f "$folder/.done" ]; then log "skip (done): $folder"; return 0; fi
    log "run: $folder"
    local t0; t0=$(date +%s)
    "$@"
    mkdir -p "$folder"
    echo "$(( $(date +%s) - t0 )) s" > "$folder/.done"
    log "done: $folder in $(cat "$folder/.done")"
}
step() { [[ " $STEPS " == *" $1 "* ]]; }

# 1. The denoiser, as `make run` makes it: reused only when its quality.json meets the target.
# TRUST_DENOISER=1 uses an existing folder without a quality record (say so in the results).
if ! step denoiser; then
    :
elif [ -f "$DENOISER_DIR/model_index.json" ] && [ -n "${TRUST_DENOISER:-}" ]; then
    log "TRUST_DENOISER set: $DENOISER_DIR used without checking its quality target"
elif [ -f "$DENOISER_DIR/model_index.json" ]; then
    ddsx-denoiser mode=check save_dir="$DENOISER_DIR" hydra.output_subdir=null hydra.run.dir="$OUT/denoiser_check"
else
    resume=""
    [ -f "$OUT/denoiser/checkpoints/last.ckpt" ] && resume="ckpt_path=$OUT/denoiser/checkpoints/last.ckpt"
    done_or_run "$OUT/denoiser" ddsx-denoiser save_dir="$DENOISER_DIR" trainer.max_epochs="$DENOISER_EPOCHS" \
        hydra.run.dir="$OUT/denoiser" $resume
fi

# 2. The classifiers: one run folder per (sigma, method, seed); its name labels the result files.
# With JOBS > 1 every training runs in the background, at most JOBS at a time; the step fails after
# all of them ended if any run folder lacks its .done marker.
training_dirs=()
train() {  # train <sigma> <seed> <name> <overrides...>
    local sigma=$1 seed=$2 name=$3; shift 3
    local dir="$OUT/train/sigma$sigma/${name}_seed$seed"
    local command=(done_or_run "$dir" ddsx-train dataset=mnist5k classifier=lenet sigma="$sigma" seed="$seed"
        optimizer.lr=2e-3 trainer.max_epochs="$EPOCHS" "$@" $TRAIN_EXTRA hydra.run.dir="$dir")
    if [ "$JOBS" -le 1 ]; then "${command[@]}"; return; fi
    training_dirs+=("$dir")
    while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n || true; done
    mkdir -p "$dir"
    "${command[@]}" > "$dir/stdout.log" 2>&1 &
}
# The costliest methods first, so that parallel runs (JOBS > 1) end close together.
for S in $SIGMAS; do
    step train || continue
    for seed in $SEEDS; do
        # Its own method name, so that reports tell it from dds_adv (and group its seeds apart).
        train "$S" "$seed" dds_adv_strong method=dds_adv method.name=dds_adv_strong $STRONG_ATTACK denoiser=mnist5k
    done
    for seed in $SEEDS; do train "$S" "$seed" dds_adv method=dds_adv attack=mnist denoiser=mnist5k; done
    for seed in $SEEDS; do train "$S" "$seed" dds_finetune method=dds_finetune denoiser=mnist5k; done
    for seed in $SEEDS; do train "$S" "$seed" smoothadv method=smoothadv; done
    # Trained on clean digits (denoiser only recorded, so it certifies with the others behind it).
    for seed in $SEEDS; do train "$S" "$seed" standard method=standard denoiser=mnist5k; done
    for seed in $SEEDS; do train "$S" "$seed" gaussian method=gaussian; done
done
wait
unfinished=()
for dir in "${training_dirs[@]}"; do [ -f "$dir/.done" ] || unfinished+=("$dir"); done
if [ ${#unfinished[@]} -gt 0 ]; then
    log "failed trainings (see their stdout.log): ${unfinished[*]}"
    exit 1
fi

# 3. Certification: per sigma, one multi-classifier run behind the denoiser, one without it.
ckpts() {  # ckpts <sigma> <names...>: the Hydra list of their last.ckpt over SEEDS
    local sigma=$1; shift
    local list=""
    for name in "$@"; do
        for seed in $SEEDS; do list="$list,$OUT/train/sigma$sigma/${name}_seed$seed/checkpoints/last.ckpt"; done
    done
    echo "[${list#,}]"
}
CERTIFY="certify.mode=sequential certify.n=$N certify.alpha=0.001 certify.skip=$SKIP certify.max=$DIGITS
    certify.seed=0 certify.radii=$RADII_LIST"
for S in $SIGMAS; do
    step certify || continue
    done_or_run "$OUT/certify/sigma$S/dds" ddsx-certify dataset=mnist5k denoiser=mnist5k \
        "ckpt_path=$(ckpts "$S" standard dds_finetune dds_adv dds_adv_strong)" $CERTIFY $CERTIFY_EXTRA \
        hydra.run.dir="$OUT/certify/sigma$S/dds"
    done_or_run "$OUT/certify/sigma$S/no_denoiser" ddsx-certify dataset=mnist5k \
        "ckpt_path=$(ckpts "$S" gaussian smoothadv)" $CERTIFY $CERTIFY_EXTRA \
        hydra.run.dir="$OUT/certify/sigma$S/no_denoiser"
done

# 4. Tables (every result file) and paired comparisons on the same digits and noise, per sigma and seed.
# The result files (rows and their settings) are copied beside the tables, which are made from the
# copies, so that every committed number can be recomputed from committed files.
if step report; then
    CERTIFIED=$RESULTS/certify
    for S in $SIGMAS; do
        for run in dds no_denoiser; do
            mkdir -p "$CERTIFIED/sigma$S/$run"
            cp "$OUT/certify/sigma$S/$run"/certify.*.tsv "$OUT/certify/sigma$S/$run"/certify.*.settings.json \
                "$CERTIFIED/sigma$S/$run/"
        done
    done
    mkdir -p "$RESULTS/paired"
    ddsx-report "$CERTIFIED" --radii $RADII --out "$RESULTS/report" \
        --title "mnist5k, $DIGITS test digits, sequential budget $N, alpha 0.001" > "$OUT/report.log"
    log "tables: $RESULTS/report/report.md"
    PAIRS="dds_adv:dds_finetune dds_adv:standard dds_adv_strong:dds_finetune dds_adv_strong:dds_adv dds_finetune:standard"
    for S in $SIGMAS; do
        for seed in $SEEDS; do
            for pair in $PAIRS; do
                a=${pair%%:*} b=${pair##*:}
                ddsx-report --paired "$CERTIFIED/sigma$S/dds/certify.${a}_seed$seed.tsv" \
                    "$CERTIFIED/sigma$S/dds/certify.${b}_seed$seed.tsv" --radii $RADII --seed 0 \
                    > "$RESULTS/paired/sigma${S}_seed${seed}_${a}_vs_${b}.md"
            done
        done
    done
    log "paired comparisons: $RESULTS/paired/"
    # One line per (sigma, pair, seed) and the seed-level test; the copies sequential + multi-classifier saved.
    python experiments/paired_summary.py "$CERTIFIED" --sigmas $SIGMAS --seeds $SEEDS \
        --pairs $PAIRS --radii $RADII > "$RESULTS/paired_summary.md"
    python experiments/certify_savings.py $(for S in $SIGMAS; do echo "$CERTIFIED/sigma$S/dds $CERTIFIED/sigma$S/no_denoiser"; done) \
        > "$RESULTS/certify_savings.md"
    python experiments/training_summary.py "$OUT/train" > "$RESULTS/training.tsv"
    log "summaries: $RESULTS/paired_summary.md, $RESULTS/certify_savings.md, $RESULTS/training.tsv"
fi

# 5. The covariate-shift analysis of the classifiers that go through the denoiser.
for S in $SIGMAS; do
    step analyze || continue
    dir="$OUT/analyze/sigma$S"
    list=""
    for name in standard dds_finetune dds_adv; do
        list="$list,$OUT/train/sigma$S/${name}_seed$ANALYZE_SEED/checkpoints/last.ckpt"
    done
    done_or_run "$dir" ddsx-analyze dataset=mnist5k denoiser=mnist5k attack=mnist "ckpt_path=[${list#,}]" \
        max_examples="$ANALYZE_DIGITS" sigmas.num="$ANALYZE_SIGMAS" "extra_sigmas=[$(echo $SIGMAS | tr ' ' ',')]" \
        $ANALYZE_EXTRA hydra.run.dir="$dir"
    mkdir -p "$RESULTS/analyze/sigma$S"
    cp -r "$dir/analysis.tsv" "$dir/plots" "$dir/grids" "$RESULTS/analyze/sigma$S/"
done

log "finished in $(( $(date +%s) - started )) s this time (per step: the .done files under $OUT)"
