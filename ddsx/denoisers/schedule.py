"""Noise schedules and the DDS rule that picks the diffusion timestep t* for a smoothing sigma.

Conventions (DDPM, diffusers and OpenAI ADM agree): ``alphas_cumprod[t]`` (abar_t) is the signal
fraction after t + 1 noising steps, x_t = sqrt(abar_t) * y + sqrt(1 - abar_t) * eps for an image
y in [-1, 1], and the UNet is called with the integer index t.

Smoothing adds N(0, sigma^2) in [0,1] pixel units; on the [-1,1] scale that is 2 * sigma, and
x_t / sqrt(abar_t) = y + sqrt((1 - abar_t) / abar_t) * eps, so t* is the t whose
sqrt((1 - abar_t) / abar_t) is nearest 2 * sigma (docs/method.md section 1).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ddsx.errors import DDSXError

# Schedules computed here in float64 (as OpenAI's numpy code does); others go through diffusers.
KNOWN_BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")


def noise_levels(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """sqrt((1 - abar_t) / abar_t) for every t: (T,) float64, the noise std on the [-1,1] scale."""
    abar = torch.as_tensor(alphas_cumprod, dtype=torch.float64).flatten()
    return torch.sqrt((1.0 - abar) / abar)


T_STAR_RULES = ("nearest", "at_least")


def t_star_for_sigma(alphas_cumprod: torch.Tensor, sigma: float, rule: str = "nearest") -> int:
    """The DDS timestep for pixel-unit noise ``sigma``.

    rule "nearest": argmin_t |sqrt((1-abar_t)/abar_t) - 2 sigma| (docs/method.md section 1).
    rule "at_least": the first t whose noise level sqrt((1-abar_t)/abar_t) is >= 2 sigma, as Carlini et
    al.'s code picks it (one step later than "nearest" whenever the level just below is the nearer).

    Raises ValueError for an unknown rule, a negative sigma, or one beyond the schedule's largest
    noise (then no timestep of this model ever saw that much noise and one-shot denoising is
    meaningless).
    """
    if rule not in T_STAR_RULES:
        raise ValueError(f"t_star_rule must be one of {T_STAR_RULES}, got {rule!r}")
    sigma = float(sigma)
    if not math.isfinite(sigma) or sigma < 0:
        raise ValueError(f"sigma must be a finite number >= 0 (pixel units), got {sigma}")
    levels = noise_levels(alphas_cumprod)
    largest = float(levels.max())
    if 2.0 * sigma > largest:
        raise ValueError(
            f"sigma={sigma} is beyond this diffusion schedule's largest noise: its noisiest timestep "
            f"has sqrt((1-abar)/abar)/2 = {largest / 2:.4g} in pixel units ({len(levels)} timesteps). "
            "Use a smaller sigma or a model trained with a longer/noisier schedule."
        )
    if rule == "at_least":
        return int(torch.nonzero(levels >= 2.0 * sigma)[0, 0])
    return int(torch.argmin(torch.abs(levels - 2.0 * sigma)))


def achieved_sigma(alphas_cumprod: torch.Tensor, t: int) -> float:
    """The pixel-unit noise level that timestep t denoises: sqrt((1 - abar_t) / abar_t) / 2."""
    return float(noise_levels(alphas_cumprod)[int(t)]) / 2.0


def betas_linear(num_steps: int, beta_start: float, beta_end: float) -> torch.Tensor:
    """DDPM's linear schedule (float64), as OpenAI's ``np.linspace(beta_start, beta_end, T)``."""
    return torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64)


def betas_cosine(num_steps: int, max_beta: float = 0.999, s: float = 0.008) -> torch.Tensor:
    """Nichol & Dhariwal's cosine schedule (improved-diffusion; diffusers ``squaredcos_cap_v2``).

    abar(u) = cos((u + s) / (1 + s) * pi / 2)^2 and beta_i = min(1 - abar((i+1)/T) / abar(i/T), max_beta).
    """

    def abar(u: float) -> float:
        return math.cos((u + s) / (1 + s) * math.pi / 2) ** 2

    betas = [min(1 - abar((i + 1) / num_steps) / abar(i / num_steps), max_beta) for i in range(num_steps)]
    return torch.tensor(betas, dtype=torch.float64)


def alphas_cumprod_from_betas(betas: torch.Tensor) -> torch.Tensor:
    return torch.cumprod(1.0 - betas.to(torch.float64), dim=0)


# No published diffusion model is trained on more than a few thousand steps; the bound keeps a hostile
# scheduler_config.json from asking for gigabytes of schedule (30 M steps took 2.3 GB) before any check.
MAX_TRAIN_TIMESTEPS = 100_000


class SchedulerConfigError(DDSXError, ValueError):
    """A scheduler config with a value out of sane bounds; the message names the field (and file)."""


def check_scheduler_config(config: Any, source: str | Path = "the scheduler config") -> None:
    """Refuse a scheduler config (a parsed scheduler_config.json) whose schedule fields are out of bounds.

    The file is data from anywhere: every field the schedule is built from is checked before it is
    used, so no value can make ddsx allocate without limit or feed a UNet timesteps it never saw.
    """

    def refuse(field: str, value: Any, why: str) -> SchedulerConfigError:
        shown = repr(value) if len(repr(value)) <= 40 else f"{type(value).__name__} of {len(value)} items"
        return SchedulerConfigError(f"{source}: {field}={shown} is refused: {why}")

    if not isinstance(config, Mapping):
        raise SchedulerConfigError(
            f"{source}: a scheduler config must be a JSON object, got {type(config).__name__}"
        )
    steps = config.get("num_train_timesteps", 1000)
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= MAX_TRAIN_TIMESTEPS:
        raise refuse("num_train_timesteps", steps, f"it must be an integer from 1 to {MAX_TRAIN_TIMESTEPS:,}")
    for field in ("beta_start", "beta_end"):
        if field in config and not _is_beta(config[field]):
            raise refuse(field, config[field], "a beta must be a number in (0, 1)")
    trained = config.get("trained_betas")
    if trained is not None:
        if not isinstance(trained, list) or not 1 <= len(trained) <= MAX_TRAIN_TIMESTEPS:
            raise refuse("trained_betas", trained, f"it must be a list of 1 to {MAX_TRAIN_TIMESTEPS:,} betas")
        bad = next((i for i, beta in enumerate(trained) if not _is_beta(beta)), None)
        if bad is not None:
            raise refuse(f"trained_betas[{bad}]", trained[bad], "a beta must be a number in (0, 1)")


def _is_beta(value: Any) -> bool:
    """A noise-schedule beta: a real number strictly between 0 and 1 (NaN fails both comparisons)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < 1


