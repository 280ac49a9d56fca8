"""Map-style image datasets: every sample is ``(float CHW image tensor, int label)``.

All datasets share :class:`ImageDataset`: ``read_image(index)`` gives the stored uint8 ``[C, H, W]``
pixels, ``sample(index, generator)`` applies the transform with an explicit random generator (the
loader seeds one per stream position), and ``select(indices)`` makes a smaller dataset of the same
kind. They expose ``targets`` (int64 numpy array), ``num_classes``, ``in_channels``, ``image_size``
and ``classes``.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from pada_fast.errors import DataError
from pada_fast.log import get_logger
from pada_fast.registry import DATASETS

from . import transforms as T
from .decode import decode_image_file
from .idx_format import read_idx
from .subset import subset_indices

_log = get_logger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
SPLITS = ("train", "test")

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                         "Sneaker", "Bag", "Ankle boot")
DEFAULT_FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"


class ImageDataset(Dataset):
    """Base class. Subclasses set ``targets``, ``classes``, ``in_channels`` and implement
    ``read_image`` and ``_take`` (keep only some rows)."""

    targets: np.ndarray
    classes: list[str]
    in_channels: int
    transform = None
    skipped: tuple[str, ...] | list[str] = ()     # files left out (ImageFolderDataset, bad_files="skip")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self):
        """Side of the stored images (``(height, width)`` if they are not square). Image folders
        report their first image's size: for trees of mixed sizes the transform decides."""
        if getattr(self, "_image_size", None) is None:
            height, width = self.read_image(0).shape[-2:]
            self._image_size = height if height == width else (height, width)
        return self._image_size

    def __len__(self) -> int:
        return len(self.targets)

    def read_image(self, index: int) -> torch.Tensor:
        raise NotImplementedError

    def sample(self, index: int, generator: Optional[torch.Generator] = None):
        """``(transformed image, label)``; randomness from ``generator`` (global RNG if None)."""
        image = T.apply_transform(self.transform, self.read_image(index), generator)
        return image, int(self.targets[index])

    def __getitem__(self, index: int):
        return self.sample(index)

    def select(self, indices) -> "ImageDataset":
        """A dataset of the same kind holding rows ``indices`` (in that order) of this one; classes,
        ``num_classes`` and the transform are kept."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(indices) and (indices.min() < 0 or indices.max() >= len(self)):
            bad = indices[(indices < 0) | (indices >= len(self))][0]
            raise IndexError(f"select: index {bad} is out of range for a dataset of {len(self)}")
        chosen = copy.copy(self)
        chosen._take(indices)
        return chosen

    def subset(self, n: int, seed: int = 0, mode: str = "stratified") -> "ImageDataset":
        """``n`` samples: ``"stratified"`` keeps this dataset's class proportions, ``"random"``
        draws uniformly (see :func:`pada_fast.data.subset.subset_indices`)."""
        return self.select(subset_indices(self.targets, n, seed, mode))

    def _take(self, indices: np.ndarray) -> None:
        raise NotImplementedError

    def __repr__(self):
        return (f"{type(self).__name__}({len(self)} samples, {self.num_classes} classes, "
                f"transform={self.transform!r})")


class ImageFolderDataset(ImageDataset):
    """Images stored as ``root/<class>/<file>.(jpg|jpeg|png)``; classes are the sorted folder names,
    files are sorted by name within a class.

    Hidden entries (names starting with '.') are ignored; any other file that is not an image is an
    error rather than silently skipped, so no sample goes missing unnoticed. Decoding happens on
    access: a corrupt file raises a ValueError naming it when read (``verify()`` reads them all).

    ``limit_per_class`` keeps the first k files of each class; ``subset`` then keeps a class-
    stratified random subset of that size chosen with ``seed``.

    ``bad_files="skip"`` instead leaves non-image files out and, after the subset is taken, decodes
    every image once and drops the unreadable ones; ``skipped`` lists each left-out file with the
    reason. An empty class folder stays an error either way (dropping it would renumber classes).
    """

    def __init__(self, root: str | os.PathLike, transform=None, *, channels: int = 3,
                 limit_per_class: Optional[int] = None, subset: Optional[int] = None,
                 subset_mode: str = "stratified",
                 seed: int = 0, extensions: Sequence[str] = IMAGE_EXTENSIONS, bad_files: str = "error"):
        if channels not in (1, 3):
            raise DataError(f"channels must be 1 (grey) or 3 (RGB), got {channels}")
        if bad_files not in BAD_FILE_POLICIES:
            raise DataError(f"bad_files must be one of {', '.join(BAD_FILE_POLICIES)}, got {bad_files!r}")
        self.root = os.fspath(root)
        self.transform = transform
        self.in_channels = channels
        self.classes, self.paths, targets, foreign = _scan_image_folder(
            self.root, tuple(e.lower() for e in extensions), limit_per_class, bad_files == "error")
        self.skipped = [f"{path}: not an image ({', '.join(extensions)})" for path in foreign]
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}
        self.targets = np.asarray(targets, dtype=np.int64)
        if subset is not None:
            self._take(subset_indices(self.targets, subset, seed, subset_mode))
        if bad_files == "skip":
            self._drop_unreadable()

    def unreadable(self, indices: Optional[Sequence[int]] = None, workers: int = 1) -> dict[int, str]:
        """Decode every image (or those at ``indices``) on ``workers`` threads (the decoders release
        the GIL): index -> why it failed, for the failures, in index order."""
        def why(i: int) -> str | None:
            try:
                self.read_image(i)
            except ValueError as err:
                return str(err.__cause__ or err)
            return None
        chosen = list(range(len(self)) if indices is None else indices)
        if workers > 1:
            from concurrent.futures import ThreadPoolExecutor
            with ThreadPoolExecutor(workers) as pool:
                reasons = list(pool.map(why, chosen, chunksize=64))
        else:
            reasons = [why(i) for i in chosen]
        return {i: r for i, r in zip(chosen, reasons) if r is not None}

    def _drop_unreadable(self) -> None:
        failures = self.unreadable()
        self.skipped += [f"{self.paths[i]}: unreadable ({why})" for i, why in failures.items()]
        if len(failures) == len(self):
            raise DataError(f"no readable image under {self.root}: all {len(self)} selected files failed to "
                             f"decode (first: {self.skipped[-1]})")
        if failures:
            self._take(np.asarray([i for i in range(len(self)) if i not in failures], dtype=np.int64))

    def _take(self, indices: np.ndarray) -> None:
        self.paths = [self.paths[i] for i in indices]
        self.targets = self.targets[indices]

    def read_image(self, index: int) -> torch.Tensor:
        path = self.paths[index]
        try:
            return decode_image_file(path, self.in_channels)
        except (RuntimeError, OSError, ValueError) as err:
            raise DataError(f"cannot read image {path} (dataset index {index}): {err}. Replace or "
                            "remove the file, or set data.bad_files=skip to leave unreadable files out; "
                            "`pada-fast verify-data` lists every unreadable one") from err

    def verify(self, indices: Optional[Sequence[int]] = None) -> None:
        """Decode every image (or those at ``indices``); raise one error listing all failures."""
        failures = [f"{why} ({self.paths[i]})" for i, why in self.unreadable(indices).items()]
        if failures:
            listing = "\n  ".join(failures[:20])
            more = f"\n  ... and {len(failures) - 20} more" if len(failures) > 20 else ""
            raise DataError(f"{len(failures)} unreadable image(s) under {self.root}:\n  "
                             f"{listing}{more}")


BAD_FILE_POLICIES = ("error", "skip")


def _scan_image_folder(root: str, extensions: tuple[str, ...], limit_per_class: Optional[int],
                       foreign_is_error: bool = True):
    if not os.path.exists(root):
        raise FileNotFoundError(f"image folder {root} does not exist; expected a tree "
                                "root/<class>/<image>.jpg (for CIFAR-10 JPEGs pass the train/ or "
                                "test/ directory)")
    if not os.path.isdir(root):
        raise NotADirectoryError(f"image folder root {root} is a file, not a directory of class "
                                 "folders")
    if limit_per_class is not None and limit_per_class < 1:
        raise DataError(f"limit_per_class must be >= 1, got {limit_per_class}")
    with os.scandir(root) as entries:
        classes = sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise DataError(f"no class folders in {root}; expected root/<class>/<image>.jpg "
                         "(images directly under root are not supported: put them in one "
                         "folder per class)")
    paths, targets, foreign = [], [], []
    for label, name in enumerate(classes):
        folder = os.path.join(root, name)
        with os.scandir(folder) as entries:
            names = sorted(e.name for e in entries if not e.name.startswith("."))
        images = [n for n in names if n.lower().endswith(extensions)]
        foreign.extend(os.path.join(folder, n) for n in names if not n.lower().endswith(extensions))
        if not images:
            raise DataError(f"class folder {folder} (class '{name}') holds no images with "
                             f"extensions {', '.join(extensions)}; add images or remove the folder")
        if limit_per_class is not None:
            images = images[:limit_per_class]
        paths.extend(os.path.join(folder, n) for n in images)
        targets.extend([label] * len(images))
    if foreign and foreign_is_error:
        listing = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5
                                            else "")
        raise DataError(f"{len(foreign)} non-image file(s) in the class folders of {root}: "
                         f"{listing}. Move them out of the tree, or pass extensions=... if they "
                         "are images, or set data.bad_files=skip to leave them out")
    return classes, paths, targets, foreign


class ArrayDataset(ImageDataset):
    """In-memory images: uint8 numpy ``[N, H, W, C]`` or ``[N, H, W]`` (grey) and N integer labels."""

    def __init__(self, images: np.ndarray, labels, transform=None, *,
                 classes: Optional[Sequence[str]] = None):
        images = np.asarray(images)
        labels = np.asarray(labels)
        if images.dtype != np.uint8:
            raise TypeError(f"ArrayDataset wants uint8 pixels 0..255, got {images.dtype}; scale and "
                            "convert first (e.g. np.rint(x * 255).astype(np.uint8))")
        if images.ndim == 3:
            images = images[..., None]
        if images.ndim != 4:
            raise DataError(f"images must be [N, H, W] or [N, H, W, C], got shape {images.shape}")
        if labels.ndim != 1 or len(labels) != len(images):
            raise DataError(f"need one label per image: {len(images)} images but labels have shape "
                             f"{labels.shape}")
        if len(images) == 0:
            raise DataError("ArrayDataset needs at least one image")
        if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
            raise DataError(f"labels must be non-negative integers, got dtype {labels.dtype} and "
                             f"minimum {labels.min()}")
        self.transform = transform
        # Stored CHW so read_image is a view, no per-sample permute/copy.
        self.images = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
        self.targets = labels.astype(np.int64)
        self.in_channels = images.shape[3]
        num_classes = int(self.targets.max()) + 1
        if classes is None:
            classes = [str(i) for i in range(num_classes)]
        elif len(classes) < num_classes:
            raise DataError(f"{len(classes)} class names given but labels go up to "
                             f"{num_classes - 1}")
        self.classes = list(classes)

    def read_image(self, index: int) -> torch.Tensor:
        return self.images[index]

    def resized(self, size: int) -> "ArrayDataset":
        """This dataset with every image resized to ``size`` x ``size`` by area averaging (rounded
        back to uint8): a low-resolution variant of the same images, the same labels."""
        chosen = copy.copy(self)
        if tuple(self.images.shape[-2:]) != (size, size):
            small = torch.nn.functional.interpolate(self.images.float(), size=(size, size), mode="area")
            chosen.images = small.round_().clamp_(0, 255).to(torch.uint8).contiguous()
        chosen._image_size = None
        return chosen

    def _take(self, indices: np.ndarray) -> None:
        self.images = self.images[torch.from_numpy(indices)]
        self.targets = self.targets[indices]


def load_fashion_mnist(root: str | os.PathLike = DEFAULT_FASHION_MNIST_ROOT, train: bool = True,
                       transform=None) -> ArrayDataset:
    """Fashion-MNIST from its IDX files (``train-images-idx3-ubyte[.gz]`` and friends) found in
    ``root`` or torchvision's ``root/FashionMNIST/raw``. Debian/Ubuntu: ``apt install
    dataset-fashion-mnist`` puts them in /usr/share/datasets/fashion-mnist."""
    prefix = "train" if train else "t10k"
    images = _find_idx(root, f"{prefix}-images-idx3-ubyte")
    labels = _find_idx(root, f"{prefix}-labels-idx1-ubyte")
    pixels, targets = read_idx(images), read_idx(labels)
    if pixels.ndim != 3 or targets.ndim != 1 or len(pixels) != len(targets):
        raise DataError(f"Fashion-MNIST files disagree: {images} has shape {pixels.shape}, "
                         f"{labels} has shape {targets.shape}; expected [N, 28, 28] and [N]")
    return ArrayDataset(pixels, targets, transform, classes=FASHION_MNIST_CLASSES)


def _find_idx(root, stem: str) -> str:
    root = os.fspath(root)
    tried = []
    for folder in (root, os.path.join(root, "FashionMNIST", "raw")):
        for name in (stem + ".gz", stem):
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                return path
            tried.append(path)
    raise FileNotFoundError(f"Fashion-MNIST file {stem}[.gz] not found; looked for "
                            f"{', '.join(tried)}. Install it (apt install dataset-fashion-mnist) or "
                            "pass root= the directory holding the IDX files")


def load_digits_dataset(split: str = "train", seed: int = 0, test_size: int = 500,
                        transform=None) -> ArrayDataset:
    """scikit-learn's bundled 8x8 digits (1,797 images, no download) as uint8 0..255 grey images.

    ``split`` "train" or "test": a stratified split with ``test_size`` test images (default
    1,297 / 500), deterministic given ``seed``; "all" keeps all 1,797."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    # Values are 0..16; scale to the 0..255 range every other dataset uses.
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)
    labels = digits.target.astype(np.int64)
    if split == "all":
        return ArrayDataset(images, labels, transform)
    if split not in SPLITS:
        raise DataError(f"digits split must be 'train', 'test' or 'all', got {split!r}")
    train_idx, test_idx = train_test_split(np.arange(len(labels)), test_size=test_size,
                                           random_state=seed, stratify=labels)
    chosen = np.sort(train_idx if split == "train" else test_idx)
    return ArrayDataset(images[chosen], labels[chosen], transform)


