"""The ``pada-fast export`` subcommand (registered by :func:`add_export_parser`)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from pada_fast.architecture import load_arch

EXTENSIONS = {"onnx": ".onnx", "torchscript": ".ts", "state_dict": ".pt"}


def cmd_export(args) -> int:

    from .formats import export_network
    from .weights import network_for_export
    spec = load_arch(args.arch)
    source = network_for_export(spec, checkpoint=args.checkpoint, weights=args.weights,
                                recalibrate_batches=args.recalibrate_batches, seed=args.seed)
    out = args.out or str(Path(args.arch).with_suffix(EXTENSIONS[args.format]))
    record = export_network(source, out, args.format, batch_size=args.batch_size, atol=args.atol,
                            seed=args.seed)
    print(json.dumps(record, indent=2))
    return 0


def add_export_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        allow_abbrev=False, name="export", help="write an architecture's network as ONNX, TorchScript or a state dict",
        description="Build the stand-alone network of an architecture file with inherited "
                    "(--checkpoint) or retrained (--weights) weights, write it, read the file back "
                    "and check its outputs against the network's and, for inherited weights, the "
                    "supernet's on that path (exit 1 past --atol). Writes FILE and FILE.json.")
    p.add_argument("arch", help="architecture file: a search's best.json or a retrain run's retrained.json")
    p.add_argument("--format", choices=["onnx", "torchscript", "state_dict"], default="onnx")
    p.add_argument("--out", help="output file (default: next to ARCH, .onnx / .ts / .pt)")
    p.add_argument("--checkpoint", help="the supernet's checkpoint.pt: export with inherited weights")
    p.add_argument("--weights", help="a `pada-fast retrain` run's checkpoint.pt: export the retrained weights")
    p.add_argument("--recalibrate-batches", type=int, default=10,
                   help="inherited weights with running-statistics BN: recalibrate it on this many "
                        "training batches first, as the search did (0: as trained)")
    p.add_argument("--batch-size", type=int, default=2,
                   help="batch of the check (and of the ONNX file when the network normalises with "
                        "batch statistics; otherwise its batch is dynamic)")
    p.add_argument("--atol", type=float, default=1e-4,
                   help="largest allowed difference, relative to max(1, largest |logit|)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_export)
    return p


__all__ = ["add_export_parser", "cmd_export"]
