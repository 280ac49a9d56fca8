"""``pada-fast search``: evolution or random search over a trained supernet's sub-models.

Fitness is the top-1 accuracy with inherited weights on the held-out split of the run's config
(``data.eval_split``, optionally a class-stratified ``eval_subset``), after recalibrating
running-statistics BatchNorm on a few shuffled training batches when the supernet has any. The
MACs/parameter table is built from the supernet at ``resolution`` (default: the config's
``space.resolution``, else the space's own: 224 for ProxylessNAS, 32 otherwise). For
NAS-Bench-201 a ground truth adds every evaluated architecture's true accuracy.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from torch.nn.modules.batchnorm import _BatchNorm

from pada_fast.data.datasets import build_split
from pada_fast.data.loader import build_loader
from pada_fast.devices import resolve_device
from pada_fast.errors import ConfigError
from pada_fast.evaluate.ground_truth import load_ground_truth
from pada_fast.evaluate.heldout import load_heldout
from pada_fast.experiment import load_run
from pada_fast.files import write_json_atomic
from pada_fast.log import get_logger
from pada_fast.registry import SPACES

from .budget import Budget
from .evolution import evolution_search
from .export import arch_spec
from .fitness import GroundTruthLookup, InheritedFitness
from .flops import build_cost_table
from .latency import load_latency_table
from .random_search import random_search

DEFAULT_RECALIBRATE_BATCHES = 10


def has_running_bn(model) -> bool:
    return any(isinstance(m, _BatchNorm) and m.track_running_stats for m in model.modules())


def shuffled_batches(dataset, batch_size: int, num_batches: int, device, seed: int):
    """``num_batches`` batches of distinct images of ``dataset`` in a seeded random order (class
    image folders are stored class by class; BN statistics need mixed batches)."""
    n = min(len(dataset), batch_size * num_batches)
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:n]
    loader = build_loader(dataset, order, batch_size, num_workers=0, seed=seed)
    return [(x.to(device), y.to(device)) for x, y, _ in loader]


def latency_quantile(model, latency, percent: float, seed: int, draws: int = 10000) -> float:
    """The table latency that ``percent``% of ``draws`` seeded random architectures of ``model``
    meet (the ``P%`` form of ``--max-latency-ms``)."""
    import numpy as np
    rng = np.random.default_rng(seed)
    sums = [latency.latency_ms(model.random_arch(rng)) for _ in range(draws)]
    return float(np.percentile(sums, percent))


def _budget(model, cfg, out: Path, resolution, max_macs, max_params, max_latency_ms, latency_table, seed, log):
    """The cost table (written to ``out``), the search's budget and its latency limit in ms (a
    latency budget ``"P%"`` is the table latency P% of random architectures meet)."""
    resolution = resolution or getattr(cfg.space, "resolution", None)
    table = build_cost_table(model, resolution)
    table.save(out / "cost_table.json")
    latency = None
    if latency_table is not None:
        latency = load_latency_table(latency_table, model)
        latency.check_matches(model, table.resolution)
        latency.save(out / "latency_table.json")
        if isinstance(max_latency_ms, str):         # "P%": the latency P% of random architectures meet
            share = float(max_latency_ms.rstrip("%"))
            max_latency_ms = latency_quantile(model, latency, share, seed)
            log(f"latency budget {max_latency_ms:.3f} ms: the table sum {share:g}% of random architectures meet")
    elif max_latency_ms is not None:
        raise ConfigError("--max-latency-ms needs --latency-table FILE (measure it on the target "
                         "device with pada-fast latency-table)")
    budget = Budget(table, max_macs, max_params, latency, max_latency_ms)
    low, high = table.bounds("macs")
    log(f"search space {model.space_name}: {model.num_layers} layers, MACs "
        f"{low / 1e6:.2f}M..{high / 1e6:.2f}M at {table.resolution}x{table.resolution}; "
        f"budget: {budget.describe()}")
    return table, budget, max_latency_ms


def _fitness(model, cfg, state, dev, split, eval_subset, batch_size, recalibrate_batches, data_root, seed, log):
    """Inherited accuracy on the held-out batches (running-statistics BN recalibrated on training
    batches first), the held-out set and the calibration batches."""
    d = cfg.data
    held = load_heldout(cfg, state, dev, data_root=data_root, split=split, subset=eval_subset,
                        batch_size=batch_size, channels_last=False)
    eval_set, eval_batches = held.dataset, held.batches
    calib = None
    if has_running_bn(model):
        n = recalibrate_batches
        if n is None:
            n = cfg.rank.recalibrate_batches or DEFAULT_RECALIBRATE_BATCHES
        if n > 0:
            train_set = build_split(d, "train", subset=d.train_subset, root=data_root)
            calib = shuffled_batches(train_set, d.batch_size, n, dev, seed)
        log(f"fitness: inherited accuracy on {len(eval_set)} {split} images; BatchNorm "
            + (f"recalibrated on {len(calib)} training batches of {d.batch_size}" if calib
               else "running statistics as trained (no recalibration)"))
    else:
        log(f"fitness: inherited accuracy on {len(eval_set)} {split} images (batch-statistics BN)")
    fitness = InheritedFitness(model, eval_batches, calib)
    return fitness, held, calib


def run_search(checkpoint: str | Path, out_dir: str | Path, algorithm: str = "evolution", *,
               max_macs: float | None = None, max_params: float | None = None,
               max_latency_ms: float | str | None = None, latency_table: str | Path | None = None,
               resolution: int | None = None, seed: int = 0, resume: bool = False,
               eval_split: str | None = None, eval_subset: int | None = -1,
               batch_size: int | None = None, recalibrate_batches: int | None = None,
               ground_truth: str | None = None, gt_dataset: str | None = None,
               data_root: str | None = None, device: str = "auto", progress: bool | None = None,
               top_k: int = 10, evolution: dict | None = None, random: dict | None = None,
               log=None) -> dict:
    """Search the supernet in ``checkpoint``; returns a summary (also in ``out_dir/summary.json``).
    ``evolution``/``random`` hold the algorithm's settings (see :func:`evolution_search`,
    :func:`random_search`); ``-1`` for ``eval_subset`` means "the config's". ``latency_table``: a
    table of ``pada-fast latency-table`` for this supernet's space, needed by ``max_latency_ms``
    (and recorded for every candidate when given); ``max_latency_ms`` may be ``"P%"``: the table
    latency that P% of random architectures meet (:func:`latency_quantile`)."""
    log = log or get_logger(__name__).info
    if algorithm not in ("evolution", "random"):
        raise ValueError(f"algorithm must be 'evolution' or 'random', got {algorithm!r}")
    started = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(device)
    run = load_run(checkpoint, dev)
    model, cfg, state = run.model, run.cfg, run.state
    model.eval()
    table, budget, max_latency_ms = _budget(model, cfg, out, resolution, max_macs, max_params, max_latency_ms,
                                            latency_table, seed, log)
    split = eval_split or cfg.data.eval_split
    fitness, held, calib = _fitness(model, cfg, state, dev, split, eval_subset, batch_size, recalibrate_batches,
                                    data_root, seed, log)
    truth = None
    gt_path = ground_truth or (cfg.rank.ground_truth if SPACES.get(model.space_name).benchmark_table else None)
    gt = None
    if gt_path:
        gt = load_ground_truth(gt_path, gt_dataset or cfg.rank.gt_dataset)
        truth = GroundTruthLookup(model, gt)

    def export(arch, record):
        extra = {k: record[k] for k in ("fitness", "true_accuracy", "index", "step", "origin", "latency_ms")
                 if k in record}
        return arch_spec(model, arch, table, **extra)

    common = dict(seed=seed, out_dir=out, resume=resume, progress=progress, true_accuracy=truth,
                  export=export, top_k=top_k, log=log)
    write_json_atomic(out / "search_args.json", {
        "checkpoint": str(checkpoint), "algorithm": algorithm, "max_macs": max_macs,
        "max_params": max_params, "max_latency_ms": max_latency_ms,
        "latency_table": None if latency_table is None else str(latency_table), "resolution": table.resolution, "seed": seed,
        **held.protocol,
        "recalibrate_batches": 0 if not calib else len(calib), "ground_truth": gt_path,
        "evolution": evolution or {}, "random": random or {}}, indent=2)
    if algorithm == "evolution":
        result = evolution_search(model, fitness, budget, **(evolution or {}), **common)
    else:
        result = random_search(model, fitness, budget, **(random or {}), **common)
    summary = _summary(run, out, algorithm, result, budget, gt, time.perf_counter() - started)
    write_json_atomic(out / "summary.json", summary, indent=2)
    return summary


def _summary(run, out: Path, algorithm: str, result, budget, gt, seconds: float) -> dict:
    """The search's summary: the best architecture found, the evaluations, the budget, and (with
    a benchmark table) the table's best and the best true accuracy among the evaluated."""
    model, cfg, state = run.model, run.cfg, run.state
    best = json.loads((out / "best.json").read_text())
    summary = {"algorithm": algorithm, "space": model.space_name, "checkpoint": str(run.path),
               "best": {k: best.get(k) for k in ("arch", "fitness", "true_accuracy", "macs", "params", "latency_ms",
                                                 "network_macs", "network_params", "genotype")
                        if k in best},
               "evaluations": result.evaluations, "budget": budget.to_dict(),
               "seconds": seconds, "files": result.files}
    if gt is not None:
        summary["benchmark_best"] = {"arch": gt.best(), "accuracy": gt.accuracy(gt.best())}
        found = [r["true_accuracy"] for r in result.records if r.get("true_accuracy") is not None]
        if found:
            summary["best_true_accuracy_evaluated"] = max(found)
    after = SPACES.get(model.space_name).after_search
    if after is not None:
        summary.update(after(model, cfg, state))
    return summary


__all__ = ["has_running_bn", "latency_quantile", "run_search", "shuffled_batches"]
