"""``certify.batch_size=auto``: time candidate batch sizes on the real pipeline, keep the fastest.

The batch size never changes a certificate (noise comes in fixed blocks per example), only the
speed: on a GPU the largest batch that fits is usually fastest, on a CPU a small one that stays in
cache. Candidates are tried from small to large; a candidate that runs out of memory ends the
search, and so do two in a row clearly slower than the best so far (larger ones only get slower
there; one slow reading alone may be a busy machine or a recompilation).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ddsx.utils.logging import get_logger

log = get_logger(__name__)

CANDIDATES = {
    "cpu": (16, 32, 64, 128, 256, 512, 1024),
    "cuda": (64, 128, 256, 512, 1024, 2048, 4096, 8192),
}
DEFAULT_CANDIDATES = (64, 256, 1024)
# Stop once two candidates in a row run at less than this fraction of the best rate so far.
STOP_BELOW = 0.7
# Untimed calls per candidate: torch.compile recompiles for a new shape, and the call after that can
# still be slow.
WARM_UP_CALLS = 2


@dataclass(frozen=True)
class Trial:
    """One candidate: its rate in noisy images per second, or why it was not usable."""

    batch_size: int
    images_per_second: float | None
    note: str = ""


def candidates_for(device: torch.device, limit: int | None = None) -> tuple[int, ...]:
    """Candidate batch sizes for ``device``, none above ``limit`` (the most one batch can hold)."""
    sizes = CANDIDATES.get(device.type, DEFAULT_CANDIDATES)
    if limit is not None:
        sizes = tuple(s for s in sizes if s <= limit) or (max(1, int(limit)),)
    return sizes


def autotune_batch_size(
    run_batch: Callable[[int], None],
    candidates: Sequence[int],
    device: torch.device,
    repeats: int = 3,
) -> tuple[int, list[Trial]]:
    """The fastest of ``candidates`` and the table of trials.

    Args:
        run_batch: runs the whole pipeline (noise, denoiser, classifiers, counting) on one batch of
            the given size.
        candidates: increasing batch sizes.
        device: where it runs (synchronised around each timing; out-of-memory caught on accelerators).
        repeats: timed runs per candidate after the untimed warm-up calls; the fastest counts.
    """
    trials: list[Trial] = []
    best_rate = 0.0
    slow_in_a_row = 0
    for size in candidates:
        try:
            for _ in range(WARM_UP_CALLS):  # allocator, kernels, compilation for this shape
                run_batch(size)
            seconds = min(_timed(run_batch, size, device) for _ in range(max(1, repeats)))
        except torch.OutOfMemoryError:
            _release(device)
            trials.append(Trial(size, None, "out of memory"))
            break
        rate = size / max(seconds, 1e-9)
        trials.append(Trial(size, rate))
        best_rate = max(best_rate, rate)
        slow_in_a_row = slow_in_a_row + 1 if rate < STOP_BELOW * best_rate else 0
        if slow_in_a_row == 2:
            break
    measured = [t for t in trials if t.images_per_second is not None]
    if not measured:
        raise RuntimeError(
            f"certify.batch_size=auto: even a batch of {candidates[0]} noisy images does not fit on {device}; "
            "set certify.batch_size to a smaller number"
        )
    chosen = max(measured, key=lambda t: t.images_per_second or 0.0).batch_size
    return chosen, trials


def format_trials(trials: Sequence[Trial], chosen: int) -> str:
    """The table logged before certification starts."""
    lines = ["batch size   noisy images/s"]
    for trial in trials:
        rate = f"{trial.images_per_second:>14,.0f}" if trial.images_per_second is not None else trial.note
        mark = "  <- chosen" if trial.batch_size == chosen else ""
        lines.append(f"{trial.batch_size:>10}   {rate}{mark}")
    return "\n".join(lines)


def _timed(run_batch: Callable[[int], None], size: int, device: torch.device) -> float:
    _synchronize(device)
    start = time.perf_counter()
    run_batch(size)
    _synchronize(device)
    return time.perf_counter() - start


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _release(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
