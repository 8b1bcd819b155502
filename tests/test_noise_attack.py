"""The inner maximisation of dds_adv (docs/method.md section 2): ascent, projection, what it returns, and
the classifier left as it was (parameters, .grad, mode, batch-norm statistics)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ddsx.denoisers import IdentityDenoiser
from ddsx.methods.noise_attack import AttackStrength, attack_denoised_noise, frozen, worst_case_noise_shift
from ddsx.models.classifiers import lenet


class BlurDenoiser(IdentityDenoiser):
    """A differentiable stand-in for D: a fixed 3x3 box blur then clip to [0,1]."""

    def forward(self, x):
        kernel = torch.full((x.shape[1], 1, 3, 3), 1 / 9, dtype=x.dtype)
        return F.conv2d(x, kernel, padding=1, groups=x.shape[1]).clamp(0, 1)


def _batch(seed=0, n=16):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 28, 28, generator=g)
    eps = torch.randn(n, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return x, eps, y


def _classifier_with_batchnorm(seed=0):
    torch.manual_seed(seed)
    model = lenet()
    model.network.features.insert(1, nn.BatchNorm2d(6))  # the attack must not touch BN statistics
    return model.train()


def _attack(classifier, denoiser, x, eps, y, sigma, strength):
    """The attack as dds_adv runs it: D(x + sigma * (eps + delta)) into per-example CE."""

    def inputs_of(delta):
        return denoiser(x + sigma * (eps + delta))

    def losses_of(inputs):
        return F.cross_entropy(classifier(inputs), y, reduction="none")

    with frozen(classifier, strength.classifier_mode):
        return worst_case_noise_shift(inputs_of, losses_of, x, strength)


def _loss_at(classifier, denoiser, x, eps, y, sigma, delta):
    with torch.no_grad():
        return F.cross_entropy(classifier(denoiser(x + sigma * (eps + delta))), y, reduction="none")


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("steps", [1, 3])
def test_keep_best_never_lowers_the_loss(norm, steps):
    classifier, denoiser = _classifier_with_batchnorm(), BlurDenoiser()
    x, eps, y = _batch()
    strength = AttackStrength(
        steps=steps,
        step_size=0.5 if norm == "linf" else 5.0,
        epsilon=0.5 if norm == "linf" else 4.0,
        norm=norm,
        keep_best=True,
        classifier_mode="eval",
    )
    result = _attack(classifier, denoiser, x, eps, y, 0.5, strength)
    classifier.eval()
    at_zero = _loss_at(classifier, denoiser, x, eps, y, 0.5, torch.zeros_like(x))
    at_delta = _loss_at(classifier, denoiser, x, eps, y, 0.5, result.delta)
    assert torch.all(at_delta >= at_zero - 1e-6)
    assert at_delta.mean() > at_zero.mean() + 1e-3, "a real attack should raise the loss on average"
    # The denoised batch handed back is the one of the returned delta, per example.
    torch.testing.assert_close(result.inputs, denoiser(x + 0.5 * (eps + result.delta)))


def test_vanilla_pgd_raises_mean_loss_too():
    classifier, denoiser = _classifier_with_batchnorm(), BlurDenoiser()
    x, eps, y = _batch(1)
    strength = AttackStrength(steps=2, step_size=0.05, epsilon=0.1, norm="linf", classifier_mode="eval")
    result = _attack(classifier, denoiser, x, eps, y, 0.25, strength)
    classifier.eval()
    at_delta = _loss_at(classifier, denoiser, x, eps, y, 0.25, result.delta)
    assert at_delta.mean() > _loss_at(classifier, denoiser, x, eps, y, 0.25, torch.zeros_like(x)).mean()


@pytest.mark.parametrize("norm,epsilon", [("linf", 0.1), ("l2", 2.0)])
def test_projection_holds(norm, epsilon):
    classifier = _classifier_with_batchnorm()
    x, eps, y = _batch(2)
    # Steps far larger than the ball: only the projection keeps delta inside.
    strength = AttackStrength(steps=3, step_size=10.0, epsilon=epsilon, norm=norm)
    delta = _attack(classifier, BlurDenoiser(), x, eps, y, 0.5, strength).delta
    if norm == "linf":
        assert delta.abs().max() <= epsilon + 1e-6
        assert torch.isclose(delta.abs().max(), torch.tensor(epsilon))  # it reaches the boundary
    else:
        norms = delta.flatten(1).norm(dim=1)
        assert torch.all(norms <= epsilon + 1e-5) and torch.allclose(norms, torch.full_like(norms, epsilon))


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_one_unbounded_linf_step_is_eta_sign_of_the_gradient_in_that_mode(mode):
    """One step of 0.1 is 0.1 * sign(grad), the gradient taken with the classifier in ``mode``
    (train: batch statistics), and the denoised batches returned are those of delta and of 0."""
    classifier = _classifier_with_batchnorm()
    x, eps, y = _batch(3)
    # A copy in the given mode, differentiated by hand (its BN statistics may move: it is a copy).
    reference = copy.deepcopy(classifier).train(mode == "train")
    d = torch.zeros_like(x, requires_grad=True)
    loss = F.cross_entropy(reference(x + 0.5 * (eps + d)), y, reduction="none").sum()
    expected = 0.1 * torch.autograd.grad(loss, d)[0].sign()
    other = copy.deepcopy(classifier).train(mode != "train")
    d = torch.zeros_like(x, requires_grad=True)
    loss = F.cross_entropy(other(x + 0.5 * (eps + d)), y, reduction="none").sum()
    assert not torch.equal(expected, 0.1 * torch.autograd.grad(loss, d)[0].sign()), "modes must differ here"

    strength = AttackStrength(steps=1, step_size=0.1, epsilon=None, norm="linf", classifier_mode=mode)
    result = _attack(classifier, IdentityDenoiser(), x, eps, y, 0.5, strength)
    torch.testing.assert_close(result.delta, expected)
    torch.testing.assert_close(result.inputs, x + 0.5 * (eps + expected))
    torch.testing.assert_close(result.clean_inputs, x + 0.5 * eps)


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_inner_loop_leaves_classifier_untouched(mode):
    classifier = _classifier_with_batchnorm()
    x, eps, y = _batch(4)
    # Give every parameter a known .grad, as if an outer backward had just happened.
    F.cross_entropy(classifier(x), y).backward()
    params = {k: v.detach().clone() for k, v in classifier.named_parameters()}
    grads = {k: v.grad.clone() for k, v in classifier.named_parameters()}
    buffers = {k: v.clone() for k, v in classifier.named_buffers()}
    strength = AttackStrength(steps=3, step_size=0.1, epsilon=0.3, keep_best=True, classifier_mode=mode)
    _attack(classifier, BlurDenoiser(), x, eps, y, 0.5, strength)
    for k, p in classifier.named_parameters():
        assert torch.equal(p, params[k]) and torch.equal(p.grad, grads[k]) and p.requires_grad
    for k, b in classifier.named_buffers():
        assert torch.equal(b, buffers[k]), f"buffer {k} changed during the attack"
    assert classifier.training, "train mode must be restored after the attack"


def test_zero_attack_returns_delta_zero_and_one_denoised_batch():
    x, eps, y = _batch(5, n=4)
    result = _attack(lenet(), BlurDenoiser(), x, eps, y, 0.5, AttackStrength(steps=0))
    assert torch.equal(result.delta, torch.zeros_like(x))
    torch.testing.assert_close(result.inputs, BlurDenoiser()(x + 0.5 * eps))
    assert torch.equal(result.clean_inputs, result.inputs)


def test_attack_strength_validates():
    with pytest.raises(ValueError, match="norm"):
        AttackStrength(norm="l1")
    with pytest.raises(ValueError, match="epsilon"):
        AttackStrength(epsilon=-1.0)
    with pytest.raises(ValueError, match="classifier_mode"):
        AttackStrength(classifier_mode="batch")
    with pytest.raises(ValueError, match="epsilon_scale"):
        AttackStrength(epsilon_scale="pixels")


def _pixel_shift(strength, sigma, seed=6):
    """sigma * delta of dds_adv's attack (attack_denoised_noise) at ``sigma``: what it does to the image."""
    classifier = _classifier_with_batchnorm()
    x, eps, y = _batch(seed)
    result = attack_denoised_noise(BlurDenoiser(), classifier, x, y, eps, sigma, strength)
    return sigma * result.delta


