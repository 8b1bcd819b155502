"""Measure the covariate shift of one denoiser, and its effect on classifiers, at each sigma.

For every example x (label y) and one noise draw eps per sigma:

- behind the denoiser alone: the noise misestimation at t* (``noise``), and the l2 distance, SSIM
  and (with local weights) LPIPS between D(x + sigma eps) and x;
- for each classifier h: the accuracy of h on x, on D(x + sigma eps) and on D(x + sigma (eps + delta*)),
  where delta* is the dds_adv attack on the noise (``ddsx.methods.noise_attack``) against h, the mean
  KL(h(x) || h(denoised)) for both, and the misestimation and l2 distance under the attacked noise.

The denoiser quantities do not depend on a classifier (``classifier`` column ``-``); the attacked ones
do, since the attack looks for the noise that hurts that classifier.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torchmetrics import Metric
from torchmetrics.image import StructuralSimilarityIndexMeasure

from ddsx.analysis.metrics import (
    Accuracy,
    LPIPSDistance,
    MeanKLDivergence,
    MeanL2Distance,
    NoiseMisestimation,
)
from ddsx.analysis.noise import noise_at_t_star
from ddsx.denoisers.dds import DiffusionDenoiser
from ddsx.methods.noise_attack import AttackStrength, attack_denoised_noise
from ddsx.utils.logging import get_logger

log = get_logger(__name__)

NO_CLASSIFIER = "-"
DENOISER_QUANTITIES = ("misestimation", "l2", "ssim", "lpips")
CLASSIFIER_QUANTITIES = (
    "accuracy_clean",
    "accuracy_denoised",
    "kl_denoised",
    "accuracy_attacked",
    "kl_attacked",
    "misestimation_attacked",
    "l2_attacked",
)
# How often a long sigma reports progress in the log.
LOG_EVERY_SECONDS = 30.0


@dataclass(frozen=True)
class Probe:
    """A classifier to analyse and the name it gets in the outputs."""

    name: str
    classifier: nn.Module


@dataclass
class Grid:
    """A few examples of one sigma: clean, noisy, denoised and attacked-and-denoised (first classifier)."""

    clean: torch.Tensor
    noisy: torch.Tensor
    denoised: torch.Tensor
    attacked: torch.Tensor | None


def build_metrics(
    probes: Sequence[Probe], lpips_weights: str | None = None, lpips_net: str = "alex"
) -> dict[tuple[str, str], Metric]:
    """One metric per (quantity, classifier name); denoiser quantities under ``NO_CLASSIFIER``."""
    metrics: dict[tuple[str, str], Metric] = {
        ("misestimation", NO_CLASSIFIER): NoiseMisestimation(),
        ("l2", NO_CLASSIFIER): MeanL2Distance(),
        ("ssim", NO_CLASSIFIER): StructuralSimilarityIndexMeasure(data_range=1.0),
    }
    if lpips_weights:
        metrics[("lpips", NO_CLASSIFIER)] = LPIPSDistance(lpips_weights, lpips_net)
    for probe in probes:
        metrics[("accuracy_clean", probe.name)] = Accuracy()
        metrics[("accuracy_denoised", probe.name)] = Accuracy()
        metrics[("kl_denoised", probe.name)] = MeanKLDivergence()
        metrics[("accuracy_attacked", probe.name)] = Accuracy()
        metrics[("kl_attacked", probe.name)] = MeanKLDivergence()
        metrics[("misestimation_attacked", probe.name)] = NoiseMisestimation()
        metrics[("l2_attacked", probe.name)] = MeanL2Distance()
    return metrics


def noise_for(shape: torch.Size, seed: int, device: torch.device) -> torch.Tensor:
    """Standard normal noise drawn on the CPU from ``seed`` (the same numbers on every device)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=generator).to(device)


def measure_sigma(
    denoiser: DiffusionDenoiser,
    probes: Sequence[Probe],
    batches: Callable[[], object],
    metrics: dict[tuple[str, str], Metric],
    strength: AttackStrength,
    seed: int,
    grid_examples: int = 0,
    device: torch.device | str = "cpu",
) -> Grid | None:
    """Update ``metrics`` with every batch of ``batches()`` at the denoiser's current sigma.

    Batch ``b`` draws its noise from seed ``seed + b``. Returns the first ``grid_examples`` examples
    of the first batch as a :class:`Grid` (None when ``grid_examples`` is 0).
    """
    device = torch.device(device)
    sigma = denoiser.sigma
    grid = None
    started = last_log = time.monotonic()
    done = 0
    for b, (x, y) in enumerate(batches()):
        x, y = x.to(device), y.to(device)
        eps = noise_for(x.shape, seed + b, device)
        with torch.no_grad():
            predicted, true = noise_at_t_star(denoiser, x, eps)
            metrics[("misestimation", NO_CLASSIFIER)].update(predicted.to(x), true.to(x))
            noisy = x + sigma * eps
            denoised = denoiser(noisy)
            metrics[("l2", NO_CLASSIFIER)].update(denoised, x)
            metrics[("ssim", NO_CLASSIFIER)].update(denoised, x)
            if ("lpips", NO_CLASSIFIER) in metrics:
                metrics[("lpips", NO_CLASSIFIER)].update(denoised, x)
        first_attacked = None
        for probe in probes:
            h = probe.classifier
            with torch.no_grad():
                clean_logits, denoised_logits = h(x), h(denoised)
            attack = attack_denoised_noise(denoiser, h, x, y, eps, sigma, strength)
            with torch.no_grad():
                attacked_logits = h(attack.inputs)
                predicted_a, true_a = noise_at_t_star(denoiser, x, eps + attack.delta)
            metrics[("accuracy_clean", probe.name)].update(clean_logits, y)
            metrics[("accuracy_denoised", probe.name)].update(denoised_logits, y)
            metrics[("kl_denoised", probe.name)].update(clean_logits, denoised_logits)
            metrics[("accuracy_attacked", probe.name)].update(attacked_logits, y)
            metrics[("kl_attacked", probe.name)].update(clean_logits, attacked_logits)
            metrics[("misestimation_attacked", probe.name)].update(predicted_a.to(x), true_a.to(x))
            metrics[("l2_attacked", probe.name)].update(attack.inputs, x)
            if first_attacked is None:
                first_attacked = attack.inputs
        if grid is None and grid_examples > 0:
            k = min(grid_examples, x.shape[0])
            grid = Grid(
                x[:k].cpu(),
                noisy[:k].clamp(0, 1).cpu(),
                denoised[:k].cpu(),
                None if first_attacked is None else first_attacked[:k].cpu(),
            )
        done += x.shape[0]
        if time.monotonic() - last_log > LOG_EVERY_SECONDS:
            last_log = time.monotonic()
            log.info("sigma %g: %d examples in %.0f s", sigma, done, last_log - started)
    return grid


def computed(metrics: dict[tuple[str, str], Metric]) -> dict[tuple[str, str], float]:
    """The value of every metric (gathered over processes under DDP), then reset for the next sigma."""
    values = {key: float(metric.compute()) for key, metric in metrics.items()}
    for metric in metrics.values():
        metric.reset()
    return values
