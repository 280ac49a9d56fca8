"""PNG figures for ranking results (matplotlib's Agg canvas: no display, no pyplot global state)."""
from __future__ import annotations

import os
from typing import Mapping, Optional

import numpy as np

from .metrics import kendall_tau, precision_at_top


def _save(figure, path) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=120)
    return path


def scatter_plot(pred, true, path, title: str = "",
                 xlabel: str = "true accuracy (%)",
                 ylabel: str = "supernet accuracy (%)") -> str:
    """One point per architecture: supernet-predicted vs true accuracy, annotated with n, Kendall's
    tau and P@Top5%. Returns ``path``."""
    from matplotlib.figure import Figure

    pred = np.asarray(pred, dtype=np.float64)
    true = np.asarray(true, dtype=np.float64)
    tau = kendall_tau(pred, true)
    p5 = precision_at_top(pred, true, 0.05)
    figure = Figure(figsize=(5, 4.5))
    axes = figure.add_subplot()
    # Small translucent points: NAS-Bench-201 has thousands of architectures piled at ~10%.
    axes.scatter(true, pred, s=6, alpha=0.4, linewidths=0)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    if title:
        axes.set_title(title)
    axes.text(0.03, 0.97, f"n = {pred.size}\nKendall tau = {tau:.3f}\nP@Top5% = {p5:.3f}",
              transform=axes.transAxes, va="top", ha="left",
              bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.8})
    axes.grid(alpha=0.3)
    figure.tight_layout()
    return _save(figure, path)


def distribution_plot(values: Mapping[str, np.ndarray], path, title: str = "",
                      xlabel: str = "accuracy (%)", bins: int = 50,
                      value_range: Optional[tuple[float, float]] = None) -> str:
    """Overlaid histograms, one per named series (e.g. the accuracies of a subset vs the whole
    benchmark, or supernet accuracies of SPOS vs PA&DA), normalised to densities so series of
    different sizes compare. Returns ``path``."""
    from matplotlib.figure import Figure

    if not values:
        raise ValueError("distribution_plot needs at least one named series")
    arrays = {name: np.asarray(v, dtype=np.float64).reshape(-1) for name, v in values.items()}
    if value_range is None:
        low = min(a.min() for a in arrays.values())
        high = max(a.max() for a in arrays.values())
        value_range = (low, high if high > low else low + 1.0)
    figure = Figure(figsize=(5.5, 4))
    axes = figure.add_subplot()
    for name, array in arrays.items():
        axes.hist(array, bins=bins, range=value_range, density=True, histtype="step",
                  linewidth=1.5, label=f"{name} (n={array.size})")
    axes.set_xlabel(xlabel)
    axes.set_ylabel("density")
    if title:
        axes.set_title(title)
    axes.legend(loc="best", fontsize="small")
    figure.tight_layout()
    return _save(figure, path)
