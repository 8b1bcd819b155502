"""Find certification results on disk and describe each run: what it is, and whether it is whole.

A run is one result file plus its settings sidecar. Besides the rows, a report needs to know:
- what the run is (method, classifier, denoiser, n, alpha, ...), to label it and to decide which runs
  may share a best-over-sigma envelope (:attr:`Run.envelope_key`: everything but sigma);
- whether its numbers can be used at all (:attr:`Run.problem`): an empty file, fewer rows than the
  settings planned, a torn last line or rows of several sigmas are flagged and never averaged;
- whether its settings are known (:attr:`Run.caveat`): a file without a sidecar shows its own numbers
  as "settings unknown" and is never averaged with other runs (no envelope, no seed spread).

Every row passes the validator that resume and the shard merge use (``ddsx.certification.
row_validation``); a row it refuses makes the file unreadable, named with its line.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ddsx.certification import ResultFileError, ResultRow, sidecar_path
from ddsx.certification.cascade import MODE as CASCADE_MODE
from ddsx.certification.result_file import BASE_COLUMNS, find_result_files, parsed_rows, split_contents
from ddsx.certification.row_validation import check_rows, largest_certifiable_radius, rules_for
from ddsx.report.labels import differing_labels, job_overrides, without_sigma
from ddsx.smoothing.procedures import radius_kind

# Fields of the sidecar that make two runs different experiments (sigma aside): an envelope
# only takes the best over sigma among runs that agree on all of them.
ENVELOPE_FIELDS = (
    "dataset",
    "split",
    "method",
    "classifier",
    "denoiser",
    "n0",
    "n",
    "alpha",
    "mode",
    "examples_planned",
    "certify_seed",
)


@dataclass
class Run:
    """One result file with what its sidecar says about it."""

    path: Path
    rows: list[ResultRow]
    sigma: float | None = None
    method: str = "?"
    denoiser: str = "none"
    dataset: str = "?"
    classifier: str = ""
    n: int | None = None
    n0: int | None = None
    alpha: float | None = None
    mode: str = "fixed"
    split: str | None = None
    certify_seed: int | None = None
    train_seed: int | None = None  # the seed the classifier was trained with (ddsx-train's run config)
    train_sigma: float | None = None  # the sigma the classifier was trained at (ddsx-train's run config)
    examples_planned: int | None = None
    # The device the file was certified on (settings.device_type): the noise stream of a digit is the
    # same on one device only, so runs pair on the same noise only when their devices agree.
    device_type: str | None = None

    @property
    def grid(self) -> bool:
        """Whether the file's test (its settings' mode) reports grid radii, a floor of the exact radius."""
        return radius_kind(self.mode) == "grid"

    samples: list[int] = field(default_factory=list)  # samples used per row after n0 (sequential files)
    torn: bool = False
    sigmas_in_rows: tuple[float, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
    # In a multirun: the job's overrides that differ across the runs of the report (ddsx.report.labels).
    sweep_label: str = ""
    settings_known: bool = True  # False for a file without a sidecar

    @property
    def group(self) -> str:
        """The label without sigma: the differing overrides of a multirun's job, else dataset, method,
        classifier, denoiser."""
        if without_sigma(self.sweep_label):
            return without_sigma(self.sweep_label)
        parts = [self.dataset, self.method] + ([self.classifier] if self.classifier else [])
        if self.denoiser not in ("none", "", None):
            parts.append(f"D={self.denoiser}")
        return " ".join(parts)

    @property
    def label(self) -> str:
        sigma = "?" if self.sigma is None else f"{self.sigma:g}"
        return f"{self.group} sigma={sigma}"

    @property
    def envelope_key(self) -> tuple:
        """Equal for runs that differ in sigma alone (see ENVELOPE_FIELDS; in a multirun also the
        overrides other than sigma, e.g. the attack strength)."""
        return tuple(getattr(self, name) for name in ENVELOPE_FIELDS) + (without_sigma(self.sweep_label),)

    @property
    def problem(self) -> str:
        """Why this run's numbers must not be used ('' when they can)."""
        if not self.rows:
            return "empty"
        # A cascade's rows answer at several sigmas by design (each row's sigma: the level that answered).
        if len(self.sigmas_in_rows) > 1 and self.mode != CASCADE_MODE:
            return "mixes sigmas " + ",".join(f"{s:g}" for s in self.sigmas_in_rows)
        if (
            self.sigma is not None
            and self.sigmas_in_rows
            and not math.isclose(self.sigmas_in_rows[0], self.sigma)
        ):
            return f"rows at sigma {self.sigmas_in_rows[0]:g}, settings say {self.sigma:g}"
        if self.examples_planned is not None and len(self.rows) < self.examples_planned:
            return f"incomplete {len(self.rows)}/{self.examples_planned}"
        if self.torn:
            return "torn last line"
        return ""

    @property
    def caveat(self) -> str:
        """Why this run's numbers, though its own, must not be averaged with other runs ('' when they may)."""
        return "" if self.settings_known else "settings unknown"

    @property
    def status(self) -> str:
        """The table's status cell: the problem, else the caveat, else "ok"."""
        return self.problem or self.caveat or "ok"

    @property
    def averageable(self) -> bool:
        """May join an envelope or a seed spread with other runs."""
        return not self.problem and not self.caveat

    @property
    def max_radius(self) -> float | None:
        """The largest radius certifiable at this n and alpha: sigma * PhiInv(alpha ** (1 / n)).

        With all n samples on the top class, the one-sided Clopper-Pearson lower bound at level alpha
        is alpha ** (1 / n); no certificate of this run can exceed the radius it gives.
        """
        if self.sigma is None or not self.n or not self.alpha:
            return None
        return largest_certifiable_radius(self.sigma, self.n, self.alpha)

    @property
    def ceiling_radius(self) -> float | None:
        """The largest radius this run's certificates can report, where they pile up when capped: for a
        grid test (sequential) the largest radius of its certification grid within :attr:`max_radius`,
        for an exact test :attr:`max_radius` itself.

        Certified accuracy at that radius counts every digit whose certificate is capped there, so two
        methods that both reach the cap look alike there whatever their real margins.
        """
        reach = self.max_radius
        if not self.grid:
            return reach
        grid = self.extra.get("radii")
        if not isinstance(grid, list) or not all(
            isinstance(r, int | float) and not isinstance(r, bool) for r in grid
        ):
            return reach
        below = [float(r) for r in grid if reach is None or r <= reach]
        return max(below) if below else None

    def at_ceiling(self, radius: float) -> bool:
        """Whether ``radius`` is this run's :attr:`ceiling_radius`."""
        ceiling = self.ceiling_radius
        return ceiling is not None and math.isclose(radius, ceiling, abs_tol=1e-9)

    @property
    def samples_mean(self) -> float | None:
        return statistics.fmean(self.samples) if self.samples else None

    @property
    def samples_median(self) -> float | None:
        return statistics.median(self.samples) if self.samples else None


