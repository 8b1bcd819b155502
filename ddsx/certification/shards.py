"""Join the result files of a sharded certification (one job per ``certify.shard``) into one file.

A run split with ``certify.shard=i certify.num_shards=k`` leaves k result files, each in its own job
folder with its own settings sidecar. :func:`merge_shards` finds them, groups them by what the rows
depend on (the sidecar's compared fields: settings, classifier, denoiser), and for each group checks
before writing anything that

- every row of every shard passes the shared row validator (``row_validation``) against its own
  sidecar: inside that shard's share of the selection, its n / n0 / sigma, a finite radius, ...;
  an error names the shard file and line, never the output;
- the k files agree on num_shards and on the plan (split size, certify.skip, certify.max), and hold
  shards 0..k-1, each exactly once;
- their union is exactly the planned selection: no idx twice, no row missing;

then writes one file sorted by idx (rows byte for byte as the shards hold them) with the sidecar of
shard 0, its ``info`` saying which files it was merged from; a write that fails leaves no output. Rows depend on (seed, idx) only, so the
merged file equals the file of a one-job run, time columns aside.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ddsx.certification.result_file import (
    COLUMNS,
    HEADER,
    ResultFile,
    ResultFileError,
    compared_fields,
    find_result_files,
    parsed_rows,
    read_identity,
    sidecar_path,
    split_contents,
)
from ddsx.certification.row_validation import check_rows, rules_for
from ddsx.certification.selection import Selection


@dataclass(frozen=True)
class ShardFile:
    """One job's result file, its sidecar document, what it was to hold and its rows (idx -> line bytes)."""

    path: Path
    identity: dict[str, Any]
    selection: Selection | None
    lines: dict[int, bytes]

    @property
    def shard(self) -> int:
        return self.selection.shard if self.selection else int(self.identity.get("info", {}).get("shard", 0))

    @property
    def num_shards(self) -> int:
        if self.selection:
            return self.selection.num_shards
        return int(self.identity.get("info", {}).get("num_shards", 1))

    @property
    def planned(self) -> int | None:
        """Rows this shard set out to write: its share of the run's selection."""
        return None if self.selection is None else len(self.selection)


def find_shard_files(paths: Iterable[str | Path]) -> list[Path]:
    """Result files (``*.tsv`` with a ``*.settings.json`` beside them) given or under the given folders."""
    return find_result_files(paths, keep=lambda p: sidecar_path(p).is_file())


def read_shard(path: Path) -> ShardFile:
    """A shard's sidecar and rows, every row validated against the sidecar (errors name ``path`` and
    line); refuses a file without sidecar, with a torn tail or leftover parts."""
    sidecar = sidecar_path(path)
    if not sidecar.is_file():
        raise ResultFileError(f"{path} has no {sidecar.name}: its settings are unknown, it cannot be merged")
    if ResultFile(path).shard_paths():
        raise ResultFileError(f"{path} still has .part files of an unfinished run: finish that job first")
    contents = split_contents(path)
    if contents.torn:
        raise ResultFileError(f"{path} ends in a torn line: its job did not finish; run it again to resume")
    identity = read_identity(sidecar)
    rules = rules_for(identity, str(sidecar))
    checked = check_rows(parsed_rows(path, contents, COLUMNS), rules)
    return ShardFile(path, identity, rules.selection, {idx: row.line for idx, row in checked.items()})


def group_shards(shards: Sequence[ShardFile]) -> list[list[ShardFile]]:
    """Shards of one run together: equal compared fields (settings, classifier, denoiser, format)."""
    groups: dict[str, list[ShardFile]] = {}
    for shard in shards:
        key = json.dumps(compared_fields(shard.identity), sort_keys=True, default=str)
        groups.setdefault(key, []).append(shard)
    return list(groups.values())


