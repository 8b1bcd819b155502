"""The inner maximisation of the paper (method.md section 2): the worst-case shift of the noise.

    delta* = argmax_{||delta|| <= epsilon} CE(h(D(x + sigma * (eps + delta))), y)

found by K steps of projected gradient ascent from delta = 0. Only delta is differentiated: the
classifier is put in eval mode with parameters frozen for the duration, so neither its .grad buffers
nor its batch-norm statistics see the attack.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Norm = Literal["linf", "l2"]


@dataclass(frozen=True)
class AttackStrength:
    """(K, eta, epsilon, norm) of the paper; ``epsilon=None`` leaves delta unbounded."""

    steps: int = 1
    step_size: float = 0.1
    epsilon: float | None = 0.1
    norm: Norm = "linf"
    lambda_clean: float = 0.0
    # Return, per example, the best iterate seen (delta = 0 included), so the attack can never make
    # the loss smaller than no attack; costs one extra forward pass.
    keep_best: bool = True

    def __post_init__(self) -> None:
        if self.norm not in ("linf", "l2"):
            raise ValueError(f"attack.norm must be 'linf' or 'l2', got {self.norm!r}")
        if self.steps < 0 or self.step_size < 0:
            raise ValueError(
                f"attack.steps and attack.step_size must be >= 0, got {self.steps}, {self.step_size}"
            )
        if self.epsilon is not None and self.epsilon < 0:
            raise ValueError(f"attack.epsilon must be >= 0 or null (unbounded), got {self.epsilon}")
        if self.lambda_clean < 0:
            raise ValueError(f"attack.lambda_clean must be >= 0, got {self.lambda_clean}")


@contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """Eval mode and no parameter gradients inside; the previous state restored on exit."""
    was_training = module.training
    flags = [p.requires_grad for p in module.parameters()]
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(module.parameters(), flags, strict=True):
            p.requires_grad_(flag)
        module.train(was_training)


def _per_example_norm(t: torch.Tensor) -> torch.Tensor:
    """(N, ...) -> (N, 1, ..., 1) l2 norms, broadcastable against t."""
    return t.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (t.dim() - 1)))


def ascent_step(delta: torch.Tensor, grad: torch.Tensor, strength: AttackStrength) -> torch.Tensor:
    """One projected ascent step: sign steps for linf, normalised steps for l2."""
    if strength.norm == "linf":
        delta = delta + strength.step_size * grad.sign()
        return delta if strength.epsilon is None else delta.clamp(-strength.epsilon, strength.epsilon)
    delta = delta + strength.step_size * grad / _per_example_norm(grad)
    if strength.epsilon is None:
        return delta
    return delta * (strength.epsilon / _per_example_norm(delta)).clamp(max=1.0)


def worst_case_noise_shift(
    loss_of_delta: Callable[[torch.Tensor], torch.Tensor],
    like: torch.Tensor,
    strength: AttackStrength,
) -> torch.Tensor:
    """delta* (detached, shaped like ``like``) maximising the per-example losses ``loss_of_delta(delta)`` (N,).

    ``loss_of_delta`` must be differentiable in delta; parameters it touches should be frozen by the
    caller (see ``frozen``).
    """
    delta = torch.zeros_like(like)
    if strength.steps == 0 or strength.step_size == 0:
        return delta
    expand = (-1,) + (1,) * (like.dim() - 1)  # (N,) -> broadcastable over (N, C, H, W)
    best_delta, best_loss = None, None
    for step in range(strength.steps + 1):
        last = step == strength.steps
        if last and not strength.keep_best:
            break  # vanilla PGD: the last iterate, no extra forward pass
        with torch.set_grad_enabled(not last):
            delta.requires_grad_(not last)
            losses = loss_of_delta(delta)
            grad = None if last else torch.autograd.grad(losses.sum(), delta)[0]
        delta, losses = delta.detach(), losses.detach()
        if strength.keep_best:
            if best_loss is None:  # delta = 0, the no-attack baseline
                best_loss, best_delta = losses, delta
            else:
                better = losses > best_loss
                best_loss = torch.where(better, losses, best_loss)
                best_delta = torch.where(better.view(expand), delta, best_delta)
        if grad is not None:
            delta = ascent_step(delta, grad, strength)
    return best_delta if strength.keep_best else delta


def classifier_noise_loss(
    classifier: nn.Module,
    denoiser: nn.Module,
    x: torch.Tensor,
    eps: torch.Tensor,
    y: torch.Tensor,
    sigma: float,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """delta -> per-example CE(h(D(x + sigma * (eps + delta))), y), shape (N,)."""

    def loss(delta: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(classifier(denoiser(x + sigma * (eps + delta))), y, reduction="none")

    return loss
