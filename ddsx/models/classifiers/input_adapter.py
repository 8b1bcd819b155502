"""The first layers of every ddsx classifier: resize to the network's input size, then normalise.

Callers always pass [0,1] images at dataset resolution, so noise and certified radii stay in pixel
units; everything the network needs beyond that happens here, inside the certified function.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ddsx.models.identity import records_arguments


class InputAdapter(nn.Module):
    """(N, C, H, W) in [0,1] -> (N, C, S, S) resized (bicubic, antialiased) and normalised."""

    @records_arguments
    def __init__(
        self, mean: Sequence[float], std: Sequence[float], input_size: int | Sequence[int] | None = None
    ) -> None:
        super().__init__()
        if len(mean) != len(std):
            raise ValueError(f"mean has {len(mean)} channels but std has {len(std)}")
        if isinstance(input_size, int):
            input_size = (input_size, input_size)
        self.input_size = tuple(input_size) if input_size is not None else None
        # Buffers, not parameters: they move with .to(device) and are saved, but never trained.
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.mean.shape[1]:
            raise ValueError(
                f"classifier expects {self.mean.shape[1]} channels, got input of shape {tuple(x.shape)}"
            )
        if self.input_size is not None and tuple(x.shape[-2:]) != self.input_size:
            x = F.interpolate(x, size=self.input_size, mode="bicubic", antialias=True, align_corners=False)
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)


class AdaptedClassifier(nn.Module):
    """``network(adapter(x))``: a classifier that accepts raw [0,1] images of any size."""

    @records_arguments
    def __init__(self, adapter: InputAdapter, network: nn.Module) -> None:
        super().__init__()
        self.adapter = adapter
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(self.adapter(x))
