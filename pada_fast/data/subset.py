"""Deterministic class-stratified subsets (e.g. "10,000 CIFAR-10 training JPEGs")."""
from __future__ import annotations

import numpy as np


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
