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


def parse_latency(text: str) -> float | str:
    """``4.5`` (milliseconds) or ``40%`` (the table latency that 40% of random architectures meet)."""
    text = text.strip()
    try:
        if text.endswith("%"):
            value = float(text[:-1])
            if not 0 < value <= 100:
                raise ValueError
            return f"{value:g}%"
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a latency: {text!r} (milliseconds such as 4.5, or the "
                                         "share of random architectures that meet it, such as 40%)") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"the latency budget must be positive, got {text!r}")
    return value


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
                         max_params=args.max_params, max_latency_ms=args.max_latency_ms,
                         latency_table=args.latency_table, resolution=args.resolution, seed=args.seed,
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
        allow_abbrev=False, name="search", help="evolutionary or random search over a trained supernet under a MACs, "
                       "parameter or latency budget",
        description="Search sub-models of a trained supernet with inherited weights. Writes "
                    "history.jsonl, best.json (an architecture file: network_from_spec rebuilds "
                    "it), top.json, search.png, cost_table.json, summary.json and a resumable "
                    "search_state.json into --out.")
    p.add_argument("checkpoint", help="checkpoint.pt of a `pada-fast train` run")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--algorithm", choices=["evolution", "random"], default="evolution")
    p.add_argument("--max-macs", type=parse_amount, help="MACs ('FLOPs') budget, e.g. 400M")
    p.add_argument("--max-params", type=parse_amount, help="parameter budget, e.g. 5M")
    p.add_argument("--max-latency-ms", type=parse_latency,
                   help="latency budget predicted by --latency-table: milliseconds (4.5), or P%% "
                        "(the table latency that P%% of random architectures meet)")
    p.add_argument("--latency-table",
                   help="lookup table of `pada-fast latency-table` for this space (measured on the "
                        "target device); its prediction is recorded for every candidate")
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


def latency_supernet(args):
    """The supernet a latency table is measured for: a trained run's (``--checkpoint``), or space
    ``--space`` built from the config's ``space`` section (``--config``, ``--set``) with
    ``--num-classes`` and ``--in-channels``."""
    from pada_fast.config import load_config
    from pada_fast.registry import SPACES
    from pada_fast.spaces import build_supernet
    from pada_fast.experiment import load_run, resolve_bn_mode
    if args.checkpoint:
        return load_run(args.checkpoint, "cpu").model
    cfg = load_config(args.config, args.set or [])
    if args.space:
        cfg.space.name = args.space
    entry = SPACES.get(cfg.space.name)
    resolve_bn_mode(cfg)
    classes = args.num_classes or entry.default_classes
    return build_supernet(cfg.space.name, **entry.from_config(cfg.space, classes, args.in_channels))


def cmd_latency_table(args) -> int:
    import torch

    from pada_fast.devices import resolve_device
    from pada_fast.log import get_logger
    from pada_fast.search.latency import build_latency_table, evaluate_latency_table
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    net = latency_supernet(args).to(device)
    log = get_logger(__name__).info
    log(f"measuring {net.space_name} ({net.num_layers} layers) on {device}, batch {args.batch_size}, "
        f"{torch.get_num_threads()} threads, {args.warmup} warm-up calls, median of {args.repeats}")
    table = build_latency_table(net, resolution=args.resolution, batch_size=args.batch_size,
                                warmup=args.warmup, repeats=args.repeats,
                                calibration_archs=args.calibration_archs, seed=args.seed,
                                progress=log if args.verbose else None)
    if args.evaluate:
        result = evaluate_latency_table(net, table, args.evaluate, seed=args.seed + 1,
                                        warmup=args.warmup, repeats=args.repeats)
        table.meta["evaluation"] = {k: v for k, v in result.items() if k != "rows"}
    table.save(args.out)
    low, high = table.bounds()
    summary = {"out": args.out, "space": table.space, "device": table.device,
               "device_name": table.meta["device_name"], "batch_size": table.batch_size,
               "resolution": table.resolution, "threads": table.meta["threads"],
               "fixed_ms": round(table.fixed_ms, 4), "range_ms": [round(low, 4), round(high, 4)]}
    if "evaluation" in table.meta:
        summary["evaluation"] = table.meta["evaluation"]
    print(json.dumps(summary, indent=2))
    return 0


def add_latency_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        allow_abbrev=False, name="latency-table", help="measure a space's per-operation latency lookup table on this device",
        description="Time every candidate operation of every layer at the search resolution on "
                    "this device (warm-up calls, then the median of timed calls, on a zero batch "
                    "of --batch-size) and calibrate the fixed part end to end; writes a JSON "
                    "table for `pada-fast search --latency-table FILE --max-latency-ms MS`.")
    p.add_argument("--space", help="search space (default: the config's space.name)")
    p.add_argument("--checkpoint", help="measure the space of this trained supernet instead")
    p.add_argument("--config", help="YAML experiment file whose space section sets the space")
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                   help="override one config value, e.g. space.width_mult=0.5; repeatable")
    p.add_argument("--num-classes", type=int, help="classifier outputs (default 1000 for proxyless, else 10)")
    p.add_argument("--in-channels", type=int, default=3)
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (the device to predict for)")
    p.add_argument("--out", required=True, help="table file (.json)")
    p.add_argument("--resolution", type=int,
                   help="input size (default: space.resolution; 224 for proxyless, else 32)")
    p.add_argument("--batch-size", type=int, default=1, help="images per timed call (default 1)")
    p.add_argument("--warmup", type=int, default=10, help="untimed calls before timing")
    p.add_argument("--repeats", type=int, default=30, help="timed calls; the median is kept")
    p.add_argument("--calibration-archs", type=int, default=5,
                   help="random networks timed end to end to calibrate the fixed part")
    p.add_argument("--evaluate", type=int, default=0, metavar="N",
                   help="also time N other random networks end to end and record how well the "
                        "table predicts them (correlation, mean error)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch CPU threads (the table records the number)")
    p.add_argument("--verbose", action="store_true", help="log every layer's row")
    p.set_defaults(func=cmd_latency_table)
    return p


__all__ = ["add_latency_parser", "add_search_parser", "cmd_latency_table", "cmd_search", "latency_supernet",
           "parse_amount", "parse_latency"]
