"""The training data pipeline: the training split and its recipe, sharding over ranks, and the
backend that serves an epoch's index stream as batches.

``data.augment`` is parsed once into a :class:`~.transforms.Recipe` (its canonical steps and
their one-line description, which checkpoints and ground-truth tables record). Each backend of
:data:`DATA_BACKENDS` consumes the same split, recipe and shard:

- ``torch``: a ``DataLoader`` over the stream (host decode and augmentation; the reference);
- ``dali``: NVIDIA DALI's pipeline (built once, handed a new stream each epoch), which runs CIFAR's
  ``crop:4+flip``, ImageNet's recipe and ``none``;
- ``device``: the training set decoded once and kept on the training device, augmented there with
  the torch loader's own per-position draws (:mod:`.device_data`).

Sharding (``torchrun``): strided shards of the global stream (``loader.shard_positions``), so step
t of all ranks together is global batch t, cut to the steps a single process would run.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from pada_fast.errors import ConfigError
from pada_fast.log import get_logger
from pada_fast.registry import DATA_BACKENDS

from .dali_loader import build_dali_loader
from .datasets import build_split, recipe_of
from .device_data import DeviceResidentDataset
from .loader import build_loader, shard_positions

_log = get_logger(__name__)


@dataclass(frozen=True)
class Shard:
    """This process's part of every global batch."""
    rank: int = 0
    world_size: int = 1
    local_batch: int = 1
    drop_last: bool = True
    steps_per_epoch: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def take(self, stream: torch.Tensor, start_step: int = 0):
        """This rank's part of the global ``stream`` from step ``start_step`` on, and the global
        positions it holds (None: the whole stream, in order). Resuming at step s skips the first s
        batches; the positions (which seed augmentation) keep their values, so the remaining
        batches are exactly those of the uninterrupted run."""
        if not self.distributed:
            if not start_step:
                return stream, None
            positions = torch.arange(len(stream))
        else:
            positions = shard_positions(len(stream), self.rank, self.world_size)
            if self.drop_last:
                positions = positions[: self.steps_per_epoch * self.local_batch]
        positions = positions[start_step * self.local_batch:]
        return stream[positions % len(stream)], positions


class TrainingData:
    """The training split of a ``DataConfig``, its recipe, this process's shard and the backend
    that turns each epoch's stream into batches ``(images, labels, dataset indices)``."""

    def __init__(self, data_cfg, device: torch.device, rank: int = 0, world_size: int = 1, seed: int = 0):
        self.cfg = data_cfg
        self.device = device
        self.seed = seed
        self.train_set = build_split(data_cfg, "train", augment=data_cfg.augment, subset=data_cfg.train_subset)
        self.recipe = recipe_of(data_cfg, self.train_set)
        n = len(self.train_set)
        drop_last = n >= data_cfg.batch_size    # equal batches keep batch-statistics BN comparable
        self.shard = Shard(rank, world_size, data_cfg.batch_size // world_size, drop_last,
                           n // data_cfg.batch_size if drop_last else 1)
        self.backend = DATA_BACKENDS.get(data_cfg.backend)(self)

    def epoch_batches(self, stream: torch.Tensor, epoch: int, start_step: int = 0):
        """The epoch's batches in stream order from step ``start_step``."""
        stream, positions = self.shard.take(stream, start_step)
        return self.backend.batches(stream, epoch, positions)


@DATA_BACKENDS.register("torch")
class TorchBackend:
    def __init__(self, data: TrainingData):
        self.data = data

    def batches(self, stream, epoch, positions):
        d, shard = self.data, self.data.shard
        return build_loader(d.train_set, stream, shard.local_batch, num_workers=d.cfg.num_workers,
                            drop_last=shard.drop_last, seed=d.seed, epoch=epoch,
                            pin_memory=d.device.type == "cuda", positions=positions)


@DATA_BACKENDS.register("device")
class DeviceBackend:
    def __init__(self, data: TrainingData):
        self.data = data
        self.resident = None

    def batches(self, stream, epoch, positions):
        d, shard = self.data, self.data.shard
        if self.resident is None:       # decoded at the first epoch, kept for the run
            self.resident = DeviceResidentDataset(d.train_set, d.device, num_workers=d.cfg.num_workers)
            if shard.rank == 0:
                _log.info(f"data.backend=device: {len(self.resident)} training images on {d.device} "
                          f"({self.resident.nbytes / 2**20:.1f} MiB)")
        return self.resident.batches(stream, shard.local_batch, drop_last=shard.drop_last, seed=d.seed,
                                     epoch=epoch, positions=positions)


# The recipes DALI's pipeline runs, by the recipe's description.
DALI_MODES = {"crop:4+flip": "cifar", "imagenet": "imagenet", "none": "none"}


def dali_mode(recipe, augment) -> str:
    """DALI's pipeline mode for ``recipe``; any other recipe is an error naming the torch backend,
    which runs them all."""
    if recipe.text not in DALI_MODES:
        raise ConfigError(f"data.backend=dali runs the recipes {', '.join(DALI_MODES)}, not data.augment="
                          f"{augment!r} ({recipe.text}); use data.backend=torch for it")
    return DALI_MODES[recipe.text]


@DATA_BACKENDS.register("dali")
class DaliBackend:
    def __init__(self, data: TrainingData):
        self.data = data
        self.mode = dali_mode(data.recipe, data.cfg.augment)     # checked before any epoch
        self.loader = None

    def batches(self, stream, epoch, positions):
        d, shard = self.data, self.data.shard
        if self.loader is None:
            gpu = d.device.type == "cuda"
            self.loader = build_dali_loader(
                d.train_set, stream, shard.local_batch, num_workers=max(d.cfg.num_workers, 1),
                drop_last=shard.drop_last, seed=d.seed, epoch=epoch, positions=positions,
                device="gpu" if gpu else "cpu", augment=self.mode,
                **({"device_id": d.device.index or 0} if gpu else {}))
        else:
            self.loader.set_epoch(stream, epoch, positions=positions)
        return self.loader


__all__ = ["DALI_MODES", "DATA_BACKENDS", "Shard", "TrainingData", "dali_mode"]
