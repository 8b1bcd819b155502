"""The DDS t* rule against values computed by hand from the closed-form schedules (not by ddsx code)."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import DDPMScheduler

from ddsx.denoisers.schedule import (
    achieved_sigma,
    alphas_cumprod_from_scheduler_config,
    betas_cosine,
    betas_linear,
    t_star_for_sigma,
)

SIGMAS = [0.12, 0.25, 0.5, 1.0]


def _linear_abar_by_hand(T: int = 1000, start: float = 1e-4, end: float = 0.02) -> list[float]:
    """abar_t = prod_{i <= t} (1 - beta_i), beta_i = start + i (end - start) / (T - 1), in plain Python."""
    abar, out = 1.0, []
    for i in range(T):
        abar *= 1.0 - (start + i * (end - start) / (T - 1))
        out.append(abar)
    return out


def _cosine_f(u: float, s: float = 0.008) -> float:
    return math.cos((u + s) / (1 + s) * math.pi / 2) ** 2


def _cosine_t_star_by_hand(sigma: float, T: int) -> int:
    """The cosine schedule telescopes: abar_t = f((t+1)/T) / f(0) (no beta capping below the last step).

    (1 - abar)/abar = 4 sigma^2  <=>  f((t+1)/T) = f(0) / (1 + 4 sigma^2); solve for a real t, then take
    whichever neighbouring integer has the nearer noise level.
    """
    target = math.sqrt(_cosine_f(0) / (1 + 4 * sigma**2))
    t_real = (math.acos(target) / (math.pi / 2) * 1.008 - 0.008) * T - 1

    def level(t: int) -> float:
        a = _cosine_f((t + 1) / T) / _cosine_f(0)
        return math.sqrt((1 - a) / a)

    return min((math.floor(t_real), math.ceil(t_real)), key=lambda t: abs(level(t) - 2 * sigma))


@pytest.mark.parametrize(("sigma", "expected"), [(0.12, 70), (0.25, 144), (0.5, 258), (1.0, 396)])
def test_t_star_linear_schedule(sigma, expected):
    """DDPM / guided-diffusion linear schedule, T = 1000: the hand values, and a brute-force scan agrees."""
    abar = _linear_abar_by_hand()
    levels = [math.sqrt((1 - a) / a) for a in abar]
    scanned = min(range(len(levels)), key=lambda t: abs(levels[t] - 2 * sigma))
    assert scanned == expected
    assert t_star_for_sigma(betas_to_abar(betas_linear(1000, 1e-4, 0.02)), sigma) == expected
    assert t_star_for_sigma(torch.tensor(abar), sigma) == expected


@pytest.mark.parametrize("T", [1000, 4000])
@pytest.mark.parametrize("sigma", SIGMAS)
def test_t_star_cosine_schedule(sigma, T):
    """improved-diffusion cosine schedule (T = 4000 is the CIFAR-10 model's) against the closed form."""
    expected = _cosine_t_star_by_hand(sigma, T)
    assert t_star_for_sigma(betas_to_abar(betas_cosine(T)), sigma) == expected
    known = {
        (0.25, 1000): 289,
        (0.5, 1000): 495,
        (1.0, 1000): 701,
        (0.25, 4000): 1158,
        (0.5, 4000): 1983,
        (1.0, 4000): 2809,
    }
    if (sigma, T) in known:
        assert expected == known[(sigma, T)]


@pytest.mark.parametrize(("sigma", "at_least", "nearest"), [(0.12, 573, 572), (0.5, 1984, 1983)])
def test_t_star_rules_on_the_cifar10_cosine_schedule(sigma, at_least, nearest):
    """CIFAR-10's 4000-step cosine schedule: "at_least" (Carlini et al.'s code: the first t whose noise
    level reaches 2 sigma) is one step after "nearest" here; a plain scan of the closed form agrees."""
    T = 4000
    levels = [math.sqrt((1 - a) / a) for a in (_cosine_f((t + 1) / T) / _cosine_f(0) for t in range(T))]
    assert next(t for t, level in enumerate(levels) if level >= 2 * sigma) == at_least
    assert min(range(T), key=lambda t: abs(levels[t] - 2 * sigma)) == nearest
    abar = betas_to_abar(betas_cosine(T))
    assert t_star_for_sigma(abar, sigma, "at_least") == at_least
    assert t_star_for_sigma(abar, sigma, "nearest") == nearest
    assert t_star_for_sigma(abar, sigma) == nearest  # the default
    with pytest.raises(ValueError, match="t_star_rule"):
        t_star_for_sigma(abar, sigma, "ceil")


def test_achieved_sigma_is_half_the_model_scale_noise():
    abar = betas_to_abar(betas_linear(1000, 1e-4, 0.02))
    t = t_star_for_sigma(abar, 0.5)
    a = _linear_abar_by_hand()[t]
    assert achieved_sigma(abar, t) == pytest.approx(math.sqrt((1 - a) / a) / 2, rel=1e-9)
    assert achieved_sigma(abar, t) == pytest.approx(0.5, abs=0.005)


def test_sigma_out_of_range_fails_clearly():
    abar = betas_to_abar(betas_linear(100, 1e-4, 0.02))  # a short schedule: max noise ~0.66 pixel units
    with pytest.raises(ValueError, match="beyond this diffusion schedule's largest noise"):
        t_star_for_sigma(abar, 1.0)
    with pytest.raises(ValueError, match=">= 0"):
        t_star_for_sigma(abar, -0.1)
    assert t_star_for_sigma(abar, 0.0) == 0


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(beta_schedule="linear"),
        dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012),
        dict(beta_schedule="squaredcos_cap_v2"),
        dict(beta_schedule="linear", num_train_timesteps=4000, beta_start=0.000025, beta_end=0.005),
    ],
)
def test_scheduler_config_schedule_matches_diffusers(kwargs):
    scheduler = DDPMScheduler(**kwargs)
    ours = alphas_cumprod_from_scheduler_config(dict(scheduler.config))
    assert ours.dtype == torch.float64
    torch.testing.assert_close(ours.float(), scheduler.alphas_cumprod, rtol=1e-4, atol=1e-6)


def betas_to_abar(betas: torch.Tensor) -> torch.Tensor:
    return torch.cumprod(1 - betas, 0)
