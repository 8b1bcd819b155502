"""Crafted .wandb files: each is refused in bounded time and memory with one WandbFileError (an expected
error, exit 2) naming the file; a file written by the real wandb package is read, checksums verified."""

from __future__ import annotations

import os
import threading
import tracemalloc
import zlib
from pathlib import Path

import pytest

from ddsx.errors import DDSXError
from ddsx.report.wandb_offline import BLOCK_SIZE, MIDDLE, WandbFileError, read_run, records
from tests.test_wandb_offline import HEADER, write_log


def refused(path: Path, *words: str, seconds: float = 60, megabytes: float = 64) -> str:
    """Read ``path`` in a thread (a hang fails after ``seconds``, not blocks the suite); its WandbFileError
    text. Only a hang is timed: speed is shown by experiments/bench/wandb_crafted_files.py's ratios."""
    outcome: dict[str, BaseException | None] = {}

    def read() -> None:
        try:
            list(records(path))
            outcome["error"] = None
        except BaseException as error:  # noqa: BLE001 - the test inspects whatever came out
            outcome["error"] = error

    tracemalloc.start()
    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    thread.join(seconds)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert not thread.is_alive(), f"{path.name}: still reading after {seconds} s"
    error = outcome["error"]
    assert isinstance(error, WandbFileError) and isinstance(error, DDSXError), repr(error)
    assert str(path) in str(error) and "\n" not in str(error)
    for word in words:
        assert word in str(error), str(error)
    assert peak < megabytes * 1e6, peak
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


def test_a_64_mb_flood_of_middle_chunks_is_refused_at_the_record_bound(tmp_path: Path) -> None:
    payload = os.urandom(BLOCK_SIZE - 7)
    chunk = zlib.crc32(bytes([MIDDLE]) + payload).to_bytes(4, "little")
    chunk += len(payload).to_bytes(2, "little") + bytes([MIDDLE]) + payload
    first = bytearray(HEADER + b"\0" * (BLOCK_SIZE - len(HEADER)))  # an empty first block
    body = chunk * 2048  # 2048 blocks = 64 MB of one record's middle
    first_chunk = zlib.crc32(bytes([2]) + payload).to_bytes(4, "little") + chunk[4:6] + bytes([2]) + payload
    (tmp_path / "flood.wandb").write_bytes(bytes(first) + first_chunk + body)
    refused(tmp_path / "flood.wandb", "longer than", megabytes=40)


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


def run_folder(tmp_path: Path, records_: list) -> Path:
    folder = tmp_path / "offline-run-x"
    folder.mkdir(exist_ok=True)
    write_log(folder / "run-x.wandb", [record.SerializeToString() for record in records_])
    return folder


def history(**values: str):
    from wandb.proto import wandb_internal_pb2 as pb

    record = pb.Record()
    for key, value_json in values.items():
        item = record.history.item.add()
        item.key, item.value_json = key, value_json
    return record


def test_values_that_would_hold_too_much_memory_are_refused_before_parsing(
    tmp_path: Path, monkeypatch
) -> None:
    import ddsx.report.wandb_offline as reader

    # 3 MB of "[[],[],...]" parses to ~65 MB of lists: four keys of it exceed the 8 MB held bound
    lists = "[" + "[]," * 1_000_000 + "[]]"
    folder = run_folder(tmp_path, [history(**{f"k{i}": lists}) for i in range(4)])
    tracemalloc.start()
    with pytest.raises(WandbFileError, match="run-x.wandb: its logged values exceed 8,388,608 bytes"):
        read_run(folder)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 250e6, peak
    # many small keys are charged ENTRY_COST each; one key logged again and again replaces its charge
    monkeypatch.setattr(reader, "MAX_HELD_BYTES", 100 * (reader.ENTRY_COST + 11))  # "key00000", "0.5"
    folder = run_folder(tmp_path, [history(**{f"key{i:05d}": "0.5" for i in range(101)})])
    with pytest.raises(WandbFileError, match="at key 'key00100'"):
        read_run(folder)
    folder = run_folder(tmp_path, [history(acc=f"{step / 1000}") for step in range(1000)])
    assert read_run(folder).summary["acc"] == 0.999


def test_an_integer_past_float_range_reads_as_inf_and_the_report_shows_it(tmp_path: Path) -> None:
    from ddsx.report.tables import wandb_table

    folder = run_folder(tmp_path, [history(**{"cert/acr": "1" + "0" * 400, "cert/samples_mean": "12"})])
    run = read_run(folder)
    assert run.summary["cert/acr"] == float("inf") and run.summary["cert/samples_mean"] == 12
    _, [row] = wandb_table([run], [0.0])
    assert row[-2:] == ["inf", "12"]


def test_ddsx_report_shows_a_damaged_w_and_b_run_in_one_line_with_exit_2(tmp_path: Path, capsys) -> None:
    from ddsx.cli.report import main

    folder = run_folder(tmp_path, [history(acc="0.5")])
    data = bytearray((folder / "run-x.wandb").read_bytes())
    data[-1] ^= 0x01
    (folder / "run-x.wandb").write_bytes(bytes(data))
    with pytest.raises(SystemExit) as exit_:
        main([str(tmp_path), "--out", str(tmp_path / "report")])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and "\n" not in err, err
    assert "run-x.wandb: damaged: checksum mismatch" in err, err
