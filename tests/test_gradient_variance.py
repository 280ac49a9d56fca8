"""Gradient variance (the paper's GV diagnostic): correctness against a brute-force computation,
zero variance for a fixed (path, batch), and no side effects on training."""
import argparse
import csv
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pada_fast.config import load_config
from pada_fast.data.datasets import build_dataset
from pada_fast.data.loader import build_loader
from pada_fast.evaluate.gradient_variance import gradient_variance, measure_epoch_gv, read_gv_rows
from pada_fast.evaluate.gv_cli import add_gv_parser
from pada_fast.evaluate.gv_plot import group_mean, gv_plot
from pada_fast.sampling import build_data_sampler, build_path_sampler
from pada_fast.spaces.nb201 import NB201SuperNet
from pada_fast.train.trainer import Trainer


@pytest.fixture(scope="module")
def digits_aug():
    return build_dataset("digits", split="train", augment=True, seed=0)


@pytest.fixture(scope="module")
def digits_plain():
    return build_dataset("digits", split="train", augment=False, seed=0)


def tiny_model(bn_mode="batch", C=3):
    torch.manual_seed(0)
    return NB201SuperNet(C=C, N=1, num_classes=10, in_channels=1, bn_mode=bn_mode)


def skewed_samplers(model, n, method="pada"):
    """Samplers after one epoch of made-up statistics, so p and q are far from uniform and the
    data stream is drawn with replacement."""
    ps = build_path_sampler(method, model.candidate_mask(), "shared", "constant")
    ds = build_data_sampler(method, n, "constant")
    for slot, value in ((2, 1.0), (3, 3.0), (7, 1.0), (8, 3.0)):
        ps.record([torch.full((4,), value)], [slot])
    g = torch.Generator().manual_seed(1)
    idx = torch.randperm(n, generator=g)[: n // 2]
    ds.record(idx, torch.rand(idx.numel(), generator=g))
    ps.end_epoch(1, 2)
    ds.end_epoch(1, 2)
    return ps, ds


def flat_grads(model):
    return torch.cat([(p.grad.reshape(-1) if p.grad is not None else torch.zeros(p.numel())).double()
                      for p in model.parameters() if p.requires_grad])


@pytest.mark.parametrize("method,unbiased", [("spos", False), ("pada", False), ("pada", True)])
def test_gv_equals_brute_force(digits_aug, method, unbiased):
    model = tiny_model()
    n = len(digits_aug)
    if method == "pada":
        ps, ds = skewed_samplers(model, n)
    else:
        ps = build_path_sampler("spos", model.candidate_mask())
        ds = build_data_sampler("spos", n)
    cfg = load_config(None, ["data.batch_size=16", "run.seed=3", f"method.unbiased={str(unbiased).lower()}"])
    K, B = 6, 16
    got = gradient_variance(model, ps, ds, digits_aug, cfg, num_draws=K,
                            generator=torch.Generator().manual_seed(5), epoch=2)
    got0 = gradient_variance(model, ps, ds, digits_aug, cfg, num_draws=K,
                             generator=torch.Generator().manual_seed(5), epoch=2, ddof=0)

    # Brute force: same draws, plain F.cross_entropy, all K gradients stored.
    gen = torch.Generator().manual_seed(5)
    stream = ds.epoch_stream(gen, K * B)
    paths = ps.sample_epoch(K, gen)
    loader = build_loader(digits_aug, stream, B, drop_last=True, seed=3, epoch=2)
    model.train()
    grads = []
    path_weights = ps.importance_weights(paths)
    for k, (x, y, idx) in enumerate(loader):
        model.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x, tuple(paths[k].tolist())), y, reduction="none")
        if unbiased:   # the trainer's optional 1/(N q_i) · 1/(K p) weighting
            loss = loss * ds.importance_weights(idx) * float(path_weights[k])
        loss.mean().backward()
        grads.append(flat_grads(model))
    model.zero_grad(set_to_none=True)
    G = torch.stack(grads)
    P = G.shape[1]
    assert got["num_parameters"] == P == sum(p.numel() for p in model.parameters())
    expected = G.var(dim=0, unbiased=True).sum().item() / P
    assert got["gv"] >= 0 and got["unbiased"] == unbiased
    assert got["gv"] == pytest.approx(expected, rel=1e-4)
    assert got0["gv"] == pytest.approx(((G - G.mean(0)) ** 2).sum(1).mean().item() / P, rel=1e-4)
    assert got["mean_grad_sq"] == pytest.approx((G.mean(0) ** 2).sum().item() / P, rel=1e-4)
    # the breakdown: the sampled candidates carry variance (that the parts add up to the trace
    # holds by construction and is not tested)
    slot_total = sum(sum(row) for row in got["by_slot"])
    assert slot_total > 0 and 0 < got["by_layer"]["shared"] < got["trace"]
    # parameter-free candidates (none, skip, pool) carry no variance
    assert all(row[0] == row[1] == row[4] == 0.0 for row in got["by_slot"])


