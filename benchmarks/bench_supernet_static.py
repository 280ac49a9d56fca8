"""The supernet step's own overhead: the trainer's training step on one fixed path of the supernet
against the same architecture built as a plain static network (``supernet.standalone(arch)``,
only its live operations) trained by a plain PyTorch loop (``F.cross_entropy``, backward,
gradient clipping, fused SGD). Same batch, same device, same thread count; A/B alternated in
each round (the order flips every round), and the ratio per round; prints the median and the
interquartile range of supernet / static throughput, as markdown.

    python benchmarks/bench_supernet_static.py                      # NB201 C=16 N=5, 32x32, batch 64
    python benchmarks/bench_supernet_static.py --C 4 --N 1 --image 8 --channels 1 --method pada
    python benchmarks/bench_supernet_static.py --device cuda --batch 256 --precision bf16
    python benchmarks/bench_supernet_static.py --space proxyless --image 224 --batch 256 --device cuda \
        --precision bf16 --channels-last          # the ProxylessNAS supernet step on synthetic batches

The supernet side is :meth:`pada_fast.train.trainer.Trainer.run_step` itself, everything a step
does: the fused loss-and-importance op, PA's gradient-norm record (SPOS records too), DA's
record (``--method pada``), the non-finite guard and the fused optimiser step. The training set
is a synthetic one of random images (only its shape matters here).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F

import pada_fast.data.pipeline as pipeline_module
import pada_fast.train.trainer as trainer_module
from pada_fast.config import load_config
from pada_fast.data import transforms as T
from pada_fast.data.datasets import ArrayDataset
from pada_fast.spaces.nb201 import str_to_arch

CONV_HEAVY = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_1x1~1|+|skip_connect~0|nor_conv_3x3~1|avg_pool_3x3~2|"


def synthetic_set(n: int, size: int, channels: int, classes: int = 10) -> ArrayDataset:
    rng = np.random.default_rng(0)
    data = ArrayDataset(rng.integers(0, 256, (n, size, size, channels), dtype=np.uint8),
                        rng.integers(0, classes, n))
    data.transform = T.eval_transform((0.5,) * channels, (0.25,) * channels)
    return data


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="nb201", choices=["nb201", "proxyless"])
    parser.add_argument("--C", type=int, default=16)
    parser.add_argument("--N", type=int, default=5)
    parser.add_argument("--image", type=int, default=32)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--arch", default=None, help="NB201 architecture string (default: a conv-heavy "
                        "one); proxyless: a random architecture of --arch-seed")
    parser.add_argument("--arch-seed", type=int, default=0)
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--method", default="spos", choices=["spos", "pada"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=10, help="steps per side per round")
    parser.add_argument("--warmup", type=int, default=3, help="steps per side before timing")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    dataset = synthetic_set(args.batch * (args.steps + 1), args.image, args.channels)
    pipeline_module.build_split = lambda *a, **k: dataset       # the trainer's data: the synthetic set
    out = tempfile.mkdtemp(prefix="bench_supernet_static-")
    space = ([f"space.C={args.C}", f"space.N={args.N}"] if args.space == "nb201" else
             ["space.name=proxyless", f"space.resolution={args.image}"] + (["space.stem_stride=1"] if args.image <= 64 else []))
    cfg = load_config(None, space + [f"data.batch_size={args.batch}",
                             f"run.channels_last={'true' if args.channels_last else 'false'}",
                             f"method.name={args.method}", f"run.out_dir={out}", f"run.device={args.device}",
                             f"run.threads={args.threads}", f"run.precision={args.precision}",
                             "run.log_interval=1000000", "optim.epochs=1000"])
    trainer = trainer_module.Trainer(cfg)
    if args.space == "nb201":
        arch = str_to_arch(args.arch or CONV_HEAVY)
    else:
        arch = trainer.model.random_arch(np.random.default_rng(args.arch_seed))
    arch_text = trainer.model.arch_to_str(arch) if hasattr(trainer.model, "arch_to_str") else str(arch)
    state = trainer.begin_epoch(0, 0)
    state.archs = [arch] * len(state.archs)                 # the fixed path
    images, labels, indices = next(iter(state.loader))
    batch = (images.to(device), labels.to(device), indices.to(device))

    static = trainer.model.standalone(arch, bn_mode=cfg.space.bn_mode).to(device)
    static.to(memory_format=trainer.memory_format)
    optimizer = torch.optim.SGD(static.parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum,
                                weight_decay=cfg.optim.weight_decay, fused=True)
    x = batch[0].to(memory_format=trainer.memory_format)
    y = batch[1]

    def supernet_steps(k):
        for _ in range(k):
            state.step = 0
            trainer.run_step(state, batch)

    def static_steps(k):
        for _ in range(k):
            optimizer.zero_grad(set_to_none=True)
            with trainer.autocast():
                logits = static(x)
            loss = F.cross_entropy(logits.float(), y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(static.parameters(), cfg.optim.grad_clip, foreach=True)
            optimizer.step()

    def timed(fn):
        sync(device)
        start = time.perf_counter()
        fn(args.steps)
        sync(device)
        return time.perf_counter() - start

    supernet_steps(args.warmup)
    static_steps(args.warmup)
    ratios, super_times, static_times = [], [], []
    for r in range(args.rounds):
        order = (supernet_steps, static_steps) if r % 2 == 0 else (static_steps, supernet_steps)
        times = {fn: timed(fn) for fn in order}
        super_times.append(times[supernet_steps])
        static_times.append(times[static_steps])
        ratios.append(times[static_steps] / times[supernet_steps])   # supernet / static throughput
    q = statistics.quantiles(ratios, n=4) if len(ratios) >= 2 else [ratios[0]] * 3
    img_s = lambda t: args.batch * args.steps / statistics.median(t)
    size = f"NB201 C={args.C} N={args.N}" if args.space == "nb201" else "ProxylessNAS"
    print(f"{size}, {args.image}x{args.image}x{args.channels}, batch {args.batch}, {args.method}, "
          f"{args.precision}, {'NHWC' if args.channels_last else 'NCHW'}, {device}, {args.threads} thread(s), "
          f"{args.rounds} rounds x {args.steps} steps, arch {arch_text}")
    print("| side | images/s (median) | step time ms (median) |")
    print("|---|---|---|")
    for name, t in (("supernet, trainer step", super_times), ("static network, plain loop", static_times)):
        print(f"| {name} | {img_s(t):.0f} | {1000 * statistics.median(t) / args.steps:.2f} |")
    print(f"\nsupernet / static throughput: median {statistics.median(ratios):.3f} "
          f"(IQR {q[0]:.3f}-{q[2]:.3f})")
    return statistics.median(ratios)


if __name__ == "__main__":
    main()
