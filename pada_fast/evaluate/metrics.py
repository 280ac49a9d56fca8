"""Ranking agreement between predicted (supernet) and true (benchmark) accuracies."""
from __future__ import annotations

import math

import numpy as np
from scipy import stats

TOP_FRACTIONS = (0.01, 0.05, 0.10)


def _pair(pred, true) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred, dtype=np.float64).reshape(-1)
    true = np.asarray(true, dtype=np.float64).reshape(-1)
    if pred.shape != true.shape:
        raise ValueError(f"pred has {pred.size} values but true has {true.size}; pass one "
                         "predicted and one true accuracy per architecture")
    if pred.size < 2:
        raise ValueError(f"ranking needs at least 2 architectures, got {pred.size}")
    for name, values in (("pred", pred), ("true", true)):
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            raise ValueError(f"{name}[{bad[0]}] is {values[bad[0]]} ({bad.size} non-finite "
                             "value(s)); every accuracy must be a finite number")
    return pred, true


def kendall_tau(pred, true) -> float:
    """Kendall's tau-b (ties handled as ``scipy.stats.kendalltau``); NaN if either side is
    constant, where the correlation is undefined."""
    pred, true = _pair(pred, true)
    return float(stats.kendalltau(pred, true, variant="b").statistic)


def spearman_rho(pred, true) -> float:
    pred, true = _pair(pred, true)
    return float(stats.spearmanr(pred, true).statistic)


def top_k_count(n: int, fraction: float) -> int:
    """k = max(1, round(fraction * n)), rounding halves up (not Python's half-to-even)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction} (5% is 0.05)")
    return max(1, int(math.floor(fraction * n + 0.5)))


def _top_k(values: np.ndarray, k: int) -> np.ndarray:
    # Stable sort of the negated values: highest first, ties to the earlier position, so the result
    # does not depend on the sort algorithm.
    return np.argsort(-values, kind="stable")[:k]


def precision_at_top(pred, true, fraction: float) -> float:
    """Fraction of the true top-k architectures that are also in the predicted top-k,
    k = :func:`top_k_count` (n, fraction). Ties at the cut are broken by position (earlier wins)."""
    pred, true = _pair(pred, true)
    k = top_k_count(pred.size, fraction)
    found = np.intersect1d(_top_k(pred, k), _top_k(true, k)).size
    return found / k


def ranking_metrics(pred, true) -> dict:
    """``{"kendall_tau", "spearman_rho", "precision_top1pct", "precision_top5pct",
    "precision_top10pct", "n"}``."""
    pred, true = _pair(pred, true)
    result = {"kendall_tau": kendall_tau(pred, true), "spearman_rho": spearman_rho(pred, true)}
    for fraction in TOP_FRACTIONS:
        result[f"precision_top{round(fraction * 100)}pct"] = precision_at_top(pred, true, fraction)
    result["n"] = int(pred.size)
    return result
