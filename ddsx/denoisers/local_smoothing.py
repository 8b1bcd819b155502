"""DiffSmooth-style local smoothing (Zhang et al., USENIX Security 2023): vote over Gaussian draws
around the denoised image.

The noisy input is denoised once by the base denoiser (one-shot DDS, or its k deterministic steps);
the classifier then labels ``votes`` (m) images D(x_noisy) + local_sigma * z_j, z_j standard normal,
and the base label is their majority (``ddsx.denoisers.vote``). The local draws are not clipped to
[0,1]: they are Gaussian augmentation of the denoised image, as a classifier trained with it sees.
Cost per noisy copy: the base's UNet calls once and m classifier calls.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ddsx.denoisers.base import Denoiser
from ddsx.denoisers.load import load_diffusers_denoiser
from ddsx.denoisers.vote import VotingDenoiser
from ddsx.models.identity import records_arguments


class LocalSmoothingDenoiser(VotingDenoiser):
    """``votes`` local Gaussian draws of std ``local_sigma`` around ``base``'s denoised image.

    Args:
        base: the denoiser applied once per noisy copy (its ``output_size``, if any, is the draws' size).
        votes: m, local draws (and classifier votes) per noisy copy.
        local_sigma: the draws' std in [0,1] pixel units, > 0.
    """

    name = "local_smoothing"

    @records_arguments
    def __init__(self, base: Denoiser, votes: int = 5, local_sigma: float = 0.1) -> None:
        if not float(local_sigma) > 0:
            raise ValueError(f"local_sigma must be > 0, got {local_sigma}")
        super().__init__(base, votes)
        self.local_sigma = float(local_sigma)

    def noise_shape(self, image_shape: tuple[int, ...]) -> tuple[int, ...]:
        size = getattr(self.base, "output_size", None) or tuple(image_shape[1:])
        return (self.votes, image_shape[0], *size)

    def _denoise_votes(self, x_noisy: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        denoised = self.base(x_noisy)
        # Copy-major: draw j of copy i is row i * votes + j.
        return (denoised.unsqueeze(1) + self.local_sigma * noise.to(denoised.dtype)).flatten(0, 1)

    def calls_per_copy(self) -> dict[str, int]:
        # A diffusion base calls its UNet once per step of its path; the identity never.
        steps = len(getattr(self.base, "timesteps", ()))
        return {"unet_calls_per_copy": steps, "classifier_calls_per_copy": self.votes}

    def describe(self) -> dict[str, Any]:
        return super().describe() | {"local_sigma": self.local_sigma}


def load_local_smoothing_denoiser(
    path: str | Path,
    sigma: float,
    votes: int = 5,
    local_sigma: float = 0.1,
    dtype: str | None = None,
    **options: Any,
) -> LocalSmoothingDenoiser:
    """Local smoothing around the DDS denoiser of a local diffusers folder (``load_diffusers_denoiser``'s
    ``path``, ``sigma``, ``dtype`` and ``options``)."""
    base = load_diffusers_denoiser(path, sigma, dtype, **options)
    return LocalSmoothingDenoiser(base, votes=votes, local_sigma=local_sigma)
