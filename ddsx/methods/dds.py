"""``method=dds``: diffusion denoised smoothing with an off-the-shelf classifier (Carlini et al. 2023).

Nothing trains: the classifier comes from ``init_classifier`` (a ddsx-train checkpoint, e.g. one
trained with ``method=standard``) or from ``classifier.checkpoint_path`` (timm weights), and
ddsx-train goes straight to testing and certification of h o D.
"""

from __future__ import annotations

import torch

from ddsx.methods.base import ClassifierModule


class OffTheShelfModule(ClassifierModule):
    trainable = False

    def training_inputs(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("method=dds trains nothing; ddsx-train skips fitting for it")

    def configure_optimizers(self):
        return None
