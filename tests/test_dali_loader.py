"""DALI backend vs the torch loader: same stream => same samples, in the same order.

Runs on the CPU (``device_id=None`` pipelines); skipped when NVIDIA DALI is not installed."""
import threading

import numpy as np
import pytest
import torch

pytest.importorskip("nvidia.dali")

from pada_fast.data import transforms as T  # noqa: E402
from pada_fast.data.dali_loader import (DaliIndexStreamLoader, UnreadableImageError,  # noqa: E402
                                        build_dali_loader, sample_seeds)
from pada_fast.data.datasets import ArrayDataset, ImageFolderDataset  # noqa: E402
from pada_fast.data.loader import (build_loader, sample_seed, shard_positions,  # noqa: E402
                                   shard_stream)

# Pixel tolerance for JPEG trees: DALI and torchvision both decode with libjpeg-turbo and agree
# exactly here, but JPEG decoders (IDCT, chroma upsampling) may legitimately differ by a few
# levels, so the comparison allows 4/255 per pixel (in normalised units) and checks the mean.
JPEG_LEVELS = 4
MIN_STD = min(T.CIFAR10_STD)


def weighted_stream(n, length, seed=0):
    """A DA-style stream: ``length`` draws with replacement from a skewed q (repeats likely)."""
    g = torch.Generator().manual_seed(seed)
    q = torch.rand(n, generator=g) ** 4
    return torch.multinomial(q, length, replacement=True, generator=g)


@pytest.fixture(scope="module")
def jpeg_root(tmp_path_factory):
    from PIL import Image

    root = tmp_path_factory.mktemp("tree")
    rng = np.random.default_rng(0)
    for c in range(3):
        folder = root / f"class{c}"
        folder.mkdir()
        for i in range(10):
            # Smooth-ish images (noise + gradient) so JPEG is not pure noise.
            base = np.linspace(0, 200, 32, dtype=np.float64)[None, :, None] + 20 * c
            pixels = np.clip(base + rng.normal(0, 25, (32, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i:02d}.jpg", quality=90)
    return root


def folder_dataset(root, transform=None):
    return ImageFolderDataset(root, transform if transform is not None else T.eval_transform())


def array_dataset(transform=None, n=40):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    return ArrayDataset(images, np.arange(n) % 5,
                        transform if transform is not None else T.eval_transform())


def collect(loader):
    batches = list(loader)
    return (torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches]),
            torch.cat([b[2] for b in batches]), [len(b[2]) for b in batches])


def assert_images_close(dali_images, torch_images, jpeg):
    if not jpeg:
        torch.testing.assert_close(dali_images, torch_images, atol=1e-5, rtol=0)
        return
    diff = (dali_images - torch_images).abs()
    assert diff.max().item() <= JPEG_LEVELS / 255 / MIN_STD + 1e-5
    assert diff.mean().item() <= 1 / 255 / MIN_STD


@pytest.mark.parametrize("kind", ["folder", "array"])
@pytest.mark.parametrize("num_workers", [0, 2])
def test_same_samples_in_same_order_as_torch_loader(jpeg_root, kind, num_workers):
    dataset = folder_dataset(jpeg_root) if kind == "folder" else array_dataset()
    stream = weighted_stream(len(dataset), 45)
    assert len(torch.unique(stream)) < len(stream)  # the stream repeats samples
    with build_dali_loader(dataset, stream, batch_size=8, num_workers=num_workers,
                           augment="none") as loader:
        assert len(loader) == 6
        images, labels, indices, sizes = collect(loader)
    ref_images, ref_labels, ref_indices, ref_sizes = collect(build_loader(dataset, stream, 8))
    assert sizes == ref_sizes == [8, 8, 8, 8, 8, 5]
    assert torch.equal(indices, stream) and torch.equal(indices, ref_indices)
    assert torch.equal(labels, ref_labels)
    assert images.shape == (45, 3, 32, 32) and images.dtype == torch.float32
    assert labels.dtype == torch.int64 and indices.dtype == torch.int64
    assert_images_close(images, ref_images, jpeg=kind == "folder")


