import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pada_fast.data import transforms as T
from pada_fast.data.datasets import (ArrayDataset, ImageFolderDataset, build_dataset,
                                     load_digits_dataset, load_fashion_mnist)
from pada_fast.data.idx_format import read_idx, write_idx
from pada_fast.data.subset import stratified_subset_indices

SHARED = Path(os.environ.get("PADA_FAST_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
CIFAR_JPEG = SHARED / "datasets" / "cifar10-jpeg"
FASHION_ROOT = Path("/usr/share/datasets/fashion-mnist")


def make_tree(root: Path, counts: dict, size=(12, 10), ext="png"):
    rng = np.random.default_rng(0)
    for name, count in counts.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            pixels = rng.integers(0, 256, (size[0], size[1], 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i:03d}.{ext}")
    return root


# -- image folders --------------------------------------------------------------------------------
def test_image_folder_classes_order_and_samples(tmp_path):
    root = make_tree(tmp_path / "tree", {"cat": 3, "ant": 2, "bee": 4})
    (root / ".hidden").mkdir()
    (root / "cat" / ".DS_Store").write_bytes(b"junk")
    ds = ImageFolderDataset(root)
    assert ds.classes == ["ant", "bee", "cat"]
    assert len(ds) == 9 and ds.num_classes == 3 and ds.in_channels == 3
    assert list(ds.targets) == [0, 0, 1, 1, 1, 1, 2, 2, 2]
    assert ds.image_size == (12, 10)
    image, label = ds[2]
    assert image.dtype == torch.float32 and image.shape == (3, 12, 10) and label == 1
    # Default (no transform) is pixels / 255: identical to what PIL stored (PNG is lossless).
    expected = np.asarray(Image.open(root / "bee" / "000.png"), dtype=np.float32) / 255
    assert torch.allclose(image, torch.from_numpy(expected).permute(2, 0, 1))


def test_image_folder_grey_and_jpeg(tmp_path):
    root = make_tree(tmp_path / "tree", {"a": 1, "b": 1}, size=(8, 8), ext="jpg")
    ds = ImageFolderDataset(root, channels=1)
    assert ds[0][0].shape == (1, 8, 8) and ds.image_size == 8


def test_image_folder_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ImageFolderDataset(tmp_path / "nope")


def test_image_folder_no_class_folders(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "loose.png")
    with pytest.raises(ValueError, match="no class folders"):
        ImageFolderDataset(tmp_path)


def test_image_folder_empty_class_is_named(tmp_path):
    root = make_tree(tmp_path / "tree", {"ant": 2})
    (root / "zebra").mkdir()
    with pytest.raises(ValueError, match="zebra"):
        ImageFolderDataset(root)


def test_image_folder_foreign_file_is_named(tmp_path):
    root = make_tree(tmp_path / "tree", {"ant": 2})
    (root / "ant" / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="notes.txt"):
        ImageFolderDataset(root)


def test_image_folder_corrupt_file_is_named(tmp_path):
    root = make_tree(tmp_path / "tree", {"ant": 2, "bee": 1})
    (root / "bee" / "broken.jpg").write_bytes(b"this is not a jpeg" * 10)
    ds = ImageFolderDataset(root)  # listing does not decode
    broken = ds.paths.index(str(root / "bee" / "broken.jpg"))
    with pytest.raises(ValueError, match="broken.jpg"):
        ds[broken]
    with pytest.raises(ValueError, match="(?s)1 unreadable image.*broken.jpg"):
        ds.verify()


def test_image_folder_skip_policy_leaves_bad_files_out_and_lists_them(tmp_path):
    root = make_tree(tmp_path / "tree", {"ant": 3, "bee": 2})
    (root / "ant" / "notes.txt").write_text("hello")
    (root / "bee" / "broken.jpg").write_bytes(b"this is not a jpeg" * 10)
    ds = ImageFolderDataset(root, bad_files="skip")
    assert len(ds) == 5 and str(root / "bee" / "broken.jpg") not in ds.paths
    assert np.bincount(ds.targets).tolist() == [3, 2]
    assert len(ds.skipped) == 2
    assert "notes.txt: not an image" in ds.skipped[0] and "broken.jpg: unreadable" in ds.skipped[1]
    ds.verify()                                  # everything left decodes
    (root / "zebra").mkdir()                     # an empty class is still an error
    with pytest.raises(ValueError, match="zebra"):
        ImageFolderDataset(root, bad_files="skip")
    with pytest.raises(ValueError, match="bad_files must be one of"):
        ImageFolderDataset(root, bad_files="ignore")


def test_skip_policy_through_the_trainer_reports_and_writes_the_list(tmp_path, capsys):
    from pada_fast.config import load_config
    from pada_fast.train.trainer import Trainer
    data = tmp_path / "data"
    make_tree(data / "train", {"a": 8, "b": 8}, size=(32, 32))
    make_tree(data / "test", {"a": 2, "b": 2}, size=(32, 32))
    (data / "train" / "a" / "bad.png").write_bytes(b"\x89PNG broken")
    sets = ["data.dataset=cifar10_folder", f"data.root={data}", "data.batch_size=8", "space.C=4",
            "space.N=1", "optim.epochs=1", "run.threads=1", f"run.out_dir={tmp_path / 'run'}",
            "run.progress=lines"]
    with pytest.raises(ValueError, match="bad.png"):
        Trainer(load_config(None, sets)).fit()
    trainer = Trainer(load_config(None, sets + ["data.bad_files=skip"]), overwrite=True)   # the failed run is moved aside
    assert len(trainer.train_set) == 16
    assert "skipped 1 bad file(s) of cifar10_folder train" in capsys.readouterr().err
    assert "bad.png: unreadable" in (tmp_path / "run" / "skipped_files.txt").read_text()
    trainer.fit()


def test_image_folder_limit_and_subset(tmp_path):
    root = make_tree(tmp_path / "tree", {"a": 6, "b": 6, "c": 3}, size=(4, 4))
    limited = ImageFolderDataset(root, limit_per_class=4)
    assert np.bincount(limited.targets).tolist() == [4, 4, 3]
    assert limited.paths[:4] == [str(root / "a" / f"{i:03d}.png") for i in range(4)]
    sub = ImageFolderDataset(root, subset=10, seed=1)
    assert len(sub) == 10 and np.bincount(sub.targets).tolist() == [4, 4, 2]
    assert ImageFolderDataset(root, subset=10, seed=1).paths == sub.paths
    assert sub.num_classes == 3


# -- subsets, arrays ------------------------------------------------------------------------------
def test_stratified_subset_proportions_and_determinism():
    targets = np.repeat(np.arange(4), [50, 30, 15, 5])
    a = stratified_subset_indices(targets, 20, seed=3)
    assert np.bincount(targets[a]).tolist() == [10, 6, 3, 1]
    assert np.array_equal(a, stratified_subset_indices(targets, 20, seed=3))
    assert not np.array_equal(a, stratified_subset_indices(targets, 20, seed=4))
    assert np.all(np.diff(a) > 0)
    assert len(stratified_subset_indices(targets, 7, seed=0)) == 7
    with pytest.raises(ValueError, match="between 1 and"):
        stratified_subset_indices(targets, 101)


def test_array_dataset_shapes_and_errors():
    images = np.arange(2 * 5 * 6 * 3, dtype=np.uint8).reshape(2, 5, 6, 3)
    ds = ArrayDataset(images, [1, 0])
    assert ds.in_channels == 3 and ds.image_size == (5, 6) and ds.num_classes == 2
    image, label = ds[0]
    assert image.shape == (3, 5, 6) and label == 1
    assert torch.allclose(image[:, 1, 2] * 255, torch.tensor(images[0, 1, 2], dtype=torch.float32))
    with pytest.raises(TypeError, match="uint8"):
        ArrayDataset(images.astype(np.float32), [1, 0])
    with pytest.raises(ValueError, match="one label per image"):
        ArrayDataset(images, [1, 0, 2])
    picked = ds.select([1, 1])
    assert len(picked) == 2 and list(picked.targets) == [0, 0] and picked.num_classes == 2
    with pytest.raises(IndexError, match="out of range"):
        ds.select([2])


def test_digits_shapes_and_split():
    train = load_digits_dataset("train", seed=0)
    test = load_digits_dataset("test", seed=0)
    assert (len(train), len(test)) == (1297, 500)
    assert train.in_channels == 1 and train.image_size == 8 and train.num_classes == 10
    assert train.images.dtype == torch.uint8 and int(train.images.max()) == 255
    assert np.bincount(test.targets).min() >= 48  # stratified: about 50 of each digit
    again = load_digits_dataset("test", seed=0)
    assert torch.equal(again.images, test.images)
    image, label = build_dataset("digits", split="train", augment=True)[0]
    assert image.shape == (1, 8, 8) and isinstance(label, int)


def test_fashion_mnist_from_idx_files(tmp_path):
    rng = np.random.default_rng(0)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (7, 28, 28),
                                                                    dtype=np.uint8), compress=True)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.arange(7, dtype=np.uint8))
    ds = load_fashion_mnist(tmp_path, train=False)
    assert len(ds) == 7 and ds.image_size == 28 and ds.in_channels == 1 and ds.num_classes == 10
    assert ds[3][0].shape == (1, 28, 28) and ds[3][1] == 3
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        load_fashion_mnist(tmp_path, train=True)


