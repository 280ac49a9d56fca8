"""``data.backend: device``: the training images decoded once and kept on the training device.

For data that fits in the device's memory (CIFAR-10's 50,000 training images are 150 MB as
uint8), decoding and augmenting every image every epoch on the host is the slowest part of a GPU
step. :class:`DeviceResidentDataset` decodes each selected image once (on ``num_workers``
processes), stores the set as one uint8 ``[N, C, H, W]`` tensor on the device, and builds each
batch there: a gather of the batch's dataset indices, then the dataset's own training transform
applied to the whole batch at once (zero-padded random crop, horizontal flip, scaling to [0, 1],
normalisation).

The augmentation is the torch loader's, number for number: the sample at stream position ``p``
draws its crop window and flip from a generator seeded with
:func:`~pada_fast.data.loader.sample_seed` ``(seed, epoch, p)``, through the same transform
objects (their ``draw`` methods), so a batch equals the torch loader's batch bitwise on the CPU
(``tests/test_device_data.py``). Only those draws (a few numbers per image) are made on the host,
then copied to the device without waiting for it.

It runs the transforms :class:`~pada_fast.data.transforms.RandomCrop`,
:class:`~pada_fast.data.transforms.RandomHorizontalFlip`, ``ToFloat`` and ``Normalize`` (every
``data.augment`` recipe of the 32x32 and 28x28 datasets); images of one size only. Anything else
is an error naming the torch backend.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from pada_fast.config import ConfigError
from pada_fast.data import transforms as T
from pada_fast.data.loader import IndexStreamDataset, check_batching, sample_seed

_STEPS = (T.RandomCrop, T.RandomHorizontalFlip, T.ToFloat, T.Normalize)


def device_steps(transform) -> list:
    """The dataset's training transform as the list of steps this backend applies to a batch; an
    error naming the torch backend when it holds a step the device cannot run."""
    if transform is None:               # the loaders' default: scale to [0, 1] only
        return [T.ToFloat()]
    steps = list(transform.steps) if isinstance(transform, T.Compose) else [transform]
    unknown = [s for s in steps if not isinstance(s, _STEPS)]
    if unknown:
        raise ConfigError(f"data.backend=device runs pad-and-crop, flip and normalisation, not {unknown[0]!r}; "
                          "use data.backend=torch for this recipe")
    if not any(isinstance(s, T.ToFloat) for s in steps):
        raise ConfigError("data.backend=device needs a transform that converts to float (ToFloat); "
                          "use data.backend=torch for this transform")
    return steps


class _StoredImages(Dataset):
    """Item ``i``: the dataset's stored uint8 image ``i`` (no transform) and its label."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        return self.dataset.read_image(index), int(self.dataset.targets[index])


