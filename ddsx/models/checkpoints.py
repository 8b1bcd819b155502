"""Rebuild a trained classifier from a ddsx-train checkpoint alone (for ddsx-certify and reports)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ddsx.utils.safe_instantiate import CLASSIFIER_TARGETS, safe_instantiate

CLASSIFIER_PREFIX = "classifier."


def load_classifier(
    ckpt_path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[nn.Module, dict]:
    """(classifier in eval mode, the run config dict it was trained with).

    The checkpoint must come from ddsx-train: its ``ddsx_config`` entry says how to rebuild the
    architecture, its state dict holds the weights under ``classifier.``.
    """
    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint not found: {path} (pass ckpt_path=<a .ckpt written by ddsx-train>)"
        )
    # weights_only=False would unpickle arbitrary code; the entries ddsx writes are plain containers.
    checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    config: dict[str, Any] | None = checkpoint.get("ddsx_config")
    if not config or "classifier" not in config or "data_shape" not in config:
        raise ValueError(
            f"{path} has no ddsx_config with classifier and data_shape: was it written by ddsx-train?"
        )
    classifier_cfg = dict(config["classifier"])
    if "checkpoint_path" in classifier_cfg:
        classifier_cfg["checkpoint_path"] = None  # the trained weights below replace the initial ones
    shape = config["data_shape"]
    # The stored config comes from a file: it may only name one of ddsx's classifier constructors.
    classifier = safe_instantiate(
        classifier_cfg,
        CLASSIFIER_TARGETS,
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