def test_idx_truncated_file_is_an_error(tmp_path):
    path = tmp_path / "x-idx1-ubyte"
    write_idx(path, np.arange(10, dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(ValueError, match="truncated"):
        read_idx(path)


@pytest.mark.skipif(not (FASHION_ROOT / "t10k-labels-idx1-ubyte.gz").exists()
                    and not (FASHION_ROOT / "t10k-labels-idx1-ubyte").exists(),
                    reason="Fashion-MNIST not installed (apt install dataset-fashion-mnist)")
def test_fashion_mnist_real():
    test = load_fashion_mnist(FASHION_ROOT, train=False)
    assert len(test) == 10_000 and test.image_size == 28
    assert np.bincount(test.targets).tolist() == [1000] * 10


# -- transforms -------------------------------------------------------------------------------
def test_transforms_deterministic_given_generator():
    image = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    transform = T.cifar_train_transform()
    outs = [transform(image, torch.Generator().manual_seed(5)) for _ in range(2)]
    assert torch.equal(outs[0], outs[1]) and outs[0].shape == (3, 32, 32)
    different = [transform(image, torch.Generator().manual_seed(s)) for s in range(8)]
    assert any(not torch.equal(different[0], d) for d in different[1:])
    evaluated = T.eval_transform()(image, None)
    mean = torch.tensor(T.CIFAR10_MEAN).view(3, 1, 1)
    std = torch.tensor(T.CIFAR10_STD).view(3, 1, 1)
    assert torch.allclose(evaluated, (image / 255 - mean) / std, atol=1e-6)


def test_random_crop_is_a_window_of_the_padded_image():
    image = torch.arange(1, 37, dtype=torch.uint8).view(1, 6, 6)
    padded = torch.nn.functional.pad(image, (2, 2, 2, 2))
    windows = {(t, l): padded[:, t:t + 6, l:l + 6] for t in range(5) for l in range(5)}
    crop = T.RandomCrop(6, padding=2)
    seen = set()
    for seed in range(200):
        out = crop(image, torch.Generator().manual_seed(seed))
        match = [key for key, window in windows.items() if torch.equal(out, window)]
        assert len(match) == 1
        seen.add(match[0])
    assert len(seen) == 25  # every offset reachable


# -- real CIFAR-10 JPEGs ----------------------------------------------------------------------------
@pytest.mark.skipif(not CIFAR_JPEG.is_dir(), reason=f"CIFAR-10 JPEGs not at {CIFAR_JPEG}")
def test_cifar10_folder_real_counts():
    # Listing only (no decoding): cheap even for 60,000 files.
    train = ImageFolderDataset(CIFAR_JPEG / "train")
    test = ImageFolderDataset(CIFAR_JPEG / "test")
    assert (len(train), len(test)) == (50_000, 10_000)
    assert train.num_classes == 10 and np.bincount(train.targets).tolist() == [5000] * 10
    ds = build_dataset("cifar10_folder", CIFAR_JPEG, "train", augment=True, subset=10_000, seed=0)
    assert len(ds) == 10_000 and np.bincount(ds.targets).tolist() == [1000] * 10
    image, label = ds[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32 and 0 <= label < 10


def test_pil_fallback_decodes_the_same_pixels(tmp_path):
    from pada_fast.data.decode import decode_image_file, decode_with_pil

    root = make_tree(tmp_path / "tree", {"a": 1}, size=(5, 7))
    path = str(root / "a" / "000.png")
    assert torch.equal(decode_image_file(path), decode_with_pil(path))
    # RGB -> grey conversion rounds differently in libpng's and PIL's code: off by at most one.
    grey = decode_image_file(path, 1).int() - decode_with_pil(path, 1).int()
    assert grey.shape == (1, 5, 7) and int(grey.abs().max()) <= 1


def test_build_dataset_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'"):
        build_dataset("imagenet", tmp_path)
    with pytest.raises(ValueError, match="split must be"):
        build_dataset("digits", split="val")
    with pytest.raises(FileNotFoundError, match="must hold train/ and test/"):
        build_dataset("cifar10_folder", tmp_path, "test")
    with pytest.raises(FileNotFoundError, match="download=True"):
        build_dataset("cifar10", tmp_path / "nothing", "train")


def test_build_dataset_folder_subset_and_transform(tmp_path):
    make_tree(tmp_path / "test", {"a": 4, "b": 4}, size=(32, 32))
    ds = build_dataset("cifar10_folder", tmp_path, "test", augment=False, subset=4, seed=0)
    assert len(ds) == 4 and np.bincount(ds.targets).tolist() == [2, 2]
    image, _ = ds[0]
    raw = ds.read_image(0).float() / 255
    mean = torch.tensor(T.CIFAR10_MEAN).view(3, 1, 1)
    std = torch.tensor(T.CIFAR10_STD).view(3, 1, 1)
    assert torch.allclose(image, (raw - mean) / std, atol=1e-6)


def test_imagenet_folder_transforms(tmp_path):
    from PIL import Image
    import numpy as np
    from pada_fast.data.datasets import build_dataset
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls in ("n01", "n02"):
            d = tmp_path / split / cls
            d.mkdir(parents=True)
            for i in range(2):
                Image.fromarray(rng.integers(0, 255, (300, 260 + 40 * i, 3), dtype=np.uint8)).save(d / f"{i}.jpg")
    train = build_dataset("imagenet_folder", tmp_path, "train", augment=True)
    val = build_dataset("imagenet_folder", tmp_path, "test")
    assert len(train) == len(val) == 4 and train.num_classes == 2
    g = torch.Generator().manual_seed(0)
    x, y = train.sample(0, g)
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32
    x2, _ = train.sample(0, torch.Generator().manual_seed(0))
    assert torch.equal(x, x2)
    v, _ = val[3]
    assert v.shape == (3, 224, 224)
    with pytest.raises(FileNotFoundError, match="train/ and val/"):
        build_dataset("imagenet_folder", tmp_path / "nothing", "test")


def test_image_size_resizes_in_memory_datasets_by_area_averaging():
    from pada_fast.config import load_config
    from pada_fast.data.datasets import build_split
    cfg = load_config(None, ["data.image_size=4"])
    small = build_split(cfg.data, "train")
    full = build_split(load_config(None, []).data, "train")
    assert small.image_size == 4 and full.image_size == 8 and len(small) == len(full)
    block = full.images[0, 0, :2, :2].float().mean()
    assert int(small.images[0, 0, 0, 0]) == int(torch.round(block))
    assert list(small.targets) == list(full.targets)


def test_image_size_on_an_image_folder_is_refused(tmp_path):
    from pada_fast.data.datasets import build_dataset
    from pada_fast.errors import DataError
    (tmp_path / "train" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match="image_size"):
        build_dataset("cifar10_folder", tmp_path, "train", image_size=16)
