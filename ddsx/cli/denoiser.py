"""ddsx-denoiser: train a DDPM denoiser on a ddsx dataset (mode=train), check a trained one against its
quality target (mode=check), convert an OpenAI ADM checkpoint to a diffusers folder (mode=convert), or
distil a trained DDPM into a one-step consistency model (mode=distill).

A trained denoiser's folder holds quality.json: the one-shot DDS l2 ratio per validation sigma, the
epochs and steps trained, the target (``quality`` in the config) and whether it is met. ``make run``
reuses a denoiser only when it is. Wiring only; the work lives in ddsx.denoisers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from ddsx.cli import CONF_DIR
from ddsx.cli.errors import DDSXError, console_script, expected_errors
from ddsx.cli.wiring import experiment_loggers, instantiate_nodes, offline_wandb_by_default
from ddsx.data.from_config import build_datamodule
from ddsx.denoisers.adm import convert_adm_checkpoint
from ddsx.denoisers.consistency_distill import ConsistencyDistillation
from ddsx.denoisers.consistency_folder import save_consistency_folder
from ddsx.denoisers.dds import DiffusionDenoiser
from ddsx.denoisers.folder import save_diffusers_folder
from ddsx.denoisers.load import find_diffusers_parts, load_diffusers_denoiser
from ddsx.denoisers.quality import compare_to_teacher
from ddsx.denoisers.resolution import as_size
from ddsx.sweeps.threads import limit_threads
from ddsx.utils.finite_settings import check_finite_settings
from ddsx.utils.logging import get_logger
from ddsx.utils.run_config import resolved_container, save_resolved_config

log = get_logger(__name__)

MODES = ("train", "check", "convert", "distill")
QUALITY_FILE = "quality.json"


def build_denoiser_training(cfg: DictConfig) -> tuple[L.LightningDataModule, L.LightningModule, L.Trainer]:
    """Data module, DDPMModule and Trainer from the config (tests call this with composed configs)."""
    L.seed_everything(cfg.seed, workers=True)
    datamodule = build_datamodule(cfg.dataset)
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
        callbacks=instantiate_nodes(cfg.get("callbacks")),
        logger=experiment_loggers(cfg),
    )
    return datamodule, module, trainer


def train_denoiser(cfg: DictConfig) -> dict[str, Any]:
    """Fit (resuming from ``ckpt_path``), then save the EMA weights as a diffusers folder; returns metrics."""
    offline_wandb_by_default()
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
        quality = denoiser_quality(cfg, metrics, trainer)
        (dst / QUALITY_FILE).write_text(json.dumps(quality, indent=2) + "\n")
        log.info("saved the EMA denoiser to %s (load it with denoiser.path=%s)", dst, dst)
        log.info("%s", quality_summary(quality))
    metrics["save_dir"] = str(dst)
    return metrics


def denoiser_quality(cfg: DictConfig, metrics: dict[str, float], trainer: L.Trainer) -> dict[str, Any]:
    """What quality.json records: l2 ratio per sigma, epochs/steps trained, the target, how to continue."""
    target = cfg.get("quality") or {}
    ratios = {
        key.split("@", 1)[1]: value for key, value in metrics.items() if key.startswith("val/l2_ratio@")
    }
    sigma, max_ratio = float(target.get("sigma", 0.5)), float(target.get("max_l2_ratio", 0.3))
    min_steps = int(target.get("min_steps", 0))
    ratio = ratios.get(f"{sigma:g}")
    meets = ratio is not None and ratio <= max_ratio and trainer.global_step >= min_steps
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    epochs_needed = int(target.get("epochs", trainer.current_epoch))
    return {
        "l2_ratio": ratios,
        "epochs": trainer.current_epoch,
        "steps": trainer.global_step,
        "target": {
            "sigma": sigma,
            "max_l2_ratio": max_ratio,
            "min_steps": min_steps,
            "epochs": epochs_needed,
        },
        "meets_target": bool(meets) and not trainer.fast_dev_run,
        "continue_with": f"ddsx-denoiser ckpt_path={last.resolve()} trainer.max_epochs={epochs_needed}",
    }


def quality_summary(quality: dict[str, Any]) -> str:
    """One line: the measured quality against the target."""
    target = quality["target"]
    ratio = quality["l2_ratio"].get(f"{target['sigma']:g}")
    shown = "?" if ratio is None else f"{ratio:.3f}"
    verdict = "meets" if quality.get("meets_target") else "is BELOW"
    return (
        f"denoiser quality: l2 ratio {shown} at sigma {target['sigma']:g} after {quality['steps']} steps "
        f"({quality['epochs']} epochs); it {verdict} the target (ratio <= {target['max_l2_ratio']:g}, "
        f">= {target['min_steps']} steps)"
    )


def check(cfg: DictConfig) -> dict[str, Any]:
    """``mode=check``: refuse (exit 2) a denoiser folder without quality.json or below its target."""
    folder = Path(cfg.save_dir)
    path = folder / QUALITY_FILE
    if not path.is_file():
        raise DDSXError(
            f"{folder} has no {QUALITY_FILE}: its quality is unknown. Train it with `ddsx-denoiser` "
            f"(or delete the folder and run `make run` again)"
        )
    try:
        quality = json.loads(path.read_text())
        summary = quality_summary(quality)
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise DDSXError(f"{path} is not a quality record written by ddsx-denoiser ({error})") from error
    if not quality.get("meets_target"):
        raise DDSXError(
            f"{folder}: {summary}. Continue its training with `{quality.get('continue_with')}`, "
            f"or delete the folder to train a new one"
        )
    log.info("%s: %s", folder, summary)
    return quality


def convert(cfg: DictConfig) -> Path:
    """``mode=convert``: OpenAI checkpoint ``convert.src`` of ``convert.family`` -> diffusers folder ``convert.dst``."""
    model = cfg.convert.get("model")
    overrides = OmegaConf.to_container(model, resolve=True) if model else {}
    return convert_adm_checkpoint(cfg.convert.src, cfg.convert.dst, cfg.convert.family, overrides)  # type: ignore[arg-type]


def distill(cfg: DictConfig) -> dict[str, Any]:
    """``mode=distill``: consistency distillation of the DDPM folder ``distill.teacher``; saves the EMA
    student with consistency.json and quality.json (its one-shot l2 ratio against the teacher's on the
    test digits) to ``distill.save_dir``."""
    offline_wandb_by_default()
    L.seed_everything(cfg.seed, workers=True)
    settings = cfg.distill
    # The teacher loads (and is checked) as the DDS denoiser it is; a consistency folder is refused there.
    teacher = load_diffusers_denoiser(settings.teacher, sigma=float(settings.quality.sigma))
    scheduler_config = json.loads(find_diffusers_parts(settings.teacher)[1].read_text())
    datamodule = build_datamodule(cfg.dataset)
    datamodule.setup("fit")
    module = ConsistencyDistillation(
        teacher.unet,
        teacher.alphas_cumprod,
        optimizer=hydra.utils.instantiate(cfg.optimizer, lr=settings.lr),
        sigma_max=settings.sigma_max,
        num_intervals=settings.num_intervals,
        target_ema_decay=settings.target_ema_decay,
        distance=settings.distance,
        val_sigmas=list(settings.val_sigmas),
        seed=cfg.seed,
    )
    log.info(
        "consistency distillation of %s: t %d..%d in %d intervals",
        settings.teacher,
        module.t_min,
        module.t_max,
        len(module.grid) - 1,
    )
    trainer = hydra.utils.instantiate(
        cfg.trainer,
        max_steps=settings.max_steps,
        max_epochs=-1,
        callbacks=instantiate_nodes(cfg.get("callbacks")),
        logger=experiment_loggers(cfg),
    )
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    dst = Path(cfg.paths.output_dir) / "denoiser" if trainer.fast_dev_run else Path(settings.save_dir)
    if trainer.is_global_zero:
        quality = consistency_quality(cfg, module, teacher, datamodule, trainer)
        save_consistency_folder(
            module.target.cpu(),
            scheduler_config,
            dst,
            module.t_min,
            module.t_max,
            metadata={
                "trained_by": "ddsx-denoiser mode=distill",
                "teacher": str(settings.teacher),
                "weights": f"EMA student (decay {module.target_ema_decay:g})",
                "steps": trainer.global_step,
                "metrics": metrics,
                "config": resolved_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "convert"])),
            },
        )
        (dst / QUALITY_FILE).write_text(json.dumps(quality, indent=2) + "\n")
        log.info(
            "saved the consistency denoiser to %s (load it with denoiser=consistency denoiser.path=%s)",
            dst,
            dst,
        )
        log.info("%s", quality_summary(quality))
    return metrics | {"save_dir": str(dst)}


def consistency_quality(
    cfg: DictConfig,
    module: ConsistencyDistillation,
    teacher: DiffusionDenoiser,
    datamodule: Any,
    trainer: L.Trainer,
) -> dict[str, Any]:
    """quality.json of a distilled model: the one-shot l2 ratios of student and teacher on the first
    ``num_digits`` test digits (same noise), the student's target as a ratio to the teacher's, and the
    gap of each to the teacher's ``ode_steps``-step ODE solution. ``mode=check`` reads it like a DDPM's."""
    target = cfg.distill.quality
    sigma = float(target.sigma)
    datamodule.setup("test")
    images = torch.cat([batch[0] for batch in datamodule.test_dataloader()])[: int(target.num_digits)]
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(int(cfg.seed)))
    module = module.cpu()
    teacher.set_sigma(sigma)
    ode = DiffusionDenoiser(
        teacher.unet, teacher.alphas_cumprod, sigma, num_steps=int(target.ode_steps), clip=False
    )
    measured = compare_to_teacher(module.consistency_denoiser(sigma), teacher, ode, images, noise, sigma)
    max_ratio = float(target.max_ratio_to_teacher)
    min_steps = int(target.get("min_steps", 0))
    meets = measured["ratio_to_teacher"] <= max_ratio and trainer.global_step >= min_steps
    return {
        "l2_ratio": {f"{sigma:g}": measured["l2_ratio"]},
        "teacher_l2_ratio": {f"{sigma:g}": measured["teacher_l2_ratio"]},
        "ratio_to_teacher": {f"{sigma:g}": measured["ratio_to_teacher"]},
        "ode_gap": {f"{sigma:g}": measured["ode_gap"]},
        "teacher_ode_gap": {f"{sigma:g}": measured["teacher_ode_gap"]},
        "digits": int(images.shape[0]),
        "ode_steps": int(target.ode_steps),
        "epochs": trainer.current_epoch,
        "steps": trainer.global_step,
        "target": {
            "sigma": sigma,
            # what mode=check compares the student's l2 ratio with: the teacher's, times the allowed factor
            "max_l2_ratio": max_ratio * measured["teacher_l2_ratio"],
            "max_ratio_to_teacher": max_ratio,
            "min_steps": min_steps,
        },
        "meets_target": bool(meets) and not trainer.fast_dev_run,
        "continue_with": f"ddsx-denoiser mode=distill ckpt_path={(Path(cfg.paths.output_dir) / 'checkpoints' / 'last.ckpt').resolve()} distill.max_steps=<more>",
    }


def run(cfg: DictConfig) -> Any:
    if cfg.mode not in MODES:
        raise DDSXError(f"mode must be one of {MODES}, got {cfg.mode!r}")
    # The other mode's required keys (convert.src) stay unresolved in train mode, and vice versa.
    if cfg.mode == "check":
        return check(cfg)
    keep = ["mode", "paths", "convert"] if cfg.mode == "convert" else [k for k in cfg if k != "convert"]
    save_resolved_config(OmegaConf.masked_copy(cfg, keep), cfg.paths.output_dir)
    if cfg.mode == "distill":
        return distill(cfg)
    return train_denoiser(cfg) if cfg.mode == "train" else convert(cfg)


@console_script
@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="ddsx_denoiser")
@expected_errors
def main(cfg: DictConfig) -> None:
    check_finite_settings(cfg)  # before any work
    limit_threads()  # jobs running side by side share the cores
    run(cfg)


if __name__ == "__main__":
    main()
