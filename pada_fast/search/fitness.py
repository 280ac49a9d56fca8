"""Fitness of an architecture: top-1 accuracy with weights inherited from the supernet on a
held-out split (optionally after BatchNorm recalibration on training batches), and the benchmark's
true accuracy where a ground truth is known (NAS-Bench-201)."""
from __future__ import annotations

from typing import Sequence

from pada_fast.evaluate.engine import RankingEngine


class InheritedFitness:
    """``fitness(arch)`` = accuracy (%) of ``arch`` with the supernet's weights on
    ``eval_batches``; with ``calib_batches``, running-statistics BN is first recalibrated on them
    (SPOS does this for every candidate). Counts its calls in ``evaluations``; architectures the
    supernet runs identically are computed once (:class:`~pada_fast.evaluate.engine.RankingEngine`)."""

    def __init__(self, supernet, eval_batches, calib_batches=None):
        self.supernet = supernet
        self.eval_batches = list(eval_batches)
        self.calib_batches = list(calib_batches) if calib_batches else None
        if not self.eval_batches:
            raise ValueError("InheritedFitness needs at least one held-out batch")
        self.engine = RankingEngine(supernet, self.eval_batches, self.calib_batches)
        self.evaluations = 0

    def __call__(self, arch: Sequence[int]) -> float:
        self.evaluations += 1
        return self.engine.accuracy(tuple(int(g) for g in arch))


class GroundTruthLookup:
    """``lookup(arch)`` = the benchmark's accuracy of ``arch`` (None when the table lacks it)."""

    def __init__(self, space, ground_truth):
        self.space = space
        self.ground_truth = ground_truth

    def __call__(self, arch: Sequence[int]) -> float | None:
        text = self.space.arch_to_str(arch)
        if text not in self.ground_truth:
            return None
        return self.ground_truth.accuracy(text)


__all__ = ["GroundTruthLookup", "InheritedFitness"]
