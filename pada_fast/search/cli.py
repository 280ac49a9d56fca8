"""The ``pada-fast search`` subcommand (registered by :func:`add_search_parser`)."""
from __future__ import annotations

import argparse
import json
import re

_SUFFIX = {"": 1.0, "k": 1e3, "K": 1e3, "m": 1e6, "M": 1e6, "g": 1e9, "G": 1e9}


def parse_amount(text: str) -> float:
    """``400M``, ``4e8``, ``0.4G``, ``5.3M`` -> a number."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?\d+)?)\s*([kKmMgG]?)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"not an amount: {text!r} (examples: 400M, 4e8, 5.3M)")
    return float(match.group(1)) * _SUFFIX[match.group(2)]


def cmd_search(args) -> int:
    import sys

    from pada_fast.search.supernet_search import run_search
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    evolution = {"population": args.population, "generations": args.generations,
                 "mutation_children": args.mutation_children,
                 "crossover_children": args.crossover_children, "parents": args.parents,
                 "mutation_prob": args.mutation_prob}
    random = {"rounds": args.rounds, "per_round": args.per_round}
    summary = run_search(args.checkpoint, args.out, args.algorithm, max_macs=args.max_macs,
                         max_params=args.max_params, resolution=args.resolution, seed=args.seed,
                         resume=args.resume, eval_split=args.eval_split,
                         eval_subset=-1 if args.eval_subset is None else args.eval_subset,
                         batch_size=args.batch_size, recalibrate_batches=args.recalibrate_batches,
                         ground_truth=args.ground_truth, gt_dataset=args.gt_dataset,
                         data_root=args.data_root, device=args.device,
                         progress=sys.stderr.isatty(), top_k=args.top_k, evolution=evolution,
                         random=random)
    print(json.dumps(summary, indent=2))
    return 0


def add_search_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "search", help="evolutionary or random search over a trained supernet under a MACs budget",
        description="Search sub-models of a trained supernet with inherited weights. Writes "
                    "history.jsonl, best.json (an architecture file: network_from_spec rebuilds "
                    "it), top.json, search.png, cost_table.json, summary.json and a resumable "
                    "search_state.json into --out.")
    p.add_argument("checkpoint", help="checkpoint.pt of a `pada-fast train` run")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--algorithm", choices=["evolution", "random"], default="evolution")
    p.add_argument("--max-macs", type=parse_amount, help="MACs ('FLOPs') budget, e.g. 400M")
    p.add_argument("--max-params", type=parse_amount, help="parameter budget, e.g. 5M")
    p.add_argument("--resolution", type=int,
                   help="input size the MACs are counted at (default: space.resolution; 224 "
                        "for proxyless, else 32)")
    g = p.add_argument_group("evolution")
    g.add_argument("--population", type=int, default=50)
    g.add_argument("--generations", type=int, default=20, help="including the random generation 0")
    g.add_argument("--mutation-children", type=int, default=25)
    g.add_argument("--crossover-children", type=int, default=25)
    g.add_argument("--parents", type=int, default=10, help="top-k parents")
    g.add_argument("--mutation-prob", type=float, default=0.1)
    g = p.add_argument_group("random search")
    g.add_argument("--rounds", type=int, default=60)
    g.add_argument("--per-round", type=int, default=100)
    g = p.add_argument_group("fitness")
    g.add_argument("--eval-split", choices=["test", "train"],
                   help="held-out split (default data.eval_split)")
    g.add_argument("--eval-subset", type=int, help="held-out images (class-stratified subset)")
    g.add_argument("--batch-size", type=int, help="evaluation batch size (default data.eval_batch_size)")
    g.add_argument("--recalibrate-batches", type=int,
                   help="training batches for BN recalibration per candidate (running-stats BN "
                        "only; default rank.recalibrate_batches, else 10; 0 disables)")
    g.add_argument("--ground-truth", help="benchmark table (NAS-Bench-201): adds true accuracies")
    g.add_argument("--gt-dataset", choices=["cifar10", "cifar100", "imagenet16-120"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--top-k", type=int, default=10, help="records kept in top.json")
    p.add_argument("--resume", action="store_true", help="continue from --out/search_state.json")
    p.add_argument("--data-root", help="dataset root, if it moved since training")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int)
    p.set_defaults(func=cmd_search)
    return p


__all__ = ["add_search_parser", "cmd_search", "parse_amount"]