@dataclass
class BadFile:
    """A .tsv under the given paths that is not a usable certification file."""

    path: Path
    reason: str
    # False for a .tsv that is not a certification file at all (notes, another tool's table): skipped
    # with a note. True for a certification file that cannot be read: the report refuses it.
    unreadable: bool = True


def load_run(path: Path) -> Run:
    """Rows plus the run description from ``*.settings.json`` (or, failing that, the rows' sigma).

    Raises ResultFileError for a file that is not a readable certification file, or a row the shared
    row validator refuses against the sidecar (naming the file and line).
    """
    contents = split_contents(path)
    identity = None
    sidecar = sidecar_path(path)
    if sidecar.is_file():
        try:
            identity = json.loads(sidecar.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ResultFileError(f"{sidecar} is not valid JSON ({error})") from error
        if not isinstance(identity, dict):
            raise ResultFileError(f"{sidecar} is not a ddsx settings file (not a JSON object)")
    rules = rules_for(identity, str(sidecar))
    checked = check_rows(parsed_rows(path, contents), rules)
    rows = [entry.row for entry in checked.values()]
    run = Run(path=path, rows=rows, torn=bool(contents.torn), settings_known=identity is not None)
    run.sigmas_in_rows = tuple(sorted({row.sigma for row in rows if row.sigma is not None}))
    run.samples = [row.samples for row in rows if row.samples is not None]
    if identity is not None:
        _describe(run, identity)
        run.examples_planned = None if rules.selection is None else len(rules.selection)
    if run.sigma is None and len(run.sigmas_in_rows) == 1:
        run.sigma = run.sigmas_in_rows[0]
    if run.n is None:
        ns = {row.n for row in rows if row.n is not None}
        run.n = ns.pop() if len(ns) == 1 else None
    if run.method == "?":
        run.method = path.parent.name or path.stem
    return run


def _describe(run: Run, identity: dict[str, Any]) -> None:
    settings, info = identity.get("settings", {}), identity.get("info", {})
    run.sigma = settings.get("sigma")
    run.dataset = str(settings.get("dataset", "?"))
    run.split = settings.get("split")
    run.n, run.n0, run.alpha = settings.get("n"), settings.get("n0"), settings.get("alpha")
    run.certify_seed = settings.get("seed")
    device = settings.get("device_type")
    run.device_type = device if isinstance(device, str) else None
    run.mode = str(settings.get("mode") or identity.get("mode") or info.get("mode") or "fixed")
    run.denoiser = str(identity.get("denoiser", {}).get("name", "none"))
    source = (info.get("denoiser") or {}).get("source")
    if run.denoiser != "none" and source:
        run.denoiser = Path(str(source)).name  # the denoiser's folder says more than its class
    run.method = str(info.get("run", {}).get("method") or "?")
    run.classifier = str(info.get("run", {}).get("classifier") or "")
    train_seed = info.get("run", {}).get("seed")
    run.train_seed = train_seed if isinstance(train_seed, int) and not isinstance(train_seed, bool) else None
    train_sigma = info.get("run", {}).get("train_sigma")
    ok = isinstance(train_sigma, int | float) and not isinstance(train_sigma, bool)
    run.train_sigma = float(train_sigma) if ok else None
    run.extra = {"split": run.split, "radii": info.get("radii") or settings.get("radii")}


def load_runs(paths: Sequence[str | Path]) -> tuple[list[Run], list[BadFile]]:
    """Every certification file under ``paths`` and the .tsv files that could not be read.

    A .tsv whose header is not a certification header (notes, other tools' tables) is not a run and
    goes to the bad list with its reason; so does a certification file with a row that does not parse.
    """
    runs, bad = [], []
    for path in find_result_files(paths):
        if not _has_certification_header(path):
            bad.append(
                BadFile(path, "not a certification file (its header is not idx label predict ...)", False)
            )
            continue
        try:
            runs.append(load_run(path))
        except (ResultFileError, UnicodeDecodeError) as error:
            bad.append(BadFile(path, str(error)))
    labels = differing_labels([job_overrides(run.path) for run in runs])
    # A multi-classifier job writes one file per classifier under the same overrides, which then cannot
    # tell its methods apart: where the methods differ and the overrides do not name one, the label
    # starts with the method (the sidecar's method.name).
    methods_differ = len({run.method for run in runs}) > 1
    for run, label in zip(runs, labels or [], strict=False):
        names_method = any(part.startswith(("method=", "method.name=")) for part in label.split())
        run.sweep_label = f"{run.method} {label}".strip() if methods_differ and not names_method else label
    runs.sort(key=lambda r: (r.group, r.sigma if r.sigma is not None else float("inf"), str(r.path)))
    return runs, bad


def _has_certification_header(path: Path) -> bool:
    with path.open("rb") as file:
        first = file.readline()
    return first.startswith("\t".join(BASE_COLUMNS).encode()) or not first.strip()


def envelope_groups(runs: Sequence[Run]) -> list[list[Run]]:
    """Runs that may share a best-over-sigma envelope: same envelope key, averageable, distinct sigmas.

    A set with two runs at the same sigma (seeds, repeats) gets no envelope: taking the best of them
    would pick a seed, not a sigma.
    """
    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        if run.averageable and run.sigma is not None:
            groups.setdefault(run.envelope_key, []).append(run)
    return [
        members
        for members in groups.values()
        if len(members) > 1 and len({m.sigma for m in members}) == len(members)
    ]