def load_torchvision_cifar(root: str | os.PathLike, train: bool = True, download: bool = False,
                           name: str = "cifar10", transform=None) -> ArrayDataset:
    """CIFAR-10/100 in torchvision's python-pickle layout under ``root`` (``download=True`` fetches
    it; needs internet)."""
    try:
        from torchvision import datasets as tv
    except ImportError as err:
        raise ImportError("CIFAR in torchvision's layout needs torchvision: pip install torchvision "
                          "(or use 'cifar10_folder' with CIFAR-10 as JPEG files)") from err

    kinds = {"cifar10": tv.CIFAR10, "cifar100": tv.CIFAR100}
    if name not in kinds:
        raise DataError(f"name must be 'cifar10' or 'cifar100', got {name!r}")
    try:
        data = kinds[name](os.fspath(root), train=train, download=download)
    except RuntimeError as err:
        raise FileNotFoundError(f"{name} not found under {root} ({err}). Pass download=True (needs "
                                "internet), or for CIFAR-10 as JPEG files use 'cifar10_folder'"
                                ) from err
    return ArrayDataset(data.data, np.asarray(data.targets), transform, classes=data.classes)


@dataclass(frozen=True)
class DatasetEntry:
    """A dataset of :data:`~pada_fast.registry.DATASETS`: ``load(root, split, subset, seed, download,
    bad_files, subset_mode)`` -> ``(dataset, subset_taken)`` (image folders take the subset before
    their bad-file check), the normalisation of its training and evaluation transforms, and whether
    it needs a root (``default_root`` if one is conventional)."""
    load: Callable
    mean: tuple
    std: tuple
    needs_root: bool = True
    default_root: str | None = None
    recipe: str = "colour"              # the family of its default recipe (transforms.RECIPE_FAMILIES)
    image_folder: bool = False          # files read on access (pada-fast verify-data checks them)


