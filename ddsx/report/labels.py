"""Label the runs of a multirun by what the sweep varied: the command-line overrides that differ.

Each job folder of a Hydra multirun holds ``.hydra/overrides.yaml``, the overrides of that job. Among the
runs of a report, a key whose value differs from one run to another (or is set for some runs only) is
what tells them apart; those keys, in the order they first appear, with sigma last, make the label:
``method=dds_adv attack.step_size=0.1 sigma=0.5``. Keys that only say where files go are left out.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import yaml

OVERRIDES_FILE = Path(".hydra") / "overrides.yaml"
# How far above a result file its job folder may be (certify.tsv sits in the job folder itself).
MAX_DEPTH = 3
# Keys that move files around or pick the hardware, without changing the experiment (a GPU job and a
# CPU job of one certification are one experiment; certify.batch_size changes no certificate).
IGNORED_PREFIXES = (
    "hydra.",
    "paths.",
    "certify.output",
    "ckpt_path",
    "merge.inputs",
    "trainer.accelerator",
    "trainer.devices",
    "trainer.num_nodes",
    "trainer.strategy",
    "certify.batch_size",
)
SIGMA_KEYS = ("sigma", "certify.sigma")
# The classifier's training seed: runs differing in it alone are one experiment repeated.
SEED_KEYS = ("seed",)


def job_overrides(result_file: Path) -> dict[str, str] | None:
    """The overrides of the Hydra job that wrote ``result_file`` (``key -> value``), or None."""
    folder = Path(result_file).resolve().parent
    for _ in range(MAX_DEPTH):
        path = folder / OVERRIDES_FILE
        if path.is_file():
            items = yaml.safe_load(path.read_text()) or []  # data only: safe_load builds no objects
            if not isinstance(items, list):
                return None
            pairs = (str(item).split("=", 1) for item in items if "=" in str(item))
            return {key.lstrip("+~"): value for key, value in pairs}
        folder = folder.parent
    return None


def differing_labels(overrides: Sequence[dict[str, str] | None]) -> list[str] | None:
    """One label per run from the overrides that differ across the runs; None when a run has none."""
    if not overrides or any(o is None for o in overrides):
        return None
    keys: list[str] = []
    for job in overrides:
        keys += [k for k in job if k not in keys and not k.startswith(IGNORED_PREFIXES)]
    differing = [k for k in keys if len({job.get(k) for job in overrides}) > 1]
    differing = [k for k in differing if k not in SIGMA_KEYS] + [k for k in differing if k in SIGMA_KEYS]
    return [" ".join(f"{k}={job[k]}" for k in differing if k in job) for job in overrides]


def without_sigma(label: str) -> str:
    """The label less its sigma part: what runs sharing a best-over-sigma envelope have in common."""
    return without_keys(label, SIGMA_KEYS)


def without_keys(label: str, keys: Sequence[str]) -> str:
    """The label less its ``key=value`` parts for ``keys``."""
    return " ".join(part for part in label.split() if part.split("=", 1)[0] not in keys)
