"""BatchNorm over the global batch of a torch.distributed run, for batch-statistics BN on any
device and backend (``space.sync_bn``)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .distributed import _dist, _initialized, world_size


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks whose backward sums the incoming gradients over ranks too (what the
    deprecated ``torch.distributed.nn.functional.all_reduce`` does)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, group=None) -> torch.Tensor:
        ctx.group = group
        out = tensor.clone(memory_format=torch.contiguous_format)
        _dist().all_reduce(out, group=group)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.clone(memory_format=torch.contiguous_format)
        _dist().all_reduce(grad, group=ctx.group)
        return grad, None


class SyncBatchStats(nn.Module):
    """BatchNorm over the global batch for batch-statistics BN (``track_running_stats=False``),
    on any device and backend (torch's ``SyncBatchNorm`` is CUDA-only and keeps running stats).

    In training mode, per-channel sum and sum of squares (accumulated in float64, so
    ``E[x²] − E[x]²`` loses nothing to cancellation at float32 inputs) and the element count are
    summed over ranks with an autograd-aware all-reduce,
    whose backward sums the gradients of the statistics over ranks too: with gradients then
    averaged over ranks, N ranks x batch b give the gradients of one process with batch N*b.
    One all-reduce forward and one backward per module call. In eval mode, or without a process
    group, it normalises over the local batch, like the module it replaced. The affine
    parameters (if any) are the replaced module's own, so state-dict keys do not change."""

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm, group=None):
        super().__init__()
        if bn.track_running_stats:
            raise ValueError("SyncBatchStats replaces batch-statistics BN only "
                             "(track_running_stats=False)")
        self.num_features = bn.num_features
        self.eps = bn.eps
        self.affine = bn.affine
        self.weight = bn.weight if bn.affine else None
        self.bias = bn.bias if bn.affine else None
        self.group = group

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, affine={self.affine}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and _initialized() and world_size() > 1):
            return F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)
        C = self.num_features
        dims = [0] + list(range(2, x.dim()))
        # fp16/bf16 inputs (autocast): statistics and normalisation in float32, as cuDNN's BN does
        xf = x if x.dtype in (torch.float32, torch.float64) else x.float()
        total = torch.cat([xf.sum(dims, dtype=torch.float64), (xf * xf).sum(dims, dtype=torch.float64),
                           torch.full((1,), x.numel() // C, dtype=torch.float64, device=x.device)])
        total = _AllReduceSum.apply(total, self.group)
        count = total[2 * C]
        mean = total[:C] / count
        var = (total[C:2 * C] / count - mean * mean).clamp_min(0.0)
        shape = [1, C] + [1] * (x.dim() - 2)
        invstd = torch.rsqrt(var + self.eps)
        y = (xf - mean.to(xf.dtype).view(shape)) * invstd.to(xf.dtype).view(shape)
        if self.affine:
            y = y * self.weight.view(shape).to(xf.dtype) + self.bias.view(shape).to(xf.dtype)
        return y.to(x.dtype)


def convert_sync_batch_stats(model: nn.Module, group=None) -> int:
    """Replace, in place, every ``nn.BatchNorm{1,2,3}d`` with ``track_running_stats=False`` by a
    :class:`SyncBatchStats`; returns how many were replaced. Running-statistics BN is left alone
    (on GPUs, ``torch.nn.SyncBatchNorm.convert_sync_batchnorm`` serves it)."""
    targets = [(name, module) for name, module in model.named_modules()
               if isinstance(module, nn.modules.batchnorm._BatchNorm)
               and not isinstance(module, nn.SyncBatchNorm) and not module.track_running_stats]
    lookup = dict(model.named_modules())
    for name, bn in targets:
        parent_name, _, child = name.rpartition(".")
        parent = lookup[parent_name] if parent_name else model
        replacement = SyncBatchStats(bn, group)
        replacement.train(bn.training)
        setattr(parent, child, replacement)
    return len(targets)