def _image_folder(root, split, subset, seed, download, bad_files, subset_mode, splits=None,
                  wanted="train/ and test/"):
    folders = [os.path.join(os.fspath(root), d) for d in (splits or (split,))]
    folder = next((f for f in folders if os.path.isdir(f)), None)
    if folder is None:
        raise FileNotFoundError(f"image-folder root {root} must hold {wanted} image-folder trees, but "
                                f"{' or '.join(folders)} is missing")
    return ImageFolderDataset(folder, subset=subset, seed=seed, bad_files=bad_files, subset_mode=subset_mode), True


def _imagenet_folder(root, split, *args):
    # ImageNet's usual layout names the held-out split val/; test/ is accepted too.
    return _image_folder(root, split, *args, splits=("train",) if split == "train" else ("val", "test"),
                         wanted="train/ and val/")


DATASETS.register("cifar10_folder", DatasetEntry(_image_folder, T.CIFAR10_MEAN, T.CIFAR10_STD, image_folder=True))
DATASETS.register("imagenet_folder", DatasetEntry(_imagenet_folder, (), (), recipe="imagenet", image_folder=True))
DATASETS.register("cifar10", DatasetEntry(
    lambda root, split, subset, seed, download, *_: (load_torchvision_cifar(root, split == "train", download, "cifar10"), False),
    T.CIFAR10_MEAN, T.CIFAR10_STD))
