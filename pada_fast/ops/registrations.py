"""Python-side registrations of the compiled ``pada_fast`` ops (imported once the library has
loaded): fake (meta) kernels, which let ``torch.compile``, ``torch.export`` and
``torch.library.opcheck`` trace the ops without running them, and the autograd formula of the
fused cross-entropy. Fake kernels check their inputs as the C++ kernels do (``torch._check``), so
a traced program fails where an eager one would.
"""
from __future__ import annotations

import torch


@torch.library.register_fake("pada_fast::cross_entropy_with_importance")
def _ce_fake(logits, target, label_smoothing):
    torch._check(logits.dim() == 2, lambda: f"logits must be 2-D [batch, classes], got {logits.dim()}-D")
    torch._check(logits.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64),
                 lambda: f"logits must be float16, bfloat16, float32 or float64, got {logits.dtype}")
    torch._check(target.dtype == torch.int64, lambda: f"target must hold int64 class indices, got {target.dtype}")
    torch._check(target.dim() == 1 and target.shape[0] == logits.shape[0],
                 lambda: f"target must be 1-D with one class index per row of logits, got {tuple(target.shape)}")
    torch._check(0.0 <= label_smoothing <= 1.0, lambda: f"label_smoothing must lie in [0, 1], got {label_smoothing}")
    acc = torch.float64 if logits.dtype == torch.float64 else torch.float32
    out = logits.new_empty((logits.shape[0],), dtype=acc)
    return out, torch.empty_like(out), torch.empty_like(out)


@torch.library.register_fake("pada_fast::cross_entropy_with_importance_backward")
def _ce_backward_fake(grad_loss, logits, target, lse, label_smoothing):
    torch._check(logits.dim() == 2, lambda: f"logits must be 2-D [batch, classes], got {logits.dim()}-D")
    torch._check(grad_loss.shape == (logits.shape[0],) and lse.shape == (logits.shape[0],),
                 lambda: "grad_loss and lse must be [batch] like the forward's outputs")
    return torch.empty_like(logits)


@torch.library.register_fake("pada_fast::grad_norm_accumulate_")
def _gn_fake(grads, slots, norm_sum, step_count):
    torch._check(len(grads) == len(slots), lambda: f"{len(grads)} gradients but {len(slots)} slots")
    torch._check(norm_sum.shape == step_count.shape, lambda: "norm_sum and step_count must have the same shape")
    torch._check(norm_sum.dtype == torch.float32 and step_count.dtype == torch.float32,
                 lambda: "norm_sum and step_count must be float32")
    return None


def _ce_setup_context(ctx, inputs, output):
    logits, target, label_smoothing = inputs
    ctx.save_for_backward(logits, target, output[2])
    ctx.label_smoothing = label_smoothing
    ctx.mark_non_differentiable(output[1], output[2])


def _ce_backward(ctx, grad_loss, grad_importance, grad_lse):
    logits, target, lse = ctx.saved_tensors
    if grad_loss is None:
        return None, None, None
    grad = torch.ops.pada_fast.cross_entropy_with_importance_backward(
        grad_loss, logits, target, lse, ctx.label_smoothing)
    return grad, None, None


torch.library.register_autograd("pada_fast::cross_entropy_with_importance", _ce_backward,
                                setup_context=_ce_setup_context)
