"""Crafted .wandb files: each is refused in bounded time and memory with one WandbFileError (an expected
error, exit 2) naming the file; a file written by the real wandb package is read, checksums verified."""

from __future__ import annotations

import os
import threading
import time
import tracemalloc
import zlib
from pathlib import Path

import pytest

from ddsx.errors import DDSXError
from ddsx.report.wandb_offline import BLOCK_SIZE, MIDDLE, WandbFileError, read_run, records
from tests.test_wandb_offline import HEADER, write_log


def refused(path: Path, *words: str, seconds: float = 10, megabytes: float = 64) -> str:
    """Run read_run on ``path``'s folder in a thread (a hang fails, not blocks); its WandbFileError text."""
    outcome: dict[str, BaseException | None] = {}

    def read() -> None:
        try:
            list(records(path))
            outcome["error"] = None
        except BaseException as error:  # noqa: BLE001 - the test inspects whatever came out
            outcome["error"] = error

    tracemalloc.start()
    started = time.perf_counter()
    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    thread.join(seconds)
    elapsed, (_, peak) = time.perf_counter() - started, tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert not thread.is_alive(), f"{path.name}: still reading after {seconds} s"
    error = outcome["error"]
    assert isinstance(error, WandbFileError) and isinstance(error, DDSXError), repr(error)
    assert str(path) in str(error) and "\n" not in str(error)
    for word in words:
        assert word in str(error), str(error)
    assert elapsed < seconds and peak < megabytes * 1e6, (elapsed, peak)
    return str(error)


def test_a_fifo_a_link_to_dev_zero_and_a_huge_sparse_file_are_refused_unread(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo.wandb")
    refused(tmp_path / "fifo.wandb", "regular file")
    (tmp_path / "zero.wandb").symlink_to("/dev/zero")
    refused(tmp_path / "zero.wandb", "regular file")
    with open(tmp_path / "sparse.wandb", "wb") as file:
        file.write(HEADER)
        file.truncate(1_500_000_000)
    refused(tmp_path / "sparse.wandb", "bytes")


def test_a_64_mb_flood_of_middle_chunks_is_refused_in_linear_time(tmp_path: Path) -> None:
    payload = os.urandom(BLOCK_SIZE - 7)
    chunk = zlib.crc32(bytes([MIDDLE]) + payload).to_bytes(4, "little")
    chunk += len(payload).to_bytes(2, "little") + bytes([MIDDLE]) + payload
    first = bytearray(HEADER + b"\0" * (BLOCK_SIZE - len(HEADER)))  # an empty first block
    body = chunk * 2048  # 2048 blocks = 64 MB of one record's middle
    first_chunk = zlib.crc32(bytes([2]) + payload).to_bytes(4, "little") + chunk[4:6] + bytes([2]) + payload
    (tmp_path / "flood.wandb").write_bytes(bytes(first) + first_chunk + body)
    refused(tmp_path / "flood.wandb", "longer than", seconds=10, megabytes=40)


def test_random_bytes_unknown_types_truncation_and_one_flipped_byte_are_refused(tmp_path: Path) -> None:
    (tmp_path / "random.wandb").write_bytes(HEADER + os.urandom(100_000))
    refused(tmp_path / "random.wandb")
    payloads = [os.urandom(300), os.urandom(50_000), os.urandom(20)]
    write_log(tmp_path / "good.wandb", payloads)
    assert list(records(tmp_path / "good.wandb")) == payloads
    data = (tmp_path / "good.wandb").read_bytes()
    for at in (len(HEADER) + 3, len(HEADER) + 100, BLOCK_SIZE + 10, len(data) - 1):
        flipped = bytearray(data)
        flipped[at] ^= 0x01
        (tmp_path / f"flip{at}.wandb").write_bytes(bytes(flipped))
        refused(tmp_path / f"flip{at}.wandb")
    (tmp_path / "cut.wandb").write_bytes(data[: BLOCK_SIZE + 500])
    refused(tmp_path / "cut.wandb", "truncated")
    unknown = bytearray(HEADER) + zlib.crc32(b"\x09abc").to_bytes(4, "little") + b"\x03\x00\x09abc"
    (tmp_path / "unknown.wandb").write_bytes(bytes(unknown))
    refused(tmp_path / "unknown.wandb", "unknown type 9")


def test_a_deeply_nested_value_is_refused_naming_the_file(tmp_path: Path) -> None:
    from wandb.proto import wandb_internal_pb2 as pb

    record = pb.Record()
    item = record.history.item.add()
    item.key, item.value_json = "acc", "[" * 200_000 + "]" * 200_000
    folder = tmp_path / "offline-run-x"
    folder.mkdir()
    write_log(folder / "run-x.wandb", [record.SerializeToString()])
    with pytest.raises(WandbFileError, match="run-x.wandb"):
        read_run(folder)


def test_a_run_written_by_the_real_wandb_package_reads_back_with_checksums_checked(tmp_path: Path) -> None:
    import wandb

    os.environ.setdefault("WANDB_SILENT", "true")
    run = wandb.init(mode="offline", dir=str(tmp_path), project="p", config={"sigma": 0.5, "m": {"n": 2}})
    for step in range(3):
        run.log({"acc": step / 4})
    run.log({"blob": "x" * 100_000})  # a record over several 32 KiB blocks: FIRST, MIDDLE, LAST
    run.finish()
    [folder] = list((tmp_path / "wandb").glob("offline-run-*"))
    read = read_run(folder)
    assert read.config["sigma"] == 0.5 and read.summary["acc"] == 0.5 and read.exit_code == 0
    assert read.summary["blob"] == "x" * 100_000
