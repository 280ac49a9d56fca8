"""Path and data samplers: schedules, draws against their distributions (chi-square), exact
end-of-epoch updates, fallbacks, checkpoint round trips, and streams over more than 2^24 samples."""
from __future__ import annotations

import io
import math

import pytest
import torch
from scipy.stats import chisquare

from pada_fast.sampling import (ImportanceDataSampler, ImportancePathSampler, UniformDataSampler,
                                UniformPathSampler, build_data_sampler, build_path_sampler,
                                mix_weight)

FULL = torch.ones(2, 3, dtype=torch.bool)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def norm_tensor(norm: float) -> torch.Tensor:
    """A gradient whose L2 norm is exactly ``norm`` (a 3-4-5 triangle, scaled)."""
    return torch.tensor([3.0, 4.0]) * (norm / 5.0)


def record_example(sampler) -> None:
    """Per-layer mean norms after these steps: layer 0 -> [3, 0, 6], layer 1 -> [6, 3, 0].
    Op 0 separates the shared formulas: mean of per-layer means (3 + 6) / 2 = 4.5, but pooled
    over all its steps (5 + 1 + 6) / 3 = 4."""
    steps = [((0, 0, 5.0), (1, 1, 2.0)),
             ((0, 0, 1.0), (1, 0, 6.0)),
             ((0, 2, 6.0), (1, 1, 4.0))]
    for step in steps:
        grads = [norm_tensor(n) for _, _, n in step]
        slots = [layer * 3 + op for layer, op, _ in step]
        sampler.record(grads, slots)


def assert_follows(counts: torch.Tensor, probs: torch.Tensor) -> None:
    keep = probs > 0
    assert counts[~keep].sum() == 0, "drew a zero-probability entry"
    expected = probs[keep] / probs[keep].sum() * counts.sum()
    assert chisquare(counts[keep].double().numpy(), expected.double().numpy()).pvalue > 1e-3


# -- schedule ----------------------------------------------------------------------------------------

def test_mix_weight():
    assert mix_weight("linear_increase", 0, 4) == 0.0
    assert mix_weight("linear_increase", 1, 4) == 0.25
    assert mix_weight("linear_increase", 4, 4) == 1.0
    assert mix_weight("linear_decrease", 1, 4) == 0.75
    assert mix_weight("constant", 0, 4) == 1.0
    assert mix_weight("off", 3, 4) == 0.0
    with pytest.raises(ValueError, match="schedule"):
        mix_weight("cosine", 0, 4)
    with pytest.raises(ValueError, match="epoch"):
        mix_weight("linear_increase", 5, 4)
    with pytest.raises(ValueError, match="epochs"):
        mix_weight("linear_increase", 0, 0)


# -- path samplers -----------------------------------------------------------------------------------

def test_uniform_path_sampler_respects_the_mask():
    mask = torch.tensor([[True, True, True], [True, False, True]])
    s = UniformPathSampler(mask)
    paths = s.sample_epoch(6000, gen())
    assert paths.shape == (6000, 2) and paths.dtype == torch.long
    for layer in range(2):
        counts = torch.bincount(paths[:, layer], minlength=3)
        assert_follows(counts, s.probabilities()[layer])
    assert s.sample_epoch(0, gen()).shape == (0, 2)
    with pytest.raises(TypeError, match="CPU torch.Generator"):
        s.sample_epoch(3, None)


def test_per_edge_update_exact():
    s = ImportancePathSampler(FULL, granularity="per_edge")
    record_example(s)
    p = s.end_epoch(1, 2)      # delta = 1/2
    want = torch.tensor([[1 / 3, 1 / 6, 1 / 2],          # 0.5 * [3, 0, 6] / 9 + 0.5 / 3
                         [1 / 2, 1 / 3, 1 / 6]], dtype=torch.float64)
    torch.testing.assert_close(p, want)
    torch.testing.assert_close(s.last_mean_norms, torch.tensor([[3.0, 0, 6], [6, 3, 0]]))
    assert s.fallback_message is None and s.last_mix_weight == 0.5
    assert s.step_count.sum() == 0 and s.norm_sum.sum() == 0       # reset


