"""A cascade result file from per-sigma CERTIFY result files of one selection (Jeong & Shin 2023).

    ddsx-certify mode=cascade cascade.inputs=[s1/certify.tsv,s05/certify.tsv] cascade.p0=0.8

Each input is a finished ``certify.mode=fixed`` run at one sigma, read through the readers that merge
and report use (``shards.read_shard``: the sidecar, every row through ``row_validation``, no torn tail,
no leftover parts). Before anything is written, the inputs must be ONE selection at several noise
levels: the same classifier, denoiser weights, dataset, split, examples, n, n0, seed and every other
compared setting; only sigma, alpha (each file's alpha is its level's share) and the denoiser's
per-sigma schedule (``PER_SIGMA_FIELDS``) may differ, and sigmas must be distinct. Each file must hold
the same examples with the same labels, and each row's p_lower must be the Clopper-Pearson bound of
its count at its file's alpha (a row CERTIFY wrote). A refusal names the file.

Per example, the levels are ordered from the largest sigma down and certified by
``ddsx.smoothing.cascade.cascade`` (the guarantee is that module's, at alpha = the sum of the files'
alphas). The output has the rows of a result file, read by ddsx-report like any other:

- ``predict``, ``radius``, ``correct``: the cascade's answer (-1 and 0 when it abstains);
- ``sigma``, ``t_star``, ``count_a``, ``p_lower``: those of the level where the cascade stopped (the
  level that answered, or the one where it abstained); p_lower is the bound the cascade used there;
- ``samples``, ``seconds``, ``time``: summed over the levels consulted, from the first to that one (the
  cost of running the cascade top-down); ``certified_at`` is ``samples`` when it answers;
- ``n``, ``n0``: per level, as in the inputs.

Its settings file is the first input's, with sigma null, alpha the total, mode ``cascade``, the levels
(sigma, alpha, the denoiser's per-sigma fields) and p0 under ``settings.cascade``, and the inputs
under ``info.cascade_of``. Nothing is written if a check fails; an existing output is never replaced.
"""

from __future__ import annotations

import copy
import datetime
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ddsx.certification.result_file import (
    ResultFileError,
    ResultRow,
    compared_fields,
    find_result_files,
    format_elapsed,
    format_row,
    parse_row,
    sidecar_path,
)
from ddsx.certification.shards import ShardFile, read_shard, write_whole_result_file
from ddsx.smoothing.bounds import lower_confidence_bound
from ddsx.smoothing.cascade import Level, cascade, check_threshold
from ddsx.smoothing.procedures.base import ABSTAIN

MODE = "cascade"
# Compared fields that differ between the levels of one cascade by design: the level's noise and share
# of alpha, and what a DDS denoiser derives from sigma (its timestep). Any other difference is refused.
PER_SIGMA_FIELDS = (
    "certify.sigma",
    "certify.alpha",
    "denoiser.sigma",
    "denoiser.t_star",
    "denoiser.timesteps",
    "denoiser.achieved_sigma",
)
# A row's p_lower is recomputed from its count; the file holds it as repr of the same float.
_P_LOWER_ROOM = 1e-9


@dataclass(frozen=True)
class LevelFile:
    """One input: its validated file, its level's sigma and alpha, and its rows by idx."""

    file: ShardFile
    sigma: float
    alpha: float
    rows: dict[int, ResultRow]

    @property
    def path(self) -> Path:
        return self.file.path


def read_level(path: Path) -> LevelFile:
    """One input, validated whole (``read_shard``); refuses a file that is not a fixed-n CERTIFY run."""
    if not sidecar_path(path).is_file():
        raise ResultFileError(
            f"{path} has no {sidecar_path(path).name}: its settings are unknown, it cannot be a cascade level"
        )
    file = read_shard(path)
    settings = file.identity.get("settings") or {}
    mode = settings.get("mode", "fixed")
    if mode != "fixed":
        raise ResultFileError(
            f"{path} was made with certify.mode={mode}; a cascade level must be a certify.mode=fixed run "
            "(its bounds need n fresh copies counted once)"
        )
    sigma, alpha = settings.get("sigma"), settings.get("alpha")
    if not _positive(sigma) or not (_positive(alpha) and alpha < 1):
        raise ResultFileError(f"{path}: its settings name no valid sigma and alpha ({sigma!r}, {alpha!r})")
    rows = {idx: parse_row(line.decode(), where=f"{path}") for idx, line in file.lines.items()}
    for row in rows.values():
        _check_counted(row, alpha, path)
    return LevelFile(file, float(sigma), float(alpha), rows)


def check_one_selection(levels: Sequence[LevelFile]) -> None:
    """Refuse (ResultFileError naming the file) inputs that are not one selection at distinct sigmas."""
    first = levels[0]
    reference = _level_independent(first.file.identity)
    for level in levels[1:]:
        fields = _level_independent(level.file.identity)
        differing = sorted(
            key for key in set(reference) | set(fields) if reference.get(key) != fields.get(key)
        )
        if differing:
            shown = "; ".join(
                f"{key}: {reference.get(key)!r} there, {fields.get(key)!r} here" for key in differing[:4]
            )
            raise ResultFileError(
                f"{level.path} is not the selection of {first.path} at another sigma ({shown}"
                f"{'; ...' if len(differing) > 4 else ''})"
            )
        if level.file.selection != first.file.selection:
            raise ResultFileError(
                f"{level.path} selects other examples than {first.path} (certify.skip, certify.max or shard)"
            )
    by_sigma: dict[float, Path] = {}
    for level in levels:
        if level.sigma in by_sigma:
            raise ResultFileError(
                f"{level.path} and {by_sigma[level.sigma]} are both at sigma {level.sigma:g}"
            )
        by_sigma[level.sigma] = level.path
    for level in levels[1:]:
        differing = set(first.rows) ^ set(level.rows)
        if differing:
            idx = min(differing)
            holder, lacking = (first, level) if idx in first.rows else (level, first)
            raise ResultFileError(
                f"{lacking.path} has no row for idx {idx}, which {holder.path} has ({len(differing)} idx "
                "differ): every level must hold the same examples; finish the runs first"
            )
        for idx, row in level.rows.items():
            if row.label != first.rows[idx].label:
                raise ResultFileError(
                    f"{level.path}: idx {idx} has label {row.label}, {first.path} says {first.rows[idx].label}"
                )


