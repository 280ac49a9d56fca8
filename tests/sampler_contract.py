"""The contract every path and data sampler keeps, as test classes a sampler's tests subclass
(torchvision's ``RoIOpTester`` pattern): set ``make`` and inherit every check. Not collected on
its own (no ``test_`` prefix)."""
from __future__ import annotations

import torch

from pada_fast.sampling import DataSampler, PathSampler

MASK = torch.tensor([[True, True, True, True], [True, True, False, False], [True, True, True, False]])


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class PathSamplerContract:
    """``make(mask)`` returns a fresh sampler over ``mask``."""

    @staticmethod
    def make(mask: torch.Tensor) -> PathSampler:
        raise NotImplementedError

    def train_epoch(self, sampler: PathSampler, steps: int = 6, seed: int = 0) -> torch.Tensor:
        """Draw an epoch and record gradient norms for each path (made-up gradients)."""
        paths = sampler.sample_epoch(steps, gen(seed))
        K = sampler.candidate_mask.shape[1]
        for row, path in enumerate(paths.tolist()):
            slots = [layer * K + op for layer, op in enumerate(path)]
            grads = [torch.full((3,), 0.1 * (1 + op + row % 3)) for op in path]
            sampler.record(grads, slots, arch=tuple(path))
        return paths

    def test_is_a_path_sampler(self):
        assert isinstance(self.make(MASK), PathSampler)

    def test_paths_are_valid_and_deterministic(self):
        sampler = self.make(MASK)
        a, b = sampler.sample_epoch(5, gen(3)), sampler.sample_epoch(5, gen(3))
        assert torch.equal(a, b)
        assert a.dtype == torch.long and a.shape == (5 * sampler.paths_per_step, MASK.shape[0])
        assert MASK[torch.arange(MASK.shape[0])[None, :].expand_as(a), a].all()    # only valid candidates

    def test_end_epoch_gives_a_distribution_over_valid_candidates(self):
        sampler = self.make(MASK)
        for epoch in range(3):
            self.train_epoch(sampler, seed=epoch)
            p = sampler.end_epoch(epoch + 1, 3)
            assert p.dtype == torch.float64 and p.shape == MASK.shape
            torch.testing.assert_close(p.sum(dim=1), torch.ones(MASK.shape[0], dtype=torch.float64))
            assert (p[~MASK] == 0).all() and (p[MASK] > 0).all()
        assert sampler.importance_weights(sampler.sample_epoch(2, gen())).shape == (2 * sampler.paths_per_step,)

    def test_state_round_trip_continues_identically(self):
        sampler = self.make(MASK)
        self.train_epoch(sampler, seed=0)
        sampler.end_epoch(1, 4)
        self.train_epoch(sampler, seed=1)                       # mid-epoch statistics too
        copy = self.make(MASK)
        copy.load_state_dict(sampler.state_dict())
        assert torch.equal(copy.probabilities(), sampler.probabilities())
        for a, b in zip(copy.statistics(), sampler.statistics()):
            assert torch.equal(a, b)
        assert torch.equal(copy.end_epoch(2, 4), sampler.end_epoch(2, 4))
        assert torch.equal(copy.sample_epoch(4, gen(9)), sampler.sample_epoch(4, gen(9)))

    def test_skipped_record_changes_nothing(self):
        sampler, plain = self.make(MASK), self.make(MASK)
        self.train_epoch(sampler)
        self.train_epoch(plain)
        before = [b.clone() for b in sampler.statistics()]
        K = MASK.shape[1]
        path = (1, 0, 2)
        grads, slots = [torch.ones(2)] * 3, [layer * K + op for layer, op in enumerate(path)]
        sampler.record_masked(torch.tensor(True), grads, slots, arch=path)
        for a, b in zip(sampler.statistics(), before):
            assert torch.equal(a, b)
        sampler.record_masked(torch.tensor(False), grads, slots, arch=path)
        plain.record(grads, slots, arch=path)
        for a, b in zip(sampler.statistics(), plain.statistics()):
            assert torch.equal(a, b)


class DataSamplerContract:
    """``make(num_samples)`` returns a fresh sampler over a dataset of that size."""

    N = 12

    @staticmethod
    def make(num_samples: int) -> DataSampler:
        raise NotImplementedError

    def train_epoch(self, sampler: DataSampler, seed: int = 0) -> torch.Tensor:
        stream = sampler.epoch_stream(gen(seed))
        for batch in stream.split(4):
            sampler.record(batch, (batch.to(torch.float32) % 5 + 1) / 5)
        return stream

    def test_is_a_data_sampler(self):
        assert isinstance(self.make(self.N), DataSampler)

    def test_streams_are_valid_and_deterministic(self):
        sampler = self.make(self.N)
        for epoch in range(3):
            a = sampler.epoch_stream(gen(epoch))
            assert torch.equal(a, sampler.epoch_stream(gen(epoch)))
            assert a.dtype == torch.long and a.numel() == self.N
            assert ((a >= 0) & (a < self.N)).all()
            self.train_epoch(sampler, seed=epoch)
            sampler.end_epoch(epoch + 1, 3)
        assert sampler.epoch_stream(gen(), num_draws=5).numel() == 5
        assert sampler.importance_weights(torch.arange(3)).shape == (3,)
        assert isinstance(sampler.summary(), dict)

    def test_state_round_trip_continues_identically(self):
        sampler = self.make(self.N)
        self.train_epoch(sampler, seed=0)
        sampler.end_epoch(1, 4)
        self.train_epoch(sampler, seed=1)
        copy = self.make(self.N)
        copy.load_state_dict(sampler.state_dict())
        for a, b in zip(copy.statistics(), sampler.statistics()):
            assert torch.equal(a, b)
        assert torch.equal(copy.epoch_stream(gen(5)), sampler.epoch_stream(gen(5)))
        copy.end_epoch(2, 4)
        sampler.end_epoch(2, 4)
        assert torch.equal(copy.epoch_stream(gen(6)), sampler.epoch_stream(gen(6)))

    def test_skipped_record_changes_nothing(self):
        sampler = self.make(self.N)
        self.train_epoch(sampler)
        before = [b.clone() for b in sampler.statistics()]
        batch = torch.tensor([0, 3, 3, 7])
        sampler.record_masked(torch.tensor(True), batch, torch.full((4,), 0.5))
        for a, b in zip(sampler.statistics(), before):
            assert torch.equal(a, b)

    def test_local_state_round_trip_and_combination(self):
        sampler = self.make(self.N)
        self.train_epoch(sampler)
        local = sampler.local_state()
        copy = self.make(self.N)
        copy.load_local_state(local)
        for a, b in zip(copy.statistics(), sampler.statistics()):
            assert torch.equal(a, b)
        state = sampler.state_dict()
        combined = sampler.combine_local_states(state, [local, copy.local_state()])
        for name, buffer in zip(sampler.statistic_names(), sampler.statistics()):
            torch.testing.assert_close(combined[name], 2 * buffer.cpu())
        copy.load_local_state(None)
        assert all((b == 0).all() for b in copy.statistics())