def test_shared_update_exact():
    s = ImportancePathSampler(FULL, granularity="shared")
    record_example(s)
    p = s.end_epoch(1, 2)
    # g_k = mean over the layers that trained k: [(3+6)/2, 3, 6] -> 0.5 * g / 13.5 + 0.5 / 3
    row = torch.tensor([1 / 3, 5 / 18, 7 / 18], dtype=torch.float64)
    torch.testing.assert_close(p, torch.stack([row, row]))


def test_shared_and_per_edge_differ_as_expected():
    shared = ImportancePathSampler(FULL, granularity="shared")
    per_edge = ImportancePathSampler(FULL, granularity="per_edge")
    for s in (shared, per_edge):
        record_example(s)
        s.end_epoch(2, 2)          # delta = 1: pure importance
    ps, pe = shared.probabilities(), per_edge.probabilities()
    assert torch.equal(ps[0], ps[1]) and not torch.equal(pe[0], pe[1])
    # per_edge keeps the never-trained (layer 0, op 1) at zero; shared borrows layer 1's norm.
    assert pe[0, 1] == 0 and ps[0, 1] > 0


def test_shared_renormalises_over_each_layers_candidates():
    mask = torch.tensor([[True, True, True], [True, True, False]])
    s = ImportancePathSampler(mask, granularity="shared")
    record_example(s)
    p = s.end_epoch(1, 2)
    torch.testing.assert_close(p[0], torch.tensor([1 / 3, 5 / 18, 7 / 18], dtype=torch.float64))
    # layer 1 has no op 2: g = [4.5, 3] -> 0.5 * [0.6, 0.4] + 0.5 * [0.5, 0.5]
    torch.testing.assert_close(p[1], torch.tensor([0.55, 0.45, 0.0], dtype=torch.float64))


def test_tensors_of_one_slot_form_one_operation():
    s = ImportancePathSampler(torch.ones(1, 2, dtype=torch.bool), granularity="per_edge")
    s.record([torch.tensor([3.0]), torch.tensor([4.0]), torch.tensor([1.0])], [0, 0, 1])
    s.end_epoch(1, 1)
    torch.testing.assert_close(s.last_mean_norms, torch.tensor([[5.0, 1.0]]))
    torch.testing.assert_close(s.probabilities(), torch.tensor([[5 / 6, 1 / 6]], dtype=torch.float64))


def test_delta_zero_is_exactly_uniform():
    for granularity in ("shared", "per_edge"):
        s = ImportancePathSampler(FULL, granularity=granularity)
        record_example(s)
        assert torch.equal(s.end_epoch(0, 10), torch.full((2, 3), 1 / 3, dtype=torch.float64))
        off = ImportancePathSampler(FULL, granularity=granularity, schedule="off")
        record_example(off)
        assert torch.equal(off.end_epoch(5, 10), torch.full((2, 3), 1 / 3, dtype=torch.float64))


def test_uniform_sampler_logs_norms_but_stays_uniform():
    s = UniformPathSampler(FULL)
    record_example(s)
    assert torch.equal(s.end_epoch(1, 2), torch.full((2, 3), 1 / 3, dtype=torch.float64))
    torch.testing.assert_close(s.last_mean_norms, torch.tensor([[3.0, 0, 6], [6, 3, 0]]))


def test_path_draws_follow_p():
    s = ImportancePathSampler(torch.ones(3, 5, dtype=torch.bool), granularity="per_edge")
    for layer in range(3):
        for op in range(5):
            s.record([torch.tensor([float((layer + 1) * op)])], [layer * 5 + op])
    s.end_epoch(3, 4)
    p = s.probabilities()
    assert p[0, 0] == 0.25 / 5     # zero norm keeps only the (1 - delta) / K share
    paths = s.sample_epoch(20_000, gen(3))
    for layer in range(3):
        assert_follows(torch.bincount(paths[:, layer], minlength=5), p[layer])


