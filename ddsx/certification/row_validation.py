"""Whether the rows of a result file can belong to its run: the one check every reader makes.

Resume (``ResultFile.validate``), ddsx-report (``ddsx.report.runs.load_run``) and the shard merge
(``ddsx.certification.shards``) all pass their rows through :func:`check_rows`, with the rules of the
file's sidecar (:func:`rules_for`), so a row one reader refuses every reader refuses, naming the file
and line. A row must have:

- an idx seen once: a byte-identical repeat counts once (a merge killed between replacing the file
  and deleting its shards leaves them), any other repeat is refused;
- an idx inside the selection the sidecar plans (``ddsx.certification.selection.Selection``);
- the sidecar's n, n0 and sigma in its columns (a six-column file of Cohen et al. has none);
- a radius that is a finite number >= 0 and at most sigma * PhiInv(alpha ** (1 / n)): with n samples
  at level alpha no valid test certifies more (the all-hits outcome is the most extreme one, and
  p ** n <= alpha must hold for it to reject p), so a larger radius was not computed by a valid run;
- ``correct`` equal to "predict == label" (an abstention is never correct);
- the dataset's label, where the dataset is at hand (resume); the report and the merge have none.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ddsx.certification.result_file import ResultFileError, ResultRow
from ddsx.certification.selection import Selection
from ddsx.certification.settings import _is_int, _is_number
from ddsx.smoothing import ABSTAIN

# The radius bound is compared with a little room: the engine computes it through scipy, this
# module through the standard library.
_RADIUS_ROOM = 1e-9


class RowError(ResultFileError):
    """A row that cannot belong to its run; the message starts with ``file:line``."""


@dataclass(frozen=True)
class RowRules:
    """What every row of one file must agree with (None: not known, not checked)."""

    selection: Selection | None = None
    n: int | None = None
    n0: int | None = None
    sigma: float | None = None
    alpha: float | None = None
    label_of: Callable[[int], int | None] | None = None  # idx -> the dataset's label

    @property
    def max_radius(self) -> float | None:
        if self.sigma is None or self.n is None or self.alpha is None:
            return None
        return largest_certifiable_radius(self.sigma, self.n, self.alpha)


@dataclass(frozen=True)
class CheckedRow:
    row: ResultRow
    line: bytes  # the row's bytes as on disk (the merge keeps them)
    where: str  # "file:line"


def largest_certifiable_radius(sigma: float, n: int, alpha: float) -> float:
    """sigma * PhiInv(alpha ** (1 / n)): the radius of a unanimous vote, the most any row can hold."""
    return sigma * statistics.NormalDist().inv_cdf(alpha ** (1.0 / n))


def rules_for(
    identity: dict[str, Any] | None, where: str, label_of: Callable[[int], int | None] | None = None
) -> RowRules:
    """The rules of a sidecar document (None: a file without one, where only the rules that need no
    settings apply). A sidecar value of the wrong type is an error naming ``where``."""
    if identity is None:
        return RowRules(label_of=label_of)
    settings = identity.get("settings")
    if not isinstance(settings, dict):
        raise ResultFileError(f"{where}: no settings object")
    return RowRules(
        selection=Selection.from_identity(identity, where),
        n=_setting(settings, "n", where, lambda v: _is_int(v) and v >= 1),
        n0=_setting(settings, "n0", where, lambda v: _is_int(v) and v >= 0),
        sigma=_setting(settings, "sigma", where, lambda v: _is_number(v) and v > 0),
        alpha=_setting(settings, "alpha", where, lambda v: _is_number(v) and 0 < v < 1),
        label_of=label_of,
    )


def check_rows(entries: Iterable[tuple[ResultRow, bytes, str]], rules: RowRules) -> dict[int, CheckedRow]:
    """Every row checked against ``rules``, in order; returns idx -> its row (repeats counted once).

    ``entries`` are (row, its bytes, "file:line") of one file or of a file and its shards together.
    Raises RowError at the first row that breaks a rule.
    """
    seen: dict[int, CheckedRow] = {}
    for row, line, where in entries:
        first = seen.get(row.idx)
        if first is not None:
            if first.line != line:
                raise RowError(
                    f"{where}: idx {row.idx} appears again with different content (first at "
                    f"{first.where}); delete one of the two rows"
                )
            continue
        check_row(row, rules, where)
        seen[row.idx] = CheckedRow(row, line, where)
    return seen


def check_row(row: ResultRow, rules: RowRules, where: str) -> None:
    """Refuse (RowError naming ``where``) a row that breaks one of the rules."""
    if rules.selection is not None and row.idx not in rules.selection:
        raise RowError(
            f"{where}: idx {row.idx} is not an example this run selects ({rules.selection.describe()})"
        )
    for name in ("n", "n0", "sigma"):
        expected, got = getattr(rules, name), getattr(row, name)
        if expected is not None and got is not None and got != expected:
            raise RowError(f"{where}: idx {row.idx} has {name}={got!r}, its settings say {name}={expected!r}")
    radius = row.radius
    if not (math.isfinite(radius) and radius >= 0):
        raise RowError(f"{where}: idx {row.idx} has radius {radius!r}, not a finite number >= 0")
    bound = rules.max_radius
    if bound is not None and radius > bound * (1 + _RADIUS_ROOM) + _RADIUS_ROOM:
        raise RowError(
            f"{where}: idx {row.idx} has radius {radius!r}, more than the {bound:.6g} that n={rules.n} "
            f"samples at alpha={rules.alpha} can certify at sigma={rules.sigma}"
        )
    right = row.predict != ABSTAIN and row.predict == row.label
    if row.correct not in (0, 1) or bool(row.correct) != right:
        raise RowError(
            f"{where}: idx {row.idx} has correct={row.correct} with predict {row.predict} and label "
            f"{row.label}"
        )
    if rules.label_of is not None:
        label = rules.label_of(row.idx)
        if label is None:
            raise RowError(f"{where}: idx {row.idx} is not an example of the dataset")
        if label != row.label:
            raise RowError(
                f"{where}: label {row.label} of idx {row.idx} contradicts the data: the dataset's label "
                f"of idx {row.idx} is {label}"
            )


def _setting(settings: dict[str, Any], name: str, where: str, ok: Callable[[Any], bool]) -> Any:
    value = settings.get(name)
    if value is not None and not ok(value):
        raise ResultFileError(f"{where}: settings.{name} is {value!r}, not a valid {name}")
    return value
