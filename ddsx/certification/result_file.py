"""One certification result file: its format, the settings beside it, its lock, validation, resume, shards.

For ``certify.tsv`` a run owns:

- ``certify.tsv``: one TSV row per example, flushed as soon as it is known. Columns
  ``idx label predict radius correct time`` (Cohen et al.'s layout, so their tools read ours), then
  ``samples count_a n n0 p_lower sigma t_star seconds certified_at``. ``samples`` is the number of
  noisy copies the decision used after the n0 selection (n in fixed mode); ``certified_at`` the
  number after which the reported radius was certified (NA when abstaining; n in fixed mode); ``correct`` is 1 when the certified
  prediction equals the label (an abstention is never correct); floats are written with ``repr``
  (exact round trip); ``NA`` marks a missing value. Readers also accept Cohen et al.'s six columns.
- ``certify.settings.json``: what produced the rows (see :func:`run_identity`): the settings and
  models a row depends on (compared on resume) and descriptive information (never compared).
- ``certify.tsv.lock``: an OS lock (``fcntl.flock``) held by the one process that writes the file,
  released by the OS when that process dies; the file holds the holder's pid.
- ``certify.tsv.rank<r>.part``: with several processes, rank r's rows until rank 0 merges them.

Rows once written are kept byte for byte; only a torn last line (a crash in mid-write) is removed.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from torch import nn

import ddsx
from ddsx.certification.settings import environment
from ddsx.loggers.wandb import flatten
from ddsx.models.identity import construction, module_fingerprint
from ddsx.utils.logging import get_logger

log = get_logger(__name__)

BASE_COLUMNS = ("idx", "label", "predict", "radius", "correct", "time")
EXTRA_COLUMNS = ("samples", "count_a", "n", "n0", "p_lower", "sigma", "t_star", "seconds", "certified_at")
COLUMNS = BASE_COLUMNS + EXTRA_COLUMNS
HEADER = "\t".join(COLUMNS) + "\n"
MISSING = "NA"
# /3: the models' recorded constructor arguments (ddsx.models.identity) joined the compared settings.
FORMAT = "ddsx-certify/3"
# The rank in a shard's name, as shard_path writes it (no sign, no leading zeros).
_SHARD_RANK = re.compile(r"0|[1-9][0-9]*")
# Stray shard-like files already warned about in this process (one warning per file, not per listing).
_STRAYS_REPORTED: set[Path] = set()


class ResultFileError(ValueError):
    """A result file that ddsx cannot read or must not append to; the message names the file."""


class SettingsMismatchError(ResultFileError):
    """The file exists and was made with other settings; appending would mix two experiments."""


class ResultFileLockedError(ResultFileError):
    """Another process is writing the same result file."""


class ResultWriteError(ResultFileError):
    """The disk refused a write (full, over quota, read-only, no permission); the message names the file."""


# What the disk or its mount, not ddsx, refuses: the user fixes it from the message (free space, pick
# another certify.output). Any other OSError is a bug and keeps its traceback.
_REFUSED_WRITES = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM)


@contextlib.contextmanager
def refused_writes_named(path: str | Path, kept: str = "") -> Iterator[None]:
    """Turn a write the disk refuses inside the block into ResultWriteError naming ``path`` (and, in
    ``kept``, what is safe on disk already)."""
    try:
        yield
    except OSError as error:
        if error.errno not in _REFUSED_WRITES:
            raise
        reason = os.strerror(error.errno).lower()
        raise ResultWriteError(f"cannot write {path}: {reason}{kept}") from error


def check_writable(path: str | Path) -> None:
    """Refuse now, before any model is built, a result path where the run could not write its files.

    The nearest existing folder on the way to ``path`` must take a new file (tried with a real one:
    permissions, read-only mounts and root's rights all answer the same way), and ``path`` itself, if
    it exists, must be a file that opens for appending. Nothing is left behind.
    """
    path = Path(path)
    if path.is_dir():
        raise ResultWriteError(f"certify.output={path} is a folder; it must be a file path")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise ResultWriteError(f"cannot write certify.output={path}: {folder} is not a folder")
    with refused_writes_named(f"certify.output={path}", f" (tried in {folder}; choose another one)"):
        descriptor, probe = tempfile.mkstemp(prefix=".ddsx-write-check-", dir=folder)
        os.close(descriptor)
        os.unlink(probe)
        if path.exists():
            open(path, "ab").close()


# ----- rows ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResultRow:
    """One certified example; the extra columns are None when read from a six-column file."""

    idx: int
    label: int
    predict: int
    radius: float
    correct: int
    time: str
    samples: int | None = None
    count_a: int | None = None
    n: int | None = None
    n0: int | None = None
    p_lower: float | None = None
    sigma: float | None = None
    t_star: int | None = None
    seconds: float | None = None
    certified_at: int | None = None


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
        _opt(row.samples, int),
        _opt(row.count_a, int),
        _opt(row.n, int),
        _opt(row.n0, int),
        _opt(row.p_lower, lambda v: repr(float(v))),
        _opt(row.sigma, lambda v: repr(float(v))),
        _opt(row.t_star, int),
        _opt(row.seconds, lambda v: f"{float(v):.6f}"),
        _opt(row.certified_at, int),
    ]
    return "\t".join(fields) + "\n"


_KINDS = {"samples": int, "count_a": int, "n": int, "n0": int, "p_lower": float, "sigma": float}
_KINDS |= {"t_star": int, "seconds": float, "certified_at": int}


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
            **{name: _parse_opt(values.get(name), kind) for name, kind in _KINDS.items()},
        )
    except (KeyError, ValueError) as error:
        raise ResultFileError(f"{where}: cannot parse row {line!r}: {error}") from error


@dataclass(frozen=True)
class FileContents:
    """A file split at its last newline: what a crash can leave is a torn tail after it."""

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
    columns = tuple(header.decode("utf-8", errors="replace").rstrip("\n").split("\t"))
    if columns[: len(BASE_COLUMNS)] != BASE_COLUMNS:
        raise ResultFileError(f"{where}:1 is not a certification file header: {header[:200]!r}")
    return columns


def read_results(path: str | Path) -> list[ResultRow]:
    """All complete rows of a result file (ddsx or Cohen et al. layout); a torn last line is ignored.

    A blank line or a row that does not parse is an error naming the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"result file not found: {path}")
    contents = split_contents(path)
    if not contents.header:
        return []
    return [row for row, _, _ in parsed_rows(path, contents)]


