"""The search figure: fitness vs MACs of every evaluated architecture, coloured by generation."""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np


def search_plot(records: Sequence[dict], path, step_name: str = "generation",
                max_macs: float | None = None, title: str = "") -> str:
    """Scatter of fitness against MACs (millions; evaluation index when MACs are unknown), one
    colour per generation/round, the best marked with a star and the budget as a dashed line.
    Returns ``path``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fitness = np.array([r["fitness"] for r in records], dtype=np.float64)
    steps = np.array([r["step"] for r in records], dtype=np.int64)
    has_macs = all(r.get("macs") is not None for r in records)
    x = (np.array([r["macs"] for r in records], dtype=np.float64) / 1e6 if has_macs
         else np.arange(len(records), dtype=np.float64))
    figure = Figure(figsize=(6, 4.5))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    points = axes.scatter(x, fitness, c=steps + 1, cmap="viridis", s=10, alpha=0.7, linewidths=0,
                          vmin=1, vmax=max(int(steps.max()) + 1, 2))
    figure.colorbar(points, ax=axes, label=step_name)
    best = int(np.lexsort((np.arange(len(records)), -fitness))[0])
    axes.scatter([x[best]], [fitness[best]], marker="*", s=160, c="red", edgecolors="black",
                 linewidths=0.5, label=f"best {fitness[best]:.2f}", zorder=3)
    if has_macs and max_macs is not None:
        axes.axvline(max_macs / 1e6, color="gray", linestyle="--", linewidth=1,
                     label=f"budget {max_macs / 1e6:.0f}M")
    axes.set_xlabel("MACs (M)" if has_macs else "evaluation")
    axes.set_ylabel("fitness (inherited accuracy, %)")
    if title:
        axes.set_title(title)
    axes.legend(loc="lower right", fontsize="small")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path, dpi=110)
    return path


__all__ = ["search_plot"]