def decode_all(dataset, num_workers: int = 0, batch_size: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """Every image of ``dataset`` decoded once: ``(uint8 [N, C, H, W], int64 [N])`` on the host."""
    images, labels = [], []
    loader = DataLoader(_StoredImages(dataset), batch_size=batch_size, num_workers=num_workers,
                        collate_fn=_stack_same_size)
    for chunk, chunk_labels in loader:
        images.append(chunk)
        labels.append(chunk_labels)
    return torch.cat(images), torch.cat(labels)


def _stack_same_size(items):
    shapes = {tuple(image.shape) for image, _ in items}
    if len(shapes) > 1:
        raise ConfigError(f"data.backend=device keeps images of one size, this dataset holds {sorted(shapes)[:3]}; "
                          "use data.backend=torch")
    return torch.stack([image for image, _ in items]), torch.tensor([label for _, label in items])


class DeviceResidentDataset:
    """``dataset``'s images on ``device`` (uint8), augmented there per batch (see the module doc)."""

    def __init__(self, dataset, device: torch.device | str, num_workers: int = 0):
        self.device = torch.device(device)
        self.steps = device_steps(dataset.transform)
        images, labels = decode_all(dataset, num_workers)
        self.images = images.to(self.device)
        self.labels = labels.to(self.device)
        self.random_steps = [s for s in self.steps if isinstance(s, (T.RandomCrop, T.RandomHorizontalFlip))]
        self._generator = torch.Generator()
        normalize = [s for s in self.steps if isinstance(s, T.Normalize)]
        self._norm = [(s.mean.to(self.device), s.std.to(self.device)) for s in normalize]

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def nbytes(self) -> int:
        return self.images.numel() * self.images.element_size()

    def batches(self, stream, batch_size: int, drop_last: bool = False, seed: int = 0, epoch: int = 0,
                positions: Optional[torch.Tensor] = None) -> "DeviceBatches":
        """The epoch's ``(images, labels, indices)`` batches in stream order, all on the device, as
        :func:`~pada_fast.data.loader.build_loader` serves them (same ``positions`` meaning)."""
        return DeviceBatches(self, stream, batch_size, drop_last, seed, epoch, positions)

    def draw(self, positions: Sequence[int], seed: int, epoch: int, height: int, width: int) -> list[list]:
        """Each random step's parameters for the samples at ``positions``, drawn on the host from the
        per-position generators in the order the torch loader draws them."""
        params: list[list] = [[] for _ in self.random_steps]
        g = self._generator
        for position in positions:
            g.manual_seed(sample_seed(seed, epoch, int(position)))
            h, w = height, width
            for k, step in enumerate(self.random_steps):
                params[k].append(step.draw(g, h, w))
                if isinstance(step, T.RandomCrop):
                    h = w = step.size
        return params

    def augment(self, images: torch.Tensor, params: list[list]) -> torch.Tensor:
        """The training transform on a uint8 batch ``[B, C, H, W]``, with ``params`` from :meth:`draw`."""
        pinned = self.device.type == "cuda"
        x = images
        k = 0
        norm = iter(self._norm)
        for step in self.steps:
            if isinstance(step, T.RandomCrop):
                window = _to_device(params[k], self.device, pinned)          # [B, 2] top, left
                k += 1
                if step.padding:
                    x = F.pad(x, (step.padding,) * 4)
                span = torch.arange(step.size, device=self.device)
                rows = (window[:, 0:1] + span)[:, None, :, None]
                cols = (window[:, 1:2] + span)[:, None, None, :]
                batch = torch.arange(x.shape[0], device=self.device)[:, None, None, None]
                channel = torch.arange(x.shape[1], device=self.device)[None, :, None, None]
                x = x[batch, channel, rows, cols]
            elif isinstance(step, T.RandomHorizontalFlip):
                flip = _to_device(params[k], self.device, pinned).bool()
                k += 1
                x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            elif isinstance(step, T.ToFloat):
                x = x.to(torch.float32).div_(255.0)
            else:                               # Normalize
                mean, std = next(norm)
                x = (x - mean) / std
        return x


def _to_device(values: list, device: torch.device, pinned: bool) -> torch.Tensor:
    host = torch.tensor(values, dtype=torch.int64)
    if pinned:
        host = host.pin_memory()
    return host.to(device, non_blocking=True)


class DeviceBatches:
    """One epoch of :class:`DeviceResidentDataset` batches (iterate once per epoch)."""

    def __init__(self, data: DeviceResidentDataset, stream, batch_size: int, drop_last: bool, seed: int,
                 epoch: int, positions: Optional[torch.Tensor]):
        check_batching(len(stream), batch_size, drop_last)
        items = IndexStreamDataset(data, stream, seed, epoch, positions)    # the torch loader's checks
        self.data = data
        self.stream = torch.from_numpy(np.ascontiguousarray(items.stream)).to(data.device)
        self.positions = items.positions
        self.batch_size, self.drop_last, self.seed, self.epoch = batch_size, drop_last, seed, epoch

    def __len__(self) -> int:
        n = len(self.positions)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        data = self.data
        height, width = data.images.shape[-2:]
        for b in range(len(self)):
            start, end = b * self.batch_size, min((b + 1) * self.batch_size, len(self.positions))
            indices = self.stream[start:end]
            params = data.draw(self.positions[start:end], self.seed, self.epoch, height, width)
            images = data.augment(data.images.index_select(0, indices), params)
            yield images, data.labels.index_select(0, indices), indices


__all__ = ["DeviceBatches", "DeviceResidentDataset", "decode_all", "device_steps"]
