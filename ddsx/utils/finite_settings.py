"""Every float setting must be a finite number: NaN or inf is refused before any work.

No ddsx setting means anything at NaN or infinity (sigma, learning rates, attack sizes, certify alpha,
radii): ``sigma=nan`` once trained NaN weights and exited 0, because ``nan < 0`` is false and every
range check of the form ``value < bound`` lets NaN through. One walk over the whole config catches
every such value, whichever group it lives in, so each console script calls this first.
"""

from __future__ import annotations

import math
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ddsx.errors import DDSXError


class NonFiniteSettingError(DDSXError):
    """A float setting is NaN or infinite; the message names its key."""


def check_finite_settings(cfg: DictConfig) -> None:
    """Raise :class:`NonFiniteSettingError` naming the first NaN or infinite float in ``cfg``.

    Interpolations are not resolved (one that cannot resolve is reported by whoever reads it): the
    value they point to is itself a setting, checked where it is written. Hydra's own node is skipped.
    """
    container = OmegaConf.to_container(cfg, resolve=False)
    for key, value in _floats(container, ""):
        if not math.isfinite(value):
            raise NonFiniteSettingError(f"{key}={value}: a float setting must be a finite number")


def _floats(node: Any, prefix: str):
    """(dotted key, value) of every float below ``node``; list items as ``key[i]``."""
    if isinstance(node, dict):
        for key, value in node.items():
            if prefix or key != "hydra":
                yield from _floats(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _floats(value, f"{prefix}[{index}]")
    elif isinstance(node, float):
        yield prefix, node
