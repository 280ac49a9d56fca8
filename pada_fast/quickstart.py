"""``pada-fast quickstart``: SPOS and PA&DA supernets on scikit-learn's digits (offline, ships with
the dependencies), ranked against the small ground-truth table in
``pada_fast/data/benchmarks/nb201_digits.json`` that pada_fast's own benchmark builder made
(command in that folder's README). Prints tau, precision@top-5%/10% and training time per method.
"""
from __future__ import annotations

import json
from pathlib import Path

from pada_fast.config import apply_dict, Config
from pada_fast.evaluate.rank import rank_supernet
from pada_fast.train.trainer import Trainer

TABLE = Path(__file__).parent / "data" / "benchmarks" / "nb201_digits.json"

# The table was built with configs/quickstart_digits.yaml (C=4, N=1, digits); the supernet must
# have the same sizes. Supernets get more epochs than stand-alone nets: each path trains on a
# fraction of the steps.
SETTINGS = {
    "data": {"dataset": "digits", "batch_size": 64, "eval_batch_size": 500},
    "space": {"name": "nb201", "C": 4, "N": 1},
    "optim": {"epochs": 40, "lr": 0.05, "weight_decay": 2.5e-4, "grad_clip": 5.0},
    "run": {"threads": 2, "log_interval": 1000},
    "rank": {"ground_truth": str(TABLE), "archs": "all"},
}
METHODS = ("spos", "pada")


def quickstart_config(method: str, out: Path, epochs: int | None, threads: int | None, seed: int = 0) -> Config:
    cfg = apply_dict(Config(), SETTINGS, source="quickstart settings")
    cfg.method.name = method
    cfg.run.out_dir = str(out / method)
    cfg.run.seed = seed
    if epochs:
        cfg.optim.epochs = epochs
    if threads:
        cfg.run.threads = threads
    return cfg


def run_quickstart(out: str | Path = "runs/quickstart", epochs: int | None = None,
                   threads: int | None = None, progress: bool = False) -> list[dict]:
    out = Path(out)
    rows = []
    for method in METHODS:
        cfg = quickstart_config(method, out, epochs, threads)
        result = Trainer(cfg).fit()
        metrics = rank_supernet(result["checkpoint"], Path(cfg.run.out_dir) / "rank", progress=progress)
        rows.append({"method": method, "train_time": result["train_time"], **metrics})
    print()
    print(f"NAS-Bench-201 (C=4, N=1) supernets on digits, {rows[0]['num_archs']} architectures ranked "
          f"on {rows[0]['eval_images']} test images against {TABLE.name}")
    print(f"{'method':<8}{'tau':>8}{'P@top5%':>10}{'P@top10%':>10}{'train s':>10}  scatter plot")
    for r in rows:
        print(f"{r['method']:<8}{r['kendall_tau']:>8.3f}{r['precision_top5pct']:>10.2f}"
              f"{r['precision_top10pct']:>10.2f}{r['train_time']:>10.1f}  {r['scatter']}")
    (out / "summary.json").write_text(json.dumps(rows, indent=2))
    print(f"summary: {out / 'summary.json'}")
    return rows
