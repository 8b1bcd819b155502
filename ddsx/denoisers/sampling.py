"""Generating images from a DDPM (for the sample grids logged while training a denoiser)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn


@torch.no_grad()
def ddim_sample(
    unet: nn.Module,
    scheduler_config: Mapping[str, Any],
    num_images: int,
    image_shape: tuple[int, int, int],
    num_steps: int = 20,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Deterministic DDIM (eta = 0) from pure noise: (num_images, C, H, W) images in [0,1].

    A few dozen DDIM steps show whether the model learnt the data; full ancestral sampling would
    cost T model calls. ``generator`` (CPU) fixes the starting noise so grids are comparable across epochs.
    """
    from diffusers import DDIMScheduler

    param = next(unet.parameters())
    scheduler = DDIMScheduler.from_config(dict(scheduler_config), clip_sample=True)
    scheduler.set_timesteps(num_steps)
    x = torch.randn((num_images, *image_shape), generator=generator).to(
        device=param.device, dtype=param.dtype
    )
    channels = image_shape[0]
    for t in scheduler.timesteps:
        timestep = torch.full((num_images,), int(t), dtype=torch.long, device=x.device)
        eps = unet(x, timestep).sample[:, :channels]  # first half if the model also predicts variance
        x = scheduler.step(eps, t, x, eta=0.0).prev_sample
    return ((x + 1) / 2).clamp(0, 1).float().cpu()
