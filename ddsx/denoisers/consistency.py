"""A one-step consistency denoiser (Song et al. 2023, "Consistency Models") on a DDPM's noise schedule.

Coordinates. On the [-1, 1] image scale a DDPM's x_t = sqrt(abar_t) y + sqrt(1 - abar_t) eps is, divided
by sqrt(abar_t), z = y + s_t eps with s_t = sqrt((1 - abar_t) / abar_t) (``schedule.noise_levels``). A
smoothing-noisy image 2 x_noisy - 1 = y + 2 sigma eps is such a z at s = 2 sigma: the DDS picture. In z
the probability-flow ODE is dz/ds = eps(z, s) (the posterior-mean noise), and a DDIM step (eta = 0) from
s to s' is exactly its Euler step z' = z - (s - s') eps(z, s).

The consistency function maps any point of an ODE trajectory to its end at s_min = s_{t_min}:

    f_theta(z, s) = c_skip(s) z + c_out(s) F_theta(z, s),   c_skip(s) = 1,   c_out(s) = -(s - s_min)
    F_theta(z, s) = the UNet's epsilon output at x_t = z / sqrt(1 + s^2), timestep t

so f(z, s_min) = z exactly (c_out(s_min) = 0), for any weights. F is the trajectory's mean noise between
s_min and s (integrating the ODE gives z(s_min) = z(s) - int eps ds): a student initialised from the
DDPM starts as the one-step Euler solution (DDS's one-shot rule up to s_min), and distillation teaches it
the whole trajectory. This c_skip/c_out pair (instead of Song et al.'s EDM pair, which is 0.2 z + ... at
s = 1) keeps that warm start; any pair with c_skip(s_min) = 1, c_out(s_min) = 0 is a consistency model.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ddsx.denoisers.dds import DiffusionDenoiser
from ddsx.denoisers.schedule import noise_levels
from ddsx.models.identity import records_arguments

# What the folder's consistency.json names, so a later change of the formula cannot load old weights.
PARAMETRISATION = "f = z - (s - s_min) * eps_theta(z / sqrt(1 + s^2), t)"


def c_skip(s: torch.Tensor, s_min: float) -> torch.Tensor:
    """The skip coefficient: 1 everywhere (see the module docstring)."""
    return torch.ones_like(s)


def c_out(s: torch.Tensor, s_min: float) -> torch.Tensor:
    """The output coefficient: -(s - s_min), 0 at the boundary s_min."""
    return -(s - s_min)


def consistency_function(
    unet: nn.Module, z: torch.Tensor, t: torch.Tensor, levels: torch.Tensor, s_min: float
) -> torch.Tensor:
    """f(z, s_t) for z (N, C, H, W) on the [-1,1] scale at integer timesteps t (N,).

    ``levels`` (T,) holds s_t for every timestep (float, on z's device); ``s_min`` is s at the boundary.
    """
    s = levels[t].to(z.dtype).view(-1, *([1] * (z.dim() - 1)))
    out = unet(z / torch.sqrt(1.0 + s * s), t)
    eps = getattr(out, "sample", out)[:, : z.shape[1]]  # the first C channels if it also predicts variance
    return c_skip(s, s_min) * z + c_out(s, s_min) * eps


class ConsistencyDenoiser(DiffusionDenoiser):
    """One-shot denoiser f(2 x_noisy - 1, s_t*) of a distilled consistency model.

    Everything but the model call is the DDS denoiser's (t* from sigma, the resolution fitting, the
    [0,1] contract, ``describe``); one model call, no DDIM path. t* must lie in the distilled range
    [t_min, t_max]: beyond t_max the model was never trained, so ``set_sigma`` refuses such a sigma.

    Args (the others as ``DiffusionDenoiser``'s):
        unet: the student UNet (epsilon-style output ``F``, see the module docstring).
        t_min, t_max: the boundary timestep and the largest timestep distillation covered.
    """

    # sigma is retuned (set_sigma) and compared as certify.sigma and t*, as for the DDS denoiser.
    @records_arguments(uncompared=("sigma",))
    def __init__(
        self,
        unet: nn.Module,
        alphas_cumprod: torch.Tensor,
        sigma: float,
        *,
        t_min: int,
        t_max: int,
        resolution: str = "auto",
        interpolation: str = "bilinear",
        pad_mode: str = "reflect",
        pad_value: float = 0.0,
        output_size: Any = None,
        clip: bool = True,
        name: str = "consistency",
        t_star_rule: str = "nearest",
    ) -> None:
        steps = int(torch.as_tensor(alphas_cumprod).numel())
        if not 0 <= int(t_min) < int(t_max) < steps:
            raise ValueError(
                f"need 0 <= t_min < t_max < {steps} (the schedule's length), got {t_min}, {t_max}"
            )
        self.t_min, self.t_max = int(t_min), int(t_max)
        super().__init__(
            unet,
            alphas_cumprod,
            sigma,
            resolution=resolution,
            interpolation=interpolation,
            pad_mode=pad_mode,
            pad_value=pad_value,
            output_size=output_size,
            clip=clip,
            learn_sigma=None,
            name=name,
            t_star_rule=t_star_rule,
        )
        levels = noise_levels(self._alphas_cumprod)
        self._s_min = float(levels[self.t_min])
        self._levels = levels.float()  # a plain tensor like the schedule: moved to z's device per call

    def set_sigma(self, sigma: float) -> None:
        super().set_sigma(sigma)
        if not self.t_min < self.t_star <= self.t_max:
            raise ValueError(
                f"sigma={sigma} needs t*={self.t_star}, outside the range (t_min={self.t_min}, "
                f"t_max={self.t_max}] this consistency model was distilled on: distil it with a larger "
                "distill.sigma_max, or use a smaller sigma"
            )

    def describe(self) -> dict[str, Any]:
        return super().describe() | {
            "t_min": self.t_min,
            "t_max": self.t_max,
            "parametrisation": PARAMETRISATION,
        }

    def _denoise_model_scale(
        self, y_noisy: torch.Tensor, reverse_noise: torch.Tensor | None = None, eta: float = 1.0
    ) -> torch.Tensor:
        """y_noisy = 2 x_noisy - 1 is z at s_t* (up to t*'s rounding): one consistency-function call.

        A consistency model has no stochastic reverse path to walk, so reverse noise is refused."""
        if reverse_noise is not None:
            raise ValueError("a consistency denoiser is one deterministic call: it takes no reverse noise")
        t = torch.full((y_noisy.shape[0],), self.t_star, dtype=torch.long, device=y_noisy.device)
        x0 = consistency_function(self.unet, y_noisy, t, self._levels.to(y_noisy.device), self._s_min)
        return x0.clamp(-1.0, 1.0) if self.clip else x0
