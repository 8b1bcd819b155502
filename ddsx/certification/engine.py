"""Certify the examples of a dataset into a resumable result file, on one process or many.

Every process calls :func:`certify_dataset` with the same arguments and its own rank. The
example list, minus what the files already hold, is split by position (rank r takes every
W-th), each process appends to its own shard, and rank 0 merges the shards at the end. Because
example idx always draws its noise from a generator seeded by (seed, idx), the rows are the same
whatever the number of processes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from ddsx.certification.progress import CertifyProgress
from ddsx.certification.results_file import ResultRow, format_elapsed
from ddsx.certification.settings import CertifySettings
from ddsx.certification.store import ResultStore
from ddsx.smoothing import Smooth, example_generator
from ddsx.utils.logging import get_logger

log = get_logger(__name__)


def certify_dataset(
    smooth: Smooth,
    dataset: Dataset,
    settings: CertifySettings,
    output: str | Path,
    identity: dict[str, Any],
    *,
    device: torch.device | str = "cpu",
    rank: int = 0,
    world_size: int = 1,
    barrier: Callable[[], None] | None = None,
) -> Path:
    """Certify ``settings.indices(len(dataset))`` into ``output``; returns its path once complete.

    Resumes: examples already in the file (or in shards left by a crash) are skipped; a torn last
    line is redone; a file made with other settings (per ``identity``, see identity.py) is refused
    before anything is written.

    Args:
        smooth: the smoothed classifier (its sigma must equal ``settings.sigma``).
        dataset: items ``(image (C, H, W) in [0,1], label)``.
        settings: validated settings, sigma resolved.
        output: the result TSV; the settings go beside it.
        identity: sidecar document from ``run_identity``.
        device: where images go (the base classifier's device).
        rank, world_size: this process's place among the processes sharing the work.
        barrier: waits for every process (required when world_size > 1).
    """
    sigma = settings.require_sigma()
    if smooth.sigma != sigma:
        raise ValueError(f"Smooth has sigma {smooth.sigma} but certify.sigma is {sigma}")
    if world_size > 1 and barrier is None:
        raise ValueError("world_size > 1 needs a barrier")
    sync = barrier or (lambda: None)
    store = ResultStore(output)

    # Read-only phase: every process decides the same thing from the same files.
    sidecar_exists = store.check_identity(identity)
    selected = settings.indices(len(dataset))
    done = store.done_indices()
    todo = [idx for idx in selected if idx not in done]
    mine = todo[rank::world_size]
    sync()
    if rank == 0 and not sidecar_exists:
        store.write_identity(identity)
    sync()  # no row anywhere before the settings are on disk
    if rank == 0:
        log.info(
            "certifying %d examples of the %s split at sigma=%g (%d already in %s): %s forward passes "
            "(n0=%d + n=%d each) on %d process(es)",
            len(selected),
            settings.split,
            sigma,
            len(selected) - len(todo),
            store.path,
            f"{settings.forward_passes(len(todo)):,}",
            settings.n0,
            settings.n,
            world_size,
        )
    t_star = identity.get("denoiser", {}).get("t_star")
    target = store.path if world_size == 1 else store.shard_path(rank)
    with (
        store.open_for_append(target) as writer,
        CertifyProgress(len(mine), settings.progress and rank == 0) as bar,
    ):
        for position, idx in enumerate(mine):
            row = certify_example(smooth, dataset, idx, settings, device=device, t_star=t_star)
            writer.write(row)
            bar.advance(bool(row.correct), row.radius)
            if position == 0 and rank == 0:
                log.info(
                    "first example took %.2fs: estimated total time %s (%d examples per process)",
                    row.seconds,
                    format_elapsed(round(row.seconds * len(mine))),
                    len(mine),
                )
    sync()
    if rank == 0:
        store.merge()
    sync()
    return store.path


def certify_example(
    smooth: Smooth,
    dataset: Dataset,
    idx: int,
    settings: CertifySettings,
    *,
    device: torch.device | str = "cpu",
    t_star: int | None = None,
) -> ResultRow:
    """CERTIFY example ``idx`` with noise from the generator of (settings.seed, idx)."""
    image, label = dataset[idx]
    x = torch.as_tensor(image).to(device)
    label = int(label)
    generator = example_generator(settings.seed, idx, x.device)
    start = time.perf_counter()
    cert = smooth.certify(
        x, settings.n0, settings.n, settings.alpha, settings.batch_size, generator=generator
    )
    seconds = time.perf_counter() - start
    return ResultRow(
        idx=idx,
        label=label,
        predict=cert.prediction,
        radius=cert.radius,
        correct=int(cert.prediction == label),
        time=format_elapsed(seconds),
        count_a=cert.count,
        n=cert.n,
        n0=cert.n0,
        p_lower=cert.p_lower,
        sigma=smooth.sigma,
        t_star=t_star,
        seconds=seconds,
    )
