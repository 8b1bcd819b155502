"""ddsx-train checkpoints: finding them (a file, a list, a sweep folder) and rebuilding the trained
classifier from one alone (for ddsx-certify, ddsx-analyze and reports)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import nn

from ddsx.errors import ModelFileError
from ddsx.utils.safe_instantiate import allowed_targets, safe_instantiate

CLASSIFIER_PREFIX = "classifier."
NOT_OURS = "is not a ddsx-train checkpoint (a .ckpt that ddsx-train writes in <run>/checkpoints/)"


def read_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu", mmap: bool = False
) -> dict[str, Any]:
    """The contents of a ddsx-train checkpoint, read safely (tensors and plain containers only).

    A missing, empty, truncated or foreign file fails here with a message that names the path. The
    message never suggests loading the file with ``weights_only=False``: that would run whatever
    code the file carries.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path} (pass a .ckpt written by ddsx-train)")
    if path.stat().st_size == 0:
        raise ModelFileError(f"{path} is empty: it {NOT_OURS}")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as err:  # torch raises RuntimeError, UnpicklingError, EOFError, ... for bad files
        # torch's own message would advise weights_only=False: only its kind is passed on.
        raise ModelFileError(
            f"{path} {NOT_OURS}: it could not be read as tensors and plain containers "
            f"({type(err).__name__}; a truncated, corrupted or foreign file, or one that carries code)"
        ) from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise ModelFileError(f"{path} {NOT_OURS}: it holds no state_dict (found {type(checkpoint).__name__})")
    return checkpoint


def load_classifier(
    ckpt_path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[nn.Module, dict]:
    """(classifier in eval mode, the run config dict it was trained with).

    The checkpoint must come from ddsx-train: its ``ddsx_config`` entry says how to rebuild the
    architecture, its state dict holds the weights under ``classifier.``.
    """
    path = Path(ckpt_path)
    checkpoint = read_checkpoint(path, map_location)
    config: dict[str, Any] | None = checkpoint.get("ddsx_config")
    if not isinstance(config, dict) or "classifier" not in config or "data_shape" not in config:
        raise ModelFileError(f"{path} {NOT_OURS}: it has no ddsx_config with classifier and data_shape")
    classifier_cfg = dict(config["classifier"])
    if "checkpoint_path" in classifier_cfg:
        classifier_cfg["checkpoint_path"] = None  # the trained weights below replace the initial ones
    shape = config["data_shape"]
    # The stored config comes from a file: it may only name one of ddsx's classifier constructors.
    classifier = safe_instantiate(
        classifier_cfg,
        allowed_targets("classifier"),
        f"ddsx_config.classifier of {path}",
        "classifier",
        num_classes=shape["num_classes"],
        in_channels=shape["image_shape"][0],
    )
    state = {
        k[len(CLASSIFIER_PREFIX) :]: v
        for k, v in checkpoint["state_dict"].items()
        if k.startswith(CLASSIFIER_PREFIX)
    }
    classifier.load_state_dict(state)
    return classifier.eval(), config


def checkpoint_paths(ckpt_path: Any) -> list[Path]:
    """``ckpt_path``: one file, a list of files, or a sweep folder (every ``last.ckpt`` below it)."""
    if ckpt_path is None:
        return []
    values = (
        list(ckpt_path)
        if isinstance(ckpt_path, (list, tuple)) or OmegaConf.is_list(ckpt_path)
        else [ckpt_path]
    )
    paths: list[Path] = []
    for value in values:
        path = Path(str(value))
        if path.is_dir():
            found = sorted(path.rglob("last.ckpt"))
            if not found:
                raise FileNotFoundError(f"no last.ckpt below the folder {path} (ckpt_path)")
            paths.extend(found)
        elif not path.is_file():
            raise FileNotFoundError(f"no checkpoint file {path} (ckpt_path)")
        else:
            paths.append(path)
    return paths


def checkpoint_name(path: Path) -> str:
    """A short name for a checkpoint: its run folder (``<run>/checkpoints/last.ckpt`` -> ``<run>``)."""
    parent = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    return parent.name if path.stem in ("last", "best") or path.stem.startswith("epoch") else path.stem
