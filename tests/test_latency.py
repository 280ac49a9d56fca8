"""Latency lookup tables and the latency budget of ``pada-fast search``. Timings themselves are not
asserted (this machine's are noise); what is: the round-robin medians order calls by their cost,
the table's structure and sums, its checks, and that every candidate a search evaluates keeps
the budget."""
import json
import time

import numpy as np
import pytest
import torch

from pada_fast.cli import main
from pada_fast.config import load_config
from pada_fast.experiment import load_run
from pada_fast.search.budget import Budget, InfeasibleBudgetError
from pada_fast.search.latency import (LatencyTable, build_latency_table, evaluate_latency_table,
                                      load_latency_table, time_calls)
from pada_fast.spaces import NB201SuperNet, ProxylessSuperNet
from pada_fast.train.trainer import Trainer

TINY = dict(num_classes=10, in_channels=1, width_mult=0.25, stem_stride=1, last_channels=64, resolution=8)
TINY_SETS = ["space.width_mult=0.25", "space.stem_stride=1", "space.last_channels=64", "space.resolution=8"]


def test_round_robin_medians_order_calls_by_cost():
    calls = [lambda: time.sleep(0.004), lambda: time.sleep(0.001), lambda: None]
    slow, fast, nothing = time_calls(calls, "cpu", warmup=1, repeats=5)
    assert slow > fast > nothing >= 0.0
    assert slow >= 4.0 and fast >= 1.0


