"""experiments/mnist5k_reproduce.sh's certify step with JOBS > 1: the sigmas are certified side by side,
and a certification that fails makes the step fail naming its folder. A fake ``ddsx-certify`` on PATH
records when it ran, so the script's control flow is tested without any model."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "mnist5k_reproduce.sh"
ARMS = ("dds_adv", "dds_adv_strong", "dds_finetune", "standard", "gaussian", "smoothadv")

FAKE_CERTIFY = """#!/usr/bin/env bash
for a in "$@"; do case $a in hydra.run.dir=*) d=${a#hydra.run.dir=} ;; esac; done
mkdir -p "$d"
date +%s.%N > "$d/started"
sleep 1.5
date +%s.%N > "$d/ended"
case "$d" in *sigma$FAIL_SIGMA/dds) exit 3 ;; esac
exit 0
"""


def run_certify_step(tmp_path: Path, jobs: int, fail_sigma: str = "none") -> subprocess.CompletedProcess:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "ddsx-certify"
    fake.write_text(FAKE_CERTIFY)
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    for sigma in ("0.25", "0.5"):
        for arm in ARMS:  # trainings marked done: the train step skips them
            run = tmp_path / "out" / "train" / f"sigma{sigma}" / f"{arm}_seed0"
            run.mkdir(parents=True, exist_ok=True)
            (run / ".done").write_text("1 s\n")
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "OUT": str(tmp_path / "out"),
        "RESULTS": str(tmp_path / "results"),
        "SIGMAS": "0.25 0.5",
        "SEEDS": "0",
        "STEPS": "certify",
        "JOBS": str(jobs),
        "FAIL_SIGMA": fail_sigma,
    }
    # From tmp_path, so that no .venv of the checkout comes first on PATH.
    return subprocess.run(
        ["bash", str(SCRIPT)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )


def span(folder: Path) -> tuple[float, float]:
    return float((folder / "started").read_text()), float((folder / "ended").read_text())


@pytest.mark.parametrize("jobs", [1, 2])
def test_the_sigmas_are_certified_side_by_side_only_with_jobs(tmp_path: Path, jobs: int) -> None:
    done = run_certify_step(tmp_path, jobs)
    assert done.returncode == 0, done.stdout + done.stderr
    certify = tmp_path / "out" / "certify"
    for sigma in ("0.25", "0.5"):
        for run in ("dds", "no_denoiser"):
            assert (certify / f"sigma{sigma}" / run / ".done").exists()
    first, second = span(certify / "sigma0.25" / "dds"), span(certify / "sigma0.5" / "dds")
    overlapped = second[0] < first[1] and first[0] < second[1]
    assert overlapped == (jobs > 1)


def test_a_failed_certification_fails_the_step_naming_its_folder(tmp_path: Path) -> None:
    done = run_certify_step(tmp_path, jobs=2, fail_sigma="0.5")
    assert done.returncode == 1
    failed = tmp_path / "out" / "certify" / "sigma0.5" / "dds"
    assert f"unfinished certifications (see stdout.log of their sigma): {failed}" in done.stdout
    # The other sigma ran to its end.
    assert (tmp_path / "out" / "certify" / "sigma0.25" / "no_denoiser" / ".done").exists()
