"""The inner maximisation of dds_adv (method.md section 2) and SmoothAdv's attack."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ddsx.denoisers import IdentityDenoiser
from ddsx.methods.noise_attack import AttackStrength, classifier_noise_loss, frozen, worst_case_noise_shift
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


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("steps", [1, 3])
def test_attack_never_lowers_the_loss(norm, steps):
    classifier = _classifier_with_batchnorm()
    x, eps, y = _batch()
    loss_of = classifier_noise_loss(classifier, BlurDenoiser(), x, eps, y, sigma=0.5)
    strength = AttackStrength(
        steps=steps,
        step_size=0.5 if norm == "linf" else 5.0,
        epsilon=0.5 if norm == "linf" else 4.0,
        norm=norm,
    )
    with frozen(classifier):
        delta = worst_case_noise_shift(loss_of, x, strength)
        with torch.no_grad():
            at_zero, at_delta = loss_of(torch.zeros_like(x)), loss_of(delta)
    assert torch.all(at_delta >= at_zero - 1e-6)
    assert at_delta.mean() > at_zero.mean() + 1e-3, "a real attack should raise the loss on average"


def test_vanilla_pgd_raises_mean_loss_too():
    classifier = _classifier_with_batchnorm()
    x, eps, y = _batch(1)
    loss_of = classifier_noise_loss(classifier, BlurDenoiser(), x, eps, y, sigma=0.25)
    strength = AttackStrength(steps=2, step_size=0.05, epsilon=0.1, norm="linf", keep_best=False)
    with frozen(classifier):
        delta = worst_case_noise_shift(loss_of, x, strength)
        with torch.no_grad():
            assert loss_of(delta).mean() > loss_of(torch.zeros_like(x)).mean()


@pytest.mark.parametrize("norm,epsilon", [("linf", 0.1), ("l2", 2.0)])
def test_projection_holds(norm, epsilon):
    classifier = _classifier_with_batchnorm()
    x, eps, y = _batch(2)
    loss_of = classifier_noise_loss(classifier, BlurDenoiser(), x, eps, y, sigma=0.5)
    # Steps far larger than the ball: only the projection keeps delta inside.
    strength = AttackStrength(steps=3, step_size=10.0, epsilon=epsilon, norm=norm, keep_best=False)
    with frozen(classifier):
        delta = worst_case_noise_shift(loss_of, x, strength)
    if norm == "linf":
        assert delta.abs().max() <= epsilon + 1e-6
        assert torch.isclose(delta.abs().max(), torch.tensor(epsilon))  # it reaches the boundary
    else:
        norms = delta.flatten(1).norm(dim=1)
        assert torch.all(norms <= epsilon + 1e-5) and torch.allclose(norms, torch.full_like(norms, epsilon))


def test_unbounded_linf_step_is_exactly_eta_sign():
    classifier = _classifier_with_batchnorm()
    x, eps, y = _batch(3)
    loss_of = classifier_noise_loss(classifier, IdentityDenoiser(), x, eps, y, sigma=0.5)
    strength = AttackStrength(steps=1, step_size=0.1, epsilon=None, norm="linf", keep_best=False)
    with frozen(classifier):
        delta = worst_case_noise_shift(loss_of, x, strength)
        d = torch.zeros_like(x, requires_grad=True)
        grad = torch.autograd.grad(loss_of(d).sum(), d)[0]
    torch.testing.assert_close(delta, 0.1 * grad.sign())


def test_inner_loop_leaves_classifier_untouched():
    classifier = _classifier_with_batchnorm()
    x, eps, y = _batch(4)
    # Give every parameter a known .grad, as if an outer backward had just happened.
    F.cross_entropy(classifier(x), y).backward()
    params = {k: v.detach().clone() for k, v in classifier.named_parameters()}
    grads = {k: v.grad.clone() for k, v in classifier.named_parameters()}
    buffers = {k: v.clone() for k, v in classifier.named_buffers()}
    loss_of = classifier_noise_loss(classifier, BlurDenoiser(), x, eps, y, sigma=0.5)
    with frozen(classifier):
        worst_case_noise_shift(loss_of, x, AttackStrength(steps=3, step_size=0.1, epsilon=0.3))
    for k, p in classifier.named_parameters():
        assert torch.equal(p, params[k]) and torch.equal(p.grad, grads[k]) and p.requires_grad
    for k, b in classifier.named_buffers():
        assert torch.equal(b, buffers[k]), f"buffer {k} changed during the attack"
    assert classifier.training, "train mode must be restored after the attack"


def test_attack_strength_validates():
    with pytest.raises(ValueError, match="norm"):
        AttackStrength(norm="l1")
    with pytest.raises(ValueError, match="epsilon"):
        AttackStrength(epsilon=-1.0)
