"""The paper's ablation (Tables 4 and 5) at any budget: SPOS, PA, DA, PA&DA, PA granularity and the
δ/τ schedules, several seeds each, every supernet ranked against the same ground truth. Prints a
markdown table of Kendall's tau and Precision@Top-5% (mean ± std over seeds) and writes
``summary.json`` under ``--out``. Resumable: finished (variant, seed) rankings are reused and a
half-trained run continues from its checkpoint. Runs go seed by seed (every variant's seed 0
first), so a budget cut short still compares all variants; two processes with disjoint
``--variants`` share one ``--out`` as two lanes, and a last call with every variant prints the
whole table. ``--gv-draws K`` measures the gradient variance after every epoch (``gv.jsonl``, the
input of ``pada-fast gv``) for the ``--gv-variants`` runs; it does not change their training.

    python benchmarks/ablation.py --out runs/ablation_digits                       # quickstart setting
    python benchmarks/ablation.py --config configs/nb201_cifar10_cpu.yaml --out runs/ablation_cifar \\
        --set data.train_subset=5000 --set optim.epochs=15 --rank-eval-subset 500 --gv-draws 8
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from pada_fast.config import Config, apply_dict, load_config, parse_override
from pada_fast.evaluate.rank import rank_supernet
from pada_fast.quickstart import SETTINGS
from pada_fast.train.trainer import Trainer

VARIANTS = {
    "spos": {"method.name": "spos"},
    "pa": {"method.name": "pa"},
    "da": {"method.name": "da"},
    "pada": {"method.name": "pada"},
    "pada per_edge": {"method.name": "pada", "method.pa_granularity": "per_edge"},
    "pada decreasing": {"method.name": "pada", "method.pa_schedule": "linear_decrease",
                           "method.da_schedule": "linear_decrease"},
    # the implementation details of the authors' code (pada_fast/reproduce.py), one at a time and
    # all together, and the other differences a reference implementation can have
    "pada official": {"method.name": "pada", "method.reproduce": "official"},
    "pada pa_aggregation=official": {"method.name": "pada", "method.pa_aggregation": "official"},
    "pada da_aggregation=official": {"method.name": "pada", "method.da_aggregation": "official"},
    "pada lagged schedule": {"method.name": "pada", "method.schedule_offset": "lagged"},
    "pada lr per epoch": {"method.name": "pada", "optim.lr_schedule": "per_epoch"},
    "pada update unsampled": {"method.name": "pada", "optim.update_unsampled": "on"},
    "pada affine reductions": {"method.name": "pada", "space.reduction_bn": "affine"},
    "pada random subsets": {"method.name": "pada", "data.subset_mode": "random"},
    "pada augment=none": {"method.name": "pada", "data.augment": "none"},
    "pada augment=flip": {"method.name": "pada", "data.augment": "flip"},
    "pada augment=crop": {"method.name": "pada", "data.augment": "crop"},
    "pada augment=crop_flip": {"method.name": "pada", "data.augment": "crop_flip"},
    "fairnas": {"method.name": "fairnas"},
    "spos augment=none": {"method.name": "spos", "data.augment": "none"},
    "spos augment=crop": {"method.name": "spos", "data.augment": "crop"},
    "spos augment=crop_flip": {"method.name": "spos", "data.augment": "crop_flip"},
    # the ranking protocol: per-architecture running statistics recalibrated on 20 training
    # batches (the SPOS paper's) instead of batch statistics (NAS-Bench-201's supernet)
    "spos running bn": {"method.name": "spos", "space.bn_mode": "running", "rank.recalibrate_batches": 20},
    "pada running bn": {"method.name": "pada", "space.bn_mode": "running", "rank.recalibrate_batches": 20},
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="experiment YAML (default: the quickstart's digits setting)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--out", required=True)
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0 .. N-1")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--rank-eval-subset", type=int, default=-1, help="-1: the config's data.eval_subset")
    parser.add_argument("--gv-draws", type=int, default=0, help="gradient variance after every epoch, K draws")
    parser.add_argument("--gv-variants", default="spos,pada", help="the variants --gv-draws applies to")
    parser.add_argument("--train-only", action="store_true",
                        help="train the supernets and stop (a later call without it ranks them)")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
    gv_names = {n.strip() for n in args.gv_variants.split(",")}
    out = Path(args.out)
    rows = {name: [] for name in names}
    for seed in range(args.seeds):
        for name in names:
            folder = out / name.replace(" ", "_") / f"s{seed}"
            metrics_path = folder / "rank" / "metrics.json"
            if not metrics_path.exists():
                gv = [f"run.gv_draws={args.gv_draws}"] if args.gv_draws and name in gv_names else []
                overrides = list(args.set) + [f"{k}={v}" for k, v in VARIANTS[name].items()] + gv + [
                    f"run.seed={seed}", f"run.out_dir={folder}", "run.progress=lines"]
                cfg = build_config(args.config, overrides)
                started = (folder / "checkpoint.pt").exists()   # else: a run stopped before its first checkpoint
                Trainer(cfg, resume=started, overwrite=not started).fit()
                if args.train_only:
                    continue
                rank_supernet(folder / "checkpoint.pt", folder / "rank", eval_subset=args.rank_eval_subset,
                              progress=False, resume=True)
            rows[name].append(json.loads(metrics_path.read_text()))
    if args.train_only:
        return
    print(f"| variant | seeds | Kendall tau (mean ± std) | P@Top5% (mean ± std) | per seed tau |")
    print("|---|---|---|---|---|")
    summary = {}
    for name, ms in rows.items():
        taus = [m["kendall_tau"] for m in ms]
        p5 = [m["precision_top5pct"] for m in ms]
        sd = (lambda xs: statistics.stdev(xs) if len(xs) > 1 else 0.0)
        summary[name] = {"tau": taus, "p_top5": p5}
        print(f"| {name} | {len(ms)} | {statistics.mean(taus):.3f} ± {sd(taus):.3f} | "
              f"{statistics.mean(p5):.2f} ± {sd(p5):.2f} | {', '.join(f'{t:.3f}' for t in taus)} |")
    (out / "summary.json").write_text(json.dumps(summary, indent=2))


def build_config(path, overrides):
    """The experiment file (or the quickstart's settings), then the overrides."""
    cfg = load_config(path) if path else apply_dict(Config(), SETTINGS, "quickstart settings")
    for text in overrides:
        section, key, value = parse_override(text)
        apply_dict(cfg, {section: {key: value}}, f"--set {text}")
    return cfg


if __name__ == "__main__":
    main()
