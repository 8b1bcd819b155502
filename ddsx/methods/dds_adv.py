"""``method=dds_adv``: the paper's classifier training against the worst-case shift of the noise.

    outer: min_h CE(h(D(x + sigma * (eps + delta*))), y) [+ lambda * CE(h(D(x + sigma * eps)), y)]

with delta* from ``noise_attack.worst_case_noise_shift`` (method.md section 2).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ddsx.methods.base import ClassifierModule
from ddsx.methods.noise_attack import AttackStrength, classifier_noise_loss, frozen, worst_case_noise_shift
from ddsx.utils.logging import get_logger

log = get_logger(__name__)


class DDSAdversarialModule(ClassifierModule):
    """Trainable classifier behind the frozen diffusion denoiser, trained on the worst-case noise.

    Args:
        attack: the ``attack`` config node (steps, step_size, epsilon, norm, lambda_clean, keep_best).
        (other args as ``ClassifierModule``)
    """

    def __init__(self, *args: Any, attack: dict | AttackStrength, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.attack = attack if isinstance(attack, AttackStrength) else AttackStrength(**dict(attack))
        if self.attack.steps == 0 or self.attack.step_size == 0:
            log.warning(
                "method=dds_adv with a zero attack (attack=none?): this trains exactly as dds_finetune"
            )

    def training_loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        eps = torch.randn_like(x)
        with frozen(self.classifier):
            delta = worst_case_noise_shift(
                classifier_noise_loss(self.classifier, self.denoiser, x, eps, y, self.sigma), x, self.attack
            )
        # The denoiser is frozen and only h trains: no graph through D for the outer step.
        with torch.no_grad():
            attacked = self.denoise(self.add_noise(x, eps + delta))
        logits = self.classifier(attacked)
        loss = F.cross_entropy(logits, y)
        self.log("train/delta_norm", delta.flatten(1).norm(dim=1).mean(), on_step=False, on_epoch=True)
        if self.attack.lambda_clean > 0:
            with torch.no_grad():
                plain = self.denoise(self.add_noise(x, eps))
            loss = loss + self.attack.lambda_clean * F.cross_entropy(self.classifier(plain), y)
        return loss, logits