def test_path_fallback_to_uniform():
    s = ImportancePathSampler(FULL, granularity="per_edge")
    p = s.end_epoch(1, 2)                       # nothing recorded
    assert torch.equal(p, torch.full((2, 3), 1 / 3, dtype=torch.float64))
    assert "fell back to uniform" in s.fallback_message and "[0, 1]" in s.fallback_message
    s.record([torch.tensor([float("nan")]), torch.tensor([1.0])], [0, 3])
    p = s.end_epoch(1, 2)
    assert torch.equal(p[0], torch.full((3,), 1 / 3, dtype=torch.float64))
    torch.testing.assert_close(p[1], torch.tensor([2 / 3, 1 / 6, 1 / 6], dtype=torch.float64))
    assert "[0]" in s.fallback_message
    s.end_epoch(0, 2)                           # delta = 0: nothing to fall back from
    assert s.fallback_message is None


def test_path_importance_weights():
    s = ImportancePathSampler(FULL, granularity="per_edge")
    torch.testing.assert_close(s.importance_weights(torch.tensor([[0, 2]])),
                               torch.tensor([1.0], dtype=torch.float64))
    record_example(s)
    s.end_epoch(1, 2)
    w = s.importance_weights(torch.tensor([[0, 0], [2, 2]]))
    torch.testing.assert_close(w, torch.tensor([1 / (3 * (1 / 3) * 3 * (1 / 2)),
                                                1 / (3 * (1 / 2) * 3 * (1 / 6))], dtype=torch.float64))


