"""The spread over training seeds: runs that are the same experiment but for their classifier's seed.

Two runs belong together when they agree on the envelope fields (method, classifier, denoiser, n,
alpha, mode, digits, certification seed), on sigma and on a multirun's other overrides, and differ in
the training seed recorded in their sidecar. A table cell is the mean over those runs and the sample
standard deviation (n - 1 in the denominator) of certified accuracy at each radius, with the t interval
of the mean over the seeds; ACR comes last, labelled exact or grid.
"""

from __future__ import annotations

from collections.abc import Sequence

from ddsx.certification.metrics import radius_key, summarize
from ddsx.report.labels import SEED_KEYS, SIGMA_KEYS, without_keys
from ddsx.report.run_level import mean_interval
from ddsx.report.runs import ENVELOPE_FIELDS, Run
from ddsx.report.tables import BEYOND, CEILING, Table


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


def seed_table(groups: Sequence[Sequence[Run]], radii: Sequence[float], confidence: float = 0.95) -> Table:
    """One row per group: certified accuracy (%) as ``mean ± sd [t interval]`` over its training seeds
    at each radius (CEILING-marked at the radius where the members' certificates are capped), then ACR as
    ``mean ± sd`` labelled exact or grid."""
    header = ["run", "sigma", "seeds"] + [f"r={r:g}" for r in radii] + ["ACR"]
    rows = []
    for members in groups:
        summaries = [summarize(run.rows, radii) for run in members]
        cells = []
        # The members share sigma, n, alpha and mode, hence the largest certifiable radius and the cap.
        first = members[0]
        for r in radii:
            if first.max_radius is not None and r > first.max_radius:
                cells.append(BEYOND)
                continue
            mean, sd, low, high = mean_interval(
                [100 * s[f"acc@{radius_key(r)}"] for s in summaries], confidence
            )
            mark = f" {CEILING}" if first.at_ceiling(r) else ""
            cells.append(f"{mean:.1f} ± {sd:.1f} [{low:.1f}, {high:.1f}]{mark}")
        mean, sd, _, _ = mean_interval([s["acr"] for s in summaries], confidence)
        seeds = ",".join(str(run.train_seed) for run in members)
        sigma = "?" if first.sigma is None else f"{first.sigma:g}"
        kind = "grid" if first.grid else "exact"
        rows.append([first.group, sigma, seeds, *cells, f"{mean:.3f} ± {sd:.3f} ({kind})"])
    return header, rows
