"""The one-shot quality of a denoiser: how far D(x + sigma eps) lands from the clean x, relative to the noise.

The l2 ratio ||D(x + sigma eps) - x|| / ||sigma eps|| per image is what a trained denoiser's quality.json
records (0 = perfect, 1 = no better than the noisy image). Comparing two denoisers on the same digits
and the same noise makes their ratios paired.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def l2_distances(
    denoiser: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, noise: torch.Tensor, sigma: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(||D(x + sigma noise) - x||, ||sigma noise||) per image, for clean [0,1] images x (N, C, H, W)."""
    noisy = x + sigma * noise
    with torch.no_grad():
        denoised = denoiser(noisy)
    return (denoised - x).flatten(1).norm(dim=1), (noisy - x).flatten(1).norm(dim=1)


def l2_ratios(
    denoiser: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, noise: torch.Tensor, sigma: float
) -> torch.Tensor:
    """||D(x + sigma noise) - x|| / ||sigma noise|| per image (N,)."""
    denoised, noisy = l2_distances(denoiser, x, noise, sigma)
    return denoised / noisy


def compare_to_teacher(
    student: Callable[[torch.Tensor], torch.Tensor],
    teacher: Callable[[torch.Tensor], torch.Tensor],
    ode_solution: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    noise: torch.Tensor,
    sigma: float,
    batch_size: int = 100,
) -> dict[str, float]:
    """Mean one-shot l2 ratios of a student and its teacher on the same noisy images, and how far each
    lands from the teacher's multi-step ODE solution (||D(x~) - ODE(x~)|| / ||sigma noise||).

    The teacher's one-shot output is the l2-optimal posterior mean, so a one-step student that follows
    the ODE to a sharp image has a larger l2 ratio than the teacher, and a smaller gap to the ODE."""
    sums = dict.fromkeys(("l2_ratio", "teacher_l2_ratio", "ode_gap", "teacher_ode_gap"), 0.0)
    for start in range(0, x.shape[0], batch_size):
        xb, nb = x[start : start + batch_size], noise[start : start + batch_size]
        noisy = xb + sigma * nb
        with torch.no_grad():
            outputs = {"": student(noisy), "teacher_": teacher(noisy)}
            reference = ode_solution(noisy)
        scale = (sigma * nb).flatten(1).norm(dim=1)
        for prefix, out in outputs.items():
            sums[f"{prefix}l2_ratio"] += float(((out - xb).flatten(1).norm(dim=1) / scale).sum())
            sums[f"{prefix}ode_gap"] += float(((out - reference).flatten(1).norm(dim=1) / scale).sum())
    means = {key: value / x.shape[0] for key, value in sums.items()}
    return means | {"ratio_to_teacher": means["l2_ratio"] / means["teacher_l2_ratio"]}
