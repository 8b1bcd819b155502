"""The datamodule a ``dataset`` config names, refused unless it is one ddsx can use.

A dataset config may come from the user's own config folder (``DDSX_CONF_DIR``); one that builds
something else (a torchvision dataset, a dict) would fail later, inside setup() or the first batch,
with a traceback that never names the config.
"""

from __future__ import annotations

from typing import Any

import hydra
import lightning as L

from ddsx.data.errors import DatasetConfigError

# What every console script reads off the datamodule before setup() (see ddsx.data.base).
REQUIRED_ATTRIBUTES = ("num_classes", "image_shape")


def build_datamodule(dataset_cfg: Any) -> L.LightningDataModule:
    """``hydra.utils.instantiate(dataset_cfg)``, checked to be a LightningDataModule that says its
    ``num_classes`` and ``image_shape``; DatasetConfigError naming the config otherwise."""
    built = hydra.utils.instantiate(dataset_cfg)
    missing = [name for name in REQUIRED_ATTRIBUTES if getattr(built, name, None) is None]
    if isinstance(built, L.LightningDataModule) and not missing:
        return built
    what = (
        f"a {type(built).__module__}.{type(built).__qualname__}, not a LightningDataModule"
        if not isinstance(built, L.LightningDataModule)
        else f"a LightningDataModule without {' and '.join(missing)}"
    )
    raise DatasetConfigError(
        f"the dataset config {_config_name(dataset_cfg)} builds {what}: a dataset config must name a "
        "LightningDataModule with num_classes and image_shape (such as ddsx.data.ImageDataModule's subclasses)"
    )


def _config_name(dataset_cfg: Any) -> str:
    """``dataset=<option> (_target_: <target>)``, as far as Hydra and the node say."""
    from hydra.core.hydra_config import HydraConfig

    choice = HydraConfig.get().runtime.choices.get("dataset") if HydraConfig.initialized() else None
    target = dataset_cfg.get("_target_") if hasattr(dataset_cfg, "get") else None
    return f"dataset={choice or '?'} (_target_: {target})"
