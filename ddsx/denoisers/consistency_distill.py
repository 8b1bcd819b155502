"""Consistency distillation (Song et al. 2023, Algorithm 2) of a trained DDPM, as a LightningModule.

The timesteps t_min = t_0 < t_1 < ... < t_N = t_max (integers of the teacher's schedule, evenly spaced)
discretise the probability-flow ODE. Each training step, per image y (on the [-1,1] scale):

    n ~ U{0, ..., N-1},  z_{n+1} = y + s_{n+1} eps
    z_n^  = z_{n+1} - (s_{n+1} - s_n) eps_teacher(z_{n+1}, t_{n+1})       one DDIM / Euler step of the teacher
    loss  = d( f_theta(z_{n+1}, t_{n+1}),  f_theta-(z_n^, t_n) )           theta- the EMA student, no gradient

with f the consistency function of ``ddsx.denoisers.consistency`` (f(z, t_0) = z, so the chain is anchored
at the boundary) and d the mean squared error ("l2") or the pseudo-Huber distance
sqrt(||a - b||^2 + c^2) - c, c = 0.00054 sqrt(dim) (Song & Dhariwal 2023). The student and its EMA start
as copies of the teacher. The EMA (``target_ema_decay``, mu) is both the target and what is saved.
Validation reports the one-shot l2 ratio of the EMA student and of the teacher's DDS one-shot on the
same noisy digits, and their quotient.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from torch import nn

from ddsx.denoisers.consistency import ConsistencyDenoiser, consistency_function
from ddsx.denoisers.dds import DiffusionDenoiser
from ddsx.denoisers.quality import l2_ratios
from ddsx.denoisers.schedule import noise_levels, t_star_for_sigma

OptimizerFactory = Callable[..., torch.optim.Optimizer]
DISTANCES = ("l2", "pseudo_huber")


def timestep_grid(t_min: int, t_max: int, num_intervals: int) -> list[int]:
    """t_0 = t_min < ... < t_N = t_max, evenly spaced integers (fewer when the range is short)."""
    if not 0 <= t_min < t_max:
        raise ValueError(f"need 0 <= t_min < t_max, got {t_min}, {t_max}")
    if num_intervals < 1:
        raise ValueError(f"num_intervals must be >= 1, got {num_intervals}")
    return [int(t) for t in np.unique(np.round(np.linspace(t_min, t_max, num_intervals + 1)).astype(int))]


def distance(a: torch.Tensor, b: torch.Tensor, kind: str) -> torch.Tensor:
    """Mean over the batch of the per-image distance between a and b (N, ...)."""
    diff = (a - b).flatten(1)
    if kind == "l2":
        return diff.pow(2).mean()
    if kind == "pseudo_huber":
        c = 0.00054 * math.sqrt(diff.shape[1])
        return (torch.sqrt(diff.pow(2).sum(1) + c * c) - c).mean()
    raise ValueError(f"distance must be one of {DISTANCES}, got {kind!r}")


class ConsistencyDistillation(L.LightningModule):
    """Distil ``teacher`` (an epsilon-prediction UNet on ``alphas_cumprod``) into a one-step student.

    Args:
        teacher: the DDPM's UNet (frozen here; the student and the EMA start as its copies).
        alphas_cumprod: (T,) the teacher's schedule.
        optimizer: partial taking ``params``.
        sigma_max: the largest smoothing sigma (pixel units) the student must serve: t_max is its t*.
        t_min: the boundary timestep (f(z, t_min) = z).
        num_intervals: N, the ODE discretisation between t_min and t_max.
        target_ema_decay: mu of the EMA student (the target and the saved weights).
        distance: "l2" or "pseudo_huber".
        val_sigmas: sigmas of the validation l2 ratios (those <= sigma_max).
        seed: fixes the validation noise.
    """

    def __init__(
        self,
        teacher: nn.Module,
        alphas_cumprod: torch.Tensor,
        optimizer: OptimizerFactory,
        sigma_max: float = 1.0,
        t_min: int = 0,
        num_intervals: int = 40,
        target_ema_decay: float = 0.95,
        distance: Literal["l2", "pseudo_huber"] = "pseudo_huber",
        val_sigmas: Sequence[float] = (0.25, 0.5, 1.0),
        seed: int = 0,
    ) -> None:
        super().__init__()
        if distance not in DISTANCES:
            raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")
        if not 0.0 <= target_ema_decay < 1.0:
            raise ValueError(f"target_ema_decay must be in [0, 1), got {target_ema_decay}")
        self.alphas_cumprod64 = torch.as_tensor(alphas_cumprod, dtype=torch.float64).flatten()
        self.t_min = int(t_min)
        self.t_max = t_star_for_sigma(self.alphas_cumprod64, sigma_max)
        self.grid = timestep_grid(self.t_min, self.t_max, int(num_intervals))
        levels = noise_levels(self.alphas_cumprod64)
        self.s_min = float(levels[self.t_min])
        self.register_buffer("levels", levels.float(), persistent=False)
        self.register_buffer("grid_t", torch.tensor(self.grid, dtype=torch.long), persistent=False)
        self.teacher = teacher.requires_grad_(False).eval()
        self.student = copy.deepcopy(teacher).requires_grad_(True)
        self.target = copy.deepcopy(teacher).requires_grad_(False).eval()
        self.optimizer_factory = optimizer
        self.target_ema_decay = float(target_ema_decay)
        self.distance = distance
        self.val_sigmas = [
            float(s) for s in val_sigmas if t_star_for_sigma(self.alphas_cumprod64, s) <= self.t_max
        ]
        self.seed = int(seed)

    # ----- the distillation step ---------------------------------------------------------------
    def f(self, unet: nn.Module, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return consistency_function(unet, z, t, self.levels, self.s_min)

    def teacher_step(self, z: torch.Tensor, t_from: torch.Tensor, t_to: torch.Tensor) -> torch.Tensor:
        """One Euler (= DDIM, eta 0) step of the probability-flow ODE from t_from to t_to, teacher's eps."""
        s_from = self.levels[t_from].view(-1, 1, 1, 1)
        s_to = self.levels[t_to].view(-1, 1, 1, 1)
        out = self.teacher(z / torch.sqrt(1.0 + s_from * s_from), t_from)
        eps = getattr(out, "sample", out)[:, : z.shape[1]]  # a diffusers output or a plain tensor
        return z - (s_from - s_to) * eps

    def distillation_loss(self, y: torch.Tensor, n: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The loss for images y (N, C, H, W) on the [-1,1] scale, grid indices n (N,) in [0, N-1]."""
        t_next, t_now = self.grid_t[n + 1], self.grid_t[n]
        z_next = y + self.levels[t_next].view(-1, 1, 1, 1) * noise
        with torch.no_grad():
            target = self.f(self.target, self.teacher_step(z_next, t_next, t_now), t_now)
        return distance(self.f(self.student, z_next, t_next), target, self.distance)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        y = 2.0 * batch[0] - 1.0
        n = torch.randint(0, len(self.grid) - 1, (y.shape[0],), device=y.device)
        loss = self.distillation_loss(y, n, torch.randn_like(y))
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=y.shape[0])
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        with torch.no_grad():  # theta- <- mu theta- + (1 - mu) theta
            for ema, live in zip(self.target.parameters(), self.student.parameters(), strict=True):
                ema.lerp_(live, 1.0 - self.target_ema_decay)

    def train(self, mode: bool = True) -> ConsistencyDistillation:
        super().train(mode)
        self.teacher.eval()  # neither the teacher nor the EMA is ever in training mode
        self.target.eval()
        return self

    def configure_optimizers(self) -> Any:
        return self.optimizer_factory(params=self.student.parameters())

    # ----- what is saved, and validation --------------------------------------------------------
    def consistency_denoiser(self, sigma: float) -> ConsistencyDenoiser:
        """The EMA student as the one-shot denoiser the saved folder loads as."""
        return ConsistencyDenoiser(
            self.target, self.alphas_cumprod64, sigma, t_min=self.t_min, t_max=self.t_max
        )

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x = batch[0]
        gen = torch.Generator().manual_seed(self.seed * 100_003 + batch_idx)
        noise = torch.randn(x.shape, generator=gen).to(x)
        for sigma in self.val_sigmas:
            student = l2_ratios(self.consistency_denoiser(sigma), x, noise, sigma).mean()
            teacher = l2_ratios(
                DiffusionDenoiser(self.teacher, self.alphas_cumprod64, sigma), x, noise, sigma
            ).mean()
            for name, value in (
                ("l2_ratio", student),
                ("teacher_l2_ratio", teacher),
                ("ratio_to_teacher", student / teacher),
            ):
                self.log(f"val/{name}@{sigma:g}", value, batch_size=x.shape[0])
