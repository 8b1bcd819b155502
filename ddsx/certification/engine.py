"""Certify the examples of a dataset with one denoiser and one or more classifiers, into result files.

The schedule: noisy copies of several examples are packed into each forward batch (in sequential
mode the least sampled example first, in fixed mode the oldest first); each batch is denoised once and then classified by every classifier that
still needs one of its examples. Example idx always draws its noise from its own generator seeded
by (seed, idx), in the fixed noise blocks of ``ddsx.smoothing.noise``: the n0 selection copies
first, then the copies the decision counts. So a row depends on neither the batch size, nor the
packing, nor the other classifiers, nor the number of processes.

With several processes, every one calls :meth:`Certifier.run` with its rank: the examples still to
do are split by position (rank r takes every W-th), each process appends to its own shard of each
result file, and rank 0 merges the shards at the end.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from ddsx.certification.autotune import autotune_batch_size, candidates_for, format_trials
from ddsx.certification.decisions import Decision, make_decision, plan_for
from ddsx.certification.fast_paths import prepare_model, to_device
from ddsx.certification.progress import CertifyProgress
from ddsx.certification.result_file import (
    FileLock,
    ResultFile,
    ResultFileLockedError,
    ResultRow,
    format_elapsed,
)
from ddsx.certification.selection import label_lookup
from ddsx.certification.settings import CertifySettings
from ddsx.smoothing import example_generator
from ddsx.smoothing.noise import GaussianStream
from ddsx.smoothing.sequential import SequentialPlan
from ddsx.smoothing.smooth import resolve_autocast_dtype
from ddsx.utils.logging import get_logger

log = get_logger(__name__)


@dataclass
class Target:
    """One classifier being certified and the result file its rows go to.

    Attributes:
        classifier: maps denoised [0,1] images (N, C, H, W) to logits (N, K); in eval mode.
        output: the result TSV (settings, lock and shards beside it).
        identity: its settings sidecar document (``result_file.run_identity``).
        name: short name for messages.
    """

    classifier: nn.Module
    output: Path
    identity: dict[str, Any]
    name: str = "classifier"
    file: ResultFile = field(init=False)

    def __post_init__(self) -> None:
        self.output = Path(self.output)
        self.file = ResultFile(self.output)


class Example:
    """One example in flight: its noise, the n0 selection counts, one decision per target."""

    def __init__(
        self,
        order: int,
        idx: int,
        x: torch.Tensor,
        label: int,
        targets: list[int],
        settings: CertifySettings,
        num_classes: int,
        plan: SequentialPlan | None = None,
    ) -> None:
        self.order, self.idx, self.x, self.label, self.targets = order, idx, x, label, targets
        self.settings, self.num_classes, self.plan = settings, num_classes, plan
        generator = example_generator(settings.seed, idx, x.device)
        self.select_left = settings.n0_used
        # Selection copies first, then the test's: the order Smooth.certify draws them in.
        stream = {"generator": generator, "device": x.device, "dtype": x.dtype}
        self.select_stream = GaussianStream(x.shape, self.select_left, **stream)
        self.test_stream = GaussianStream(x.shape, settings.n, **stream)
        self.counts0 = {t: torch.zeros(num_classes, dtype=torch.long, device=x.device) for t in targets}
        self.decisions: dict[int, Decision] = {}
        if not self.select_left:
            self._start_decisions({t: label for t in targets})
        self.drawn = 0
        self.seconds = 0.0

    @property
    def selecting(self) -> bool:
        return self.select_left > 0

    def undecided(self) -> list[int]:
        return [t for t, d in self.decisions.items() if not d.done]

    @property
    def done(self) -> bool:
        return not self.selecting and not self.undecided()

    def request(self) -> int:
        """Samples this example can use in the next batch (a selection chunk never mixes with a test one)."""
        if self.selecting:
            return self.select_left
        return min((self.decisions[t].request() for t in self.undecided()), default=0)

    def take(self, k: int) -> torch.Tensor:
        self.drawn += k
        return (self.select_stream if self.selecting else self.test_stream).take(k)

    def absorb(self, predictions: dict[int, torch.Tensor], k: int) -> None:
        """Predicted labels (k,) of each needed target on the last ``k`` samples taken."""
        if self.selecting:
            for t in self.targets:
                self.counts0[t] += torch.bincount(predictions[t], minlength=self.num_classes)
            self.select_left -= k
            if not self.select_left:
                # As Smooth.certify: the counts move to the CPU, ties go to the lowest class.
                self._start_decisions({t: int(self.counts0[t].cpu().argmax()) for t in self.targets})
            return
        for t in self.undecided():
            # A 0-d tensor on the device: read only when the decision needs it (no sync per batch).
            self.decisions[t].absorb((predictions[t] == self.decisions[t].candidate).sum(), k)

    def needs(self) -> list[int]:
        """Targets whose classifier must see this example's next chunk."""
        return list(self.targets) if self.selecting else self.undecided()

    def _start_decisions(self, candidates: dict[int, int]) -> None:
        self.decisions = {t: make_decision(self.settings, candidates[t], self.plan) for t in self.targets}


