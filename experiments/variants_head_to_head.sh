#!/usr/bin/env bash
# Issue 20's head-to-head on the embedded 5,000 MNIST digits, resumable: the paper's dds_adv classifier
# against dds_finetune and the off-the-shelf `standard` LeNet, behind each diffusion-smoothing variant,
# on the same test digits and noise:
#   1. train: LeNet per sigma and seed with standard, dds_finetune, dds_adv (attack=mnist), the recipe of
#      experiments/mnist5k_reproduce.sh (AdamW 2e-3, EPOCHS epochs) behind the mnist5k DDPM, which must
#      exist and meet its quality target (`make denoiser`);
#   2. distill: the one-step consistency denoiser from the DDPM (ddsx-denoiser mode=distill,
#      DISTILL_STEPS steps), unless its folder exists;
#   3. certify: per sigma and variant one multi-classifier run of the three classifiers (and every seed),
#      MODE fixed (Cohen et al.'s CERTIFY: n0 = 100 copies to select, N to bound; exact radii, the same
#      copies for every variant, so costs differ by the calls a copy costs) or sequential (budget N),
#      alpha 0.001, digits 0, SKIP, 2 SKIP, ... of the test split (DIGITS of them),
#      noise seed 0: variants dds (one-shot), densepure (VOTES reverse runs of DENSEPURE_STEPS steps),
#      local_smoothing (VOTES draws of std LOCAL_SIGMA) and consistency;
#   4. report: the result files (and their settings, and each run's wall time) copied to
#      RESULTS/certify/sigma<s>/<variant>/, and from the copies experiments/variants_summary.py's tables
#      (RESULTS/summary.md): certified accuracy per radius, cost per certificate, paired comparisons.
#
#   bash experiments/variants_head_to_head.sh       (from the repository root, after `make denoiser`)
#
# Every finished run leaves a .done marker (its wall seconds) and is skipped next time; ddsx-train and
# ddsx-certify resume their own unfinished runs. OUT remembers the settings it was started with and a
# resume with others is refused (its .done markers would lie). JOBS=2 trains two classifiers at a time
# and certifies the sigmas side by side, each process on one thread (OMP_NUM_THREADS=1): wall times per
# run are then those of one core. CERTIFY_EXTRA is added to every ddsx-certify run (e.g.
# certify.autocast_dtype=bfloat16 certify.batch_size=64), TRAIN_EXTRA to every ddsx-train run.
# A smoke scale (minutes, with a denoiser folder present):
#   SIGMAS=0.5 EPOCHS=1 DIGITS=2 SKIP=400 N=200 DENSEPURE_STEPS=3 VOTES=3 DISTILL_STEPS=2 \
#     TRAIN_EXTRA="+trainer.limit_train_batches=2 +trainer.limit_val_batches=1 test=false" \
#     DISTILL_EXTRA="trainer.limit_val_batches=1 distill.quality.num_digits=8 distill.quality.ode_steps=2" \
#     OUT=/tmp/h2h RESULTS=/tmp/h2h/results bash experiments/variants_head_to_head.sh
set -euo pipefail
# Overrides hold Hydra lists ([a,b]) that must reach the CLIs as written, never as globs (step 4 turns
# globbing back on for its copies).
set -f
[ -x "$PWD/.venv/bin/ddsx-train" ] && export PATH="$PWD/.venv/bin:$PATH"
fail() { echo "variants_head_to_head.sh: $*" >&2; exit 2; }

OUT=${OUT:-outputs/variants_head_to_head}
RESULTS=${RESULTS:-experiments/results/variants}
CHECKPOINTS=${DDSX_CHECKPOINTS:-checkpoints}
SIGMAS=${SIGMAS:-0.5 1.0}
SEEDS=${SEEDS:-0}
EPOCHS=${EPOCHS:-3}
DIGITS=${DIGITS:-60}
SKIP=${SKIP:-16}
N=${N:-300}
MODE=${MODE:-fixed}
RADII=${RADII:-0 0.25 0.5 0.75 1.0 1.25 1.5 1.75 2.0}
VOTES=${VOTES:-5}
DENSEPURE_STEPS=${DENSEPURE_STEPS:-4}
LOCAL_SIGMA=${LOCAL_SIGMA:-0.1}
DISTILL_STEPS=${DISTILL_STEPS:-40}
VARIANTS=${VARIANTS:-dds local_smoothing consistency densepure}
JOBS=${JOBS:-1}
TRAIN_EXTRA=${TRAIN_EXTRA:-}
CERTIFY_EXTRA=${CERTIFY_EXTRA:-}
DISTILL_EXTRA=${DISTILL_EXTRA:-}
STEPS=${STEPS:-train distill certify report}
ARMS="dds_adv dds_finetune standard"  # the costliest first, so that parallel trainings end close together

