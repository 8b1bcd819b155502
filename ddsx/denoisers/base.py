"""The denoiser contract: noisy [0,1] images in, denoised [0,1] images out.

Every denoiser is frozen (no parameter gradients, always in eval mode) but stays differentiable
with respect to its input, because adversarial training (method ``dds_adv``) back-propagates
through it to the noise.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ddsx.models.identity import records_arguments


class Denoiser(nn.Module):
    """Base class: subclasses implement ``forward(x_noisy) -> x_denoised``, both (N, C, H, W) in [0,1].

    ``sigma`` is the noise level (in [0,1] pixel units) the denoiser is tuned for; the smoothing
    code always adds exactly N(0, sigma^2) itself, so a denoiser never changes a certificate's
    validity, only its accuracy.
    """

    # sigma is what the denoiser is retuned to (set_sigma); the certification settings compare it.
    @records_arguments(uncompared=("sigma",))
    def __init__(self, sigma: float | None = None) -> None:
        super().__init__()
        self.sigma = sigma

    def set_sigma(self, sigma: float) -> None:
        """Retune for another noise level (certification may run at a sigma other than training's)."""
        self.sigma = sigma

    def describe(self) -> dict[str, Any]:
        """What to record next to every result: at least ``t_star`` and ``achieved_sigma`` (None if n/a)."""
        return {"name": type(self).__name__, "t_star": None, "achieved_sigma": None}

    def freeze(self) -> Denoiser:
        for p in self.parameters():
            p.requires_grad_(False)
        return self.eval()

    def train(self, mode: bool = True) -> Denoiser:
        # Frozen means frozen: Lightning calls .train() on the whole module tree every epoch.
        return super().train(False)


class IdentityDenoiser(Denoiser):
    """``denoiser=none``: the classifier sees the noisy image itself (Cohen et al., SmoothAdv)."""

    def forward(self, x_noisy: torch.Tensor) -> torch.Tensor:
        return x_noisy

    def describe(self) -> dict[str, Any]:
        return {"name": "none", "t_star": None, "achieved_sigma": None}
