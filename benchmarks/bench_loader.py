"""Loader throughput: DALI (CPU) vs the torch DataLoader on a JPEG image-folder tree.

    python benchmarks/bench_loader.py [ROOT] [--subset 10000] [--batch-size 256] [--workers 2]
                                      [--rounds 5] [--augment cifar] [--skew 1.0]

ROOT defaults to ../shared/datasets/cifar10-jpeg/train (relative to the repository). Both backends
read the same class-stratified subset, with the same number of worker processes, the same
augmentation (CIFAR pad-4 crop + flip + normalise) and the same batch size, over two kinds of
epoch stream:

* uniform: a random permutation of the subset (SPOS);
* weighted: ``subset`` draws with replacement from a skewed distribution q (DA): q is a Zipf-like
  ``rank ** -skew`` over a random order of the samples, so some images repeat many times and
  others never appear.

Each timed unit is one full epoch, from the start of iteration to the last batch, with a fresh
stream (new seed) every time, as training does: torch builds a new DataLoader per epoch (its
worker start-up is part of the epoch, as in the trainer); DALI calls ``set_epoch`` on a pipeline
built once (the one-off build time is printed separately). Configurations run in alternating
order every round so drift and page-cache effects hit all alike; one warm-up epoch each comes
first. The table gives median images/s and the per-round DALI/torch ratio (median and IQR).

DALI's ``num_threads`` (decode + augmentation threads) defaults to ``--workers``; the torch
workers decode and augment in their processes, DALI's Python workers only read file bytes.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import median, spread  # noqa: E402

from pada_fast.data import transforms as T  # noqa: E402
from pada_fast.data.datasets import ImageFolderDataset  # noqa: E402
from pada_fast.data.loader import build_loader  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_ROOT = os.path.join(REPO, "..", "shared", "datasets", "cifar10-jpeg", "train")


def make_stream(kind: str, n: int, seed: int, skew: float) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if kind == "uniform":
        return torch.randperm(n, generator=g)
    # Skewed q: Zipf-like weights over a fixed random order of the samples.
    order = torch.randperm(n, generator=torch.Generator().manual_seed(12345))
    q = torch.empty(n, dtype=torch.float64)
    q[order] = torch.arange(1, n + 1, dtype=torch.float64).pow(-skew)
    return torch.multinomial(q / q.sum(), n, replacement=True, generator=g)


def run_epoch(loader) -> int:
    count = 0
    for images, _labels, _indices in loader:
        count += images.shape[0]
    return count


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", nargs="?", default=DEFAULT_ROOT,
                        help="image-folder tree root/<class>/<image>.jpg")
    parser.add_argument("--subset", type=int, default=10000,
                        help="class-stratified subset size (0: all images)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2,
                        help="worker processes, the same for both backends")
    parser.add_argument("--dali-threads", type=int, default=None,
                        help="DALI decode/augment threads (default: --workers)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--augment", choices=("cifar", "none"), default="cifar")
    parser.add_argument("--skew", type=float, default=1.0,
                        help="exponent of the weighted stream's Zipf-like q")
    parser.add_argument("--streams", default="uniform,weighted")
    args = parser.parse_args(argv)

    from pada_fast.data.dali_loader import DaliIndexStreamLoader, dali_available

    if not dali_available():
        sys.exit("NVIDIA DALI is not installed (pip install nvidia-dali-cuda130)")
    torch.set_num_threads(1)
    transform = (T.cifar_train_transform() if args.augment == "cifar" else T.eval_transform())
    dataset = ImageFolderDataset(args.root, transform, subset=args.subset or None, seed=0)
    n = len(dataset)
    kinds = [k.strip() for k in args.streams.split(",") if k.strip()]

    start = time.perf_counter()
    dali = DaliIndexStreamLoader(dataset, args.batch_size, num_workers=args.workers,
                                 num_threads=args.dali_threads, augment=args.augment, device="cpu")
    dali.set_epoch(make_stream(kinds[0], n, 0, args.skew), 0)
    build_s = time.perf_counter() - start

    epoch_counter = [0]

    def torch_epoch(kind):
        epoch_counter[0] += 1
        stream = make_stream(kind, n, epoch_counter[0], args.skew)
        loader = build_loader(dataset, stream, args.batch_size, num_workers=args.workers,
                              seed=0, epoch=epoch_counter[0])
        return run_epoch(loader)

    def dali_epoch(kind):
        epoch_counter[0] += 1
        dali.set_epoch(make_stream(kind, n, epoch_counter[0], args.skew), epoch_counter[0])
        return run_epoch(dali)

    configs = {(backend, kind): (fn, kind) for kind in kinds
               for backend, fn in (("torch", torch_epoch), ("dali", dali_epoch))}
    for fn, kind in configs.values():  # warm-up (page cache, DALI buffers)
        fn(kind)
    rates = {key: [] for key in configs}
    for round_i in range(args.rounds):
        order = list(configs) if round_i % 2 == 0 else list(reversed(list(configs)))
        for key in order:
            fn, kind = configs[key]
            t0 = time.perf_counter()
            count = fn(kind)
            rates[key].append(count / (time.perf_counter() - t0))
    dali.close()

    print(f"\nLoader throughput, {n} images from {os.path.normpath(args.root)}, batch "
          f"{args.batch_size}, {args.workers} workers (DALI threads "
          f"{args.dali_threads or max(1, args.workers)}), augment={args.augment}, "
          f"{args.rounds} rounds; DALI pipeline build {build_s:.2f} s (once)\n")
    weighted = make_stream("weighted", n, 1, args.skew)
    print(f"weighted stream: {len(torch.unique(weighted))} distinct of {n} draws "
          f"(skew {args.skew})\n")
    print("| stream | torch images/s | DALI CPU images/s | DALI/torch | IQR |")
    print("|---|---:|---:|---:|---|")
    for kind in kinds:
        ref, new = rates[("torch", kind)], rates[("dali", kind)]
        ratios = [b / a for a, b in zip(ref, new)]
        lo, hi = spread(ratios) if len(ratios) > 1 else (ratios[0], ratios[0])
        print(f"| {kind} | {median(ref):,.0f} | {median(new):,.0f} | **{median(ratios):.2f}x** "
              f"| {lo:.2f}–{hi:.2f} |")
    if args.rounds > 1:
        spread_note = {key: statistics.pstdev(v) / statistics.mean(v) for key, v in rates.items()}
        worst = max(spread_note.values())
        print(f"\n(largest relative std of a configuration over rounds: {worst:.1%})")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
