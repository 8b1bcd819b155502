"""ddsx-analyze: the covariate shift of a diffusion denoiser across sigmas, and what it does to classifiers.

    ddsx-analyze                                                   # denoiser=mnist5k, 21 sigmas
    ddsx-analyze ckpt_path=[a/last.ckpt,b/last.ckpt] max_examples=500 extra_sigmas=[0.25,0.5,1.0]
    ddsx-analyze ckpt_path=... trainer=ddp trainer.accelerator=cpu trainer.devices=2   # 2 processes

Wiring only: the quantities live in ddsx.analysis (noise, metrics, measure), the files it writes in
ddsx.analysis.outputs. Each process measures its share of the examples; the metrics sum over processes.
"""

from __future__ import annotations

import time
from pathlib import Path

import hydra
import numpy as np
from lightning.fabric import Fabric
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, Subset

from ddsx.analysis.measure import NO_CLASSIFIER, Probe, build_metrics, computed, measure_sigma
from ddsx.analysis.outputs import plot_quantities, save_grid, table_rows, write_tsv
from ddsx.certification.build import build_denoiser
from ddsx.cli import CONF_DIR
from ddsx.cli.errors import console_script, expected_errors
from ddsx.cli.wiring import experiment_loggers, fabric_kwargs, offline_wandb_by_default
from ddsx.data.base import split_set
from ddsx.data.from_config import build_datamodule
from ddsx.denoisers.dds import DiffusionDenoiser
from ddsx.errors import DDSXError
from ddsx.loggers import closed_after
from ddsx.loggers.analysis import log_analysis
from ddsx.methods.noise_attack import AttackStrength
from ddsx.models.checkpoints import checkpoint_name, checkpoint_paths, load_classifier
from ddsx.utils.finite_settings import check_finite_settings
from ddsx.utils.logging import get_logger
from ddsx.utils.run_config import save_resolved_config

log = get_logger(__name__)

TABLE = "analysis.tsv"


class MissingDenoiserError(DDSXError):
    """The denoiser folder to analyse does not exist, or the denoiser is not a diffusion model."""


class MissingCheckpointError(DDSXError):
    """A classifier checkpoint named in ckpt_path does not exist."""


def sigma_grid(cfg: DictConfig) -> list[float]:
    """linspace(sigmas.start, sigmas.stop, sigmas.num) and extra_sigmas, sorted, without duplicates."""
    grid = cfg.get("sigmas") or {}
    values = np.linspace(float(grid.get("start")), float(grid.get("stop")), int(grid.get("num")))
    values = [round(float(v), 6) for v in values] + [float(v) for v in cfg.get("extra_sigmas") or []]
    if not values or any(v <= 0 for v in values):
        raise DDSXError(f"sigmas must be > 0, got {sorted(values)}")
    return sorted(set(values))


def load_denoiser(cfg: DictConfig, sigma: float) -> DiffusionDenoiser:
    """The configured diffusion denoiser; a clear error naming the folder when it is not there."""
    node = cfg.get("denoiser") or {}
    path = node.get("path")
    if path is not None and not Path(str(path)).is_dir():
        raise MissingDenoiserError(
            f"denoiser folder not found: {path} (train one with `ddsx-denoiser`, or set denoiser.path= "
            "or DDSX_CHECKPOINTS to where it lives)"
        )
    denoiser = build_denoiser(node, sigma)
    if not isinstance(denoiser, DiffusionDenoiser):
        raise MissingDenoiserError(
            f"ddsx-analyze needs a diffusion denoiser (denoiser=mnist5k, diffusers, ...), got {type(denoiser).__name__}"
        )
    return denoiser


def load_probes(cfg: DictConfig) -> list[Probe]:
    """The classifiers of ``ckpt_path``, each named after its run folder (made unique)."""
    try:
        paths = checkpoint_paths(cfg.get("ckpt_path"))
    except FileNotFoundError as error:
        raise MissingCheckpointError(str(error)) from None
    probes, used = [], set()
    for i, path in enumerate(paths):
        if not path.is_file():
            raise MissingCheckpointError(f"classifier checkpoint not found: {path} (ckpt_path)")
        classifier, _ = load_classifier(path)
        name = checkpoint_name(path)
        name = f"{name}_{i}" if name in used or name == NO_CLASSIFIER else name
        used.add(name)
        probes.append(Probe(name, classifier.eval()))
    return probes


def check_sigmas(denoiser: DiffusionDenoiser, sigmas: list[float]) -> None:
    """Every sigma within the schedule's reach (t* exists), checked before any work is done."""
    largest = float(denoiser.describe()["max_sigma"])
    beyond = [s for s in sigmas if s > largest]
    if beyond:
        raise DDSXError(
            f"sigmas {beyond} exceed the largest sigma the denoiser's schedule reaches ({largest:.3g})"
        )


