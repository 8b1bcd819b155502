"""ddsx-certify: certify ddsx-train checkpoints (or an off-the-shelf classifier) on a split.

    ddsx-certify ckpt_path=outputs/train/<run>/checkpoints/last.ckpt certify.n=10000
    ddsx-certify ckpt_path=[a.ckpt,b.ckpt] denoiser=mnist5k   # one denoiser pass for both
    ddsx-certify ckpt_path=multirun/train/<sweep>               # every last.ckpt below it
    ddsx-certify ckpt_path=... certify.mode=sequential         # stop as soon as decided
    ddsx-certify ckpt_path=... trainer=ddp trainer.accelerator=cpu trainer.devices=2   # 2 processes
    ddsx-certify mode=cascade cascade.inputs=<per-sigma runs> cascade.p0=0.8   # cascade over sigmas

Wiring only: settings are validated first (nothing is written on a bad value), then Lightning
Fabric starts one process per device and each certifies its share (ddsx.certification.engine).
"""

from __future__ import annotations

from pathlib import Path

import hydra
import torch
from lightning.fabric import Fabric
from omegaconf import DictConfig, OmegaConf

from ddsx.certification.build import build_certifier, build_denoiser
from ddsx.certification.cascade import write_cascade
from ddsx.certification.metrics import format_summary, summarize
from ddsx.certification.result_file import check_writable, identity_differences, read_results
from ddsx.certification.row_validation import largest_certifiable_radius
from ddsx.certification.settings import DEFAULT_RADII, CertifySettings, InvalidSettingError
from ddsx.certification.shards import merge_shards
from ddsx.cli import CONF_DIR
from ddsx.cli.certify_models import (
    check_compatible,
    denoiser_config,
    load_from_config,
    warn_on_mismatch,
    warn_on_other_sigma,
)
from ddsx.cli.errors import console_script, expected_errors
from ddsx.cli.wiring import experiment_loggers, fabric_kwargs, offline_wandb_by_default
from ddsx.data.base import split_set
from ddsx.data.from_config import build_datamodule
from ddsx.loggers import closed_after
from ddsx.loggers.certification import log_certification
from ddsx.models.checkpoints import checkpoint_paths
from ddsx.sweeps.threads import limit_threads
from ddsx.utils.finite_settings import check_finite_settings
from ddsx.utils.logging import get_logger
from ddsx.utils.run_config import resolved_container, save_resolved_config

log = get_logger(__name__)


def certify(cfg: DictConfig) -> list[Path]:
    """Validate ``cfg.certify``, then certify on every process; returns the merged result files."""
    settings = CertifySettings.from_mapping(cfg.certify)
    settings.require_output()
    check_writable(settings.output)  # a read-only output is refused before any model is built
    checkpoint_paths(cfg.get("ckpt_path"))  # a missing checkpoint is refused before any data loads
    fabric = Fabric(**fabric_kwargs(cfg.get("trainer")))
    return fabric.launch(certify_on_process, cfg, settings)


