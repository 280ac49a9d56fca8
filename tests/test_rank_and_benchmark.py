"""Ranking a trained supernet against a table, and building such a table, through the CLI."""
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import scipy.stats

from pada_fast.cli import main
from pada_fast.evaluate import table_builder
from pada_fast.evaluate.ground_truth import read_table
from pada_fast.quickstart import TABLE


def test_build_benchmark_writes_a_resumable_table(tmp_path, monkeypatch):
    out = tmp_path / "table.json"
    args = ["build-benchmark", "--set", "space.C=2", "--set", "space.N=1", "--set", "optim.epochs=1",
            "--set", "run.threads=1", "--archs", "3", "--seeds", "2", "--out", str(out)]
    assert main(args) == 0
    table = read_table(out)
    assert len(table) == 3
    assert all(0 <= a <= 100 for a in table.accuracies)
    partial = out.with_name(out.name + ".partial.jsonl")
    records = [json.loads(line) for line in partial.read_text().splitlines()]
    assert len(records) == 6
    # a second run finds everything done and trains nothing
    monkeypatch.setattr(table_builder, "train_standalone",
                        lambda *a, **k: pytest.fail("finished architectures must not be retrained"))
    assert main(args) == 0
    again = read_table(out)
    assert again.arch_strs == table.arch_strs
    np.testing.assert_allclose(again.accuracies, table.accuracies)
    # the mean of the two seeds is what the table holds
    first = table.arch_strs[0]
    seeds = [r["accuracy"] for r in records if r["arch"] == first]
    assert table.accuracy(first) == pytest.approx(np.mean(seeds))


def test_shards_build_the_same_table_as_one_process(tmp_path):
    common = ["build-benchmark", "--set", "space.C=2", "--set", "space.N=1", "--set", "optim.epochs=1",
              "--set", "run.threads=1", "--archs", "5", "--noise-archs", "2"]
    assert main(common + ["--out", str(tmp_path / "one.json")]) == 0
    shared = tmp_path / "shared.json"
    assert main(common + ["--out", str(shared), "--shard", "1/2"]) == 0
    partial = [json.loads(line) for line in shared.with_name("shared.json.partial.jsonl").read_text().splitlines()]
    assert len(partial) == 2            # architectures 1 and 3 (the second seed goes to 0 and 2)
    assert main(common + ["--out", str(shared), "--shard", "0/2"]) == 0
    one, both = json.loads((tmp_path / "one.json").read_text()), json.loads(shared.read_text())
    assert [r["arch"] for r in one["records"]] == [r["arch"] for r in both["records"]]
    np.testing.assert_allclose([r["accuracy"] for r in one["records"]], [r["accuracy"] for r in both["records"]])
    assert one["meta"]["noise"] == both["meta"]["noise"] and one["meta"]["noise"]["archs"] == 2
    # spread: the second seed goes to architectures 0 and 2 of 5, not to the first two
    assert [len(r["accuracies"]) for r in one["records"]] == [2, 1, 2, 1, 1]
    assert main(common + ["--out", str(tmp_path / "bad.json"), "--shard", "2/2"]) == 2   # a configuration error


def test_noise_architectures_spread_or_first():
    assert table_builder.noise_indices(150, 50, "spread") == set(range(0, 150, 3))
    assert table_builder.noise_indices(10, 3, "first") == {0, 1, 2}
    assert table_builder.noise_indices(10, 0, "spread") == set()


def test_train_then_rank_through_the_cli(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--set", "space.C=4", "--set", "space.N=1", "--set", "optim.epochs=2",
                 "--set", f"run.out_dir={run}", "--set", "run.threads=1", "--set", "method.name=pada"]) == 0
    out = tmp_path / "rank"
    assert main(["rank", str(run / "checkpoint.pt"), "--out", str(out), "--ground-truth", str(TABLE),
                 "--archs", "stratified:20", "--threads", "1"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    with (out / "predictions.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == metrics["num_archs"] == 20
    pred = [float(r["predicted_accuracy"]) for r in rows]
    true = [float(r["true_accuracy"]) for r in rows]
    tau = scipy.stats.kendalltau(pred, true).statistic
    assert metrics["kendall_tau"] == pytest.approx(tau, abs=1e-3) or (np.isnan(tau) and np.isnan(metrics["kendall_tau"]))
    assert (out / "scatter.png").stat().st_size > 1000
    assert metrics["archs"] == "stratified:20" and metrics["eval_order"].startswith("class-mixed")


def test_shipped_table_matches_the_quickstart_space():
    table = read_table(TABLE)
    assert len(table) >= 40
    from pada_fast.spaces import build_supernet
    net = build_supernet("nb201", C=4, N=1, num_classes=10, in_channels=1)
    keys = {net.functional_arch_key(net.str_to_arch(a)) for a in table.arch_strs}
    assert len(keys) == len(table)   # functionally distinct architectures
    assert table.accuracies.max() - table.accuracies.min() > 5


@pytest.mark.slow
def test_quickstart_runs_and_reports(tmp_path, capsys):
    assert main(["quickstart", "--out", str(tmp_path), "--threads", "2", "--seeds", "2"]) == 0
    text = capsys.readouterr().out
    assert "spos" in text and "pada" in text and "tau" in text and "seed" in text
    summary = json.loads((tmp_path / "summary.json").read_text())
    rows = summary["runs"]
    assert [(r["method"], r["seed"]) for r in rows] == [("spos", 0), ("pada", 0), ("spos", 1), ("pada", 1)]
    assert "seed" in summary["verdict"] and summary["verdict"] in text
    for r in rows:
        assert -1 <= r["kendall_tau"] <= 1
        assert Path(r["scatter"]).exists()
