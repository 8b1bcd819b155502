"""A result file on disk with its settings sidecar and per-process shards: resume, append, merge.

Layout for ``certify.tsv``: the settings in ``certify.settings.json``; with several processes,
process r appends to ``certify.tsv.rank<r>.part`` and rank 0 finally merges every shard into
``certify.tsv`` sorted by idx. Rows once written are kept byte for byte; only a torn last line
(a crash in mid-write) is ever removed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, BinaryIO

from ddsx.certification.identity import identity_differences, read_identity, write_identity
from ddsx.certification.results_file import (
    COLUMNS,
    HEADER,
    ResultFileError,
    ResultRow,
    format_row,
    header_columns,
    split_contents,
)


class SettingsMismatchError(ResultFileError):
    """The file exists and was made with other settings; appending would mix two experiments."""


def sidecar_path(path: str | Path) -> Path:
    """``results.tsv`` -> ``results.settings.json``."""
    path = Path(path)
    return path.with_name(path.stem + ".settings.json")


class ResultStore:
    """The files behind one result path. Methods that only read are safe on every process at once."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.sidecar = sidecar_path(self.path)

    def shard_path(self, rank: int) -> Path:
        return self.path.with_name(f"{self.path.name}.rank{rank}.part")

    def shard_paths(self) -> list[Path]:
        shards = self.path.parent.glob(f"{self.path.name}.rank*.part")
        return sorted(shards, key=lambda p: int(p.name.rsplit(".rank", 1)[1].split(".")[0]))

    # ----- reading (every process) ------------------------------------------------------------
    def check_identity(self, identity: dict[str, Any]) -> bool:
        """Raise unless this run may write here; True when a matching sidecar already exists."""
        rows_exist = self.path.exists() and self.path.stat().st_size > 0 or bool(self.shard_paths())
        if not self.sidecar.exists():
            if rows_exist:
                raise ResultFileError(
                    f"{self.path} (or its .part shards) exists without {self.sidecar.name}, so its settings "
                    "are unknown: delete it or choose another certify.output"
                )
            return False
        differences = identity_differences(read_identity(self.sidecar), identity)
        if differences:
            raise SettingsMismatchError(
                f"refusing to append to {self.path}: it was made with other settings "
                f"({'; '.join(differences)}). Use another certify.output, or delete the file and "
                f"{self.sidecar.name} to start over."
            )
        return True

    def done_indices(self) -> set[int]:
        """idx of every complete row in the result file and in all shards."""
        done: set[int] = set()
        for path in [self.path, *self.shard_paths()]:
            done.update(_row_index(line) for line in self._complete_lines(path))
        return done

    # ----- writing ----------------------------------------------------------------------------
    def write_identity(self, identity: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_identity(self.sidecar, identity)

    def open_for_append(self, path: Path) -> ResultWriter:
        """Open ``path`` (the result file or this process's shard), dropping a torn last line."""
        contents = split_contents(path)
        if contents.header:
            columns = header_columns(contents.header, str(path))
            if columns != COLUMNS:
                raise ResultFileError(f"{path} has columns {columns}, expected {COLUMNS}; cannot append")
        path.parent.mkdir(parents=True, exist_ok=True)
        if contents.torn or not contents.header:
            with open(path, "r+b" if path.exists() else "wb") as handle:
                handle.truncate(contents.complete_size)
        handle = open(path, "ab")  # noqa: SIM115 - closed by ResultWriter
        if not contents.header:
            handle.write(HEADER.encode())
            handle.flush()
        return ResultWriter(handle)

    def merge(self) -> None:
        """Fold every shard into the result file, sorted by idx, then delete the shards.

        Rows keep their bytes; an idx present twice keeps its first copy (the result file first).
        The file is replaced atomically, and shards are deleted only after, so a crash here loses
        nothing. Without shards, a sorted file with no torn tail is left untouched.
        """
        shards = self.shard_paths()
        main = split_contents(self.path)
        if main.header:
            header_columns(main.header, str(self.path))
        rows: dict[int, bytes] = {}
        for path in [self.path, *shards]:
            for line in self._complete_lines(path):
                rows.setdefault(_row_index(line), line)
        order = sorted(rows)
        if not shards and not main.torn and main.header and [_row_index(x) for x in main.lines] == order:
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "wb") as handle:
            handle.write(main.header or HEADER.encode())
            handle.writelines(rows[idx] for idx in order)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(self.path)
        for shard in shards:
            shard.unlink()

    def _complete_lines(self, path: Path) -> list[bytes]:
        contents = split_contents(path)
        if contents.header:
            header_columns(contents.header, str(path))
        return [line for line in contents.lines if line.strip()]


class ResultWriter:
    """Appends rows, each flushed to the OS as soon as it is written (a killed process loses none)."""

    def __init__(self, handle: BinaryIO) -> None:
        self._handle = handle

    def write(self, row: ResultRow) -> None:
        self._handle.write(format_row(row).encode())
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> ResultWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _row_index(line: bytes) -> int:
    try:
        return int(line.split(b"\t", 1)[0])
    except ValueError as error:
        raise ResultFileError(f"a row does not start with an integer idx: {line!r}") from error
