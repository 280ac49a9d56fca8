"""DALI backend of the data pipeline (``data.backend: dali``): same contract as the torch loader.

:func:`build_dali_loader` / :class:`DaliIndexStreamLoader` yield ``(images, labels, indices)``
batches in exactly the order of an epoch's index stream (position ``p`` lands in batch
``p // batch_size`` at row ``p % batch_size``; repeats allowed), like
:func:`pada_fast.data.loader.build_loader`. Images are float32 NCHW torch tensors (on the GPU for
``device="gpu"``), labels and indices int64 CPU tensors.

Pipeline: a sample-mode ``fn.external_source`` (``parallel=True`` with ``num_workers`` Python
worker processes; in the main thread when ``num_workers=0``) reads, for stream position ``p``, the
encoded file bytes (:class:`~pada_fast.data.datasets.ImageFolderDataset`) or the uint8 HWC row
(:class:`~pada_fast.data.datasets.ArrayDataset`), the label, the dataset index and the
augmentation parameters; DALI decodes (``fn.decoders.image``, ``"mixed"`` on the GPU, ``"cpu"``
otherwise), crops, flips and normalises.

Randomness. DALI's own random operators are seeded once, when the pipeline is built, and their
state runs on across epochs, so they could not give "seeds from (seed, epoch)" without a rebuild,
and their draws depend on how samples fall into batches. Instead the worker draws the crop and the
flip of position ``p`` from a generator seeded with ``sample_seed(seed, epoch, p)`` (the torch
loader's per-position seed) and hands them to DALI as per-sample arguments. For ``augment="cifar"``
the draws are made in the same order and with the same torch calls as
:func:`~pada_fast.data.transforms.cifar_train_transform`, so the DALI and torch backends crop and
flip every sample identically (images then agree up to the JPEG decoder, exactly for arrays).

Epoch swap without a rebuild (:meth:`DaliIndexStreamLoader.set_epoch`). The pipeline and its worker
processes are created once. The workers cannot receive Python objects after they start, so the
stream goes through the file system: each DALI epoch ``e`` (DALI's own counter, passed to the
callback as ``SampleInfo.epoch_idx``; it advances on ``Pipeline.reset()`` after the source ran dry)
has a file ``stream_<e>.npy`` in a private directory (under /dev/shm when available, i.e. in
memory) holding ``(dataset index, augmentation seed)`` per position; workers memory-map it on first
use. The callback serves ``rows[sample_info.idx_in_epoch]`` and raises ``StopIteration`` past the
end. ``set_epoch`` writes the next epoch's file *before* anything of that epoch is scheduled: this
class drives the pipeline itself (``schedule_run`` / ``share_outputs`` / ``release_outputs``) and
DALI schedules nothing between ``reset()`` and the next ``schedule_run()``, which is why DALI's
``DALIGenericIterator`` (which prefetches the next epoch as soon as it resets) is not used.

Limits of that approach:

* DALI drops a batch in which any sample raised ``StopIteration``, so the last, partial batch is
  padded (the last stream entry repeated) and trimmed before it is returned; the padding costs at
  most ``batch_size - 1`` extra decodes per epoch.
* An epoch abandoned part-way (``break`` out of the loop, then ``set_epoch``) is cancelled through
  a shared control word that makes the callback raise ``StopIteration``; the batches already in
  DALI's queues (about ``prefetch_queue_depth``) are still computed and thrown away.
* After an error (unreadable image, dead worker) the pipeline is torn down; the next ``set_epoch``
  rebuilds it (``builds`` counts the builds).
* The stream files cost 16 bytes per position (20 MB for an ImageNet epoch) in memory, one epoch
  at a time.
* A stale iterator (one started before the latest ``set_epoch``) raises instead of serving the
  new stream.
* It leans on DALI behaviour that is observed rather than promised: ``SampleInfo.epoch_idx``
  advancing by one per ``reset()`` (checked against ``Pipeline._epoch_idx`` after every epoch; a
  mismatch raises), and ``Pipeline._shutdown`` / ``_py_pool.close`` to stop workers promptly.
* ``augment="none"`` (and ``"cifar"`` in eval mode) needs images of one size to form a batch.
* EXIF orientation is not applied (as in the torch backend's decoders).
* With ``start_method="spawn"`` an ArrayDataset is written once to the private directory and
  memory-mapped by the workers (one extra copy of the array in memory).

Unreadable files. The worker checks each file cheaply (non-empty, JPEG/PNG signature) and raises
:class:`UnreadableImageError` naming it. Anything only the decoder notices surfaces as a DALI
error without a file name; the loader then re-decodes, with torch/PIL, the files of the batches
that were in flight (the one being consumed and those DALI had prefetched) and raises
:class:`UnreadableImageError` naming the first that fails, with DALI's message appended. Either
way the error arrives when that batch is reached, never as a hang.

Outputs come to torch as DALI's own PyTorch iterator brings them: zero-copy DLPack under DALI's
default (dynamic) executor, ``feed_ndarray`` copies otherwise. The GPU path (``device="gpu"``:
``"mixed"`` decoding, GPU crop/resize/normalise) follows DALI's documented usage but was only
exercised on CPU-only machines so far.
"""
from __future__ import annotations

