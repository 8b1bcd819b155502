"""The W&B logger of ddsx runs: what makes runs of a sweep comparable in W&B.

- one group per sweep (the sweep folder's name, after the sweep definition's when there is one), so a
  sweep's runs sit together; a single run is grouped by dataset and method as before;
- a job type per app (train, certify, denoiser);
- tags for the dataset, sigma, method and the attack's name and strength, so runs filter by them;
- the resolved config flattened to dotted keys (``attack.step_size``), so parallel-coordinates plots
  and run tables can use every field.

W&B itself is imported only when a run is made: ddsx needs no W&B account, and runs stay offline
unless WANDB_MODE=online (the apps set WANDB_MODE=offline when it is unset).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

# Lightning imports W&B only when a run is made, so importing this module needs no W&B account.
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only

# The attack's fields that say how strong it is (conf/attack/*.yaml), in tag order.
ATTACK_STRENGTH = ("steps", "step_size", "epsilon", "norm", "epsilon_scale")


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}, "c": [1, 2]}`` -> ``{"a.b": 1, "c": [1, 2]}`` (lists stay values)."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat |= flatten(value, f"{name}.")
        else:
            flat[name] = value
    return flat


def run_tags(
    dataset: str | None,
    sigma: float | None,
    method: str | None,
    attack_name: str | None,
    attack: Mapping[str, Any] | None,
) -> list[str]:
    """``key=value`` tags of what differs between the paper's runs; absent fields give no tag.

    ``attack`` is the method's own attack node (None for a method that reads none, which would
    otherwise carry a false tag): a method says it reads the attack by its yaml (``ddsx.registry``).
    """
    tags = [f"dataset={dataset}"] if dataset else []
    tags += [f"sigma={sigma:g}"] if isinstance(sigma, int | float) else []
    tags += [f"method={method}"] if method else []
    if attack is not None:
        tags += [f"attack={attack_name}"] if attack_name else []
        tags += [f"attack.{key}={attack[key]}" for key in ATTACK_STRENGTH if key in (attack or {})]
    return tags


def sweep_group(sweep_dir: str | None, sweep_name: str | None) -> str:
    """The group of a multirun's runs: ``<sweep definition>-<sweep folder name>``."""
    folder = Path(str(sweep_dir)).name if sweep_dir else "sweep"
    return f"{sweep_name}-{folder}" if sweep_name else folder


def hydra_facts() -> dict[str, Any]:
    """What the running Hydra job says about itself (empty outside a Hydra app): choices, mode, folders."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return {}
    config = HydraConfig.get()
    choices = dict(config.runtime.choices)
    return {
        "choices": choices,
        "multirun": config.mode == RunMode.MULTIRUN,
        "sweep_dir": config.sweep.dir,
        # the app, from its config's name (ddsx_train -> train); the job name is "app" under compose
        "job_name": str(config.job.config_name or config.job.name).removeprefix("ddsx_"),
    }


class DdsxWandbLogger(WandbLogger):
    """Lightning's WandbLogger that stores hyperparameters under dotted keys (``attack.step_size``), so
    W&B's run tables and parallel-coordinates plots can use every field."""

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        super().log_hyperparams(flatten(params) if isinstance(params, Mapping) else params, *args, **kwargs)


def wandb_logger(
    *,
    run: Mapping[str, Any] | None = None,
    group: str | None = None,
    tags: Sequence[str] = (),
    job_type: str | None = None,
    **kwargs: Any,
) -> DdsxWandbLogger:
    """A :class:`DdsxWandbLogger` with ddsx's group, job type and tags (conf/logger/wandb.yaml).

    Args:
        run: what the tags are made of: ``sigma``, ``certify_sigma``, ``method``, ``attack`` (the
            method's attack node); each may be None (ddsx-certify has no method, ddsx-denoiser no sigma).
        group: None: the sweep's group in a multirun, ``<dataset>-<method>`` otherwise.
        tags: extra tags, after ddsx's.
        job_type: None: the app (``train``, ``certify``, ``denoiser``).
        kwargs: passed to WandbLogger (project, name, save_dir, log_model, ...).
    """
    run = dict(run or {})
    facts = hydra_facts()
    choices = facts.get("choices", {})
    dataset, method = choices.get("dataset"), run.get("method")
    sigma = run.get("sigma") if run.get("sigma") is not None else run.get("certify_sigma")
    if group is None:
        if facts.get("multirun"):
            group = sweep_group(facts.get("sweep_dir"), choices.get("sweep"))
        else:
            group = "-".join(str(part) for part in (dataset, method) if part) or None
    all_tags = run_tags(dataset, sigma, method, choices.get("attack"), run.get("attack")) + list(tags)
    job_type = job_type or facts.get("job_name")
    return DdsxWandbLogger(group=group, tags=all_tags, job_type=job_type, **kwargs)


@rank_zero_only
def finish_wandb_run(failed: bool) -> None:
    """Finish this process's W&B run, if one is open: the next job in the same process (basic and joblib
    launchers) would otherwise log into it, since Lightning's WandbLogger reuses ``wandb.run``."""
    import wandb

    if wandb.run is not None:
        wandb.finish(exit_code=1 if failed else 0)


def wandb_loggers(loggers: Iterable[object]) -> list[WandbLogger]:
    """The W&B loggers among ``loggers`` (Lightning's WandbLogger or a subclass)."""
    return [logger for logger in loggers if isinstance(logger, WandbLogger)]