def analyze(cfg: DictConfig) -> Path:
    """Validate, then measure on every process; returns the path of analysis.tsv (written by rank 0)."""
    sigmas = sigma_grid(cfg)
    fabric = Fabric(**fabric_kwargs(cfg.get("trainer")))
    return fabric.launch(analyze_on_process, cfg, sigmas)


def analyze_on_process(fabric: Fabric, cfg: DictConfig, sigmas: list[float]) -> Path:
    split = str(cfg.split)
    if split not in ("test", "val"):
        raise DDSXError(f"split must be test or val, got {split!r}")
    denoiser = load_denoiser(cfg, sigmas[0]).to(fabric.device)
    check_sigmas(denoiser, sigmas)
    probes = load_probes(cfg)
    for probe in probes:
        probe.classifier.to(fabric.device)
    strength = AttackStrength(**OmegaConf.to_container(cfg.attack, resolve=True))  # type: ignore[arg-type]

    datamodule = build_datamodule(cfg.dataset)
    dataset = split_set(datamodule, split)
    total = len(dataset) if cfg.get("max_examples") is None else min(len(dataset), int(cfg.max_examples))
    share = Subset(dataset, range(fabric.global_rank, total, fabric.world_size))

    def batches():
        return DataLoader(share, batch_size=int(cfg.batch_size), shuffle=False)

    metrics = build_metrics(probes, cfg.lpips.get("weights"), cfg.lpips.get("net", "alex"))
    for metric in metrics.values():
        metric.to(fabric.device)
    out = Path(cfg.paths.output_dir)
    loggers = []
    if fabric.global_rank == 0:
        save_resolved_config(cfg, out)
        loggers = experiment_loggers(cfg)
    log.info(
        "analysing %s on %d %s examples at %d sigmas, %d classifier(s)",
        denoiser.source or denoiser.name,
        total,
        split,
        len(sigmas),
        len(probes),
    )
    table = out / TABLE
    with closed_after(loggers):  # W&B runs finish (failed if the analysis raised)
        rows, started = [], time.monotonic()
        for i, sigma in enumerate(sigmas):
            denoiser.set_sigma(sigma)
            # Each (seed, sigma, process) its own noise stream; batch b adds b to it.
            seed = ((int(cfg.seed) * 1000 + i) * 64 + fabric.global_rank) * 100_000
            grid = measure_sigma(
                denoiser,
                probes,
                batches,
                metrics,
                strength,
                seed,
                int(cfg.grid_examples) if fabric.global_rank == 0 else 0,
                fabric.device,
            )
            values = computed(metrics)
            rows += table_rows(sigma, values, total)
            if fabric.global_rank == 0:
                if grid is not None:
                    save_grid(grid, out / "grids" / f"sigma_{sigma:g}.png")
                for logger in loggers:
                    logger.log_metrics(_logged(values, sigma), step=i)
                elapsed = time.monotonic() - started
                log.info(
                    "sigma %g (%d/%d, t*=%d): misestimation %.4f, l2 %.3f, ssim %.3f | %.0f s, about %.0f s left",
                    sigma,
                    i + 1,
                    len(sigmas),
                    denoiser.t_star,
                    values[("misestimation", NO_CLASSIFIER)],
                    values[("l2", NO_CLASSIFIER)],
                    values[("ssim", NO_CLASSIFIER)],
                    elapsed,
                    elapsed / (i + 1) * (len(sigmas) - i - 1),
                )
        if fabric.global_rank == 0:
            write_tsv(rows, table)
            plots = plot_quantities(rows, out / "plots")
            log_analysis(loggers, table, plots, sorted((out / "grids").glob("*.png")))
            log.info("wrote %s, %d plots in %s, grids in %s", table, len(plots), out / "plots", out / "grids")
    return table


def _logged(values: dict[tuple[str, str], float], sigma: float) -> dict[str, float]:
    """Metric names for experiment loggers: ``analyze/<quantity>`` or ``analyze/<quantity>/<classifier>``."""
    named = {f"analyze/{q}" if c == NO_CLASSIFIER else f"analyze/{q}/{c}": v for (q, c), v in values.items()}
    return named | {"analyze/sigma": sigma}


@console_script
@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="ddsx_analyze")
@expected_errors
def main(cfg: DictConfig) -> None:
    check_finite_settings(cfg)  # before any work
    offline_wandb_by_default()
    analyze(cfg)


if __name__ == "__main__":
    main()