@pytest.mark.parametrize("kind", ["folder", "array"])
def test_cifar_augmentation_matches_torch_transform(jpeg_root, kind):
    """The worker draws crop and flip like transforms.cifar_train_transform, from the same
    per-position seed, so both backends augment every sample identically."""
    transform = T.cifar_train_transform()
    dataset = folder_dataset(jpeg_root, transform) if kind == "folder" else array_dataset(transform)
    stream = weighted_stream(len(dataset), 30, seed=2)
    with build_dali_loader(dataset, stream, batch_size=8, num_workers=2, seed=3, epoch=2,
                           augment="cifar", drop_last=True) as loader:
        images, _, indices, sizes = collect(loader)
        ref_images, _, ref_indices, _ = collect(build_loader(dataset, stream, 8, seed=3, epoch=2,
                                                             drop_last=True))
        assert sizes == [8, 8, 8] and torch.equal(indices, ref_indices)
        assert_images_close(images, ref_images, jpeg=kind == "folder")
        # Another epoch draws other crops and flips (and still matches torch).
        loader.set_epoch(stream, epoch=3)
        other = collect(loader)[0]
        assert not torch.allclose(other, images)
        assert_images_close(other, collect(build_loader(dataset, stream, 8, seed=3, epoch=3,
                                                        drop_last=True))[0],
                            jpeg=kind == "folder")


def test_set_epoch_swaps_stream_without_rebuild(jpeg_root):
    dataset = folder_dataset(jpeg_root)
    loader = DaliIndexStreamLoader(dataset, 7, num_workers=2, augment="none")
    with pytest.raises(RuntimeError, match="set_epoch"):
        iter(loader)
    streams = [torch.randperm(30, generator=torch.Generator().manual_seed(0)),
               weighted_stream(30, 50, seed=1), weighted_stream(30, 13, seed=2)]
    try:
        for epoch, stream in enumerate(streams):
            loader.set_epoch(stream, epoch)
            assert torch.equal(collect(loader)[2], stream)
        # Iterating again without set_epoch serves the same stream again (like a DataLoader).
        assert torch.equal(collect(loader)[2], streams[-1])
        # An epoch abandoned part-way is cancelled; the next stream starts cleanly.
        loader.set_epoch(streams[1], 10)
        abandoned = iter(loader)
        next(abandoned)
        loader.set_epoch(streams[0], 11)
        assert torch.equal(collect(loader)[2], streams[0])
        with pytest.raises(RuntimeError, match="earlier epoch"):
            next(abandoned)
        assert loader.builds == 1
    finally:
        loader.close()


@pytest.mark.parametrize("eval_mode", [False, True])
def test_imagenet_style_augmentation(jpeg_root, eval_mode):
    dataset = folder_dataset(jpeg_root)
    stream = weighted_stream(30, 10)
    kwargs = dict(batch_size=5, num_workers=0, augment="imagenet", eval_mode=eval_mode, seed=1)
    with build_dali_loader(dataset, stream, epoch=0, **kwargs) as loader:
        first, labels, indices, _ = collect(loader)
        again = collect(loader)[0]
        loader.set_epoch(stream, 1)
        next_epoch = collect(loader)[0]
    assert first.shape == (10, 3, 224, 224) and torch.isfinite(first).all()
    assert torch.equal(indices, stream)
    assert torch.equal(labels, torch.as_tensor(dataset.targets)[stream])
    torch.testing.assert_close(first, again)  # seeds come from (seed, epoch, position)
    assert torch.equal(first, next_epoch) == eval_mode  # eval is deterministic


@pytest.mark.parametrize("stream, error, match", [
    (torch.tensor([], dtype=torch.long), ValueError, "empty"),
    (torch.tensor([0, 3, 40]), IndexError, "position 2 holds 40"),
    (torch.tensor([0, -1]), IndexError, "position 1 holds -1"),
    (torch.tensor([0.0, 1.0]), TypeError, "integer"),
    (torch.zeros(2, 2, dtype=torch.long), ValueError, "1-D"),
])
def test_bad_streams_rejected_at_once(stream, error, match):
    dataset = array_dataset()
    with pytest.raises(error, match=match):
        build_dali_loader(dataset, stream, batch_size=4)
    # The torch loader raises the same error (shared validation).
    with pytest.raises(error, match=match):
        build_loader(dataset, stream, batch_size=4)


