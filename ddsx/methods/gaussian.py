"""``method=gaussian``: Gaussian data augmentation at the smoothing sigma (Cohen et al. 2019)."""

from __future__ import annotations

import torch

from ddsx.methods.base import ClassifierModule


class GaussianModule(ClassifierModule):
    def training_inputs(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.add_noise(x)
