import json
import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from pada_fast.evaluate.ground_truth import (GroundTruth, load_ground_truth, read_nats_csv,
                                             read_nb201_api, read_table)

SHARED = Path(os.environ.get("PADA_FAST_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
NATS_CSV = SHARED / "nb201" / "nats_bench.csv"
ARCH_A = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
ARCH_B = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"


def small_truth(n=50, seed=0):
    rng = np.random.default_rng(seed)
    archs = [f"arch{i}" for i in range(n)]
    return GroundTruth(archs, rng.uniform(10, 94, n), indices=np.arange(n) * 3 + 1,
                       dataset="cifar10", source="test")


@pytest.mark.parametrize("suffix", [".json", ".csv"])
def test_table_round_trip(tmp_path, suffix):
    truth = small_truth()
    path = tmp_path / f"table{suffix}"
    truth.write_table(path)
    back = read_table(path)
    assert back.arch_strs == truth.arch_strs
    assert np.array_equal(back.accuracies, truth.accuracies)  # repr round-trips floats exactly
    assert np.array_equal(back.indices, truth.indices)
    assert not list(tmp_path.glob("*.tmp"))
    loaded = load_ground_truth(path, "cifar100")
    assert loaded.arch_strs == truth.arch_strs and loaded.dataset == "cifar100"


def test_json_mapping_and_plain_csv(tmp_path):
    (tmp_path / "map.json").write_text(json.dumps({ARCH_A: 93.5, ARCH_B: 10.0}))
    truth = read_table(tmp_path / "map.json")
    assert truth.accuracy(ARCH_A) == 93.5 and truth.index(ARCH_B) == 1 and truth.arch_str(0) == ARCH_A
    (tmp_path / "plain.csv").write_text(f"arch,accuracy\n{ARCH_A},93.5\n{ARCH_B},10\n")
    assert load_ground_truth(tmp_path / "plain.csv").accuracy(ARCH_B) == 10.0


def test_lookups_and_errors():
    truth = GroundTruth([ARCH_A, ARCH_B], [93.5, 10.0], [7, 3])
    assert len(truth) == 2 and ARCH_A in truth and "x" not in truth
    assert truth.index(ARCH_A) == 7 and truth.arch_str(3) == ARCH_B and truth.best() == ARCH_A
    assert list(truth.accuracies_of([ARCH_B, ARCH_A])) == [10.0, 93.5]
    with pytest.raises(KeyError, match="not in the ground truth"):
        truth.accuracy("|bogus~0|")
    with pytest.raises(KeyError, match="benchmark index 5"):
        truth.arch_str(5)


def test_duplicate_and_bad_values_are_named(tmp_path):
    with pytest.raises(ValueError, match=r"arch1 appears twice \(index 1 and index 3\)"):
        GroundTruth(["arch0", "arch1", "arch2", "arch1"], [1, 2, 3, 4])
    with pytest.raises(ValueError, match="index 4 is used by both a and b"):
        GroundTruth(["a", "b"], [1, 2], [4, 4])
    (tmp_path / "dup.csv").write_text("arch,accuracy\nx,1\ny,2\nx,3\n")
    with pytest.raises(ValueError, match="x appears twice"):
        read_table(tmp_path / "dup.csv")
    (tmp_path / "bad.csv").write_text("arch,accuracy\nx,1\ny,abc\n")
    with pytest.raises(ValueError, match=r"record 1 \(y\): accuracy is 'abc', not a number"):
        read_table(tmp_path / "bad.csv")
    (tmp_path / "cols.csv").write_text("name,acc\nx,1\n")
    with pytest.raises(ValueError, match="unrecognised CSV header"):
        load_ground_truth(tmp_path / "cols.csv")
    with pytest.raises(ValueError, match="lacks column"):
        read_table(tmp_path / "cols.csv")
    (tmp_path / "mixed.json").write_text(json.dumps([{"arch": "a", "accuracy": 1, "index": 0},
                                                     {"arch": "b", "accuracy": 2}]))
    with pytest.raises(ValueError, match="some records have an 'index'"):
        read_table(tmp_path / "mixed.json")
    (tmp_path / "bool.json").write_text(json.dumps({"a": True}))
    with pytest.raises(ValueError, match="not a number"):
        read_table(tmp_path / "bool.json")
    with pytest.raises(FileNotFoundError):
        load_ground_truth(tmp_path / "missing.csv")


def test_nats_format_small(tmp_path):
    header = ("CIFAR10TestAccuracy200Epochs,CIFAR100TestAccuracy200Epochs,"
              "ImageNetTestAccuracy200Epochs,ArchitectureString,UniqueString\n")
    (tmp_path / "nats.csv").write_text(header + f"93.5,70.1,44.0,{ARCH_A},u\n10,1,0.8,{ARCH_B},v\n")
    c10 = load_ground_truth(tmp_path / "nats.csv", "cifar10")
    c100 = read_nats_csv(tmp_path / "nats.csv", "cifar100")
    inet = read_nats_csv(tmp_path / "nats.csv", "imagenet16-120")
    assert c10.accuracy(ARCH_A) == 93.5 and c100.accuracy(ARCH_A) == 70.1
    assert inet.accuracy(ARCH_B) == 0.8 and c10.index(ARCH_B) == 1
    (tmp_path / "bad.csv").write_text(header + f"93.5,70.1,44.0,{ARCH_A},u\n,1,0.8,{ARCH_B},v\n")
    with pytest.raises(ValueError, match=r"row 1 \(line 3\), column CIFAR10TestAccuracy200Epochs"):
        read_nats_csv(tmp_path / "bad.csv")
    with pytest.raises(ValueError, match="unknown dataset"):
        read_nats_csv(tmp_path / "nats.csv", "svhn")


def test_stratified_subset_spans_range():
    truth = small_truth(n=1000)
    sub = truth.stratified_subset(20, seed=0)
    assert len(sub) == 20 and all(a in truth for a in sub)
    ranks = np.argsort(np.argsort(truth.accuracies))
    rank_of = dict(zip(truth.arch_strs, ranks))
    strata = sorted(rank_of[a] // 50 for a in sub)
    assert strata == list(range(20))  # exactly one per 5%-quantile bin
    assert list(sub.indices) == sorted(sub.indices)
    assert sub.arch_strs == truth.stratified_subset(20, seed=0).arch_strs
    assert sub.arch_strs != truth.stratified_subset(20, seed=1).arch_strs
    assert truth.stratified_subset(1000).arch_strs == truth.arch_strs
    with pytest.raises(ValueError, match="between 1 and 1000"):
        truth.stratified_subset(1001)


def test_nb201_api_reader_with_stand_in(monkeypatch, tmp_path):
    calls = {}

    class FakeAPI:
        def __init__(self, path, verbose=True):
            calls["path"] = path

        def __len__(self):
            return 2

        def arch(self, index):
            return [ARCH_A, ARCH_B][index]

        def get_more_info(self, index, dataset, iepoch=None, hp="12", is_random=True):
            calls["args"] = (dataset, hp, is_random)
            return {"test-accuracy": [94.0, 10.0][index]}

    monkeypatch.setitem(sys.modules, "nas_201_api", types.SimpleNamespace(NASBench201API=FakeAPI))
    path = tmp_path / "NAS-Bench-201-v1_1-096897.pth"
    path.write_bytes(b"")
    truth = load_ground_truth(path, "imagenet16-120")
    assert truth.accuracy(ARCH_A) == 94.0 and truth.index(ARCH_B) == 1
    assert calls["args"] == ("ImageNet16-120", "200", False)


def test_nb201_api_missing_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "nas_201_api", None)  # import raises ImportError
    with pytest.raises(ImportError, match="pip install nas-bench-201"):
        read_nb201_api(tmp_path / "x.pth")


@pytest.mark.skipif(not NATS_CSV.is_file(), reason=f"NATS-Bench CSV not at {NATS_CSV}")
def test_real_nats_csv():
    truth = load_ground_truth(NATS_CSV, "cifar10")
    assert len(truth) == 15_625
    best = truth.best()
    assert truth.index(best) == 6111 and round(truth.accuracy(best), 2) == 94.37
    for index in (0, 1, 6111, 15_624):
        assert truth.index(truth.arch_str(index)) == index
    sub = truth.stratified_subset(500, seed=0)
    accs = np.sort(truth.accuracies)
    assert sub.accuracies.min() <= accs[len(accs) // 500] + 1e-9
    assert sub.accuracies.max() >= accs[-(len(accs) // 500)] - 1e-9
    assert read_nats_csv(NATS_CSV, "cifar100").accuracy(best) > 60
