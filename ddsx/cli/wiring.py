"""What the ddsx Hydra apps (ddsx-train, ddsx-certify, ddsx-analyze, ddsx-denoiser) wire the same way.

One place for: W&B offline unless the user says otherwise, objects from a dict of ``_target_``
nodes (loggers, callbacks), Lightning Fabric's arguments from the ``trainer`` node, and what Hydra's
runtime says about the command line (the option chosen for a group, whether a group was given).
"""

from __future__ import annotations

import os
from typing import Any

import hydra
from omegaconf import DictConfig

FABRIC_KEYS = {"accelerator": "auto", "devices": 1, "strategy": "auto", "num_nodes": 1}


def offline_wandb_by_default() -> None:
    """W&B stays offline unless ``WANDB_MODE`` says otherwise (this machine may have no network at all)."""
    os.environ.setdefault("WANDB_MODE", "offline")


def instantiate_nodes(cfg: DictConfig | None) -> list[Any]:
    """A dict of ``_target_`` nodes (callbacks, loggers) -> list of objects; None, empty or null nodes -> []."""
    if not cfg:
        return []
    return [hydra.utils.instantiate(node) for node in cfg.values() if node is not None and "_target_" in node]


def experiment_loggers(cfg: DictConfig) -> list[Any]:
    """The experiment loggers of ``cfg.logger`` (``logger=none``: none)."""
    return instantiate_nodes(cfg.get("logger"))


def fabric_kwargs(trainer_cfg: DictConfig | None) -> dict[str, Any]:
    """accelerator / devices / strategy / num_nodes of the ``trainer`` node (other keys are training-only)."""
    trainer_cfg = trainer_cfg or {}
    return {key: trainer_cfg.get(key, default) or default for key, default in FABRIC_KEYS.items()}


def hydra_choice(group: str) -> str | None:
    """The option of config group ``group`` this run uses (``classifier=lenet`` -> "lenet"); None outside Hydra."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    return HydraConfig.get().runtime.choices.get(group)


def given_on_command_line(group: str) -> bool:
    """Whether ``group=...`` was given on the command line (not just taken from the defaults)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return False
    overrides = HydraConfig.get().overrides.task
    return any(o.split("=", 1)[0].lstrip("+~") == group for o in overrides)
