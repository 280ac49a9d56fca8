"""``method.reproduce: official``: each point of the authors' NAS-Bench-201 code, one test each,
against a plain re-statement of what their train_panda_201.py computes."""
import numpy as np
import pytest
import torch

from pada_fast.config import load_config
from pada_fast.reproduce import POINTS, resolve_reproduction
from pada_fast.sampling import ImportanceDataSampler, ImportancePathSampler, mix_weight
from pada_fast.spaces import build_supernet
from pada_fast.experiment import cosine_lr, epoch_generator
from pada_fast.train.trainer import Trainer

MASK = torch.ones(6, 5, dtype=torch.bool)


def small_config(tmp_path, method="pada", epochs=2, **extra):
    overrides = ["space.C=4", "space.N=1", f"optim.epochs={epochs}", "data.batch_size=64",
                 f"method.name={method}", f"run.out_dir={tmp_path / 'run'}", "run.threads=1",
                 "run.log_interval=1000", "run.progress=lines", "run.device=cpu"]
    overrides += [f"{k}={v}" for k, v in extra.items()]
    return load_config(None, overrides)


# -- the switch ------------------------------------------------------------------------------------
def test_official_sets_every_point_and_explicit_keys_win():
    cfg = load_config(None, ["method.reproduce=official", "optim.lr_schedule=per_step"])
    resolved = resolve_reproduction(cfg)
    expected = {f"{s}.{k}": v[1] for (s, k), v in POINTS.items()}
    expected["optim.lr_schedule"] = "per_step"
    assert resolved == expected
    design = resolve_reproduction(load_config(None, []))
    assert design == {f"{s}.{k}": v[0] for (s, k), v in POINTS.items()}


# -- point 1: PA aggregation ---------------------------------------------------------------------
def authors_path_norms(steps):
    """train_panda_201.operatio_gradient_norm_prob: per step, per op the sum of per-tensor norms
    over cells, divided by arch.count(op), averaged pairwise with the running value (from 0)."""
    g = [0.0] * 5
    for arch, tensors in steps:          # tensors: [(op, norm)] over all cells
        sums = [0.0] * 5
        for op, norm in tensors:
            sums[op] += norm
        for op in range(5):
            if sums[op] != 0.0:
                g[op] = np.mean([g[op], sums[op] / list(arch).count(op)])
    return np.array(g)


def test_official_path_aggregation_matches_the_authors_formula():
    sampler = ImportancePathSampler(MASK, aggregation="official", offset="lagged")
    rng = np.random.default_rng(0)
    steps = []
    for _ in range(6):
        arch = tuple(int(v) for v in rng.integers(0, 5, size=6))
        grads, slots, tensors = [], [], []
        for edge, op in enumerate(arch):
            if op in (2, 3):
                for _cell in range(3):             # three cells share the path
                    norm = float(rng.uniform(0.1, 2.0))
                    grad = torch.zeros(4)
                    grad[0] = norm
                    grads.append(grad)
                    slots.append(edge * 5 + op)
                    tensors.append((op, norm))
        steps.append((arch, tensors))
        sampler.record(grads, slots, arch=arch)
    g = authors_path_norms(steps)
    torch.testing.assert_close(sampler.norm_sum[0].double(), torch.tensor(g), rtol=1e-5, atol=1e-6)
    p = sampler.end_epoch(3, 4)        # lagged: the epoch after epoch 2 uses 2/4
    delta = 2 / 4
    expected = delta * g / g.sum() + (1 - delta) / 5
    torch.testing.assert_close(p[0], torch.tensor(expected), rtol=1e-5, atol=1e-6)
    assert torch.equal(sampler.norm_sum, torch.zeros_like(sampler.norm_sum))   # restarted


def test_official_path_aggregation_differs_from_the_mean():
    grads = [torch.tensor([3.0]), torch.tensor([4.0])]       # op 3 on edge 0, in two cells
    arch = (3, 3, 0, 0, 0, 0)                                # two edges hold op 3, one is unused
    mean = ImportancePathSampler(MASK)
    official = ImportancePathSampler(MASK, aggregation="official")
    for s in (mean, official):
        s.record(grads, [3, 3], arch=arch)
    assert float(mean.norm_sum[0, 3]) == pytest.approx(5.0)          # sqrt(3² + 4²)
    assert float(official.norm_sum[0, 3]) == pytest.approx((3 + 4) / 2 / 2)   # /2 edges, then (0 + x)/2
    with pytest.raises(ValueError, match="arch"):
        official.record(grads, [3, 3])


# -- point 2: DA aggregation ---------------------------------------------------------------------
def test_official_data_aggregation_is_the_authors_running_pair_average():
    n = 10
    sampler = ImportanceDataSampler(n, aggregation="official")
    batches = [torch.tensor([1, 4, 1, 7, 1]), torch.tensor([4, 2, 2, 9])]
    values = [torch.tensor([0.5, 0.2, 0.9, 0.4, 0.3]), torch.tensor([0.8, 0.1, 0.6, 0.7])]
    for idx, x in zip(batches, values):
        sampler.record(idx, x)
    expected = np.zeros(n)
    for idx, x in zip(batches, values):          # the authors' loop, in stream order
        for i, v in zip(idx.tolist(), x.tolist()):
            expected[i] = np.mean([expected[i], v]) if expected[i] != 0 else v
    torch.testing.assert_close(sampler.score_sum.double(), torch.tensor(expected), rtol=1e-6, atol=1e-7)
    sampler.end_epoch(2, 2)
    q = sampler.probabilities()
    torch.testing.assert_close(q, torch.tensor(1.0 * expected / expected.sum()), rtol=1e-6, atol=1e-9)


