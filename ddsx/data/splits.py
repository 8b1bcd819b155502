"""Seeded index splits. The split seed is separate from the run seed, so every run (whatever its
`seed`) trains, validates and certifies on the same examples."""

from __future__ import annotations

import numpy as np


def seeded_permutation(n: int, seed: int) -> np.ndarray:
    """A permutation of range(n) that depends only on (n, seed). Returns int64 array (n,)."""
    return np.random.default_rng(seed).permutation(n).astype(np.int64)


def split_indices(n: int, sizes: list[int], seed: int) -> list[np.ndarray]:
    """Split range(n) into disjoint random parts of the given sizes (each part sorted).

    sizes must sum to at most n; indices left over are dropped. Returns one int64 array per size.
    """
    if any(s < 0 for s in sizes) or sum(sizes) > n:
        raise ValueError(f"split sizes {sizes} must be >= 0 and sum to at most the {n} examples available")
    perm = seeded_permutation(n, seed)
    bounds = np.cumsum([0, *sizes])
    # Sorted parts: reading in file order is friendlier to disk caches and gives stable idx numbering.
    return [np.sort(perm[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def stratified_split(labels: np.ndarray, sizes: list[int], seed: int) -> list[np.ndarray]:
    """Split range(len(labels)) into disjoint parts of the given sizes, each holding every class in
    proportion (within one example per class), each part in a seeded random order (not sorted).

    Why: a dataset stored sorted by class (mnist5k is) must not give a test split whose first N
    examples are a few classes, since `certify.max=N` certifies the first N. Systematic stratified
    sampling: within each class the examples take seeded random ranks, each example's rank is scaled
    to a fraction of its class (rank + u) / class size, and the parts are consecutive runs of the
    examples ordered by that fraction; so each part's class counts are proportional within one.
    Returns one int64 array per size.
    """
    labels = np.asarray(labels)
    n = len(labels)
    if any(s < 0 for s in sizes) or sum(sizes) > n:
        raise ValueError(f"split sizes {sizes} must be >= 0 and sum to at most the {n} examples available")
    rng = np.random.default_rng(seed)
    fraction = np.empty(n, dtype=np.float64)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        ranks = rng.permutation(len(members))
        fraction[members] = (ranks + rng.random(len(members))) / len(members)
    order = np.argsort(fraction, kind="stable")
    bounds = np.cumsum([0, *sizes])
    return [
        rng.permutation(order[a:b]).astype(np.int64) for a, b in zip(bounds[:-1], bounds[1:], strict=True)
    ]


def carve_validation(n_train: int, val_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Hold out `val_size` seeded examples of a training set. Returns (train_idx, val_idx)."""
    if not 0 <= val_size < n_train:
        raise ValueError(
            f"val_size={val_size} must be >= 0 and smaller than the {n_train} training examples found"
        )
    val_idx, train_idx = split_indices(n_train, [val_size, n_train - val_size], seed)
    return train_idx, val_idx


def fraction_sizes(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int, int]:
    """(train, val, test) sizes for fractional val/test shares of n examples (rounded)."""
    if not (0 <= val_fraction and 0 <= test_fraction and val_fraction + test_fraction < 1):
        raise ValueError(
            f"val_fraction={val_fraction} and test_fraction={test_fraction} must be >= 0 and sum to < 1"
        )
    n_val, n_test = round(n * val_fraction), round(n * test_fraction)
    return n - n_val - n_test, n_val, n_test
