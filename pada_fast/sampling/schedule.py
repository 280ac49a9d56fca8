"""How strongly the importance distribution is mixed in, epoch by epoch (δ for paths, τ for data).

The distribution used during epoch ``t`` (0-based) of ``T`` is
``w · importance + (1 − w) · uniform`` with ``w = mix_weight(kind, t, T)``; the paper raises it
linearly, so epoch 0 is uniform and the last epoch is almost fully importance-driven.
"""
from __future__ import annotations

SCHEDULES = ("linear_increase", "linear_decrease", "constant", "off")


def check_schedule(kind: str) -> str:
    if kind not in SCHEDULES:
        raise ValueError(f"unknown mixing schedule {kind!r}; choose one of {list(SCHEDULES)}")
    return kind


def mix_weight(kind: str, epoch: int, epochs: int) -> float:
    """Weight in [0, 1] of the importance distribution during epoch ``epoch`` of ``epochs``.

    ``epoch == epochs`` is allowed: that is what ``end_epoch`` computes after the last epoch.
    """
    check_schedule(kind)
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    if not 0 <= epoch <= epochs:
        raise ValueError(f"epoch must lie in [0, epochs={epochs}], got {epoch}")
    if kind == "linear_increase":
        return epoch / epochs
    if kind == "linear_decrease":
        return 1.0 - epoch / epochs
    if kind == "constant":
        return 1.0
    return 0.0
