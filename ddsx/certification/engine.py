"""Certify the examples of a dataset with one denoiser and one or more classifiers, into result files.

The schedule (``ddsx.smoothing.loop``, shared with ``Smooth``): noisy copies of several examples are
packed into each forward batch (for a test that stops early the least sampled example first, else
the oldest first); each batch is denoised once and then classified by every classifier that still
needs one of its examples, and all their counts are formed with one segment-sum on the device. Example idx always draws its noise from its own generator seeded
by (seed, idx), in the fixed noise blocks of ``ddsx.smoothing.noise``: the n0 selection copies
first, then the copies the decision counts. So a row depends on neither the batch size, nor the
packing, nor the other classifiers, nor the number of processes. A voting denoiser (DensePure, local
smoothing: ``ddsx.denoisers.vote``) takes the noise of its own from a second stream of the example,
seeded by (seed, idx) too, one sample per noisy copy in the same order.

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
from ddsx.certification.fast_paths import prepare_model, to_device
from ddsx.certification.result_file import (
    FileLock,
    ResultFile,
    ResultFileLockedError,
    ResultRow,
    format_elapsed,
)
from ddsx.certification.selection import label_lookup
from ddsx.certification.settings import CertifySettings
from ddsx.denoisers.vote import VotingDenoiser, majority_vote
from ddsx.progress import CertifyProgress
from ddsx.smoothing import example_generator
from ddsx.smoothing.loop import CertifyLoop, Example, LoopStats
from ddsx.smoothing.noise import DENOISER_STREAM, GaussianStream
from ddsx.smoothing.precision import autocast, resolve_autocast_dtype
from ddsx.smoothing.procedures import Rule
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
    rule: Rule = field(init=False)
    batch_size: int | None = field(default=None, init=False)
    stats: LoopStats = field(default_factory=LoopStats, init=False)

    def __post_init__(self) -> None:
        # The statistical test certify.mode names, prepared once per run (a plan may come from a cache,
        # re-verified on load: ddsx.smoothing.sequential_boundaries).
        self.rule = self.settings.procedure.prepare(self.settings.budget())
        if self.settings.autocast_dtype == "auto":
            raise ValueError("resolve autocast_dtype=auto first (CertifySettings.resolved_for)")
        self.batch_size = None if self.settings.batch_size == "auto" else int(self.settings.batch_size)
        # What runs: the same models, maybe re-laid out (channels_last) or compiled (fast_paths.py).
        options = {"compile": self.settings.compile, "channels_last": self.settings.channels_last}
        self._denoiser = prepare_model(self.denoiser, "the denoiser", **options)
        self._classifiers = [prepare_model(t.classifier, t.name, **options) for t in self.targets]
        # A voting denoiser (ddsx.denoisers.vote) gives `votes` images per noisy copy, drawn with noise
        # from each example's DENOISER_STREAM; every classifier labels them all and the copy's label
        # is their majority. None: one image per copy, no noise of its own.
        self._voting = self.denoiser if isinstance(self.denoiser, VotingDenoiser) else None

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
                "certifying %d examples of the %s split at sigma=%g with test %s (%d to do) for %d "
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
        """Yield each Example of ``work`` ((position, idx, target numbers)) once decided.

        Scheduling and counting are the shared loop's (``ddsx.smoothing.loop``); the engine adds where
        examples come from (the dataset, on the device, noise seeded by (seed, idx)).
        """
        settings = self.settings
        loop = CertifyLoop(
            self.rule,
            self._stacked_labels,
            num_targets=len(self.targets),
            num_classes=self.num_classes,
            batch_size=self._batch_size(),
            sigma=settings.require_sigma(),
            least_sampled_first=settings.procedure.stops_early,
        )

        def arrivals():
            for order, (position, idx, targets) in enumerate(work):
                image, label = dataset[position]
                x = to_device(image, self.device, settings.pin_memory)
                generator = example_generator(settings.seed, idx, x.device)
                voting = {}
                if self._voting is not None:  # seeded by (seed, idx) too, another stream of the example
                    voting = {
                        "denoiser_noise_shape": self._voting.noise_shape(tuple(x.shape)),
                        "denoiser_generator": example_generator(
                            settings.seed, idx, x.device, DENOISER_STREAM
                        ),
                    }
                yield Example(
                    order,
                    idx,
                    x,
                    int(label),
                    targets,
                    rule=self.rule,
                    n0=settings.n0_used,
                    generator=generator,
                    **voting,
                )

        try:
            yield from loop.run(arrivals())
        finally:
            self.stats = loop.stats

    def _stacked_labels(
        self, noisy: torch.Tensor, needed: list[int], denoiser_noise: torch.Tensor | None
    ) -> torch.Tensor:
        labels = self._labels(noisy, needed, denoiser_noise)
        return torch.stack([labels[t] for t in needed])

    def _labels(
        self, noisy: torch.Tensor, needed: list[int], denoiser_noise: torch.Tensor | None = None
    ) -> dict[int, torch.Tensor]:
        """Each needed target's predicted labels on the noisy batch (denoised once), on the device.

        ``denoiser_noise``: a voting denoiser's noise for these copies; its labels are votes' majorities.
        """
        if self.settings.channels_last and noisy.dim() == 4:
            noisy = noisy.contiguous(memory_format=torch.channels_last)
        dtype = resolve_autocast_dtype(self.settings.autocast_dtype)
        votes = 1 if self._voting is None else self._voting.votes
        with torch.inference_mode():
            with autocast(noisy.device, dtype):
                if self._denoiser is None:
                    denoised = noisy
                elif self._voting is None:
                    denoised = self._denoiser(noisy)
                else:
                    denoised = self._denoiser(noisy, denoiser_noise)
                logits = {t: self._classifiers[t](denoised) for t in needed}
            labels = {}
            for t, out in logits.items():
                if out.dim() != 2 or out.shape != (len(noisy) * votes, self.num_classes):
                    raise ValueError(
                        f"classifier {self.targets[t].name} must return logits "
                        f"({len(noisy) * votes}, {self.num_classes}), got {tuple(out.shape)}"
                    )
                labels[t] = out.argmax(dim=1)
                if self._voting is not None:
                    labels[t] = majority_vote(labels[t].view(len(noisy), votes), self.num_classes)
        return labels

    def _timing_denoiser_noise(self, x: torch.Tensor, size: int, generator: torch.Generator):
        """A voting denoiser's noise for a timing batch (batch-size search, warm-up: never a row)."""
        if self._voting is None:
            return None
        shape = (size, *self._voting.noise_shape(tuple(x.shape)))
        return torch.randn(shape, generator=generator, device=x.device, dtype=x.dtype)

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
            extra = self._timing_denoiser_noise(x, size, generator)
            labels = self._labels(noise.mul_(sigma).add_(x), everyone, extra)
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
        everyone = list(range(len(self.targets)))
        sigma = settings.require_sigma()
        extra = self._timing_denoiser_noise(x, 2, generator)
        self._labels(stream.take(2).mul_(sigma).add_(x), everyone, extra)  # lazy initialisation, not timed
        extra = self._timing_denoiser_noise(x, size, generator)
        start = time.perf_counter()
        self._labels(stream.take(size).mul_(sigma).add_(x), everyone, extra)
        batch_seconds = time.perf_counter() - start
        per_example = batch_seconds * (settings.n0_used + settings.n) / size
        total = per_example * len(mine)
        bound = "at most " if settings.procedure.stops_early else ""
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
        outcome = example.outcome(target)
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
            certified_at=outcome.certified_at,
        )
