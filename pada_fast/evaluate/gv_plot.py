"""Gradient variance per epoch, one line per run (the PA&DA paper's Fig. 4: SPOS vs PA&DA, log y);
runs of one method (several seeds) share a colour, with their per-epoch mean drawn bold."""
from __future__ import annotations

from typing import Mapping, Sequence

from .plots import _save


def group_mean(runs: Sequence[Sequence[tuple[int, float]]]) -> list[tuple[int, float]]:
    """Per-epoch arithmetic mean over runs, for the epochs every run has."""
    tables = [{int(e): float(v) for e, v in pts} for pts in runs]
    common = set.intersection(*(set(t) for t in tables)) if tables else set()
    return [(e, sum(t[e] for t in tables) / len(tables)) for e in sorted(common)]


def gv_plot(runs: Mapping[str, Sequence[tuple[int, float]]], path, title: str = "",
            ylabel: str = "gradient variance (per parameter)",
            groups: Mapping[str, str] | None = None) -> str:
    """``runs``: name -> [(epoch, gv), ...]. Epochs are plotted 1-based (the GV after epoch e's
    training is drawn at e + 1). Non-positive values cannot be drawn on the log axis and are
    left out. ``groups`` (name -> group, e.g. the method): runs of a group with more than one
    member are drawn thin in one colour, plus a bold line of their per-epoch mean. Returns
    ``path`` (PNG, matplotlib's Agg canvas, no display needed)."""
    from matplotlib.figure import Figure


    if not runs:
        raise ValueError("gv_plot needs at least one run")
    figure = Figure(figsize=(5.5, 4))
    axes = figure.add_subplot()
    drawn = 0
    members: dict[str, list[str]] = {}
    for name in runs:
        members.setdefault((groups or {}).get(name, name), []).append(name)
    colours = [f"C{i}" for i in range(10)]
    for i, (group, names) in enumerate(members.items()):
        colour = colours[i % len(colours)]
        several = len(names) > 1
        for name in names:
            pts = sorted((int(e), float(v)) for e, v in runs[name] if float(v) > 0)
            if not pts:
                continue
            epochs, values = zip(*pts)
            axes.plot([e + 1 for e in epochs], values, color=colour,
                      marker=None if several or len(pts) >= 30 else "o", markersize=3,
                      linewidth=0.8 if several else 1.5, alpha=0.35 if several else 1.0,
                      label=None if several else name)
            drawn += 1
        if several:
            mean = [(e, v) for e, v in group_mean([runs[n] for n in names]) if v > 0]
            if mean:
                epochs, values = zip(*mean)
                axes.plot([e + 1 for e in epochs], values, color=colour, linewidth=2.2,
                          label=f"{group} (mean of {len(names)})")
    if drawn:
        axes.set_yscale("log")
        axes.legend()
    axes.set_xlabel("epoch")
    axes.set_ylabel(ylabel)
    if title:
        axes.set_title(title)
    axes.grid(alpha=0.3, which="both")
    figure.tight_layout()
    return _save(figure, path)
