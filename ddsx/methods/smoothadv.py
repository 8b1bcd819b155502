"""``method=smoothadv``: adversarial training of the smoothed classifier (Salman et al. 2019).

The attack maximises the loss of the *soft* smoothed classifier at x' = x + delta,

    -log( (1/m) sum_i softmax(h(D(x' + sigma * eps_i)))_y ),     ||delta||_2 <= epsilon,  x' in [0,1],

with the m noise draws eps_i fixed during the attack (l2 PGD, normalised steps of 2 * epsilon / steps,
as in the authors' code); the classifier then trains on the m points x' + sigma * eps_i.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ddsx.methods.base import ClassifierModule
from ddsx.methods.noise_attack import AttackStrength, ascent_step, frozen


class SmoothAdvModule(ClassifierModule):
    """Args: epsilon (l2 radius in pixel units), steps, num_noise (m), warmup_epochs (linear epsilon ramp)."""

    def __init__(
        self,
        *args,
        epsilon: float = 0.5,
        steps: int = 2,
        num_noise: int = 2,
        warmup_epochs: int = 0,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        if epsilon < 0 or steps < 0 or num_noise < 1 or warmup_epochs < 0:
            raise ValueError(
                f"smoothadv needs epsilon >= 0, steps >= 0, num_noise >= 1, warmup_epochs >= 0; "
                f"got {epsilon}, {steps}, {num_noise}, {warmup_epochs}"
            )
        self.epsilon, self.steps, self.num_noise, self.warmup_epochs = (
            epsilon,
            steps,
            num_noise,
            warmup_epochs,
        )

    def current_epsilon(self) -> float:
        """epsilon ramped linearly over the first ``warmup_epochs`` epochs (Salman et al.'s warm-up)."""
        if self.warmup_epochs == 0:
            return self.epsilon
        return self.epsilon * min(1.0, (self.current_epoch + 1) / self.warmup_epochs)

    def _soft_smoothed_loss(self, x_adv: torch.Tensor, eps: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-example -log of the mean softmax probability of y over the m noise draws; x_adv (N,C,H,W), eps (m,N,C,H,W)."""
        m, n = eps.shape[:2]
        noisy = (x_adv.unsqueeze(0) + self.sigma * eps).flatten(0, 1)  # (m*N, C, H, W)
        log_probs = F.log_softmax(self.classifier(self.denoise(noisy)), dim=1).view(m, n, -1)
        mean_log_prob_y = torch.logsumexp(
            log_probs.gather(2, y.view(1, n, 1).expand(m, n, 1)), dim=0
        ) - math.log(m)
        return -mean_log_prob_y.squeeze(-1)

    def attack(self, x: torch.Tensor, y: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        epsilon = self.current_epsilon()
        if self.steps == 0 or epsilon == 0:
            return x
        strength = AttackStrength(self.steps, 2 * epsilon / self.steps, epsilon, "l2", keep_best=False)
        delta = torch.zeros_like(x)
        with frozen(self.classifier):
            for _ in range(self.steps):
                delta.requires_grad_(True)
                with torch.enable_grad():
                    loss = self._soft_smoothed_loss(x + delta, eps, y).sum()
                    grad = torch.autograd.grad(loss, delta)[0]
                delta = ascent_step(delta.detach(), grad, strength)
                delta = (x + delta).clamp(0, 1) - x  # stay a valid image
        return (x + delta).detach()

    def training_loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        eps = torch.randn((self.num_noise, *x.shape), device=x.device, dtype=x.dtype)
        x_adv = self.attack(x, y, eps)
        noisy = (x_adv.unsqueeze(0) + self.sigma * eps).flatten(0, 1)
        with torch.no_grad():
            inputs = self.denoise(noisy)
        logits = self.classifier(inputs)
        loss = F.cross_entropy(logits, y.repeat(self.num_noise))
        return loss, logits.view(self.num_noise, len(y), -1).mean(0)
