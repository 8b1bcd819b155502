"""The jobs of a sweep definition: a union of Cartesian grids, the command line overriding each.

A sweep definition (conf/sweep/*.yaml) lists ``hydra.sweeper.grids``, each a mapping from a config key
to a Hydra sweep value (``0.25,0.5,1.0``, ``choice(...)``, ``range(...)``). Several grids are needed
where an axis only exists for some points: the attack strength matters for method=dds_adv alone, so
dds_finetune gets a grid without it instead of one identical run per strength. An argument given on
the command line replaces that key in every grid (``sigma=0.5`` restricts a sweep to one sigma) or
adds an axis to every grid (``seed=0,1``).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException


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
        for job in cartesian_jobs(overrides):
            if frozenset(job) not in seen:
                seen.add(frozenset(job))
                jobs.append(list(job))
    return jobs


def cartesian_jobs(overrides: Sequence[Override]) -> list[list[str]]:
    """Every combination of the overrides' values (``a=1,2 b=x`` -> two jobs), a key set twice taking
    its last value; built on Hydra's public Override API (its basic sweeper's splitter is private)."""
    choices: dict[str, list[str]] = {}
    for override in overrides:
        key = override.get_key_element()
        if not override.is_sweep_override():
            choices[key] = [f"{key}={override.get_value_element_as_str()}"]
        elif override.is_discrete_sweep():
            choices[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
        else:
            raise HydraException(f"the ddsx sweeper cannot sweep {override.input_line!r} (an interval sweep)")
    return [list(job) for job in itertools.product(*choices.values())]
