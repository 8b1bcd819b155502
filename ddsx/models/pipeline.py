"""The base classifier that smoothing sees: f = h o D (denoiser, then classifier)."""

from __future__ import annotations

import torch
from torch import nn

from ddsx.denoisers.base import Denoiser, IdentityDenoiser


class DenoisedClassifier(nn.Module):
    """x_noisy in [0,1] (N, C, H, W) -> logits (N, K): ``classifier(denoiser(x_noisy))``."""

    def __init__(self, classifier: nn.Module, denoiser: Denoiser | None = None) -> None:
        super().__init__()
        self.denoiser = denoiser if denoiser is not None else IdentityDenoiser()
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.denoiser(x))
