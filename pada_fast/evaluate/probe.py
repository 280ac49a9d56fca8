"""The ranking probe: how a supernet's ranking grows while it trains.

A fixed set of architectures, chosen once when training starts and written to
``probe_archs.txt`` in the run folder, is ranked by the :class:`~.engine.RankingEngine` on one
fixed set of held-out batches (the ranking protocol of ``pada-fast rank``: class-stratified
``probe.eval_images`` images of ``data.eval_split`` in the seeded class-mixed order, batches of
``data.eval_batch_size``). With a ground-truth table (``rank.ground_truth``) the architectures are
stratified by true accuracy and each probe reports Kendall's tau and P@Top5% against it; without
one they are a seeded random draw of distinct architectures, and each probe reports the Kendall
tau between its predictions and the previous probe's (ranking stability).

The probe evaluates a copy of the supernet, so training's weights, BN statistics and memory format
are untouched. Its predictions equal ``pada-fast rank CHECKPOINT --archs probe_archs.txt
--eval-subset <probe.eval_images>`` on the checkpoint written at the same epoch.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np

from pada_fast.files import write_text_atomic

from .engine import RankingEngine
from .ground_truth import load_ground_truth
from .heldout import load_heldout
from .inherited import to_channels_last
from .metrics import kendall_tau, precision_at_top
from .plots import _save
from .protocols import select
from .table_builder import select_archs

ARCHS_FILE = "probe_archs.txt"
LOG_FILE = "probe.jsonl"
PLOT_FILE = "probe.png"


def distinct_random_archs(supernet, n: int, seed: int) -> list[tuple[int, ...]]:
    """``n`` functionally distinct architectures of ``supernet``'s space, drawn with ``seed``."""
    return select_archs(supernet, n, seed)


class RankingProbe:
    """Built once per run; :meth:`measure` ranks the probe's architectures with the given
    supernet's weights."""

    def __init__(self, supernet, cfg, classes: list[str], num_classes: int, device):
        p = cfg.probe
        self.precision = p.precision
        self.truth = None
        if cfg.rank.ground_truth:
            table = load_ground_truth(cfg.rank.ground_truth, cfg.rank.gt_dataset)
            selection = select(f"stratified:{p.archs}", table, supernet, cfg.rank.seed)
            self.archs = list(selection.archs)
            self.truth = np.asarray(selection.table.accuracies, dtype=np.float64)
            self.description = f"{selection.description} of {cfg.rank.ground_truth}"
        else:
            self.archs = distinct_random_archs(supernet, p.archs, cfg.rank.seed)
            self.description = f"{len(self.archs)} distinct architectures drawn at random, seed {cfg.rank.seed}"
        calib_n = cfg.rank.recalibrate_batches if cfg.space.bn_mode == "running" else 0
        self.heldout = load_heldout(cfg, {"classes": list(classes), "num_classes": num_classes}, device,
                                    subset=p.eval_images, recalibrate_batches=calib_n)
        self.arch_strs = [supernet.arch_to_str(a) for a in self.archs]

    def write_archs(self, out_dir: Path) -> Path:
        """The probe's architectures, one benchmark string per line (``rank --archs`` reads it)."""
        path = Path(out_dir) / ARCHS_FILE
        write_text_atomic(path, f"# ranking probe: {self.description}\n" + "".join(s + "\n" for s in self.arch_strs))
        return path

    def predict(self, supernet) -> np.ndarray:
        """Inherited accuracy (%) of every probe architecture with ``supernet``'s weights (a copy is
        evaluated, in channels-last format as ``rank`` evaluates)."""
        model = to_channels_last(copy.deepcopy(supernet))
        engine = RankingEngine(model, self.heldout.batches, self.heldout.calib, precision=self.precision)
        return np.array([engine.accuracy(a) for a in self.archs], dtype=np.float64)

    def measure(self, supernet, previous: np.ndarray | None) -> dict:
        """One probe: predictions, and tau / P@Top5% against the table (when there is one) and the
        stability tau against ``previous`` predictions (when given)."""
        predicted = self.predict(supernet)
        out = {"predictions": predicted.tolist(), "tau": None, "p_top5": None, "stability": None}
        if self.truth is not None:
            out["tau"] = kendall_tau(predicted, self.truth)
            out["p_top5"] = precision_at_top(predicted, self.truth, 0.05)
        if previous is not None:
            out["stability"] = kendall_tau(predicted, previous)
        return out


def read_probe_log(run_dir: str | Path) -> list[dict]:
    """Every probe of a run (``probe.jsonl``), oldest first."""
    path = Path(run_dir) / LOG_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def probe_plot(records: list[dict], path, title: str = "") -> str:
    """Tau against the table (when the probe has one) and the stability tau, against epochs."""
    from matplotlib.figure import Figure


    figure = Figure(figsize=(5.5, 4))
    axes = figure.add_subplot()
    epochs = [r["epoch"] + 1 for r in records]
    drawn = False
    for key, label in (("tau", "Kendall tau vs ground truth"), ("stability", "tau vs previous probe")):
        points = [(e, r[key]) for e, r in zip(epochs, records) if r.get(key) is not None]
        if points:
            axes.plot(*zip(*points), marker="o", label=label)
            drawn = True
    axes.set_xlabel("epoch")
    axes.set_ylabel("Kendall tau")
    axes.set_ylim(-1.0, 1.0)
    axes.grid(alpha=0.3)
    if title:
        axes.set_title(title)
    if drawn:
        axes.legend(loc="lower right", fontsize="small")
    else:
        axes.text(0.5, 0.5, "first probe: nothing to compare yet", transform=axes.transAxes, ha="center")
    figure.tight_layout()
    return _save(figure, path)


__all__ = ["ARCHS_FILE", "LOG_FILE", "PLOT_FILE", "RankingProbe", "distinct_random_archs", "probe_plot",
           "read_probe_log"]
