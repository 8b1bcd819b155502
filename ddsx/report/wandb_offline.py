"""Read offline W&B runs (``wandb/offline-run-*/run-*.wandb``) without W&B's servers or its service.

W&B writes an offline run as one ``.wandb`` file: a 7-byte header (``:W&B``, the magic bytes E1 BE, a
version byte 0), then the LevelDB log format: 32 KiB blocks of chunks, each chunk a 7-byte header
(checksum, 2-byte little-endian length, type: 1 full, 2 first, 3 middle, 4 last) and its bytes; a
block's last < 7 bytes are padding. The checksum is the plain (unmasked) IEEE CRC-32 of the type byte
and the chunk's bytes: that is what wandb 0.31's writer (wandb-core) stores, checked against a file
it wrote in tests/test_wandb_offline.py (LevelDB itself would store a masked CRC-32C). Each record is
a W&B ``Record`` protobuf (schema from the installed wandb package).

The file is hostile data: it is opened only if it is a regular file (no FIFO, device, or symlink),
read block by block up to a size bound, every chunk's checksum is verified, a record may not exceed
a length bound, and every way it can be malformed ends in one :class:`WandbFileError` naming it.
Nothing in it decides what code runs.
"""

from __future__ import annotations

import json
import os
import stat
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ddsx.errors import DDSXError

HEADER = b":W&B"
MAGIC_AND_VERSION = b"\xe1\xbe\x00"
HEADER_SIZE = 7
BLOCK_SIZE = 32 * 1024
CHUNK_HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4
# A ddsx run logs a few hundred records of a few KB; these bounds leave room for long runs while a
# crafted file (a 1.5 GB sparse file, a record of endless MIDDLE chunks) is refused, not read.
MAX_FILE_BYTES = 512 * 1024 * 1024
MAX_RECORD_BYTES = 16 * 1024 * 1024
# Parsed JSON takes up to ~25 times its text ("[[],[],...]"), and every held key costs a dict entry: the
# values a run keeps (last per key, config and summary) are charged their key and JSON text plus
# ENTRY_COST each, and a file that would make the reader hold more than MAX_HELD_BYTES is refused
# before the value is parsed. A ddsx run holds a few hundred short values (tens of KB).
MAX_HELD_BYTES = 8 * 1024 * 1024
ENTRY_COST = 100


class WandbFileError(DDSXError, ValueError):
    """A ``.wandb`` file that is not a well-formed offline W&B run log; the message names the file."""


def records(path: Path) -> Iterator[bytes]:
    """The serialised records of a ``.wandb`` file, in order; WandbFileError on any malformed byte."""
    with _open_regular_file(Path(path)) as file:
        header = file.read(HEADER_SIZE)
        if not header.startswith(HEADER) or header[len(HEADER) :] != MAGIC_AND_VERSION:
            raise WandbFileError(f"{path} is not a W&B run file (no :W&B header of version 0)")
        yield from _records_of_blocks(path, file)


def _open_regular_file(path: Path):
    """``path`` opened for reading if it is a regular file (not a link) of at most MAX_FILE_BYTES."""
    try:
        # O_NOFOLLOW refuses a symlink (to /dev/zero, say); O_NONBLOCK keeps a FIFO from hanging open().
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as error:
        raise WandbFileError(f"{path}: cannot be opened as a regular file ({error.strerror})") from None
    info = os.fstat(descriptor)
    if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_FILE_BYTES:
        os.close(descriptor)
        why = "not a regular file" if not stat.S_ISREG(info.st_mode) else f"{info.st_size:,} bytes"
        raise WandbFileError(f"{path} is refused as a W&B run file ({why}; at most {MAX_FILE_BYTES:,} bytes)")
    return os.fdopen(descriptor, "rb")


def _records_of_blocks(path: Path, file) -> Iterator[bytes]:
    """Join the chunks of every 32 KiB block into records; linear in the file size."""
    pending: list[bytes] | None = None  # chunks of a record begun by a FIRST chunk
    pending_size, block_start, position, total = 0, 0, HEADER_SIZE, HEADER_SIZE
    while block := file.read(BLOCK_SIZE - position):
        block = bytes(position) + block if position else block  # offsets within the block as written
        total += len(block) - position
        if total > MAX_FILE_BYTES:  # the file grew after it was opened
            raise WandbFileError(f"{path}: longer than {MAX_FILE_BYTES:,} bytes")
        while position + CHUNK_HEADER <= len(block):
            length = int.from_bytes(block[position + 4 : position + 6], "little")
            kind = block[position + 6]
            at = block_start + position
            if length == 0 and kind == 0:  # zero padding (a preallocated tail)
                break
            end = position + CHUNK_HEADER + length
            if end > len(block):
                raise WandbFileError(
                    f"{path}: truncated or damaged: the chunk at byte {at} runs past its block"
                )
            stored = int.from_bytes(block[position : position + 4], "little")
            if zlib.crc32(block[position + 6 : end]) != stored:
                raise WandbFileError(f"{path}: damaged: checksum mismatch in the chunk at byte {at}")
            chunk = block[position + CHUNK_HEADER : end]
            position = end
            if kind not in (FULL, FIRST, MIDDLE, LAST):
                raise WandbFileError(f"{path}: chunk of unknown type {kind} at byte {at}")
            if (kind in (FULL, FIRST)) != (pending is None):
                raise WandbFileError(f"{path}: damaged: chunk of type {kind} out of order at byte {at}")
            if kind == FULL:
                yield chunk
                continue
            pending = [] if kind == FIRST else pending
            pending.append(chunk)
            pending_size += len(chunk)
            if pending_size > MAX_RECORD_BYTES:
                raise WandbFileError(f"{path}: a record longer than {MAX_RECORD_BYTES:,} bytes at byte {at}")
            if kind == LAST:
                yield b"".join(pending)
                pending, pending_size = None, 0
        if len(block) < BLOCK_SIZE and any(block[position:]):
            raise WandbFileError(f"{path}: truncated: {len(block) - position} stray bytes at its end")
        block_start += BLOCK_SIZE
        position = 0
    if pending is not None:
        raise WandbFileError(f"{path}: truncated: its last record is incomplete")