class FixedPath:
    def __init__(self, arch):
        self.arch = torch.tensor(arch)

    def sample_epoch(self, k, gen):
        return self.arch.repeat(k, 1)


class FixedBatch:
    def __init__(self, indices):
        self.indices = torch.tensor(indices)

    def epoch_stream(self, gen, num_draws=None):
        reps = -(-num_draws // len(self.indices))
        return self.indices.repeat(reps)[:num_draws]


def test_fixed_path_and_batch_has_zero_variance(digits_plain):
    model = tiny_model()
    cfg = load_config(None, ["data.batch_size=8"])
    got = gradient_variance(model, FixedPath([3, 2, 3, 1, 3, 2]), FixedBatch(list(range(0, 80, 10))),
                            digits_plain, cfg, num_draws=5)
    assert got["gv"] == 0.0
    assert got["mean_grad_sq"] > 0


def test_no_side_effects(digits_aug):
    model = tiny_model(bn_mode="running")
    ps, ds = skewed_samplers(model, len(digits_aug))
    # leave gradients from a "last training step" in place, and the model in eval mode
    x = torch.randn(8, 1, 8, 8)
    F.cross_entropy(model(x, (3, 3, 3, 3, 3, 3)), torch.arange(8)).backward()
    model.eval()
    weights = {k: v.clone() for k, v in model.state_dict().items()}   # includes BN running stats
    grads = {n: (p.grad.clone() if p.grad is not None else None) for n, p in model.named_parameters()}
    torch.manual_seed(123)
    np.random.seed(7)
    random.seed(11)
    rng = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    ps_state, ds_state = ps.state_dict(), ds.state_dict()
    cfg = load_config(None, ["data.batch_size=16"])
    got = gradient_variance(model, ps, ds, digits_aug, cfg, num_draws=3)
    assert got["gv"] > 0
    for k, v in model.state_dict().items():
        assert torch.equal(v, weights[k]), k
    for n, p in model.named_parameters():
        assert (p.grad is None) == (grads[n] is None), n
        assert p.grad is None or torch.equal(p.grad, grads[n]), n
    assert not model.training
    assert torch.equal(torch.get_rng_state(), rng[0])
    assert np.array_equal(np.random.get_state()[1], rng[1])
    assert random.getstate() == rng[2]
    assert torch.equal(ps.state_dict()["p"], ps_state["p"])
    assert torch.equal(ps.state_dict()["norm_sum"], ps_state["norm_sum"])
    assert torch.equal(ds.state_dict()["q"], ds_state["q"])
    assert torch.equal(ds.state_dict()["score_sum"], ds_state["score_sum"])


def small_cfg(out_dir, method="pada", epochs=2):
    return load_config(None, ["space.C=2", "space.N=1", f"optim.epochs={epochs}", "data.batch_size=128",
                              f"method.name={method}", f"run.out_dir={out_dir}", "run.threads=1",
                              "run.log_interval=1000", "run.progress=lines"])


def test_epoch_gv_does_not_perturb_training_and_cli_reads_it(tmp_path):
    # A: trains with a GV measurement after every epoch; B: the same run without.
    a = Trainer(small_cfg(tmp_path / "a"))
    for epoch in range(2):
        a.train_epoch(epoch)
        a.end_epoch(epoch)
        row = measure_epoch_gv(a.model, a.path_sampler, a.data_sampler, a.train_set, a.cfg, a.out_dir,
                               a.device, draws=3, epoch=epoch)
        assert row["epoch"] == epoch and row["gv"] > 0 and row["method"] == "pada"
    measure_epoch_gv(a.model, a.path_sampler, a.data_sampler, a.train_set, a.cfg, a.out_dir, a.device,
                     draws=3)            # epoch defaults to the last finished one; replaces it
    b = Trainer(small_cfg(tmp_path / "b"))
    b.fit()
    state_b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, state_b["model"][k]), k
    assert torch.equal(a.path_sampler.probabilities(), state_b["path_sampler"]["p"])
    assert torch.equal(a.data_sampler.probabilities(), state_b["data_sampler"]["q"])
    rows = read_gv_rows(tmp_path / "a" / "gv.jsonl")
    assert [r["epoch"] for r in rows] == [0, 1]

    parser = argparse.ArgumentParser()
    add_gv_parser(parser.add_subparsers(dest="command"))
    # snapshots of A, and B's final checkpoint measured now, on one plot
    out_csv, out_png = tmp_path / "gv.csv", tmp_path / "gv.png"
    args = parser.parse_args(["gv", str(tmp_path / "a"), str(tmp_path / "b"), "--draws", "3",
                              "--out", str(out_csv), "--out", str(out_png)])
    assert args.func(args) == 0
    with out_csv.open() as f:
        table = list(csv.DictReader(f))
    assert [(r["epoch"], r["source"]) for r in table] == [("0", "snapshot"), ("1", "snapshot"),
                                                          ("1", "checkpoint")]
    assert table[0]["run"] != table[2]["run"]       # both are "pada": told apart by folder
    assert out_png.stat().st_size > 0
    args = parser.parse_args(["gv", str(tmp_path / "a"), "--epochs", "1"])
    assert args.func(args) == 0
    assert (tmp_path / "a" / "gv.png").exists() and (tmp_path / "a" / "gv.csv").exists()
    args = parser.parse_args(["gv", str(tmp_path / "b"), "--epochs", "0", "--draws", "3"])
    with pytest.raises(ValueError, match="run.gv_draws"):
        args.func(args)


