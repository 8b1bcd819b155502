"""A job killed by a signal (kill -9, as an out-of-memory kill) is isolated as a raised error is: it is
named as failed with its signal, the other jobs run, multirun_summary.txt is written, exit code 2;
with the joblib launcher (whose dead worker once sank the batch) and with submitit_local."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.e2e  # a multirun of subprocesses, one killed by a signal
@pytest.mark.parametrize(
    "launcher", [["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], ["hydra/launcher=submitit_local"]]
)
def test_a_job_killed_by_sigkill_is_named_and_the_others_run(tmp_path: Path, launcher: list[str]) -> None:
    sweep = tmp_path / "sweep"
    command = [sys.executable, "-m", "tests.sweep_kill_app", "-m", "hydra/sweeper=ddsx", "x=0,kill,2,3"]
    command += [f"hydra.sweep.dir={sweep}", *launcher]
    result = subprocess.run(
        command,
        cwd=ROOT,
        env=os.environ | {"OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "1 of 4 jobs failed (3 finished): #1 (x=kill)" in result.stderr, result.stderr[-3000:]
    # joblib names the signal; submitit only says the process left no result (and its state)
    death = "SIGKILL" if "joblib" in launcher[0] else "has not produced any output (state: "
    assert death in result.stderr
    summary = (sweep / "multirun_summary.txt").read_text().splitlines()
    assert [line.split("\t")[1] for line in summary[1:]] == ["finished", "failed", "finished", "finished"]
    assert death in summary[2]
    assert sorted(p.read_text() for p in sweep.glob("*/done.txt")) == ["0", "2", "3"]
