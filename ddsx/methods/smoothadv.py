"""``method=smoothadv``: adversarial training of the smoothed classifier (Salman et al. 2019).

The attack maximises the loss of the *soft* smoothed classifier at x' = x + delta,

    -log( (1/m) sum_i softmax(h(D(x' + sigma * eps_i)))_y ),     ||delta||_2 <= epsilon,  x' in [0,1],

with the m noise draws eps_i fixed during the attack: l2 PGD from delta = 0 with normalised steps of
2 * epsilon / K, each step followed by the authors' projection, first x + delta clamped to [0,1],
then delta rescaled onto the epsilon ball (on saturated pixels the other order loses a good part of
the perturbation). The classifier then trains on the m points x' + sigma * eps_i.

As in the authors' code, a loader batch of B images is split into m mini-batches of B/m images,
each with its m noise draws (one forward pass = B noisy images), and every mini-batch takes its own
optimiser step: m steps per loader batch (Lightning's manual optimisation).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ddsx.methods.base import ClassifierModule
from ddsx.methods.noise_attack import AttackStrength, ascent_step, frozen


def minibatch_bounds(batch_size: int, parts: int) -> list[tuple[int, int]]:
    """[lo, hi) of the ``parts`` consecutive mini-batches of a batch, i * B // m to (i + 1) * B // m
    (the authors' split); empty ones left out."""
    bounds = [(i * batch_size // parts, (i + 1) * batch_size // parts) for i in range(parts)]
    return [(lo, hi) for lo, hi in bounds if hi > lo]


def clamp_then_rescale(x: torch.Tensor, delta: torch.Tensor, epsilon: float) -> torch.Tensor:
    """Salman et al.'s projection: x + delta clamped to [0,1], then delta scaled onto the l2 ball."""
    delta = (x + delta).clamp(0.0, 1.0) - x
    norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (delta.dim() - 1)))
    return delta * (epsilon / norms).clamp(max=1.0)


class SmoothAdvModule(ClassifierModule):
    """Args: epsilon (l2 radius in pixel units), steps, num_noise (m), warmup_epochs (linear epsilon
    ramp), classifier_mode (the classifier's mode during the attack: "eval" as the authors' code, or
    "train" with running statistics restored)."""

    uses_input_gradients = True

    def __init__(
        self,
        *args,
        epsilon: float = 0.5,
        steps: int = 2,
        num_noise: int = 2,
        warmup_epochs: int = 0,
        classifier_mode: str = "eval",
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        if epsilon < 0 or steps < 0 or num_noise < 1 or warmup_epochs < 0:
            raise ValueError(
                f"smoothadv needs epsilon >= 0, steps >= 0, num_noise >= 1, warmup_epochs >= 0; "
                f"got {epsilon}, {steps}, {num_noise}, {warmup_epochs}"
            )
        self.epsilon, self.steps, self.num_noise = epsilon, steps, num_noise
        self.warmup_epochs, self.classifier_mode = warmup_epochs, classifier_mode
        # m optimiser steps per loader batch, as the authors' loop: Lightning's manual optimisation.
        self.automatic_optimization = False

    def current_epsilon(self) -> float:
        """epsilon ramped linearly over the first ``warmup_epochs`` epochs (Salman et al.'s warm-up)."""
        if self.warmup_epochs == 0:
            return self.epsilon
        return self.epsilon * min(1.0, (self.current_epoch + 1) / self.warmup_epochs)

    def noisy_copies(self, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """x (N, C, H, W) and eps (m, N, C, H, W) -> the m * N points x + sigma * eps_i, draw-major."""
        return (x.unsqueeze(0) + self.sigma * eps).flatten(0, 1)

    def _soft_smoothed_loss(self, x_adv: torch.Tensor, eps: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-example -log of the mean softmax probability of y over the m noise draws; x_adv (N,C,H,W), eps (m,N,C,H,W)."""
        m, n = eps.shape[:2]
        logits = self.classifier(self.denoise(self.noisy_copies(x_adv, eps)))
        log_probs = F.log_softmax(logits, dim=1).view(m, n, -1)
        mean_log_prob_y = torch.logsumexp(
            log_probs.gather(2, y.view(1, n, 1).expand(m, n, 1)), dim=0
        ) - math.log(m)
        return -mean_log_prob_y.squeeze(-1)

    def attack(self, x: torch.Tensor, y: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """x' = x + delta (detached): ``steps`` l2 PGD steps on the soft smoothed loss, from delta = 0."""
        epsilon = self.current_epsilon()
        if self.steps == 0 or epsilon == 0:
            return x
        strength = AttackStrength(self.steps, 2 * epsilon / self.steps, epsilon, "l2")
        delta = torch.zeros_like(x)
        with frozen(self.classifier, self.classifier_mode):
            for _ in range(self.steps):
                with torch.enable_grad():
                    delta.requires_grad_(True)
                    loss = self._soft_smoothed_loss(x + delta, eps, y).sum()
                    grad = torch.autograd.grad(loss, delta)[0]
                delta = clamp_then_rescale(x, ascent_step(delta.detach(), grad, strength), epsilon)
        return (x + delta).detach()

    def training_loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, logits averaged over the draws) on one mini-batch: x (n, C, H, W) with m draws each."""
        eps = torch.randn((self.num_noise, *x.shape), device=x.device, dtype=x.dtype)
        x_adv = self.attack(x, y, eps)
        with torch.no_grad():  # D is frozen: no graph needed through it
            inputs = self.denoise(self.noisy_copies(x_adv, eps))
        logits = self.classifier(inputs)
        loss = F.cross_entropy(logits, y.repeat(self.num_noise))
        return loss, logits.view(self.num_noise, len(y), -1).mean(0)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        optimizer = self.optimizers()
        losses, correct = [], 0.0
        for lo, hi in minibatch_bounds(len(y), self.num_noise):
            loss, logits = self.training_loss(x[lo:hi], y[lo:hi])
            optimizer.zero_grad()
            self.manual_backward(loss)
            optimizer.step()
            losses.append(loss.detach() * (hi - lo))
            correct += float((logits.argmax(1) == y[lo:hi]).sum())
        loss = torch.stack(losses).sum() / len(y)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(y))
        self.log("train/acc", correct / len(y), on_epoch=True, on_step=False, batch_size=len(y))
        return loss

    def on_train_epoch_end(self) -> None:
        # Manual optimisation: Lightning leaves the (per-epoch) scheduler to the module.
        scheduler = self.lr_schedulers()
        if scheduler is not None:
            scheduler.step()
