"""The ``pada-fast`` command: train supernets, rank and build benchmarks, inspect the build."""
from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path


def cmd_info(args) -> int:
    import platform

    import torch

    from pada_fast import __version__
    from pada_fast.ops import STATUS

    print(f"pada_fast {__version__}")
    print(f"python {platform.python_version()}, torch {torch.__version__} (CUDA {torch.version.cuda}), "
          f"GPU visible: {torch.cuda.is_available()}")
    if STATUS.loaded:
        info = STATUS.build_info
        print(f"compiled op library: loaded ({STATUS.source}), built against torch {info.get('torch')}, "
              f"OpenMP {'yes' if info.get('openmp') == '1' else 'no'}")
        devices = [d for d in ("cpu", "cuda") if STATUS.has_kernel(d)]
        print(f"kernels for: {', '.join(devices)}")
        print(f"CPU kernels use: {info.get('cpu_isa', '?')} instructions")
        print(f"CUDA archs compiled: {info.get('cuda_archs') or 'none'}")
    else:
        print(f"compiled op library: NOT loaded ({STATUS.reason}); the PyTorch reference ops serve")
    try:
        import nvidia.dali as dali
        print(f"DALI {dali.__version__}")
    except ImportError:
        print("DALI: not installed (the torch data loader serves)")
    return 0


def _config(args):
    """The config of ``--config`` and ``--set``; retrain's positional architecture sets
    ``retrain.arch`` (taken as it is: architecture strings are not YAML)."""
    from pada_fast.config import load_config
    cfg = load_config(args.config, args.set or [])
    if getattr(args, "arch", None):
        cfg.retrain.arch = args.arch
    return cfg


def cmd_train(args, trainer_class=None) -> int:
    """Single process, or one rank of a ``torchrun`` launch (WORLD_SIZE > 1): see
    ``pada_fast.train.distributed``."""
    from pada_fast.train import distributed

    def train() -> int:
        from pada_fast.train.trainer import Trainer
        try:
            trainer = (trainer_class or Trainer)(_config(args), resume=args.resume, overwrite=args.overwrite)
            result = trainer.fit()
        finally:
            distributed.teardown()
        code = result.get("exit_code", 0)
        if trainer.dist.is_main and not code:
            print(f"done in {result['train_time']:.1f}s; checkpoint {result['checkpoint']}")
            if result.get("retrained"):
                print(f"architecture file with the test accuracy: {result['retrained']}")
        return code   # 128 + the signal's number after a SIGTERM/SIGINT stop (checkpoint written)

    if distributed.launched():
        # torchrun's error file: its end-of-run summary then shows the failing rank's traceback.
        from torch.distributed.elastic.multiprocessing.errors import record
        return record(train)()
    return train()


def cmd_retrain(args) -> int:
    from pada_fast.train.retrain import RetrainTrainer
    return cmd_train(args, RetrainTrainer)


def cmd_rank(args) -> int:
    from pada_fast.evaluate.rank import rank_supernet
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    eval_subset = -1 if args.eval_subset is None else (None if args.eval_subset == 0 else args.eval_subset)
    metrics = rank_supernet(args.checkpoint, args.out, ground_truth=args.ground_truth,
                            gt_dataset=args.gt_dataset, archs=args.archs, seed=args.seed,
                            eval_subset=eval_subset, batch_size=args.batch_size, device=args.device,
                            data_root=args.data_root, resume=args.resume, precision=args.precision)
    print(json.dumps(metrics, indent=2))
    return 0


def cmd_build_benchmark(args) -> int:
    from pada_fast.evaluate.table_builder import build_benchmark, parse_shard
    which = args.archs if args.archs in ("all", "distinct") else int(args.archs)
    gt = build_benchmark(_config(args), args.out, which=which, seeds=args.seeds, progress=sys.stderr.isatty(),
                         noise_archs=args.noise_archs, shard=parse_shard(args.shard),
                         noise_pick=args.noise_pick)
    if gt is None:
        print(f"no architecture of {args.out} is finished yet (the other shards train the rest)")
        return 0
    print(f"wrote {len(gt)} architectures to {args.out}; best {gt.best()} "
          f"({gt.accuracy(gt.best()):.2f}%)")
    return 0


