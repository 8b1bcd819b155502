"""Find certification results on disk and describe each run (label, sigma, method) for reports."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ddsx.certification.results_file import ResultFileError, ResultRow, read_results
from ddsx.certification.store import sidecar_path


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
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def group(self) -> str:
        """What the best-over-sigma envelope groups by: everything in the label except sigma."""
        parts = [self.dataset, self.method] + ([self.classifier] if self.classifier else [])
        if self.denoiser not in ("none", "", None):
            parts.append(f"D={self.denoiser}")
        return " ".join(parts)

    @property
    def label(self) -> str:
        sigma = "?" if self.sigma is None else f"{self.sigma:g}"
        return f"{self.group} sigma={sigma}"


def find_result_files(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given; folders searched recursively for ``*.tsv`` (run folders, multirun folders)."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*.tsv") if p.is_file()))
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"no such file or folder: {path}")
    unique = list(dict.fromkeys(p.resolve() for p in found))
    return unique


def load_run(path: Path) -> Run:
    """Rows plus the run description from ``*.settings.json`` (or, failing that, the rows' sigma)."""
    rows = read_results(path)
    run = Run(path=path, rows=rows)
    sidecar = sidecar_path(path)
    if sidecar.is_file():
        identity = json.loads(sidecar.read_text())
        settings, info = identity.get("settings", {}), identity.get("info", {})
        run.sigma = settings.get("sigma")
        run.dataset = str(settings.get("dataset", "?"))
        run.denoiser = str(identity.get("denoiser", {}).get("name", "none"))
        source = (info.get("denoiser") or {}).get("source")
        if run.denoiser != "none" and source:
            run.denoiser = Path(str(source)).name  # the denoiser's folder says more than its class
        run.method = str(info.get("run", {}).get("method") or "?")
        run.classifier = str(info.get("run", {}).get("classifier") or "")
        run.extra = {"n": settings.get("n"), "alpha": settings.get("alpha"), "split": settings.get("split")}
    if run.sigma is None:
        sigmas = {row.sigma for row in rows if row.sigma is not None}
        run.sigma = sigmas.pop() if len(sigmas) == 1 else None
    if run.method == "?":
        run.method = path.parent.name or path.stem
    return run


def load_runs(paths: Sequence[str | Path]) -> list[Run]:
    """Every readable result file under ``paths``; a .tsv that is not a certification file is skipped."""
    runs = []
    for path in find_result_files(paths):
        try:
            runs.append(load_run(path))
        except ResultFileError:
            continue
    return sorted(
        runs, key=lambda r: (r.group, r.sigma if r.sigma is not None else float("inf"), str(r.path))
    )