def alphas_cumprod_from_scheduler_config(
    config: Mapping[str, Any], source: str | Path = "the scheduler config"
) -> torch.Tensor:
    """abar (T,) float64 from a diffusers scheduler config (scheduler_config.json as a dict).

    The config is checked first (:func:`check_scheduler_config`; ``source`` names it in errors).
    DDPM-family schedules are recomputed in float64 (diffusers keeps float32, which can move t* by
    one step at near-ties against the original float64 schedules); anything else is delegated to
    the diffusers scheduler class named in the config.
    """
    check_scheduler_config(config, source)
    num_steps = int(config.get("num_train_timesteps", 1000))
    trained = config.get("trained_betas")
    schedule = config.get("beta_schedule", "linear")
    if trained is not None:
        betas = torch.as_tensor(trained, dtype=torch.float64)
    elif schedule == "linear":
        betas = betas_linear(
            num_steps, float(config.get("beta_start", 1e-4)), float(config.get("beta_end", 0.02))
        )
    elif schedule == "scaled_linear":
        start, end = float(config.get("beta_start", 1e-4)), float(config.get("beta_end", 0.02))
        betas = betas_linear(num_steps, start**0.5, end**0.5) ** 2
    elif schedule == "squaredcos_cap_v2":
        betas = betas_cosine(num_steps)
    else:
        return _alphas_cumprod_via_diffusers(config)
    if config.get("rescale_betas_zero_snr"):
        # Zero terminal SNR makes abar_T = 0 (infinite noise); diffusers knows how to build it.
        return _alphas_cumprod_via_diffusers(config)
    return alphas_cumprod_from_betas(betas)


def _alphas_cumprod_via_diffusers(config: Mapping[str, Any]) -> torch.Tensor:
    import diffusers

    name = config.get("_class_name", "DDPMScheduler")
    cls = getattr(diffusers, str(name), None)
    if cls is None:
        raise ValueError(f"unknown diffusers scheduler class {name!r} in the scheduler config")
    scheduler = cls.from_config(dict(config))
    abar = getattr(scheduler, "alphas_cumprod", None)
    if abar is None:
        raise ValueError(
            f"scheduler {name} has no alphas_cumprod: DDS needs a DDPM-style (variance-preserving) schedule"
        )
    return torch.as_tensor(abar, dtype=torch.float64)
