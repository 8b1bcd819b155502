"""ddsx's registries, read from one place: the option files of its own config groups.

Registering a denoiser, classifier or method is adding its yaml to ``conf/denoiser/``,
``conf/classifier/`` or ``conf/method/``. Everything that must know the registered ones asks here:

- the allowlist of constructors a config read from a file may build (``ddsx.utils.safe_instantiate``):
  the ``_target_`` each option of ``conf/classifier`` / ``conf/denoiser`` names, under that name and
  under its own import path (``ddsx.models.classifiers.lenet`` and ``ddsx.models.classifiers.lenet.lenet``);
- the option lists of ``--help`` (``${ddsx.options:method}`` in ``conf/hydra/help/*.yaml``);
- whether a method reads the attack: its yaml has an ``attack`` key, which the W&B logger's config
  reads (``${oc.select:method.attack,null}``) to tag runs with the attack only where it applies.

Only ddsx's own configs count (the package's ``conf/``, or the checkout's): options a user adds with
``DDSX_CONF_DIR`` or ``hydra.searchpath`` can be composed on the command line, but a checkpoint's stored
config may still only name ddsx's constructors.
"""

from __future__ import annotations

import functools
import importlib
from pathlib import Path
from typing import Any

import yaml

REGISTRIES = ("classifier", "denoiser", "method")


def conf_folder() -> Path:
    """The folder of ddsx's own configs (what Hydra reads as ``pkg://ddsx.conf`` or the checkout's)."""
    from ddsx.cli import config_folder

    return config_folder()


def options(group: str, conf: Path | None = None) -> list[str]:
    """The options of a config group, sorted: ``conf/<group>/<option>.yaml``."""
    folder = (conf or conf_folder()) / group
    if not folder.is_dir():
        raise ValueError(f"ddsx has no config group {group!r} (no folder {folder})")
    return sorted(path.stem for path in folder.glob("*.yaml"))


def option_config(group: str, option: str, conf: Path | None = None) -> dict[str, Any]:
    """The keys an option's own yaml sets (its defaults list is not composed)."""
    path = (conf or conf_folder()) / group / f"{option}.yaml"
    document = yaml.safe_load(path.read_text()) or {}
    if not isinstance(document, dict):
        raise ValueError(f"{path} is not a mapping")
    return document


def targets(group: str, conf: Path | None = None) -> frozenset[str]:
    """Every ``_target_`` the options of ``group`` name, each also by its object's import path.

    Options without a ``_target_`` of their own (``denoiser/mnist5k.yaml`` extends ``diffusers``) add
    nothing. The targets come from ddsx's own yaml files, so importing them here is importing ddsx.
    """
    return _targets(group, conf or conf_folder())


@functools.cache
def _targets(group: str, conf: Path) -> frozenset[str]:
    named = {option_config(group, option, conf).get("_target_") for option in options(group, conf)} - {None}
    return frozenset(named | {import_path(str(target)) for target in named})


def import_path(target: str) -> str:
    """``ddsx.denoisers.IdentityDenoiser`` -> ``ddsx.denoisers.base.IdentityDenoiser``: where it is defined."""
    module_name, _, attribute = target.rpartition(".")
    found = getattr(importlib.import_module(module_name), attribute)
    return f"{found.__module__}.{found.__qualname__}"


def help_options(group: str, *left_out: str) -> str:
    """``a|b|c``: the options of ``group`` for ``--help``, without ``left_out`` (an OmegaConf resolver)."""
    return "|".join(option for option in options(group) if option not in left_out)
