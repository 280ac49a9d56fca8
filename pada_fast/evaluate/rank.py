"""``pada-fast rank``: how well a trained supernet orders architectures.

The architectures a protocol names (:mod:`.protocols`: ``all``, ``unique``, ``stratified:N`` or
a file) are evaluated with inherited weights by the ranking engine (:mod:`.engine`) on the
held-out split (:mod:`.heldout`); Kendall's tau-b and Precision@Top-k% compare that order with
the ground truth's. Each prediction is appended to ``predictions.jsonl`` as soon as it is made, so
a stopped ranking continues with ``--resume`` and ends with exactly the metrics of an uninterrupted
one. Writes ``predictions.csv``, ``metrics.json`` (every protocol choice, so two rankings can be
compared by reading them) and ``scatter.png`` into the output folder.
"""
from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path

import numpy as np

from pada_fast.data.datasets import training_recipe
from pada_fast.files import write_atomic, write_json_atomic, write_text_atomic
from pada_fast import checkpoint
from pada_fast.devices import resolve_device
from pada_fast.errors import ConfigError
from pada_fast.experiment import load_run

from pada_fast.log import get_logger

from .engine import RankingEngine
from .ground_truth import load_ground_truth
from .heldout import load_heldout
from .inherited import to_channels_last
from .metrics import ranking_metrics
from .plots import scatter_plot
from .progress import Progress
from .protocols import select

_log = get_logger(__name__)

PREDICTIONS = "predictions.jsonl"


def checkpoint_digest(state: dict) -> str:
    """The SHA-256 a checkpoint stores of its own payload (computed for files written before
    checkpoints held one): it names the weights a ranking was made with."""
    stored = state.get(checkpoint.CHECKSUM_KEY)
    if isinstance(stored, dict) and isinstance(stored.get("sha256"), str):
        return stored["sha256"]
    return checkpoint.payload_digest(state)


def rank_supernet(checkpoint_path: str | Path, out_dir: str | Path, ground_truth: str | None = None,
                  gt_dataset: str | None = None, archs: str | None = None, seed: int | None = None,
                  eval_subset: int | None = -1, batch_size: int | None = None, device: str = "auto",
                  data_root: str | None = None, progress: bool | None = None, resume: bool = False,
                  precision: str = "fp32") -> dict:
    """Rank sub-models of the supernet in ``checkpoint_path``. Arguments left at their defaults
    come from the run's saved config (``rank.*`` and ``data.*``); ``eval_subset=-1`` means "use
    the config", ``None`` the whole split."""
    out = Path(out_dir)
    log_path = out / PREDICTIONS
    if log_path.exists() and not resume:
        raise FileExistsError(f"{out} already holds a ranking ({PREDICTIONS}); pass --resume to "
                              "continue it, or choose another --out")
    dev = resolve_device(device)
    run = load_run(checkpoint_path, dev)
    model, cfg, state = run.model, run.cfg, run.state
    r = cfg.rank
    ground_truth = ground_truth or r.ground_truth
    if not ground_truth:
        raise ConfigError("no ground truth given: pass --ground-truth or set rank.ground_truth in the config")
    gt_dataset = gt_dataset or r.gt_dataset
    seed = r.seed if seed is None else seed
    # The whole table is read and every architecture parsed before any evaluation.
    gt = load_ground_truth(ground_truth, gt_dataset)
    selection = select(archs or r.archs, gt, model, seed)
    model = to_channels_last(model)
    calib_n = r.recalibrate_batches if cfg.space.bn_mode == "running" else 0
    held = load_heldout(cfg, state, dev, data_root=data_root, subset=eval_subset,
                        batch_size=batch_size, recalibrate_batches=calib_n)
    engine = RankingEngine(model, held.batches, held.calib, precision=precision)
    recipes = compare_recipes(state, cfg, held.dataset, gt)
    if recipes["recipe_note"]:
        _log.info(f"note: {recipes['recipe_note']}")
    protocol = {
        "archs": selection.protocol, "archs_description": selection.description,
        **selection.extra, "ground_truth": str(ground_truth), "gt_dataset": gt_dataset,
        "table_size": len(gt), "precision": precision, **held.protocol,
        "checkpoint_sha256": checkpoint_digest(state),
    }
    out.mkdir(parents=True, exist_ok=True)
    paths, todo, elapsed = _evaluate(engine, selection, log_path, protocol, resume, progress)
    predicted = np.array([engine.accuracy(selection.archs[rep]) for rep in selection.representative])
    true = selection.table.accuracies
    metrics = selection_metrics(selection, predicted)
    metrics.update({
        "checkpoint": str(checkpoint_path), "method": cfg.method.name, **protocol,
        "num_archs": len(true), "architectures_evaluated": int(len(selection.evaluated_rows)),
        "distinct_paths": paths, "paths_evaluated_now": todo, "paths_from_resume": paths - todo,
        **recipes, "shared_work": engine.sharing, "device": str(dev), "seconds": elapsed,
        "paths_per_second": todo / elapsed if elapsed > 0 and todo else None,
    })
    _write_predictions(out / "predictions.csv", selection, predicted)
    write_json_atomic(out / "metrics.json", metrics, indent=2)
    scatter_plot(predicted, true, out / "scatter.png",
                 title=f"{cfg.method.name}: supernet vs ground truth ({len(true)} archs, {selection.protocol})")
    metrics["scatter"] = str(out / "scatter.png")
    return metrics