import math
import os
import re
import shutil
import tempfile
import weakref
from typing import Optional

import numpy as np
import torch

from pada_fast.errors import DataError
from pada_fast.files import write_atomic

from . import transforms as T
from .decode import decode_image_file
from .loader import as_stream

AUGMENTS = ("cifar", "imagenet", "none")
DEVICES = ("cpu", "gpu")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_MASK64 = (1 << 64) - 1
_JPEG_EXTENSIONS = (".jpg", ".jpeg")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic...), which hold the size.
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def dali_available() -> bool:
    """Whether NVIDIA DALI (``nvidia.dali``) can be imported."""
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        return False
    return True


# --------------------------------------------------------------------------------------------
# Per-position seeds (vectorised version of loader.sample_seed)


def _mix64_scalar(value: int) -> int:
    value = (value + 0x9E3779B97F4A7C15) & _MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK64
    return value ^ (value >> 31)


def _mix64_array(value: np.ndarray) -> np.ndarray:
    # uint64 array arithmetic wraps modulo 2**64, as the & _MASK64 does in the scalar version.
    value = value + np.uint64(0x9E3779B97F4A7C15)
    value = (value ^ (value >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    value = (value ^ (value >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return value ^ (value >> np.uint64(31))


def sample_seeds(seed: int, epoch: int, positions: np.ndarray) -> np.ndarray:
    """``loader.sample_seed(seed, epoch, p)`` for every ``p`` in ``positions`` (uint64 array)."""
    base = _mix64_scalar(_mix64_scalar(seed & _MASK64) ^ (epoch & _MASK64))
    positions = np.asarray(positions, dtype=np.int64).astype(np.uint64)
    return _mix64_array(positions ^ np.uint64(base)) >> np.uint64(1)


# --------------------------------------------------------------------------------------------
# The external-source callback (runs in the DALI worker processes)


class UnreadableImageError(DataError):
    """An image file that cannot be read or decoded; the message names the file."""


_UNREADABLE = re.compile(r"cannot (read|decode) image .* \(dataset index \d+, stream position \d+\)")


def _jpeg_size(data: np.ndarray) -> Optional[tuple[int, int]]:
    """(height, width) from a JPEG's start-of-frame header, or None if none is found."""
    raw = data.tobytes() if len(data) < 4096 else data[:65536].tobytes()
    i, n = 2, len(raw)
    while i + 9 < n:
        if raw[i] != 0xFF:
            return None
        marker = raw[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01,) or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
            continue
        length = (raw[i + 2] << 8) | raw[i + 3]
        if marker in _SOF_MARKERS:
            return (raw[i + 5] << 8) | raw[i + 6], (raw[i + 7] << 8) | raw[i + 8]
        i += 2 + length
    return None


class _StreamSource:
    """Callable for ``fn.external_source(batch=False)``: SampleInfo -> one sample's outputs.

    Outputs: data (file bytes, or a uint8 HWC row), label, dataset index, then the augmentation
    arguments of the mode (cifar: crop start [x, y] and mirror flag; imagenet training: crop start
    [x, y], crop shape [w, h] and mirror flag; otherwise none).
    """

    def __init__(self, *, paths, images, targets, stream_dir, mode, crop_size=32, padding=4,
                 flip=True, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
        self.paths = paths
        self._images = images  # numpy [N, C, H, W] view (fork) or None (memmap file, spawn)
        self.images_file = None
        self.targets = np.asarray(targets, dtype=np.int64)
        self.stream_dir = stream_dir
        self.mode = mode
        self.crop_size = crop_size
        self.padding = padding
        self.flip = flip
        self.scale = scale
        self.log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
        self.ratio = ratio
        self._rows = {}
        self._control = None
        self._generator = None

    def __getstate__(self):  # pickled only with the "spawn" start method
        state = self.__dict__.copy()
        state.update(_rows={}, _control=None, _generator=None)
        if self.images_file is not None:
            state["_images"] = None
        return state

    # -- stream access
    def _stream_rows(self, epoch_idx: int) -> np.ndarray:
        rows = self._rows.get(epoch_idx)
        if rows is None:
            path = os.path.join(self.stream_dir, f"stream_{epoch_idx}.npy")
            try:
                rows = np.load(path, mmap_mode="r")
            except FileNotFoundError:
                raise RuntimeError(f"DALI asked for epoch {epoch_idx} but its stream file {path} "
                                   "does not exist (the loader was used without set_epoch, or its "
                                   "directory was removed)") from None
            self._rows = {epoch_idx: rows}  # keep only the current epoch's map
        return rows

    def _cancelled_below(self) -> int:
        if self._control is None:
            self._control = np.load(os.path.join(self.stream_dir, "control.npy"), mmap_mode="r")
        return int(self._control[0])

    # -- data access
    def _image_array(self, index: int) -> np.ndarray:
        if self._images is None:
            self._images = np.load(self.images_file, mmap_mode="r")
        return self._images[index]

    def _read_file(self, index: int, position: int) -> np.ndarray:
        path = self.paths[index]
        try:
            data = np.fromfile(path, dtype=np.uint8)
        except OSError as err:
            raise UnreadableImageError(
                f"cannot read image {path} (dataset index {index}, stream position {position}): "
                f"{err}") from None
        reason = None
        lower = path.lower()
        if data.size == 0:
            reason = "the file is empty"
        elif lower.endswith(_JPEG_EXTENSIONS) and (data.size < 4 or data[0] != 0xFF
                                                    or data[1] != 0xD8):
            reason = "not a JPEG file (no start-of-image marker)"
        elif lower.endswith(".png") and data[:8].tobytes() != _PNG_SIGNATURE:
            reason = "not a PNG file (bad signature)"
        if reason:
            raise UnreadableImageError(
                f"cannot decode image {path} (dataset index {index}, stream position {position}): "
                f"{reason}. Replace or remove the file (ImageFolderDataset.verify() lists every "
                "unreadable one)")
        return data

    def _file_hw(self, data: np.ndarray, index: int, position: int) -> tuple[int, int]:
        size = None
        if data[0] == 0xFF:
            size = _jpeg_size(data)
        elif data[:8].tobytes() == _PNG_SIGNATURE and data.size >= 24:
            header = data[16:24].tobytes()
            size = int.from_bytes(header[4:8], "big"), int.from_bytes(header[:4], "big")
        if size is None:
            import io

            from PIL import Image
            try:
                with Image.open(io.BytesIO(data.tobytes())) as image:
                    width, height = image.size
            except Exception as err:  # noqa: BLE001 - any PIL failure means an unreadable file
                raise UnreadableImageError(
                    f"cannot decode image {self.paths[index]} (dataset index {index}, stream "
                    f"position {position}): no image size in its header ({err}). Replace or "
                    "remove the file (ImageFolderDataset.verify() lists every unreadable one)"
                ) from None
            size = height, width
        return size

    # -- augmentation parameters
    def _gen(self, seed: int) -> torch.Generator:
        if self._generator is None:
            self._generator = torch.Generator()
        self._generator.manual_seed(seed)
        return self._generator

    def _cifar_params(self, seed: int, height: int, width: int, index: int):
        size, pad = self.crop_size, self.padding
        if height + 2 * pad < size or width + 2 * pad < size:
            raise ValueError(f"cifar augmentation cannot crop {size}x{size} from an image of "
                             f"{height}x{width} with padding {pad} (dataset index {index})")
        g = self._gen(seed)
        # Same draws, in the same order, as transforms.RandomCrop then RandomHorizontalFlip.
        top = int(torch.randint(0, height + 2 * pad - size + 1, (), generator=g))
        left = int(torch.randint(0, width + 2 * pad - size + 1, (), generator=g))
        mirror = int(self.flip and torch.rand((), generator=g).item() < 0.5)
        return np.array([left - pad, top - pad], dtype=np.int32), np.array(mirror, dtype=np.int32)

    def _rrc_params(self, seed: int, height: int, width: int):
        """torchvision's RandomResizedCrop.get_params, drawn from the per-position generator."""
        g = self._gen(seed)
        area = height * width
        for _ in range(10):
            target_area = area * torch.empty(1).uniform_(*self.scale, generator=g).item()
            aspect = math.exp(torch.empty(1).uniform_(*self.log_ratio, generator=g).item())
            w = int(round(math.sqrt(target_area * aspect)))
            h = int(round(math.sqrt(target_area / aspect)))
            if 0 < w <= width and 0 < h <= height:
                top = int(torch.randint(0, height - h + 1, (1,), generator=g).item())
                left = int(torch.randint(0, width - w + 1, (1,), generator=g).item())
                break
        else:  # fall back to a centre crop
            in_ratio = width / height
            if in_ratio < min(self.ratio):
                w, h = width, int(round(width / min(self.ratio)))
            elif in_ratio > max(self.ratio):
                h, w = height, int(round(height * max(self.ratio)))
            else:
                w, h = width, height
            top, left = (height - h) // 2, (width - w) // 2
        mirror = int(self.flip and torch.rand((), generator=g).item() < 0.5)
        return (np.array([left, top], dtype=np.int32), np.array([w, h], dtype=np.int32),
                np.array(mirror, dtype=np.int32))

    def __call__(self, sample_info):
        epoch_idx = sample_info.epoch_idx
        if epoch_idx < self._cancelled_below():
            raise StopIteration
        rows = self._stream_rows(epoch_idx)
        position = sample_info.idx_in_epoch
        if position >= rows.shape[0]:
            raise StopIteration
        index, seed = int(rows[position, 0]), int(rows[position, 1])
        if self.paths is not None:
            data = self._read_file(index, position)
        else:
            data = np.ascontiguousarray(self._image_array(index).transpose(1, 2, 0))
        out = (data, np.array(self.targets[index], dtype=np.int64),
               np.array(index, dtype=np.int64))
        if self.mode in ("cifar", "imagenet"):
            if self.paths is not None:
                height, width = self._file_hw(data, index, position)
            else:
                height, width = data.shape[:2]
            if self.mode == "cifar":
                out += self._cifar_params(seed, height, width, index)
            else:
                out += self._rrc_params(seed, height, width)
        return out


# --------------------------------------------------------------------------------------------
# The loader


def _find_normalize(transform):
    if isinstance(transform, T.Normalize):
        return transform
    for step in getattr(transform, "steps", ()):
        found = _find_normalize(step)
        if found is not None:
            return found
    return None


def _shutdown_pipeline(pipe) -> None:
    """Stop a pipeline and its Python workers now, not when the garbage collector gets to it (an
    abandoned iterator may still hold a reference). Uses DALI internals where present."""
    pool = getattr(pipe, "_py_pool", None)
    try:
        pipe._shutdown()
    except Exception:  # noqa: BLE001 - best effort
        pass
    if pool is not None:
        try:
            pool.close()
        except Exception:  # noqa: BLE001
            pass


def _cleanup(directory: str, pipe_holder: dict) -> None:
    pipe = pipe_holder.pop("pipe", None)
    if pipe is not None:
        _shutdown_pipeline(pipe)
    shutil.rmtree(directory, ignore_errors=True)


def _check_options(dataset, batch_size, num_workers, augment, device, start_method, prefetch_queue_depth) -> str:
    """Refuse options the loader cannot serve; the dataset's kind ("files" or "arrays")."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    if augment not in AUGMENTS:
        raise ValueError(f"augment must be one of {', '.join(AUGMENTS)}, got {augment!r}")
    if device not in DEVICES:
        raise ValueError(f"device must be 'cpu' or 'gpu', got {device!r}")
    if device == "gpu" and not torch.cuda.is_available():
        raise RuntimeError("device='gpu' needs a CUDA GPU; use device='cpu'")
    if start_method not in (None, "fork", "spawn"):
        raise ValueError(f"start_method must be 'fork' or 'spawn', got {start_method!r}")
    if prefetch_queue_depth < 1:
        raise ValueError(f"prefetch_queue_depth must be >= 1, got {prefetch_queue_depth}")
    if not dali_available():
        raise ImportError("data.backend 'dali' needs NVIDIA DALI: pip install "
                          "nvidia-dali-cuda120 (or -cuda130); or use data.backend 'torch'")
    if hasattr(dataset, "paths"):
        return "files"
    if isinstance(getattr(dataset, "images", None), torch.Tensor):
        return "arrays"
    raise TypeError(f"the DALI loader reads ImageFolderDataset (paths) or ArrayDataset "
                    f"(images) datasets, not {type(dataset).__name__}; use the torch "
                    "backend for other datasets")


class DaliIndexStreamLoader:
    """A DALI pipeline, built once, that serves one index stream per epoch in order.

    Call :meth:`set_epoch` with each epoch's stream, then iterate. Iterating again without
    ``set_epoch`` serves the same stream again (like a DataLoader). ``len()`` is the number of
    batches. See the module docstring for how the stream reaches the worker processes.

    dataset: an ImageFolderDataset (anything with ``paths``, ``targets``, ``in_channels``) or an
    ArrayDataset (``images`` uint8 [N, C, H, W] tensor, ``targets``). Its ``transform`` is not
    applied; ``augment`` says what DALI does:

    * ``"cifar"``: zero-pad ``padding`` (4), random ``crop_size`` crop (default: the dataset's
      image size), horizontal flip (unless ``flip=False``), normalise. ``eval_mode``: normalise.
    * ``"imagenet"``: random-resized-crop ``output_size`` (224; scale 0.08-1, ratio 3/4-4/3) +
      flip + normalise; ``eval_mode``: resize the shorter side to ``resize_size`` (256), centre
      crop ``output_size``, normalise.
    * ``"none"``: normalise only.

    Normalisation: ``mean``/``std`` (0..1 units) if given, else the ``Normalize`` step of the
    dataset's transform if it has one, else ImageNet's statistics for ``augment="imagenet"`` and
    CIFAR-10's otherwise (3-channel images; grey images need one of the first two).

    device: ``"cpu"`` (``device_id=None``, no GPU needed) or ``"gpu"`` (mixed decoding, images
    returned on ``cuda:device_id``). ``num_workers``: Python worker processes reading files
    (0: read in the main thread); ``num_threads``: DALI's decoding/augmentation threads (default
    ``max(1, num_workers)``). ``start_method``: how the workers start; default ``"fork"`` unless
    torch has initialised CUDA already, then ``"spawn"`` (forking a CUDA process is unsafe).
    """

    def __init__(self, dataset, batch_size: int, *, num_workers: int = 2,
                 drop_last: bool = False, seed: int = 0, device: str = "cpu",
                 augment: str = "cifar", eval_mode: bool = False,
                 mean=None, std=None, crop_size: Optional[int] = None, padding: int = 4,
                 flip: bool = True, output_size: int = 224, resize_size: int = 256,
                 num_threads: Optional[int] = None, prefetch_queue_depth: int = 2,
                 start_method: Optional[str] = None, device_id: int = 0):
        self._kind = _check_options(dataset, batch_size, num_workers, augment, device, start_method,
                                    prefetch_queue_depth)
        self.dataset = dataset
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.drop_last = drop_last
        self.seed = seed
        self.device = device
        self.device_id = device_id
        self.augment = augment
        self.eval_mode = eval_mode
        self.channels = int(dataset.in_channels)
        self.mode = ("none" if augment == "none" or (eval_mode and augment == "cifar")
                     else "imagenet_eval" if eval_mode else augment)
        self.mean, self.std = self._normalisation(mean, std)
        if self.mode == "cifar":
            if crop_size is None:
                size = dataset.image_size
                if not isinstance(size, int):
                    raise ValueError(f"images are {size[0]}x{size[1]}: pass crop_size= for the "
                                     "cifar augmentation")
                crop_size = size
            if crop_size < 1 or padding < 0:
                raise ValueError(f"need crop_size >= 1 and padding >= 0, got {crop_size}, "
                                 f"{padding}")
        self.crop_size, self.padding, self.flip = crop_size, padding, flip
        self.output_size, self.resize_size = output_size, resize_size
        self.num_threads = num_threads if num_threads is not None else max(1, num_workers)
        self.prefetch_queue_depth = prefetch_queue_depth
        if start_method is None:
            start_method = ("spawn" if torch.cuda.is_available() and torch.cuda.is_initialized()
                            else "fork")
        self.start_method = start_method
        self.builds = 0
        self.epoch = None

        shm = "/dev/shm"
        base = shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None
        self._dir = tempfile.mkdtemp(prefix="pada_dali_", dir=base)
        self._holder: dict = {}
        self._finalizer = weakref.finalize(self, _cleanup, self._dir, self._holder)
        self._pipe = None
        self._dali_epoch = 0
        self._state = "empty"  # empty | ready | running | done | broken
        self._closed = False
        self._token = 0
        self._rows = None
        self._stream = None
        self._length = 0

    # -- configuration helpers
    def _normalisation(self, mean, std):
        if (mean is None) != (std is None):
            raise ValueError("pass both mean and std, or neither")
        if mean is None:
            found = _find_normalize(getattr(self.dataset, "transform", None))
            if found is not None:
                mean, std = found.mean.flatten().tolist(), found.std.flatten().tolist()
            elif self.channels == 3:
                mean, std = ((IMAGENET_MEAN, IMAGENET_STD) if self.augment == "imagenet"
                             else (T.CIFAR10_MEAN, T.CIFAR10_STD))
            else:
                raise ValueError(f"{self.channels}-channel images: pass mean= and std= (the "
                                 "dataset's transform has no Normalize step to take them from)")
        mean, std = [float(v) for v in mean], [float(v) for v in std]
        if len(mean) != self.channels or len(std) != self.channels:
            raise ValueError(f"mean/std have {len(mean)}/{len(std)} values but the images have "
                             f"{self.channels} channel(s)")
        if any(s <= 0 for s in std):
            raise ValueError(f"every std must be positive, got {std}")
        return mean, std

    def _bytes_hint(self) -> Optional[int]:
        if self._kind != "files":
            return None
        paths = self.dataset.paths
        step = max(1, len(paths) // 64)
        sizes = []
        for path in paths[::step][:64]:
            try:
                sizes.append(os.path.getsize(path))
            except OSError:
                pass
        return int(max(sizes) * 1.5) + 4096 if sizes else None

    # -- pipeline
    def _build(self) -> None:
        from nvidia.dali import fn, types
        from nvidia.dali.pipeline import Pipeline

        control = np.lib.format.open_memmap(os.path.join(self._dir, "control.npy"), mode="w+",
                                            dtype=np.int64, shape=(1,))
        control[0] = 0
        control.flush()
        self._control = control
        dataset = self.dataset
        images = None
        if self._kind == "arrays":
            images = dataset.images.numpy()
        source = _StreamSource(
            paths=list(dataset.paths) if self._kind == "files" else None, images=images,
            targets=dataset.targets, stream_dir=self._dir,
            mode={"cifar": "cifar", "imagenet": "imagenet"}.get(self.mode, "plain"),
            crop_size=self.crop_size, padding=self.padding, flip=self.flip)
        if images is not None and self.start_method == "spawn" and self.num_workers > 0:
            source.images_file = os.path.join(self._dir, "images.npy")
            np.save(source.images_file, images)
        num_params = {"cifar": 2, "imagenet": 3}.get(self.mode, 0)
        parallel = self.num_workers > 0
        gpu = self.device == "gpu"
        pipe = Pipeline(batch_size=self.batch_size, num_threads=self.num_threads,
                        device_id=self.device_id if gpu else None, seed=self.seed & 0x7FFFFFFF,
                        prefetch_queue_depth=self.prefetch_queue_depth,
                        py_num_workers=max(1, self.num_workers),
                        py_start_method=self.start_method)
        es_options = {}
        if parallel:
            es_options = dict(parallel=True, prefetch_queue_depth=self.prefetch_queue_depth)
            hint = self._bytes_hint()
            if hint:
                es_options["bytes_per_sample_hint"] = hint
        with pipe:
            outputs = fn.external_source(source=source, num_outputs=3 + num_params, batch=False,
                                         **es_options)
            data, labels, indices = outputs[:3]
            pipe.set_outputs(self._images(fn, types, data, outputs[3:], gpu), labels, indices)
        pipe.build()  # starts the worker processes (forked now, before any CUDA use by DALI)
        self._pipe = pipe
        self._holder["pipe"] = pipe
        self._dali_epoch = 0
        self.builds += 1

    def _images(self, fn, types, data, params, gpu: bool):
        """The pipeline's graph from a sample's bytes (or pixels) to the normalised image: decode
        (files) or reshape (arrays), then the recipe's crop/flip or resize, then normalisation."""
        out_type = types.RGB if self.channels == 3 else types.GRAY
        if self._kind == "files":
            decode_device = "mixed" if gpu else "cpu"
            if self.mode == "imagenet":
                start, shape, mirror = params
                images = fn.decoders.image_slice(data, device=decode_device,
                                                 output_type=out_type, start=start,
                                                 shape=shape, adjust_orientation=False)
            else:
                images = fn.decoders.image(data, device=decode_device, output_type=out_type,
                                           adjust_orientation=False)
        else:
            images = fn.reshape(data, layout="HWC")
            if gpu:
                images = images.gpu()
            if self.mode == "imagenet":
                start, shape, mirror = params
                images = fn.slice(images, start=start, shape=shape, axis_names="WH")
        cmn = dict(dtype=types.FLOAT, output_layout="CHW",
                   mean=[m * 255.0 for m in self.mean], std=[s * 255.0 for s in self.std])
        if self.mode == "cifar":
            start, mirror = params
            images = fn.slice(images, start=start, shape=[self.crop_size, self.crop_size],
                              axis_names="WH", out_of_bounds_policy="pad", fill_values=0)
            images = fn.crop_mirror_normalize(images, mirror=mirror, **cmn)
        elif self.mode == "imagenet":
            images = fn.resize(images, size=[self.output_size, self.output_size],
                               interp_type=types.INTERP_LINEAR, antialias=True)
            images = fn.crop_mirror_normalize(images, mirror=mirror, **cmn)
        elif self.mode == "imagenet_eval":
            images = fn.resize(images, resize_shorter=self.resize_size,
                               interp_type=types.INTERP_LINEAR, antialias=True)
            images = fn.crop_mirror_normalize(
                images, crop=(self.output_size, self.output_size), **cmn)
        else:
            images = fn.crop_mirror_normalize(images, **cmn)
        return images

    def _teardown(self) -> None:
        pipe, self._pipe = self._pipe, None
        self._holder.pop("pipe", None)
        if pipe is not None:
            _shutdown_pipeline(pipe)
            del pipe
        for name in os.listdir(self._dir):
            if name.startswith("stream_"):
                try:
                    os.remove(os.path.join(self._dir, name))
                except OSError:
                    pass
        self._state = "broken" if self._state != "empty" else "empty"

    def _publish(self) -> None:
        """Write the current stream for the DALI epoch about to start."""
        path = os.path.join(self._dir, f"stream_{self._dali_epoch}.npy")
        write_atomic(path, lambda handle: np.save(handle, self._rows), binary=True)
        old = os.path.join(self._dir, f"stream_{self._dali_epoch - 1}.npy")
        if os.path.exists(old):
            os.remove(old)

    def _finish_dali_epoch(self) -> None:
        self._pipe.reset()
        self._dali_epoch += 1
        expected = getattr(self._pipe, "_epoch_idx", self._dali_epoch)
        if expected != self._dali_epoch:  # DALI changed how it counts epochs
            self._teardown()
            raise RuntimeError(f"DALI's epoch counter ({expected}) disagrees with the loader's "
                               f"({self._dali_epoch}); this DALI version is not supported")

    def _cancel_running_epoch(self) -> None:
        """Stop an epoch that was started but not consumed to the end, without a rebuild."""
        pipe = self._pipe
        self._control[0] = self._dali_epoch + 1  # the callback now raises StopIteration
        self._control.flush()
        try:
            while True:
                try:
                    pipe.share_outputs()
                except StopIteration:
                    break
                pipe.release_outputs()
                pipe.schedule_run()
            self._finish_dali_epoch()
        except Exception:  # noqa: BLE001 - an error in a discarded batch: start afresh
            self._teardown()
        self._state = "done" if self._pipe is not None else "broken"

    # -- public API
    def set_epoch(self, stream, epoch: int, positions=None, seed: Optional[int] = None) -> None:
        """Serve ``stream`` (dataset indices; validated now) in the next iteration.

        ``positions`` (default ``0..len-1``): the global stream positions of a shard, used to seed
        augmentation (see ``loader.shard_positions``); ``seed`` replaces the loader's seed."""
        if self._closed:
            raise RuntimeError("this DALI loader was closed; build a new one")
        array = as_stream(stream, len(self.dataset))
        if positions is None:
            positions = np.arange(len(array), dtype=np.int64)
        else:
            positions = np.asarray(positions, dtype=np.int64).reshape(-1)
            if len(positions) != len(array):
                raise ValueError(f"positions has {len(positions)} entries but the stream has "
                                 f"{len(array)}; pass one position per stream entry")
        if self.drop_last and len(array) < self.batch_size:
            raise ValueError(f"drop_last=True with a stream of {len(array)} indices and batch_size "
                             f"{self.batch_size} gives no batch at all; lower batch_size or keep "
                             "the last batch")
        if seed is not None:
            self.seed = seed
        length = len(array)
        served = (length // self.batch_size if self.drop_last
                  else -(-length // self.batch_size)) * self.batch_size
        rows = np.empty((served, 2), dtype=np.uint64)
        take = min(length, served)
        rows[:take, 0] = array[:take]
        rows[:take, 1] = sample_seeds(self.seed, epoch, positions[:take])
        rows[take:] = rows[take - 1]  # padding of the last batch, trimmed on the way out
        if self._state == "running":
            self._cancel_running_epoch()
        if self._pipe is None:
            self._build()
        self._rows = rows
        self._stream = torch.from_numpy(array.copy())
        self._length = length
        self.epoch = epoch
        self._publish()
        self._state = "ready"

    def __len__(self) -> int:
        if self._rows is None:
            return 0
        return len(self._rows) // self.batch_size

    def __iter__(self):
        if self._state == "empty":
            raise RuntimeError("no stream yet: call set_epoch(stream, epoch) first")
        if self._state == "broken":
            raise RuntimeError("the DALI pipeline failed earlier (see that error); call "
                               "set_epoch(stream, epoch) to rebuild it")
        if self._state == "running":
            self._cancel_running_epoch()
            if self._state == "broken":
                raise RuntimeError("could not stop the previous iteration; call set_epoch")
        if self._state == "done":
            self._publish()  # the same stream again, for the next DALI epoch
            self._state = "ready"
        self._token += 1
        return self._iterate(self._token)

    def _iterate(self, token: int):
        from nvidia.dali.plugin.pytorch import feed_ndarray

        pipe = self._pipe
        batch_size, length = self.batch_size, self._length
        num_batches = len(self)
        stream = self._stream
        self._state = "running"
        batch = 0
        while True:
            if token != self._token or self._pipe is not pipe:
                raise RuntimeError("this iterator belongs to an earlier epoch of the DALI loader "
                                   "(set_epoch or a new iteration was started since)")
            try:
                if batch == 0:
                    pipe.schedule_run()  # fills DALI's queues for the epoch
                try:
                    outputs = pipe.share_outputs()
                except StopIteration:
                    break
                try:
                    images, labels, indices = (self._to_torch(out, feed_ndarray)
                                               for out in outputs)
                finally:
                    pipe.release_outputs()
                pipe.schedule_run()
            except Exception as err:  # noqa: BLE001 - re-raised with the file named
                self._raise_batch_error(err, batch)
            start = batch * batch_size
            keep = min(batch_size, length - start)
            if keep < batch_size:
                images, labels, indices = images[:keep], labels[:keep], indices[:keep]
            if not torch.equal(indices, stream[start:start + keep]):
                self._teardown()
                raise RuntimeError(f"internal error: DALI batch {batch} does not hold stream "
                                   f"positions {start}..{start + keep - 1}")
            batch += 1
            yield images, labels, indices
        if batch != num_batches:
            self._teardown()
            raise RuntimeError(f"internal error: DALI served {batch} batches, expected "
                               f"{num_batches}")
        self._finish_dali_epoch()
        self._state = "done"

    def _to_torch(self, tensor_list, feed_ndarray):
        """One pipeline output as a torch tensor, the way DALI's own PyTorch iterator does it:
        zero-copy through DLPack under DALI's default (dynamic) executor, whose buffers are
        reference-counted and stream-ordered; a copy (``feed_ndarray``, on torch's current CUDA
        stream for GPU outputs) under the legacy executors, whose buffers DALI reuses."""
        from nvidia.dali.backend import TensorListGPU
        from nvidia.dali.plugin.pytorch import to_torch_type

        if not tensor_list.is_dense_tensor():
            shapes = sorted({tuple(s) for s in tensor_list.shape()})[:3]
            raise ValueError(f"the images of a batch have different sizes ({shapes} ...); "
                             "augment='none' and cifar eval need equally sized images (use "
                             "augment='imagenet' to crop/resize)")
        dense = tensor_list.as_tensor()
        gpu = isinstance(tensor_list, TensorListGPU)
        if self._pipe.exec_dynamic:
            if gpu:
                with torch.cuda.device(self.device_id):
                    return torch.from_dlpack(dense)
            return torch.from_dlpack(dense)
        dtype = to_torch_type[dense.dtype]
        if gpu:
            out = torch.empty(dense.shape(), dtype=dtype, device=f"cuda:{self.device_id}")
            return feed_ndarray(dense, out, cuda_stream=torch.cuda.current_stream(out.device))
        return feed_ndarray(dense, torch.empty(dense.shape(), dtype=dtype))

    def _raise_batch_error(self, err: Exception, batch: int):
        """Turn a DALI/worker failure into an error naming the unreadable file, then tear down."""
        self._teardown()
        cause = err
        while cause is not None:
            # DALI's workers send exceptions back as RuntimeError(message): recognise ours by it.
            if isinstance(cause, UnreadableImageError) or _UNREADABLE.match(str(cause)):
                raise UnreadableImageError(str(cause)) from err
            cause = cause.__cause__ or cause.__context__
        if isinstance(err, ValueError) and "different sizes" in str(err):
            raise err
        if self._kind == "files":
            # Batches in flight: the one being consumed and those DALI prefetched after it.

            depth = 2 * self.prefetch_queue_depth + 2
            first = batch * self.batch_size
            last = min(len(self._rows), (batch + depth) * self.batch_size)
            seen = set()
            bad = []
            for position in range(first, last):
                index = int(self._rows[position, 0])
                if index in seen:
                    continue
                seen.add(index)
                try:
                    decode_image_file(self.dataset.paths[index], self.channels)
                except Exception as decode_err:  # noqa: BLE001
                    bad.append((position, index, decode_err))
            if bad:
                position, index, decode_err = bad[0]
                more = f" ({len(bad) - 1} more unreadable file(s) nearby)" if len(bad) > 1 else ""
                raise UnreadableImageError(
                    f"cannot decode image {self.dataset.paths[index]} (dataset index {index}, "
                    f"stream position {position}): {decode_err}{more}. Replace or remove the file "
                    "(ImageFolderDataset.verify() lists every unreadable one). DALI said: "
                    f"{_first_line(err)}") from err
            raise RuntimeError(f"the DALI pipeline failed on batch {batch} (stream positions "
                               f"{first}..{last - 1} were in flight; none of their files fails "
                               f"to decode with torch/PIL): {err}") from err
        raise RuntimeError(f"the DALI pipeline failed on batch {batch}: {err}") from err

    def close(self) -> None:
        """Stop the worker processes and remove the stream files."""
        self._teardown()
        self._state = "empty"
        self._closed = True
        self._finalizer()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _first_line(err: Exception) -> str:
    """The gist of a DALI error: the failing operator and the reason it gives."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    operator = next((line for line in lines if line.startswith("Error in")), None)
    reason = None
    for i, line in enumerate(lines):
        if line.startswith("encountered:") and i + 1 < len(lines):
            reason = line[len("encountered:"):].strip() or lines[i + 1]
            break
    parts = [p.rstrip(",") for p in (operator, reason) if p]
    return ": ".join(parts) if parts else (lines[0] if lines else type(err).__name__)


def build_dali_loader(dataset, stream, batch_size: int, num_workers: int = 2,
                      drop_last: bool = False, seed: int = 0, epoch: int = 0,
                      positions=None, device: str = "cpu", augment: str = "cifar",
                      eval_mode: bool = False, **options) -> DaliIndexStreamLoader:
    """A :class:`DaliIndexStreamLoader` already holding ``stream`` for ``epoch``.

    Same batches contract as ``loader.build_loader``; the stream is checked before any pipeline
    or worker process is created. Later epochs: ``loader.set_epoch(new_stream, epoch)`` (no
    rebuild). ``options``: the other keyword arguments of :class:`DaliIndexStreamLoader`."""
    as_stream(stream, len(dataset))  # reject bad streams before starting anything
    loader = DaliIndexStreamLoader(dataset, batch_size, num_workers=num_workers,
                                   drop_last=drop_last, seed=seed, device=device,
                                   augment=augment, eval_mode=eval_mode, **options)
    try:
        loader.set_epoch(stream, epoch, positions=positions)
    except BaseException:
        loader.close()
        raise
    return loader
