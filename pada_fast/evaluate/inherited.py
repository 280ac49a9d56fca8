"""Accuracy of sub-models with weights inherited from a trained supernet.

The held-out images are decoded once into fixed batches, so every architecture is judged on
exactly the same inputs in the same batches (batch-statistics BatchNorm depends on the batching).
The batches follow one seeded, class-mixed order (:func:`~pada_fast.data.subset.class_mixed_order`),
never the stored order: image folders are stored class by class.
"""
from __future__ import annotations

import hashlib
from typing import Iterable, Sequence

import numpy as np
import torch

from pada_fast.data.loader import build_loader
from pada_fast.data.subset import class_mixed_order
from pada_fast.spaces import recalibrate_bn


def evaluation_order(dataset, seed: int = 0, limit: int | None = None) -> np.ndarray:
    """Dataset indices in the order they are evaluated: the first ``limit`` (default all) of the
    class-mixed order drawn with ``seed``."""
    order = class_mixed_order(dataset.targets, seed)
    return order if limit is None else order[:limit]


def order_digest(order) -> str:
    """SHA-1 of the index order (int64 little-endian): two rankings used the same images in the
    same batches exactly when their digests and batch sizes agree."""
    return hashlib.sha1(np.asarray(order, dtype="<i8").tobytes()).hexdigest()


def fixed_batches(dataset, batch_size: int, device: torch.device, limit: int | None = None,
                  seed: int = 0, num_workers: int = 0, channels_last: bool = False,
                  order=None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The images at ``order`` (default :func:`evaluation_order` (dataset, seed, limit)) as device
    batches of ``batch_size`` (channels-last when the model evaluating them is: see
    :func:`to_channels_last`)."""
    if order is None:
        order = evaluation_order(dataset, seed, limit)
    loader = build_loader(dataset, torch.as_tensor(np.asarray(order, dtype=np.int64)), batch_size,
                          num_workers=num_workers, seed=seed)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return [(x.to(device).contiguous(memory_format=fmt), y.to(device)) for x, y, _ in loader]


def to_channels_last(model):
    """Channels-last weights: oneDNN and cuDNN convolutions run faster on NHWC (about 1.4x for
    the small NAS-Bench-201 cells on a CPU), and evaluating many sub-models is convolution-bound."""
    return model.to(memory_format=torch.channels_last)


@torch.no_grad()
def accuracy(model, arch: Sequence[int] | None, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Top-1 accuracy in percent; ``arch=None`` for a stand-alone network."""
    correct = torch.zeros((), dtype=torch.long)
    total = 0
    for x, y in batches:
        logits = model(x) if arch is None else model(x, arch)
        correct += (logits.argmax(1) == y).sum().cpu()
        total += y.shape[0]
    return 100.0 * correct.item() / max(total, 1)


def inherited_accuracy(supernet, arch: Sequence[int], eval_batches, calib_batches=None) -> float:
    """Accuracy of ``arch`` with supernet weights; running-statistics BN is recalibrated first on
    ``calib_batches`` when given (batch-statistics BN needs nothing)."""
    if calib_batches:
        recalibrate_bn(supernet, arch, calib_batches)
    supernet.eval()
    return accuracy(supernet, arch, eval_batches)
