import math

import numpy as np
import pytest
from scipy import stats

from pada_fast.evaluate.metrics import (kendall_tau, precision_at_top, ranking_metrics,
                                        spearman_rho, top_k_count)


@pytest.mark.parametrize("seed", range(5))
def test_kendall_tau_matches_scipy_with_ties(seed):
    rng = np.random.default_rng(seed)
    true = rng.integers(0, 8, 200).astype(float)  # many ties
    pred = true + rng.normal(0, 3, 200).round()
    expected = stats.kendalltau(pred, true, variant="b").statistic
    assert kendall_tau(pred, true) == pytest.approx(expected, abs=1e-12)
    assert spearman_rho(pred, true) == pytest.approx(stats.spearmanr(pred, true).statistic)


def test_kendall_tau_b_by_hand():
    # pred = [1, 2, 2, 3], true = [1, 3, 2, 4]: pairs (i<j) concordant 5, discordant 0,
    # tied only in pred 1 -> tau_b = 5 / sqrt((6 - 1) * 6).
    assert kendall_tau([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(5 / math.sqrt(30))


def test_perfect_and_inverse_rankings():
    true = np.linspace(10, 94, 100)
    for metric in (kendall_tau, spearman_rho):
        assert metric(true * 2 + 1, true) == pytest.approx(1.0)
        assert metric(-true, true) == pytest.approx(-1.0)
    perfect = ranking_metrics(true, true)
    assert perfect == {"kendall_tau": pytest.approx(1.0), "spearman_rho": pytest.approx(1.0),
                       "precision_top1pct": 1.0, "precision_top5pct": 1.0,
                       "precision_top10pct": 1.0, "n": 100}
    inverse = ranking_metrics(-true, true)
    assert inverse["precision_top5pct"] == 0.0 and inverse["precision_top10pct"] == 0.0


def test_top_k_count_rounding():
    assert top_k_count(100, 0.05) == 5
    assert top_k_count(10, 0.05) == 1       # round(0.5) -> 1 (halves up), never below 1
    assert top_k_count(10, 0.01) == 1       # max(1, 0)
    assert top_k_count(30, 0.05) == 2       # 1.5 -> 2
    assert top_k_count(15_625, 0.05) == 781
    with pytest.raises(ValueError, match="0.05"):
        top_k_count(10, 5)


def test_precision_at_top_by_hand():
    true = [90, 80, 70, 60, 50, 40, 30, 20, 10, 0]
    # Top 20% = 2 architectures. True top-2: positions {0, 1}.
    assert precision_at_top([9, 8, 7, 6, 5, 4, 3, 2, 1, 0], true, 0.2) == 1.0
    assert precision_at_top([9, 0, 8, 6, 5, 4, 3, 2, 1, 0], true, 0.2) == 0.5   # pred top {0, 2}
    assert precision_at_top([0, 0, 8, 9, 5, 4, 3, 2, 1, 0], true, 0.2) == 0.0   # pred top {3, 2}
    # Top 30% = 3: true {0, 1, 2}; predicted {9, 0, 5} -> one found.
    assert precision_at_top([5, 0, 0, 0, 0, 6, 0, 0, 0, 7], true, 0.3) == pytest.approx(1 / 3)


def test_precision_ties_break_by_position():
    # Predicted scores all equal: the predicted top-1 is position 0 (earliest).
    assert precision_at_top([1, 1, 1, 1], [4, 3, 2, 1], 0.25) == 1.0
    assert precision_at_top([1, 1, 1, 1], [1, 2, 3, 4], 0.25) == 0.0


def test_bad_inputs():
    with pytest.raises(ValueError, match="pred has 3 values but true has 2"):
        kendall_tau([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match=r"pred\[1\] is nan"):
        ranking_metrics([1, float("nan"), 3], [1, 2, 3])
    with pytest.raises(ValueError, match="at least 2"):
        kendall_tau([1], [1])