def test_gv_plot(tmp_path):
    path = gv_plot({"SPOS": [(0, 1e-3), (1, 8e-4)], "PA&DA": [(0, 9e-4), (1, 2e-4), (2, 0.0)]},
                   tmp_path / "fig" / "gv.png", title="GV")
    assert path.endswith("gv.png") and (tmp_path / "fig" / "gv.png").stat().st_size > 1000


def test_group_mean_keeps_the_epochs_every_run_has():
    assert group_mean([[(0, 1.0), (1, 3.0), (2, 5.0)], [(1, 5.0), (0, 3.0)]]) == [(0, 2.0), (1, 4.0)]
    assert group_mean([]) == []


def test_gv_plot_groups_seeds_of_a_method(tmp_path):
    runs = {"spos (s0)": [(0, 1e-3), (1, 8e-4)], "spos (s1)": [(0, 2e-3), (1, 6e-4)],
            "pada (s0)": [(0, 9e-4), (1, 2e-4)]}
    groups = {"spos (s0)": "spos", "spos (s1)": "spos", "pada (s0)": "pada"}
    path = gv_plot(runs, tmp_path / "gv.png", groups=groups)
    assert (tmp_path / "gv.png").stat().st_size > 1000 and path.endswith("gv.png")


def test_gv_cli_prints_a_summary_per_method(capsys):
    from pada_fast.evaluate.gv_cli import print_method_summary
    runs = {"a": [{"epoch": e, "gv": v} for e, v in enumerate([4.0, 2.0, 1.0])],
            "b": [{"epoch": e, "gv": v} for e, v in enumerate([2.0, 2.0, 3.0])],
            "c": [{"epoch": 0, "gv": 1.0}]}
    print_method_summary(runs, {"a": "spos", "b": "spos", "c": "pada"})
    out = capsys.readouterr().out
    assert "| spos | 2 | 3 | 2.0000e+00 | 2.0000e+00 |" in out      # means 3, 2, 2
    assert "| pada | 1 | 1 | 1.0000e+00 | 1.0000e+00 |" in out
