"""The one certification loop: noisy copies of several examples packed into forward batches, every
(example, classifier) count of a batch formed on the device with one segment-sum, and the decisions
of every pair taken from one host read per look.

Why here, in ddsx.smoothing: this is statistics and sampling, the same for one example
(``Smooth.certify``, ``Smooth.certify_sequential``) as for a dataset (``ddsx.certification.engine``,
which adds files, processes, progress and the choice of test from the settings). So the dependency
runs one way: certification imports this, and this knows nothing of files, Lightning or Hydra.

Noise: each example draws from its own generator, first its n0 selection copies, then a stream of
the test's copies, in the fixed blocks of ``ddsx.smoothing.noise``; so a decision depends on neither
the batch size nor the packing nor the other classifiers. A voting denoiser's own noise comes from a
second generator of the example, one sample per copy in the same order (``Example.denoiser_stream``).

Drawing ahead: an example asks for the copies up to its next look; when the batch still has room
after every example in flight got that (few examples left), an example may draw several looks'
worth in one batch (``CertifyLoop.draw_ahead``). Its chunk is then cut at its looks into segments,
each counted apart, and the test's decisions are applied look by look in order after the batch: the
decision, radius, prediction and recorded sample count are those of the look-by-look loop; copies
drawn past the look at which the example stopped are wasted (``LoopStats.copies`` vs ``used``).

Counting: a batch's labels of every needed classifier (T', B) are turned into ids
``row * C + label`` (row: one per (segment, classifier); C classes; positions a pair does not need
go to a dump row) and counted by one ``bincount`` into the batch's segment table, which is then
added (``index_add_``) into a device table ``counts`` (one row per (example slot, classifier)) that
only ever grows. The host reads both tables (one transfer) only in a batch after which some pair
has reached a look or finished its selection; it keeps the last copy it read, and a pair's counts
at the end of the batch are the difference with the copy at the start of its phase, at an earlier
look of the batch that minus its later segments. A row gets nothing after the batch in which its
pair is decided (it is no longer needed), so the last read always holds its final counts.
"""

from __future__ import annotations

import dataclasses
import numbers
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from ddsx.smoothing.noise import GaussianStream
from ddsx.smoothing.procedures.base import Outcome, Rule

# classify(noisy (B, C, H, W), needed classifier numbers, denoiser noise (B, ...) or None) -> labels
# (len(needed), B) on the device.
Classify = Callable[[torch.Tensor, list[int], torch.Tensor | None], torch.Tensor]


@dataclass
class LoopStats:
    """What the loop did: forward batches, host reads of the counts, noisy copies drawn."""

    batches: int = 0
    host_reads: int = 0
    copies: int = 0  # drawn and classified
    used: int = 0  # of those, up to the look at which each example stopped (selection copies included)