DATASETS.register("cifar100", DatasetEntry(
    lambda root, split, subset, seed, download, *_: (load_torchvision_cifar(root, split == "train", download, "cifar100"), False),
    T.CIFAR100_MEAN, T.CIFAR100_STD))
DATASETS.register("fashion_mnist", DatasetEntry(
    lambda root, split, *_: (load_fashion_mnist(root, split == "train"), False),
    T.FASHION_MNIST_MEAN, T.FASHION_MNIST_STD, needs_root=False, default_root=DEFAULT_FASHION_MNIST_ROOT,
    recipe="grey"))
DATASETS.register("digits", DatasetEntry(
    lambda root, split, subset, seed, *_: (load_digits_dataset(split, seed), False),
    T.DIGITS_MEAN, T.DIGITS_STD, needs_root=False, recipe="grey"))
DATASET_NAMES = DATASETS.names()


def _transform_for(entry: DatasetEntry, dataset: ImageDataset, augment):
    if entry.recipe == "imagenet":     # sizes differ per image: no size needed
        steps = T.recipe_steps(augment, entry.recipe, 0)
        return T.imagenet_train_transform() if steps else T.imagenet_eval_transform()
    steps = T.recipe_steps(augment, entry.recipe, dataset.image_size)
    if not steps:
        return T.eval_transform(entry.mean, entry.std)
    return T.recipe_transform(steps, entry.mean, entry.std, dataset.image_size)


