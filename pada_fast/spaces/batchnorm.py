"""Per-architecture BatchNorm recalibration for supernets that keep running statistics.

With shared weights, running statistics accumulated during supernet training average over many
sampled paths and do not fit any single one; before evaluating an architecture, reset them and
recompute them on a few training batches run through that architecture alone (as SPOS does).
"""
from __future__ import annotations

from typing import Iterable, Sequence

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def _inputs(batch) -> torch.Tensor:
    # Loaders yield (images, labels[, indices]) tuples or dicts; only the images matter here.
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0]
    if isinstance(batch, dict):
        for key in ("images", "image", "inputs", "data"):
            if key in batch:
                return batch[key]
    raise TypeError("recalibrate_bn needs batches of input tensors, or tuples/lists whose first "
                    "element is the input tensor, or dicts with an 'images' key; got "
                    f"{type(batch).__name__}")


@torch.no_grad()
def recalibrate_bn(model: nn.Module, arch: Sequence[int] | None,
                   batches: Iterable) -> int:
    """Reset every running-statistics BatchNorm of ``model`` and recompute the statistics as the
    plain average over ``batches`` run through ``arch`` (``model(x, arch)``; ``arch=None`` calls
    ``model(x)``, for stand-alone networks). Returns the number of batches used; 0 when the model
    has no running statistics (batch-statistics BN needs no recalibration). The model's train/eval
    mode and the BN momenta are restored afterwards.
    """
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    if not norms:
        return 0
    was_training = model.training
    momenta = [m.momentum for m in norms]
    device = next(model.parameters()).device
    count = 0
    try:
        for m in norms:
            m.reset_running_stats()
            m.momentum = None   # cumulative average: every batch weighs the same
        model.train()
        for batch in batches:
            x = _inputs(batch).to(device, non_blocking=True)
            model(x) if arch is None else model(x, arch)
            count += 1
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.train(was_training)
    if count == 0:
        raise ValueError("recalibrate_bn got no batches: pass an iterable of a few training "
                         "batches (its running statistics have been reset)")
    return count