class Example:
    """One example in flight: its noise streams, its selection, one decision per classifier under test."""

    def __init__(
        self,
        order: int,
        idx: int,
        x: torch.Tensor,
        label: int,
        targets: list[int],
        *,
        rule: Rule,
        n0: int,
        generator: torch.Generator | None,
        payload: object = None,
        denoiser_noise_shape: tuple[int, ...] | None = None,
        denoiser_generator: torch.Generator | None = None,
    ) -> None:
        self.order, self.idx, self.x, self.label = order, idx, x, int(label)
        self.targets = list(targets)
        self.rule, self.payload = rule, payload
        stream = {"generator": generator, "device": x.device, "dtype": x.dtype}
        # Selection copies first, then the test's: the order every caller has always drawn them in.
        self.select_left = int(n0)
        self.select_stream = GaussianStream(x.shape, self.select_left, **stream)
        self.test_stream = GaussianStream(x.shape, int(rule.looks[-1]), **stream)
        # A denoiser that votes over randomised denoisings (ddsx.denoisers.vote) takes its noise from a
        # second stream of its own generator: one sample per noisy copy, in the copies' order (see _count).
        self.denoiser_stream = (
            None
            if denoiser_noise_shape is None
            else GaussianStream(
                denoiser_noise_shape,
                self.select_left + int(rule.looks[-1]),
                generator=denoiser_generator,
                device=x.device,
                dtype=x.dtype,
            )
        )
        m, k = len(self.targets), len(rule.radii)
        self.candidates = np.full(m, self.label, dtype=np.int64)
        self.hits = np.zeros(m, dtype=np.int64)
        self.certified = np.zeros((m, k), dtype=bool)
        self.abandoned = np.zeros((m, k), dtype=bool)
        self.certified_at = np.zeros((m, k), dtype=np.int64)
        self.pending = np.ones(m, dtype=bool)  # undecided pairs
        self.samples = 0  # test copies drawn (every look up to here is decided after each batch)
        self.decided_after = np.zeros(m, dtype=np.int64)  # per pair, the look at which it was decided
        self.look = 0  # index of the next look
        self.drawn = 0  # all copies drawn, selection included
        self.seconds = 0.0
        self.slot = -1
        self.base: np.ndarray | None = None  # counts of the slot's rows at the start of this phase

    @property
    def selecting(self) -> bool:
        return self.select_left > 0

    @property
    def done(self) -> bool:
        return not self.selecting and not self.pending.any()

    def needs(self) -> list[int]:
        """Targets whose classifier must see this example's next chunk."""
        return (
            list(self.targets)
            if self.selecting
            else [t for t, p in zip(self.targets, self.pending, strict=True) if p]
        )

    def request(self) -> int:
        """Copies this example can use in the next batch (a selection chunk never mixes with a test one)."""
        if self.selecting:
            return self.select_left
        if not self.pending.any():
            return 0
        return int(self.rule.looks[self.look]) - self.samples

    def cuts(self, k: int) -> list[int]:
        """The ends (test copies drawn) of the segments of a test chunk of k copies: each look it
        reaches, and its end."""
        looks = self.rule.looks
        first = int(np.searchsorted(looks, self.samples, side="right"))
        last = int(np.searchsorted(looks, self.samples + k, side="right"))
        ends = [int(t) for t in looks[first:last]]
        if not ends or ends[-1] != self.samples + k:
            ends.append(self.samples + k)
        return ends

    def take(self, k: int) -> torch.Tensor:
        self.drawn += k
        return (self.select_stream if self.selecting else self.test_stream).take(k)

    def outcome(self, target: int) -> Outcome:
        """The decided answer for classifier ``target`` (one of this example's targets)."""
        i = self.targets.index(target)
        out = self.rule.outcome(
            int(self.candidates[i]), int(self.hits[i]), int(self.decided_after[i]), self.certified[i]
        )
        if out.prediction >= 0 and out.certified_at is None:  # grid: when the reported radius was certified
            k = int(np.flatnonzero(self.certified[i])[-1])
            out = dataclasses.replace(out, certified_at=int(self.certified_at[i, k]))
        return out


