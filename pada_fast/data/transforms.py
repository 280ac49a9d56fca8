"""Image transforms on uint8 CHW tensors that draw their randomness from an explicit generator.

Every transform here is called as ``transform(image, generator)``: ``image`` is a uint8 tensor of
shape ``[C, H, W]`` and ``generator`` a :class:`torch.Generator` or ``None`` (then torch's global
RNG is used). Taking the generator as an argument is what lets the loader seed each sample from
(seed, epoch, stream position), so a batch does not depend on how many workers produced it.
torchvision's transforms draw from the global RNG only, which is why these are written out.

Order follows the usual torchvision CIFAR recipe: crop and flip on the stored uint8 pixels (padding
is black), then scale to [0, 1] and normalise.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F

# NAS-Bench-201's values (the PA&DA code inherits them): per-channel pixel mean/std over the
# training set, in 0..255 units divided by 255.
CIFAR10_MEAN = tuple(v / 255 for v in (125.3, 123.0, 113.9))
CIFAR10_STD = tuple(v / 255 for v in (63.0, 62.1, 66.7))
CIFAR100_MEAN = tuple(v / 255 for v in (129.3, 124.1, 112.4))
CIFAR100_STD = tuple(v / 255 for v in (68.2, 65.4, 70.4))
FASHION_MNIST_MEAN = (0.2860,)
FASHION_MNIST_STD = (0.3530,)
# scikit-learn digits after scaling 0..16 to 0..255 (computed over all 1,797 images).
DIGITS_MEAN = (0.3053,)
DIGITS_STD = (0.3759,)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Transform = Callable[[torch.Tensor, Optional[torch.Generator]], torch.Tensor]


class RandomCrop:
    """Zero-pad each side by ``padding`` pixels, then crop a random ``size`` x ``size`` window."""

    accepts_generator = True

    def __init__(self, size: int, padding: int = 0):
        if size < 1 or padding < 0:
            raise ValueError(f"RandomCrop needs size >= 1 and padding >= 0, got size={size}, "
                             f"padding={padding}")
        self.size = size
        self.padding = padding

    def draw(self, generator: Optional[torch.Generator], height: int, width: int) -> tuple[int, int]:
        """The window's ``(top, left)`` in the padded image of an ``height`` x ``width`` input: the
        random numbers one call takes from ``generator``, in the order it takes them (the
        device-resident loader draws them this way and crops a whole batch at once)."""
        height, width = height + 2 * self.padding, width + 2 * self.padding
        if height < self.size or width < self.size:
            raise ValueError(f"RandomCrop({self.size}, padding={self.padding}) cannot crop an image "
                             f"of {height}x{width} (after padding); lower size or raise padding")
        top = int(torch.randint(0, height - self.size + 1, (), generator=generator))
        left = int(torch.randint(0, width - self.size + 1, (), generator=generator))
        return top, left

    def __call__(self, image: torch.Tensor, generator: Optional[torch.Generator] = None):
        top, left = self.draw(generator, *image.shape[-2:])
        if self.padding:
            image = F.pad(image, (self.padding,) * 4)
        return image[..., top: top + self.size, left: left + self.size]

    def __repr__(self):
        return f"RandomCrop(size={self.size}, padding={self.padding})"


class RandomHorizontalFlip:
    accepts_generator = True

    def __init__(self, p: float = 0.5):
        self.p = p

    def draw(self, generator: Optional[torch.Generator], height: int = 0, width: int = 0) -> bool:
        """Whether one call flips (the one random number it takes from ``generator``)."""
        return torch.rand((), generator=generator).item() < self.p

    def __call__(self, image: torch.Tensor, generator: Optional[torch.Generator] = None):
        return image.flip(-1) if self.draw(generator) else image

    def __repr__(self):
        return f"RandomHorizontalFlip(p={self.p})"


class Cutout:
    """Zero a ``length`` x ``length`` square centred on a uniformly drawn pixel, clipped at the
    border (DeVries & Taylor 2017, as DARTS' evaluation applies it: after normalisation, so the
    square is the dataset mean)."""

    accepts_generator = True

    def __init__(self, length: int):
        if length < 1:
            raise ValueError(f"Cutout needs length >= 1, got {length}")
        self.length = length

    def draw(self, generator: Optional[torch.Generator], height: int, width: int) -> tuple[int, int, int, int]:
        """The square's ``(top, bottom, left, right)`` in an ``height`` x ``width`` image."""
        cy = int(torch.randint(0, height, (), generator=generator))
        cx = int(torch.randint(0, width, (), generator=generator))
        half = self.length // 2
        return (max(cy - half, 0), min(cy + self.length - half, height),
                max(cx - half, 0), min(cx + self.length - half, width))

    def __call__(self, image: torch.Tensor, generator: Optional[torch.Generator] = None):
        top, bottom, left, right = self.draw(generator, *image.shape[-2:])
        image = image.clone()
        image[..., top:bottom, left:right] = 0
        return image

    def __repr__(self):
        return f"Cutout(length={self.length})"


