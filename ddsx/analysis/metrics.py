"""The analysis quantities as torchmetrics metrics: sums and counts as states, reduced by summation.

Under DDP each process updates its metrics with its share of the examples; ``compute`` gathers the
sums of every process first, so the value is the one of the whole split whatever the sharding.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import Metric


class _MeanOfSums(Metric):
    """``total / count`` with both states summed over processes."""

    full_state_update = False
    higher_is_better = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def _add(self, values: torch.Tensor, count: int) -> None:
        self.total += values.detach().to(torch.float64).sum()
        self.count += int(count)

    def compute(self) -> torch.Tensor:
        return self.total / self.count if self.count > 0 else torch.tensor(float("nan"), dtype=torch.float64)


class NoiseMisestimation(_MeanOfSums):
    """The per-pixel mean of ||eps_theta(x_t, t*) - eps_true||^2 over every pixel of every example."""

    def update(self, predicted: torch.Tensor, true: torch.Tensor) -> None:
        if predicted.shape != true.shape:
            raise ValueError(f"noise shapes differ: {tuple(predicted.shape)} vs {tuple(true.shape)}")
        self._add((predicted - true).pow(2), true.numel())


class MeanL2Distance(_MeanOfSums):
    """The mean over examples of ||a - b||_2 (per example, over all its pixels and channels)."""

    def update(self, a: torch.Tensor, b: torch.Tensor) -> None:
        self._add((a - b).flatten(1).norm(dim=1), a.shape[0])


class MeanKLDivergence(_MeanOfSums):
    """The mean over examples of KL(softmax(reference) || softmax(other)), in nats.

    The reference is the classifier's output on the clean image: how far denoising moves the
    prediction away from what the classifier says about the image itself.
    """

    def update(self, reference_logits: torch.Tensor, other_logits: torch.Tensor) -> None:
        log_p = F.log_softmax(reference_logits.to(torch.float64), dim=1)
        log_q = F.log_softmax(other_logits.to(torch.float64), dim=1)
        self._add((log_p.exp() * (log_p - log_q)).sum(dim=1), reference_logits.shape[0])


class Accuracy(_MeanOfSums):
    """The fraction of examples whose arg-max prediction equals the label."""

    higher_is_better = True

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        self._add((logits.argmax(dim=1) == labels).to(torch.float64), labels.shape[0])


class LPIPSDistance(_MeanOfSums):
    """The mean LPIPS distance (Zhang et al. 2018) between two [0,1] image batches.

    The backbone weights come from a local torchvision weight file and nothing else: this class never
    downloads. torchmetrics ships the LPIPS linear heads; grey images are repeated to three channels
    and small images resized to ``resize`` (AlexNet's first layers would shrink 28 x 28 to nothing).
    """

    def __init__(self, weights: str | Path, net: str = "alex", resize: int | None = 64, **kwargs) -> None:
        super().__init__(**kwargs)
        self.net = lpips_network(weights, net, resize)

    def update(self, a: torch.Tensor, b: torch.Tensor) -> None:
        if a.shape[1] == 1:
            a, b = a.repeat(1, 3, 1, 1), b.repeat(1, 3, 1, 1)
        with torch.no_grad():
            distances = self.net(a.clamp(0, 1), b.clamp(0, 1), normalize=True).flatten()
        self._add(distances, a.shape[0])


BACKBONES = {"alex": "alexnet", "vgg": "vgg16"}


def lpips_network(weights: str | Path, net: str = "alex", resize: int | None = 64) -> nn.Module:
    """torchmetrics' LPIPS network with its backbone (``alex`` or ``vgg``) read from ``weights``."""
    import torchvision
    from torchmetrics.functional.image.lpips import _NoTrainLpips

    if net not in BACKBONES:
        raise ValueError(f"LPIPS backbone must be one of {sorted(BACKBONES)}, got {net!r}")
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"LPIPS backbone weights not found: {path}")
    # pnet_rand: build the backbone without weights (no download); ours are loaded below.
    lpips = _NoTrainLpips(net=net, pnet_rand=True, resize=resize)
    backbone = getattr(torchvision.models, BACKBONES[net])(weights=None)
    backbone.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    # torchmetrics slices backbone.features into slice1..slice5, keeping each layer's index as its name.
    for name, part in lpips.net.named_children():
        if name.startswith("slice"):
            for index, layer in part.named_children():
                layer.load_state_dict(backbone.features[int(index)].state_dict())
    return lpips.eval()