def cmd_verify_data(args) -> int:
    """Decode every image of the config's image-folder dataset in parallel; list the unreadable."""
    from pada_fast.data.datasets import build_split
    from pada_fast.log import printable
    from pada_fast.registry import DATASETS
    cfg = _config(args)
    d = cfg.data
    if not DATASETS.get(d.dataset).image_folder:
        print(f"{d.dataset} is read whole and checked when it loads: nothing to verify file by file")
        return 0
    workers = args.workers or os.cpu_count() or 1
    bad = 0
    d.bad_files = "error"           # list the unreadable files rather than leave them out
    for split in (("train", "test") if args.split == "all" else (args.split,)):
        dataset = build_split(d, split, subset=None)
        failures = dataset.unreadable(workers=workers)
        for i, why in failures.items():
            print(printable(f"{dataset.paths[i]}: {why}"))
        print(f"{split}: {len(failures)} of {len(dataset)} images unreadable under {printable(str(dataset.root))}")
        bad += len(failures)
    return 3 if bad else 0


def cmd_quickstart(args) -> int:
    from pada_fast.quickstart import run_quickstart
    run_quickstart(args.out, epochs=args.epochs, threads=args.threads, seeds=args.seeds)
    return 0


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML experiment file (see configs/)")
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                   help="override one config value; repeatable (e.g. --set optim.epochs=10)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pada-fast", description=__doc__, allow_abbrev=False,
        epilog="exit codes: 0 done, 2 configuration, 3 data, 4 checkpoint, 5 ground truth, 6 numeric "
               "(non-finite training), 7 disk (no space left), 8 distributed, 1 anything else; "
               "128+N after signal N stopped training (a checkpoint was written)")
    parser.add_argument("--debug", action="store_true",
                        help="print the traceback of a failure too (also PADA_FAST_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser(allow_abbrev=False, name="info", help="versions, compiled kernels and devices")
    p.set_defaults(func=cmd_info)
    _add_training_parsers(sub)
    _add_ranking_parsers(sub)
    from pada_fast.search.cli import add_latency_parser, add_search_parser
    add_search_parser(sub)
    add_latency_parser(sub)
    from pada_fast.deploy.cli import add_export_parser
    add_export_parser(sub)
    from pada_fast.evaluate.gv_cli import add_gv_parser
    add_gv_parser(sub)
    return parser


def _add_training_parsers(sub) -> None:
    """train, retrain, quickstart."""

    p = sub.add_parser(allow_abbrev=False, name="train", help="train a supernet (spos, pa, da, pada)")
    _add_config_args(p)
    p.add_argument("--resume", action="store_true", help="continue from run.out_dir/checkpoint.pt")
    p.add_argument("--overwrite", action="store_true",
                   help="run.out_dir holds a run: move it aside (to <out_dir>.old-<time>) and start anew")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        allow_abbrev=False, name="retrain", help="train a found architecture stand-alone (configs/retrain_*.yaml)",
        description="Train one architecture's stand-alone network with the trainer's checkpoints, "
                    "resume, torchrun, precision modes and logs; the test accuracy goes into "
                    "metrics.csv and run.out_dir/retrained.json.")
    p.add_argument("arch", nargs="?",
                   help="architecture file (a search's best.json) or string: NAS-Bench-201 "
                        "'|op~0|+|...|', DARTS 'Genotype(...)', ProxylessNAS 'k3e6|skip|...' "
                        "(default: retrain.arch)")
    _add_config_args(p)
    p.add_argument("--resume", action="store_true", help="continue from run.out_dir/checkpoint.pt")
    p.add_argument("--overwrite", action="store_true",
                   help="run.out_dir holds a run: move it aside (to <out_dir>.old-<time>) and start anew")
    p.set_defaults(func=cmd_retrain)

    p = sub.add_parser(allow_abbrev=False, name="quickstart",
                       help="SPOS vs PA&DA on scikit-learn's digits, ranked against a shipped table")
    p.add_argument("--out", default="runs/quickstart")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seeds", type=int, default=3, help="training seeds per method (mean ± std)")
    p.set_defaults(func=cmd_quickstart)


