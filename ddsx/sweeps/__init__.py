"""Hydra multiruns of ddsx: grids as unions of Cartesian products, failure isolation, labels of runs."""


def in_multirun_job() -> bool:
    """Whether this code runs inside one job of a Hydra multirun (``-m``)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
