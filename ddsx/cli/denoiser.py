"""ddsx-denoiser: train a DDPM denoiser on a ddsx dataset (mode=train), or convert an OpenAI ADM
checkpoint to a diffusers folder (mode=convert). Pure wiring; the work lives in ddsx.denoisers."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from omegaconf import DictConfig, OmegaConf

from ddsx.cli import CONF_DIR
from ddsx.cli.errors import console_script, expected_errors
from ddsx.cli.train import instantiate_dict
from ddsx.denoisers.adm import convert_adm_checkpoint
from ddsx.denoisers.folder import save_diffusers_folder
from ddsx.denoisers.resolution import as_size
from ddsx.utils.logging import get_logger
from ddsx.utils.run_config import resolved_container, save_resolved_config

log = get_logger(__name__)

MODES = ("train", "convert")


def build_denoiser_training(cfg: DictConfig) -> tuple[L.LightningDataModule, L.LightningModule, L.Trainer]:
    """Data module, DDPMModule and Trainer from the config (tests call this with composed configs)."""
    L.seed_everything(cfg.seed, workers=True)
    datamodule = hydra.utils.instantiate(cfg.dataset)
    channels, height, width = (int(v) for v in datamodule.image_shape)  # known before setup
    size = as_size(cfg.module.get("image_size")) or (height, width)
    levels = len(cfg.denoiser_model.get("block_out_channels", [0]))
    factor = 2 ** (levels - 1)
    if size[0] % factor or size[1] % factor:
        raise ValueError(
            f"a {levels}-level UNet needs image sides divisible by {factor}, but the training size is {size}: "
            f"set module.image_size to e.g. {-(-size[0] // factor) * factor} (images are resized to it)"
        )
    datamodule.setup("fit")  # fail on missing data before anything is written
    unet = hydra.utils.instantiate(
        cfg.denoiser_model,
        _convert_="all",  # diffusers writes its config as JSON: plain lists, not ListConfig
        sample_size=size[0] if size[0] == size[1] else list(size),
        in_channels=channels,
        out_channels=channels,
    )
    module = hydra.utils.instantiate(
        cfg.module,
        _convert_="all",
        unet=unet,
        noise_scheduler=hydra.utils.instantiate(cfg.noise_scheduler, _convert_="all"),
        optimizer=hydra.utils.instantiate(cfg.optimizer),
        scheduler=hydra.utils.instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
    )
    trainer = hydra.utils.instantiate(
        cfg.trainer,
        callbacks=instantiate_dict(cfg.get("callbacks")),
        logger=instantiate_dict(cfg.get("logger")),
    )
    return datamodule, module, trainer


def train_denoiser(cfg: DictConfig) -> dict[str, Any]:
    """Fit (resuming from ``ckpt_path``), then save the EMA weights as a diffusers folder; returns metrics."""
    os.environ.setdefault("WANDB_MODE", "offline")
    datamodule, module, trainer = build_denoiser_training(cfg)
    n_params = sum(p.numel() for p in module.unet.parameters())
    log.info(
        "DDPM on %s: UNet %.2fM parameters, t* range for DDS sampling %s",
        type(datamodule).__name__,
        n_params / 1e6,
        module.dds_t_range,
    )
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    # A smoke run must never overwrite a real denoiser: it goes to the run folder instead.
    dst = Path(cfg.paths.output_dir) / "denoiser" if trainer.fast_dev_run else Path(cfg.save_dir)
    if trainer.is_global_zero:
        train_config = resolved_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "convert"]))
        save_diffusers_folder(
            module.ema_unet,
            module.noise_scheduler,
            dst,
            metadata={
                "trained_by": "ddsx-denoiser",
                "weights": "EMA",
                "epochs": trainer.current_epoch,
                "steps": trainer.global_step,
                "metrics": metrics,
                "config": train_config,
            },
        )
        log.info("saved the EMA denoiser to %s (load it with denoiser.path=%s)", dst, dst)
    metrics["save_dir"] = str(dst)
    return metrics


def convert(cfg: DictConfig) -> Path:
    """``mode=convert``: OpenAI checkpoint ``convert.src`` of ``convert.family`` -> diffusers folder ``convert.dst``."""
    model = cfg.convert.get("model")
    overrides = OmegaConf.to_container(model, resolve=True) if model else {}
    return convert_adm_checkpoint(cfg.convert.src, cfg.convert.dst, cfg.convert.family, overrides)  # type: ignore[arg-type]


def run(cfg: DictConfig) -> Any:
    if cfg.mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {cfg.mode!r}")
    # The other mode's required keys (convert.src) stay unresolved in train mode, and vice versa.
    keep = [k for k in cfg if k != "convert"] if cfg.mode == "train" else ["mode", "paths", "convert"]
    save_resolved_config(OmegaConf.masked_copy(cfg, keep), cfg.paths.output_dir)
    return train_denoiser(cfg) if cfg.mode == "train" else convert(cfg)


@console_script
@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="ddsx_denoiser")
@expected_errors
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
