"""ddsx-train: pure wiring. Instantiate data, classifier, denoiser, method, callbacks, loggers and
trainer from the config, fit, test, done. Everything interesting lives in the objects."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
import lightning as L
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from ddsx.cli import CONF_DIR
from ddsx.cli.errors import console_script, expected_errors
from ddsx.cli.wiring import experiment_loggers, instantiate_nodes, offline_wandb_by_default
from ddsx.data.from_config import build_datamodule
from ddsx.loggers import closed_after
from ddsx.models.checkpoints import load_classifier, read_checkpoint
from ddsx.sweeps.threads import limit_threads
from ddsx.utils.finite_settings import check_finite_settings
from ddsx.utils.logging import get_logger
from ddsx.utils.run_config import resolved_container, save_resolved_config

log = get_logger(__name__)


def build_training(cfg: DictConfig) -> tuple[L.LightningDataModule, L.LightningModule, L.Trainer]:
    """Everything ``train`` runs, built from the config (tests call this with composed configs)."""
    L.seed_everything(cfg.seed, workers=True)
    for key in ("ckpt_path", "init_classifier"):  # a missing checkpoint is refused before any data loads
        if cfg.get(key) and not Path(cfg[key]).is_file():
            raise FileNotFoundError(f"no checkpoint file {cfg[key]} ({key})")
    datamodule = build_datamodule(cfg.dataset)
    # Fail on missing or malformed data now, before any run artefact (checkpoint, logs) exists.
    datamodule.setup("fit")
    num_classes, image_shape = datamodule.num_classes, tuple(datamodule.image_shape)
    classifier = hydra.utils.instantiate(cfg.classifier, num_classes=num_classes, in_channels=image_shape[0])
    if cfg.get("init_classifier"):
        # Start from (or, for method=dds, just use) a classifier trained by an earlier ddsx-train run.
        classifier.load_state_dict(load_classifier(cfg.init_classifier)[0].state_dict())
    denoiser = hydra.utils.instantiate(cfg.denoiser)
    model = hydra.utils.instantiate(
        cfg.method,
        classifier=classifier,
        denoiser=denoiser,
        num_classes=num_classes,
        optimizer=hydra.utils.instantiate(cfg.optimizer),
        scheduler=hydra.utils.instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
    )
    model.run_config = resolved_container(cfg) | {
        "data_shape": {"num_classes": num_classes, "image_shape": list(image_shape)}
    }
    loggers = experiment_loggers(cfg)
    callbacks = instantiate_nodes(cfg.get("callbacks"))
    if not loggers:  # logger=none: a learning-rate monitor has nowhere to write, and Lightning refuses it
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers)
    return datamodule, model, trainer


def train(cfg: DictConfig) -> dict[str, float]:
    """Build everything from ``cfg``, fit (resuming from ``ckpt_path`` if given), then test."""
    offline_wandb_by_default()
    datamodule, model, trainer = build_training(cfg)
    with closed_after(trainer.loggers):
        return fit_and_test(cfg, datamodule, model, trainer)


def fit_and_test(
    cfg: DictConfig, datamodule: L.LightningDataModule, model: L.LightningModule, trainer: L.Trainer
) -> dict[str, float]:
    """Fit (methods that train nothing skip it), then test; returns the final metrics."""
    log.info(
        "data %s, classifier %s, method %s, sigma %s",
        type(datamodule).__name__,
        cfg.classifier._target_,
        cfg.method._target_,
        cfg.sigma,
    )
    _log_hyperparameters(trainer, model.run_config)
    _say_what_the_numbers_mean(cfg)
    if model.trainable:
        trainer.fit(model, datamodule=datamodule, ckpt_path=resume_checkpoint(cfg))
    else:
        log.info("method %s trains nothing: straight to test and certification", cfg.method._target_)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    if cfg.get("test"):
        # Test the best checkpoint when one was kept, else the weights in memory (fast_dev_run, dds).
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        trainer.test(model, datamodule=datamodule, ckpt_path=best or None)
        metrics |= {k: float(v) for k, v in trainer.callback_metrics.items()}
    _print_summary(metrics)
    return metrics


@rank_zero_only
def _say_what_the_numbers_mean(cfg: DictConfig) -> None:
    """A smoke run's test accuracy is that of a model trained on one batch (often 0 or chance): say so,
    and say when a method meant for a denoiser runs without one."""
    if cfg.trainer.get("fast_dev_run"):
        log.warning(
            "trainer.fast_dev_run: one batch of training, validation and test, to check the wiring; "
            "the test accuracies below are those of an untrained model (0 or chance is expected)"
        )
    uses_denoiser = str(OmegaConf.select(cfg, "method.name")) in ("dds", "dds_finetune", "dds_adv")
    if uses_denoiser and "Identity" in str(OmegaConf.select(cfg, "denoiser._target_")):
        log.warning(
            "method=%s with denoiser=none: the classifier sees the noisy images themselves, the method's "
            "denoiser step is the identity (set denoiser=mnist5k or another one for the paper's method)",
            cfg.method.name,
        )


def resume_checkpoint(cfg: DictConfig) -> str | None:
    """What fit resumes from: ``ckpt_path`` if given, else the run folder's own ``checkpoints/last.ckpt``
    when it exists (the same command again, in the same ``hydra.run.dir``, continues that run)."""
    if cfg.get("ckpt_path"):
        path = Path(cfg.ckpt_path)
    else:
        folder = OmegaConf.select(cfg, "callbacks.model_checkpoint.dirpath") or Path(
            cfg.paths.output_dir, "checkpoints"
        )
        path = Path(folder) / "last.ckpt"
        if not path.is_file():
            return None
        log.info("resuming from %s (this run folder's last checkpoint)", path)
    # Lightning's own failure on a bad file would advise weights_only=False; this names the file.
    read_checkpoint(path, mmap=True)
    return str(path)


@rank_zero_only
def _log_hyperparameters(trainer: L.Trainer, run_config: dict[str, Any]) -> None:
    for logger in trainer.loggers:
        logger.log_hyperparams(run_config)


@rank_zero_only
def _print_summary(metrics: dict[str, float]) -> None:
    lines = [f"  {k:<24} {v:.4f}" for k, v in sorted(metrics.items()) if k.startswith(("test/", "cert/"))]
    if lines:
        print("Final metrics:\n" + "\n".join(lines), flush=True)


@console_script
@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="ddsx_train")
@expected_errors
def main(cfg: DictConfig) -> float | None:
    check_finite_settings(cfg)  # before any work: sigma=nan once trained NaN weights
    limit_threads()  # jobs running side by side share the cores
    save_resolved_config(cfg, cfg.paths.output_dir)
    metrics = train(cfg)
    # Hydra sweepers (e.g. Optuna) optimise the returned value.
    return metrics.get("test/acc_denoised")


if __name__ == "__main__":
    main()