def test_official_data_aggregation_matches_the_loop_with_many_repeats():
    n = 6
    sampler = ImportanceDataSampler(n, aggregation="official")
    rng = np.random.default_rng(1)
    expected, draws = np.zeros(n), np.zeros(n)
    for _ in range(5):
        idx = rng.integers(0, n, size=12)           # every batch repeats samples, up to ~6 times
        x = rng.uniform(0.0, 2.0, size=12)
        sampler.record(torch.as_tensor(idx), torch.as_tensor(x, dtype=torch.float32))
        for i, v in zip(idx, x):
            expected[i] = (expected[i] + v) / 2 if draws[i] else v
            draws[i] += 1
    torch.testing.assert_close(sampler.score_sum.double(), torch.tensor(expected), rtol=1e-5, atol=1e-6)
    assert sampler.count.tolist() == draws.tolist()


# -- point 3: schedule offset --------------------------------------------------------------------
def test_lagged_schedule_uses_the_finished_epochs_weight():
    assert [mix_weight("linear_increase", e, 4) for e in range(5)] == [0, 0.25, 0.5, 0.75, 1.0]
    assert [mix_weight("linear_increase", e, 4, "lagged") for e in range(5)] == [0, 0, 0.25, 0.5, 0.75]
    data = ImportanceDataSampler(4, offset="lagged")
    data.record(torch.tensor([0, 1]), torch.tensor([1.0, 3.0]))
    data.end_epoch(2, 4)
    assert data.last_tau == 0.25


# -- point 4: learning-rate schedule --------------------------------------------------------------
def test_per_epoch_learning_rate_is_constant_within_an_epoch(tmp_path):
    cfg = small_config(tmp_path, epochs=3, **{"optim.lr_schedule": "per_epoch", "data.train_subset": 256})
    trainer = Trainer(cfg)
    steps = trainer.steps_per_epoch
    assert steps == 4
    lrs = [trainer.lr_for(s) for s in range(3 * steps)]
    for epoch in range(3):
        assert lrs[epoch * steps: (epoch + 1) * steps] == [cosine_lr(epoch, 3, cfg.optim.lr, 0.0)] * steps
    per_step = Trainer(small_config(tmp_path / "b", epochs=3, **{"data.train_subset": 256}))
    assert per_step.lr_for(1) < per_step.lr_for(0)


# -- point 5: updates of unsampled candidates ---------------------------------------------------
@pytest.mark.parametrize("update", ["off", "on"])
def test_unsampled_candidates_move_only_with_zero_gradients(tmp_path, update):
    from pada_fast.spaces.nb201 import live_edges
    cfg = small_config(tmp_path / update, method="spos", epochs=1,
                       **{"data.train_subset": 512, "optim.update_unsampled": update})
    trainer = Trainer(cfg)
    gen = epoch_generator(cfg.run.seed, 0)          # the trainer's draws: the stream, then paths
    trainer.data_sampler.epoch_stream(gen)
    paths = trainer.path_sampler.sample_epoch(trainer.steps_per_epoch, gen).tolist()
    # a convolution trained at some step t and not run at step t + 1
    found = [(t, e, paths[t][e]) for t in range(len(paths) - 1) for e in sorted(live_edges(tuple(paths[t])))
             if paths[t][e] in (2, 3) and not (paths[t + 1][e] == paths[t][e] and e in live_edges(tuple(paths[t + 1])))]
    assert found, "seed 0 draws no convolution left out right after it trained; pick another seed"
    t, edge, op = found[0]
    weight = next(trainer.model.body[0].edges[edge][op].parameters())
    snapshots = []
    step = trainer.optimizer.step

    def recording_step(*args, **kwargs):
        result = step(*args, **kwargs)
        snapshots.append(weight.detach().clone())
        return result

    trainer.optimizer.step = recording_step
    initial = weight.detach().clone()
    trainer.train_epoch(0)
    assert len(snapshots) == len(paths)
    assert not torch.equal(snapshots[t], snapshots[t - 1] if t else initial)   # trained at t
    if update == "off":
        assert torch.equal(snapshots[t + 1], snapshots[t])        # only the sampled path moved
    else:
        assert weight.grad is not None
        assert not torch.equal(snapshots[t + 1], snapshots[t])    # weight decay + momentum moved it


# -- reduction blocks (the authors' code already matches the default) ----------------------------
def test_reduction_bn_affine_only_changes_the_reduction_blocks():
    plain = build_supernet("nb201", C=4, N=1, num_classes=10, in_channels=1)
    affine = build_supernet("nb201", C=4, N=1, num_classes=10, in_channels=1, reduction_bn="affine")
    extra = set(dict(affine.named_parameters())) - set(dict(plain.named_parameters()))
    assert extra and all(name.startswith(("body.1.", "body.3.")) for name in extra)
    for module in affine.body[1].modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            assert module.affine and not module.track_running_stats
