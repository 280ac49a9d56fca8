"""``data.backend: device`` against the torch loader: time to serve one epoch of training batches
(same stream, same recipe, same batches bitwise), A/B alternated per round, medians; and the
device backend's one-time decode.

    python benchmarks/bench_device_data.py --config configs/nb201_cifar10_cpu.yaml --set data.train_subset=5000
    python benchmarks/bench_device_data.py --config configs/nb201_cifar10.yaml --device cuda --workers 8

On a GPU the device backend's batches never leave the device; the torch loader's are copied there
(pinned, non-blocking), which is included.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from pada_fast.config import load_config
from pada_fast.data.datasets import build_split
from pada_fast.data.device_data import DeviceResidentDataset
from pada_fast.data.loader import build_loader


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None)
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, default=0, help="torch loader workers (and decode workers)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config, args.set)
    d = cfg.data
    device = torch.device(args.device)
    train = build_split(d, "train", augment=d.augment, subset=d.train_subset)
    started = time.perf_counter()
    resident = DeviceResidentDataset(train, device, num_workers=args.workers)
    decode_s = time.perf_counter() - started
    stream = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))
    cuda = device.type == "cuda"

    def torch_epoch(epoch):
        for images, labels, indices in build_loader(train, stream, d.batch_size, num_workers=args.workers,
                                                    drop_last=True, seed=0, epoch=epoch, pin_memory=cuda):
            images = images.to(device, non_blocking=True)
        if cuda:
            torch.cuda.synchronize()

    def device_epoch(epoch):
        for images, labels, indices in resident.batches(stream, d.batch_size, drop_last=True, seed=0, epoch=epoch):
            pass
        if cuda:
            torch.cuda.synchronize()

    times = {"torch": [], "device": []}
    for r in range(args.rounds):
        order = (("torch", torch_epoch), ("device", device_epoch))
        for name, fn in (order if r % 2 == 0 else order[::-1]):
            start = time.perf_counter()
            fn(r)
            times[name].append(time.perf_counter() - start)
    steps = len(train) // d.batch_size
    print(f"{d.dataset}, {len(train)} images, recipe {train.transform!r}, batch {d.batch_size}, {device}, "
          f"{args.workers} worker(s), {args.threads} thread(s), {args.rounds} rounds")
    print("| backend | epoch s (median) | batches/s | images/s |\n|---|---|---|---|")
    for name, t in times.items():
        m = statistics.median(t)
        print(f"| {name} | {m:.2f} | {steps / m:.1f} | {steps * d.batch_size / m:.0f} |")
    print(f"\ndevice backend: one-time decode {decode_s:.1f} s ({resident.nbytes / 2**20:.0f} MiB as uint8); "
          f"epoch speed-up {statistics.median(times['torch']) / statistics.median(times['device']):.1f}x")


if __name__ == "__main__":
    main()
