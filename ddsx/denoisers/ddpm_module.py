"""Training a DDPM (diffusers UNet2DModel + DDPMScheduler) as a LightningModule, for DDS on datasets
with no public diffusion model (the embedded mnist5k by default).

Loss: the standard epsilon-prediction MSE, ||eps_theta(sqrt(abar_t) y + sqrt(1-abar_t) eps, t) - eps||^2
with y = 2x - 1. Timesteps: uniform over [0, T) or, with ``timestep_sampling="dds"``, a fraction
``dds_fraction`` drawn uniformly from the t* range of the smoothing sigmas in ``dds_sigma_range`` (the only
timesteps one-shot DDS ever uses), the rest uniform so the model still generates images. EMA weights
are what validation, the sample grids and the saved folder use.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from diffusers.training_utils import EMAModel
from torch import nn

from ddsx.denoisers.dds import DiffusionDenoiser
from ddsx.denoisers.quality import l2_distances
from ddsx.denoisers.resolution import as_size, resize
from ddsx.denoisers.sampling import ddim_sample
from ddsx.denoisers.schedule import alphas_cumprod_from_scheduler_config, t_star_for_sigma
from ddsx.utils.logging import get_logger

log = get_logger(__name__)

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., torch.optim.lr_scheduler.LRScheduler]


class DDPMModule(L.LightningModule):
    """DDPM training with EMA weights, DDS validation metrics and a sample grid per validation epoch.

    Args:
        unet: diffusers ``UNet2DModel`` for the dataset's channels and (training) resolution.
        noise_scheduler: diffusers ``DDPMScheduler`` (its config is saved with the model).
        optimizer: partial taking ``params``; scheduler: optional partial taking ``optimizer`` (per epoch).
        ema_decay: EMA rate; diffusers' EMAModel warms it up as min(decay, k / (9 + k)) at step k >= 2
            (0 at the first step: the average starts as the weights), so short runs still average.
        timestep_sampling: "uniform" or "dds" (see the module docstring).
        dds_sigma_range: (min, max) pixel-unit sigmas whose t* range "dds" sampling concentrates on.
        dds_fraction: share of timesteps drawn from that range.
        image_size: train at this size (images resized) instead of the dataset's; None = dataset's.
        val_sigmas: sigmas at which validation reports the one-shot DDS l2 distance ratio.
        num_samples, sample_steps: size of the sample grid and its DDIM steps (0 samples = no grid).
        sample_dir: where grids are written as PNG (``<output_dir>/samples`` in ddsx-denoiser).
        seed: fixes validation noise and the grid's starting noise.
    """

    def __init__(
        self,
        unet: nn.Module,
        noise_scheduler: Any,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        ema_decay: float = 0.999,
        timestep_sampling: Literal["uniform", "dds"] = "dds",
        dds_sigma_range: Sequence[float] = (0.1, 1.0),
        dds_fraction: float = 0.8,
        image_size: int | Sequence[int] | None = None,
        val_sigmas: Sequence[float] = (0.25, 0.5, 1.0),
        num_samples: int = 32,
        sample_steps: int = 20,
        sample_dir: str | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if timestep_sampling not in ("uniform", "dds"):
            raise ValueError(f"timestep_sampling must be 'uniform' or 'dds', got {timestep_sampling!r}")
        if not 0.0 <= dds_fraction <= 1.0:
            raise ValueError(f"dds_fraction must be in [0, 1], got {dds_fraction}")
        if not 0.0 < ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1), got {ema_decay}")
        self.unet = unet
        # The EMA copy is a submodule, so Lightning checkpoints (and resuming) carry it.
        self.ema_unet = copy.deepcopy(unet).requires_grad_(False).eval()
        # diffusers' EMAModel does the update (through its public methods only); it is made at the start
        # of training from ema_unet, so a resumed run averages on from the checkpoint's weights.
        self.ema: EMAModel | None = None
        self.noise_scheduler = noise_scheduler
        self.scheduler_config = dict(noise_scheduler.config)
        self.alphas_cumprod64 = alphas_cumprod_from_scheduler_config(self.scheduler_config)
        self.register_buffer("alphas_cumprod", self.alphas_cumprod64.float(), persistent=False)
        self.num_train_timesteps = int(self.alphas_cumprod64.numel())
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.ema_decay = float(ema_decay)
        self.timestep_sampling = timestep_sampling
        lo, hi = sorted(float(s) for s in dds_sigma_range)
        self.dds_t_range = (
            t_star_for_sigma(self.alphas_cumprod64, lo),
            t_star_for_sigma(self.alphas_cumprod64, hi),
        )
        self.dds_fraction = float(dds_fraction)
        self.image_size = as_size(image_size)
        self.val_sigmas = [float(s) for s in val_sigmas]
        for s in self.val_sigmas:
            t_star_for_sigma(self.alphas_cumprod64, s)  # fail now, not after an epoch, if out of range
        self.num_samples, self.sample_steps = int(num_samples), int(sample_steps)
        self.sample_dir = Path(sample_dir) if sample_dir else None
        self.seed = int(seed)
        # Plain dict (not a submodule): the DDS wrappers share ema_unet and must not duplicate it in state_dict.
        self._val_denoisers: dict[float, DiffusionDenoiser] = {}

    # ----- training --------------------------------------------------------------------------
    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """[0,1] images -> the training resolution, still in [0,1]."""
        return resize(x, self.image_size) if self.image_size is not None else x

    def sample_timesteps(self, n: int, device: torch.device) -> torch.Tensor:
        """(n,) long timesteps: uniform, or mostly from the DDS t* range (see the module docstring)."""
        t = torch.randint(0, self.num_train_timesteps, (n,), device=device)
        if self.timestep_sampling == "dds" and self.dds_fraction > 0:
            lo, hi = self.dds_t_range
            focused = torch.randint(lo, hi + 1, (n,), device=device)
            t = torch.where(torch.rand(n, device=device) < self.dds_fraction, focused, t)
        return t

    def diffusion_loss(
        self, unet: nn.Module, x: torch.Tensor, t: torch.Tensor, noise: torch.Tensor
    ) -> torch.Tensor:
        """Epsilon-prediction MSE for clean [0,1] images x (N, C, H, W) at timesteps t (N,)."""
        x_t = self.noise_scheduler.add_noise(2 * x - 1, noise, t)  # sqrt(abar) y + sqrt(1 - abar) eps
        pred = unet(x_t, t).sample[:, : x.shape[1]]
        return F.mse_loss(pred, noise)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x = self.prepare(batch[0])
        t = self.sample_timesteps(x.shape[0], x.device)
        loss = self.diffusion_loss(self.unet, x, t, torch.randn_like(x))
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=x.shape[0])
        return loss

    def on_train_start(self) -> None:
        # The average starts from ema_unet (a checkpoint's when resumed, on the training device) and its
        # warm-up counter from the run's step count, so a resumed run continues the same schedule.
        self.ema = EMAModel(self.ema_unet.parameters(), decay=self.ema_decay, foreach=False)
        self.ema.load_state_dict({"optimization_step": int(self.global_step)})

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.ema.step(self.unet.parameters())
        self.ema.copy_to(self.ema_unet.parameters())
        with torch.no_grad():
            for ema, live in zip(self.ema_unet.buffers(), self.unet.buffers(), strict=True):
                ema.copy_(live)

    def train(self, mode: bool = True) -> DDPMModule:
        super().train(mode)
        self.ema_unet.eval()  # the average is never trained, so never in training mode (dropout)
        return self

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(params=self.unet.parameters())
        if self.scheduler_factory is None:
            return optimizer
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer=optimizer)},
        }

    # ----- validation: EMA loss and one-shot DDS quality ---------------------------------------
    def on_validation_epoch_start(self) -> None:
        self._val_denoisers = {
            s: DiffusionDenoiser(self.ema_unet, self.alphas_cumprod64, s, resolution="resize")
            for s in self.val_sigmas
        }

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x = batch[0]
        gen = torch.Generator().manual_seed(self.seed * 100_003 + batch_idx)
        noise = torch.randn(x.shape, generator=gen).to(x)
        t = torch.randint(0, self.num_train_timesteps, (x.shape[0],), generator=gen).to(x.device)
        n = x.shape[0]
        x_model = self.prepare(x)  # the training resolution, which may differ from the dataset's
        model_noise = torch.randn(x_model.shape, generator=gen).to(x)
        self.log(
            "val/loss",
            self.diffusion_loss(self.ema_unet, x_model, t, model_noise),
            batch_size=n,
            sync_dist=True,
        )
        for sigma, denoiser in self._val_denoisers.items():
            # the smoothing noise, at the dataset's resolution
            l2_denoised, l2_noisy = l2_distances(denoiser, x, noise, sigma)
            self.log(f"val/l2_denoised@{sigma:g}", l2_denoised.mean(), batch_size=n, sync_dist=True)
            self.log(f"val/l2_ratio@{sigma:g}", (l2_denoised / l2_noisy).mean(), batch_size=n, sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking or self.num_samples <= 0 or not self.trainer.is_global_zero:
            return
        self._write_grid(self.sample_grid(), f"samples_epoch{self.current_epoch:03d}")

    def sample_grid(self) -> torch.Tensor:
        """(3, H', W') grid of ``num_samples`` DDIM samples from the EMA model, fixed starting noise."""
        from torchvision.utils import make_grid

        config = self.ema_unet.config
        shape = (int(config.in_channels), *(as_size(config.sample_size) or (32, 32)))
        gen = torch.Generator().manual_seed(self.seed)
        images = ddim_sample(
            self.ema_unet, self.scheduler_config, self.num_samples, shape, self.sample_steps, gen
        )
        return make_grid(images, nrow=int(math.ceil(math.sqrt(self.num_samples))), padding=2, pad_value=0.5)

    def _write_grid(self, grid: torch.Tensor, name: str) -> None:
        from torchvision.utils import save_image

        if self.sample_dir is not None:
            self.sample_dir.mkdir(parents=True, exist_ok=True)
            save_image(grid, self.sample_dir / f"{name}.png")
        for logger in self.loggers:
            if hasattr(logger, "log_image"):  # W&B
                logger.log_image(key="samples", images=[grid], step=self.global_step)
            elif hasattr(getattr(logger, "experiment", None), "add_image"):  # TensorBoard
                logger.experiment.add_image("samples", grid, self.global_step)
