"""``method=dds_adv``: the paper's classifier training against the worst-case shift of the noise.

    outer: min_h CE(h(D(x + sigma * (eps + delta*))), y) [+ lambda * CE(h(D(x + sigma * eps)), y)]

with delta* from ``noise_attack.worst_case_noise_shift`` (docs/method.md section 2). The attack returns
the denoised batches at delta* and at delta = 0 together with delta*, so a training step runs the
denoiser K times with gradient (the attack steps) and once without (at delta*), never more.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ddsx.methods.base import ClassifierModule
from ddsx.methods.noise_attack import AttackResult, AttackStrength, attack_denoised_noise
from ddsx.utils.logging import get_logger

log = get_logger(__name__)


class DDSAdversarialModule(ClassifierModule):
    """Trainable classifier behind the frozen diffusion denoiser, trained on the worst-case noise.

    Args:
        attack: the ``attack`` config node (steps, step_size, epsilon, norm, lambda_clean, keep_best,
            classifier_mode, epsilon_scale).
        (other args as ``ClassifierModule``)
    """

    uses_input_gradients = True

    def __init__(self, *args: Any, attack: dict | AttackStrength, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.attack = attack if isinstance(attack, AttackStrength) else AttackStrength(**dict(attack))
        if self.attack.is_zero:
            log.warning(
                "method=dds_adv with a zero attack (attack=none?): this trains exactly as dds_finetune"
            )
        # A sigma-scaled budget is resolved here too, so a sigma it cannot follow fails before training.
        on_eps = self.attack.at_sigma(self.sigma)
        if self.attack.epsilon_scale is not None:
            log.info(
                "attack.epsilon_scale=%s: at sigma %g, steps of %g within %s on eps (%g within %s in pixels)",
                self.attack.epsilon_scale,
                self.sigma,
                on_eps.step_size,
                on_eps.epsilon,
                self.attack.step_size,
                self.attack.epsilon,
            )

    def attack_noise(self, x: torch.Tensor, eps: torch.Tensor, y: torch.Tensor) -> AttackResult:
        """delta* for the noise draw eps, with D(x + sigma * (eps + delta*)) and D(x + sigma * eps)."""
        return attack_denoised_noise(self.denoise, self.classifier, x, y, eps, self.sigma, self.attack)

    def training_loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        eps = torch.randn_like(x)
        result = self.attack_noise(x, eps, y)
        # D is frozen and only h trains: the detached denoised batch of delta* is the whole input.
        logits = self.classifier(result.inputs)
        loss = F.cross_entropy(logits, y)
        self.log("train/delta_norm", result.delta.flatten(1).norm(dim=1).mean(), on_step=False, on_epoch=True)
        if self.attack.lambda_clean > 0:
            clean_loss = F.cross_entropy(self.classifier(result.clean_inputs), y)
            loss = loss + self.attack.lambda_clean * clean_loss
        return loss, logits
