"""Read offline W&B runs (``wandb/offline-run-*/run-*.wandb``) without W&B's servers or its service.

W&B writes an offline run as one ``.wandb`` file: a 7-byte header (``:W&B``, a 2-byte magic, a version
byte), then the LevelDB log format: 32 KiB blocks of chunks, each chunk a 7-byte header (CRC-32C, 2-byte
little-endian length, type: 1 full, 2 first, 3 middle, 4 last) and its bytes; a block's last < 7
bytes are padding. Each record is a W&B ``Record`` protobuf (schema from the installed wandb package).
The file is only parsed as data: nothing in it decides what code runs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HEADER = b":W&B"
HEADER_SIZE = 7
BLOCK_SIZE = 32 * 1024
CHUNK_HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


class WandbFileError(ValueError):
    """A ``.wandb`` file that is not an offline W&B run log; the message names the file."""


def records(path: Path) -> Iterator[bytes]:
    """The serialised records of a ``.wandb`` file, in order; a torn last record is dropped."""
    data = Path(path).read_bytes()
    if not data.startswith(HEADER) or len(data) < HEADER_SIZE:
        raise WandbFileError(f"{path} is not a W&B run file (no :W&B header)")
    position, pending = HEADER_SIZE, b""
    while position + CHUNK_HEADER <= len(data):
        left_in_block = BLOCK_SIZE - position % BLOCK_SIZE
        if left_in_block < CHUNK_HEADER:  # padding at the end of a block
            position += left_in_block
            continue
        length = int.from_bytes(data[position + 4 : position + 6], "little")
        kind = data[position + 6]
        start = position + CHUNK_HEADER
        if length == 0 and kind == 0:  # zero padding (a preallocated tail)
            position += left_in_block
            continue
        if start + length > len(data):
            return  # torn: the writer died in mid-record
        chunk = data[start : start + length]
        position = start + length
        if kind == FULL:
            yield chunk
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            yield pending + chunk
            pending = b""
        else:
            raise WandbFileError(f"{path}: chunk of unknown type {kind} at byte {position - length}")


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
    for data in records(files[0]):
        record = pb.Record()
        try:
            record.ParseFromString(data)
        except Exception as error:  # protobuf's DecodeError: a damaged record
            raise WandbFileError(f"{files[0]}: unreadable record ({error})") from error
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.run_id, run.name = record.run.run_id, record.run.display_name
            run.group, run.job_type = record.run.run_group, record.run.job_type
            run.tags = list(record.run.tags)
            _update(run.config, record.run.config.update)
        elif kind == "config":
            _update(run.config, record.config.update)
        elif kind == "history":
            _update(run.summary, record.history.item)
        elif kind == "summary":
            _update(run.summary, record.summary.update)
        elif kind == "exit":
            run.exit_code = record.exit.exit_code
    # W&B stores config values as {"value": ..., "desc": ...}
    run.config = {k: v.get("value", v) if isinstance(v, dict) else v for k, v in run.config.items()}
    return run


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


def _update(target: dict[str, Any], items) -> None:
    for item in items:
        key = item.key or ".".join(item.nested_key)
        if key.startswith("_"):  # W&B's own bookkeeping (_step, _runtime, _wandb)
            continue
        try:
            target[key] = json.loads(item.value_json)
        except json.JSONDecodeError:
            target[key] = item.value_json
