"""The inner maximisation of the paper (docs/method.md section 2): the worst-case shift of the noise.

    delta* = argmax_{||delta|| <= epsilon} CE(h(D(x + sigma * (eps + delta))), y)

found by K steps of projected gradient ascent from delta = 0. The step and the bound are on eps (the
paper's), or, with ``epsilon_scale="sigma"``, pixel budgets for sigma * delta (``AttackStrength.at_sigma``). Only delta is differentiated: the
classifier's parameters are frozen for the duration, so its .grad buffers never see the attack,
and its batch-norm running statistics are restored afterwards whatever mode it attacks in.

The attack also hands back the denoised batch of the iterate it returns (detached), so the outer
step trains on it without running the denoiser a second time on the same input.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Norm = Literal["linf", "l2"]
ClassifierMode = Literal["eval", "train"]
CLASSIFIER_MODES = ("eval", "train")
# What step_size and epsilon are measured on: None, eps itself (the paper's recipes); "sigma", the
# pixel shift sigma * delta, so one budget means the same change of the image at every sigma.
EpsilonScale = Literal["sigma"] | None
EPSILON_SCALES = (None, "sigma")


@dataclass(frozen=True)
class AttackStrength:
    """(K, eta, epsilon, norm) of the paper; ``epsilon=None`` leaves delta unbounded."""

    steps: int = 1
    step_size: float = 0.1
    epsilon: float | None = 0.1
    norm: Norm = "linf"
    lambda_clean: float = 0.0
    # Return, per example, the best iterate seen (delta = 0 included), so the attack can never make
    # the loss smaller than no attack; costs one classifier forward pass (not a denoiser pass) more.
    # False: the last iterate, as the authors' code.
    keep_best: bool = False
    # The classifier's mode during the attack: "train" (batch statistics, as the authors' code; the
    # running statistics are restored afterwards) or "eval" (running statistics, dropout off).
    classifier_mode: ClassifierMode = "train"
    # None: step_size and epsilon are on eps. "sigma": they bound sigma * delta in pixels, and the
    # attack at sigma runs with step_size / sigma and epsilon / sigma on eps (see at_sigma).
    epsilon_scale: EpsilonScale = None

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
        if self.classifier_mode not in CLASSIFIER_MODES:
            raise ValueError(
                f"attack.classifier_mode must be one of {CLASSIFIER_MODES}, got {self.classifier_mode!r}"
            )

        if self.epsilon_scale not in EPSILON_SCALES:
            raise ValueError(f"attack.epsilon_scale must be 'sigma' or null, got {self.epsilon_scale!r}")

    @property
    def is_zero(self) -> bool:
        return self.steps == 0 or self.step_size == 0

    def at_sigma(self, sigma: float) -> AttackStrength:
        """The strength on eps that the attack at noise level ``sigma`` runs with: itself when
        epsilon_scale is None; else step_size and epsilon divided by sigma, so that the pixel shift
        sigma * delta keeps the configured step and bound whatever sigma is."""
        if self.epsilon_scale is None:
            return self
        if not sigma > 0:
            raise ValueError(f"attack.epsilon_scale=sigma needs sigma > 0, got {sigma}")
        epsilon = None if self.epsilon is None else self.epsilon / sigma
        return replace(self, step_size=self.step_size / sigma, epsilon=epsilon, epsilon_scale=None)


@contextmanager
def frozen(module: nn.Module, mode: ClassifierMode = "eval") -> Iterator[None]:
    """No parameter gradients inside, the module in ``mode``; on exit its parameters' flags, its
    train/eval mode and every buffer (batch-norm running statistics) are as they were on entry."""
    if mode not in CLASSIFIER_MODES:
        raise ValueError(f"classifier mode must be one of {CLASSIFIER_MODES}, got {mode!r}")
    modes = {m: m.training for m in module.modules()}
    flags = [p.requires_grad for p in module.parameters()]
    # In train mode batch norm updates its running statistics in place on every forward: keep a copy.
    buffers = [(b, b.detach().clone()) for b in module.buffers()] if mode == "train" else []
    module.train(mode == "train")
    for p in module.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, saved in buffers:
                buffer.copy_(saved)
        for p, flag in zip(module.parameters(), flags, strict=True):
            p.requires_grad_(flag)
        for m, training in modes.items():
            m.training = training


def _per_example_norm(t: torch.Tensor) -> torch.Tensor:
    """(N, ...) -> (N, 1, ..., 1) l2 norms, broadcastable against t."""
    return t.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (t.dim() - 1)))


def ascent_step(delta: torch.Tensor, grad: torch.Tensor, strength: AttackStrength) -> torch.Tensor:
    """One ascent step: sign steps for linf, normalised steps for l2 (not projected)."""
    if strength.norm == "linf":
        return delta + strength.step_size * grad.sign()
    return delta + strength.step_size * grad / _per_example_norm(grad)


def project(delta: torch.Tensor, strength: AttackStrength) -> torch.Tensor:
    """delta onto the epsilon ball of ``strength.norm`` (per example); unbounded: unchanged."""
    if strength.epsilon is None:
        return delta
    if strength.norm == "linf":
        return delta.clamp(-strength.epsilon, strength.epsilon)
    return delta * (strength.epsilon / _per_example_norm(delta)).clamp(max=1.0)


@dataclass(frozen=True)
class AttackResult:
    """What the attack found, all detached: delta (N, ...), the classifier's input at delta
    (``inputs``: D(x + sigma * (eps + delta)) for dds_adv) and at delta = 0 (``clean_inputs``)."""

    delta: torch.Tensor
    inputs: torch.Tensor
    clean_inputs: torch.Tensor


def worst_case_noise_shift(
    inputs_of_delta: Callable[[torch.Tensor], torch.Tensor],
    loss_of_inputs: Callable[[torch.Tensor], torch.Tensor],
    like: torch.Tensor,
    strength: AttackStrength,
) -> AttackResult:
    """delta* maximising the per-example losses ``loss_of_inputs(inputs_of_delta(delta))`` (N,).

    ``inputs_of_delta`` (the denoiser's part) must be differentiable in delta; it runs K times with
    gradient and once more without, for the returned iterate. Parameters the losses touch should be
    frozen by the caller (see ``frozen``). ``strength`` is on delta itself: one with an epsilon_scale
    is refused (``at_sigma`` turns it into one on eps), so a pixel budget is never read as one on eps.
    """
    if strength.epsilon_scale is not None:
        raise ValueError("the attack needs a strength on eps: call AttackStrength.at_sigma(sigma) first")
    delta = torch.zeros_like(like)
    expand = (-1,) + (1,) * (like.dim() - 1)  # (N,) -> broadcastable over (N, C, H, W)
    clean_inputs = best = None  # best: (loss, delta, inputs) per example, for keep_best
    steps = 0 if strength.is_zero else strength.steps
    for _ in range(steps):
        with torch.enable_grad():
            delta.requires_grad_(True)
            inputs = inputs_of_delta(delta)
            losses = loss_of_inputs(inputs)
            grad = torch.autograd.grad(losses.sum(), delta)[0]
        delta, inputs, losses = delta.detach(), inputs.detach(), losses.detach()
        if clean_inputs is None:
            clean_inputs = inputs
        if strength.keep_best:
            best = _keep_better(best, (losses, delta, inputs), expand)
        delta = project(ascent_step(delta, grad, strength), strength)
    with torch.no_grad():
        inputs = inputs_of_delta(delta)
        if clean_inputs is None:  # no step taken: delta is 0
            clean_inputs = inputs
        if strength.keep_best and best is not None:
            losses, delta, inputs = _keep_better(best, (loss_of_inputs(inputs), delta, inputs), expand)
    return AttackResult(delta.detach(), inputs.detach(), clean_inputs.detach())


def attack_denoised_noise(
    denoise: Callable[[torch.Tensor], torch.Tensor],
    classifier: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: torch.Tensor,
    sigma: float,
    strength: AttackStrength,
) -> AttackResult:
    """dds_adv's attack: delta* maximising CE(h(D(x + sigma * (eps + delta))), y) per example, with h
    frozen in ``strength.classifier_mode`` (training uses it, and so does ddsx-analyze); a
    sigma-scaled strength is turned into its strength on eps at this sigma."""
    strength = strength.at_sigma(sigma)

    def denoised(delta: torch.Tensor) -> torch.Tensor:
        return denoise(x + sigma * (eps + delta))

    def losses(inputs: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(classifier(inputs), y, reduction="none")

    with frozen(classifier, strength.classifier_mode):
        return worst_case_noise_shift(denoised, losses, x, strength)


def _keep_better(best, candidate, expand):
    """Per example, whichever of the two (loss, delta, inputs) triples has the larger loss (ties: best)."""
    if best is None:
        return candidate
    better = candidate[0] > best[0]
    return (
        torch.where(better, candidate[0], best[0]),
        torch.where(better.view(expand), candidate[1], best[1]),
        torch.where(better.view(expand), candidate[2], best[2]),
    )
