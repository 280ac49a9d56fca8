"""``pada-fast quickstart``: SPOS and PA&DA supernets on scikit-learn's digits (offline, ships with
the dependencies), ranked against the small ground-truth table in
``pada_fast/data/ground_truth/nb201_digits.json`` that pada_fast's own benchmark builder made
(command in that folder's README). Prints tau (mean ± std over seeds), precision@top-5%/10% and training time per method, and
whether the difference exceeds the seed spread.
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path

from pada_fast.checkpoint import CheckpointError
from pada_fast.config import apply_dict, Config
from pada_fast.evaluate.rank import rank_supernet
from pada_fast.files import write_json_atomic
from pada_fast.log import get_logger
from pada_fast.train.trainer import Trainer

_log = get_logger(__name__)

TABLE = Path(__file__).parent / "data" / "ground_truth" / "nb201_digits.json"

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
    cfg.run.out_dir = str(out / f"{method}_s{seed}")
    cfg.run.seed = seed
    if epochs:
        cfg.optim.epochs = epochs
    if threads:
        cfg.run.threads = threads
    return cfg


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def verdict(rows: list[dict]) -> str:
    """One sentence: does PA&DA's mean tau differ from SPOS's by more than the larger of their
    seed standard deviations?"""
    taus = {m: [r["kendall_tau"] for r in rows if r["method"] == m] for m in METHODS}
    (a, sa), (b, sb) = _mean_std(taus["spos"]), _mean_std(taus["pada"])
    spread = max(sa, sb)
    if len(taus["spos"]) < 2:
        return "one seed per method: no spread to compare the difference with (use --seeds 3 or more)"
    leader = "PA&DA" if b > a else "SPOS"
    if abs(b - a) > spread:
        return (f"{leader} ranks better by {abs(b - a):.3f} in tau, more than the seed spread "
                f"(largest std {spread:.3f}): beyond seed noise at this budget")
    return (f"the difference ({b - a:+.3f} in tau, PA&DA minus SPOS) is within the seed spread "
            f"(largest std {spread:.3f}): not beyond seed noise at this budget")


def _train(cfg: Config, run_dir: Path) -> dict:
    """Train, or continue an earlier quickstart's run of the same settings (a finished one trains
    nothing more); an earlier run with other settings is moved aside (``<run>.old-<time>``)."""
    if (run_dir / "checkpoint.pt").exists():
        try:
            return Trainer(cfg, resume=True).fit()
        except CheckpointError as exc:
            _log.info(f"{run_dir} holds a quickstart run with other settings ({str(exc)[:120]}...); "
                      "moving it aside")
    return Trainer(cfg, overwrite=True).fit()


def _train_seconds(run_dir: Path) -> float:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return float(sum(r["epoch_time"] for r in rows))


def run_quickstart(out: str | Path = "runs/quickstart", epochs: int | None = None,
                   threads: int | None = None, progress: bool = False, seeds: int = 3) -> list[dict]:
    out = Path(out)
    rows = []
    for seed in range(seeds):
        for method in METHODS:
            cfg = quickstart_config(method, out, epochs, threads, seed)
            run_dir = Path(cfg.run.out_dir)
            result = _train(cfg, run_dir)
            metrics = rank_supernet(result["checkpoint"], run_dir / "rank", progress=progress, resume=True)
            rows.append({"method": method, "seed": seed, "train_time": _train_seconds(run_dir), **metrics})
    print()
    print(f"NAS-Bench-201 (C=4, N=1) supernets on digits, {rows[0]['num_archs']} architectures ranked "
          f"on {rows[0]['eval_images']} test images against {TABLE.name}, seeds 0-{seeds - 1}")
    print(f"{'method':<8}{'tau (mean ± std)':>20}{'P@top5%':>10}{'P@top10%':>10}{'train s':>10}  per-seed tau")
    for method in METHODS:
        mine = [r for r in rows if r["method"] == method]
        tau, tau_sd = _mean_std([r["kendall_tau"] for r in mine])
        p5 = statistics.mean(r["precision_top5pct"] for r in mine)
        p10 = statistics.mean(r["precision_top10pct"] for r in mine)
        seconds = statistics.mean(r["train_time"] for r in mine)
        print(f"{method:<8}{tau:>12.3f} ± {tau_sd:<5.3f}{p5:>10.2f}{p10:>10.2f}{seconds:>10.1f}  "
              + ", ".join(f"{r['kendall_tau']:.3f}" for r in mine))
    sentence = verdict(rows)
    print(sentence)
    write_json_atomic(out / "summary.json", {"runs": rows, "verdict": sentence}, indent=2)
    print(f"summary: {out / 'summary.json'}")
    return rows
