"""Which examples a run certifies: the split they come from and the selection within it.

Two parts, kept apart because they change for different reasons:

- the split (``result_file.describe_split``): the split seed and a fingerprint of which examples, in which
  order, the split holds. Row idx i names the i-th example of the split, so another split makes
  every existing row a row of another image; the sidecar's ``dataset`` part holds it and a resume
  compares it (``dataset.split_seed``, ``dataset.fingerprint``).
- the selection (:class:`Selection`): every ``skip``-th example, the first ``max``, this shard's
  share. It may change between resumes (a larger ``certify.max`` extends a run); the rows already in
  a file must lie inside it (``ddsx.certification.row_validation``). It is read back from a sidecar
  without listing the examples, since a hostile ``split_size`` must not allocate a list.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ddsx.certification.result_file import ResultFileError, source_indices


def label_lookup(dataset: Any) -> Callable[[int], int | None]:
    """idx -> the dataset's label of that example (None for an idx the dataset does not serve).

    Uses the dataset's ``label_at(position)`` where it has one (no image is decoded), else reads the item.
    """
    source = source_indices(dataset)
    position = {idx: p for p, idx in enumerate(source)} if source is not None else None
    label_at = getattr(dataset, "label_at", None)

    def label(idx: int) -> int | None:
        p = idx if position is None else position.get(idx)
        if p is None or not 0 <= p < len(dataset):
            return None
        return int(label_at(p)) if callable(label_at) else int(dataset[p][1])

    return label


@dataclass(frozen=True)
class Selection:
    """The examples one result file is meant to hold, as ``settings.selected_indices`` chooses them:
    positions 0, skip, 2 skip, ... of a split of ``split_size``, the first ``max_examples``, every
    ``num_shards``-th from the ``shard``-th; a row's idx is ``source[position]`` for a subset."""

    split_size: int
    skip: int = 1
    max_examples: int | None = None
    shard: int = 0
    num_shards: int = 1
    source: tuple[int, ...] | None = None

    @classmethod
    def from_identity(cls, identity: dict[str, Any], where: str) -> Selection | None:
        """The selection a sidecar document records; None when it records no split size (older files).

        Values of the wrong type are an error naming ``where`` (the sidecar): the file is hostile.
        """
        settings, info = identity.get("settings") or {}, identity.get("info") or {}
        if "split_size" not in settings:
            return None
        size = _count(settings.get("split_size"), where, "settings.split_size", 0)
        skip = _count(info.get("skip", 1), where, "info.skip", 1)
        most = info.get("max")
        most = None if most is None else _count(most, where, "info.max", 0)
        num_shards = _count(info.get("num_shards", 1), where, "info.num_shards", 1)
        shard = _count(info.get("shard", 0), where, "info.shard", 0)
        if shard >= num_shards:
            raise ResultFileError(f"{where}: info.shard={shard} is not below info.num_shards={num_shards}")
        source = info.get("source_indices")
        if source is not None:
            if not isinstance(source, list) or len(source) != size:
                raise ResultFileError(f"{where}: info.source_indices is not a list of {size} idx")
            source = tuple(_count(i, where, "info.source_indices[]", 0) for i in source)
        return cls(size, skip, most, shard, num_shards, source)

    @property
    def _picked(self) -> int:
        """How many examples the whole run picks (every shard together)."""
        count = -(-self.split_size // self.skip)
        return count if self.max_examples is None else min(count, self.max_examples)

    def __len__(self) -> int:
        return len(range(self.shard, self._picked, self.num_shards))

    def _position(self, idx: int) -> int | None:
        if self.source is None:
            return idx
        if not hasattr(self, "_positions"):
            object.__setattr__(self, "_positions", {i: p for p, i in enumerate(self.source)})
        return self._positions.get(idx)

    def __contains__(self, idx: object) -> bool:
        if not isinstance(idx, int):
            return False
        position = self._position(idx)
        if position is None or not 0 <= position < self.split_size or position % self.skip:
            return False
        rank = position // self.skip
        return rank < self._picked and rank % self.num_shards == self.shard

    def whole(self) -> Selection:
        """The selection of the whole run this shard belongs to."""
        return Selection(self.split_size, self.skip, self.max_examples, 0, 1, self.source)

    def describe(self) -> str:
        """How it was chosen, in the config's words (for messages)."""
        parts = [f"certify.skip={self.skip}", f"certify.max={self.max_examples}"]
        if self.num_shards > 1:
            parts.append(f"certify.shard={self.shard} of {self.num_shards}")
        subset = " subset" if self.source is not None else ""
        return f"{', '.join(parts)} of a{subset} split of {self.split_size}"

    def plan(self) -> dict[str, Any]:
        """What the shards of one run must agree on, by the names a message gives them."""
        return {
            "split_size": self.split_size,
            "certify.skip": self.skip,
            "certify.max": self.max_examples,
            "the subset": self.source,
        }


def _count(value: Any, where: str, name: str, least: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise ResultFileError(f"{where}: {name} is {value!r}, not an integer >= {least}")
    return value
