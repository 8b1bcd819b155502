"""How fast is Smooth.certify? Noisy images per second on the same model and noise budget for:

  certify  ddsx.smoothing.Smooth.certify (noise on the device in fixed blocks, bincount on device)
  naive    the smoothing papers' reference loop (locuslab/smoothing): fp32, x.repeat per batch,
           randn_like, predictions copied to the host and counted in a Python loop
  raw      the base classifier's forward pass alone on noisy batches made beforehand (the ceiling)

for LeNet alone and for a DDS denoiser (a small random diffusers UNet2DModel, same cost per image
as any trained one of that size) followed by LeNet, on 1x28x28 inputs.

    python experiments/benchmark_certify.py                     # CPU, defaults below
    python experiments/benchmark_certify.py --device cuda --n 100000 --batch-size 2000

Targets: certify >= 0.9x raw and >= naive for both models.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from ddsx.models.classifiers import lenet
from ddsx.models.pipeline import DenoisedClassifier
from ddsx.smoothing import Smooth, example_generator

SHAPE = (1, 28, 28)
NUM_CLASSES = 10
SIGMA = 0.25


def build_dds_lenet(device: torch.device) -> nn.Module:
    """DiffusionDenoiser around a small random UNet2DModel, then LeNet: the DDS pipeline's cost."""
    from diffusers import DDPMScheduler, UNet2DModel

    from ddsx.denoisers.dds import DiffusionDenoiser

    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=28,
        in_channels=1,
        out_channels=1,
        layers_per_block=1,
        block_out_channels=(16, 32),
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
    )
    abar = DDPMScheduler(num_train_timesteps=1000).alphas_cumprod
    denoiser = DiffusionDenoiser(unet, abar, sigma=SIGMA)
    return DenoisedClassifier(lenet(NUM_CLASSES, 1), denoiser).to(device).eval()


def naive_counts(model: nn.Module, x: torch.Tensor, num: int, batch_size: int) -> np.ndarray:
    """locuslab/smoothing's Smooth._sample_noise, as published (fp32, no_grad, Python counting)."""
    with torch.no_grad():
        counts = np.zeros(NUM_CLASSES, dtype=int)
        for _ in range(math.ceil(num / batch_size)):
            this_batch_size = min(batch_size, num)
            num -= this_batch_size
            batch = x.repeat((this_batch_size, 1, 1, 1))
            noise = torch.randn_like(batch) * SIGMA
            predictions = model(batch + noise).argmax(1)
            for idx in predictions.cpu().numpy():
                counts[idx] += 1
        return counts


def timed(fn: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def benchmark(
    name: str, model: nn.Module, args: argparse.Namespace, device: torch.device
) -> dict[str, float]:
    n0, n, bs = args.n0, args.n, args.batch_size
    images = [torch.rand(SHAPE, device=device) for _ in range(args.examples)]
    per_example = n0 + n
    smooth = Smooth(model, NUM_CLASSES, SIGMA)

    def run_certify() -> None:
        for i, x in enumerate(images):
            smooth.certify(x, n0, n, 0.001, bs, generator=example_generator(0, i, device))

    def run_naive() -> None:
        for x in images:
            naive_counts(model, x, n0, bs)
            naive_counts(model, x, n, bs)

    # Pre-made noisy batches with the same sizes certify uses (n0 then n, cut into batch_size).
    premade = []
    for x in images:
        for num in (n0, n):
            premade += [
                x + SIGMA * torch.randn((min(bs, num - s), *SHAPE), device=device) for s in range(0, num, bs)
            ]

    def run_raw() -> None:
        with torch.inference_mode():
            for batch in premade:
                model(batch)

    runs = {"certify": run_certify, "naive": run_naive, "raw": run_raw}
    for fn in runs.values():  # warm-up: allocator, kernels, caches
        fn()
    best = dict.fromkeys(runs, math.inf)
    for _ in range(args.repeats):  # interleaved, best of: the machine is shared
        for key, fn in runs.items():
            best[key] = min(best[key], timed(fn, device))
    rates = {key: args.examples * per_example / seconds for key, seconds in best.items()}
    print(
        f"{name:<12} certify {rates['certify']:>10,.0f}  naive {rates['naive']:>10,.0f}  raw {rates['raw']:>10,.0f}"
        f"   certify/raw {rates['certify'] / rates['raw']:.3f}  certify/naive {rates['certify'] / rates['naive']:.2f}"
    )
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--n0", type=int, default=100)
    parser.add_argument("--n", type=int, default=5_000, help="noise budget per example (plus n0)")
    parser.add_argument("--dds-n", type=int, default=500, help="noise budget per example with the denoiser")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--examples", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    # One thread by default: on a shared CPU, intra-op threads waiting for each other swamp the timings.
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads on CPU (0: torch's default)"
    )
    args = parser.parse_args()
    if args.threads and args.device == "cpu":
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(
        f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"n0={args.n0}, batch_size={args.batch_size}, {args.examples} examples, best of {args.repeats}"
    )
    print("noisy images per second:")
    torch.manual_seed(0)
    benchmark(f"lenet n={args.n}", lenet(NUM_CLASSES, 1).to(device).eval(), args, device)
    args.n = args.dds_n
    benchmark(f"dds+lenet n={args.n}", build_dds_lenet(device), args, device)


if __name__ == "__main__":
    main()
