"""The crafted offline W&B runs of issue 21 item 5, each given to ddsx-report in its own process.

    .venv/bin/python experiments/bench/wandb_crafted_files.py > experiments/results/reliability/wandb_crafted_files.txt

Per case: the exit code and stderr's last line of ``ddsx-report <folder>``, its wall time and peak
resident memory (ru_maxrss of that process: the interpreter and ddsx-report's imports included, see the
genuine run for that base). A case still running after TIMEOUT seconds is killed and shown as a hang.
Then the reader's linearity: records() on a record of k MIDDLE chunks and on files of many records,
each size doubled; a reader linear in the file size shows a time ratio near 2 per doubling (repeated
bytes concatenation would show ~4 on the single record).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from ddsx.report.wandb_offline import BLOCK_SIZE, FIRST, LAST, MIDDLE, records  # noqa: E402
from tests.test_wandb_offline import HEADER, write_log  # noqa: E402  (the log writer the tests use)

TIMEOUT = 120


def chunk(kind: int, payload: bytes) -> bytes:
    """One log chunk: IEEE CRC-32 of type and bytes, 2-byte length, type, bytes."""
    crc = zlib.crc32(bytes([kind]) + payload).to_bytes(4, "little")
    return crc + len(payload).to_bytes(2, "little") + bytes([kind]) + payload


def one_record_of_middles(blocks: int, last: bool) -> bytes:
    """An empty first block, then one record: FIRST, ``blocks - 2`` MIDDLE chunks, LAST (if ``last``)."""
    payload = os.urandom(BLOCK_SIZE - 7)
    body = chunk(FIRST, payload) + chunk(MIDDLE, payload) * (blocks - 2)
    body += chunk(LAST if last else MIDDLE, payload)
    return HEADER + bytes(BLOCK_SIZE - len(HEADER)) + body


def history(**values: str) -> bytes:
    from wandb.proto import wandb_internal_pb2 as pb

    record = pb.Record()
    for key, value_json in values.items():
        item = record.history.item.add()
        item.key, item.value_json = key, value_json
    return record.SerializeToString()


def genuine_run(root: Path) -> Path:
    """An offline run written by the installed wandb package (a 100 KB value spans three blocks)."""
    script = (
        f"import wandb; r = wandb.init(mode='offline', dir={str(root)!r}, project='p', config={{'sigma': 0.5}});"
        "[r.log({'cert/acr': s / 4}) for s in range(3)]; r.log({'blob': 'x' * 100000}); r.finish()"
    )
    env = os.environ | {"WANDB_SILENT": "true", "WANDB_MODE": "offline"}
    subprocess.run([sys.executable, "-c", script], check=True, env=env, capture_output=True)
    [folder] = (root / "wandb").glob("offline-run-*")
    return folder


def build_cases(root: Path) -> dict[str, Path]:
    """Every case's run folder; the file inside is ``run-case.wandb``."""
    genuine = genuine_run(root / "genuine")
    good = next(genuine.glob("run-*.wandb")).read_bytes()
    cases: dict[str, Path] = {"genuine wandb 0.31 offline run": genuine}

    def folder(name: str) -> Path:
        path = root / f"case{len(cases)}" / "offline-run-case"
        path.mkdir(parents=True)
        cases[name] = path
        return path / "run-case.wandb"

    os.mkfifo(folder("FIFO"))
    folder("symlink to /dev/zero").symlink_to("/dev/zero")
    with open(folder("1.5 GB sparse file"), "wb") as file:
        file.write(HEADER)
        file.truncate(1_500_000_000)
    folder("64 MB flood of MIDDLE chunks").write_bytes(one_record_of_middles(2048, last=False))
    folder("random bytes after the header").write_bytes(HEADER + os.urandom(1_000_000))
    folder("unknown chunk type 9").write_bytes(HEADER + chunk(9, b"abc"))
    write_log(folder("value_json nested 200,000 deep"), [history(acc="[" * 200_000 + "]" * 200_000)])
    lists = "[" + "[]," * 1_000_000 + "[]]"  # 3 MB of text, ~65 MB once parsed
    write_log(folder("4 x 3 MB of nested empty lists"), [history(**{f"k{i}": lists}) for i in range(4)])
    folder("genuine run truncated by 100 bytes").write_bytes(good[:-100])
    flipped = bytearray(good)
    flipped[len(flipped) // 2] ^= 0x01
    folder("genuine run with one flipped bit mid-file").write_bytes(bytes(flipped))
    return cases


CHILD = """
import json, resource, sys, time
from ddsx.cli.report import main
started = time.perf_counter()
try:
    rc = main(sys.argv[1:])
except SystemExit as stop:
    rc = stop.code
peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"rc": rc, "seconds": time.perf_counter() - started, "peak_mb": peak_mb}), file=sys.__stdout__)
"""


def run_report(folder: Path, out: Path) -> str:
    """One line: exit code, seconds, peak MB and the last line of stderr of ddsx-report on ``folder``."""
    command = [sys.executable, "-c", CHILD, str(folder), "--out", str(out)]
    started = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return f"HANG: killed after {TIMEOUT} s"
    wall = time.perf_counter() - started
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    stderr = [line for line in done.stderr.strip().splitlines() if line]
    line = stderr[-1] if stderr else "(stderr empty)"
    return (
        f"rc {measured['rc']}  read {measured['seconds']:.2f} s (process {wall:.1f} s)  "
        f"peak RSS {measured['peak_mb']:.0f} MB  {len(stderr)} stderr line(s): {line}"
    )


def seconds_to_read(path: Path) -> float:
    started = time.perf_counter()
    for _ in records(path):
        pass
    return time.perf_counter() - started


def linearity(root: Path) -> list[str]:
    """Time of records() per size, each size double the last; best of 3 runs per size."""
    lines = []
    for name, build in (
        ("one record of k MIDDLE chunks", lambda mb: one_record_of_middles(mb * 32, last=True)),
        (
            "a file of 64 KB records",
            lambda mb: _many_records(mb * 16),
        ),
    ):
        previous = None
        for mb in (2, 4, 8, 15) if name.startswith("one") else (16, 32, 64, 128):
            path = root / f"linear-{mb}.wandb"
            path.write_bytes(build(mb))
            best = min(seconds_to_read(path) for _ in range(3))
            ratio = (
                ""
                if previous is None
                else f"  ratio to previous size {best / previous[1]:.2f} (size x{mb / previous[0]:.2f})"
            )
            lines.append(f"{name}: {mb:4d} MB  {best:.3f} s{ratio}")
            previous = (mb, best)
            path.unlink()
    return lines


def _many_records(count: int) -> bytes:
    path = Path(tempfile.mkstemp(suffix=".wandb")[1])
    write_log(path, [os.urandom(64 * 1024)] * count)
    data = path.read_bytes()
    path.unlink()
    return data


def main() -> None:
    print(
        f"machine: {platform.node()}, {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}),"
    )
    print(
        f"  load average {os.getloadavg()[0]:.1f} at start (shared with other jobs); python {platform.python_version()}"
    )
    print(f"date: {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}\n")
    with tempfile.TemporaryDirectory() as temp:
        root = Path(temp)
        for name, folder in build_cases(root).items():
            print(f"{name}:\n  {run_report(folder, folder.parent / 'report')}", flush=True)
        print("\nlinearity of the reader (records(), in this process):")
        for line in linearity(root):
            print("  " + line, flush=True)
    print(f"\nthis script's own peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