DENOISER_DIR=$CHECKPOINTS/denoisers/mnist5k_ddpm
CONSISTENCY_DIR=$CHECKPOINTS/denoisers/mnist5k_consistency
declare -A ARM=(
    [dds_adv]="method=dds_adv attack=mnist denoiser=mnist5k"
    [dds_finetune]="method=dds_finetune denoiser=mnist5k"
    [standard]="method=standard denoiser=mnist5k"  # clean digits; the denoiser only recorded
)
declare -A VARIANT=(
    [dds]="denoiser=mnist5k"
    [densepure]="denoiser=[mnist5k,densepure] denoiser.votes=$VOTES denoiser.num_steps=$DENSEPURE_STEPS"
    [local_smoothing]="denoiser=[mnist5k,local_smoothing] denoiser.votes=$VOTES denoiser.local_sigma=$LOCAL_SIGMA"
    [consistency]="denoiser=consistency denoiser.path=$CONSISTENCY_DIR"
)
for variant in $VARIANTS; do [ -n "${VARIANT[$variant]+set}" ] || fail "unknown variant '$variant' (have ${!VARIANT[*]})"; done
for step in $STEPS; do
    case "$step" in train | distill | certify | report) ;; *) fail "unknown step '$step'" ;; esac
done
step() { [[ " $STEPS " == *" $1 "* ]]; }
[ -f "$DENOISER_DIR/model_index.json" ] || fail "no mnist5k DDPM at $DENOISER_DIR: run \`make denoiser\` (or set DDSX_CHECKPOINTS)"

mkdir -p "$OUT"
case "$MODE" in fixed | sequential) ;; *) fail "MODE must be fixed or sequential, got '$MODE'" ;; esac
settings="MODE=$MODE SIGMAS=$SIGMAS SEEDS=$SEEDS EPOCHS=$EPOCHS DIGITS=$DIGITS SKIP=$SKIP N=$N RADII=$RADII VOTES=$VOTES"
settings="$settings DENSEPURE_STEPS=$DENSEPURE_STEPS LOCAL_SIGMA=$LOCAL_SIGMA DISTILL_STEPS=$DISTILL_STEPS"
settings="$settings TRAIN_EXTRA=$TRAIN_EXTRA CERTIFY_EXTRA=$CERTIFY_EXTRA DISTILL_EXTRA=$DISTILL_EXTRA"
if [ ! -f "$OUT/settings.txt" ]; then
    echo "$settings" > "$OUT/settings.txt"
elif [ "$(cat "$OUT/settings.txt")" != "$settings" ]; then
    fail "$OUT was started with other settings ($(cat "$OUT/settings.txt")); use another OUT"
