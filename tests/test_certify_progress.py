"""Progress off a terminal: a log line every few examples or seconds, with an ETA from the warm-up."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ddsx.certification.result_file import ResultRow
from ddsx.progress import CertifyProgress


def row(correct: bool, radius: float = 0.5) -> ResultRow:
    return ResultRow(0, 1, 1 if correct else 2, radius if correct else 0.0, int(correct), "0:00:01")


def test_off_a_terminal_a_line_every_n_examples_with_running_accuracy_rate_and_eta(caplog) -> None:
    now = [0.0]
    with caplog.at_level(logging.INFO, logger="ddsx.progress"):
        with CertifyProgress(
            6,
            True,
            seconds_per_example=10.0,
            terminal=False,
            every_examples=2,
            every_seconds=1e9,
            clock=lambda: now[0],
        ) as bar:
            assert bar.eta_seconds() == 60.0  # nothing measured yet: the warm-up's estimate
            for i, ok in enumerate([True, False, True, True, True, False]):
                now[0] += 2.0  # the run is five times faster than the warm-up predicted
                bar.advance(row(ok))
                if i == 0:
                    assert bar.eta_seconds() == 50.0  # still the warm-up estimate
                if i == 3:
                    assert bar.eta_seconds() == 4.0  # measured: 2 s per example, 2 left
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3  # after examples 2, 4 and 6
    assert lines[0].startswith("certify 2/6 | cert acc 0.500 | ACR 0.250 | 0.5 examples/s")
    assert lines[0].endswith("elapsed 4s | ETA 40s")
    assert lines[2].startswith("certify 6/6 | cert acc 0.667") and lines[2].endswith("ETA 0s")


def test_off_a_terminal_a_line_every_m_seconds(caplog) -> None:
    now = [0.0]
    with caplog.at_level(logging.INFO, logger="ddsx.progress"):
        with CertifyProgress(
            100, True, 1.0, terminal=False, every_examples=1000, every_seconds=30, clock=lambda: now[0]
        ) as bar:
            for _ in range(10):
                now[0] += 10.0
                bar.advance(row(True))
    assert [r.getMessage().split(" |")[0] for r in caplog.records] == [
        "certify 3/100",
        "certify 6/100",
        "certify 9/100",
    ]


@pytest.mark.e2e
def test_ddsx_certify_with_stdout_to_a_file_writes_progress_lines(tmp_path: Path) -> None:
    log_file = tmp_path / "stdout.log"
    command = [
        sys.executable,
        "-m",
        "ddsx.cli.certify",
        "dataset=digits",
        "certify.sigma=0.25",
        "certify.n0=4",
        "certify.n=40",
        "certify.batch_size=40",
        "certify.max=12",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    with open(log_file, "w") as stdout:
        subprocess.run(
            command,
            stdout=stdout,
            stderr=subprocess.STDOUT,
            check=True,
            timeout=300,
            env=os.environ | {"OMP_NUM_THREADS": "1"},
        )
    text = log_file.read_text()
    assert "estimated total time" in text
    progress = [
        line for line in text.splitlines() if "certify 10/12 | cert acc" in line or "certify 12/12 |" in line
    ]
    assert len(progress) == 2, text[-3000:]
    assert all("examples/s" in line and "ETA" in line for line in progress)
