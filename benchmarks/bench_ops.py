"""Fused ops vs their PyTorch equivalents; prints a markdown ratio table.

    python benchmarks/bench_ops.py [--device cpu|cuda] [--rounds 30] [--threads N]

Loss: ``pada_fast.ops.cross_entropy_with_importance`` against what a trainer would otherwise run,
``F.cross_entropy(reduction='none')`` followed by ``||softmax - onehot||_2`` under no_grad.
Gradient norms: one ``grad_norm_accumulate_`` call against a Python loop of per-tensor
``.norm()`` calls summed per slot (the straightforward implementation).
"""
from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
from common import ratio_row, time_ab  # noqa: E402
from op_workloads import LOSS_SHAPES, loss_inputs, nb201_path_grads, proxyless_path_grads  # noqa: E402

from pada_fast import ops  # noqa: E402


def unfused_loss(logits, target):
    loss = F.cross_entropy(logits, target, reduction="none")
    with torch.no_grad():
        p = torch.softmax(logits.float(), dim=1)
        importance = torch.linalg.vector_norm(p - F.one_hot(target, logits.shape[1]).float(), dim=1)
    return loss, importance


def loss_rows(device, rounds):
    rows = []
    for batch, classes in LOSS_SHAPES:
        logits, target = loss_inputs(batch, classes, device)
        leaf = logits.clone().requires_grad_(True)

        def ref_fwd():
            with torch.no_grad():
                return unfused_loss(logits, target)

        def new_fwd():
            with torch.no_grad():
                return ops.cross_entropy_with_importance(logits, target)

        def ref_fb():
            leaf.grad = None
            loss, _ = unfused_loss(leaf, target)
            loss.mean().backward()

        def new_fb():
            leaf.grad = None
            loss, _ = ops.cross_entropy_with_importance(leaf, target)
            loss.mean().backward()

        t = time_ab({"ref": ref_fwd, "new": new_fwd}, device, rounds)
        rows.append(ratio_row(f"loss+importance forward {batch}x{classes}", t["ref"], t["new"]))
        t = time_ab({"ref": ref_fb, "new": new_fb}, device, rounds)
        rows.append(ratio_row(f"loss+importance forward+backward {batch}x{classes}", t["ref"], t["new"]))
    return rows


def python_loop_norms(grads, slots, norm_sum, step_count):
    squares = {}
    for g, s in zip(grads, slots):
        squares[s] = squares.get(s, 0.0) + g.norm() ** 2
    flat_sum, flat_count = norm_sum.view(-1), step_count.view(-1)
    for s, sq in squares.items():
        flat_sum[s] += sq.sqrt()
        flat_count[s] += 1


def grad_norm_rows(device, rounds):
    rows = []
    for name, make in (("NB201 C=16 N=5 path", nb201_path_grads), ("ProxylessNAS path", proxyless_path_grads)):
        grads, slots = make(device)
        numel = sum(g.numel() for g in grads)
        size = max(slots) + 1
        acc = [torch.zeros(size, device=device) for _ in range(4)]
        t = time_ab({"ref": lambda: python_loop_norms(grads, slots, acc[0], acc[1]),
                     "new": lambda: ops.grad_norm_accumulate_(grads, slots, acc[2], acc[3])}, device, rounds)
        rows.append(ratio_row(f"grad-norm accumulate, {name} ({len(grads)} tensors, {numel / 1e6:.2f}M)",
                              t["ref"], t["new"]))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"device {args.device}, torch threads {torch.get_num_threads()}, compiled library "
          f"{'loaded' if ops.COMPILED else 'NOT loaded (reference ops)'}")
    print("| op, shape | PyTorch (ms) | pada_fast (ms) | speed-up (median) | IQR |")
    print("|---|---|---|---|---|")
    for row in loss_rows(args.device, args.rounds) + grad_norm_rows(args.device, args.rounds):
        print(row, flush=True)


if __name__ == "__main__":
    main()