def roundtrip(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("granularity", ["shared", "per_edge"])
def test_path_state_dict_round_trip(granularity):
    a = ImportancePathSampler(FULL, granularity=granularity)
    record_example(a)
    a.end_epoch(1, 3)
    record_example(a)               # mid-epoch accumulators must survive too
    b = ImportancePathSampler(FULL, granularity=granularity)
    b.load_state_dict(roundtrip(a.state_dict()))
    assert torch.equal(a.sample_epoch(500, gen(7)), b.sample_epoch(500, gen(7)))
    assert torch.equal(a.end_epoch(2, 3), b.end_epoch(2, 3))
    assert torch.equal(a.sample_epoch(500, gen(8)), b.sample_epoch(500, gen(8)))
    other = ImportancePathSampler(FULL, granularity="per_edge" if granularity == "shared" else "shared")
    with pytest.raises(ValueError, match="granularity"):
        other.load_state_dict(a.state_dict())
    with pytest.raises(ValueError, match="kind"):
        UniformPathSampler(FULL).load_state_dict(a.state_dict())


# -- data samplers -----------------------------------------------------------------------------------

def test_uniform_data_stream_is_a_permutation():
    s = UniformDataSampler(100)
    stream = s.epoch_stream(gen())
    assert torch.equal(stream.sort().values, torch.arange(100))
    assert not torch.equal(stream, s.epoch_stream(gen(1)))
    assert torch.equal(stream, s.epoch_stream(gen()))


def test_first_importance_epoch_is_a_permutation():
    s = ImportanceDataSampler(50)
    assert torch.equal(s.epoch_stream(gen()).sort().values, torch.arange(50))
    assert s.summary()["ess_fraction"] == pytest.approx(1.0)


def test_data_update_exact():
    s = ImportanceDataSampler(5)
    s.record(torch.tensor([0, 1]), torch.tensor([1.0, 2.0]))
    s.record(torch.tensor([1, 3]), torch.tensor([4.0, 3.0], dtype=torch.float64))
    s.end_epoch(1, 2)               # tau = 1/2; s = [1, 3, 0, 3, 0] (sample 1 keeps its mean)
    want = torch.tensor([1, 3, 0, 3, 0], dtype=torch.float64) / 7 * 0.5 + 0.1
    torch.testing.assert_close(s.probabilities(), want)
    assert s.seen_fraction == pytest.approx(0.6)
    assert s.count.sum() == 0 and s.score_sum.sum() == 0
    summary = s.summary()
    assert summary["min"] == pytest.approx(0.1) and summary["max"] == pytest.approx(0.1 + 1.5 / 7)
    assert summary["effective_sample_size"] == pytest.approx(1 / (want ** 2).sum().item())
    assert summary["entropy"] == pytest.approx(-(want * want.log()).sum().item())


def test_unseen_samples_keep_exactly_the_uniform_share():
    n = 1000
    s = ImportanceDataSampler(n)
    seen = torch.arange(0, n, 3)
    s.record(seen, torch.rand(seen.numel(), generator=gen()) + 0.1)
    for tau_epoch in (1, 3):
        s.record(seen, torch.rand(seen.numel(), generator=gen(tau_epoch)) + 0.1)
        s.end_epoch(tau_epoch, 4)
        q = s.probabilities()
        unseen = torch.ones(n, dtype=torch.bool)
        unseen[seen] = False
        assert torch.all(q[unseen] == (1 - tau_epoch / 4) / n)
        assert q.sum().item() == pytest.approx(1.0, abs=1e-12)


def test_tau_zero_is_exactly_uniform():
    s = ImportanceDataSampler(20)
    s.record(torch.arange(10), torch.arange(10, dtype=torch.float32) + 1)
    s.end_epoch(0, 5)
    assert torch.equal(s.probabilities(), torch.full((20,), 1 / 20, dtype=torch.float64))
    counts = torch.bincount(s.epoch_stream(gen(), num_draws=20_000), minlength=20)
    assert_follows(counts, s.probabilities())


def test_data_stream_follows_q():
    s = ImportanceDataSampler(30, schedule="constant")
    idx = torch.arange(0, 30, 2)
    s.record(idx, (idx % 7).float())            # some seen samples score 0, too
    s.end_epoch(1, 2)                           # tau = 1: q is zero off the scored samples
    q = s.probabilities()
    assert (q == 0).sum() == 30 - int(((idx % 7) > 0).sum())
    stream = s.epoch_stream(gen(5), num_draws=40_000)
    assert_follows(torch.bincount(stream, minlength=30), q)
    assert s.epoch_stream(gen()).shape == (30,)           # default: N draws


def test_data_fallback_to_uniform():
    s = ImportanceDataSampler(4)
    s.end_epoch(1, 2)
    assert torch.equal(s.probabilities(), torch.full((4,), 0.25, dtype=torch.float64))
    assert "fell back to uniform" in s.fallback_message
    s.record(torch.tensor([0, 1]), torch.tensor([1.0, float("inf")]))
    s.end_epoch(1, 2)
    assert torch.equal(s.probabilities(), torch.full((4,), 0.25, dtype=torch.float64))
    s.record(torch.tensor([0]), torch.tensor([1.0]))
    s.end_epoch(1, 2)
    assert s.fallback_message is None


def test_data_record_checks_its_inputs():
    s = ImportanceDataSampler(4)
    with pytest.raises(ValueError, match="1-D of equal length"):
        s.record(torch.tensor([0, 1]), torch.tensor([1.0]))
    with pytest.raises(TypeError, match="CPU torch.Generator"):
        s.epoch_stream(0)


def test_data_importance_weights():
    s = ImportanceDataSampler(5)
    idx = torch.tensor([0, 2])
    assert torch.equal(s.importance_weights(idx), torch.ones(2))
    s.record(torch.tensor([0, 1]), torch.tensor([1.0, 3.0]))
    s.end_epoch(1, 2)
    q = s.probabilities()
    torch.testing.assert_close(s.importance_weights(idx), (1 / (5 * q[idx])).float())
    assert torch.equal(UniformDataSampler(5).importance_weights(idx), torch.ones(2))


def test_data_state_dict_round_trip():
    a = ImportanceDataSampler(40)
    a.record(torch.arange(0, 40, 3), torch.rand(14, generator=gen()))
    a.end_epoch(1, 3)
    a.record(torch.arange(1, 40, 5), torch.rand(8, generator=gen(1)))    # mid-epoch scores
    b = ImportanceDataSampler(40)
    b.load_state_dict(roundtrip(a.state_dict()))
    assert torch.equal(a.epoch_stream(gen(2)), b.epoch_stream(gen(2)))
    a.end_epoch(2, 3)
    b.end_epoch(2, 3)
    assert torch.equal(a.probabilities(), b.probabilities())
    assert torch.equal(a.epoch_stream(gen(3)), b.epoch_stream(gen(3)))
    # Before any update the state restores the permutation epoch.
    c, d = ImportanceDataSampler(40), ImportanceDataSampler(40)
    d.load_state_dict(roundtrip(c.state_dict()))
    assert torch.equal(c.epoch_stream(gen(4)), d.epoch_stream(gen(4)))
    with pytest.raises(ValueError, match="num_samples"):
        ImportanceDataSampler(41).load_state_dict(a.state_dict())
    u = UniformDataSampler(40)
    u.load_state_dict(roundtrip(u.state_dict()))
    with pytest.raises(ValueError):
        u.load_state_dict(a.state_dict())


def test_stream_over_more_than_2_pow_24_samples():
    n = 2 ** 24 + 5            # torch.multinomial refuses this many categories
    s = ImportanceDataSampler(n, schedule="constant")
    last = n - 1
    s.record(torch.tensor([0, last, 12345]), torch.tensor([1.0, 3.0, 0.0]))
    s.end_epoch(1, 1)                         # tau = 1: only indices 0 and `last` can be drawn
    stream = s.epoch_stream(gen(), num_draws=4000)
    assert set(stream.unique().tolist()) == {0, last}
    assert_follows(torch.tensor([(stream == 0).sum(), (stream == last).sum()]),
                   torch.tensor([0.25, 0.75]))
    s.end_epoch(0, 1)                         # uniform again: draws span the whole range
    stream = s.epoch_stream(gen(1), num_draws=4000)
    assert stream.min() >= 0 and stream.max() < n and stream.max() > 2 ** 24 * 0.9


# -- method table -----------------------------------------------------------------------------------

@pytest.mark.parametrize("method,path_kind,data_kind", [
    ("spos", UniformPathSampler, UniformDataSampler),
    ("pa", ImportancePathSampler, UniformDataSampler),
    ("da", UniformPathSampler, ImportanceDataSampler),
    ("pada", ImportancePathSampler, ImportanceDataSampler),
])
def test_builders(method, path_kind, data_kind):
    path = build_path_sampler(method, FULL, granularity="per_edge")
    data = build_data_sampler(method, 10)
    assert type(path) is path_kind and type(data) is data_kind
    if path_kind is ImportancePathSampler:
        assert path.granularity == "per_edge" and path.schedule == "linear_increase"


def test_builders_reject_unknown_names():
    with pytest.raises(ValueError, match="spos"):
        build_path_sampler("random", FULL)
    with pytest.raises(ValueError, match="spos"):
        build_data_sampler("random", 10)
    with pytest.raises(ValueError, match="granularity"):
        build_path_sampler("pa", FULL, granularity="per_cell")
    with pytest.raises(ValueError, match="candidate_mask"):
        UniformPathSampler(torch.ones(2, 3))
    with pytest.raises(ValueError, match="at least one candidate"):
        UniformPathSampler(torch.tensor([[True, False], [False, False]]))
    assert math.isfinite(UniformDataSampler(10).summary()["entropy"])
