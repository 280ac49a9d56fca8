"""``pada-fast rank``: how well a trained supernet orders architectures.

Every architecture of a ground-truth table (or a stratified subset of it, see
``GroundTruth.stratified_subset``) is evaluated with inherited weights on the held-out split;
Kendall's tau-b and Precision@Top-k% compare that order with the table's. Writes
``predictions.csv``, ``metrics.json`` and ``scatter.png`` into the output folder.
"""
from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import torch

from pada_fast.config import config_from_dict
from pada_fast.data.datasets import build_dataset
from pada_fast.train import checkpoint
from pada_fast.train.trainer import build_model, resolve_device

from .ground_truth import load_ground_truth
from .inherited import fixed_batches, inherited_accuracy, to_channels_last
from .metrics import ranking_metrics
from .plots import scatter_plot


def load_supernet(checkpoint_path: str | Path, device: torch.device):
    state = checkpoint.load(checkpoint_path)
    cfg = config_from_dict(state["config"])
    model = build_model(cfg, state["num_classes"], state["in_channels"]).to(device)
    model.load_state_dict(state["model"])
    return model, cfg, state


def rank_supernet(checkpoint_path: str | Path, out_dir: str | Path, ground_truth: str | None = None,
                  gt_dataset: str | None = None, num_archs: int | None = -1, seed: int | None = None,
                  eval_subset: int | None = -1, batch_size: int | None = None, device: str = "auto",
                  data_root: str | None = None, progress: bool = True) -> dict:
    """Rank sub-models of the supernet in ``checkpoint_path``. Arguments left at their defaults
    come from the run's saved config (``rank.*`` and ``data.*``); ``-1`` means "use the config"."""
    dev = resolve_device(device)
    model, cfg, _ = load_supernet(checkpoint_path, dev)
    r, d = cfg.rank, cfg.data
    ground_truth = ground_truth or r.ground_truth
    if not ground_truth:
        raise ValueError("no ground truth given: pass --ground-truth or set rank.ground_truth in the config")
    gt = load_ground_truth(ground_truth, gt_dataset or r.gt_dataset)
    num_archs = r.num_archs if num_archs == -1 else num_archs
    seed = r.seed if seed is None else seed
    table = gt.stratified_subset(num_archs, seed) if num_archs and num_archs < len(gt) else gt
    subset = d.eval_subset if eval_subset == -1 else eval_subset
    batch_size = batch_size or d.eval_batch_size
    eval_set = build_dataset(d.dataset, data_root or d.root, d.eval_split, augment=False, subset=subset,
                             seed=seed, download=d.download, bad_files=d.bad_files)
    model = to_channels_last(model)
    eval_batches = fixed_batches(eval_set, batch_size, dev, channels_last=True)
    calib = None
    if cfg.space.bn_mode == "running" and r.recalibrate_batches:
        train_set = build_dataset(d.dataset, data_root or d.root, "train", augment=False, seed=seed,
                                  bad_files=d.bad_files)
        calib = fixed_batches(train_set, d.batch_size, dev, limit=r.recalibrate_batches * d.batch_size,
                              channels_last=True)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    archs = table.arch_strs
    predicted = []
    started = time.perf_counter()
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(archs), desc="ranking", leave=False)
    for text in archs:
        predicted.append(inherited_accuracy(model, model.str_to_arch(text), eval_batches, calib))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    elapsed = time.perf_counter() - started
    true = table.accuracies
    metrics = ranking_metrics(predicted, true)
    metrics.update({
        "checkpoint": str(checkpoint_path), "method": cfg.method.name, "ground_truth": str(ground_truth),
        "gt_dataset": gt_dataset or r.gt_dataset, "num_archs": len(archs), "table_size": len(gt),
        "subset": "all" if len(archs) == len(gt) else f"stratified by true accuracy, seed {seed}",
        "eval_images": len(eval_set), "eval_split": d.eval_split, "eval_batch_size": batch_size,
        "seconds": elapsed,
    })
    with (out / "predictions.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["arch", "index", "predicted_accuracy", "true_accuracy"])
        for text, p, t, i in zip(archs, predicted, true, table.indices):
            w.writerow([text, int(i), f"{p:.4f}", f"{t:.4f}"])
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    scatter_plot(predicted, true, out / "scatter.png",
                 title=f"{cfg.method.name}: supernet vs ground truth ({len(archs)} archs)")
    metrics["scatter"] = str(out / "scatter.png")
    return metrics
