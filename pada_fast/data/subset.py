"""Deterministic subsets (e.g. "10,000 CIFAR-10 training JPEGs"): class-stratified or uniformly random."""
from __future__ import annotations

import numpy as np


SUBSET_MODES = ("stratified", "random")


def random_subset_indices(total: int, n: int, seed: int = 0) -> np.ndarray:
    """Indices (ascending) of ``n`` of ``total`` samples drawn uniformly without replacement by
    ``numpy.random.default_rng(seed)``: class proportions vary by chance, as in a plain random split."""
    if not 1 <= n <= total:
        raise ValueError(f"subset size must be between 1 and the dataset size {total}, got {n}")
    return np.sort(np.random.default_rng(seed).choice(total, size=n, replace=False))


def subset_indices(targets, n: int, seed: int = 0, mode: str = "stratified") -> np.ndarray:
    """``n`` indices of ``targets`` drawn ``"stratified"`` (class proportions kept) or ``"random"``."""
    if mode == "stratified":
        return stratified_subset_indices(targets, n, seed)
    if mode == "random":
        return random_subset_indices(len(targets), n, seed)
    raise ValueError(f"subset mode must be one of {', '.join(SUBSET_MODES)}, got {mode!r}")


def stratified_subset_indices(targets, n: int, seed: int = 0) -> np.ndarray:
    """Indices (ascending) of ``n`` samples whose class proportions match ``targets``'.

    Each class gets ``floor(n * count_c / N)`` samples; the ``n - sum`` left over go one each to the
    classes with the largest fractional remainders (ties to the lower class id). Within a class the
    samples are drawn without replacement by ``numpy.random.default_rng(seed)``, classes in
    ascending order, so the same (targets, n, seed) always gives the same subset.
    """
    targets = np.asarray(targets)
    total = len(targets)
    if not 1 <= n <= total:
        raise ValueError(f"subset size must be between 1 and the dataset size {total}, got {n}")
    classes, inverse, counts = np.unique(targets, return_inverse=True, return_counts=True)
    exact = n * counts / total
    quota = np.floor(exact).astype(np.int64)
    leftover = n - int(quota.sum())
    # Stable sort on the negated remainder: largest remainder first, lower class id on ties.
    order = np.argsort(-(exact - quota), kind="stable")
    quota[order[:leftover]] += 1
    rng = np.random.default_rng(seed)
    chosen = []
    for class_pos in range(len(classes)):
        members = np.flatnonzero(inverse == class_pos)
        chosen.append(rng.choice(members, size=int(quota[class_pos]), replace=False))
    return np.sort(np.concatenate(chosen))


def class_mixed_order(targets, seed: int = 0) -> np.ndarray:
    """A seeded permutation of ``0..len(targets)-1`` in which the classes are interleaved in
    proportion, so any run of consecutive positions (an evaluation batch) holds each class at
    nearly its share of the whole split.

    Batch-statistics BatchNorm normalises each batch by its own statistics, so a batch of one
    class (image folders are stored class by class) would be judged by that class's statistics.
    Exactly: with ``numpy.random.default_rng(seed)``, each class's members are shuffled, member
    ``r`` of a class of ``n_c`` gets the key ``(r + u_c) / n_c`` with one offset ``u_c`` in [0, 1)
    per class, and positions are sorted by key (ties by class). The same (targets, seed) always
    gives the same order.
    """
    targets = np.asarray(targets).reshape(-1)
    if targets.size == 0:
        raise ValueError("cannot order an empty split")
    classes, inverse = np.unique(targets, return_inverse=True)
    rng = np.random.default_rng(seed)
    offsets = rng.random(len(classes))
    keys = np.empty(targets.size, dtype=np.float64)
    for c in range(len(classes)):
        members = rng.permutation(np.flatnonzero(inverse == c))
        keys[members] = (np.arange(members.size) + offsets[c]) / members.size
    return np.lexsort((inverse, keys)).astype(np.int64)
