"""ddsx-certify: certify a ddsx-train checkpoint (or an off-the-shelf classifier) on a split.

    ddsx-certify ckpt_path=outputs/train/<run>/checkpoints/last.ckpt certify.n=10000
    ddsx-certify ckpt_path=... trainer=ddp trainer.accelerator=cpu trainer.devices=2   # 2 processes

Wiring only: settings are validated first (nothing is written on a bad value), then Lightning
Fabric starts one process per device and each certifies its share (ddsx.certification.engine).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from lightning.fabric import Fabric
from omegaconf import DictConfig, OmegaConf

from ddsx.certification.engine import certify_dataset
from ddsx.certification.identity import identity_differences, run_identity
from ddsx.certification.models import build_denoiser, run_info
from ddsx.certification.reporting import format_summary, log_certification
from ddsx.certification.results_file import read_results
from ddsx.certification.settings import CertifySettings, InvalidSettingError
from ddsx.cli import CONF_DIR
from ddsx.cli.errors import console_script, expected_errors
from ddsx.models.pipeline import DenoisedClassifier
from ddsx.smoothing import Smooth
from ddsx.utils.logging import get_logger
from ddsx.utils.run_config import save_resolved_config

log = get_logger(__name__)

FABRIC_KEYS = {"accelerator": "auto", "devices": 1, "strategy": "auto", "num_nodes": 1}


def fabric_kwargs(trainer_cfg: DictConfig | None) -> dict[str, Any]:
    """accelerator / devices / strategy / num_nodes of the ``trainer`` node (other keys are training-only)."""
    trainer_cfg = trainer_cfg or {}
    return {key: trainer_cfg.get(key, default) or default for key, default in FABRIC_KEYS.items()}


def certify(cfg: DictConfig) -> Path:
    """Validate ``cfg.certify``, then certify on every process; returns the merged result file."""
    settings = CertifySettings.from_mapping(cfg.certify)
    if not settings.output:
        raise InvalidSettingError("certify.output must be a file path, got None")
    fabric = Fabric(**fabric_kwargs(cfg.get("trainer")))
    return fabric.launch(certify_on_process, cfg, settings)


def certify_on_process(fabric: Fabric, cfg: DictConfig, settings: CertifySettings) -> Path:
    """What every process runs: build data and model, certify its share, rank 0 merges and reports."""
    datamodule = hydra.utils.instantiate(cfg.dataset)
    datamodule.setup("test" if settings.split == "test" else "validate")
    dataset = getattr(datamodule, f"{settings.split}_set", None)
    if dataset is None:
        raise ValueError(f"{type(datamodule).__name__} has no {settings.split}_set after setup()")

    # Seeded so that every process builds the same model when a config initialises weights randomly.
    torch.manual_seed(int(cfg.get("seed") or 0))
    classifier, run_config, source = load_classifier_for(cfg, datamodule)
    settings = settings.with_sigma(settings.sigma if settings.sigma is not None else run_config.get("sigma"))
    sigma = settings.require_sigma()
    _warn_on_mismatch(cfg, run_config)
    denoiser = build_denoiser(denoiser_config(cfg, run_config), sigma)
    base = DenoisedClassifier(classifier, denoiser).to(fabric.device).eval()
    smooth = Smooth(base, datamodule.num_classes, sigma, settings.autocast_dtype)
    identity = run_identity(
        settings,
        classifier=classifier,
        denoiser=denoiser,
        dataset=getattr(datamodule, "name", type(datamodule).__name__),
        split_size=len(dataset),
        model_source=source,
        run_info=run_info(run_config, **_hydra_choices()),
    )
    differences = identity_differences(fabric.broadcast(identity, src=0), identity)
    if differences:
        raise RuntimeError(
            f"process {fabric.global_rank} would certify something else than process 0: {differences}"
        )
    if fabric.global_rank == 0:
        save_resolved_config(cfg, cfg.paths.output_dir)
    path = certify_dataset(
        smooth,
        dataset,
        settings,
        settings.output,
        identity,
        device=fabric.device,
        rank=fabric.global_rank,
        world_size=fabric.world_size,
        barrier=fabric.barrier,
    )
    if fabric.global_rank == 0:
        rows = read_results(path)
        loggers = [hydra.utils.instantiate(node) for node in (cfg.get("logger") or {}).values() if node]
        metrics = log_certification(loggers, rows, settings.radii, path)
        log.info(
            "%s -> %s",
            format_summary({k.removeprefix("cert/"): v for k, v in metrics.items()}, settings.radii),
            path,
        )
    return path


def load_classifier_for(cfg: DictConfig, datamodule) -> tuple[Any, dict[str, Any], str]:
    """(classifier, run config, source): from ``ckpt_path`` when given, else ``cfg.classifier`` as is."""
    if cfg.get("ckpt_path"):
        from ddsx.models.checkpoints import load_classifier

        classifier, run_config = load_classifier(cfg.ckpt_path)
        return classifier, run_config, str(Path(cfg.ckpt_path).resolve())
    log.warning("no ckpt_path: certifying cfg.classifier (%s) as configured", cfg.classifier.get("_target_"))
    classifier = hydra.utils.instantiate(
        cfg.classifier, num_classes=datamodule.num_classes, in_channels=datamodule.image_shape[0]
    )
    return classifier.eval(), {}, str(cfg.classifier.get("_target_"))


def denoiser_config(cfg: DictConfig, run_config: dict[str, Any]) -> DictConfig | None:
    """The configured denoiser; with the default ``denoiser=none`` and a checkpoint trained through a
    denoiser (dds_finetune, dds_adv), the checkpoint's own: h alone is not the model that was trained."""
    configured = cfg.get("denoiser")
    trained = run_config.get("denoiser")
    configured_target = str((configured or {}).get("_target_", ""))
    trained_target = str(trained.get("_target_", "")) if isinstance(trained, dict) else ""
    if configured_target.endswith("IdentityDenoiser") and trained_target and "Identity" not in trained_target:
        log.info(
            "the checkpoint was trained through %s: certifying h o D with it",
            trained.get("path", trained_target),
        )
        return OmegaConf.create(trained)
    return configured


def _warn_on_mismatch(cfg: DictConfig, run_config: dict[str, Any]) -> None:
    """A checkpoint trained with a denoiser or dataset other than the configured ones is allowed but suspicious."""
    for group in ("dataset", "denoiser"):
        trained = (
            (run_config.get(group) or {}).get("_target_") if isinstance(run_config.get(group), dict) else None
        )
        current = (cfg.get(group) or {}).get("_target_")
        if trained and current and trained != current:
            log.warning("the checkpoint was trained with %s=%s but this run uses %s", group, trained, current)


def _hydra_choices() -> dict[str, Any]:
    if not HydraConfig.initialized():
        return {}
    choices = HydraConfig.get().runtime.choices
    return {group: choices.get(group) for group in ("classifier", "denoiser")}


@console_script
@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="ddsx_certify")
@expected_errors
def main(cfg: DictConfig) -> float | None:
    # W&B stays offline unless the user says otherwise, as in ddsx-train.
    os.environ.setdefault("WANDB_MODE", "offline")
    path = certify(cfg)
    rows = read_results(path)
    # Hydra sweepers optimise the returned value: the average certified radius.
    return sum(r.radius for r in rows if r.correct) / len(rows) if rows else None


if __name__ == "__main__":
    main()
