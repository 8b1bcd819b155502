"""Statistical tests as plugins: every module of this package that defines ``PROCEDURE`` is one test,
selected by ``certify.mode=<PROCEDURE.name>`` (see ``base.py`` for what a test declares).

Adding a test: one module here, one yaml under conf/certify/, its validity tests. The registry is
this package's own modules (never a name read from a file: a result file's ``mode`` is only ever
looked up here, and an unknown one is an error).
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache

from ddsx.smoothing.procedures.base import ABSTAIN, Budget, Outcome, Procedure, Rule

__all__ = ["ABSTAIN", "Budget", "Outcome", "Procedure", "Rule", "get_procedure", "procedures", "radius_kind"]


@cache
def procedures() -> dict[str, Procedure]:
    """name -> procedure, for every module of this package that defines ``PROCEDURE``."""
    found: dict[str, Procedure] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        procedure = getattr(module, "PROCEDURE", None)
        if procedure is None:
            continue
        if procedure.name in found:
            raise RuntimeError(f"two statistical tests are named {procedure.name!r}")
        found[procedure.name] = procedure
    return found


def get_procedure(name: str) -> Procedure:
    """The test called ``name``; ValueError naming the known ones otherwise."""
    known = procedures()
    if name not in known:
        raise ValueError(f"unknown statistical test {name!r}; known: {', '.join(sorted(known))}")
    return known[name]


def radius_kind(name: str) -> str | None:
    """ "exact" or "grid" for the test called ``name`` (a result file's ``mode``); None when unknown."""
    procedure = procedures().get(name)
    return None if procedure is None else procedure.radius
