"""Diffusion denoised smoothing (Carlini et al., ICLR 2023): a pretrained diffusion model as denoiser.

One shot (default), for x_noisy = x + sigma * eps in [0,1] pixel units (docs/method.md section 1):

    t*   = argmin_t |sqrt((1 - abar_t) / abar_t) - 2 sigma|      (t_star_rule "nearest", the default;
           "at_least": the first t with sqrt((1 - abar_t) / abar_t) >= 2 sigma, as Carlini et al.'s code)
    x_t  = sqrt(abar_t*) * (2 x_noisy - 1)
    x0^  = clip((x_t - sqrt(1 - abar_t*) * eps_theta(x_t, t*)) / sqrt(abar_t*), -1, 1)
    D(x_noisy) = (x0^ + 1) / 2

``num_steps > 1`` instead runs deterministic DDIM (eta = 0) from t* down to 0 in that many model
calls; ``num_steps = 1`` is exactly the one-shot rule. Given ``reverse_noise`` (DensePure,
``ddsx.denoisers.densepure``), the same path is walked stochastically: DDIM's step with eta > 0,

    x_next = sqrt(abar_next) x0^ + sqrt(1 - abar_next - s^2) eps^ + s z,
    s = eta sqrt((1 - abar_next) / (1 - abar_t)) sqrt(1 - abar_t / abar_next),

which at eta = 1 on consecutive timesteps is DDPM's ancestral step (s^2 the posterior variance).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.utils.checkpoint
from torch import nn

from ddsx.denoisers.base import Denoiser
from ddsx.denoisers.resolution import PAD_MODES, RESOLUTION_MODES, as_size, fit_to_model, resize
from ddsx.denoisers.schedule import T_STAR_RULES, achieved_sigma, noise_levels, t_star_for_sigma
from ddsx.models.identity import records_arguments

PredictionType = Literal["epsilon", "sample", "v_prediction"]
PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")


class DiffusionDenoiser(Denoiser):
    """Frozen DDS denoiser around a diffusers ``UNet2DModel`` (or any module with that interface).

    Args:
        unet: ``unet(sample (N, C, S, S) in [-1,1]-scale, timestep (N,) long).sample`` -> (N, C or 2C, S, S).
            With 2C output channels ("learn_sigma", OpenAI ADM) the first C are the prediction.
        alphas_cumprod: (T,) the training schedule's abar_t.
        sigma: smoothing noise level in [0,1] pixel units; t* follows it (``set_sigma``).
        num_steps: 1 = one shot; k > 1 = k deterministic DDIM steps from t* to 0.
        prediction_type: what the UNet predicts: "epsilon" (DDPM, ADM), "sample" (x0) or "v_prediction".
        resolution: how inputs whose size differs from the model's (``unet.config.sample_size``) are
            fitted: "auto" (pad smaller inputs, resize larger ones), "resize" (interpolate there and
            back: correlates and shrinks the noise, so t* no longer matches it), "pad" (centre-pad,
            then crop back; only for smaller inputs) or "native" (feed as is: UNets are convolutional).
        interpolation: mode for "resize" and ``output_size`` (bilinear, bicubic, nearest).
        pad_mode: reflect (default: the padding then carries noise of the same level, which is what the
            model expects everywhere), replicate or constant (with ``pad_value`` in [0,1] pixel units).
        output_size: resize the denoised batch to this size (the classifier's input) instead of
            returning it at the input's resolution.
        clip: clip x0^ to [-1, 1] (the DDS rule); off only for experiments.
        learn_sigma: force (True/False) the "first half of the channels" rule; None infers it from the
            output's channel count.
        t_star_rule: "nearest" (the noise level nearest 2 sigma) or "at_least" (the first level >= 2 sigma,
            Carlini et al.'s code); recorded with t* by ``describe``.
        checkpointing: when a gradient flows through the denoiser to its input (dds_adv's attack),
            keep no UNet activations for the backward pass and recompute them there: one more UNet
            forward per backward for a fraction of the memory (ImageNet-size models). The same function.
    """

    # Every argument is part of the denoiser's identity in a result file but these two: sigma is
    # retuned (set_sigma) and compared as certify.sigma and t*; checkpointing computes the same function.
    @records_arguments(uncompared=("sigma", "checkpointing"))
    def __init__(
        self,
        unet: nn.Module,
        alphas_cumprod: torch.Tensor,
        sigma: float,
        *,
        num_steps: int = 1,
        prediction_type: PredictionType = "epsilon",
        resolution: Literal["auto", "resize", "pad", "native"] = "auto",
        interpolation: str = "bilinear",
        pad_mode: Literal["reflect", "replicate", "constant"] = "reflect",
        pad_value: float = 0.0,
        output_size: int | Sequence[int] | None = None,
        clip: bool = True,
        learn_sigma: bool | None = None,
        name: str = "dds",
        t_star_rule: str = "nearest",
        checkpointing: bool = False,
    ) -> None:
        super().__init__(sigma)
        if t_star_rule not in T_STAR_RULES:
            raise ValueError(f"t_star_rule must be one of {T_STAR_RULES}, got {t_star_rule!r}")
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")
        if resolution not in RESOLUTION_MODES:
            raise ValueError(f"resolution must be one of {RESOLUTION_MODES}, got {resolution!r}")
        if pad_mode not in PAD_MODES:
            raise ValueError(f"pad_mode must be one of {PAD_MODES}, got {pad_mode!r}")
        if int(num_steps) < 1:
            raise ValueError(f"num_steps must be >= 1 (1 = one-shot DDS), got {num_steps}")
        abar = torch.as_tensor(alphas_cumprod, dtype=torch.float64).detach().cpu().flatten()
        if abar.numel() < 1 or not bool(((abar > 0) & (abar <= 1)).all()):
            raise ValueError("alphas_cumprod must be a non-empty 1-D tensor with values in (0, 1]")
        self.unet = unet
        # A plain CPU float64 tensor, not a buffer: .half()/.to() on the module must not degrade it,
        # and only Python floats derived from it ever reach the device.
        self._alphas_cumprod = abar
        self.num_steps = int(num_steps)
        self.prediction_type = prediction_type
        self.resolution = resolution
        self.interpolation = interpolation
        self.pad_mode = pad_mode
        self.pad_value = float(pad_value)
        self.output_size = as_size(output_size)
        self.clip = bool(clip)
        self.learn_sigma = learn_sigma
        self.t_star_rule = t_star_rule
        self.checkpointing = bool(checkpointing)
        self.name = name
        self.source: str | None = None  # set by the loader: where the weights came from
        config = getattr(unet, "config", None)
        self.model_size = as_size(getattr(config, "sample_size", None)) if config is not None else None
        self.timesteps: list[int] = []
        self.freeze()
        self.set_sigma(sigma)

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        return self._alphas_cumprod.clone()

    def set_sigma(self, sigma: float) -> None:
        """Retune to pixel-unit ``sigma``: recompute t* (ValueError beyond the schedule's largest noise)."""
        t_star = t_star_for_sigma(self._alphas_cumprod, sigma, self.t_star_rule)
        self.sigma = float(sigma)
        self.t_star = t_star
        # DDIM path t* -> 0 in num_steps model calls (duplicates dropped when t* < num_steps - 1).
        path = np.unique(np.round(np.linspace(t_star, 0, self.num_steps)).astype(int))[::-1]
        self.timesteps = [int(t) for t in path]
        # abar at each of them as Python floats: no tensor read inside forward (torch.compile graph breaks).
        self._abar_path = [float(self._alphas_cumprod[t]) for t in self.timesteps]

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "t_star": self.t_star,
            "t_star_rule": self.t_star_rule,
            "achieved_sigma": achieved_sigma(self._alphas_cumprod, self.t_star),
            "sigma": self.sigma,
            "num_steps": len(self.timesteps),
            "timesteps": list(self.timesteps),
            "num_train_timesteps": int(self._alphas_cumprod.numel()),
            "max_sigma": float(noise_levels(self._alphas_cumprod).max()) / 2.0,
            "prediction_type": self.prediction_type,
            "resolution": self.resolution,
            "model_size": list(self.model_size) if self.model_size else None,
            "source": self.source,
        }

    # ----- the denoising -----------------------------------------------------------------------
    def forward(
        self, x_noisy: torch.Tensor, reverse_noise: torch.Tensor | None = None, eta: float = 1.0
    ) -> torch.Tensor:
        """Noisy [0,1] images (N, C, H, W) -> denoised [0,1] images (N, C, H, W) (or ``output_size``).

        Differentiable with respect to ``x_noisy``; runs in the UNet's dtype and device and returns
        the input's dtype and device. ``reverse_noise`` (N, *``reverse_noise_shape``) of standard
        normals makes the steps after t* stochastic with ``eta`` in (0, 1] (module docstring); None:
        deterministic DDIM, ``eta`` unused.
        """
        if x_noisy.dim() != 4:
            raise ValueError(
                f"DiffusionDenoiser expects (N, C, H, W) images, got shape {tuple(x_noisy.shape)}"
            )
        x, undo = self.to_model_grid(x_noisy)
        if reverse_noise is not None:
            expected = (x_noisy.shape[0], *self.reverse_noise_shape(tuple(x_noisy.shape[1:])))
            if tuple(reverse_noise.shape) != expected:
                raise ValueError(
                    f"reverse_noise must have shape {expected}, got {tuple(reverse_noise.shape)}"
                )
            if not 0.0 < float(eta) <= 1.0:
                raise ValueError(f"eta must be in (0, 1] for a stochastic reverse process, got {eta}")
            reverse_noise = reverse_noise.to(device=x.device, dtype=x.dtype)
        x0 = self._denoise_model_scale(2.0 * x - 1.0, reverse_noise, float(eta))
        out = undo((x0 + 1.0) / 2.0)
        if self.output_size is not None:
            out = resize(out, self.output_size, self.interpolation)
        # Bicubic resizing can overshoot [0,1] by a little; the contract is [0,1].
        return out.clamp(0.0, 1.0).to(device=x_noisy.device, dtype=x_noisy.dtype)

    def to_model_grid(self, images: torch.Tensor):
        """``images`` in the UNet's dtype, device and size (``resolution``), and the function undoing the size."""
        dtype, device = self._model_dtype_device(images)
        return fit_to_model(
            images.to(device=device, dtype=dtype),
            self.model_size,
            self.resolution,
            self.interpolation,
            self.pad_mode,
            self.pad_value,
        )

    def reverse_noise_shape(self, image_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The standard normals one stochastic reverse run of a (C, H, W) input takes: one model-grid
        image per step after t*, (len(timesteps) - 1, C, S, S)."""
        grid, _ = fit_to_model(
            torch.zeros((1, *image_shape)),
            self.model_size,
            self.resolution,
            self.interpolation,
            self.pad_mode,
            self.pad_value,
        )
        return (len(self.timesteps) - 1, *grid.shape[1:])

    def _denoise_model_scale(
        self, y_noisy: torch.Tensor, reverse_noise: torch.Tensor | None = None, eta: float = 0.0
    ) -> torch.Tensor:
        """y_noisy = 2 x_noisy - 1 (N, C, S, S) -> x0^ in [-1, 1] via t* (and DDIM steps after it)."""
        abar = self._abar_path
        x_t = abar[0] ** 0.5 * y_noisy
        x0 = y_noisy
        for i, t in enumerate(self.timesteps):
            a_t = abar[i]
            x0, eps = self._predict_x0_eps(x_t, t, a_t)
            if i + 1 < len(self.timesteps):
                a_next = abar[i + 1]
                if reverse_noise is None:
                    # Deterministic DDIM (eta = 0): move to the next timestep along the predicted noise.
                    x_t = a_next**0.5 * x0 + (1.0 - a_next) ** 0.5 * eps
                else:
                    s = eta * ((1.0 - a_next) / (1.0 - a_t) * (1.0 - a_t / a_next)) ** 0.5
                    x_t = (
                        a_next**0.5 * x0
                        + max(0.0, 1.0 - a_next - s * s) ** 0.5 * eps
                        + s * reverse_noise[:, i]
                    )
        return x0

    def _predict_x0_eps(self, x_t: torch.Tensor, t: int, a_t: float) -> tuple[torch.Tensor, torch.Tensor]:
        """One model call at timestep t: (x0^ clipped, the eps consistent with x0^ and x_t)."""
        timestep = torch.full((x_t.shape[0],), t, dtype=torch.long, device=x_t.device)
        if self.checkpointing and torch.is_grad_enabled() and x_t.requires_grad:
            out = torch.utils.checkpoint.checkpoint(self._model_call, x_t, timestep, use_reentrant=False)
        else:
            out = self._model_call(x_t, timestep)
        s, s1 = a_t**0.5, (1.0 - a_t) ** 0.5
        if self.prediction_type == "epsilon":
            x0 = (x_t - s1 * out) / s
        elif self.prediction_type == "sample":
            x0 = out
        else:  # v = sqrt(abar) eps - sqrt(1 - abar) x0  =>  x0 = sqrt(abar) x_t - sqrt(1 - abar) v
            x0 = s * x_t - s1 * out
        if self.clip:
            x0 = x0.clamp(-1.0, 1.0)
        # Recomputed from the clipped x0^ so a DDIM step stays on the line through x_t and x0^.
        eps = (x_t - s * x0) / s1 if s1 > 0 else torch.zeros_like(x_t)
        return x0, eps

    def _model_call(self, x_t: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        return self._prediction(self.unet(x_t, timestep), x_t.shape[1])

    def _prediction(self, output: Any, channels: int) -> torch.Tensor:
        """UNet output (diffusers output object, tuple or tensor) -> the (N, C, S, S) prediction."""
        out = getattr(output, "sample", output)
        if isinstance(out, (tuple, list)):
            out = out[0]
        learn_sigma = self.learn_sigma
        if learn_sigma is None:
            if out.shape[1] == channels:
                learn_sigma = False
            elif out.shape[1] == 2 * channels:
                learn_sigma = True
            else:
                raise ValueError(
                    f"the UNet returned {out.shape[1]} channels for a {channels}-channel input: expected "
                    f"{channels} (prediction) or {2 * channels} (prediction + learned variance)"
                )
        return out[:, :channels] if learn_sigma else out

    def _model_dtype_device(self, x: torch.Tensor) -> tuple[torch.dtype, torch.device]:
        param = next(self.unet.parameters(), None)
        if param is None:
            return x.dtype, x.device
        return param.dtype, param.device
