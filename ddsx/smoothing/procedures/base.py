"""What a statistical test is to ddsx: a :class:`Procedure` (declared once, in its own module) prepared
into a :class:`Rule` for one budget, which the counting loop (``ddsx.smoothing.loop``) consults.

A procedure declares:

- ``name``: the value of ``certify.mode`` that selects it (and of ``mode`` in a result file);
- ``parameters``: the :class:`Budget` fields beyond sigma, alpha and n that its decisions depend on,
  so what a resume compares (``CertifySettings.row_settings``);
- ``radius``: "exact" (a radius from the bound, Cohen et al.) or "grid" (the largest certified grid
  radius, a floor of the exact one: reports label its ACR "grid");
- ``selections``: how the class under test may be chosen ("n0": from n0 separate copies; "label": the
  true label), the first being the default;
- ``stops_early``: whether it can decide before the budget (schedulers then favour the least sampled
  examples, estimates say "at most").

A rule says when it needs counts (``looks``: the sample counts at which it reads them) and what it
decides at each look, for many (example, classifier) pairs at once as arrays.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

ABSTAIN = -1


@dataclass(frozen=True)
class Budget:
    """The settings a rule is prepared from: noise level, failure probability, sample budget, radii
    grid (ascending, unique) and samples between looks."""

    sigma: float
    alpha: float
    n: int
    radii: tuple[float, ...] = ()
    check_every: int = 1


@dataclass(frozen=True)
class Outcome:
    """One pair's answer: prediction (ABSTAIN = -1), radius, hits among ``samples`` copies, the CP lower
    bound (exact-radius tests, else None), per grid radius whether certified, and ``certified_at``: the
    samples after which the reported radius was certified (None when abstaining)."""

    prediction: int
    radius: float
    count: int
    samples: int
    p_lower: float | None
    certified: tuple[bool, ...]
    certified_at: int | None


class Rule(ABC):
    """A test prepared for one budget. ``looks``: ascending sample counts at which it reads the counts;
    the last is the budget, where every pair is decided. ``radii``: the grid its decisions refer to
    (K radii; empty for an exact-radius test)."""

    looks: np.ndarray
    radii: tuple[float, ...]

    @abstractmethod
    def decide(
        self, look: int, hits: np.ndarray, certified: np.ndarray, abandoned: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """At look ``look`` (index into ``looks``), pairs with ``hits`` (m,) among ``looks[look]`` copies
        and decisions so far (m, K) bool: the new (certified, abandoned). A decision once made stays."""

    @abstractmethod
    def outcome(self, candidate: int, hits: int, samples: int, certified: np.ndarray) -> Outcome:
        """The answer of a decided pair (``certified_at`` filled in by the loop)."""

    def finished(self, look: int, certified: np.ndarray, abandoned: np.ndarray) -> np.ndarray:
        """(m,) whether each pair is decided after look ``look``: every radius decided, or the budget."""
        if look >= len(self.looks) - 1:
            return np.ones(len(certified), dtype=bool)
        return (certified | abandoned).all(axis=1)


class Procedure(ABC):
    """A statistical test as a plugin (see the module docstring); one instance per module, ``PROCEDURE``."""

    name: ClassVar[str]
    parameters: ClassVar[tuple[str, ...]]
    radius: ClassVar[str]
    selections: ClassVar[tuple[str, ...]]
    stops_early: ClassVar[bool]
    summary: ClassVar[str]

    @abstractmethod
    def prepare(self, budget: Budget) -> Rule:
        """The rule for this budget (may be cached, never trusted: see each module)."""

    def row_parameters(self, budget: Budget) -> dict:
        """The declared parameters' values, as a result file's settings record them."""
        return {
            name: list(budget.radii) if name == "radii" else getattr(budget, name) for name in self.parameters
        }