def recipe_of(data_cfg, dataset: ImageDataset) -> T.Recipe:
    """``data.augment`` of a ``DataConfig`` for ``dataset``, parsed."""
    family = DATASETS.get(data_cfg.dataset).recipe
    return T.Recipe.parse(data_cfg.augment, family, 0 if family == "imagenet" else dataset.image_size)


def training_recipe(data_cfg, dataset: ImageDataset) -> str:
    """``data.augment`` of a ``DataConfig`` for ``dataset`` as one canonical string
    (``crop:4+flip``, ``flip``, ``none``, ...): what ground-truth tables record and ``rank``
    compares."""
    return recipe_of(data_cfg, dataset).text


def build_dataset(name: str, root: Optional[str | os.PathLike] = None, split: str = "train",
                  augment: bool | str = False, subset: Optional[int] = None, seed: int = 0,
                  download: bool = False, bad_files: str = "error",
                  subset_mode: str = "stratified", image_size: Optional[int] = None) -> ImageDataset:
    """The dataset ``name`` with its transform: ``augment`` is a training recipe (see
    ``transforms.recipe_steps``: True is the dataset's default, False none).

    name: 'cifar10_folder' (root holds train/ and test/ image-folder trees), 'imagenet_folder'
    (root holds train/ and val/; random-resized-crop 224 + flip, or resize 256 + centre crop), 'cifar10' /
    'cifar100' (torchvision layout under root), 'fashion_mnist' (IDX files in root, default
    /usr/share/datasets/fashion-mnist), 'digits' (bundled with scikit-learn; root ignored).
    ``subset``: keep that many samples, class-stratified (or uniformly random with
    ``subset_mode="random"``), chosen with ``seed`` (the
    digits train/test split also uses ``seed``). ``image_size``: in-memory datasets only, every image
    resized once to that square size (:meth:`ArrayDataset.resized`). ``bad_files``: see :class:`ImageFolderDataset`
    (image folders only); what was skipped is printed to stderr and kept in ``dataset.skipped``.
    """
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS.names())}")
    if split not in SPLITS:
        raise DataError(f"split must be 'train' or 'test', got {split!r}")
    entry = DATASETS.get(name)
    if root is None and entry.needs_root:
        raise DataError(f"dataset {name!r} needs root= (the directory holding its files)")
    dataset, subset_taken = entry.load(root or entry.default_root, split, subset, seed, download, bad_files,
                                       subset_mode)
    if subset_taken:
        subset = None       # taken before the bad-file check, so only the chosen images are decoded
    if image_size is not None:
        if not isinstance(dataset, ArrayDataset):
            raise DataError(f"data.image_size={image_size} resizes in-memory datasets (fashion_mnist, cifar10, "
                            f"cifar100, digits), not the image folders of {name!r}: leave it unset")
        dataset = dataset.resized(int(image_size))
    if subset is not None:
        dataset = dataset.subset(subset, seed, subset_mode)
    skipped = dataset.skipped
    if skipped:
        listing = "\n  ".join(skipped[:10]) + (f"\n  ... and {len(skipped) - 10} more" if len(skipped) > 10 else "")
        _log.warning(f"pada-fast: skipped {len(skipped)} bad file(s) of {name} {split} (data.bad_files=skip), "
                     f"{len(dataset)} images left:\n  {listing}")
    dataset.transform = _transform_for(entry, dataset, augment)
    return dataset


def build_split(data_cfg, split: str, augment: bool | str = False, subset: Optional[int] = None,
                root: Optional[str | os.PathLike] = None) -> ImageDataset:
    """``split`` of the dataset a ``DataConfig`` names (``root`` overrides ``data.root``), the
    digits split and any ``subset`` drawn with ``data.split_seed`` and never a training seed."""
    d = data_cfg
    return build_dataset(d.dataset, root or d.root, split, augment=augment, subset=subset,
                         seed=d.split_seed, download=d.download, bad_files=d.bad_files,
                         subset_mode=d.subset_mode, image_size=d.image_size)
