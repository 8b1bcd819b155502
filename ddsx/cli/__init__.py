"""Console scripts: ddsx-train, ddsx-certify, ddsx-denoiser, ddsx-analyze (Hydra apps) and ddsx-report.

The Hydra configs live in the repository's top-level ``conf/``; a wheel ships that folder inside the
package as ``ddsx/conf`` (setup.py maps it), found through Hydra's ``pkg://`` search path. A source
checkout on ``PYTHONPATH`` (or an older editable install) has no ``ddsx/conf``: then the checkout's
``conf/`` is used directly. A user config folder adds or overrides groups on top of either: set
``DDSX_CONF_DIR`` (searched first, see ``hydra_plugins/ddsx_user_conf``), or pass
``hydra.searchpath=[file:///path]`` (searched last: adds groups and options).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from omegaconf import OmegaConf

CONFIG_PACKAGE = "ddsx.conf"
PRIMARY = "ddsx_train.yaml"


def _packaged_configs() -> bool:
    """Whether ``ddsx.conf`` is importable and holds the configs (wheel, or editable with the mapping)."""
    try:
        spec = importlib.util.find_spec(CONFIG_PACKAGE)
    except ModuleNotFoundError:
        return False
    locations = (spec.submodule_search_locations or []) if spec else []
    return any(Path(p, PRIMARY).is_file() for p in locations)


def config_source() -> str:
    """Where Hydra reads ddsx's own configs: ``pkg://ddsx.conf``, else the checkout's conf/ folder."""
    if _packaged_configs():
        return f"pkg://{CONFIG_PACKAGE}"
    return str(config_folder())


def config_folder() -> Path:
    """The folder holding ddsx's own configs on disk: the package's ``ddsx/conf``, else the checkout's."""
    spec = importlib.util.find_spec(CONFIG_PACKAGE) if _packaged_configs() else None
    for location in (spec.submodule_search_locations or []) if spec else []:
        if Path(location, PRIMARY).is_file():
            return Path(location)
    checkout = Path(__file__).resolve().parents[2] / "conf"
    if (checkout / PRIMARY).is_file():
        return checkout
    raise RuntimeError(
        f"ddsx's Hydra configs were found neither in the package ({CONFIG_PACKAGE}) nor in {checkout}. "
        "Reinstall ddsx (`pip install .` or `make install` from its repository)."
    )


def _help_options(group: str, *left_out: str) -> str:
    from ddsx.registry import help_options

    return help_options(group, *left_out)


CONF_DIR = config_source()
# `${ddsx.options:method}` in conf/hydra/help/*.yaml: the registered options, never a list kept by hand.
OmegaConf.register_new_resolver("ddsx.options", _help_options, replace=True)


def is_ddsx_config_source(path: str | None) -> bool:
    """Whether a Hydra search-path entry is ddsx's own configs (packaged or the checkout's conf/)."""
    if not path:
        return False
    if path == CONF_DIR or path.startswith(f"pkg://{CONFIG_PACKAGE}"):
        return True
    folder = Path(path.removeprefix("file://"))
    return folder.is_absolute() and folder.resolve() == (Path(__file__).resolve().parents[2] / "conf")
