"""``method=standard``: train on clean images (the usual baseline; poor under noise)."""

from __future__ import annotations

import torch

from ddsx.methods.base import ClassifierModule


class StandardModule(ClassifierModule):
    def training_inputs(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x
