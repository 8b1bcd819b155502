"""The certification result file: one TSV row per example, written and flushed as soon as it is known.

Columns: ``idx label predict radius correct time`` (the layout of Cohen et al.'s files, so their
tools read ours) then ``count_a n n0 p_lower sigma t_star seconds``. ``correct`` is 1 when the
certified prediction equals the label (an abstention is never correct); ``radius`` and ``p_lower``
are written at full precision (``repr`` of the float), ``t_star`` is ``NA`` without a diffusion
denoiser. Readers also accept Cohen et al.'s six-column files.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

BASE_COLUMNS = ("idx", "label", "predict", "radius", "correct", "time")
EXTRA_COLUMNS = ("count_a", "n", "n0", "p_lower", "sigma", "t_star", "seconds")
COLUMNS = BASE_COLUMNS + EXTRA_COLUMNS
HEADER = "\t".join(COLUMNS) + "\n"
MISSING = "NA"


class ResultFileError(ValueError):
    """A result file that ddsx cannot read or must not append to."""


@dataclass(frozen=True)
class ResultRow:
    """One certified example; the extra columns are None when read from a six-column file."""

    idx: int
    label: int
    predict: int
    radius: float
    correct: int
    time: str
    count_a: int | None = None
    n: int | None = None
    n0: int | None = None
    p_lower: float | None = None
    sigma: float | None = None
    t_star: int | None = None
    seconds: float | None = None


def format_elapsed(seconds: float) -> str:
    """Cohen et al.'s ``time`` column: ``H:MM:SS.ffffff``."""
    return str(datetime.timedelta(seconds=float(seconds)))


def format_row(row: ResultRow) -> str:
    """The TSV line (with its newline) for ``row``; floats round-trip exactly."""
    fields = [
        str(int(row.idx)),
        str(int(row.label)),
        str(int(row.predict)),
        repr(float(row.radius)),
        str(int(row.correct)),
        row.time,
        _opt(row.count_a, int),
        _opt(row.n, int),
        _opt(row.n0, int),
        _opt(row.p_lower, lambda v: repr(float(v))),
        _opt(row.sigma, lambda v: repr(float(v))),
        _opt(row.t_star, int),
        _opt(row.seconds, lambda v: f"{float(v):.6f}"),
    ]
    return "\t".join(fields) + "\n"


def parse_row(line: str, columns: tuple[str, ...] = COLUMNS, where: str = "") -> ResultRow:
    """Parse one TSV line laid out as ``columns`` (the file's header)."""
    fields = line.rstrip("\n").split("\t")
    if len(fields) != len(columns):
        raise ResultFileError(f"{where}: expected {len(columns)} tab-separated fields, got {len(fields)}")
    values = dict(zip(columns, fields, strict=True))
    try:
        return ResultRow(
            idx=int(values["idx"]),
            label=int(values["label"]),
            predict=int(values["predict"]),
            radius=float(values["radius"]),
            correct=int(values["correct"]),
            time=values["time"],
            count_a=_parse_opt(values.get("count_a"), int),
            n=_parse_opt(values.get("n"), int),
            n0=_parse_opt(values.get("n0"), int),
            p_lower=_parse_opt(values.get("p_lower"), float),
            sigma=_parse_opt(values.get("sigma"), float),
            t_star=_parse_opt(values.get("t_star"), int),
            seconds=_parse_opt(values.get("seconds"), float),
        )
    except (KeyError, ValueError) as error:
        raise ResultFileError(f"{where}: cannot parse row {line!r}: {error}") from error


@dataclass(frozen=True)
class FileContents:
    """A result file split at its last newline: what a crash can leave is a torn tail after it."""

    header: bytes  # b"" when the file is empty or its header is torn
    lines: list[bytes]  # complete rows, each ending in b"\n", byte for byte as on disk
    torn: bytes  # bytes after the last newline (a row cut by a crash), usually b""

    @property
    def complete_size(self) -> int:
        return len(self.header) + sum(len(line) for line in self.lines)


def split_contents(path: Path) -> FileContents:
    """Read ``path`` (which may not exist) without interpreting rows."""
    data = path.read_bytes() if path.exists() else b""
    end = data.rfind(b"\n") + 1
    complete, torn = data[:end], data[end:]
    if not complete:
        return FileContents(b"", [], torn)
    lines = complete.splitlines(keepends=True)
    return FileContents(lines[0], lines[1:], torn)


def header_columns(header: bytes, where: str) -> tuple[str, ...]:
    """The columns a header line names; error unless it starts with the six base columns."""
    columns = tuple(header.decode("utf-8").rstrip("\n").split("\t"))
    if columns[: len(BASE_COLUMNS)] != BASE_COLUMNS:
        raise ResultFileError(f"{where} is not a certification file: its header is {header!r}")
    return columns


def parse_lines(
    lines: list[bytes], columns: tuple[str, ...], path: Path, first_line: int = 2
) -> list[ResultRow]:
    return [
        parse_row(line.decode("utf-8"), columns, where=f"{path}:{first_line + i}")
        for i, line in enumerate(lines)
        if line.strip()
    ]


def read_results(path: str | Path) -> list[ResultRow]:
    """All complete rows of a result file (ddsx or Cohen et al. layout); a torn last line is ignored."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"result file not found: {path}")
    contents = split_contents(path)
    if not contents.header:
        return []
    return parse_lines(contents.lines, header_columns(contents.header, str(path)), path)


def _opt(value, fmt) -> str:
    return MISSING if value is None else str(fmt(value))


def _parse_opt(text: str | None, kind):
    return None if text is None or text in (MISSING, "", "None") else kind(text)
