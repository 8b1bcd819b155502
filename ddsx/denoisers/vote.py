"""Denoisers whose base label is a vote: one noisy image -> ``votes`` randomised denoisings.

DensePure (``ddsx.denoisers.densepure``) and DiffSmooth's local smoothing
(``ddsx.denoisers.local_smoothing``) both define the base classifier f of randomized smoothing as

    f(x_noisy) = the most frequent of h(D_1(x_noisy)), ..., h(D_K(x_noisy)),   ties to the smallest label,

over K denoisings that differ by noise of their own. The smoothing guarantee needs f to be a fixed
function of x_noisy and of randomness independent of the smoothing noise: the certification engine
draws that randomness per noisy copy from the example's second seeded stream
(``ddsx.smoothing.noise.DENOISER_STREAM``) and passes it in, so rows stay reproducible and
independent of the batch size and of the number of processes. A voting denoiser never draws noise
itself; called without it (training through it) it refuses.

Contract: ``forward(x_noisy (N, C, H, W), noise (N, *noise_shape((C, H, W))))`` -> (N * votes, C, H', W')
images, copy-major (the first ``votes`` rows are copy 0's); the engine classifies them all and
votes with :func:`majority_vote`.
"""

from __future__ import annotations

from typing import Any

import torch

from ddsx.denoisers.base import Denoiser
from ddsx.errors import DDSXError


class VotingDenoiserError(DDSXError):
    """A voting denoiser used where no per-copy noise is passed (training, a plain Smooth)."""


def majority_vote(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B, K) labels -> (B,) the most frequent label of each row; a tie goes to the smallest label.

    One bincount over ``row * num_classes + label``, then ``argmax``, which returns the first (the
    smallest) of equal maxima on every device (PyTorch documents it).
    """
    if labels.dim() != 2 or labels.shape[1] < 1:
        raise ValueError(f"labels must be (B, K) with K >= 1, got shape {tuple(labels.shape)}")
    rows = labels.shape[0]
    offsets = torch.arange(rows, device=labels.device).unsqueeze(1) * num_classes
    counts = torch.bincount((labels + offsets).reshape(-1), minlength=rows * num_classes)
    return counts.view(rows, num_classes).argmax(dim=1)


class VotingDenoiser(Denoiser):
    """Base of the voting denoisers: a ``base`` denoiser, ``votes`` denoisings per noisy copy.

    Subclasses implement ``noise_shape`` (the standard normals one noisy copy needs),
    ``_denoise_votes`` and the cost fields of ``describe``.
    """

    name = "vote"

    def __init__(self, base: Denoiser, votes: int) -> None:
        super().__init__(base.sigma)
        if isinstance(votes, bool) or not isinstance(votes, int) or votes < 1:
            raise ValueError(f"votes must be an integer >= 1, got {votes!r}")
        self.base = base
        self.votes = votes
        self.freeze()

    def set_sigma(self, sigma: float) -> None:
        self.base.set_sigma(sigma)
        self.sigma = sigma

    def noise_shape(self, image_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape of the standard normal noise one noisy copy of a (C, H, W) image takes."""
        raise NotImplementedError

    def forward(self, x_noisy: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        if noise is None:
            raise VotingDenoiserError(
                f"denoiser {self.name} votes over randomised denoisings and takes their noise from "
                "ddsx-certify's seeded per-example stream; it cannot be trained through (train through its "
                "base denoiser, e.g. denoiser=mnist5k, and certify behind this one)"
            )
        expected = (x_noisy.shape[0], *self.noise_shape(tuple(x_noisy.shape[1:])))
        if tuple(noise.shape) != expected:
            raise ValueError(f"{self.name}: noise must have shape {expected}, got {tuple(noise.shape)}")
        return self._denoise_votes(x_noisy, noise)

    def _denoise_votes(self, x_noisy: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def calls_per_copy(self) -> dict[str, int]:
        """Model calls per noisy copy: the cost multiplier against one-shot DDS (one of each)."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        # t_star and achieved_sigma are the base's: the rows' t_star column reads them from here.
        return self.base.describe() | {
            "name": self.name,
            "base_name": self.base.describe().get("name"),
            "votes": self.votes,
            **self.calls_per_copy(),
        }