@pytest.mark.parametrize("steps", [1, 3])
def test_a_sigma_scaled_linf_budget_is_one_pixel_bound_at_every_sigma(steps):
    scaled = AttackStrength(steps=steps, step_size=0.05, epsilon=0.05, norm="linf", epsilon_scale="sigma")
    for sigma in (0.25, 1.0):
        shift = _pixel_shift(scaled, sigma).abs().max()
        assert shift <= 0.05 + 1e-6 and torch.isclose(shift, torch.tensor(0.05)), sigma
    # The fixed recipe bounds delta on eps instead: its pixel shift grows with sigma.
    fixed = AttackStrength(steps=steps, step_size=0.05, epsilon=0.05, norm="linf")
    assert torch.isclose(_pixel_shift(fixed, 0.25).abs().max(), torch.tensor(0.0125))
    assert torch.isclose(_pixel_shift(fixed, 1.0).abs().max(), torch.tensor(0.05))


def test_a_sigma_scaled_l2_budget_is_one_pixel_ball_at_every_sigma():
    scaled = AttackStrength(steps=3, step_size=10.0, epsilon=0.5, norm="l2", epsilon_scale="sigma")
    for sigma in (0.25, 1.0):
        norms = _pixel_shift(scaled, sigma).flatten(1).norm(dim=1)
        torch.testing.assert_close(norms, torch.full_like(norms, 0.5))


def test_at_sigma_divides_step_and_bound_by_sigma_only_when_scaled():
    scaled = AttackStrength(steps=2, step_size=0.05, epsilon=0.05, epsilon_scale="sigma", keep_best=True)
    assert scaled.at_sigma(0.5) == AttackStrength(steps=2, step_size=0.1, epsilon=0.1, keep_best=True)
    assert AttackStrength(step_size=0.1, epsilon=None, epsilon_scale="sigma").at_sigma(0.5).epsilon is None
    fixed = AttackStrength(step_size=0.1, epsilon=0.1)
    assert fixed.at_sigma(0.25) is fixed
    with pytest.raises(ValueError, match="sigma > 0"):
        scaled.at_sigma(0.0)


def test_a_sigma_scaled_strength_is_never_read_as_one_on_eps():
    x, eps, y = _batch(7, n=4)
    with pytest.raises(ValueError, match="at_sigma"):
        _attack(lenet(), BlurDenoiser(), x, eps, y, 0.5, AttackStrength(epsilon_scale="sigma"))
