"""Sampling, mutation and crossover of architectures, for any space.

Spaces may define ``random_arch(rng)``, ``mutate_arch(arch, rng, prob)`` and
``crossover_arch(a, b, rng)`` themselves (DARTS does, to stay genotype-valid); otherwise genes are
drawn uniformly per layer, mutated gene by gene and crossed gene by gene. ``rng`` is always a
``numpy.random.Generator``, whose state resumable searches save as JSON.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

Arch = tuple[int, ...]


def _sizes(space) -> list[int]:
    return [len(c) for c in space.layer_candidates()]


def random_arch(space, rng: np.random.Generator) -> Arch:
    fn = getattr(space, "random_arch", None)
    if fn is not None:
        return tuple(int(g) for g in fn(rng))
    return tuple(int(rng.integers(k)) for k in _sizes(space))


def mutate(space, arch: Sequence[int], rng: np.random.Generator, prob: float = 0.1) -> Arch:
    """Each gene, with probability ``prob``, becomes a different candidate of its layer (SPOS'
    mutation, which always changes a mutated gene)."""
    fn = getattr(space, "mutate_arch", None)
    if fn is not None:
        return tuple(int(g) for g in fn(arch, rng, prob))
    genes = [int(g) for g in arch]
    for layer, k in enumerate(_sizes(space)):
        if k > 1 and rng.random() < prob:
            new = int(rng.integers(k - 1))
            genes[layer] = new + (new >= genes[layer])
    return tuple(genes)


def crossover(space, a: Sequence[int], b: Sequence[int], rng: np.random.Generator) -> Arch:
    """Each gene from either parent with probability 1/2."""
    fn = getattr(space, "crossover_arch", None)
    if fn is not None:
        return tuple(int(g) for g in fn(a, b, rng))
    return tuple(int(x if rng.random() < 0.5 else y) for x, y in zip(a, b))


def arch_key(space, arch: Sequence[int]) -> str:
    """Deduplication key: functionally identical NAS-Bench-201 cells share one; otherwise the
    architecture string."""
    fn = getattr(space, "functional_arch_key", None)
    if fn is not None:
        return fn(arch)
    return space.arch_to_str(arch)


__all__ = ["arch_key", "crossover", "mutate", "random_arch"]