def _add_ranking_parsers(sub) -> None:
    """rank, build-benchmark, verify-data."""
    p = sub.add_parser(allow_abbrev=False, name="rank", help="rank sub-models of a trained supernet against ground truth")
    p.add_argument("checkpoint")
    p.add_argument("--out", required=True, help="folder for predictions.csv, metrics.json, scatter.png")
    p.add_argument("--ground-truth", help="NATS CSV, JSON/CSV table, or NAS-Bench-201 .pth (default: rank.ground_truth)")
    p.add_argument("--gt-dataset", choices=["cifar10", "cifar100", "imagenet16-120"])
    p.add_argument("--archs", help="all | unique | stratified:N | FILE (default rank.archs): every "
                   "architecture of the table, one per isomorphism class, N stratified by true "
                   "accuracy, or those listed in FILE")
    p.add_argument("--seed", type=int, help="seed of stratified:N (default rank.seed)")
    p.add_argument("--eval-subset", type=int, help="held-out images (class-stratified subset "
                   "drawn with data.split_seed; 0: the whole split; default data.eval_subset)")
    p.add_argument("--resume", action="store_true",
                   help="continue a stopped ranking in --out (same options)")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                   help="bf16 autocast: faster on GPUs, approximate (docs/results.md)")
    p.add_argument("--batch-size", type=int, help="evaluation batch size (default data.eval_batch_size)")
    p.add_argument("--data-root", help="dataset root, if it moved since training")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int)
    p.set_defaults(func=cmd_rank)

    p = sub.add_parser(allow_abbrev=False, name="build-benchmark", help="train sub-models stand-alone and write a ground-truth table")
    _add_config_args(p)
    p.add_argument("--out", required=True, help="table file (.json or .csv)")
    p.add_argument("--archs", default="50", help="'all', 'distinct', or a number of distinct random architectures")
    p.add_argument("--seeds", type=int, default=1, help="training seeds averaged per architecture")
    p.add_argument("--noise-archs", type=int, default=0,
                   help="train this many architectures once more with the next seed (the table's noise ceiling)")
    p.add_argument("--noise-pick", choices=("spread", "first"), default="spread",
                   help="which architectures get the second seed: evenly spaced along the table, or the first")
    p.add_argument("--shard", metavar="K/N",
                   help="train architectures K, K+N, ... only: N processes share one build (same --out)")
    p.set_defaults(func=cmd_build_benchmark)

    p = sub.add_parser(allow_abbrev=False, name="verify-data", help="decode every image of a dataset folder, list the unreadable ones")
    _add_config_args(p)
    p.add_argument("--split", choices=["train", "test", "all"], default="all")
    p.add_argument("--workers", type=int, default=None, help="decoding threads (default: all cores)")
    p.set_defaults(func=cmd_verify_data)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get("PADA_FAST_DEBUG", "") not in ("", "0")
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("pada-fast: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:       # one line per failure; the traceback only on request
        from pada_fast.errors import classify, one_line
        if debug:
            traceback.print_exc()
        kind, code = classify(exc)
        where = ""
        if code == 1:
            frame = traceback.extract_tb(exc.__traceback__)[-1]
            where = (f" ({type(exc).__name__} at {Path(frame.filename).name}:{frame.lineno}"
                     f"{'' if debug else '; --debug shows the traceback'})")
        print(f"pada-fast: {kind} error: {one_line(exc)}{where}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
