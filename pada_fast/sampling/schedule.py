"""How strongly the importance distribution is mixed in, epoch by epoch (δ for paths, τ for data).

The distribution used during epoch ``t`` (0-based) of ``T`` is
``w · importance + (1 − w) · uniform`` with ``w = mix_weight(kind, t, T)``; the paper raises it
linearly, so epoch 0 is uniform and the last epoch is almost fully importance-driven.
"""
from __future__ import annotations

SCHEDULES = ("linear_increase", "linear_decrease", "constant", "off")
OFFSETS = ("current", "lagged")


def check_schedule(kind: str) -> str:
    if kind not in SCHEDULES:
        raise ValueError(f"unknown mixing schedule {kind!r}; choose one of {list(SCHEDULES)}")
    return kind


def check_offset(offset: str) -> str:
    if offset not in OFFSETS:
        raise ValueError(f"unknown schedule offset {offset!r}; choose one of {list(OFFSETS)}")
    return offset


def mix_weight(kind: str, epoch: int, epochs: int, offset: str = "current") -> float:
    """Weight in [0, 1] of the importance distribution during epoch ``epoch`` of ``epochs``.

    ``epoch == epochs`` is allowed: that is what ``end_epoch`` computes after the last epoch.
    ``offset="lagged"`` gives epoch ``epoch`` the weight of ``epoch - 1`` (the authors' code sets
    the weight before each epoch and updates the distribution at its end with it).
    """
    check_schedule(kind)
    check_offset(offset)
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    if not 0 <= epoch <= epochs:
        raise ValueError(f"epoch must lie in [0, epochs={epochs}], got {epoch}")
    if offset == "lagged":
        epoch = max(epoch - 1, 0)
    if kind == "linear_increase":
        return epoch / epochs
    if kind == "linear_decrease":
        return 1.0 - epoch / epochs
    if kind == "constant":
        return 1.0
    return 0.0
