"""The jobs of a sweep definition: a union of Cartesian grids, the command line overriding each.

A sweep definition (conf/sweep/*.yaml) lists ``hydra.sweeper.grids``, each a mapping from a config key
to a Hydra sweep value (``0.25,0.5,1.0``, ``choice(...)``, ``range(...)``). Several grids are needed
where an axis only exists for some points: the attack strength matters for method=dds_adv alone, so
dds_finetune gets a grid without it instead of one identical run per strength. An argument given on
the command line replaces that key in every grid (``sigma=0.5`` restricts a sweep to one sigma) or
adds an axis to every grid (``seed=0,1``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser


def expand_grids(
    grids: Sequence[Mapping[str, Any]], arguments: Sequence[str], parser: OverridesParser | None = None
) -> list[list[str]]:
    """The override list of every job, grid after grid, each job once (first occurrence kept)."""
    parser = parser or OverridesParser.create()
    jobs: list[list[str]] = []
    seen: set[frozenset[str]] = set()
    for grid in grids or [{}]:
        strings = [f"{key}={value}" for key, value in grid.items()]
        # The arguments come last: for a key set twice, Hydra's split keeps the last value.
        overrides = parser.parse_overrides([*strings, *arguments])
        [batch] = BasicSweeper.split_arguments(overrides, None) or [[[]]]
        for job in batch:
            if frozenset(job) not in seen:
                seen.add(frozenset(job))
                jobs.append(list(job))
    return jobs
