"""The searched architecture's true accuracy: evolution, random search and the engine's exhaustive
ranking on trained supernets, judged by a ground-truth table.

For every checkpoint (its method is read from its config) and every search seed, evolution and
random search run with the same number of fitness evaluations on the same held-out images, and the
exhaustive ranking (``pada-fast rank`` over the whole table) takes its top-1 architecture. Each
returned architecture is looked up in the table: its true accuracy, its regret to the table's best
and its percentile in the table (the share of the table's architectures it beats, ties half).
Prints one markdown row per (method, search) with mean ± std over supernets x seeds and writes
``summary.json``.

A table that lists a small part of its space (a ``build-benchmark`` table of 150 architectures)
cannot judge what a search returns from the rest of the space: ``--table-only`` then searches the
table's architectures alone. Random search draws ``--table-evaluations`` of them without
replacement (seeded) and keeps the one of highest fitness, the exhaustive ranking's prediction on
the same held-out images (the search's own fitness protocol); evolution is not run, since
mutations and crossovers of table architectures fall outside the table almost always. Resumable: finished searches and rankings are read back, stopped ones continue.

    python benchmarks/search_quality.py runs/fm28/spos/s0/checkpoint.pt runs/fm28/pada/s0/checkpoint.pt \\
        --ground-truth pada_fast/data/ground_truth/nb201_fmnist28.json --eval-subset 2000 --out runs/search_quality
"""
from __future__ import annotations

import argparse
import csv
import json
import statistics
from pathlib import Path

import numpy as np

from pada_fast import checkpoint
from pada_fast.evaluate.ground_truth import load_ground_truth
from pada_fast.evaluate.rank import rank_supernet
from pada_fast.search.supernet_search import run_search

# 200 fitness evaluations each: evolution 20 + 9 generations x (10 mutations + 10 crossovers)
EVOLUTION = {"population": 20, "generations": 10, "mutation_children": 10, "crossover_children": 10,
             "parents": 5, "mutation_prob": 0.1}
RANDOM = {"rounds": 10, "per_round": 20}


def percentile(accuracies: np.ndarray, value: float) -> float:
    """Share (%) of the table's architectures that ``value`` beats, ties counted half."""
    return 100.0 * (np.sum(accuracies < value) + 0.5 * np.sum(accuracies == value)) / len(accuracies)


def judged(arch: str, table, accuracies: np.ndarray) -> dict:
    true = table.accuracy(arch)
    best = float(accuracies.max())
    return {"arch": arch, "true_accuracy": true, "regret": best - true, "percentile": percentile(accuracies, true)}


def search_once(ckpt: Path, out: Path, algorithm: str, seed: int, args) -> dict:
    summary_path = out / "summary.json"
    if summary_path.exists():
        return json.loads(summary_path.read_text())
    return run_search(ckpt, out, algorithm, seed=seed, resume=(out / "search_state.json").exists(),
                      eval_subset=args.eval_subset, ground_truth=args.ground_truth, gt_dataset=args.gt_dataset,
                      progress=False, evolution=EVOLUTION, random=RANDOM)


def exhaustive_predictions(ckpt: Path, out: Path, args) -> list[dict]:
    """The exhaustive ranking's rows (arch, index, predicted_accuracy, ...), ranked once."""
    if not (out / "metrics.json").exists():
        rank_supernet(ckpt, out, ground_truth=args.ground_truth, gt_dataset=args.gt_dataset,
                      archs=args.exhaustive_archs, eval_subset=args.eval_subset, progress=False,
                      resume=(out / "predictions.jsonl").exists())
    with open(out / "predictions.csv") as f:
        return list(csv.DictReader(f))


def top1(rows: list[dict]) -> str:
    """The architecture of highest predicted accuracy (ties: the lowest benchmark index)."""
    return max(rows, key=lambda r: (float(r["predicted_accuracy"]), -int(r["index"])))["arch"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    ap.add_argument("checkpoints", nargs="+", help="checkpoint.pt files of trained supernets")
    ap.add_argument("--ground-truth", required=True, help="the table the supernets are judged by")
    ap.add_argument("--gt-dataset", default="cifar10", help="column of a NATS CSV")
    ap.add_argument("--eval-subset", type=int, default=2000, help="held-out images of the fitness")
    ap.add_argument("--seeds", type=int, default=3, help="search seeds 0 .. N-1")
    ap.add_argument("--exhaustive-archs", default="all", help="rank --archs for the exhaustive search (all|unique)")
    ap.add_argument("--table-only", action="store_true",
                    help="search the table's architectures only (a table of part of its space)")
    ap.add_argument("--table-evaluations", type=int, default=30, help="--table-only: random search's evaluations")
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    import torch
    torch.set_num_threads(args.threads)
    table = load_ground_truth(args.ground_truth, args.gt_dataset)
    accuracies = np.asarray(table.accuracies, dtype=np.float64)
    out = Path(args.out)
    results: dict[tuple[str, str], list[dict]] = {}
    evaluations: dict[str, set] = {}
    for ckpt in map(Path, args.checkpoints):
        method = checkpoint.load(ckpt)["config"]["method"]["name"]
        run = out / f"{ckpt.parent.parent.name}_{ckpt.parent.name}"
        rows = exhaustive_predictions(ckpt, run / "exhaustive", args)
        results.setdefault((method, "exhaustive ranking"), []).append(
            {**judged(top1(rows), table, accuracies), "checkpoint": str(ckpt), "seed": None})
        if args.table_only:
            name = f"random, {args.table_evaluations} table architectures"
            for seed in range(args.seeds):
                drawn = np.random.default_rng(seed).choice(len(rows), args.table_evaluations, replace=False)
                results.setdefault((method, name), []).append(
                    {**judged(top1([rows[i] for i in drawn]), table, accuracies), "checkpoint": str(ckpt),
                     "seed": seed})
            evaluations[name] = {args.table_evaluations}
            continue
        for algorithm in ("evolution", "random"):
            for seed in range(args.seeds):
                summary = search_once(ckpt, run / f"{algorithm}_s{seed}", algorithm, seed, args)
                evaluations.setdefault(algorithm, set()).add(summary.get("evaluations"))
                results.setdefault((method, algorithm), []).append(
                    {**judged(summary["best"]["arch"], table, accuracies), "checkpoint": str(ckpt), "seed": seed,
                     "fitness": summary["best"]["fitness"]})
    sd = (lambda xs: statistics.stdev(xs) if len(xs) > 1 else 0.0)
    print(f"table: {len(table)} architectures, best {accuracies.max():.2f}%, median {np.median(accuracies):.2f}%; "
          f"fitness on {args.eval_subset} held-out images; evaluations per search: "
          + ", ".join(f"{k} {sorted(v, key=str)}" for k, v in evaluations.items()))
    print("| supernet | search | runs | true accuracy (%) | regret (points) | percentile in the table |")
    print("|---|---|---|---|---|---|")
    summary = {}
    for (method, algorithm), rows in sorted(results.items()):
        acc, reg, pct = ([r[k] for r in rows] for k in ("true_accuracy", "regret", "percentile"))
        summary[f"{method} {algorithm}"] = rows
        print(f"| {method} | {algorithm} | {len(rows)} | {statistics.mean(acc):.2f} ± {sd(acc):.2f} | "
              f"{statistics.mean(reg):.2f} ± {sd(reg):.2f} | {statistics.mean(pct):.1f} ± {sd(pct):.1f} |")
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