def cascade_row(idx: int, levels: Sequence[LevelFile], p0: float) -> ResultRow:
    """The cascade's row for ``idx`` (levels from the largest sigma down; see the module docstring)."""
    rows = [level.rows[idx] for level in levels]
    answer = cascade(
        [Level(lv.sigma, lv.alpha, r.count_a, r.n, r.predict) for lv, r in zip(levels, rows, strict=True)], p0
    )
    consulted = rows[: answer.level + 1]
    stop = rows[answer.level]
    samples = sum(r.samples if r.samples is not None else r.n for r in consulted)
    seconds = sum(r.seconds or 0.0 for r in consulted)
    certified = answer.prediction != ABSTAIN
    return ResultRow(
        idx=idx,
        label=stop.label,
        predict=answer.prediction,
        radius=answer.radius,
        correct=int(certified and answer.prediction == stop.label),
        time=format_elapsed(seconds),
        samples=samples,
        count_a=stop.count_a,
        n=stop.n,
        n0=stop.n0,
        p_lower=answer.p_lower,
        sigma=levels[answer.level].sigma,
        t_star=stop.t_star,
        seconds=seconds,
        certified_at=samples if certified else None,
    )


def cascade_identity(levels: Sequence[LevelFile], p0: float) -> dict[str, Any]:
    """The output's settings document (module docstring): the first input's, with the levels named."""
    identity = copy.deepcopy(levels[0].file.identity)
    denoiser = identity.get("denoiser") or {}
    per_sigma = [key.split(".", 1)[1] for key in PER_SIGMA_FIELDS if key.startswith("denoiser.")]
    described = []
    for level in levels:
        own = level.file.identity.get("denoiser") or {}
        described.append(
            {"sigma": level.sigma, "alpha": level.alpha}
            | {f"denoiser_{key}": own[key] for key in per_sigma if key in own}
        )
    for key in per_sigma:
        denoiser.pop(key, None)
    settings = identity["settings"]
    settings.update(
        sigma=None,
        alpha=math.fsum(level.alpha for level in levels),
        mode=MODE,
        cascade={"p0": p0, "levels": described},
    )
    info = identity.setdefault("info", {})
    info["cascade_of"] = [str(level.path) for level in levels]
    info["created"] = datetime.datetime.now().isoformat(timespec="seconds")
    return identity


def write_cascade(inputs: Iterable[str | Path], output: str | Path, p0: float) -> Path:
    """Certify every example of the inputs' one selection with the cascade into ``output``."""
    try:
        p0 = check_threshold(p0)
    except ValueError as error:
        raise ResultFileError(f"cascade.p0: {error}") from error
    inputs = list(inputs)
    files = find_result_files(inputs)  # every .tsv given or found: one without settings is refused
    if not files:
        raise ResultFileError(f"no result files under {', '.join(map(str, inputs))}")
    levels = sorted((read_level(path) for path in files), key=lambda level: -level.sigma)
    check_one_selection(levels)
    output = Path(output)
    if output.exists() or sidecar_path(output).exists():
        raise ResultFileError(f"{output} exists: write the cascade to another path, or delete it first")
    rows = [cascade_row(idx, levels, p0) for idx in sorted(levels[0].rows)]
    # format_row writes text; the file is written as bytes, like a merge's.
    write_whole_result_file(output, (format_row(row).encode() for row in rows), cascade_identity(levels, p0))
    return output


def _check_counted(row: ResultRow, alpha: float, path: Path) -> None:
    """A row CERTIFY wrote: a count, and p_lower the Clopper-Pearson bound of that count at the file's
    alpha, with an abstention exactly where that bound is below 1/2 (``procedures.fixed``)."""
    if row.count_a is None or row.n is None or row.p_lower is None:
        raise ResultFileError(f"{path}: idx {row.idx} has no count_a, n or p_lower; it is not a ddsx row")
    if not 0 <= row.count_a <= row.n:
        raise ResultFileError(f"{path}: idx {row.idx} has count_a={row.count_a} outside [0, n={row.n}]")
    expected = lower_confidence_bound(row.count_a, row.n, alpha)
    if abs(row.p_lower - expected) > _P_LOWER_ROOM or (row.predict == ABSTAIN) != (expected < 0.5):
        raise ResultFileError(
            f"{path}: idx {row.idx} has p_lower={row.p_lower!r} and predict={row.predict} with count_a="
            f"{row.count_a} of n={row.n}; CERTIFY at alpha={alpha} gives p_lower={expected!r} and "
            f"{'abstains' if expected < 0.5 else 'predicts'}: the row was not written by this run"
        )


def _level_independent(identity: dict[str, Any]) -> dict[str, Any]:
    fields = compared_fields(identity)
    return {key: value for key, value in fields.items() if key not in PER_SIGMA_FIELDS}


def _positive(value: Any) -> bool:
    return (
        isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    )