def parsed_rows(
    path: Path, contents: FileContents, columns: tuple[str, ...] | None = None
) -> Iterator[tuple[ResultRow, bytes, str]]:
    """(row, its bytes, "file:line") of each complete row; ``columns`` required of the header if given.

    What every reader parses; ``row_validation.check_rows`` then says whether the rows belong to the run.
    """
    if not contents.header:
        return
    found = header_columns(contents.header, str(path))
    if columns is not None and found != columns:
        raise ResultFileError(f"{path}:1 has columns {found}, expected {columns}")
    for number, line in enumerate(contents.lines, start=2):
        where = f"{path}:{number}"
        yield parse_row(_decode(line, path, number), found, where=where), line, where


# ----- what produced the rows: the settings sidecar ----------------------------------------------


def sidecar_path(path: str | Path) -> Path:
    """``results.tsv`` -> ``results.settings.json``."""
    path = Path(path)
    return path.with_name(path.stem + ".settings.json")


def find_result_files(paths: Iterable[str | Path], keep: Callable[[Path], bool] = Path.is_file) -> list[Path]:
    """Files as given; folders searched recursively for ``*.tsv`` (run or multirun folders), keeping
    those ``keep`` accepts. Resolved, each once, in order; FileNotFoundError for a path that is neither."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*.tsv") if keep(p)))
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"no such file or folder: {path}")
    return list(dict.fromkeys(p.resolve() for p in found))


# Keys of a denoiser's describe() that say where it was loaded from, not what it computes.
_DENOISER_LOCATION_KEYS = ("source", "path")


def describe_denoiser(denoiser: nn.Module | None) -> dict[str, Any]:
    """What the denoiser computes: describe() minus its path, its recorded construction, fingerprint."""
    if denoiser is None:
        return {"name": "none", "fingerprint": module_fingerprint(None)}
    described = dict(denoiser.describe()) if hasattr(denoiser, "describe") else {}
    described.setdefault("name", type(denoiser).__name__)
    for key in _DENOISER_LOCATION_KEYS:
        described.pop(key, None)
    return described | construction(denoiser)[0] | {"fingerprint": module_fingerprint(denoiser)}


def describe_classifier(classifier: nn.Module) -> dict[str, Any]:
    """Class, weights, and every recorded constructor call (the input adapter's resize size and
    normalisation live outside the weights' meaning)."""
    return {
        "name": type(classifier).__name__,
        "fingerprint": module_fingerprint(classifier),
    } | construction(classifier)[0]


def describe_data(dataset: Any) -> dict[str, Any]:
    """The dataset's class and transforms (following Subset-like wrappers), without memory addresses."""
    transforms, layer, depth = [], dataset, 0
    while layer is not None and depth < 8:
        transform = getattr(layer, "transform", None)
        if transform is not None:
            transforms.append(_without_addresses(repr(transform)))
        layer, depth = getattr(layer, "dataset", None), depth + 1
    return {"class": type(dataset).__name__, "transforms": transforms}


def describe_split(dataset: Any, split_seed: int | None) -> dict[str, Any]:
    """The sidecar's ``dataset`` part, compared on resume: which examples row idx i names.

    The split seed (the datamodule's ``split_seed``) and the dataset's own ``fingerprint()`` (ddsx's
    datasets hash which stored examples they serve, in order, with their labels; None for a dataset
    without one, where the seed alone is compared). See ``ddsx.certification.selection``.
    """
    fingerprint = getattr(dataset, "fingerprint", None)
    return {
        "split_seed": None if split_seed is None else int(split_seed),
        "fingerprint": fingerprint() if callable(fingerprint) else None,
    }


def source_indices(dataset: Any) -> list[int] | None:
    """Position -> idx for a dataset that serves a subset of a larger split, else None (idx = position)."""
    source = getattr(dataset, "source_indices", None)
    return None if source is None else [int(i) for i in source]


def run_identity(
    settings: Any,
    *,
    classifier: nn.Module,
    denoiser: nn.Module | None,
    dataset_name: str,
    dataset: Any,
    split_size: int,
    device_type: str,
    noise_block_size: int,
    model_source: str,
    run_info: dict[str, Any] | None = None,
    split_seed: int | None = None,
) -> dict[str, Any]:
    """The sidecar document of one run: ``settings``, ``model``, ``denoiser`` are compared on resume.

    Args:
        settings: CertifySettings, sigma resolved.
        classifier: the classifier h (fingerprint, input adapter).
        denoiser: the denoiser D, or None: its whole ``describe()`` except the path it came from.
        dataset_name, dataset, split_size: which data (name, class and transforms, split size).
        device_type: "cpu", "cuda", ...: noise streams differ between device types.
        noise_block_size: noise samples per generator call (the stream depends on it).
        model_source: where the classifier came from (checkpoint path or config target); informative.
        run_info: descriptive fields for report labels (method, training sigma, ...); never compared.
        split_seed: the seed that made the split (``dataset.split_seed``), compared with the split's
            fingerprint (:func:`describe_split`).
    """
    row_settings = settings.row_settings() | {
        "dataset": dataset_name,
        "split_size": int(split_size),
        "data": describe_data(dataset),
        "device_type": device_type,
        "noise_block_size": int(noise_block_size),
    }
    return _jsonable(
        {
            "format": FORMAT,
            "settings": row_settings,
            "model": describe_classifier(classifier),
            "denoiser": describe_denoiser(denoiser),
            "dataset": describe_split(dataset, split_seed),
            "info": {
                "model_source": model_source,
                # The denoiser's whole description with where it came from: report labels, never compared.
                "denoiser": dict(denoiser.describe()) if hasattr(denoiser, "describe") else {},
                # Constructor arguments that are recorded but never compared (ddsx.models.identity).
                "uncompared": {
                    "model": construction(classifier)[1],
                    "denoiser": construction(denoiser)[1] if denoiser is not None else {},
                },
                "run": run_info or {},
                "batch_size": settings.batch_size,
                "skip": settings.skip,
                "max": settings.max_examples,
                "radii": list(settings.radii),
                "check_every": settings.check_every,
                # Which part of the run's examples this file holds (certify.shard of num_shards).
                "shard": getattr(settings, "shard", 0),
                "num_shards": getattr(settings, "num_shards", 1),
                # A subset's idx in the full split (the selection's positions -> row idx); None: idx = position.
                "source_indices": source_indices(dataset),
                "ddsx_version": ddsx.__version__,
                # library versions and the device: why the same seed may give other numbers elsewhere
                "environment": environment(device_type),
                "created": datetime.datetime.now().isoformat(timespec="seconds"),
            },
        }
    )


def compared_fields(identity: dict[str, Any]) -> dict[str, Any]:
    """Flattened fields that must match to append: ``certify.sigma``, ``model.fingerprint``,
    ``denoiser.arguments.pad_value``, ``model.parts.adapter.arguments.input_size``,
    ``dataset.split_seed``, ..."""
    fields = flatten({"certify": identity.get("settings", {})})
    fields |= flatten({part: identity.get(part, {}) for part in ("model", "denoiser", "dataset")})
    fields["format"] = identity.get("format")
    return fields


def identity_differences(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Human-readable differences between two sidecars, one per differing field (empty: same run)."""
    old, new = compared_fields(stored), compared_fields(current)
    return [
        f"{key}: the file was made with {old.get(key)!r}, this run has {new.get(key)!r}"
        for key in sorted(set(old) | set(new))
        if old.get(key) != new.get(key)
    ]


def format_refusal(path: Path, stored_format: Any) -> str:
    """Why a result file of another sidecar format is not appended to, and what to do instead."""
    if stored_format == "ddsx-certify/2":
        why = (
            "an earlier ddsx wrote it (settings format ddsx-certify/2), and that format does not record "
            "the models' constructor arguments (pad_value, for one), so this run cannot tell whether it "
            "certifies the same base classifier"
        )
    else:
        why = f"its settings file has format {stored_format!r}, which this ddsx ({FORMAT}) does not append to"
    return (
        f"refusing to append to {path}: {why}. Its rows stay readable (ddsx-report); certify into another "
        f"certify.output, or delete the file and {sidecar_path(path).name} to start over."
    )


def read_identity(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ResultFileError(
            f"{path} is not valid JSON ({error}); delete it with its result file"
        ) from error
    if not isinstance(document, dict):
        raise ResultFileError(f"{path} is not a ddsx settings file (not a JSON object)")
    return document


# ----- the file on disk -------------------------------------------------------------------------


class ResultFile:
    """The files behind one result path. Reading methods are safe on every process at once.

    The order a run follows: :meth:`lock` (rank 0), :meth:`validate` (every rank, read-only),
    :meth:`write_identity`, :meth:`open_for_append` per process, :meth:`merge` (rank 0).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.sidecar = sidecar_path(self.path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")

    def shard_path(self, rank: int) -> Path:
        return self.path.with_name(f"{self.path.name}.rank{rank}.part")

    def shard_paths(self) -> list[Path]:
        """This file's shards in rank order: exactly the names :meth:`shard_path` makes.

        A file that only looks like one (``certify.tsv.rank_old.part``, a copy kept by hand) was not
        written by a rank of this run: it is left alone and never read, with a warning naming it.
        """
        if not self.path.parent.is_dir():
            return []
        prefix, shards = f"{self.path.name}.rank", {}
        for candidate in self.path.parent.iterdir():
            name = candidate.name
            if not (name.startswith(prefix) and name.endswith(".part")):
                continue
            rank = _SHARD_RANK.fullmatch(name[len(prefix) : -len(".part")])
            if rank is None:
                # A run lists its shards at validation and again at the merge: say it once.
                if candidate not in _STRAYS_REPORTED:
                    _STRAYS_REPORTED.add(candidate)
                    log.warning(
                        "ignoring %s: not a shard ddsx writes (those end in .rank<number>.part)",
                        candidate,
                    )
            else:
                shards[int(rank.group())] = candidate
        return [shards[rank] for rank in sorted(shards)]

    # ----- one writer ---------------------------------------------------------------------------
    def lock(self) -> FileLock:
        """Take the writer's lock now, or fail at once naming the file and the holder's pid."""
        with refused_writes_named(self.lock_path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return FileLock(self.lock_path, self.path)

    # ----- validation (read-only, before any work) ----------------------------------------------
    def validate(
        self, identity: dict[str, Any], label_of: Callable[[int], int | None] | None = None
    ) -> set[int]:
        """Check the file, its shards and sidecar whole; return the idx already done.

        Refuses (ResultFileError naming file and line): a header that is not ours, a blank or
        unparsable complete row, rows without a sidecar, a sidecar made with other settings
        (SettingsMismatchError), and every row the shared row validator refuses against this run's
        ``identity`` (``row_validation``: an idx outside the selection or twice with different content,
        another n / n0 / sigma, a radius that is not finite or too large, a label other than
        ``label_of(idx)``, the dataset's). A torn last line is allowed (it is dropped when the file is
        opened for appending); identical duplicate rows are allowed (merged into one).
        """
        # Imported here: the validator reads rows with this module's parser.
        from ddsx.certification.row_validation import check_rows, rules_for

        files = [p for p in [self.path, *self.shard_paths()] if p.exists()]
        rows_exist = any(p.stat().st_size > 0 for p in files)
        if not self.sidecar.exists():
            if rows_exist:
                raise ResultFileError(
                    f"{self.path} (or its .part shards) exists without {self.sidecar.name}, so its "
                    "settings are unknown: delete it or choose another certify.output"
                )
        else:
            stored = read_identity(self.sidecar)
            if stored.get("format") != identity.get("format"):
                raise SettingsMismatchError(format_refusal(self.path, stored.get("format")))
            differences = identity_differences(stored, identity)
            if differences:
                raise SettingsMismatchError(
                    f"refusing to append to {self.path}: it was made with other settings "
                    f"({'; '.join(differences)}). Use another certify.output, or delete the file and "
                    f"{self.sidecar.name} to start over."
                )
        rules = rules_for(identity, f"the settings of {self.path}", label_of)
        entries = (entry for path in files for entry in parsed_rows(path, split_contents(path), COLUMNS))
        return set(check_rows(entries, rules))

    # ----- writing ------------------------------------------------------------------------------
    def write_identity(self, identity: dict[str, Any]) -> None:
        """Write atomically, so a crash never leaves a half sidecar."""
        tmp = self.sidecar.with_name(self.sidecar.name + ".tmp")
        with refused_writes_named(self.sidecar, " (no row was written yet)"):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(identity, indent=2, sort_keys=True) + "\n")
            tmp.replace(self.sidecar)

    def open_for_append(self, path: Path) -> ResultWriter:
        """Open ``path`` (the result file or this process's shard), dropping a torn last line."""
        contents = split_contents(path)
        with refused_writes_named(path, " (no row was written yet)"):
            path.parent.mkdir(parents=True, exist_ok=True)
            if contents.torn or not contents.header:
                with open(path, "r+b" if path.exists() else "wb") as handle:
                    handle.truncate(contents.complete_size)
            # Unbuffered: a row goes to the OS at once, and a refused write leaves no buffer behind that
            # close() would try, and fail, to write again.
            writer = ResultWriter(open(path, "ab", buffering=0), path)  # noqa: SIM115 - closed by the caller
            if not contents.header:
                writer.write_bytes(HEADER.encode())
        return writer

    def merge(self) -> None:
        """Fold every shard into the result file, sorted by idx, then delete the shards.

        Rows keep their bytes; identical duplicates are kept once. The file is replaced
        atomically, and shards are deleted only after, so a crash here loses nothing. A sorted
        file without shards, duplicates or torn tail is left untouched.
        """
        shards = self.shard_paths()
        main = split_contents(self.path)
        rows: dict[int, bytes] = {}
        for path in [self.path, *shards]:
            for line in split_contents(path).lines:
                rows.setdefault(int(line.split(b"\t", 1)[0]), line)
        order = sorted(rows)
        in_file = [int(line.split(b"\t", 1)[0]) for line in main.lines]
        if not shards and not main.torn and main.header and in_file == order:
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            with refused_writes_named(tmp, " (the rows are safe in the shards; free space and run again)"):
                with open(tmp, "wb") as handle:
                    handle.write(main.header or HEADER.encode())
                    handle.writelines(rows[idx] for idx in order)
                    handle.flush()
                    os.fsync(handle.fileno())
        except ResultWriteError:
            tmp.unlink(missing_ok=True)
            raise
        tmp.replace(self.path)
        for shard in shards:
            shard.unlink()


class FileLock:
    """An exclusive ``fcntl.flock`` on ``lock_path`` for as long as this object is open.

    The OS releases it when the process dies, so a killed run never leaves a stale lock (its file, with
    the dead pid in it, is taken over by the next run). A clean release removes the file, while still
    holding the lock; a process that opened the file just before is told by the inode check below
    that it locked a removed file, and opens the path anew.
    """

    def __init__(self, lock_path: Path, guarded: Path) -> None:
        self.path = lock_path
        while True:
            self._handle = open(lock_path, "a+")  # noqa: SIM115 - closed by release(); never truncates
            try:
                fcntl.flock(self._handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                if error.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
                self._handle.seek(0)
                holder = self._handle.read().strip() or "unknown"
                self._handle.close()
                raise ResultFileLockedError(
                    f"{guarded} is being written by another process (pid {holder}, lock {lock_path.name}); "
                    "wait for it to finish or choose another certify.output"
                ) from None
            if _same_file(self._handle, lock_path):
                break
            self._handle.close()  # locked a file its holder removed on release: take the path's own
        self._handle.seek(0)
        self._handle.truncate()
        self._handle.write(f"{os.getpid()}\n")
        self._handle.flush()

    def release(self) -> None:
        if not self._handle.closed:
            self.path.unlink(missing_ok=True)  # before unlocking: nobody can take the removed file's lock
            fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)
            self._handle.close()

    def __enter__(self) -> FileLock:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def _same_file(handle: Any, path: Path) -> bool:
    """Whether the open ``handle`` is still the file at ``path`` (not removed or replaced since)."""
    try:
        return os.fstat(handle.fileno()).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


class ResultWriter:
    """Appends rows to ``path``, each handed to the OS as soon as it is written (a killed process loses
    none). A write the disk refuses (full, say) is a ResultWriteError saying that the rows before it
    are kept: a row the disk took only part of is a torn last line, which a resume redoes."""

    def __init__(self, handle: BinaryIO, path: Path) -> None:
        self._handle = handle
        self.path = path
        self.rows = 0

    def write(self, row: ResultRow) -> None:
        self.write_bytes(format_row(row).encode())
        self.rows += 1

    def write_bytes(self, data: bytes) -> None:
        kept = (
            f" after {self.rows} rows of this run, which are kept with the earlier ones; free space "
            "(or choose another certify.output) and run the same command again to resume"
        )
        with refused_writes_named(self.path, kept):
            view = memoryview(data)
            while view:  # an unbuffered write may take only part of the data
                view = view[self._handle.write(view) :]
            self._handle.flush()

    def close(self) -> None:
        self._handle.close()


# ----- helpers ------------------------------------------------------------------------------------


def _decode(line: bytes, path: Path, number: int) -> str:
    if not line.strip():
        raise ResultFileError(f"{path}:{number}: blank line")
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ResultFileError(f"{path}:{number}: not UTF-8 text ({error})") from error


def _opt(value, fmt) -> str:
    return MISSING if value is None else str(fmt(value))


def _parse_opt(text: str | None, kind):
    return None if text is None or text in (MISSING, "", "None") else kind(text)


def _without_addresses(text: str) -> str:
    """``<function f at 0x7f...>`` -> ``<function f>``: a repr must not change between runs."""
    return re.sub(r" at 0x[0-9a-fA-F]+", "", text)


def _jsonable(value: Any) -> Any:
    """Round-trip through JSON so the stored and compared documents are the same plain values."""
    return json.loads(json.dumps(value, default=str))
