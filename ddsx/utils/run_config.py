"""Saving the resolved config of a run next to its outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf


def resolved_container(cfg: DictConfig) -> dict[str, Any]:
    """The config as plain Python containers with every interpolation resolved (Hydra's own node dropped)."""
    # A "hydra" key exists only in configs composed with return_hydra_config (tests); it is not ours.
    body = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    return OmegaConf.to_container(body, resolve=True, throw_on_missing=True)  # type: ignore[return-value]


def save_resolved_config(cfg: DictConfig, output_dir: str | Path, name: str = "config_resolved.yaml") -> Path:
    """Write ``cfg`` with interpolations resolved (Hydra's .hydra/config.yaml keeps them unresolved)."""
    path = Path(output_dir) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(OmegaConf.to_yaml(OmegaConf.create(resolved_container(cfg))))
    tmp.replace(path)  # atomic: never a half-written config
    return path
