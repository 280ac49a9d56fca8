"""Timing helpers shared by the benchmarks: A/B alternation, medians, synchronised CUDA timing."""
from __future__ import annotations

import statistics
import time
from typing import Callable

import torch


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_ab(fns: dict[str, Callable[[], object]], device: str = "cpu", rounds: int = 30,
            inner: int = 5, warmup: int = 3) -> dict[str, list[float]]:
    """Seconds per call of each function, measured in alternating rounds so drift hits all alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    _sync(device)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            _sync(device)
            start = time.perf_counter()
            for _ in range(inner):
                fn()
            _sync(device)
            times[name].append((time.perf_counter() - start) / inner)
    return times


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def spread(xs: list[float]) -> tuple[float, float]:
    """Interquartile range (25th, 75th percentile)."""
    q = statistics.quantiles(xs, n=4)
    return q[0], q[2]


def ratio_row(name: str, ref: list[float], new: list[float]) -> str:
    r = [a / b for a, b in zip(ref, new)]
    lo, hi = spread(r)
    return (f"| {name} | {median(ref) * 1e3:.3f} | {median(new) * 1e3:.3f} | **{median(r):.2f}x** "
            f"| {lo:.2f}–{hi:.2f} |")
