"""Hydra sweeper plugin ``hydra/sweeper=ddsx`` (Hydra only instantiates plugins of this package):
every job of a multirun runs even when some fail; see ddsx.sweeps.sweeper."""

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional  # noqa: UP035 - OmegaConf reads these annotations

from hydra.core.config_store import ConfigStore

from ddsx.sweeps.sweeper import IsolatingSweeper


class DDSXSweeper(IsolatingSweeper):
    """The class Hydra instantiates for ``hydra/sweeper=ddsx``."""


@dataclass
class DDSXSweeperConf:
    _target_: str = "hydra_plugins.ddsx_sweeper.DDSXSweeper"
    max_batch_size: Optional[int] = None  # noqa: UP045
    # one Cartesian grid, as Hydra's basic sweeper
    params: Optional[Dict[str, str]] = None  # noqa: UP006, UP045
    # several grids whose union is the sweep (conf/sweep/*.yaml)
    grids: List[Any] = field(default_factory=list)  # noqa: UP006


ConfigStore.instance().store(group="hydra/sweeper", name="ddsx", node=DDSXSweeperConf, provider="ddsx")
