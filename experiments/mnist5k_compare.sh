#!/usr/bin/env bash
# Reproduces experiments/results/mnist5k_sigma0.5/: gaussian vs smoothadv vs dds vs dds_finetune vs dds_adv
# on the embedded 5,000 MNIST digits at sigma = 0.5, every method certified by the same callback with the
# same n0, n, alpha, seed and test digits. About an hour and a half on 2 CPU cores.
#   bash experiments/mnist5k_compare.sh            (from the repository root, after `make install`)
# DDSX_CHECKPOINTS=/elsewhere reads (or trains) the denoiser under /elsewhere/denoisers/mnist5k_ddpm.
set -euo pipefail
export PATH="$PWD/.venv/bin:$PATH"

OUT=${OUT:-outputs/mnist5k_compare}
SIGMA=0.5
CHECKPOINTS=${DDSX_CHECKPOINTS:-checkpoints}
# The same training budget for every trained method, and the same certification for every method.
# EXTRA adds overrides to every training run, e.g. EXTRA=trainer.accelerator=gpu (full precision still).
TRAIN="dataset=mnist5k classifier=lenet sigma=$SIGMA optimizer.lr=2e-3 trainer.max_epochs=10 seed=0 ${EXTRA:-}"
CERTIFY="callbacks=certify certify.n0=100 certify.n=${N:-1000} certify.alpha=0.001 certify.skip=${SKIP:-10}
    certify.max=${MAX:-100} certify.batch_size=500 certify.seed=0"

# The denoiser: trained once by ddsx-denoiser (as in make run) and reused.
[ -f "$CHECKPOINTS/denoisers/mnist5k_ddpm/model_index.json" ] || ddsx-denoiser

# gaussian: Cohen et al., no denoiser.
ddsx-train $TRAIN method=gaussian $CERTIFY hydra.run.dir=$OUT/gaussian
# smoothadv: Salman et al., no denoiser (l2 PGD of 0.5 on the image, 2 steps, 2 noise draws, 1 warm-up epoch).
ddsx-train $TRAIN method=smoothadv $CERTIFY hydra.run.dir=$OUT/smoothadv
# dds: an off-the-shelf classifier trained on clean digits, certified through the denoiser.
ddsx-train $TRAIN method=standard hydra.run.dir=$OUT/standard
ddsx-train $TRAIN method=dds init_classifier=$OUT/standard/checkpoints/last.ckpt denoiser=mnist5k $CERTIFY \
    hydra.run.dir=$OUT/dds
# dds_finetune: the classifier trained on D(x + sigma * eps).
ddsx-train $TRAIN method=dds_finetune denoiser=mnist5k $CERTIFY hydra.run.dir=$OUT/dds_finetune
# dds_adv: the paper with the authors' MNIST attack (one signed step of 0.1 within linf 0.1 on eps, the
# last iterate, the classifier attacked with batch statistics).
ddsx-train $TRAIN method=dds_adv attack=mnist denoiser=mnist5k $CERTIFY hydra.run.dir=$OUT/dds_adv

# dds_adv with the l2 attack (trained only): with dds, dds_finetune and dds_adv it makes the four
# classifiers behind one denoiser that experiments/certify_multi_timing.py certifies together.
[ -n "${WITH_L2:-}" ] && ddsx-train $TRAIN method=dds_adv attack=l2 denoiser=mnist5k hydra.run.dir=$OUT/dds_adv_l2

ddsx-report $OUT/gaussian $OUT/smoothadv $OUT/dds $OUT/dds_finetune $OUT/dds_adv \
    --out experiments/results/mnist5k_sigma0.5 --title "mnist5k, sigma = 0.5, n = ${N:-1000}"