class ToFloat:
    """uint8 0..255 -> float32 0..1."""

    accepts_generator = True

    def __call__(self, image: torch.Tensor, generator: Optional[torch.Generator] = None):
        if image.dtype != torch.uint8:
            raise TypeError(f"ToFloat expects a uint8 image, got {image.dtype}; put it before any "
                            "transform that already converts to float")
        return image.to(torch.float32).div_(255.0)

    def __repr__(self):
        return "ToFloat()"


class Normalize:
    accepts_generator = True

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        if len(mean) != len(std):
            raise ValueError(f"Normalize: mean has {len(mean)} channels but std has {len(std)}")
        if any(s <= 0 for s in std):
            raise ValueError(f"Normalize: every std must be positive, got {tuple(std)}")
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __call__(self, image: torch.Tensor, generator: Optional[torch.Generator] = None):
        if image.shape[0] != self.mean.shape[0]:
            raise ValueError(f"Normalize has {self.mean.shape[0]} channel(s) but the image has "
                             f"{image.shape[0]} (shape {tuple(image.shape)})")
        return (image - self.mean) / self.std

    def __repr__(self):
        return f"Normalize(mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()})"


class Compose:
    """Apply steps in order, passing the same generator to each, so they draw from one stream."""

    accepts_generator = True

    def __init__(self, steps: Sequence[Transform]):
        self.steps = list(steps)

    def __call__(self, image: torch.Tensor, generator: Optional[torch.Generator] = None):
        for step in self.steps:
            image = step(image, generator)
        return image

    def __repr__(self):
        return "Compose(" + ", ".join(repr(s) for s in self.steps) + ")"


def apply_transform(transform, image: torch.Tensor,
                    generator: Optional[torch.Generator]) -> torch.Tensor:
    """Call ``transform`` with ``generator``; for third-party transforms that only use torch's global
    RNG (e.g. torchvision's), seed that RNG from ``generator`` inside a fork so the caller's global
    RNG state is left as it was."""
    if transform is None:
        return image.to(torch.float32).div_(255.0)
    if getattr(transform, "accepts_generator", False):
        return transform(image, generator)
    if generator is None:
        return transform(image)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(generator.initial_seed())
        return transform(image)


def cifar_train_transform(mean=CIFAR10_MEAN, std=CIFAR10_STD, size: int = 32,
                          padding: int = 4) -> Compose:
    """The paper's training augmentation: random crop ``size`` with ``padding`` + horizontal flip."""
    return Compose([RandomCrop(size, padding), RandomHorizontalFlip(), ToFloat(),
                    Normalize(mean, std)])


def eval_transform(mean=CIFAR10_MEAN, std=CIFAR10_STD) -> Compose:
    """Scale and normalise only (evaluation, and training without augmentation)."""
    return Compose([ToFloat(), Normalize(mean, std)])


