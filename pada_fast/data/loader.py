"""torch backend of the data pipeline: a DataLoader that serves an epoch's index stream in order.

The data sampler (uniform shuffle for SPOS, N weighted draws with replacement for DA) decides the
stream; this module only reads it. Batches are ``(images, labels, indices)`` where ``indices`` are
the dataset indices, which DA needs to file each sample's importance. Position ``p`` of the stream
always lands in batch ``p // batch_size`` at row ``p % batch_size``.

Augmentation randomness of the sample at stream position ``p`` comes from a generator seeded with
``sample_seed(seed, epoch, p)``, so batches are identical whatever ``num_workers`` is, and the
same under distributed sharding (shards keep their global positions, see :func:`shard_positions`).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

_MASK64 = (1 << 64) - 1


def _mix64(value: int) -> int:
    # splitmix64 finaliser: nearby inputs (consecutive positions) give unrelated outputs.
    value = (value + 0x9E3779B97F4A7C15) & _MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK64
    return value ^ (value >> 31)


def sample_seed(seed: int, epoch: int, position: int) -> int:
    """Seed of the augmentation generator for one stream position (63 bits, torch accepts it)."""
    return _mix64(_mix64(_mix64(seed & _MASK64) ^ (epoch & _MASK64)) ^ (position & _MASK64)) >> 1


def as_stream(stream, dataset_size: int) -> np.ndarray:
    """The stream as a 1-D int64 numpy array, checked against the dataset's size."""
    if isinstance(stream, torch.Tensor):
        if stream.is_floating_point() or stream.is_complex() or stream.dtype == torch.bool:
            raise TypeError(f"the index stream must hold integer dataset indices, got {stream.dtype}")
        array = stream.detach().cpu().numpy()
    else:
        array = np.asarray(stream)
        if array.size and not np.issubdtype(array.dtype, np.integer):
            raise TypeError(f"the index stream must hold integer dataset indices, got {array.dtype}")
    if array.ndim != 1:
        raise ValueError(f"the index stream must be 1-D, got shape {tuple(array.shape)}")
    if array.size == 0:
        raise ValueError("the index stream is empty: the data sampler produced no indices for this "
                         "epoch (check the dataset size and the sampler's num_samples)")
    array = array.astype(np.int64, copy=False)
    bad = np.flatnonzero((array < 0) | (array >= dataset_size))
    if bad.size:
        first = int(bad[0])
        raise IndexError(f"index stream position {first} holds {int(array[first])}, outside the "
                         f"dataset's 0..{dataset_size - 1} ({bad.size} such position(s)); the "
                         "sampler was built for a different dataset size")
    return array


class IndexStreamDataset(Dataset):
    """Item ``p`` is ``(image, label, dataset_index)`` for stream position ``p``.

    ``positions`` (default ``0..len-1``) are the positions used to seed augmentation; a shard passes
    its global positions so every rank augments a sample exactly as a single process would.
    """

    def __init__(self, dataset, stream, seed: int = 0, epoch: int = 0,
                 positions: Optional[torch.Tensor] = None):
        self.dataset = dataset
        self.stream = as_stream(stream, len(dataset))
        if positions is None:
            self.positions = np.arange(len(self.stream), dtype=np.int64)
        else:
            self.positions = np.asarray(positions, dtype=np.int64).reshape(-1)
            if len(self.positions) != len(self.stream):
                raise ValueError(f"positions has {len(self.positions)} entries but the stream has "
                                 f"{len(self.stream)}; pass one position per stream entry")
        self.seed = seed
        self.epoch = epoch
        self._generator = None

    def __len__(self) -> int:
        return len(self.stream)

    def __getitem__(self, position: int):
        index = int(self.stream[position])
        if self._generator is None:
            # Created lazily so each worker process makes its own (generators do not pickle).
            self._generator = torch.Generator()
        generator = self._generator
        generator.manual_seed(sample_seed(self.seed, self.epoch, int(self.positions[position])))
        if hasattr(self.dataset, "sample"):
            image, label = self.dataset.sample(index, generator)
        else:
            # A plain map-style dataset draws from the global RNG: seed it, but in a fork so the
            # caller's RNG (path sampling in the main process) is not disturbed.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(generator.initial_seed())
                image, label = self.dataset[index]
        return image, label, index

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_generator"] = None
        return state


def check_batching(length: int, batch_size: int, drop_last: bool) -> None:
    """A stream of ``length`` indices must give at least one batch of ``batch_size``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if drop_last and length < batch_size:
        raise ValueError(f"drop_last=True with a stream of {length} indices and batch_size "
                         f"{batch_size} gives no batch at all; lower batch_size or keep the last "
                         "batch")


def build_loader(dataset, stream, batch_size: int, num_workers: int = 0, drop_last: bool = False,
                 seed: int = 0, epoch: int = 0, pin_memory: bool = False,
                 positions: Optional[torch.Tensor] = None,
                 prefetch_factor: Optional[int] = None) -> DataLoader:
    """A DataLoader yielding ``(images, labels, indices)`` batches in the stream's order.

    ``stream``: dataset indices (LongTensor, numpy or list; repeats allowed). It is checked now:
    an empty stream or an index outside the dataset raises at once, not in a worker mid-epoch.
    ``pin_memory`` is ignored without CUDA (there is nothing to pin for).
    """
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    check_batching(len(stream), batch_size, drop_last)
    items = IndexStreamDataset(dataset, stream, seed=seed, epoch=epoch, positions=positions)
    extra = {}
    if num_workers > 0 and prefetch_factor is not None:
        extra["prefetch_factor"] = prefetch_factor
    # The private generator keeps the DataLoader from drawing its worker base seed out of torch's
    # global RNG, which would shift the trainer's path sampling depending on the loader.
    return DataLoader(items, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      drop_last=drop_last, pin_memory=pin_memory and torch.cuda.is_available(),
                      generator=torch.Generator().manual_seed(seed), **extra)


def shard_positions(length: int, rank: int, world_size: int) -> torch.Tensor:
    """Global stream positions that ``rank`` serves: ``rank, rank + world, rank + 2*world, ...``.

    The stream is first padded, by wrapping around to its start, to a multiple of ``world_size``,
    so every rank gets ``ceil(length / world_size)`` positions and runs the same number of steps.
    Strided (not contiguous) shards are chosen because then, with per-rank batch b, step t of every
    rank together covers exactly positions ``[t*b*world, (t+1)*b*world)``: the global batch t a
    single process would draw with batch ``b*world``.
    Positions ``>= length`` are padding; they serve stream entry ``position % length``.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    if length < 1:
        raise ValueError("cannot shard an empty stream")
    padded = -(-length // world_size) * world_size
    return torch.arange(rank, padded, world_size, dtype=torch.int64)


def shard_stream(stream: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """The dataset indices ``rank`` serves: ``padded_stream[rank::world_size]`` where the stream is
    padded by wrapping to a multiple of ``world_size`` (see :func:`shard_positions`). Pass
    ``positions=shard_positions(len(stream), rank, world_size)`` to :func:`build_loader` as well,
    so augmentation matches single-process training."""
    stream = torch.as_tensor(stream, dtype=torch.int64)
    if stream.ndim != 1:
        raise ValueError(f"the index stream must be 1-D, got shape {tuple(stream.shape)}")
    positions = shard_positions(len(stream), rank, world_size)
    return stream[positions % len(stream)]