class CertifyLoop:
    """Packs examples into batches and decides them (see the module docstring).

    Args:
        rule: the prepared test.
        classify: labels of the needed classifiers on a noisy batch (see ``Classify``).
        num_targets, num_classes: classifiers that may be asked, classes.
        batch_size: noisy copies per forward pass at most.
        sigma: noise level; a chunk's copies are x + sigma * noise.
        least_sampled_first: order examples by copies drawn (tests that stop early: batches stay
            full while examples stop at different times), else by arrival (rows come one by one).
        draw_ahead: let an example draw past its next look when the batch has room (see the module
            docstring and ``_plan``); False: one look per example per batch.
    """

    def __init__(
        self,
        rule: Rule,
        classify: Classify,
        *,
        num_targets: int,
        num_classes: int,
        batch_size: int,
        sigma: float,
        least_sampled_first: bool,
        draw_ahead: bool = True,
    ) -> None:
        if not isinstance(batch_size, numbers.Integral) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        self.rule, self.classify = rule, classify
        self.num_targets, self.num_classes = int(num_targets), int(num_classes)
        self.batch_size, self.sigma = int(batch_size), float(sigma)
        self.least_sampled_first, self.draw_ahead = least_sampled_first, draw_ahead
        self.stats = LoopStats()
        self._free: list[int] = []
        self._slots = 0
        self._counts: torch.Tensor | None = None  # (slots * T, C) on the device
        self._seen = np.zeros((0, self.num_classes), dtype=np.int64)  # the last host read of it

    # ----- slots and the counts table ----------------------------------------------------------------
    def _rows(self, example: Example) -> np.ndarray:
        return example.slot * self.num_targets + np.asarray(example.targets, dtype=np.int64)

    def _assign_slot(self, example: Example, device: torch.device) -> None:
        if not self._free:
            grown = max(4, 2 * self._slots)
            rows = grown * self.num_targets
            table = torch.zeros((rows, self.num_classes), dtype=torch.long, device=device)
            seen = np.zeros((rows, self.num_classes), dtype=np.int64)
            if self._counts is not None:  # keep what is counted
                old = self._slots * self.num_targets
                table[:old] = self._counts
                seen[:old] = self._seen
            self._counts, self._seen = table, seen
            self._free = list(range(grown - 1, self._slots - 1, -1))
            self._slots = grown
        example.slot = self._free.pop()
        # The rows hold the previous owner's final counts, all in the last read (see module docstring).
        example.base = self._seen[self._rows(example)].copy()

    # ----- the loop ------------------------------------------------------------------------------------
    def run(self, arrivals: Iterable[Example]) -> Iterator[Example]:
        """Yield each example of ``arrivals`` once decided (in arrival order within a batch)."""
        waiting = iter(arrivals)
        exhausted = False
        active: list[Example] = []
        while True:
            # Examples join while the batch is short of one look each: drawing ahead only ever takes
            # room that no waiting example could use.
            while not exhausted and sum(e.request() for e in active) < self.batch_size:
                example = next(waiting, None)
                if example is None:
                    exhausted = True
                    break
                self._assign_slot(example, example.x.device)
                active.append(example)
            if not active:
                return
            if self.least_sampled_first:
                active.sort(key=lambda e: (e.drawn, e.order))
            else:
                active.sort(key=lambda e: e.order)
            plan = self._plan(active)
            # (example, targets, segment ends, noise); a selection chunk is one segment.
            chunks = [(e, e.needs(), [k] if e.selecting else e.cuts(k), e.take(k)) for e, k in plan]
            start = time.perf_counter()
            numbers, segments = self._count(chunks)
            seconds = time.perf_counter() - start
            total = sum(k for _, k in plan)
            self.stats.batches += 1
            self.stats.copies += total
            selected, looking = [], []
            for (example, _, ends, noise), numbered in zip(chunks, numbers, strict=True):
                example.seconds += seconds * len(noise) / total
                if example.selecting:
                    example.select_left -= len(noise)
                    if not example.selecting:
                        selected.append(example)
                else:
                    example.samples += len(noise)
                    if example.samples >= int(self.rule.looks[example.look]):
                        looking.append((example, ends, numbered))
            if selected or looking:
                self._look(selected, looking, segments)
            finished = [e for e in active if e.done]
            for example in finished:
                self._free.append(example.slot)
                self.stats.used += example.drawn - (example.samples - int(example.decided_after.max()))
            active = [e for e in active if not e.done]
            yield from sorted(finished, key=lambda e: e.order)

    def _plan(self, active: list[Example]) -> list[tuple[Example, int]]:
        """(example, copies) of the next batch: first each example's copies up to its next look, in
        order; then, if room is left, more looks to the examples in their test phase, one look at a
        time in turn (so few examples in flight share the room), until the batch is full or each has
        its whole budget.

        Why fill the batch rather than cap the looks drawn ahead: an example never draws past its
        budget n, and a batch is never fuller than a fixed-n run's, so a sequential run draws at most
        the copies of fixed n in at most its batches, whatever the device; what it draws past the
        look at which it stops (at most one batch per example, counted in ``LoopStats``) is room that
        would otherwise have been empty, which costs little on an accelerator. A cap would save those
        copies on a CPU only by adding batches.
        """
        space = self.batch_size
        give: dict[int, int] = {}
        for i, example in enumerate(active):
            k = min(example.request(), space)
            if k > 0:
                give[i] = k
                space -= k
            if not space:
                break
        if not (space and self.draw_ahead):
            return [(active[i], k) for i, k in give.items()]
        looks = self.rule.looks
        budget = int(looks[-1])
        open_ = [i for i in give if not active[i].selecting]
        while space and open_:
            still = []
            for i in open_:
                reach = active[i].samples + give[i]
                if reach >= budget or not space:
                    continue
                following = int(looks[np.searchsorted(looks, reach, side="right")])
                k = min(following - reach, space)
                give[i] += k
                space -= k
                still.append(i)
            open_ = still
        return [(active[i], k) for i, k in give.items()]

    def _count(self, chunks) -> tuple[list[list[int]], torch.Tensor]:
        """One forward batch and one segment-sum of its labels into the batch's segment table, which
        is added into ``counts``. Returns, per chunk, the numbers of its segments, and the table
        (segments * T + 1 rows, the last the dump)."""
        device = chunks[0][0].x.device
        noisy = torch.cat([noise.mul_(self.sigma).add_(example.x) for example, _, _, noise in chunks])
        # In lockstep with the smoothing noise: each chunk's copies take as many denoiser samples, so
        # copy j of an example always meets denoiser sample j, however the copies are cut into batches.
        denoiser_noise = (
            None
            if chunks[0][0].denoiser_stream is None
            else torch.cat([example.denoiser_stream.take(len(noise)) for example, *_, noise in chunks])
        )
        needed = sorted({t for _, targets, _, _ in chunks for t in targets})
        labels = self.classify(noisy, needed, denoiser_noise)  # (T', B)
        position = {t: i for i, t in enumerate(needed)}
        lengths, owners, numbers = [], [], []
        for example, targets, ends, _ in chunks:
            start = example.samples if not example.selecting else 0
            numbers.append(list(range(len(lengths), len(lengths) + len(ends))))
            for end in ends:
                lengths.append(end - start)
                owners.append((example, targets))
                start = end
        count, T = len(lengths), self.num_targets
        dump = count * T
        rows = np.full((len(needed), count), dump, dtype=np.int64)
        into = np.empty(count * T, dtype=np.int64)  # segment row -> row of the counts table
        for s, (example, targets) in enumerate(owners):
            for t in targets:
                rows[position[t], s] = s * T + t
            into[s * T : (s + 1) * T] = example.slot * T + np.arange(T)
        sizes = np.array(lengths, dtype=np.int64)
        index = _to_device(np.concatenate([rows.ravel(), sizes, into]), device)
        row_of = (
            index[: rows.size].view(rows.shape).repeat_interleave(index[rows.size : rows.size + count], dim=1)
        )
        ids = (row_of * self.num_classes + labels).reshape(-1)
        table = torch.bincount(ids, minlength=(dump + 1) * self.num_classes).view(dump + 1, -1)
        self._counts.index_add_(0, index[rows.size + count :], table[:dump])
        return numbers, table

    def _look(self, selected: list[Example], looking: list, segments: torch.Tensor) -> None:
        """One host read of the counts and of the batch's segments: selections end, then the decisions
        of every look reached in the batch, in order of the looks (pairs at the same look together)."""
        kept = self._counts.shape[0]
        read = torch.cat([self._counts, segments]).cpu().numpy()
        self._seen, batch = read[:kept], read[kept:]
        self.stats.host_reads += 1
        for example in selected:
            rows = self._rows(example)
            # As CERTIFY: the candidate is the most frequent class of the n0 copies, ties to the lowest.
            example.candidates = (self._seen[rows] - example.base).argmax(axis=1).astype(np.int64)
            example.base = self._seen[rows].copy()  # the test's counts start here
        # Each look reached: (look, example, its counts there), from the counts at the end of the
        # batch minus the segments after that look.
        reached: dict[int, list[tuple[Example, np.ndarray]]] = {}
        T = self.num_targets
        for example, ends, numbered in looking:
            targets = np.asarray(example.targets, dtype=np.int64)
            counts = self._seen[self._rows(example)] - example.base
            for end, s in zip(reversed(ends), reversed(numbered), strict=True):
                look = int(np.searchsorted(self.rule.looks, end))
                if look < len(self.rule.looks) and int(self.rule.looks[look]) == end:
                    reached.setdefault(look, []).append((example, counts.copy()))
                counts = counts - batch[s * T + targets]
        for look in sorted(reached):
            group = [(e, c) for e, c in reached[look] if e.pending.any()]
            if not group:
                continue
            rule = self.rule
            idx = [(e, np.flatnonzero(e.pending)) for e, _ in group]
            for (example, i), (_, counts) in zip(idx, group, strict=True):
                example.hits[i] = counts[i, example.candidates[i]]
            hits = np.concatenate([e.hits[i] for e, i in idx])
            certified = np.concatenate([e.certified[i] for e, i in idx])
            abandoned = np.concatenate([e.abandoned[i] for e, i in idx])
            new_c, new_a = rule.decide(look, hits, certified, abandoned)
            finished = rule.finished(look, new_c, new_a)
            t = int(rule.looks[look])
            offset = 0
            for example, i in idx:
                part = slice(offset, offset + len(i))
                offset += len(i)
                newly = new_c[part] & ~example.certified[i]
                example.certified_at[i] = np.where(newly, t, example.certified_at[i])
                example.certified[i], example.abandoned[i] = new_c[part], new_a[part]
                example.decided_after[i] = t
                example.pending[i[finished[part]]] = False
                example.look = look + 1


def _to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """A small host index array on ``device`` without waiting for the device (pinned, non-blocking)."""
    tensor = torch.from_numpy(array)
    if device.type == "cpu":
        return tensor
    return tensor.pin_memory().to(device, non_blocking=True)