def certify_on_process(fabric: Fabric, cfg: DictConfig, settings: CertifySettings) -> list[Path]:
    """What every process runs: build data and models, certify its share, rank 0 merges and reports."""
    datamodule = build_datamodule(cfg.dataset)
    dataset = split_set(datamodule, settings.split)

    # Seeded so that every process builds the same model when a config initialises weights randomly.
    torch.manual_seed(int(cfg.get("seed") or 0))
    specs = load_from_config(cfg, datamodule.num_classes, datamodule.image_shape[0])
    check_compatible(specs, sigma_given=settings.sigma is not None)
    run_config = specs[0].run_config
    settings = settings.with_sigma(settings.sigma if settings.sigma is not None else run_config.get("sigma"))
    sigma = settings.require_sigma()
    warn_on_mismatch(cfg, run_config)
    warn_on_other_sigma(sigma, run_config)
    denoiser_cfg, why = denoiser_config(cfg, run_config)
    log.info(why)
    denoiser = build_denoiser(denoiser_cfg, sigma).to(fabric.device)
    for spec in specs:
        spec.classifier.to(fabric.device).eval()
    certifier = build_certifier(
        settings,
        specs,
        denoiser=denoiser,
        dataset=dataset,
        dataset_name=getattr(datamodule, "name", type(datamodule).__name__),
        num_classes=datamodule.num_classes,
        device=fabric.device,
        split_seed=getattr(datamodule, "split_seed", None),
    )
    for target in certifier.targets:
        differences = identity_differences(fabric.broadcast(target.identity, src=0), target.identity)
        if differences:
            raise RuntimeError(
                f"process {fabric.global_rank} would certify something else than process 0: {differences}"
            )
    if fabric.global_rank == 0:
        save_resolved_config(cfg, cfg.paths.output_dir)
    paths = certifier.run(
        dataset,
        rank=fabric.global_rank,
        world_size=fabric.world_size,
        barrier=fabric.barrier,
        broadcast=lambda value: fabric.broadcast(value, src=0),
    )
    if fabric.global_rank == 0:
        loggers = experiment_loggers(cfg)
        with closed_after(loggers):
            for logger in loggers:
                logger.log_hyperparams(resolved_container(cfg) | {"certify_resolved": settings.as_dict()})
            for target, path in zip(certifier.targets, paths, strict=True):
                rows = read_results(path)
                prefix = "cert/" if len(paths) == 1 else f"cert/{target.name}/"
                ceiling = largest_certifiable_radius(settings.require_sigma(), settings.n, settings.alpha)
                log_certification(loggers, rows, settings.radii, path, prefix=prefix, max_radius=ceiling)
                log.info("%s -> %s", format_summary(summarize(rows, settings.radii), settings.radii), path)
    return paths


def merge(cfg: DictConfig) -> list[Path]:
    """``mode=merge``: join the shard files under ``merge.inputs`` into ``certify.output``, then report."""
    inputs = OmegaConf.select(cfg, "merge.inputs")
    if not inputs:
        raise InvalidSettingError("mode=merge needs merge.inputs=<sweep folder of the shard jobs, or files>")
    inputs = [inputs] if isinstance(inputs, str) else list(inputs)
    paths = merge_shards(inputs, cfg.certify.output)
    radii = list(cfg.certify.get("radii") or DEFAULT_RADII)
    for path in paths:
        log.info("merged -> %s: %s", path, format_summary(summarize(read_results(path), radii), radii))
    return paths


def cascade(cfg: DictConfig) -> list[Path]:
    """``mode=cascade``: certify the examples of the per-sigma runs under ``cascade.inputs`` with the
    cascade (ddsx.certification.cascade) into ``certify.output``, then report."""
    inputs, p0 = OmegaConf.select(cfg, "cascade.inputs"), OmegaConf.select(cfg, "cascade.p0")
    if not inputs or p0 is None:
        raise InvalidSettingError(
            "mode=cascade needs cascade.inputs=<per-sigma result files or their sweep folder> and "
            "cascade.p0=<confidence threshold in [0.5, 1)>"
        )
    inputs = [inputs] if isinstance(inputs, str) else list(inputs)
    path = write_cascade(inputs, cfg.certify.output, p0)
    radii = list(cfg.certify.get("radii") or DEFAULT_RADII)
    log.info("cascade -> %s: %s", path, format_summary(summarize(read_results(path), radii), radii))
    return [path]


@console_script
@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="ddsx_certify")
@expected_errors
def main(cfg: DictConfig) -> float | None:
    check_finite_settings(cfg)  # before any work
    limit_threads()  # jobs running side by side share the cores
    offline_wandb_by_default()
    mode = cfg.get("mode", "certify")
    if mode == "merge":
        paths = merge(cfg)
    elif mode == "cascade":
        paths = cascade(cfg)
    elif mode == "certify":
        paths = certify(cfg)
    else:
        raise InvalidSettingError(f"mode must be certify, merge or cascade, got {cfg.mode!r}")
    rows = read_results(paths[0])
    # Hydra sweepers optimise the returned value: the (first classifier's) average certified radius.
    return summarize(rows, [])["acr"] if rows else None


if __name__ == "__main__":
    main()
