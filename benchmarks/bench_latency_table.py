"""How well a latency lookup table predicts end-to-end latency: builds the table of a ProxylessNAS
supernet on this device (``pada_fast.search.latency.build_latency_table``, what ``pada-fast
latency-table`` runs), then measures ``--archs`` random stand-alone networks end to end and
compares with the table sums (Pearson, Spearman, Kendall's tau, mean absolute and relative
error). Prints markdown and writes the whole result as JSON.

    python benchmarks/bench_latency_table.py --threads 1 --out latency_eval.json   # ImageNet space, 224, batch 1
    python benchmarks/bench_latency_table.py --width 0.25 --stem-stride 1 --last-channels 256 \
        --resolution 32 --classes 10 --threads 1           # proxyless_cifar10_cpu.yaml's space
    python benchmarks/bench_latency_table.py --device cuda --batch 64
"""
from __future__ import annotations

import argparse
import json
import time

import torch


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--stem-stride", type=int, default=2)
    parser.add_argument("--last-channels", type=int, default=1280)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--calibration-archs", type=int, default=5)
    parser.add_argument("--archs", type=int, default=50)
    parser.add_argument("--out", help="JSON file for the table, the evaluation and every row")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from pada_fast.search.latency import build_latency_table, evaluate_latency_table
    from pada_fast.spaces import ProxylessSuperNet
    net = ProxylessSuperNet(num_classes=args.classes, width_mult=args.width, resolution=args.resolution,
                            stem_stride=args.stem_stride, last_channels=args.last_channels).to(args.device)
    started = time.perf_counter()
    table = build_latency_table(net, batch_size=args.batch, warmup=args.warmup, repeats=args.repeats,
                                calibration_archs=args.calibration_archs, seed=0)
    built = time.perf_counter() - started
    result = evaluate_latency_table(net, table, num_archs=args.archs, seed=1, warmup=args.warmup,
                                    repeats=args.repeats)
    low, high = table.bounds()
    print("| space | device | threads | batch | table sum range (ms) | measured range (ms) | Pearson r | "
          "Spearman | Kendall tau | mean abs error (ms) | mean rel. error | mean signed error (ms) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    print(f"| proxyless width {args.width} at {args.resolution} | {table.meta['device_name']} ({args.device}) | "
          f"{table.meta['threads']} | {args.batch} | {low:.2f}..{high:.2f} | "
          f"{result['measured_ms_range'][0]:.2f}..{result['measured_ms_range'][1]:.2f} | "
          f"{result['pearson']:.3f} | {result['spearman']:.3f} | {result['kendall_tau']:.3f} | "
          f"{result['mean_abs_error_ms']:.3f} | {100 * result['mean_rel_error']:.1f}% | "
          f"{result['mean_error_ms']:+.3f} |")
    print(f"table built in {built:.0f}s (fixed part {table.fixed_ms:.3f} ms); {args.archs} networks "
          f"measured in {time.perf_counter() - started - built:.0f}s")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"args": vars(args), "table": table.to_dict(), "evaluation": result}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
