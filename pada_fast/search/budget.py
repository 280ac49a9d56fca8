"""Cost budgets (MACs, parameters, latency from a measured lookup table), enforced by resampling.

A candidate that breaks the budget is never evaluated: the search draws (or mutates, or crosses)
again. When a budget cannot be met at all, or is met so rarely that ``max_tries`` draws find
nothing, :class:`InfeasibleBudgetError` says so with the numbers needed to fix it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from pada_fast.config import ConfigError

from .flops import CostTable
from .latency import LatencyTable

Arch = tuple[int, ...]


class InfeasibleBudgetError(ConfigError):
    """No architecture (or none found in the allowed number of draws) fits the budget."""


def _fmt(value: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.2f}{unit}"
    return f"{value:.0f}"


@dataclass
class Budget:
    """``max_macs`` / ``max_params`` upper bounds (None: unbounded), measured with ``table``, and
    ``max_latency_ms``, predicted by the latency lookup table ``latency``."""

    table: CostTable | None = None
    max_macs: float | None = None
    max_params: float | None = None
    latency: LatencyTable | None = None
    max_latency_ms: float | None = None

    def __post_init__(self):
        if (self.max_macs is not None or self.max_params is not None) and self.table is None:
            raise ValueError("a MACs or parameter budget needs a cost table (build_cost_table)")
        if self.max_latency_ms is not None and self.latency is None:
            raise ValueError("a latency budget needs a latency table: measure one with pada-fast "
                             "latency-table and pass it with --latency-table")
        for name in ("max_macs", "max_params", "max_latency_ms"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be positive, got {value}")
        self.check_feasible()

    @property
    def active(self) -> bool:
        return self.max_macs is not None or self.max_params is not None or self.max_latency_ms is not None

    def cost(self, arch: Sequence[int]) -> tuple[int | None, int | None]:
        if self.table is None:
            return None, None
        return self.table.macs(arch), self.table.params(arch)

    def latency_ms(self, arch: Sequence[int]) -> float | None:
        """The latency table's prediction for ``arch`` (None without a table)."""
        return None if self.latency is None else self.latency.latency_ms(arch)

    def ok(self, arch: Sequence[int]) -> bool:
        if not self.active:
            return True
        if self.max_latency_ms is not None and self.latency_ms(arch) > self.max_latency_ms:
            return False
        if self.max_macs is None and self.max_params is None:
            return True
        macs, params = self.cost(arch)
        return ((self.max_macs is None or macs <= self.max_macs)
                and (self.max_params is None or params <= self.max_params))

    def describe(self) -> str:
        parts = []
        if self.max_macs is not None:
            parts.append(f"MACs <= {_fmt(self.max_macs)}")
        if self.max_params is not None:
            parts.append(f"params <= {_fmt(self.max_params)}")
        if self.max_latency_ms is not None:
            parts.append(f"latency <= {self.max_latency_ms:g} ms ({self.latency.device}, batch "
                         f"{self.latency.batch_size})")
        return " and ".join(parts) if parts else "no budget"

    def to_dict(self) -> dict:
        out = {"max_macs": self.max_macs, "max_params": self.max_params}
        if self.max_latency_ms is not None:
            out["max_latency_ms"] = self.max_latency_ms
        return out

    def check_feasible(self) -> None:
        """Fail early when even the cheapest candidate of every layer breaks the budget."""
        if self.max_latency_ms is not None:
            low, high = self.latency.bounds()
            if self.max_latency_ms < low:
                raise InfeasibleBudgetError(
                    f"the latency budget {self.max_latency_ms:g} ms is below the fastest possible "
                    f"architecture ({low:.3f} ms; the table spans {low:.3f}..{high:.3f} ms on "
                    f"{self.latency.device} at batch {self.latency.batch_size}); raise the budget")
        if self.table is None:
            return
        for name, limit, which in (("MACs", self.max_macs, "macs"),
                                   ("parameters", self.max_params, "params")):
            if limit is None:
                continue
            low, high = self.table.bounds(which)
            if limit < low:
                raise InfeasibleBudgetError(
                    f"the {name} budget {_fmt(limit)} is below the cheapest possible architecture "
                    f"({_fmt(low)}; the space spans {_fmt(low)}..{_fmt(high)} at resolution "
                    f"{self.table.resolution}); raise the budget")

    def sample(self, draw: Callable[[], Arch], max_tries: int = 10000,
               accept: Callable[[Arch], bool] | None = None, what: str = "architecture") -> Arch:
        """``draw()`` until the result fits the budget (and ``accept`` it); raise
        :class:`InfeasibleBudgetError` after ``max_tries`` draws."""
        over = 0
        cheapest = fastest = None
        for _ in range(max_tries):
            arch = tuple(int(g) for g in draw())
            if not self.ok(arch):
                over += 1
                macs, latency = self.cost(arch)[0], self.latency_ms(arch)
                if macs is not None:
                    cheapest = macs if cheapest is None else min(cheapest, macs)
                if latency is not None:
                    fastest = latency if fastest is None else min(fastest, latency)
                continue
            if accept is None or accept(arch):
                return arch
        if over == max_tries:
            drawn = ", ".join(part for part in (
                f"cheapest drawn: {_fmt(cheapest)} MACs" if cheapest is not None else "",
                f"fastest drawn: {fastest:.3f} ms" if fastest is not None else "") if part)
            raise InfeasibleBudgetError(
                f"no {what} within {self.describe()} in {max_tries} draws ({drawn or 'none fits'}); the "
                "budget is too tight for random sampling: raise it, or lower the resolution/width")
        raise InfeasibleBudgetError(
            f"no new {what} within {self.describe()} in {max_tries} draws ({over} over budget, the "
            "rest already evaluated): the space within the budget seems exhausted")


__all__ = ["Budget", "InfeasibleBudgetError"]
