"""pada_fast's fused ops: thin wrappers over ``torch.ops.pada_fast`` with their fake (meta) and
autograd registrations, falling back to :mod:`pada_fast.ops.reference` when the compiled library
is not available.
"""
from __future__ import annotations

from typing import Sequence

import torch

from . import reference
from ._library import STATUS, load

load()
COMPILED = STATUS.loaded

if COMPILED:
    from . import registrations  # noqa: F401  (fake kernels and autograd of the compiled ops)


class _ReferenceCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, target, label_smoothing):
        loss, importance, lse = reference.cross_entropy_with_importance(logits, target, label_smoothing)
        ctx.save_for_backward(logits, target, lse)
        ctx.label_smoothing = label_smoothing
        ctx.mark_non_differentiable(importance)
        return loss, importance

    @staticmethod
    def backward(ctx, grad_loss, grad_importance):
        logits, target, lse = ctx.saved_tensors
        grad = reference.cross_entropy_with_importance_backward(grad_loss, logits, target, lse,
                                                                ctx.label_smoothing)
        return grad, None, None


def cross_entropy_with_importance(logits: torch.Tensor, target: torch.Tensor,
                                  label_smoothing: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample cross-entropy and PA&DA data importance ``||softmax - target||_2`` in one pass.

    ``logits`` [batch, classes] (fp16/bf16/fp32/fp64, any strides), ``target`` [batch] int64.
    Returns ``(loss, importance)``, each [batch], float32 (float64 for float64 logits). Only
    ``loss`` carries gradients. On CUDA an out-of-range target yields NaN for that row instead
    of an error (checking would synchronise the host with the device).
    """
    if COMPILED:
        loss, importance, _ = torch.ops.pada_fast.cross_entropy_with_importance(
            logits, target, float(label_smoothing))
        return loss, importance
    return _ReferenceCrossEntropy.apply(logits, target, float(label_smoothing))


def grad_norm_accumulate_(grads: Sequence[torch.Tensor], slots: Sequence[int],
                          norm_sum: torch.Tensor, step_count: torch.Tensor) -> None:
    """One step of per-operation gradient-norm accumulation; see
    :func:`pada_fast.ops.reference.grad_norm_accumulate_` for the exact contract."""
    if COMPILED:
        torch.ops.pada_fast.grad_norm_accumulate_(list(grads), list(slots), norm_sum, step_count)
    else:
        reference.grad_norm_accumulate_(grads, slots, norm_sum, step_count)


grad_norm_finalize = reference.grad_norm_finalize

__all__ = ["COMPILED", "STATUS", "cross_entropy_with_importance", "grad_norm_accumulate_",
           "grad_norm_finalize", "reference"]
