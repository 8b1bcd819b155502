"""DensePure-style denoising (Xiao et al., ICLR 2023): K stochastic reverse runs from x_t*, one vote each.

For a noisy input the DDS start x_t* = sqrt(abar_t*) (2 x_noisy - 1) is computed once (as one-shot
DDS, ``ddsx.denoisers.dds``); the reverse diffusion process is then run from it to x_0 ``votes``
times, each with its own standard normals, along the base denoiser's ``num_steps`` path t* -> 0 with
DDIM's stochastic step (eta = 1: DDPM's posterior variance). The classifier labels every result and
the base label is their majority (``ddsx.denoisers.vote``). Cost per noisy copy: votes x num_steps
UNet calls and votes classifier calls (one-shot DDS: one of each).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ddsx.denoisers.dds import DiffusionDenoiser
from ddsx.denoisers.load import load_diffusers_denoiser
from ddsx.denoisers.vote import VotingDenoiser
from ddsx.models.identity import records_arguments


class DensePureDenoiser(VotingDenoiser):
    """``votes`` stochastic reverse runs of ``base`` (its t* and num_steps path) per noisy copy.

    Args:
        base: the DDS denoiser whose UNet, schedule, t* and step path are used; ``num_steps`` >= 3.
            Noise enters only where a step lands: the last step always lands at t = 0, where the
            ancestral step's std is sqrt(1 - abar_0) (0.006 on the mnist5k cosine schedule, in
            [-1, 1] units), so with 2 steps (t*, 0) every vote is one-shot DDS up to that jitter.
        votes: K, reverse runs (and classifier votes) per noisy copy.
        eta: the reverse step's stochasticity in (0, 1]; 1 is DDPM's ancestral sampling.
    """

    name = "densepure"

    @records_arguments
    def __init__(self, base: DiffusionDenoiser, votes: int = 5, eta: float = 1.0) -> None:
        if not isinstance(base, DiffusionDenoiser):
            raise ValueError(
                f"DensePure runs a diffusion model's reverse process; got a {type(base).__name__}"
            )
        if base.num_steps < 3:
            raise ValueError(
                "DensePure needs num_steps >= 3 reverse steps from t*: the path t* -> 0 ends at t = 0, "
                "where the stochastic step adds almost no noise (std sqrt(1 - abar_0)), so with 1 or 2 "
                f"steps all votes are one-shot DDS and agree; got num_steps={base.num_steps}"
            )
        if not 0.0 < float(eta) <= 1.0:
            raise ValueError(f"eta must be in (0, 1], got {eta}")
        super().__init__(base, votes)
        self.eta = float(eta)

    def noise_shape(self, image_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (self.votes, *self.base.reverse_noise_shape(image_shape))

    def _denoise_votes(self, x_noisy: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        # Copy-major: run k of copy i is row i * votes + k, with its own noise noise[i, k].
        starts = x_noisy.repeat_interleave(self.votes, dim=0)
        return self.base(starts, noise.flatten(0, 1), eta=self.eta)

    def calls_per_copy(self) -> dict[str, int]:
        return {
            "unet_calls_per_copy": self.votes * len(self.base.timesteps),
            "classifier_calls_per_copy": self.votes,
        }

    def describe(self) -> dict[str, Any]:
        return super().describe() | {"eta": self.eta}


def load_densepure_denoiser(
    path: str | Path, sigma: float, votes: int = 5, eta: float = 1.0, dtype: str | None = None, **options: Any
) -> DensePureDenoiser:
    """DensePure around the DDS denoiser of a local diffusers folder (``load_diffusers_denoiser``'s
    ``path``, ``sigma``, ``dtype`` and ``options``; ``num_steps`` is the reverse steps per run)."""
    return DensePureDenoiser(load_diffusers_denoiser(path, sigma, dtype, **options), votes=votes, eta=eta)