@dataclass
class Certifier:
    """Denoiser, classifiers and settings, ready to certify a split (build it with ``build_certifier``).

    Attributes:
        settings: validated, sigma resolved.
        denoiser: shared by every target, tuned to ``settings.sigma``; None: the identity.
        targets: the classifiers and their result files.
        num_classes: K.
        device: where images, noise and models live.
    """

    settings: CertifySettings
    denoiser: nn.Module | None
    targets: list[Target]
    num_classes: int
    device: torch.device
    plan: SequentialPlan | None = field(default=None, init=False)
    batch_size: int | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.plan = plan_for(self.settings)  # computed (or read from the cache) once per run
        if self.settings.autocast_dtype == "auto":
            raise ValueError("resolve autocast_dtype=auto first (CertifySettings.resolved_for)")
        self.batch_size = None if self.settings.batch_size == "auto" else int(self.settings.batch_size)
        # What runs: the same models, maybe re-laid out (channels_last) or compiled (fast_paths.py).
        options = {"compile": self.settings.compile, "channels_last": self.settings.channels_last}
        self._denoiser = prepare_model(self.denoiser, "the denoiser", **options)
        self._classifiers = [prepare_model(t.classifier, t.name, **options) for t in self.targets]

    def run(
        self,
        dataset: Dataset,
        *,
        rank: int = 0,
        world_size: int = 1,
        barrier: Callable[[], None] | None = None,
        broadcast: Callable[[Any], Any] | None = None,
    ) -> list[Path]:
        """Certify ``settings.indices(len(dataset))`` into every target's file; returns their paths.

        Before any work: rank 0 takes each file's writer lock (another run on the same output
        fails at once, naming the holder's pid), every rank validates each file whole (see
        ``ResultFile.validate``), and the budget is checked. Then resumes: examples already in a
        file are skipped for that target, a torn last line is redone.

        Args:
            dataset: items ``(image (C, H, W) in [0,1], label)``; an attribute ``source_indices``
                (position -> index in the full split) makes that index the row's idx and noise seed.
            rank, world_size: this process's place among the processes sharing the work.
            barrier: waits for every process (required when world_size > 1).
            broadcast: rank 0's value on every process (required when world_size > 1).
        """
        settings = self.settings
        if world_size > 1 and (barrier is None or broadcast is None):
            raise ValueError("world_size > 1 needs a barrier and a broadcast")
        sync = barrier or (lambda: None)
        share = broadcast or (lambda value: value)

        positions = settings.indices(len(dataset))
        source = getattr(dataset, "source_indices", None)
        split_indices = list(range(len(dataset))) if source is None else [int(i) for i in source]
        settings.check_budget(len(positions), len(self.targets))

        locks: list[FileLock] = []
        try:
            failure: Exception | None = None
            if rank == 0:
                try:
                    for target in self.targets:
                        locks.append(target.file.lock())
                except Exception as error:
                    failure = error
            message = share(None if failure is None else str(failure))
            if message is not None:  # every process stops, each with rank 0's reason
                raise failure or ResultFileLockedError(f"(rank {rank}) {message}")
            labels = label_lookup(dataset)  # the rows already done must carry the data's labels
            done = [target.file.validate(target.identity, labels) for target in self.targets]
            todo = [
                (
                    pos,
                    split_indices[pos],
                    [t for t in range(len(self.targets)) if split_indices[pos] not in done[t]],
                )
                for pos in positions
            ]
            todo = [item for item in todo if item[2]]
            if self.batch_size is None:  # certify.batch_size=auto: rank 0 times, every rank uses it
                tuned = self._autotune(dataset, todo[0][0], len(todo)) if rank == 0 and todo else 1
                self.batch_size = share(tuned)
            sync()
            if rank == 0:
                for target in self.targets:
                    target.file.write_identity(target.identity)
            sync()  # no row anywhere before the settings are on disk
            mine = todo[rank::world_size]
            self._certify(dataset, mine, positions, rank, world_size)
            sync()
            if rank == 0:
                for target in self.targets:
                    target.file.merge()
            sync()
        finally:
            for lock in locks:
                lock.release()
        return [target.output for target in self.targets]

    # ----- the loop -----------------------------------------------------------------------------
    def _certify(self, dataset, mine, positions, rank: int, world_size: int) -> None:
        settings = self.settings
        names = ", ".join(t.name for t in self.targets)
        if rank == 0:
            log.info(
                "certifying %d examples of the %s split at sigma=%g in %s mode (%d to do) for %d "
                "classifier(s) [%s]: at most %s forward passes (n0=%d + n=%d each) on %d process(es)",
                len(positions),
                settings.split,
                settings.require_sigma(),
                settings.mode,
                sum(1 for _ in mine) * world_size,
                len(self.targets),
                names,
                f"{settings.forward_passes(len(mine) * world_size):,}",
                settings.n0_used,
                settings.n,
                world_size,
            )
        # The estimate costs one extra batch: only when progress is shown (a benchmark turns it off).
        estimate = self._warm_up(dataset, mine) if mine and rank == 0 and settings.progress else None
        writers = [
            t.file.open_for_append(t.output if world_size == 1 else t.file.shard_path(rank))
            for t in self.targets
        ]
        t_star = [t.identity.get("denoiser", {}).get("t_star") for t in self.targets]
        written = 0
        try:
            with CertifyProgress(len(mine), settings.progress and rank == 0, estimate) as bar:
                for example in self.examples(dataset, mine):
                    for t in example.targets:
                        row = self._row(example, t, t_star[t])
                        writers[t].write(row)
                        if t == example.targets[0]:
                            bar.advance(row)
                    written += 1
        except KeyboardInterrupt:
            log.warning(
                "interrupted: %d examples finished in this run are kept in %s; run the same command "
                "again to resume",
                written,
                ", ".join(str(t.output) for t in self.targets),
            )
            raise
        finally:
            for writer in writers:
                writer.close()

    def examples(self, dataset, work: Sequence[tuple[int, int, list[int]]]):
        """Yield each Example of ``work`` ((position, idx, target numbers)) once decided."""
        batch_size = self._batch_size()
        waiting = list(enumerate(work))
        waiting.reverse()  # pop() from the end: examples start in the given order
        active: list[Example] = []
        while active or waiting:
            while waiting and sum(e.request() for e in active) < batch_size:
                order, (position, idx, targets) = waiting.pop()
                image, label = dataset[position]
                x = to_device(image, self.device, self.settings.pin_memory)
                example = Example(
                    order, idx, x, int(label), targets, self.settings, self.num_classes, self.plan
                )
                if example.done:  # nothing to sample (cannot happen with n >= 1; kept for safety)
                    yield example
                else:
                    active.append(example)
            # Sequential: the least sampled first, so batches stay full while examples stop at
            # different times. Fixed: the oldest first, so rows (and progress) come one by one.
            sequential = self.settings.mode == "sequential"
            active.sort(key=(lambda e: (e.drawn, e.order)) if sequential else (lambda e: e.order))
            chunks, space = [], batch_size
            for example in active:
                k = min(example.request(), space)
                if k > 0:
                    chunks.append((example, example.needs(), example.take(k)))
                    space -= k
                if not space:
                    break
            start = time.perf_counter()
            predictions = self._classify(chunks)
            seconds = time.perf_counter() - start
            total = batch_size - space
            for (example, _, noise), preds in zip(chunks, predictions, strict=True):
                example.absorb(preds, len(noise))
                example.seconds += seconds * len(noise) / total
            finished = [e for e in active if e.done]
            active = [e for e in active if not e.done]
            yield from sorted(finished, key=lambda e: e.order)

    def _classify(self, chunks) -> list[dict[int, torch.Tensor]]:
        """One forward batch: denoise every chunk's noisy copies once, classify with each needed target."""
        sigma = self.settings.require_sigma()
        noisy = torch.cat([noise.mul_(sigma).add_(example.x) for example, _, noise in chunks])
        needed = sorted({t for _, targets, _ in chunks for t in targets})
        labels = self._labels(noisy, needed)
        result, offset = [], 0
        for _, targets, noise in chunks:
            result.append({t: labels[t][offset : offset + len(noise)] for t in targets})
            offset += len(noise)
        return result

    def _labels(self, noisy: torch.Tensor, needed: list[int]) -> dict[int, torch.Tensor]:
        """Each needed target's predicted labels on the noisy batch (denoised once), on the device."""
        if self.settings.channels_last and noisy.dim() == 4:
            noisy = noisy.contiguous(memory_format=torch.channels_last)
        dtype = resolve_autocast_dtype(self.settings.autocast_dtype)
        with torch.inference_mode():
            with _autocast(noisy.device, dtype):
                denoised = noisy if self._denoiser is None else self._denoiser(noisy)
                logits = {t: self._classifiers[t](denoised) for t in needed}
            labels = {}
            for t, out in logits.items():
                if out.dim() != 2 or out.shape[1] != self.num_classes:
                    raise ValueError(
                        f"classifier {self.targets[t].name} must return logits (N, {self.num_classes}), "
                        f"got {tuple(out.shape)}"
                    )
                labels[t] = out.argmax(dim=1)
        return labels

    def _batch_size(self) -> int:
        if self.batch_size is None:
            raise RuntimeError("certify.batch_size=auto is resolved in run(), before any example")
        return self.batch_size

    def _autotune(self, dataset, position: int, examples: int) -> int:
        """certify.batch_size=auto: time the whole pipeline on one example's noisy copies, per size."""
        x = to_device(dataset[position][0], self.device, pin_memory=False)
        generator = torch.Generator(device=self.device).manual_seed(0)
        everyone = list(range(len(self.targets)))
        sigma = self.settings.require_sigma()

        def run_batch(size: int) -> None:
            noise = torch.randn((size, *x.shape), generator=generator, device=self.device, dtype=x.dtype)
            labels = self._labels(noise.mul_(sigma).add_(x), everyone)
            for out in labels.values():
                torch.bincount(out, minlength=self.num_classes)

        # More than all the copies of all the examples in one batch never helps.
        limit = (self.settings.n0_used + self.settings.n) * examples
        candidates = candidates_for(self.device, limit=limit)
        chosen, trials = autotune_batch_size(run_batch, candidates, self.device)
        log.info("certify.batch_size=auto on %s:\n%s", self.device, format_trials(trials, chosen))
        table = [{"batch_size": t.batch_size, "images_per_second": t.images_per_second} for t in trials]
        for target in self.targets:
            target.identity.setdefault("info", {})["batch_size"] = chosen
            target.identity["info"]["batch_size_autotune"] = table
        return chosen

    def _warm_up(self, dataset, mine) -> float:
        """Time one full forward batch and log the estimated total time; returns seconds per example."""
        settings = self.settings
        image, _ = dataset[mine[0][0]]
        x = to_device(image, self.device, pin_memory=False)
        size = min(self._batch_size(), settings.n0_used + settings.n)
        generator = torch.Generator(device=x.device).manual_seed(0)
        stream = GaussianStream(x.shape, size + 2, generator=generator, device=x.device, dtype=x.dtype)
        probe = Example(0, 0, x, 0, list(range(len(self.targets))), settings, self.num_classes, self.plan)
        self._classify([(probe, probe.needs(), stream.take(2))])  # lazy initialisation, not timed
        start = time.perf_counter()
        self._classify([(probe, probe.needs(), stream.take(size))])
        batch_seconds = time.perf_counter() - start
        per_example = batch_seconds * (settings.n0_used + settings.n) / size
        total = per_example * len(mine)
        bound = "at most " if settings.mode == "sequential" else ""
        log.info(
            "estimated total time %s%s (timed warm-up batch of %d noisy images: %.3fs; %d examples of "
            "up to %d images each on this process)",
            bound,
            format_elapsed(round(total)),
            size,
            batch_seconds,
            len(mine),
            settings.n0_used + settings.n,
        )
        return per_example

    def _row(self, example: Example, target: int, t_star: int | None) -> ResultRow:
        outcome = example.decisions[target].outcome(self.settings)
        return ResultRow(
            idx=example.idx,
            label=example.label,
            predict=outcome.prediction,
            radius=outcome.radius,
            correct=int(outcome.prediction == example.label),
            time=format_elapsed(example.seconds),
            samples=outcome.samples,
            count_a=outcome.count,
            n=self.settings.n,
            n0=self.settings.n0_used,
            p_lower=outcome.p_lower,
            sigma=self.settings.require_sigma(),
            t_star=t_star,
            seconds=example.seconds,
        )


def _autocast(device: torch.device, dtype: torch.dtype | None):
    import contextlib

    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