fi
[ "$JOBS" -gt 1 ] && export OMP_NUM_THREADS=1
log() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$OUT/head_to_head.log"; }
# done_or_run <folder> <command...>: run unless <folder>/.done exists; mark it done (wall seconds) on success.
done_or_run() {
    local folder=$1; shift
    if [ -f "$folder/.done" ]; then log "skip (done): $folder"; return 0; fi
    log "run: $folder"
    local t0; t0=$(date +%s)
    "$@"
    mkdir -p "$folder"
    echo "$(( $(date +%s) - t0 ))" > "$folder/.done"
    log "done: $folder in $(cat "$folder/.done") s"
}
# wait_all <what> <folders...>: wait for the background jobs, fail naming every folder left unfinished.
wait_all() {
    local what=$1; shift
    wait
    local unfinished=() dir
    for dir in "$@"; do [ -f "$dir/.done" ] || unfinished+=("$dir"); done
    [ ${#unfinished[@]} -eq 0 ] || { log "unfinished $what (see their stdout.log): ${unfinished[*]}"; exit 1; }
}

# 1. The classifiers.
train_dirs=()
if step train; then
    for S in $SIGMAS; do
        for arm in $ARMS; do
            for seed in $SEEDS; do
                dir="$OUT/train/sigma$S/${arm}_seed$seed"
                # shellcheck disable=SC2086  # the overrides are words
                command=(done_or_run "$dir" ddsx-train dataset=mnist5k classifier=lenet sigma="$S" seed="$seed"
                    optimizer.lr=2e-3 trainer.max_epochs="$EPOCHS" ${ARM[$arm]} $TRAIN_EXTRA hydra.run.dir="$dir")
                if [ "$JOBS" -le 1 ]; then "${command[@]}"; continue; fi
                train_dirs+=("$dir")
                while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n || true; done
                mkdir -p "$dir"
                "${command[@]}" > "$dir/stdout.log" 2>&1 &
            done
        done
    done
    wait_all trainings "${train_dirs[@]}"
fi

# 2. The consistency denoiser (only if a variant needs it and none exists).
if step distill && [[ " $VARIANTS " == *" consistency "* ]]; then
    if [ -f "$CONSISTENCY_DIR/consistency.json" ]; then
        log "consistency denoiser present: $CONSISTENCY_DIR (not distilled again)"
    else
        # shellcheck disable=SC2086
        done_or_run "$OUT/distill" ddsx-denoiser mode=distill distill.max_steps="$DISTILL_STEPS" \
            distill.teacher="$DENOISER_DIR" distill.save_dir="$CONSISTENCY_DIR" $DISTILL_EXTRA hydra.run.dir="$OUT/distill"
    fi
fi

# 3. Certification: per sigma and variant, every classifier of the sigma in one multi-classifier run.
RADII_LIST="[$(echo $RADII | tr ' ' ',')]"
ckpts() {  # ckpts <sigma>: the Hydra list of every arm's and seed's last.ckpt
    local list="" arm seed
    for arm in $ARMS; do
        for seed in $SEEDS; do list="$list,$OUT/train/sigma$1/${arm}_seed$seed/checkpoints/last.ckpt"; done
    done
    echo "[${list#,}]"
}
certify_sigma() {  # certify_sigma <sigma>: its variants one after the other
    local S=$1 variant
    for variant in $VARIANTS; do
        # shellcheck disable=SC2086
        done_or_run "$OUT/certify/sigma$S/$variant" ddsx-certify dataset=mnist5k ${VARIANT[$variant]} \
            "ckpt_path=$(ckpts "$S")" certify.mode="$MODE" certify.n="$N" certify.n0=100 certify.alpha=0.001 \
            certify.skip="$SKIP" certify.max="$DIGITS" certify.seed=0 "certify.radii=$RADII_LIST" \
            $CERTIFY_EXTRA hydra.run.dir="$OUT/certify/sigma$S/$variant"
    done
}
certify_dirs=()
if step certify; then
    for S in $SIGMAS; do
        if [ "$JOBS" -le 1 ]; then certify_sigma "$S"; continue; fi
        for variant in $VARIANTS; do certify_dirs+=("$OUT/certify/sigma$S/$variant"); done
        mkdir -p "$OUT/certify/sigma$S"
        certify_sigma "$S" > "$OUT/certify/sigma$S/stdout.log" 2>&1 &
    done
    wait_all certifications "${certify_dirs[@]}"
fi

# 4. The copies and the tables made from them (every committed number recomputable from committed files).
if step report; then
    set +f
    for S in $SIGMAS; do
        for variant in $VARIANTS; do
            from="$OUT/certify/sigma$S/$variant" to="$RESULTS/certify/sigma$S/$variant"
            [ -f "$from/.done" ] || fail "$from is not certified (run STEPS=certify first)"
            mkdir -p "$to"
            cp "$from"/certify.*.tsv "$from"/certify.*.settings.json "$to/"
            cp "$from/.done" "$to/wall_seconds.txt"
        done
    done
    [ -f "$CONSISTENCY_DIR/quality.json" ] && cp "$CONSISTENCY_DIR/quality.json" "$RESULTS/consistency_quality.json"
    [ -f "$DENOISER_DIR/quality.json" ] && cp "$DENOISER_DIR/quality.json" "$RESULTS/denoiser_quality.json"
    cp "$OUT/settings.txt" "$RESULTS/settings.txt"
    # shellcheck disable=SC2086
    python experiments/variants_summary.py "$RESULTS/certify" --radii $RADII > "$RESULTS/summary.md"
    log "tables: $RESULTS/summary.md"
fi
