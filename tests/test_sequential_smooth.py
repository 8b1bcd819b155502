"""Smooth.certify_sequential against closed forms: constant and linear classifiers, both select modes."""

from __future__ import annotations

import pytest
import torch
from scipy.stats import norm

from ddsx.smoothing import ABSTAIN, Smooth, example_generator, sequential_plan
from ddsx.smoothing import noise as noise_module
from tests.test_smoothing import Constant, Linear2

SIGMA = 0.5
RADII = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)


@pytest.fixture(scope="module")
def plan(tmp_path_factory: pytest.TempPathFactory):
    return sequential_plan(SIGMA, RADII, 1e-3, 10_000, 100, cache_dir=tmp_path_factory.mktemp("plan"))


def linear_case(true_radius: float, seed: int = 3) -> tuple[Smooth, torch.Tensor]:
    """A linear two-class classifier and an input of class 1 at l2 distance ``true_radius`` from the boundary."""
    w = torch.randn(16, generator=torch.Generator().manual_seed(seed))
    x = torch.rand(1, 4, 4, generator=torch.Generator().manual_seed(seed + 1))
    b = true_radius * w.norm().item() - float(x.flatten() @ w)
    return Smooth(Linear2(w, b), num_classes=2, sigma=SIGMA), x


def test_constant_classifier_certifies_every_radius_all_hits_can_reach(plan) -> None:
    smooth = Smooth(Constant(2, 4), num_classes=4, sigma=SIGMA)
    cert = smooth.certify_sequential(
        torch.rand(1, 2, 2), plan, label=2, batch_size=64, generator=example_generator(0, 0)
    )
    # All hits: r_k is certifiable within n_max = 10,000 iff p_k^n_max <= 0.8 alpha (the CP look; Cohen's
    # constant-classifier radius sigma * PhiInv((0.8 alpha)^(1/n)) = 1.51 here), so up to r = 1.5.
    reachable = [r for r in RADII if norm.cdf(r / SIGMA) ** plan.n_max <= 0.8 * plan.alpha]
    assert reachable == [0.0, 0.25, 0.5, 0.75, 1.0, 1.5]
    assert cert.prediction == 2 and cert.radius == 1.5
    assert cert.certified == (True,) * 6 + (False,)
    assert cert.count == cert.samples < plan.n_max and cert.n0 == 0


def test_constant_classifier_of_another_class_abstains_after_one_check(plan) -> None:
    smooth = Smooth(Constant(2, 4), num_classes=4, sigma=SIGMA)
    cert = smooth.certify_sequential(
        torch.rand(1, 2, 2), plan, label=1, batch_size=64, generator=example_generator(0, 0)
    )
    assert (cert.prediction, cert.radius, cert.count, cert.samples) == (ABSTAIN, 0.0, 0, plan.check_times[0])
    # n0 mode picks the constant's class instead.
    cert = smooth.certify_sequential(
        torch.rand(1, 2, 2), plan, n0=10, batch_size=64, generator=example_generator(0, 0)
    )
    assert cert.prediction == 2 and cert.n0 == 10


@pytest.mark.parametrize(("true_radius", "expected"), [(0.62, 0.5), (1.2, 1.0), (0.1, 0.0)])
def test_linear_classifier_certifies_the_grid_radius_below_the_true_radius(
    plan, true_radius, expected
) -> None:
    smooth, x = linear_case(true_radius)
    for mode in ({"label": 1}, {"n0": 100}):
        cert = smooth.certify_sequential(x, plan, **mode, batch_size=500, generator=example_generator(0, 7))
        assert cert.prediction == 1
        assert cert.radius == expected <= true_radius
        assert cert.samples < plan.n_max
        assert cert.certified == tuple(r <= expected for r in RADII)


def test_linear_classifier_of_the_other_class_is_not_certified_for_label_1(plan) -> None:
    smooth, x = linear_case(-0.3)  # class 0 with radius 0.3: label 1 has probability Phi(-0.6) < 1/2
    cert = smooth.certify_sequential(x, plan, label=1, batch_size=500, generator=example_generator(0, 7))
    assert cert.prediction == ABSTAIN and cert.radius == 0.0
    assert (
        smooth.certify_sequential(
            x, plan, n0=100, batch_size=500, generator=example_generator(0, 7)
        ).prediction
        == 0
    )


@pytest.mark.parametrize("mode", [{"label": 1}, {"n0": 30}])
def test_result_does_not_depend_on_batch_size(plan, monkeypatch: pytest.MonkeyPatch, mode) -> None:
    # Blocks of 10 samples, so batches cut blocks, glue several together and straddle their ends.
    monkeypatch.setitem(noise_module.NOISE_BLOCK_ELEMENTS, "cpu", 160)
    smooth, x = linear_case(0.74)  # close to r = 0.75: runs long enough to see many batches
    results = {
        bs: smooth.certify_sequential(x, plan, **mode, batch_size=bs, generator=example_generator(1, 5))
        for bs in (7, 64, 100, 333, 10_000)
    }
    assert len(set(results.values())) == 1, results
    assert results[7].samples > 1000


def test_a_test_run_to_the_budget_sees_the_same_noise_as_fixed_n_certify(tmp_path) -> None:
    # One check at n_max: the sequential test uses all n_max copies, which must be the copies CERTIFY
    # with n = n_max draws after the same n0 (same generator, same blocks).
    one_look = sequential_plan(SIGMA, RADII, 1e-3, 2_000, 2_000, cache_dir=tmp_path)
    smooth, x = linear_case(0.4)
    seq = smooth.certify_sequential(x, one_look, n0=50, batch_size=300, generator=example_generator(2, 9))
    fixed = smooth.certify(x, n0=50, n=2_000, alpha=1e-3, batch_size=700, generator=example_generator(2, 9))
    assert seq.samples == 2_000
    assert seq.count == fixed.count
    assert seq.prediction == fixed.prediction == 1


def test_rejects_bad_arguments(plan) -> None:
    smooth, x = linear_case(0.5)
    with pytest.raises(ValueError, match="exactly one"):
        smooth.certify_sequential(x, plan, batch_size=10)
    with pytest.raises(ValueError, match="exactly one"):
        smooth.certify_sequential(x, plan, label=1, n0=10, batch_size=10)
    with pytest.raises(ValueError, match="label"):
        smooth.certify_sequential(x, plan, label=2, batch_size=10)
    with pytest.raises(ValueError, match="batch_size"):
        smooth.certify_sequential(x, plan, label=1, batch_size=0)
    other = Smooth(smooth.base_classifier, num_classes=2, sigma=0.25)
    with pytest.raises(ValueError, match="sigma"):
        other.certify_sequential(x, plan, label=1, batch_size=10)
