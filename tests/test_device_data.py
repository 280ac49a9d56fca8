"""``data.backend: device`` against the torch loader: the same batches bitwise (every recipe, any
stream and positions, a short last batch), the same training, and one-line errors for what the
device backend does not run."""
import numpy as np
import pytest
import torch

from pada_fast.config import ConfigError
from pada_fast.data import transforms as T
from pada_fast.data.datasets import ArrayDataset, load_digits_dataset
from pada_fast.data.device_data import DeviceResidentDataset
from pada_fast.data.loader import build_loader
from test_trainer import trained_per_value


def colour_images(n=70, size=12, seed=0):
    rng = np.random.default_rng(seed)
    return ArrayDataset(rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8), rng.integers(0, 5, n))


RECIPES = {
    "crop:1 (digits default)": ["crop:1"],
    "flip": ["flip"],
    "crop:4+flip (CIFAR)": ["crop:4", "flip"],
    "flip+crop:2": ["flip", "crop:2"],
    "none": [],
}


@pytest.mark.parametrize("recipe", list(RECIPES), ids=list(RECIPES))
@pytest.mark.parametrize("kind", ["grey", "colour"])
def test_batches_equal_the_torch_loader_bitwise(recipe, kind):
    steps = RECIPES[recipe]
    if kind == "grey":
        dataset = load_digits_dataset("train")
        mean, std = T.DIGITS_MEAN, T.DIGITS_STD
    else:
        dataset = colour_images()
        mean, std = T.CIFAR10_MEAN, T.CIFAR10_STD
    size = dataset.image_size
    dataset.transform = T.recipe_transform(steps, mean, std, size) if steps else T.eval_transform(mean, std)
    stream = torch.randint(0, len(dataset), (150,), generator=torch.Generator().manual_seed(3))
    positions = torch.arange(3, 3 + 2 * 150, 2)          # a shard's global positions
    device_data = DeviceResidentDataset(dataset, "cpu")
    for drop_last, pos in ((False, None), (True, positions)):
        expected = list(build_loader(dataset, stream, 32, drop_last=drop_last, seed=5, epoch=2, positions=pos))
        got = list(device_data.batches(stream, 32, drop_last=drop_last, seed=5, epoch=2, positions=pos))
        assert len(got) == len(expected) == (4 if drop_last else 5)
        for (xi, yi, ii), (xe, ye, ie) in zip(got, expected):
            assert xi.dtype == xe.dtype == torch.float32
            assert torch.equal(xi, xe)
            assert torch.equal(yi, ye) and torch.equal(ii, ie)
    other_epoch = next(iter(device_data.batches(stream, 32, seed=5, epoch=3)))[0]
    if steps:
        assert not torch.equal(other_epoch, got[0][0])      # augmentation is drawn per epoch


def test_training_with_the_device_backend_equals_the_torch_backend(tmp_path):
    runs = trained_per_value(tmp_path, "pada", "data.backend", ("torch", "device"))
    a, b = runs["torch"].model.state_dict(), runs["device"].model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(runs["torch"].data_sampler.probabilities(), runs["device"].data_sampler.probabilities())


def test_a_transform_the_device_cannot_run_is_one_line_naming_the_torch_backend():
    dataset = colour_images(size=40)
    dataset.transform = T.imagenet_train_transform(32)
    with pytest.raises(ConfigError, match="data.backend=torch"):
        DeviceResidentDataset(dataset, "cpu")


def test_images_of_several_sizes_are_refused():
    class Mixed(ArrayDataset):
        def read_image(self, index):
            image = super().read_image(index)
            return image[..., :-1, :-1] if index % 2 else image
    rng = np.random.default_rng(0)
    dataset = Mixed(rng.integers(0, 256, (8, 10, 10), dtype=np.uint8), np.zeros(8, dtype=np.int64))
    with pytest.raises(ConfigError, match="one size"):
        DeviceResidentDataset(dataset, "cpu")