@dataclass
class WandbRun:
    """What a report needs of one offline W&B run."""

    path: Path
    run_id: str = ""
    name: str = ""
    group: str = ""
    job_type: str = ""
    tags: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    exit_code: int | None = None


def read_run(folder: Path) -> WandbRun:
    """An ``offline-run-*`` folder: run settings, config, last value of each logged metric, exit code."""
    from wandb.proto import wandb_internal_pb2 as pb  # the schema only; no W&B service is started

    files = sorted(Path(folder).glob("run-*.wandb"))
    if not files:
        raise WandbFileError(f"{folder} holds no run-*.wandb file")
    run = WandbRun(path=Path(folder))
    held = _HeldValues(files[0])
    for data in records(files[0]):
        record = pb.Record()
        try:
            record.ParseFromString(data)
        except Exception as error:  # protobuf's DecodeError (its own nesting limit included)
            raise WandbFileError(f"{files[0]}: unreadable record ({error})") from None
        try:
            _read_record(run, record, held)
        except WandbFileError:
            raise
        except (RecursionError, ValueError) as error:  # a value_json nested too deep, a bad number
            raise WandbFileError(
                f"{files[0]}: unreadable value in a record ({type(error).__name__})"
            ) from None
    # W&B stores config values as {"value": ..., "desc": ...}
    run.config = {k: v.get("value", v) if isinstance(v, dict) else v for k, v in run.config.items()}
    return run


def _read_record(run: WandbRun, record, held: _HeldValues) -> None:
    """Take what a report needs from one record into ``run``."""
    kind = record.WhichOneof("record_type")
    if kind == "run":
        run.run_id, run.name = record.run.run_id, record.run.display_name
        run.group, run.job_type = record.run.run_group, record.run.job_type
        run.tags = list(record.run.tags)
        held.update(run.config, "config", record.run.config.update)
    elif kind == "config":
        held.update(run.config, "config", record.config.update)
    elif kind == "history":
        held.update(run.summary, "summary", record.history.item)
    elif kind == "summary":
        held.update(run.summary, "summary", record.summary.update)
    elif kind == "exit":
        run.exit_code = record.exit.exit_code


def find_runs(paths: list[str | Path]) -> list[Path]:
    """``offline-run-*`` folders given or below the given folders."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir() and path.name.startswith("offline-run-"):
            found.append(path)
        elif path.is_dir():
            found += sorted(p for p in path.rglob("offline-run-*") if p.is_dir())
    return list(dict.fromkeys(found))


class _HeldValues:
    """The last value of each key, parsed from its JSON, with what the run holds bounded by MAX_HELD_BYTES."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.total = 0
        self.charged: dict[tuple[str, str], int] = {}  # (config or summary, key): its charge

    def update(self, target: dict[str, Any], part: str, items) -> None:
        for item in items:
            key = item.key or ".".join(item.nested_key)
            if key.startswith("_"):  # W&B's own bookkeeping (_step, _runtime, _wandb)
                continue
            charge = len(key) + len(item.value_json) + ENTRY_COST
            total = self.total - self.charged.get((part, key), 0) + charge
            if total > MAX_HELD_BYTES:  # refused before json.loads builds the value
                raise WandbFileError(
                    f"{self.path}: its logged values exceed {MAX_HELD_BYTES:,} bytes (at key {key[:80]!r})"
                )
            self.total, self.charged[(part, key)] = total, charge
            try:
                target[key] = json.loads(item.value_json, parse_int=_int_a_float_can_hold)
            except json.JSONDecodeError:
                target[key] = item.value_json


def _int_a_float_can_hold(digits: str) -> int | float:
    """A JSON integer; past float's range (over 308 digits) the float it rounds to (inf): the report
    formats numbers as floats, and ``f"{10**400:.3f}"`` raises OverflowError."""
    return int(digits) if len(digits.lstrip("-")) <= 308 else float(digits)
