"""``method=dds_finetune``: the classifier trained (or fine-tuned) on denoised noisy images D(x + sigma*eps)
(Carlini et al. 2023, fine-tuned variant; equals dds_adv with no attack)."""

from __future__ import annotations

import torch

from ddsx.methods.base import ClassifierModule


class DDSFinetuneModule(ClassifierModule):
    def training_inputs(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():  # D is frozen: no graph needed through it
            return self.denoise(self.add_noise(x))
