"""Supernet step time in channels-last (NHWC, ``run.channels_last=true``) against the default
NCHW, A/B alternating in one run; prints a markdown table of medians and ratios.

    python benchmarks/bench_memory_format.py --config configs/nb201_cifar10_cpu.yaml --threads 1
    python benchmarks/bench_memory_format.py --config configs/proxyless_cifar10_cpu.yaml --batch 64

One step = forward of one sampled path, cross-entropy, backward (what the trainer's step spends
its time on; the PA&DA statistics are the same in both formats). Paths: one with every edge a
3x3 convolution (NB201) or the largest candidate (ProxylessNAS), and uniformly drawn ones.
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

from pada_fast.config import load_config
from pada_fast.evaluate.inherited import to_channels_last
from pada_fast.sampling import UniformPathSampler
from pada_fast.experiment import build_model

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import median, spread, time_ab  # noqa: E402


def heaviest_candidate(names) -> int:
    """Index of a layer's most expensive candidate: a 3x3 convolution (NB201, DARTS) or the
    largest kernel and expansion (ProxylessNAS ``kKeE``)."""
    names = [str(n) for n in names]
    for preferred in ("nor_conv_3x3", "sep_conv_5x5", "k7e6"):
        if preferred in names:
            return names.index(preferred)
    return len(names) - 1


def train_steps(model, images, labels, archs):
    """One supernet step (forward, loss, backward) per path in ``archs``."""
    def run():
        for arch in archs:
            model.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(images, arch), labels).backward()
    return run


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--batch", type=int, default=0, help="default: the config's data.batch_size")
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--paths", type=int, default=4, help="uniformly drawn paths besides the heaviest")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config, list(args.set) + ["rank.ground_truth="])
    batch = args.batch or cfg.data.batch_size
    torch.manual_seed(0)
    nchw = build_model(cfg, 10, 3).train()
    nhwc = build_model(cfg, 10, 3).train()
    nhwc.load_state_dict(nchw.state_dict())
    nhwc = to_channels_last(nhwc)
    images = torch.randn(batch, 3, args.resolution, args.resolution)
    labels = torch.randint(0, 10, (batch,))
    images_cl = images.contiguous(memory_format=torch.channels_last)
    heaviest = tuple(heaviest_candidate(names) for names in nchw.layer_candidates())
    drawn = [tuple(a) for a in UniformPathSampler(nchw.candidate_mask()).sample_epoch(
        args.paths, torch.Generator().manual_seed(1)).tolist()]
    print(f"torch {torch.__version__}, threads {args.threads}, {cfg.space.name}, batch {batch}, "
          f"{args.resolution}x{args.resolution}, {args.rounds} rounds after one warm-up\n")
    print("| path | NCHW step (ms) | NHWC step (ms) | NHWC / NCHW (median, IQR) |")
    print("|---|---|---|---|")
    for name, archs in (("heaviest", [heaviest]), (f"{args.paths} uniform draws", drawn)):
        t = time_ab({"nchw": train_steps(nchw, images, labels, archs),
                     "nhwc": train_steps(nhwc, images_cl, labels, archs)},
                    rounds=args.rounds, inner=1, warmup=1)
        ratios = [b / a for a, b in zip(t["nchw"], t["nhwc"])]
        lo, hi = spread(ratios)
        print(f"| {name} | {1e3 * median(t['nchw']) / len(archs):.1f} | {1e3 * median(t['nhwc']) / len(archs):.1f} | "
              f"**{median(ratios):.3f}x** ({lo:.3f}–{hi:.3f}) |", flush=True)


if __name__ == "__main__":
    main()
