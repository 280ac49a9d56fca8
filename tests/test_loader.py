import numpy as np
import pytest
import torch

from pada_fast.data import transforms as T
from pada_fast.data.datasets import ArrayDataset
from pada_fast.data.loader import (IndexStreamDataset, build_loader, sample_seed, shard_positions,
                                   shard_stream)


def make_dataset(n=40, augment=True):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
    labels = np.arange(n) % 5
    transform = T.cifar_train_transform(size=8, padding=2) if augment else T.eval_transform()
    return ArrayDataset(images, labels, transform)


def collect(loader):
    batches = list(loader)
    return (torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches]),
            torch.cat([b[2] for b in batches]), [len(b[2]) for b in batches])


def test_stream_order_and_repeats_preserved():
    dataset = make_dataset(augment=False)
    stream = torch.tensor([5, 5, 0, 39, 12, 5, 7, 7, 7, 1, 2])
    images, labels, indices, sizes = collect(build_loader(dataset, stream, batch_size=4))
    assert torch.equal(indices, stream)
    assert sizes == [4, 4, 3]
    assert torch.equal(labels, torch.as_tensor(dataset.targets)[stream])
    for row, index in enumerate(stream.tolist()):
        expected, _ = dataset.sample(index)
        assert torch.equal(images[row], expected)


def test_drop_last_and_dtypes():
    dataset = make_dataset()
    loader = build_loader(dataset, torch.arange(10), batch_size=4, drop_last=True)
    images, labels, indices, sizes = collect(loader)
    assert sizes == [4, 4] and images.dtype == torch.float32
    assert labels.dtype == torch.int64 and indices.dtype == torch.int64
    assert images.shape == (8, 3, 8, 8)


def test_workers_do_not_change_batches():
    dataset = make_dataset()
    stream = torch.randint(0, len(dataset), (50,), generator=torch.Generator().manual_seed(1))
    single = collect(build_loader(dataset, stream, 8, num_workers=0, seed=3, epoch=2))
    multi = collect(build_loader(dataset, stream, 8, num_workers=2, seed=3, epoch=2))
    for a, b in zip(single, multi):
        assert torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b


def test_augmentation_depends_on_seed_epoch_and_position():
    dataset = make_dataset()
    stream = torch.full((16,), 3)  # one image, so any difference is augmentation
    base = collect(build_loader(dataset, stream, 16, seed=0, epoch=0))[0]
    assert torch.equal(base, collect(build_loader(dataset, stream, 16, seed=0, epoch=0))[0])
    # Repeats of one index at different positions get different crops/flips.
    assert len({tuple(img.flatten().tolist()) for img in base}) > 1
    assert not torch.equal(base, collect(build_loader(dataset, stream, 16, seed=1, epoch=0))[0])
    assert not torch.equal(base, collect(build_loader(dataset, stream, 16, seed=0, epoch=1))[0])
    assert len({sample_seed(0, 0, p) for p in range(1000)}) == 1000


def test_loader_leaves_global_rng_alone():
    dataset = make_dataset()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    collect(build_loader(dataset, torch.arange(20), 8))
    assert torch.equal(torch.rand(3), expected)


def test_plain_map_dataset_is_seeded_per_position():
    class Plain(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, index):
            return torch.rand(2), index

    stream = torch.tensor([0, 1, 2, 3, 0])
    a = collect(build_loader(Plain(), stream, 5, seed=4))[0]
    b = collect(build_loader(Plain(), stream, 5, seed=4, num_workers=1))[0]
    assert torch.equal(a, b) and not torch.equal(a[0], a[4])


@pytest.mark.parametrize("stream, error, match", [
    (torch.tensor([], dtype=torch.long), ValueError, "empty"),
    (torch.tensor([0, 3, 40]), IndexError, "position 2 holds 40"),
    (torch.tensor([0, -1]), IndexError, "position 1 holds -1"),
    (torch.tensor([0.0, 1.0]), TypeError, "integer"),
    (torch.zeros(2, 2, dtype=torch.long), ValueError, "1-D"),
])
def test_bad_streams_rejected_at_once(stream, error, match):
    with pytest.raises(error, match=match):
        build_loader(make_dataset(), stream, batch_size=4)


def test_other_bad_arguments():
    dataset = make_dataset()
    with pytest.raises(ValueError, match="batch_size"):
        build_loader(dataset, torch.arange(4), batch_size=0)
    with pytest.raises(ValueError, match="no batch at all"):
        build_loader(dataset, torch.arange(3), batch_size=4, drop_last=True)
    with pytest.raises(ValueError, match="positions has 2 entries"):
        IndexStreamDataset(dataset, torch.arange(3), positions=torch.arange(2))


@pytest.mark.parametrize("length, world", [(10, 4), (12, 4), (3, 4), (1, 1), (17, 3)])
def test_shard_stream_equal_sizes_and_coverage(length, world):
    stream = torch.randperm(100)[:length]
    shards = [shard_stream(stream, r, world) for r in range(world)]
    padded = -(-length // world) * world
    assert all(len(s) == padded // world for s in shards)
    # Interleaving the shards back gives the stream followed by its wrapped-around start.
    merged = torch.stack(shards, dim=1).reshape(-1)
    expected = stream[torch.arange(padded) % length]
    assert torch.equal(merged, expected)
    assert set(torch.cat(shards).tolist()) == set(stream.tolist())
    with pytest.raises(ValueError, match="rank"):
        shard_stream(stream, world, world)


def test_sharded_loaders_equal_single_process_global_batches():
    dataset = make_dataset()
    world, per_rank = 2, 4
    stream = torch.randint(0, len(dataset), (16,), generator=torch.Generator().manual_seed(2))
    single = list(build_loader(dataset, stream, per_rank * world, seed=7))
    ranks = [list(build_loader(dataset, shard_stream(stream, r, world), per_rank, seed=7,
                               positions=shard_positions(len(stream), r, world)))
             for r in range(world)]
    for step, global_batch in enumerate(single):
        parts = [ranks[r][step] for r in range(world)]
        rows = torch.stack([p[0] for p in parts], dim=1).reshape(-1, *global_batch[0].shape[1:])
        indices = torch.stack([p[2] for p in parts], dim=1).reshape(-1)
        assert torch.equal(indices, global_batch[2])
        assert torch.equal(rows, global_batch[0])