def test_table_sums_active_layers_and_round_trips(tmp_path):
    table = LatencyTable([[1.0, 2.0], [3.0, 5.0], [0.5, 0.25]], 10.0, 32, 3, 1, "cpu", space="toy",
                         candidates=[["a", "b"]] * 3)
    assert table.latency_ms((1, 0, 1)) == 10.0 + 2.0 + 3.0 + 0.25
    assert table.bounds() == (14.25, 17.5)
    table.active_layers = lambda arch: [0]
    assert table.latency_ms((1, 1, 1)) == 12.0
    table.save(tmp_path / "t.json")
    loaded = load_latency_table(tmp_path / "t.json")
    assert loaded.to_dict() == table.to_dict()
    with pytest.raises(ValueError, match="3 layers"):
        loaded.latency_ms((0, 0))
    (tmp_path / "bad.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="not a pada_fast latency table"):
        load_latency_table(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError, match="pada-fast latency-table"):
        load_latency_table(tmp_path / "missing.json")


def test_built_table_covers_every_candidate_and_predicts_networks():
    net = ProxylessSuperNet(**TINY)
    table = build_latency_table(net, warmup=1, repeats=3, calibration_archs=2)
    assert [len(r) for r in table.layer_ms] == [len(c) for c in net.layer_candidates()]
    assert all(v >= 0 for row in table.layer_ms for v in row)
    assert (table.resolution, table.in_channels, table.batch_size) == (8, 1, 1)
    assert table.meta["threads"] == torch.get_num_threads() and table.meta["statistic"] == "median"
    # an MBConv costs more than skipping the layer
    skip = net.layer_candidates()[1].index("skip")
    assert max(table.layer_ms[1]) > table.layer_ms[1][skip]
    table.check_matches(net, 8)
    result = evaluate_latency_table(net, table, num_archs=4, warmup=1, repeats=3)
    assert len(result["rows"]) == 4 and {"pearson", "spearman", "kendall_tau", "mean_abs_error_ms",
                                         "mean_rel_error"} <= set(result)
    assert all(r["measured_ms"] > 0 for r in result["rows"])


def test_a_table_of_another_space_configuration_is_refused():
    table = build_latency_table(ProxylessSuperNet(**TINY), warmup=0, repeats=1, calibration_archs=1)
    with pytest.raises(ValueError, match="last_channels=64"):
        table.check_matches(ProxylessSuperNet(**{**TINY, "last_channels": 128}))
    with pytest.raises(ValueError, match="resolution 8, the search's is 16"):
        table.check_matches(ProxylessSuperNet(**TINY), 16)
    with pytest.raises(ValueError, match="space 'proxyless'"):
        table.check_matches(NB201SuperNet(C=4, N=1))


def test_latency_budget_resamples_and_says_when_it_cannot_be_met():
    table = LatencyTable([[1.0, 2.0]] * 3, 1.0, 8, 1, 1, "cpu")
    budget = Budget(latency=table, max_latency_ms=5.5)
    assert budget.ok((0, 0, 1)) and not budget.ok((1, 1, 0))
    rng = np.random.default_rng(0)
    for _ in range(20):
        assert budget.latency_ms(budget.sample(lambda: tuple(rng.integers(2, size=3)))) <= 5.5
    with pytest.raises(InfeasibleBudgetError, match="below the fastest possible"):
        Budget(latency=table, max_latency_ms=3.0)
    with pytest.raises(ValueError, match="needs a latency table"):
        Budget(max_latency_ms=3.0)
    assert "latency <= 5.5 ms" in budget.describe() and budget.to_dict()["max_latency_ms"] == 5.5


@pytest.fixture(scope="module")
def supernet(tmp_path_factory):
    out = tmp_path_factory.mktemp("proxyless")
    cfg = load_config(None, ["space.name=proxyless", *TINY_SETS, f"run.out_dir={out}", "data.dataset=digits",
                             "data.train_subset=256", "data.batch_size=64", "optim.epochs=1", "run.threads=1",
                             "run.progress=lines", "method.name=spos", "rank.recalibrate_batches=1"])
    Trainer(cfg).fit()
    return out / "checkpoint.pt"


def test_latency_table_command_and_a_search_under_its_budget(tmp_path, supernet, capsys):
    table_path = tmp_path / "latency.json"
    assert main(["latency-table", "--checkpoint", str(supernet), "--out", str(table_path), "--warmup", "1",
                 "--repeats", "3", "--calibration-archs", "2", "--evaluate", "3"]) == 0
    printed = capsys.readouterr().out
    summary = json.loads(printed[printed.index("{\n"):])
    assert summary["batch_size"] == 1 and summary["device"] == "cpu" and "pearson" in summary["evaluation"]
    table = load_latency_table(table_path, load_run(supernet).model)
    from pada_fast.search.supernet_search import latency_quantile
    limit = latency_quantile(load_run(supernet).model, table, 60.0, seed=0)
    out = tmp_path / "search"
    assert main(["search", str(supernet), "--out", str(out), "--latency-table", str(table_path),
                 "--max-latency-ms", "60%", "--population", "6", "--generations", "2",
                 "--mutation-children", "3", "--crossover-children", "3", "--parents", "3",
                 "--eval-subset", "100", "--recalibrate-batches", "1"]) == 0
    records = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert json.loads((out / "search_args.json").read_text())["max_latency_ms"] == pytest.approx(limit)
    assert len(records) == 12 and all(r["latency_ms"] <= limit for r in records)
    best = json.loads((out / "best.json").read_text())
    assert best["latency_ms"] <= limit and json.loads((out / "summary.json").read_text())["budget"]["max_latency_ms"] == pytest.approx(limit)


def test_latency_table_command_builds_a_named_space(tmp_path, capsys):
    assert main(["latency-table", "--space", "proxyless", *sum((["--set", s] for s in TINY_SETS), []),
                 "--num-classes", "10", "--in-channels", "1", "--out", str(tmp_path / "t.json"),
                 "--warmup", "0", "--repeats", "1", "--calibration-archs", "1"]) == 0
    table = load_latency_table(tmp_path / "t.json")
    assert table.space == "proxyless" and table.resolution == 8 and len(table.layer_ms) == 21


def test_a_latency_budget_without_a_table_is_refused(tmp_path, supernet, capsys):
    assert main(["search", str(supernet), "--out", str(tmp_path / "s"), "--max-latency-ms", "3"]) != 0
    assert "--latency-table" in capsys.readouterr().err


def test_latency_table_on_the_device(device):
    net = ProxylessSuperNet(**TINY).to(device)
    table = build_latency_table(net, warmup=1, repeats=3, calibration_archs=2)
    assert table.device.startswith(device) and all(v >= 0 for row in table.layer_ms for v in row)
    result = evaluate_latency_table(net, table, num_archs=3, warmup=1, repeats=3)
    assert all(r["measured_ms"] > 0 for r in result["rows"])
