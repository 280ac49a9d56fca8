"""pytest-benchmark versions of bench_ops.py: ``pytest benchmarks/test_bench_ops.py --benchmark-enable``
(add ``--benchmark-compare`` to compare saved runs). Each case runs the fused op and its PyTorch
equivalent in the same group so the report shows them side by side."""
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
from bench_ops import python_loop_norms, unfused_loss  # noqa: E402
from op_workloads import LOSS_SHAPES, loss_inputs, nb201_path_grads, proxyless_path_grads  # noqa: E402

from pada_fast import ops  # noqa: E402

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", LOSS_SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("impl", ["pytorch", "fused"])
def test_loss_forward_backward(benchmark, device, shape, impl):
    benchmark.group = f"loss fwd+bwd {shape[0]}x{shape[1]} {device}"
    logits, target = loss_inputs(*shape, device)
    leaf = logits.clone().requires_grad_(True)
    fn = unfused_loss if impl == "pytorch" else ops.cross_entropy_with_importance

    def step():
        leaf.grad = None
        loss, _ = fn(leaf, target)
        loss.mean().backward()
        _sync(device)

    benchmark(step)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("path", ["nb201", "proxyless"])
@pytest.mark.parametrize("impl", ["python_loop", "fused"])
def test_grad_norm_accumulate(benchmark, device, path, impl):
    benchmark.group = f"grad-norm {path} {device}"
    grads, slots = (nb201_path_grads if path == "nb201" else proxyless_path_grads)(device)
    norm_sum = torch.zeros(max(slots) + 1, device=device)
    count = torch.zeros_like(norm_sum)
    fn = python_loop_norms if impl == "python_loop" else ops.grad_norm_accumulate_

    def step():
        fn(grads, slots, norm_sum, count)
        _sync(device)

    benchmark(step)