def test_bad_arguments_and_bad_stream_on_a_live_loader():
    dataset = array_dataset()
    with pytest.raises(ValueError, match="no batch at all"):
        build_dali_loader(dataset, torch.arange(3), batch_size=4, drop_last=True)
    with pytest.raises(ValueError, match="augment"):
        DaliIndexStreamLoader(dataset, 4, augment="autoaugment")
    with pytest.raises(TypeError, match="ImageFolderDataset"):
        DaliIndexStreamLoader(torch.utils.data.TensorDataset(torch.zeros(3)), 4)
    grey = ArrayDataset(np.zeros((4, 8, 8), np.uint8), np.arange(4))  # no transform, 1 channel
    with pytest.raises(ValueError, match="mean= and std="):
        DaliIndexStreamLoader(grey, 2)
    with build_dali_loader(dataset, torch.arange(8), batch_size=4, num_workers=0) as loader:
        with pytest.raises(IndexError, match="position 1 holds 99"):
            loader.set_epoch(torch.tensor([1, 99]), 1)
        with pytest.raises(ValueError, match="positions has 2 entries"):
            loader.set_epoch(torch.arange(3), 1, positions=torch.arange(2))
        assert torch.equal(collect(loader)[2], torch.arange(8))  # still serves its stream


def test_grey_images_take_normalisation_from_the_transform():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 8, 8), dtype=np.uint8)
    transform = T.grey_train_transform(T.DIGITS_MEAN, T.DIGITS_STD, size=8, padding=1)
    dataset = ArrayDataset(images, np.arange(12) % 3, transform)
    stream = weighted_stream(12, 9)
    with build_dali_loader(dataset, stream, 4, num_workers=0, seed=5, augment="cifar",
                           padding=1, flip=False) as loader:
        got = collect(loader)[0]
    ref = collect(build_loader(dataset, stream, 4, seed=5))[0]
    assert got.shape == (9, 1, 8, 8)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)


def test_sharded_positions_match_single_process_augmentation():
    dataset = array_dataset(T.cifar_train_transform())
    stream = weighted_stream(len(dataset), 23, seed=4)
    for rank in range(2):
        shard = shard_stream(stream, rank, 2)
        positions = shard_positions(len(stream), rank, 2)
        with build_dali_loader(dataset, shard, 4, num_workers=0, seed=7,
                               positions=positions) as loader:
            got = collect(loader)
        ref = collect(build_loader(dataset, shard, 4, seed=7, positions=positions))
        assert torch.equal(got[2], ref[2])
        torch.testing.assert_close(got[0], ref[0], atol=1e-5, rtol=0)


def test_vectorised_seeds_equal_sample_seed():
    positions = np.array([0, 1, 2, 17, 10**6, 2**40])
    for seed, epoch in [(0, 0), (3, 7), (-1, 2**33), (2**63 + 5, 1)]:
        expected = [sample_seed(seed, epoch, int(p)) for p in positions]
        assert sample_seeds(seed, epoch, positions).tolist() == expected


def _run_with_timeout(fn, timeout):
    result = {}

    def target():
        try:
            result["value"] = fn()
        except BaseException as err:  # noqa: BLE001 - handed to the test
            result["error"] = err

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"the loader hung for more than {timeout} s"
    return result


@pytest.mark.parametrize("damage", ["garbage", "bad_body"])
def test_corrupt_jpeg_raises_error_naming_the_file(jpeg_root, tmp_path, damage):
    """'garbage': no JPEG marker, caught by the worker's cheap check; 'bad_body': a valid header
    followed by junk, which only DALI's decoder notices (the loader then finds the file)."""
    import shutil

    root = tmp_path / "tree"
    shutil.copytree(jpeg_root, root)
    dataset = folder_dataset(root)
    bad = dataset.paths[13]
    good = open(bad, "rb").read()
    junk = np.random.default_rng(0).integers(0, 256, 600, dtype=np.uint8).tobytes()
    with open(bad, "wb") as handle:
        handle.write(junk if damage == "garbage" else good[:20] + junk)
    loader = build_dali_loader(dataset, torch.arange(30), batch_size=4, num_workers=2,
                               augment="none")
    try:
        outcome = _run_with_timeout(lambda: collect(loader), timeout=60)
        assert isinstance(outcome.get("error"), UnreadableImageError), outcome
        message = str(outcome["error"])
        assert bad in message and "dataset index 13" in message
        # Which path found it: the worker's marker check, or DALI's decoder then a re-decode.
        assert ("not a JPEG file" if damage == "garbage" else "DALI said") in message
        # The loader recovers: the next epoch rebuilds the pipeline and runs.
        loader.set_epoch(torch.tensor([0, 1, 2, 14]), 1)
        assert torch.equal(collect(loader)[2], torch.tensor([0, 1, 2, 14]))
        assert loader.builds == 2
    finally:
        loader.close()
