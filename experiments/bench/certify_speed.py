"""Certification throughput: ddsx's engine against the published smoothing code's loop, side by side.

For each model set, on the same models, the same test images and the same noise budget (n0 + n
noisy copies per image), in one run:

  ref@1000   a loop written the way locuslab/smoothing (Cohen et al.) and Carlini et al.'s DDS code
             certify: fp32, eager, ``x.repeat`` per batch, ``randn_like``, labels copied to the host
             and counted in Python; at the reference code's default batch size, 1,000
  ref@best   the same loop at its fastest batch size (each candidate timed on one batch)
  ddsx       ddsx.certification's engine with its defaults (fp32, eager, batch 1,000), result file
             included (its build, which hashes the weights once per run, is timed apart)
  ddsx-fast  the engine with every fast path on: batch_size=auto, autocast=auto, compile, channels_last
             (autotuning and compilation happen in an untimed warm-up run)

Model sets: ``lenet`` (LeNet alone, 1x28x28), ``mnist5k`` (the mnist5k DDPM denoiser, the trained one
under DDSX_CHECKPOINTS when present, else a random UNet of the same size, then LeNet) and ``cifar10``
(random weights: improved-diffusion's CIFAR-10 UNet, 128 channels, 3 residual blocks, channel
multipliers 1,2,2,2, attention at 16 and 8 as in the released checkpoint, then a 224-pixel ViT-B/16
from timm: Carlini et al.'s CIFAR-10 setting). On a GPU it also prints the FLOP rate each achieved
and the fraction of the card's peak. Run with ``make bench`` (CPU) or

    python experiments/bench/certify_speed.py --device cuda
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ddsx.certification import CertifySettings, ClassifierSpec, build_certifier, read_results
from ddsx.certification.autotune import candidates_for

SIGMA = 0.25
# Dense tensor-core peaks (TFLOP/s) from the vendors' data sheets, for the fraction-of-peak line.
PEAK_TFLOPS = {"H100": {"bf16": 989.4, "fp32": 66.9}, "H200": {"bf16": 989.4, "fp32": 66.9}}


@dataclass
class ModelSet:
    name: str
    shape: tuple[int, int, int]
    num_classes: int
    build: Callable[[torch.device], tuple[nn.Module | None, nn.Module]]  # fresh (denoiser, classifier)
    budget: dict[str, tuple[int, int, int]]  # device type -> (examples, n0, n)
    description: str = ""


# ----- the models -------------------------------------------------------------------------------------


def build_lenet(device: torch.device) -> tuple[None, nn.Module]:
    from ddsx.models.classifiers import lenet

    torch.manual_seed(0)
    return None, lenet(10, 1).to(device).eval()


def mnist5k_denoiser_folder() -> Path:
    return Path(os.environ.get("DDSX_CHECKPOINTS", "checkpoints")) / "denoisers" / "mnist5k_ddpm"


def build_mnist5k(device: torch.device) -> tuple[nn.Module, nn.Module]:
    from method_step import build_unet_denoiser  # beside this script

    _, classifier = build_lenet(device)
    denoiser, _ = build_unet_denoiser(mnist5k_denoiser_folder(), SIGMA)
    return denoiser.to(device), classifier


def build_cifar10(device: torch.device) -> tuple[nn.Module, nn.Module]:
    import timm
    from diffusers import UNet2DModel

    from ddsx.denoisers.adm.config import adm_preset
    from ddsx.denoisers.adm.convert import scheduler_config, unet_config
    from ddsx.denoisers.dds import DiffusionDenoiser
    from ddsx.denoisers.schedule import alphas_cumprod_from_scheduler_config

    torch.manual_seed(0)
    cfg = adm_preset("improved")
    unet = UNet2DModel(**unet_config(cfg))
    abar = alphas_cumprod_from_scheduler_config(scheduler_config(cfg))
    denoiser = DiffusionDenoiser(unet, abar, SIGMA, output_size=224, interpolation="bicubic")
    classifier = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=10)
    return denoiser.to(device), classifier.to(device).eval()


MODEL_SETS = {
    "lenet": ModelSet(
        "lenet", (1, 28, 28), 10, build_lenet, {"cpu": (2, 100, 10_000), "cuda": (4, 100, 100_000)}, "LeNet"
    ),
    "mnist5k": ModelSet(
        "mnist5k",
        (1, 28, 28),
        10,
        build_mnist5k,
        {"cpu": (2, 100, 1_000), "cuda": (4, 100, 20_000)},
        "mnist5k DDPM denoiser + LeNet",
    ),
    "cifar10": ModelSet(
        "cifar10",
        (3, 32, 32),
        10,
        build_cifar10,
        {"cpu": (1, 4, 12), "cuda": (2, 100, 5_000)},
        "CIFAR-10 ADM UNet (random) + ViT-B/16 at 224 (random)",
    ),
}


# ----- the reference loop ----------------------------------------------------------------------------


def reference_counts(
    model: nn.Module, x: torch.Tensor, num: int, batch_size: int, classes: int
) -> np.ndarray:
    """The published loop (locuslab/smoothing ``Smooth._sample_noise``), rewritten: fp32, no_grad."""
    with torch.no_grad():
        counts = np.zeros(classes, dtype=int)
        for _ in range(math.ceil(num / batch_size)):
            this_batch = min(batch_size, num)
            num -= this_batch
            batch = x.repeat((this_batch, 1, 1, 1))
            noise = torch.randn_like(batch) * SIGMA
            predictions = model(batch + noise).argmax(1)
            for label in predictions.cpu().numpy():
                counts[label] += 1
        return counts


def reference_run(model, images, n0, n, batch_size, classes) -> None:
    for x in images:
        reference_counts(model, x, n0, batch_size, classes)  # selection
        reference_counts(model, x, n, batch_size, classes)  # estimation


class Pipeline(nn.Module):
    def __init__(self, denoiser: nn.Module | None, classifier: nn.Module) -> None:
        super().__init__()
        self.denoiser, self.classifier = denoiser, classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(x if self.denoiser is None else self.denoiser(x))


# ----- measuring --------------------------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> tuple[float, float | None]:
    """Seconds, and the peak GPU memory in GiB (None on CPU)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return seconds, peak


