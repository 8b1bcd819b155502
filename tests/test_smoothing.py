"""Smooth.certify / predict against closed forms (docs/method.md section 4)."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import binomtest, norm
from torch import nn

from ddsx.smoothing import (
    ABSTAIN,
    Smooth,
    example_generator,
    example_seed,
    lower_confidence_bound,
)


class Linear2(nn.Module):
    """Two-class linear classifier: class 1 iff w.x + b > 0. Its smoothed version has true l2
    radius |w.x + b| / ||w|| and top-class probability Phi(|w.x + b| / (sigma ||w||))."""

    def __init__(self, w: torch.Tensor, b: float) -> None:
        super().__init__()
        self.w, self.b = w, b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x.flatten(1) @ self.w + self.b
        return torch.stack([-z, z], dim=1)


class Constant(nn.Module):
    def __init__(self, label: int, num_classes: int) -> None:
        super().__init__()
        self.label, self.num_classes = label, num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(len(x), self.num_classes, device=x.device)
        logits[:, self.label] = 1.0
        return logits


class Alternating(nn.Module):
    """Labels the noisy copies of each batch 0, 1, 0, 1, ...: an exact tie for even counts."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        labels = torch.arange(len(x)) % 2
        return nn.functional.one_hot(labels, 3).float()


class Threshold(nn.Module):
    """Class 3 when pixel 0 of the noisy image is above 0 (probability Phi(x0 / sigma)), else class 1."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        labels = torch.where(x.flatten(1)[:, 0] > 0, 3, 1)
        return nn.functional.one_hot(labels, 5).float()


@pytest.mark.parametrize(("n", "expected"), [(100_000, 3.81), (10_000, 3.20)])
def test_constant_classifier_reaches_the_largest_certifiable_radius(n: int, expected: float) -> None:
    sigma, alpha = 0.5, 0.001
    smooth = Smooth(Constant(2, 4), num_classes=4, sigma=sigma)
    cert = smooth.certify(
        torch.rand(1, 2, 2), n0=100, n=n, alpha=alpha, batch_size=n, generator=example_generator(0, 0)
    )
    assert cert.prediction == 2
    assert cert.count == n
    assert cert.radius == pytest.approx(sigma * norm.ppf(alpha ** (1 / n)), rel=1e-9)
    assert cert.radius / sigma == pytest.approx(expected, abs=0.005)


def test_certified_radius_exceeds_the_true_radius_no_more_often_than_alpha() -> None:
    # Small n and a large alpha make violations plausible; a sound bound keeps their rate <= alpha.
    torch.manual_seed(0)
    sigma, alpha, n0, n, cases, dim = 0.5, 0.1, 20, 100, 1000, 16
    violations = 0
    for case in range(cases):
        w = torch.randn(dim)
        x = torch.rand(1, 4, 4)
        p_top = 0.55 + 0.44 * torch.rand(()).item()
        margin = sigma * norm.ppf(p_top) * (1 if case % 2 else -1)  # signed distance to the boundary
        b = margin * w.norm().item() - float(x.flatten() @ w)
        true_class, true_radius = int(margin > 0), abs(margin)
        smooth = Smooth(Linear2(w, b), num_classes=2, sigma=sigma)
        cert = smooth.certify(x, n0, n, alpha, batch_size=64, generator=example_generator(1, case))
        if cert.prediction != ABSTAIN and (cert.prediction != true_class or cert.radius > true_radius):
            violations += 1
    # H0: violation rate <= alpha. Reject only on strong evidence (p < 0.001) that it is larger.
    assert binomtest(violations, cases, alpha, alternative="greater").pvalue > 0.001
    assert violations > 0, "no violation at all: the check has no power (bound far too loose?)"


def test_certified_radius_is_close_to_the_true_radius_at_large_n() -> None:
    sigma, true_radius = 0.25, 0.25 * norm.ppf(0.9)
    w = torch.randn(16, generator=torch.Generator().manual_seed(3))
    x = torch.rand(1, 4, 4, generator=torch.Generator().manual_seed(4))
    b = true_radius * w.norm().item() - float(x.flatten() @ w)
    smooth = Smooth(Linear2(w, b), num_classes=2, sigma=sigma)
    cert = smooth.certify(x, 100, 100_000, 0.001, batch_size=20_000, generator=example_generator(0, 7))
    assert cert.prediction == 1
    assert cert.radius <= true_radius
    assert cert.radius == pytest.approx(true_radius, rel=0.03)


def test_predict_abstains_on_an_exact_tie() -> None:
    smooth = Smooth(Alternating(), num_classes=3, sigma=0.25)
    assert smooth.predict(torch.rand(1, 3, 3), n=1000, alpha=0.001, batch_size=100) == ABSTAIN


def test_predict_returns_the_dominant_class() -> None:
    x = torch.zeros(1, 2, 2)
    x[0, 0, 0] = 0.5  # class 3 with probability Phi(0.5 / 0.25) = 0.977
    smooth = Smooth(Threshold(), num_classes=5, sigma=0.25)
    assert smooth.predict(x, n=1000, alpha=0.001, batch_size=256, generator=example_generator(0, 1)) == 3
    cert = smooth.certify(x, 50, 1000, 0.001, 256, generator=example_generator(0, 1))
    assert cert.prediction == 3 and cert.radius > 0


def test_certify_abstains_when_no_class_has_half_the_mass() -> None:
    x = torch.zeros(1, 2, 2)  # class 3 with probability exactly 1/2
    cert = Smooth(Threshold(), 5, 0.25).certify(x, 50, 2000, 0.001, 500, generator=example_generator(0, 2))
    assert cert.prediction == ABSTAIN and cert.radius == 0.0
    assert cert.p_lower < 0.5


def test_counts_do_not_depend_on_batch_size() -> None:
    w = torch.randn(16, generator=torch.Generator().manual_seed(0))
    smooth = Smooth(Linear2(w, 0.0), num_classes=2, sigma=1.0)
    x = torch.rand(1, 4, 4)
    counts = [smooth.sample_counts(x, 5003, bs, example_generator(5, 9)) for bs in (1, 7, 1000, 5003, 10_000)]
    assert int(counts[0].sum()) == 5003
    for other in counts[1:]:
        assert torch.equal(counts[0], other)


def test_lower_confidence_bound_closed_forms() -> None:
    assert lower_confidence_bound(0, 10, 0.05) == 0.0
    assert lower_confidence_bound(10, 10, 0.05) == pytest.approx(0.05 ** (1 / 10), rel=1e-12)
    # One success in one trial: Beta(1, 1) is uniform, so the bound is alpha itself.
    assert lower_confidence_bound(1, 1, 0.2) == pytest.approx(0.2)


def test_example_seed_is_deterministic_and_distinct() -> None:
    assert example_seed(0, 5) == example_seed(0, 5)
    seeds = {example_seed(s, i) for s in range(3) for i in range(1000)}
    assert len(seeds) == 3000
    a = torch.randn(10, generator=example_generator(0, 5))
    assert torch.equal(a, torch.randn(10, generator=example_generator(0, 5)))
    assert not torch.equal(a, torch.randn(10, generator=example_generator(0, 6)))


def test_autocast_runs_and_keeps_counts_valid() -> None:
    smooth = Smooth(nn.Sequential(nn.Flatten(), nn.Linear(16, 3)), 3, 0.25, autocast_dtype="bfloat16")
    counts = smooth.sample_counts(torch.rand(1, 4, 4), 300, 64, example_generator(0, 0))
    assert counts.dtype == torch.long and int(counts.sum()) == 300


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"n0": 0}, "n0"),
        ({"n": 0}, "n"),
        ({"alpha": 1.0}, "alpha"),
        ({"batch_size": 0}, "batch_size"),
        ({"n": 1.5}, "n"),
    ],
)
def test_certify_rejects_bad_budgets(kwargs: dict, field: str) -> None:
    args = {"n0": 10, "n": 100, "alpha": 0.001, "batch_size": 10} | kwargs
    with pytest.raises(ValueError, match=field):
        Smooth(Constant(0, 2), 2, 0.25).certify(torch.rand(1, 2, 2), **args)


def test_smooth_rejects_bad_construction_and_wrong_logits() -> None:
    with pytest.raises(ValueError, match="sigma"):
        Smooth(Constant(0, 2), 2, 0.0)
    with pytest.raises(ValueError, match="num_classes"):
        Smooth(Constant(0, 2), 1, 0.25)
    with pytest.raises(ValueError, match=r"logits \(N, 3\)"):
        Smooth(Constant(0, 2), 3, 0.25).sample_counts(torch.rand(1, 2, 2), 10, 10)
    assert math.isclose(Smooth(Constant(0, 2), 2, 1).sigma, 1.0)
