"""The known harmless warnings are silenced by precise filters; every other warning still shows."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

KNOWN = (
    "module(s) in eval mode",
    "isinstance(treespec, LeafSpec)",
    "litlogger",
)  # W&B's "anonymous setting has no effect" still shows: see ddsx/utils/warnings.py


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = os.environ | {"OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "false"}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow  # a real two-epoch ddsx-train with W&B: ~30 s here
def test_a_short_run_prints_none_of_the_known_warnings(tmp_path: Path) -> None:
    # method=dds_adv: a frozen denoiser in eval mode inside a trained module, logger=wandb: W&B too.
    result = _run(
        "-m",
        "ddsx.cli.train",
        "dataset=digits",
        "debug=limit",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
        "logger=wandb",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "Trainer.fit" in output  # it did train (and Lightning did start its loggers)
    for known in KNOWN:
        assert known not in output, known


@pytest.mark.e2e
def test_an_unrelated_warning_still_shows(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import warnings
        from ddsx.utils.warnings import silence_known_warnings
        silence_known_warnings()
        warnings.warn("something a user must see")
        # The same text as Lightning's eval-mode warning, but from another module: not Lightning's.
        warnings.warn("Found 3 module(s) in eval mode at the start of training")
        import logging
        logging.basicConfig()
        logging.getLogger("lightning.fabric.utilities.rank_zero").warning("a real Lightning message")
        """
    )
    result = _run("-c", script, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "something a user must see" in result.stderr
    assert "Found 3 module(s) in eval mode" in result.stderr
    assert "a real Lightning message" in result.stderr