def grey_train_transform(mean, std, size: int, padding: Optional[int] = None) -> Compose:
    """Pad-and-crop only (``padding`` defaults to size // 8, at least 1: 1 pixel for 8x8 digits,
    3 for 28x28); the default recipe of the grey datasets."""
    if padding is None:
        padding = max(1, size // 8)
    return Compose([RandomCrop(size, padding), ToFloat(), Normalize(mean, std)])


# -- training recipes (``data.augment``) ----------------------------------------------------------
# A recipe is a named one or a list of steps, "crop:P" (zero-pad P pixels, random crop back to the
# image size), "flip" (horizontal, p=0.5) and "cutout:L" (an L x L square zeroed after
# normalisation), written comma-separated or as a YAML list.
AUGMENT_NAMES = ("default", "none", "flip", "crop", "crop_flip")
# what a dataset's default recipe is (its registry entry says which family it belongs to): colour
# images like CIFAR's crop:4+flip, grey images (digits, Fashion-MNIST) a crop of size // 8 without
# flips, ImageNet its random-resized crop + flip
RECIPE_FAMILIES = ("colour", "grey", "imagenet")


def default_padding(family: str, size: int) -> int:
    """The crop padding of a default recipe: 4 for colour images, size // 8 for grey ones."""
    return max(1, size // 8) if family == "grey" else 4


def recipe_steps(augment, family: str, size: int) -> list[str]:
    """``data.augment`` as its canonical list of steps for a dataset of recipe ``family`` (see
    :data:`RECIPE_FAMILIES`) at image ``size``, e.g. ``["crop:4", "flip"]`` (CIFAR's default),
    ``["crop:3"]`` (28x28 grey default), ``[]`` (none), ``["imagenet"]`` (ImageNet's
    random-resized crop + flip). Booleans mean default / none."""
    if family not in RECIPE_FAMILIES:
        raise ValueError(f"recipe family must be one of {', '.join(RECIPE_FAMILIES)}, got {family!r}")
    if augment is True:
        augment = "default"
    if augment is False or augment is None:
        augment = "none"
    if family == "imagenet":
        if augment in ("default", "imagenet", ["imagenet"]):
            return ["imagenet"]
        if augment in ("none", []):
            return []
        raise ValueError(f"data.augment={augment!r}: imagenet_folder takes 'default' (random-resized "
                         "crop + flip) or 'none'")
    pad = default_padding(family, size)
    named = {"none": [], "flip": ["flip"], "crop": [f"crop:{pad}"], "crop_flip": [f"crop:{pad}", "flip"],
             "default": [f"crop:{pad}"] if family == "grey" else [f"crop:{pad}", "flip"]}
    if isinstance(augment, str) and augment.strip() in named:
        return named[augment.strip()]
    parts = augment.split(",") if isinstance(augment, str) else augment
    if not isinstance(parts, (list, tuple)):
        raise ValueError(f"data.augment must be a recipe name ({', '.join(AUGMENT_NAMES)}) or a list of "
                         f"steps like 'crop:4,flip', got {augment!r}")
    steps = []
    for part in parts:
        text = str(part).strip()
        if text == "flip":
            steps.append("flip")
        elif text == "crop":
            steps.append(f"crop:{pad}")
        elif text.startswith("crop:") and text[5:].isdigit() and int(text[5:]) >= 1:
            steps.append(f"crop:{int(text[5:])}")
        elif text.startswith("cutout:") and text[7:].isdigit() and int(text[7:]) >= 1:
            steps.append(f"cutout:{int(text[7:])}")
        else:
            raise ValueError(f"data.augment step {text!r} is not one of 'flip', 'crop', 'crop:P' "
                             f"(P >= 1 pixels of padding) or 'cutout:L' (L >= 1 pixels); or use a recipe "
                             f"name: {', '.join(AUGMENT_NAMES)}")
    return steps


def describe_recipe(steps: Sequence[str]) -> str:
    """The recipe as one string: steps joined by '+', or 'none'."""
    return "+".join(steps) if steps else "none"


@dataclass(frozen=True)
class Recipe:
    """A training recipe parsed once: its canonical steps (:func:`recipe_steps`) and their
    description (``crop:4+flip``, ``flip``, ``none``, ...), what checkpoints and tables record."""
    steps: tuple[str, ...]
    text: str

    @classmethod
    def parse(cls, augment, family: str, size: int) -> "Recipe":
        steps = tuple(recipe_steps(augment, family, size))
        return cls(steps, describe_recipe(steps))


def recipe_transform(steps: Sequence[str], mean, std, size: int) -> Compose:
    """The training transform of a canonical recipe (see :func:`recipe_steps`): crops and flips on
    the uint8 pixels, then scaling and normalisation, then cutout."""
    ops, after = [], []
    for step in steps:
        if step == "flip":
            ops.append(RandomHorizontalFlip())
        elif step.startswith("crop:"):
            ops.append(RandomCrop(size, int(step[5:])))
        elif step.startswith("cutout:"):
            after.append(Cutout(int(step[7:])))
        else:
            raise ValueError(f"recipe step {step!r} has no transform here (use recipe_steps first)")
    return Compose(ops + [ToFloat(), Normalize(mean, std)] + after)


def _resize(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bilinear, antialiased resize of a uint8 or float CHW image; returns the input dtype."""
    dtype = image.dtype
    out = F.interpolate(image[None].float(), size=(height, width), mode="bilinear", align_corners=False,
                        antialias=True)[0]
    return out.round().clamp(0, 255).to(dtype) if dtype == torch.uint8 else out


class RandomResizedCrop:
    """ImageNet training crop: a random window covering ``scale`` of the area with aspect ratio in
    ``ratio`` (log-uniform), resized to ``size``; 10 tries, then a central crop, as torchvision."""

    accepts_generator = True

    def __init__(self, size: int = 224, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
        self.size, self.scale, self.ratio = size, scale, ratio

    def __call__(self, image: torch.Tensor, generator: Optional[torch.Generator] = None):
        import math
        height, width = image.shape[-2:]
        area = height * width
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            u = torch.rand(2, generator=generator, dtype=torch.float64).tolist()
            target = area * (self.scale[0] + u[0] * (self.scale[1] - self.scale[0]))
            aspect = math.exp(log_ratio[0] + u[1] * (log_ratio[1] - log_ratio[0]))
            w = int(round(math.sqrt(target * aspect)))
            h = int(round(math.sqrt(target / aspect)))
            if 0 < w <= width and 0 < h <= height:
                top = int(torch.randint(0, height - h + 1, (), generator=generator))
                left = int(torch.randint(0, width - w + 1, (), generator=generator))
                return _resize(image[..., top: top + h, left: left + w], self.size, self.size)
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        return _resize(image[..., top: top + side, left: left + side], self.size, self.size)

    def __repr__(self):
        return f"RandomResizedCrop(size={self.size}, scale={self.scale}, ratio={self.ratio})"


class ResizeCenterCrop:
    """ImageNet evaluation: shorter side to ``resize``, then the central ``size`` x ``size``."""

    accepts_generator = True

    def __init__(self, resize: int = 256, size: int = 224):
        self.resize, self.size = resize, size

    def __call__(self, image: torch.Tensor, generator: Optional[torch.Generator] = None):
        height, width = image.shape[-2:]
        scale = self.resize / min(height, width)
        h, w = max(self.size, round(height * scale)), max(self.size, round(width * scale))
        image = _resize(image, h, w)
        top, left = (h - self.size) // 2, (w - self.size) // 2
        return image[..., top: top + self.size, left: left + self.size]

    def __repr__(self):
        return f"ResizeCenterCrop(resize={self.resize}, size={self.size})"


def imagenet_train_transform(size: int = 224) -> Compose:
    return Compose([RandomResizedCrop(size), RandomHorizontalFlip(), ToFloat(),
                    Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def imagenet_eval_transform(size: int = 224, resize: int = 256) -> Compose:
    return Compose([ResizeCenterCrop(resize, size), ToFloat(), Normalize(IMAGENET_MEAN, IMAGENET_STD)])
