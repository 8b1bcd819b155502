"""The UNet's noise estimate at t* beside the noise that truly produced its input (docs/method.md sections 1-2).

DDS feeds the UNet x_t = sqrt(abar) * (2 (x + sigma eps) - 1) at t = t*. Written as the forward
process of the diffusion model, x_t = sqrt(abar) * y0 + sqrt(1 - abar) * eps_true with y0 = 2 x - 1,
the noise that produced x_t is

    eps_true = 2 sigma sqrt(abar / (1 - abar)) * eps

which is eps itself when t* matches sigma exactly (sqrt((1 - abar) / abar) = 2 sigma) and off by the
rounding of t* otherwise. The misestimation is then ||eps_theta(x_t, t*) - eps_true||^2 per pixel.
Both are taken on the model's grid (after the denoiser's padding or resizing): the noise there is
(fit(x + sigma eps) - fit(x)) / sigma, which is exact for any linear fit (reflect padding, bilinear).
"""

from __future__ import annotations

import torch

from ddsx.denoisers.dds import DiffusionDenoiser


def noise_at_t_star(
    denoiser: DiffusionDenoiser, x: torch.Tensor, eps: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(eps_theta(x_t, t*), eps_true) for clean [0,1] images ``x`` and the pixel-unit noise draw ``eps``.

    The prediction is the model's epsilon, also for sample- or v-predicting models (converted by the
    usual identities, unclipped), so it compares with eps_true the same way for every model.
    """
    sigma = denoiser.sigma
    t_star = denoiser.t_star
    abar = float(denoiser.alphas_cumprod[t_star])
    clean, _ = denoiser.to_model_grid(x)
    noisy, _ = denoiser.to_model_grid(x + sigma * eps)
    x_t = abar**0.5 * (2.0 * noisy - 1.0)
    eps_true = (2.0 * (abar / (1.0 - abar)) ** 0.5) * (noisy - clean)  # = 2 sigma sqrt(abar/(1-abar)) eps
    timestep = torch.full((x_t.shape[0],), t_star, dtype=torch.long, device=x_t.device)
    out = denoiser._model_call(x_t, timestep)
    s, s1 = abar**0.5, (1.0 - abar) ** 0.5
    if denoiser.prediction_type == "epsilon":
        predicted = out
    elif denoiser.prediction_type == "sample":  # out = x0: eps = (x_t - sqrt(abar) x0) / sqrt(1 - abar)
        predicted = (x_t - s * out) / s1
    else:  # v = sqrt(abar) eps - sqrt(1 - abar) x0  =>  eps = sqrt(1 - abar) x_t + sqrt(abar) v
        predicted = s1 * x_t + s * out
    return predicted, eps_true
