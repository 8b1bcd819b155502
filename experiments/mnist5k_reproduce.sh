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
#      with PROTOCOL=v2 first the pre-registered analysis, RESULTS/endpoint.md (STEPS=report redoes only
#      this step from the result files already in OUT/certify);
#   5. ddsx-analyze on standard, dds_finetune and dds_adv (seed ANALYZE_SEED) of each sigma.
#
#   bash experiments/mnist5k_reproduce.sh          (from the repository root, after `make install`)
#
# PROTOCOL=v2: the pre-registered reproduction of issue 23 (experiments/results/mnist5k_v2/PROTOCOL.md)
# instead: seeds 0-9, 500 digits of the stratified split (every second), sequential n = 10,000,
# alpha 0.001, radii 0, 0.25, ..., 3.0, into outputs/mnist5k_v2 and experiments/results/mnist5k_v2.
# V2_PHASE=primary (the default) trains dds_adv and dds_finetune at sigma 0.5 and 1.0 and certifies
# them in one multi-classifier run per sigma (certify/sigma<s>/primary); V2_PHASE=all adds sigma 0.25
# and the secondary arms standard, dds_adv_px (attack=mnist_pixel), gaussian and smoothadv, certified in
# certify/sigma<s>/dds_secondary (behind the denoiser) and certify/sigma<s>/no_denoiser. Nothing is
# analysed (ddsx-analyze is not in the protocol). Any setting other than the protocol's (SIGMAS, SEEDS,
# EPOCHS, DIGITS, SKIP, N, RADII, TRUST_DENOISER, TRAIN_EXTRA or CERTIFY_EXTRA beyond the device and
# batch size) is refused unless OUT and RESULTS both point elsewhere, and a folder OUT remembers the
# settings it was started with: a resumed run with others is refused (its .done markers would lie).
#
# Every step that finished leaves a .done marker in its run folder and is skipped on the next run; an
# interrupted training resumes from its run folder's last.ckpt (ddsx-train does that by itself), an
# interrupted certification from its result files (ddsx-certify does), the denoiser from its last.ckpt.
# JOBS=k runs k trainings at a time (each one's output then goes to its run folder's stdout.log): on a
# GPU the small LeNet steps leave the card mostly idle, so parallel runs share it well; JOBS > 1 also
# certifies the sigmas side by side (each sigma's log: certify/sigma<s>/stdout.log). STEPS picks the
# steps (default: all of "denoiser train certify report analyze"), e.g. STEPS=report to redo the tables.
# A tiny smoke scale (minutes):
#   TRUST_DENOISER=1 SIGMAS=0.5 SEEDS=0 EPOCHS=1 DIGITS=4 SKIP=250 N=200 ANALYZE_DIGITS=8 ANALYZE_SIGMAS=2 \
#     TRAIN_EXTRA="+trainer.limit_train_batches=2 +trainer.limit_val_batches=1 test=false" \
#     OUT=/tmp/repro RESULTS=/tmp/repro/results bash experiments/mnist5k_reproduce.sh
# and of PROTOCOL=v2 (a smoke run must name OUT and RESULTS; about 15 min on 2 loaded cores):
#   PROTOCOL=v2 SEEDS="0 1" EPOCHS=1 DIGITS=4 SKIP=250 N=200 RADII="0 0.5 1.0" \
#     TRAIN_EXTRA="dataset.batch_size=16 +trainer.limit_train_batches=2 +trainer.limit_val_batches=1 test=false" \
#     OUT=/tmp/repro_v2 RESULTS=/tmp/repro_v2/results bash experiments/mnist5k_reproduce.sh
#   then the same with V2_PHASE=all SIGMAS=0.5 (into the same OUT: the secondary arms and runs are
#   added, the primary ones skipped as done).
set -euo pipefail
[ -x "$PWD/.venv/bin/ddsx-train" ] && export PATH="$PWD/.venv/bin:$PATH"

