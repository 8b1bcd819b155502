"""The spread over training seeds: runs that are the same experiment but for their classifier's seed.

Two runs belong together when they agree on the envelope fields (method, classifier, denoiser, n,
alpha, mode, digits, certification seed), on sigma and on a multirun's other overrides, and differ in
the training seed recorded in their sidecar. A table cell is the mean over those runs and the sample
standard deviation (n - 1 in the denominator) of certified accuracy at each radius and of ACR.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from ddsx.certification.metrics import radius_key, summarize
from ddsx.report.labels import SEED_KEYS, SIGMA_KEYS, without_keys
from ddsx.report.runs import ENVELOPE_FIELDS, Run
from ddsx.report.tables import BEYOND, Table


def seed_groups(runs: Sequence[Run]) -> list[list[Run]]:
    """Groups of two or more usable runs with distinct training seeds, in a stable order."""
    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        if not run.averageable or run.train_seed is None:
            continue
        # In a multirun over seed=..., the seed is part of the label: the group key leaves it out.
        sweep = without_keys(run.sweep_label, SIGMA_KEYS + SEED_KEYS)
        fields = tuple(getattr(run, name) for name in ENVELOPE_FIELDS)
        groups.setdefault((run.sigma, fields, sweep), []).append(run)
    found = []
    for members in groups.values():
        seeds = [run.train_seed for run in members]
        if len(members) >= 2 and len(set(seeds)) == len(seeds):
            found.append(sorted(members, key=lambda run: run.train_seed))
    return sorted(found, key=lambda members: (members[0].group, members[0].sigma or 0.0))


def mean_and_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1) of two or more values."""
    return statistics.fmean(values), statistics.stdev(values)


def seed_table(groups: Sequence[Sequence[Run]], radii: Sequence[float]) -> Table:
    """One row per group: certified accuracy (%) and ACR as ``mean ± sd`` over its training seeds."""
    header = ["run", "sigma", "seeds"] + [f"r={r:g}" for r in radii] + ["ACR"]
    rows = []
    for members in groups:
        summaries = [summarize(run.rows, radii) for run in members]
        cells = []
        # The members share sigma, n and alpha, hence the largest certifiable radius.
        reach = members[0].max_radius
        for r in radii:
            if reach is not None and r > reach:
                cells.append(BEYOND)
                continue
            mean, sd = mean_and_sd([100 * s[f"acc@{radius_key(r)}"] for s in summaries])
            cells.append(f"{mean:.1f} ± {sd:.1f}")
        mean, sd = mean_and_sd([s["acr"] for s in summaries])
        seeds = ",".join(str(run.train_seed) for run in members)
        sigma = "?" if members[0].sigma is None else f"{members[0].sigma:g}"
        rows.append([members[0].group, sigma, seeds, *cells, f"{mean:.3f} ± {sd:.3f}"])
    return header, rows
