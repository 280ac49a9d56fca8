"""Plain-PyTorch versions of every pada_fast op: the test oracle and the fallback.

Each function here has the same contract as the compiled op of the same name in
``torch.ops.pada_fast`` (see ``csrc/ops.cpp`` for the schemas).
"""
from __future__ import annotations

from typing import Sequence

import torch


def _accumulation_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def check_cross_entropy_inputs(logits: torch.Tensor, target: torch.Tensor, label_smoothing: float) -> None:
    """The input checks every implementation of the loss op makes, with errors that say how to fix them."""
    if logits.dim() != 2:
        raise ValueError(f"logits must be 2-D [batch, classes], got shape {tuple(logits.shape)}; "
                         "flatten extra dimensions first")
    if logits.dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        raise TypeError(f"logits must be float16, bfloat16, float32 or float64, got {logits.dtype}")
    if target.dtype != torch.int64:
        raise TypeError(f"target must hold int64 class indices, got {target.dtype}; use target.long()")
    if target.dim() != 1 or target.shape[0] != logits.shape[0]:
        raise ValueError(f"target must be 1-D with one class index per row of logits: logits "
                         f"{tuple(logits.shape)}, target {tuple(target.shape)}")
    if logits.shape[1] < 1 and logits.shape[0] > 0:
        raise ValueError("logits must have at least one class")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must lie in [0, 1], got {label_smoothing}")


def smoothed_target(target: torch.Tensor, num_classes: int, label_smoothing: float,
                    dtype: torch.dtype) -> torch.Tensor:
    onehot = torch.nn.functional.one_hot(target, num_classes).to(dtype)
    return onehot * (1.0 - label_smoothing) + label_smoothing / num_classes


def cross_entropy_with_importance(logits: torch.Tensor, target: torch.Tensor,
                                  label_smoothing: float = 0.0):
    """Per-sample cross-entropy (with label smoothing), DA importance and log-sum-exp.

    Returns ``(loss, importance, lse)``, each of shape ``[batch]`` in float32 (float64 for
    float64 logits). ``importance[i] = ||softmax(z_i) - t_i||_2`` with ``t_i`` the smoothed
    target; it is the bound of PA&DA's Eq. 13 and is not differentiated.
    """
    check_cross_entropy_inputs(logits, target, label_smoothing)
    acc = _accumulation_dtype(logits)
    if logits.shape[0] == 0:
        empty = logits.new_empty((0,), dtype=acc)
        return empty, empty.clone(), empty.clone()
    c = logits.shape[1]
    bad = ((target < 0) | (target >= c)).nonzero()
    if bad.numel():
        i = int(bad[0, 0])
        raise IndexError(f"target[{i}] = {int(target[i])} is not a class index in [0, {c})")
    z = logits.to(acc)
    lse = torch.logsumexp(z, dim=1)
    t = smoothed_target(target, c, label_smoothing, acc)
    loss = lse - (t * z).sum(dim=1)
    probs = torch.exp(z - lse[:, None])
    importance = torch.linalg.vector_norm(probs - t, dim=1)
    return loss, importance, lse


def cross_entropy_with_importance_backward(grad_loss: torch.Tensor, logits: torch.Tensor,
                                           target: torch.Tensor, lse: torch.Tensor,
                                           label_smoothing: float = 0.0) -> torch.Tensor:
    """``grad_logits = (softmax(z) - t) * grad_loss[:, None]``, in the dtype of ``logits``."""
    acc = _accumulation_dtype(logits)
    if logits.shape[0] == 0:
        return torch.zeros_like(logits)
    z = logits.to(acc)
    t = smoothed_target(target, logits.shape[1], label_smoothing, acc)
    probs = torch.exp(z - lse.to(acc)[:, None])
    return ((probs - t) * grad_loss.to(acc)[:, None]).to(logits.dtype)


def grad_norm_accumulate_(grads: Sequence[torch.Tensor | None], slots: Sequence[int],
                          norm_sum: torch.Tensor, step_count: torch.Tensor) -> None:
    """Add one step's per-operation gradient norms into device-resident accumulators.

    ``grads[i]`` belongs to the flat slot ``slots[i]`` (``layer * candidates + candidate``) of the
    ``[layers, candidates]`` buffers ``norm_sum`` and ``step_count`` (float32, contiguous); a
    ``None`` gradient contributes zero. Tensors
    sharing a slot form one operation: its norm is ``sqrt(sum_i ||grads[i]||^2)``. Every slot named
    at least once gets ``norm_sum += norm`` and ``step_count += 1``.
    """
    if len(grads) != len(slots):
        raise ValueError(f"grads and slots must have the same length, got {len(grads)} and {len(slots)}")
    flat_sum = norm_sum.view(-1)
    flat_count = step_count.view(-1)
    n = flat_sum.numel()
    for s in slots:
        if not 0 <= s < n:
            raise ValueError(f"slot {s} is outside the accumulator of {n} entries "
                             "(slot = layer * candidates + candidate)")
    squares = torch.zeros(n, dtype=torch.float64 if norm_sum.dtype == torch.float64 else torch.float32,
                          device=norm_sum.device)
    seen = torch.zeros(n, dtype=torch.bool, device=norm_sum.device)
    for g, s in zip(grads, slots):
        seen[s] = True
        if g is not None:  # a parameter the step did not reach still counts its operation as sampled
            squares[s] += g.detach().to(squares.dtype).pow(2).sum()
    flat_sum.add_(torch.where(seen, squares.sqrt(), torch.zeros_like(squares)).to(flat_sum.dtype))
    flat_count.add_(seen.to(flat_count.dtype))


def grad_norm_finalize(norm_sum: torch.Tensor, step_count: torch.Tensor) -> torch.Tensor:
    """Mean per-step gradient norm of each (layer, candidate); zero where it was never sampled."""
    return torch.where(step_count > 0, norm_sum / step_count.clamp_min(1), torch.zeros_like(norm_sum))