def prepared_engine(models, images, n0, n, device, output: Path, **fast):
    """ddsx's engine for ``images``, built (result file identity, model fingerprints) outside any timing.

    Returns the engine, its dataset and the seconds the build took: a per-run cost that does not grow
    with n (hashing the weights dominates it), reported beside the rates rather than inside them.
    """
    denoiser, classifier = models
    dataset = [(x.cpu(), 0) for x in images]
    values = {"sigma": SIGMA, "n0": n0, "n": n, "alpha": 0.001, "progress": False, "output": str(output)}
    start = time.perf_counter()
    engine = build_certifier(
        CertifySettings.from_mapping(values | fast),
        [ClassifierSpec(classifier, "bench")],
        denoiser=denoiser,
        dataset=dataset,
        dataset_name="bench",
        num_classes=10,
        device=device,
    )
    return engine, dataset, time.perf_counter() - start


def best_reference_batch(model, x, device, classes, limit) -> tuple[int, list[tuple[int, float]]]:
    """The reference loop's fastest batch size: each candidate timed on one batch after a warm-up."""
    rates = []
    for size in candidates_for(device, limit):
        try:
            reference_counts(model, x, size, size, classes)
            seconds, _ = timed(lambda s=size: reference_counts(model, x, s, s, classes), device)
        except torch.OutOfMemoryError:
            torch.cuda.empty_cache()
            break
        rates.append((size, size / seconds))
    return max(rates, key=lambda r: r[1])[0], rates


def flops_per_image(model: nn.Module, shape, device) -> float | None:
    try:
        from torch.utils.flop_counter import FlopCounterMode

        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.rand((2, *shape), device=device))
        return counter.get_total_flops() / 2
    except Exception as error:  # counting is informative only
        print(f"  (FLOP count failed: {type(error).__name__}: {error})")
        return None