def check_complete(group: Sequence[ShardFile]) -> None:
    """Refuse (ResultFileError naming the files) unless ``group`` is shards 0..k-1 of one run, whole."""
    counts = {s.num_shards for s in group}
    if len(counts) != 1:
        listing = ", ".join(f"{s.path} ({s.num_shards})" for s in group)
        raise ResultFileError(f"files of one run disagree on certify.num_shards: {listing}")
    k = counts.pop()
    plans = [s.selection.plan() if s.selection else None for s in group]
    for s, plan in zip(group, plans, strict=True):
        if plan is None or plans[0] is None:
            break
        for name, value in plan.items():
            if value != plans[0][name]:
                raise ResultFileError(
                    f"shards of one run disagree on {name}: {group[0].path} has {plans[0][name]!r}, "
                    f"{s.path} has {value!r}; they are shards of two runs"
                )
    by_shard: dict[int, ShardFile] = {}
    for s in group:
        if s.shard in by_shard:
            raise ResultFileError(f"shard {s.shard} of {k} twice: {by_shard[s.shard].path} and {s.path}")
        by_shard[s.shard] = s
    missing = sorted(set(range(k)) - set(by_shard))
    if missing:
        raise ResultFileError(
            f"shard(s) {missing} of {k} missing for the run of {group[0].path} (found {sorted(by_shard)})"
        )
    # Each shard's rows lie in its own share (read_shard) and the shares are disjoint: with every
    # share whole, the union is exactly the planned selection.
    for s in group:
        if s.planned is not None and len(s.lines) != s.planned:
            raise ResultFileError(
                f"{s.path} (shard {s.shard} of {k}) holds {len(s.lines)} of its {s.planned} rows: rows are "
                "missing; run that job again (it resumes) before merging"
            )


def merge_shards(inputs: Iterable[str | Path], output: str | Path) -> list[Path]:
    """Merge every sharded run found in ``inputs`` into ``output`` (one run) or, for several runs
    (several classifiers), into ``output``'s folder under each shard file's own name.

    Everything is checked before the first file is written; an existing output is never replaced.
    """
    files = find_shard_files(inputs)
    if not files:
        raise ResultFileError(f"no result files with settings sidecars under {', '.join(map(str, inputs))}")
    groups = group_shards([read_shard(path) for path in files])
    for group in groups:
        check_complete(group)
    output = Path(output)
    targets = [output] if len(groups) == 1 else [output.parent / g[0].path.name for g in groups]
    if len(set(targets)) != len(targets):
        raise ResultFileError(
            f"{len(groups)} runs whose shard files share a name; merge them one at a time: "
            + ", ".join(str(g[0].path) for g in groups)
        )
    for target in targets:
        if target.exists() or sidecar_path(target).exists():
            raise ResultFileError(f"{target} exists: merge into another path, or delete it first")
    for group, target in zip(groups, targets, strict=True):
        _write_merged(sorted(group, key=lambda s: s.shard), target)
    return targets


def _write_merged(group: Sequence[ShardFile], target: Path) -> None:
    """Rows first (to a temporary file), then the sidecar, then the rows in place: a failure at any
    point removes what this merge wrote, so a second merge finds the way free."""
    rows = {idx: line for shard in group for idx, line in shard.lines.items()}
    identity = json.loads(json.dumps(group[0].identity))
    identity.setdefault("info", {}).update(
        {"shard": 0, "num_shards": 1, "merged_from": [str(s.path) for s in group]}
    )
    write_whole_result_file(target, (rows[idx] for idx in sorted(rows)), identity)


def write_whole_result_file(target: Path, lines: Iterable[bytes], identity: dict[str, Any]) -> None:
    """A finished result file at once (a merge, a cascade): the rows' encoded ``lines`` to a temporary
    file, then the sidecar, then the rows in place. A failure at any point removes what was written,
    so a second attempt finds the way free."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(HEADER.encode())
            handle.writelines(lines)
            handle.flush()
            os.fsync(handle.fileno())
        ResultFile(target).write_identity(identity)
        tmp.replace(target)
    except BaseException:
        for leftover in (tmp, sidecar_path(target), target):
            leftover.unlink(missing_ok=True)
        raise