PROTOCOL=${PROTOCOL:-v1}
V2_PHASE=${V2_PHASE:-primary}
fail() { echo "mnist5k_reproduce.sh: $*" >&2; exit 2; }
case "$PROTOCOL" in v1 | v2) ;; *) fail "PROTOCOL must be v1 or v2, got '$PROTOCOL'" ;; esac
case "$V2_PHASE" in primary | all) ;; *) fail "V2_PHASE must be primary or all, got '$V2_PHASE'" ;; esac

if [ "$PROTOCOL" = v2 ]; then
    # The pre-registered settings (PROTOCOL.md); the environment may only change them away from
    # the protocol's folders (checked below).
    V2_OUT=outputs/mnist5k_v2
    V2_RESULTS=experiments/results/mnist5k_v2
    declare -A V2=(
        [SIGMAS]="0.5 1.0" [SEEDS]="0 1 2 3 4 5 6 7 8 9" [EPOCHS]=10 [DIGITS]=500 [SKIP]=2 [N]=10000
        [RADII]="0 0.25 0.5 0.75 1.0 1.25 1.5 1.75 2.0 2.25 2.5 2.75 3.0" [TRUST_DENOISER]=""
    )
    [ "$V2_PHASE" = all ] && V2[SIGMAS]="0.25 0.5 1.0"
    deviations=()
    for key in "${!V2[@]}"; do
        if [ -n "${!key+set}" ] && [ "${!key}" != "${V2[$key]}" ]; then deviations+=("$key=${!key}"); fi
    done
    # Extra overrides may pick the device and the batch size of certification, nothing else.
    for word in ${TRAIN_EXTRA:-} ${CERTIFY_EXTRA:-}; do
        case "$word" in
            trainer=* | trainer.accelerator=* | trainer.devices=* | certify.batch_size=* | dataset.num_workers=*) ;;
            *) deviations+=("$word") ;;
        esac
    done
    OUT=${OUT:-$V2_OUT}
    RESULTS=${RESULTS:-$V2_RESULTS}
    if [ ${#deviations[@]} -gt 0 ]; then
        for folder in "$OUT" "$RESULTS"; do
            case "$(realpath -m "$folder")/" in
                "$(realpath -m "$V2_OUT")"/* | "$(realpath -m "$V2_RESULTS")"/*)
                    fail "PROTOCOL=v2 with settings other than the protocol's (${deviations[*]}): set OUT and RESULTS outside $V2_OUT and $V2_RESULTS" ;;
            esac
        done
    fi
    for key in "${!V2[@]}"; do declare "$key=${!key-${V2[$key]}}"; done
    STEPS=${STEPS:-denoiser train certify report}
    [[ " $STEPS " == *" analyze "* ]] && fail "PROTOCOL=v2 has no analyze step (STEPS=$STEPS)"
fi

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

# The arms: name -> ddsx-train overrides, trained in the order of TRAIN_ARMS (the costliest first, so
# that parallel runs end close together); each CERTIFY_RUNS entry is one multi-classifier run per sigma,
# "<folder>|<denoiser override or nothing>|<arms>", all on the same digits and noise.
declare -A ARM=(
    [dds_adv]="method=dds_adv attack=mnist denoiser=mnist5k"
    [dds_finetune]="method=dds_finetune denoiser=mnist5k"
    [smoothadv]="method=smoothadv"
    # Trained on clean digits (denoiser only recorded, so it certifies with the others behind it).
    [standard]="method=standard denoiser=mnist5k"
    [gaussian]="method=gaussian"
    # Their own method names, so that reports tell them from dds_adv (and group their seeds apart).
    [dds_adv_strong]="method=dds_adv method.name=dds_adv_strong $STRONG_ATTACK denoiser=mnist5k"
    [dds_adv_px]="method=dds_adv method.name=dds_adv_px attack=mnist_pixel denoiser=mnist5k"
)
if [ "$PROTOCOL" = v1 ]; then
    TRAIN_ARMS="dds_adv_strong dds_adv dds_finetune smoothadv standard gaussian"
    CERTIFY_RUNS=("dds|denoiser=mnist5k|standard dds_finetune dds_adv dds_adv_strong" "no_denoiser||gaussian smoothadv")
    PAIRS="dds_adv:dds_finetune dds_adv:standard dds_adv_strong:dds_finetune dds_adv_strong:dds_adv dds_finetune:standard"
    SUMMARY_RUN=dds
elif [ "$V2_PHASE" = primary ]; then
    TRAIN_ARMS="dds_adv dds_finetune"
    CERTIFY_RUNS=("primary|denoiser=mnist5k|dds_adv dds_finetune")
    PAIRS="dds_adv:dds_finetune"
    SUMMARY_RUN=primary
else
    TRAIN_ARMS="dds_adv dds_adv_px dds_finetune smoothadv standard gaussian"
    CERTIFY_RUNS=("primary|denoiser=mnist5k|dds_adv dds_finetune" "dds_secondary|denoiser=mnist5k|standard dds_adv_px"
        "no_denoiser||gaussian smoothadv")
    PAIRS="dds_adv:dds_finetune dds_adv:standard dds_finetune:standard dds_adv_px:dds_finetune dds_adv_px:dds_adv"
    SUMMARY_RUN=primary
fi
run_of() {  # run_of <arm>: the CERTIFY_RUNS folder that certifies it
    local spec
    for spec in "${CERTIFY_RUNS[@]}"; do
        [[ " ${spec##*|} " == *" $1 "* ]] && { echo "${spec%%|*}"; return; }
    done
}
# Hydra list syntax for the radii: [0,0.25,...]
RADII_LIST="[$(echo $RADII | tr ' ' ',')]"
mkdir -p "$OUT"
started=$(date +%s)
if [ "$PROTOCOL" = v2 ]; then
    # A folder's .done markers hold only for the settings it was started with. The phase and the
    # sigmas may grow (V2_PHASE=all after primary adds runs and leaves the primary ones as they are).
    settings="PROTOCOL=v2 SEEDS=$SEEDS EPOCHS=$EPOCHS DIGITS=$DIGITS SKIP=$SKIP N=$N"
    settings="$settings RADII=$RADII TRUST_DENOISER=${TRUST_DENOISER:-} TRAIN_EXTRA=$TRAIN_EXTRA CERTIFY_EXTRA=$CERTIFY_EXTRA"
    if [ ! -f "$OUT/settings.txt" ]; then
        echo "$settings" > "$OUT/settings.txt"
    elif [ "$(cat "$OUT/settings.txt")" != "$settings" ]; then
        fail "$OUT was started with other settings ($(cat "$OUT/settings.txt")); use another OUT"
    fi
fi
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
for S in $SIGMAS; do
    step train || continue
    for arm in $TRAIN_ARMS; do
        # shellcheck disable=SC2086  # the overrides are words
        for seed in $SEEDS; do train "$S" "$seed" "$arm" ${ARM[$arm]}; done
    done
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
certify_sigma() {  # certify_sigma <sigma>: its CERTIFY_RUNS one after the other
    local S=$1 spec run denoiser arms
    for spec in "${CERTIFY_RUNS[@]}"; do
        IFS='|' read -r run denoiser arms <<< "$spec"
        # shellcheck disable=SC2086
        done_or_run "$OUT/certify/sigma$S/$run" ddsx-certify dataset=mnist5k $denoiser \
            "ckpt_path=$(ckpts "$S" $arms)" $CERTIFY $CERTIFY_EXTRA hydra.run.dir="$OUT/certify/sigma$S/$run"
    done
}
# With JOBS > 1 the sigmas are certified side by side (on a GPU one sigma's run leaves the card half
# idle). Rows do not depend on it: each digit's noise comes from its own seeded generator.
certify_dirs=()
for S in $SIGMAS; do
    step certify || continue
    if [ "$JOBS" -le 1 ]; then certify_sigma "$S"; continue; fi
    for spec in "${CERTIFY_RUNS[@]}"; do certify_dirs+=("$OUT/certify/sigma$S/${spec%%|*}"); done
    mkdir -p "$OUT/certify/sigma$S"
    certify_sigma "$S" > "$OUT/certify/sigma$S/stdout.log" 2>&1 &
done
wait
unfinished=()
for dir in "${certify_dirs[@]}"; do [ -f "$dir/.done" ] || unfinished+=("$dir"); done
if [ ${#unfinished[@]} -gt 0 ]; then
    log "unfinished certifications (see stdout.log of their sigma): ${unfinished[*]}"
    exit 1
fi

# 4. Tables (every result file) and paired comparisons on the same digits and noise, per sigma and seed.
# The result files (rows and their settings) are copied beside the tables, which are made from the
# copies, so that every committed number can be recomputed from committed files.
if step report; then
    CERTIFIED=$RESULTS/certify
    for S in $SIGMAS; do
        for spec in "${CERTIFY_RUNS[@]}"; do
            run=${spec%%|*}
            mkdir -p "$CERTIFIED/sigma$S/$run"
            cp "$OUT/certify/sigma$S/$run"/certify.*.tsv "$OUT/certify/sigma$S/$run"/certify.*.settings.json \
                "$CERTIFIED/sigma$S/$run/"
        done
    done
    mkdir -p "$RESULTS/paired"
    ddsx-report "$CERTIFIED" --radii $RADII --out "$RESULTS/report" \
        --title "mnist5k, $DIGITS test digits, sequential budget $N, alpha 0.001" > "$OUT/report.log"
    log "tables: $RESULTS/report/report.md"
    if [ "$PROTOCOL" = v2 ]; then
        # The pre-registered analysis (PROTOCOL.md) from the copied files: the primary endpoint as
        # defined there, then the secondary analyses under one Holm family (ddsx/report/mnist5k_v2.py).
        # shellcheck disable=SC2086
        python -m ddsx.report.mnist5k_v2 "$CERTIFIED" --radii $RADII --out "$RESULTS/endpoint.md" > "$OUT/endpoint.log"
        log "pre-registered analysis: $RESULTS/endpoint.md"
    fi
    for S in $SIGMAS; do
        for seed in $SEEDS; do
            for pair in $PAIRS; do
                a=${pair%%:*} b=${pair##*:}
                ddsx-report --paired "$CERTIFIED/sigma$S/$(run_of "$a")/certify.${a}_seed$seed.tsv" \
                    "$CERTIFIED/sigma$S/$(run_of "$b")/certify.${b}_seed$seed.tsv" --radii $RADII --seed 0 \
                    > "$RESULTS/paired/sigma${S}_seed${seed}_${a}_vs_${b}.md"
            done
        done
    done
    log "paired comparisons: $RESULTS/paired/"
    # One line per (sigma, pair, seed) and the seed-level test; the copies sequential + multi-classifier saved.
    # (The pairs whose two arms are in the summary run; the others are in paired/ only.)
    summary_pairs=""
    for pair in $PAIRS; do
        [ "$(run_of "${pair%%:*}")" = "$SUMMARY_RUN" ] && [ "$(run_of "${pair##*:}")" = "$SUMMARY_RUN" ] &&
            summary_pairs="$summary_pairs $pair"
    done
    # shellcheck disable=SC2086
    python experiments/paired_summary.py "$CERTIFIED" --run "$SUMMARY_RUN" --sigmas $SIGMAS --seeds $SEEDS \
        --pairs $summary_pairs --radii $RADII > "$RESULTS/paired_summary.md"
    python experiments/certify_savings.py $(for S in $SIGMAS; do
        for spec in "${CERTIFY_RUNS[@]}"; do echo "$CERTIFIED/sigma$S/${spec%%|*}"; done
    done) > "$RESULTS/certify_savings.md"
    # The denoiser's quality record beside the results it certified (PROTOCOL.md).
    [ -f "$DENOISER_DIR/quality.json" ] && cp "$DENOISER_DIR/quality.json" "$RESULTS/denoiser_quality.json"
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
