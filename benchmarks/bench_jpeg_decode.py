"""What the ImageNet data path can deliver: JPEG decode + the training crop, in images/s.

Two decoders, on the same files:

- **cpu**: ``torchvision.io.decode_jpeg`` on the host and the torch backend's ImageNet training
  transform (random-resized crop to 224 + flip + normalise, ``pada_fast.data.transforms``), in a
  DataLoader with ``--workers`` processes (the torch backend's path);
- **cuda** (when a GPU is visible): ``torchvision.io.decode_jpeg(batch, device="cuda")`` on
  batches of ``--batch`` files read on the host, then a batched resize to 224 on the GPU (the
  candidate second decoder beside DALI).

    python benchmarks/bench_jpeg_decode.py --folder /datasets/imagenet/train --limit 2000
    python benchmarks/bench_jpeg_decode.py --synthetic 400      # ImageNet-sized JPEGs made here

Compare the result with the supernet step's images/s per GPU
(``benchmarks/bench_supernet_static.py --space proxyless``) to see which one bounds a run.
``--synthetic`` images are smooth gradients with mild noise at 500x375, quality 90 (about the
size of an average ImageNet JPEG, easier to compress than photographs).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from torchvision.io import ImageReadMode, decode_jpeg, encode_jpeg, read_file

from pada_fast.data import transforms as T


def synthetic_jpegs(folder: Path, n: int, width: int = 500, height: int = 375) -> list[Path]:
    g = torch.Generator().manual_seed(0)
    ys = torch.linspace(0, 1, height)[:, None]
    xs = torch.linspace(0, 1, width)[None, :]
    paths = []
    for i in range(n):
        phase = torch.rand(3, generator=g)
        base = torch.stack([(0.5 + 0.5 * torch.sin(6.28 * (xs * (c + 1) + ys * (2 - c) + phase[c])))
                            for c in range(3)])
        noise = 0.05 * torch.randn(3, height, width, generator=g)
        image = ((base + noise).clamp(0, 1) * 255).to(torch.uint8)
        path = folder / f"{i:05d}.jpg"
        path.write_bytes(bytes(encode_jpeg(image, quality=90).numpy()))
        paths.append(path)
    return paths


class Decoded(Dataset):
    def __init__(self, paths):
        self.paths = paths
        self.transform = T.imagenet_train_transform(224)

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        image = decode_jpeg(read_file(str(self.paths[i])), mode=ImageReadMode.RGB)
        g = torch.Generator().manual_seed(i)
        return self.transform(image, g)


def cpu_rate(paths, workers: int, batch: int) -> float:
    loader = DataLoader(Decoded(paths), batch_size=batch, num_workers=workers)
    start = time.perf_counter()
    n = sum(len(b) for b in loader)
    return n / (time.perf_counter() - start)


def cuda_rate(paths, batch: int) -> float:
    datas = [read_file(str(p)) for p in paths]       # the reading is not timed: decode + resize only
    torch.cuda.synchronize()
    start = time.perf_counter()
    for i in range(0, len(datas), batch):
        images = decode_jpeg(datas[i:i + batch], device="cuda")
        out = torch.stack([F.interpolate(im[None].float(), size=(224, 224), mode="bilinear",
                                         antialias=True, align_corners=False)[0] for im in images])
        out = out.div_(255)
    torch.cuda.synchronize()
    return len(datas) / (time.perf_counter() - start)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", help="a folder of JPEGs (searched recursively)")
    parser.add_argument("--synthetic", type=int, default=0, help="make this many ImageNet-sized JPEGs instead")
    parser.add_argument("--limit", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    if args.folder:
        paths = sorted(p for p in Path(args.folder).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))[: args.limit]
    elif args.synthetic:
        paths = synthetic_jpegs(Path(tempfile.mkdtemp(prefix="jpegs-")), args.synthetic)
    else:
        parser.error("give --folder or --synthetic N")
    if not paths:
        parser.error(f"no JPEG files under {args.folder}")
    mean_kb = statistics.mean(p.stat().st_size for p in paths) / 1024
    print(f"{len(paths)} JPEGs, mean {mean_kb:.0f} KB; batch {args.batch}; {args.rounds} rounds (median)")
    print("| decoder | images/s |\n|---|---|")
    rate = statistics.median(cpu_rate(paths, args.workers, args.batch) for _ in range(args.rounds))
    print(f"| cpu: decode_jpeg + random-resized crop 224 + flip, {args.workers} worker(s) | {rate:.0f} |")
    if torch.cuda.is_available():
        cuda_rate(paths[: args.batch], args.batch)          # warm-up (nvjpeg handles)
        rate = statistics.median(cuda_rate(paths, args.batch) for _ in range(args.rounds))
        print(f"| cuda: decode_jpeg(device='cuda') + resize 224 on {torch.cuda.get_device_name()} | {rate:.0f} |")
    else:
        print("| cuda: not measured (no GPU visible) | — |")


if __name__ == "__main__":
    main()
