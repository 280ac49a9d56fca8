"""The ranking engine against the per-architecture loop, A/B in one run on the same batches.

The loop is what ``pada-fast rank`` ran before the engine: ``inherited_accuracy`` per architecture
(channels-last model and inputs, one host read per batch). The engine evaluates each distinct
supernet path once and reuses the shared stem/first-cell work. Both see the same architectures
(``--archs`` of them, a stratified draw from the ground truth) in alternating rounds; predictions
must be equal. Prints per-architecture times, the speed-up, and the projected time to rank every
architecture of the table on the whole held-out split (via the distinct-path count).

    python benchmarks/bench_rank.py runs/cifar/spos_s0/checkpoint.pt --archs 40 --rounds 3 --threads 1
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from common import median, spread
from pada_fast.data.datasets import build_split
from pada_fast.evaluate.engine import RankingEngine
from pada_fast.evaluate.ground_truth import load_ground_truth
from pada_fast.evaluate.heldout import load_heldout
from pada_fast.evaluate.inherited import inherited_accuracy, to_channels_last
from pada_fast.evaluate.protocols import parse_archs
from pada_fast.experiment import load_run


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--ground-truth", help="default: the run's rank.ground_truth")
    parser.add_argument("--archs", type=int, default=40, help="architectures timed per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--eval-subset", type=int, default=-1, help="-1: the run's data.eval_subset")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    run = load_run(args.checkpoint, dev)
    model, cfg, state = run.model, run.cfg, run.state
    model = to_channels_last(model).eval()
    truth = load_ground_truth(args.ground_truth or cfg.rank.ground_truth, cfg.rank.gt_dataset)
    all_archs = parse_archs(truth, model)
    held = load_heldout(cfg, state, dev, subset=None if args.eval_subset == 0 else args.eval_subset,
                        batch_size=args.batch_size)
    images = sum(int(y.shape[0]) for _, y in held.batches)
    sample = truth.stratified_subset(args.archs * args.rounds, seed=0)
    archs = parse_archs(sample, model)
    rng = np.random.default_rng(0)
    rng.shuffle(archs)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    loop_t, engine_t, setup_t = [], [], []
    equal = True
    diffs, refs, gots = [], [], []
    for r in range(args.rounds):
        chunk = archs[r * args.archs:(r + 1) * args.archs]
        sync()
        t = time.perf_counter()
        ref = [inherited_accuracy(model, a, held.batches) for a in chunk]
        sync()
        loop_t.append((time.perf_counter() - t) / len(chunk))
        t = time.perf_counter()
        engine = RankingEngine(model, held.batches, precision=args.precision)
        sync()
        setup_t.append(time.perf_counter() - t)
        t = time.perf_counter()
        keys = {engine.key(a) for a in chunk}
        got = [engine.accuracy(a) for a in chunk]
        sync()
        # per distinct path: the speed of the evaluation itself; deduplication is counted below
        engine_t.append((time.perf_counter() - t) / len(keys))
        equal &= got == ref
        diffs += [abs(a - b) for a, b in zip(got, ref)]
        refs += ref
        gots += got
        print(f"round {r}: loop {loop_t[-1]:.3f} s/arch, engine {engine_t[-1]:.3f} s/path "
              f"({len(keys)} paths for {len(chunk)} archs), equal={got == ref}", flush=True)
    ratios = [a / b for a, b in zip(loop_t, engine_t)]
    paths = len({model.path_key(a) for a in all_archs})
    full_images = len(build_split(cfg.data, cfg.data.eval_split))     # the whole split, not decoded
    scale = full_images / images
    loop_all = median(loop_t) * len(all_archs) * scale
    engine_all = (median(engine_t) * paths + median(setup_t)) * scale
    lo, hi = spread(ratios) if len(ratios) >= 2 else (ratios[0], ratios[0])
    print(f"\n{model.space_name} C={cfg.space.C} N={cfg.space.N}, {images} held-out images in batches "
          f"of {held.protocol['eval_batch_size']}, {args.threads} thread(s), {args.device}, {args.precision}")
    print(f"| per architecture | loop (s) | engine (s/path) | speed-up per path (median, range) |")
    print(f"| {args.archs} archs x {args.rounds} rounds | {median(loop_t):.3f} | {median(engine_t):.3f} "
          f"| **{median(ratios):.2f}x** ({lo:.2f}-{hi:.2f}) |")
    if args.precision != "fp32":
        from pada_fast.evaluate.metrics import kendall_tau
        print(f"{args.precision} vs fp32 loop: max |difference| {max(diffs):.2f} accuracy points, "
              f"mean {np.mean(diffs):.3f}; Kendall tau between the two {kendall_tau(gots, refs):.4f}")
    print(f"predictions equal: {equal}; engine set-up (shared work) {median(setup_t):.2f} s; "
          f"sharing: {engine.sharing}")
    print(f"whole table ({len(all_archs)} archs = {paths} distinct paths) on {full_images} images: "
          f"loop {loop_all / 3600:.2f} h, engine {engine_all / 3600:.2f} h "
          f"({loop_all / engine_all:.2f}x); engine {paths / engine_all:.2f} paths/s, "
          f"{len(all_archs) / engine_all:.2f} architectures/s")


if __name__ == "__main__":
    main()