def selection_metrics(selection, predicted: np.ndarray) -> dict:
    """Kendall's tau, Spearman's rho and P@Top-k% of ``predicted`` over the selection's table (and
    over its isomorphism classes' representatives, for ``unique``)."""
    true = selection.table.accuracies
    metrics = ranking_metrics(predicted, true)
    metrics["over"] = f"{len(true)} architectures"
    if selection.classes is not None:
        metrics["classes"] = {**ranking_metrics(predicted[selection.classes], true[selection.classes]),
                              "over": f"{len(selection.classes)} isomorphism classes (representatives)"}
    return metrics


def _evaluate(engine, selection, log_path: Path, protocol: dict, resume: bool, progress) -> tuple[int, int, float]:
    """Every distinct path of the selection evaluated once (those of a resumed log read back),
    each appended to the log as it finishes; (distinct paths, evaluated now, seconds)."""
    done = _read_log(log_path, protocol) if resume and log_path.exists() else {}
    for key, correct in done.items():
        engine.remember(key, correct)
    keys = [engine.key(selection.archs[row]) for row in selection.evaluated_rows]
    todo = len(set(keys) - set(done))
    paths = len(set(keys))
    bar = Progress(paths, "ranking (distinct paths)", done=paths - todo, bar=progress)
    started = time.perf_counter()
    with _Appender(log_path, protocol) as appender:
        for key in keys:
            if key not in done:
                done[key] = engine.correct(key)
                appender.write(key, done[key])
                bar.update()
    bar.close()
    return paths, todo, time.perf_counter() - started


def compare_recipes(state: dict, cfg, heldout_set, gt) -> dict:
    """The supernet's training recipe (stored in its checkpoint, or derived from its config) and
    the one the ground-truth table records (``build-benchmark`` tables do), with a one-line note
    when they differ: the supernet then learned a task other than the one the table ranks."""
    trained = state.get("augment") or training_recipe(cfg.data, heldout_set)
    table = gt.meta.get("augment")
    note = None
    if table is not None and table != trained:
        note = (f"the supernet was trained with data.augment recipe {trained} but the ground-truth "
                f"table's networks with {table}; set data.augment to match the table to rank the same task")
    return {"train_recipe": trained, "table_recipe": table, "recipe_note": note}


# -- the prediction log --------------------------------------------------------------------------
def _read_log(path: Path, protocol: dict) -> dict[tuple, int]:
    """Predictions of an earlier, stopped ranking with the same protocol. A last line cut short by
    a kill is dropped (and rewritten when the ranking continues)."""
    lines = path.read_text().split("\n")
    try:
        header = json.loads(lines[0])["protocol"]
    except (json.JSONDecodeError, KeyError, TypeError):
        path.unlink()                  # killed while writing the header: nothing was ranked
        return {}
    changed = sorted(k for k in set(header) | set(protocol) if header.get(k) != protocol.get(k))
    if changed:
        detail = ", ".join(f"{k}: {header.get(k)!r} then, {protocol.get(k)!r} now" for k in changed[:4])
        raise ValueError(f"cannot resume the ranking in {path.parent}: it was made with other settings "
                         f"({detail}); rank into another --out, or repeat the first run's options")
    done: dict[tuple, int] = {}
    kept = [lines[0]]
    for line in lines[1:]:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            break                      # the torn last line of a killed run
        done[tuple(record["key"])] = int(record["correct"])
        kept.append(line)
    write_text_atomic(path, "\n".join(kept) + "\n")
    return done


class _Appender:
    """Appends one JSON line per prediction and forces it to disk, so a kill loses at most the
    prediction being computed."""

    def __init__(self, path: Path, protocol: dict):
        self.path, self.protocol = path, protocol

    def __enter__(self):
        fresh = not self.path.exists()
        self.handle = open(self.path, "a")
        if fresh:
            self._put({"protocol": self.protocol})
        return self

    def write(self, key: tuple, correct: int) -> None:
        self._put({"key": list(key), "correct": int(correct)})

    def _put(self, record: dict) -> None:
        self.handle.write(json.dumps(record) + "\n")
        self.handle.flush()
        os.fsync(self.handle.fileno())

    def __exit__(self, *exc):
        self.handle.close()


def _write_predictions(path: Path, selection, predicted) -> None:
    table = selection.table
    rows = [["arch", "index", "predicted_accuracy", "true_accuracy", "evaluated_as"]]
    for row, (text, index, pred, true) in enumerate(zip(table.arch_strs, table.indices, predicted,
                                                        table.accuracies)):
        rep = int(selection.representative[row])
        rows.append([text, int(index), f"{pred:.4f}", f"{true:.4f}", int(table.indices[rep])])
    write_atomic(path, lambda handle: csv.writer(handle).writerows(rows), newline="")