def bench(model_set: ModelSet, device: torch.device, args) -> dict[str, float]:
    examples, n0, n = model_set.budget[device.type]
    if args.n is not None:
        n = args.n
    per_image = n0 + n
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(model_set.shape, generator=g).to(device) for _ in range(examples)]
    total = examples * per_image
    print(f"\n{model_set.name}: {model_set.description}; {examples} image(s) x (n0={n0} + n={n})")

    reference = Pipeline(*model_set.build(device)).eval()
    ref_best, trials = best_reference_batch(reference, images[0], device, model_set.num_classes, per_image)
    print("  reference loop, one batch per size: " + ", ".join(f"{b}: {r:,.0f}/s" for b, r in trials))
    results: dict[str, tuple[float, float | None]] = {}
    for label, batch in (("ref@1000", 1000), (f"ref@{ref_best}", ref_best)):
        reference_run(reference, images[:1], min(n0, 2), min(n, batch), batch, model_set.num_classes)  # warm
        results[label] = timed(
            lambda b=batch: reference_run(reference, images, n0, n, b, model_set.num_classes), device
        )
    flops = flops_per_image(reference, model_set.shape, device)
    reference = None  # free its memory before the engine runs

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        default_models = model_set.build(device)
        engine, dataset, _ = prepared_engine(
            default_models, images[:1], n0, min(n, 1000), device, out / "w.tsv"
        )
        engine.run(dataset)  # warm-up
        engine, dataset, setup = prepared_engine(default_models, images, n0, n, device, out / "default.tsv")
        results["ddsx"] = timed(lambda: engine.run(dataset), device)
        fast = {"batch_size": "auto", "autocast_dtype": "auto", "compile": not args.no_compile}
        fast["channels_last"] = not args.no_channels_last
        fast_models = model_set.build(device)
        start = time.perf_counter()
        engine, dataset, _ = prepared_engine(fast_models, images[:1], n0, n, device, out / "warm.tsv", **fast)
        engine.run(dataset)  # compiles and autotunes
        warm_seconds = time.perf_counter() - start
        chosen = _chosen_batch_size(out / "warm.tsv")
        fast |= {"batch_size": chosen}
        engine, dataset, _ = prepared_engine(fast_models, images, n0, n, device, out / "fast.tsv", **fast)
        results["ddsx-fast"] = timed(lambda: engine.run(dataset), device)
        dtype = engine.settings.autocast_dtype
        agree = _agreement(out / "default.tsv", out / "fast.tsv")
    print(
        f"  ddsx-fast: batch_size auto -> {chosen}, autocast {dtype or 'off (fp32)'}, compile {fast['compile']}, "
        f"channels_last {fast['channels_last']}; warm-up (autotune + compile) {warm_seconds:.1f} s; "
        f"certificates equal to fp32 eager on {agree}; build before each run (fingerprints) {setup:.2f} s"
    )
    rates = {label: total / seconds for label, (seconds, _) in results.items()}
    print(f"  {'':<12} {'images/s':>12} {'vs ref@1000':>12} {'vs ref@best':>12} {'peak GiB':>9}")
    best_label = f"ref@{ref_best}"
    for label, (_seconds, peak) in results.items():
        rate = rates[label]
        peak_text = f"{peak:>9.2f}" if peak is not None else f"{'-':>9}"
        shown = f"{rate:>12,.0f}" if rate >= 100 else f"{rate:>12.2f}"  # CPU runs of the big models
        print(
            f"  {label:<12} {shown} {rate / rates['ref@1000']:>11.2f}x {rate / rates[best_label]:>11.2f}x "
            f"{peak_text}"
        )
    if device.type == "cuda" and flops:
        card = torch.cuda.get_device_name(device)
        peak = next((v for k, v in PEAK_TFLOPS.items() if k in card), None)
        for label, rate in rates.items():
            achieved = flops * rate / 1e12
            which = "bf16" if label == "ddsx-fast" and dtype == "bfloat16" else "fp32"
            fraction = f", {achieved / peak[which]:.1%} of the {which} peak {peak[which]}" if peak else ""
            print(f"  {label:<12} {achieved:8.1f} TFLOP/s ({flops / 1e9:.2f} GFLOP per image{fraction})")
    return rates


def _chosen_batch_size(path: Path) -> int:
    import json

    from ddsx.certification import sidecar_path

    return int(json.loads(sidecar_path(path).read_text())["info"]["batch_size"])


def _agreement(a: Path, b: Path) -> str:
    rows_a = {r.idx: (r.predict, r.count_a) for r in read_results(a)}
    rows_b = {r.idx: (r.predict, r.count_a) for r in read_results(b)}
    same = sum(rows_a[i] == rows_b.get(i) for i in rows_a)
    return f"{same}/{len(rows_a)} images (prediction and count)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--models", default="lenet,mnist5k,cifar10", help="comma-separated model sets")
    parser.add_argument("--n", type=int, default=None, help="override n of every model set")
    parser.add_argument("--threads", type=int, default=1, help="CPU intra-op threads (0: torch's default)")
    parser.add_argument("--no-compile", action="store_true", help="ddsx-fast without torch.compile")
    parser.add_argument("--no-channels-last", action="store_true", help="ddsx-fast without channels_last")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cpu" and args.threads:
        torch.set_num_threads(args.threads)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"{time.strftime('%Y-%m-%d %H:%M')}: {name}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} CPU threads; noisy images per second, best of one timed run each"
    )
    for key in args.models.split(","):
        bench(MODEL_SETS[key], device, args)
    if device.type == "cpu":
        print(
            f"\npeak resident memory of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB"
        )


if __name__ == "__main__":
    main()
