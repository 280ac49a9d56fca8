"""Gradient variance per epoch, one line per run (the PA&DA paper's Fig. 4: SPOS vs PA&DA, log y)."""
from __future__ import annotations

import os
from typing import Mapping, Sequence


def gv_plot(runs: Mapping[str, Sequence[tuple[int, float]]], path, title: str = "",
            ylabel: str = "gradient variance (per parameter)") -> str:
    """``runs``: name -> [(epoch, gv), ...]. Epochs are plotted 1-based (the GV after epoch e's
    training is drawn at e + 1). Non-positive values cannot be drawn on the log axis and are
    left out. Returns ``path`` (PNG, matplotlib's Agg canvas, no display needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not runs:
        raise ValueError("gv_plot needs at least one run")
    figure = Figure(figsize=(5.5, 4))
    axes = figure.add_subplot()
    drawn = 0
    for name, points in runs.items():
        pts = sorted((int(e), float(v)) for e, v in points if float(v) > 0)
        if not pts:
            continue
        epochs, values = zip(*pts)
        axes.plot([e + 1 for e in epochs], values, marker="o" if len(pts) < 30 else None,
                  markersize=3, label=name)
        drawn += 1
    if drawn:
        axes.set_yscale("log")
        axes.legend()
    axes.set_xlabel("epoch")
    axes.set_ylabel(ylabel)
    if title:
        axes.set_title(title)
    axes.grid(alpha=0.3, which="both")
    figure.tight_layout()
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=120)
    return path
