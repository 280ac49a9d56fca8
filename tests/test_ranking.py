"""Ranking you can trust: evaluation order, splits independent of training seeds, class checks,
whole-table validation, resumable rankings, the named protocols and the ranking engine."""
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pada_fast.cli import main
from pada_fast.config import Config, apply_dict
from pada_fast.data.subset import class_mixed_order
from pada_fast.evaluate.engine import RankingEngine
from pada_fast.evaluate.ground_truth import GroundTruth, read_table
from pada_fast.evaluate.heldout import load_heldout
from pada_fast.evaluate.inherited import fixed_batches, inherited_accuracy
from pada_fast.evaluate.protocols import select
from pada_fast.evaluate.rank import PREDICTIONS, rank_supernet
from pada_fast.quickstart import TABLE
from pada_fast.spaces import build_supernet
from pada_fast.train.trainer import Trainer

DIGITS = {"data": {"dataset": "digits", "batch_size": 64, "eval_batch_size": 100},
          "space": {"name": "nb201", "C": 4, "N": 1},
          "optim": {"epochs": 1}, "run": {"threads": 1, "log_interval": 1000}}
TIMING = ("seconds", "paths_per_second", "paths_evaluated_now", "paths_from_resume", "scatter")


def _digits_cfg(out, seed=0, **sections):
    cfg = apply_dict(Config(), DIGITS, source="test")
    cfg.run.out_dir, cfg.run.seed = str(out), seed
    return apply_dict(cfg, sections, source="test")


@pytest.fixture(scope="module")
def digits_checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits_run")
    return Trainer(_digits_cfg(out, seed=1)).fit()["checkpoint"]


def _make_tree(root: Path, classes, per_class=12, size=8):
    rng = np.random.default_rng(len(classes))
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            # class-dependent brightness, so a supernet can learn something
            base = 40 + 50 * (sorted(classes).index(name) % 4)
            pixels = np.clip(rng.normal(base, 20, (size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    """A supernet trained on a 4-class image folder stored class by class."""
    root = tmp_path_factory.mktemp("folder")
    classes = ["ant", "bee", "cat", "dog"]
    _make_tree(root / "train", classes, per_class=16)
    _make_tree(root / "test", classes, per_class=12)
    out = tmp_path_factory.mktemp("folder_run")
    cfg = apply_dict(Config(), {
        "data": {"dataset": "cifar10_folder", "root": str(root), "batch_size": 16, "eval_batch_size": 8,
                 "augment": False},
        "space": {"name": "nb201", "C": 2, "N": 1}, "optim": {"epochs": 1},
        "run": {"out_dir": str(out), "threads": 1, "log_interval": 1000}}, source="test")
    return root, Trainer(cfg).fit()["checkpoint"]


def _small_table(path: Path, n=12, bad_row=None):
    net = build_supernet("nb201", C=2, N=1)
    rng = np.random.default_rng(0)
    archs = []
    while len(archs) < n:
        text = net.arch_to_str(tuple(int(g) for g in rng.integers(0, 5, 6)))
        if text not in archs:
            archs.append(text)
    records = [{"arch": a, "accuracy": 50.0 + i, "index": i} for i, a in enumerate(archs)]
    if bad_row is not None:
        records[bad_row]["arch"] = "|nor_conv_3x3~0|+|bogus_op~0|"
    path.write_text(json.dumps(records))
    return path


# -- 1. evaluation order ---------------------------------------------------------------------------
def test_class_mixed_order_spreads_every_class_over_the_split():
    targets = np.repeat(np.arange(5), [40, 40, 20, 60, 40])     # stored class by class
    order = class_mixed_order(targets, seed=3)
    assert sorted(order.tolist()) == list(range(len(targets)))
    assert np.array_equal(order, class_mixed_order(targets, seed=3))
    assert not np.array_equal(order, class_mixed_order(targets, seed=4))
    share = np.bincount(targets) / len(targets)
    for start in range(0, len(targets), 50):                     # batches of 50
        counts = np.bincount(targets[order[start:start + 50]], minlength=5)
        assert np.all(np.abs(counts - 50 * share) <= 1.0), counts


def test_evaluation_batches_of_a_class_sorted_folder_mix_classes(folder_run):
    root, ckpt = folder_run
    state = torch.load(ckpt, weights_only=False)
    from pada_fast.config import config_from_dict
    cfg = config_from_dict(state["config"])
    held = load_heldout(cfg, state, torch.device("cpu"))
    assert held.dataset.targets.tolist() == sorted(held.dataset.targets.tolist())   # stored order
    assert len(held.batches) == 6
    for _, y in held.batches:                        # 8 images, 4 classes: two of each
        assert torch.bincount(y, minlength=4).tolist() == [2, 2, 2, 2]
    assert held.protocol["eval_order"].startswith("class-mixed")


def test_rank_on_a_class_sorted_folder_records_its_order(folder_run, tmp_path):
    root, ckpt = folder_run
    metrics = rank_supernet(ckpt, tmp_path / "rank", ground_truth=str(_small_table(tmp_path / "t.json")),
                            archs="all", progress=False)
    assert metrics["eval_batch_size"] == 8 and metrics["eval_images"] == 48
    assert metrics["eval_order"] == "class-mixed, seed 0 (data.split_seed)"
    assert len(metrics["eval_order_sha1"]) == 40


# -- 2. splits never depend on a training seed -------------------------------------------------------
def test_digits_supernet_trained_with_another_seed_never_sees_its_ranking_images(tmp_path):
    cfg = _digits_cfg(tmp_path / "run", seed=1)
    train_rows = {bytes(img.numpy().tobytes()) for img in Trainer(cfg).train_set.images}
    held = load_heldout(cfg, {"num_classes": 10, "classes": [str(i) for i in range(10)]},
                        torch.device("cpu"))
    test_rows = [bytes(img.numpy().tobytes()) for img in held.dataset.images]
    assert len(test_rows) == 500 and len(train_rows) == 1297
    assert not any(row in train_rows for row in test_rows)     # digits has no duplicate images


# -- 3. classes must match the checkpoint's ------------------------------------------------------------
@pytest.mark.parametrize("classes", [["ant", "bee", "cat"], ["ant", "bee", "cat", "dog", "eel"]])
def test_rank_refuses_a_held_out_folder_with_other_classes(folder_run, tmp_path, classes):
    _, ckpt = folder_run
    other = tmp_path / "other"
    _make_tree(other / "train", classes, per_class=2)
    _make_tree(other / "test", classes, per_class=2)
    with pytest.raises(ValueError, match="trained on ant, bee, cat, dog") as info:
        rank_supernet(ckpt, tmp_path / "rank", ground_truth=str(_small_table(tmp_path / "t.json")),
                      data_root=str(other), progress=False)
    assert ("missing dog" if len(classes) == 3 else "not trained on eel") in str(info.value)
    assert not (tmp_path / "rank").exists()


def test_checkpoint_stores_class_names(digits_checkpoint):
    state = torch.load(digits_checkpoint, weights_only=False)
    assert state["classes"] == [str(i) for i in range(10)]


# -- 4. the whole table is validated first -----------------------------------------------------------
def test_a_malformed_row_fails_before_any_evaluation(digits_checkpoint, tmp_path, monkeypatch):
    table = _small_table(tmp_path / "bad.json", n=30, bad_row=20)
    calls = []
    original = RankingEngine._evaluate
    monkeypatch.setattr(RankingEngine, "_evaluate", lambda self, a: calls.append(a) or original(self, a))
    with pytest.raises(ValueError, match=r"bad\.json row 20 \(benchmark index 20\).*bogus_op"):
        rank_supernet(digits_checkpoint, tmp_path / "rank", ground_truth=str(table), archs="all",
                      progress=False)
    assert calls == []


# -- 5. a stopped ranking continues exactly ------------------------------------------------------------
def _comparable(metrics):
    return {k: v for k, v in metrics.items() if k not in TIMING}


def test_killed_ranking_resumes_to_the_uninterrupted_metrics(digits_checkpoint, tmp_path, monkeypatch):
    common = dict(ground_truth=str(TABLE), archs="all", progress=False)
    full = rank_supernet(digits_checkpoint, tmp_path / "full", **common)

    original = RankingEngine._evaluate
    count = {"n": 0}

    def interrupted(self, arch):
        if count["n"] == 17:
            raise KeyboardInterrupt
        count["n"] += 1
        return original(self, arch)

    monkeypatch.setattr(RankingEngine, "_evaluate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        rank_supernet(digits_checkpoint, tmp_path / "part", **common)
    log = tmp_path / "part" / PREDICTIONS
    assert len(log.read_text().splitlines()) == 1 + 17            # header + what was done
    with log.open("a") as f:
        f.write('{"key": [3, 3')                                   # torn by a kill mid-write
    monkeypatch.setattr(RankingEngine, "_evaluate", original)
    with pytest.raises(FileExistsError, match="--resume"):
        rank_supernet(digits_checkpoint, tmp_path / "part", **common)
    with pytest.raises(ValueError, match="other settings.*eval_batch_size"):
        rank_supernet(digits_checkpoint, tmp_path / "part", resume=True, batch_size=50, **common)
    resumed = rank_supernet(digits_checkpoint, tmp_path / "part", resume=True, **common)
    assert resumed["paths_from_resume"] == 17
    assert _comparable(resumed) == _comparable(full)
    assert (tmp_path / "part" / "predictions.csv").read_bytes() == \
        (tmp_path / "full" / "predictions.csv").read_bytes()


def test_rank_resume_through_the_cli(digits_checkpoint, tmp_path):
    args = ["rank", str(digits_checkpoint), "--out", str(tmp_path), "--ground-truth", str(TABLE),
            "--archs", "stratified:10", "--threads", "1"]
    assert main(args) == 0
    first = json.loads((tmp_path / "metrics.json").read_text())
    assert main(args + ["--resume"]) == 0                          # nothing left to do
    again = json.loads((tmp_path / "metrics.json").read_text())
    assert again["paths_evaluated_now"] == 0 and _comparable(again) == _comparable(first)


# -- protocols -------------------------------------------------------------------------------------------
def test_unique_equals_all_when_every_class_has_one_member(digits_checkpoint, tmp_path):
    common = dict(ground_truth=str(TABLE), progress=False)
    every = rank_supernet(digits_checkpoint, tmp_path / "all", archs="all", **common)
    unique = rank_supernet(digits_checkpoint, tmp_path / "unique", archs="unique", **common)
    assert unique["classes"]["n"] == every["n"] == len(read_table(TABLE))
    for key in ("kendall_tau", "spearman_rho", "precision_top5pct", "precision_top10pct"):
        assert unique[key] == every[key] == unique["classes"][key]


def test_unique_gives_each_member_its_representatives_prediction(digits_checkpoint, tmp_path):
    net = build_supernet("nb201", C=4, N=1, in_channels=1)
    # skip-then-conv and conv-then-skip on the path 0 -> 1 -> 3: one isomorphism class, which the
    # supernet runs with other weights (edge 1<-0's conv in one, edge 3<-1's in the other)
    pairs = [((1, 0, 0, 2, 2, 3), (2, 0, 0, 2, 1, 3)), ((1, 0, 0, 3, 3, 2), (3, 0, 0, 3, 1, 2))]
    archs = [a for pair in pairs for a in pair] + [(3, 3, 3, 3, 3, 3), (2, 2, 2, 2, 2, 2)]
    for a, b in pairs:
        assert net.unique_arch_key(a) == net.unique_arch_key(b) and net.path_key(a) != net.path_key(b)
    table = GroundTruth([net.arch_to_str(a) for a in archs], [70, 71, 80, 79, 90, 60],
                        [5, 2, 7, 9, 11, 3], source="iso")
    table.write_table(tmp_path / "iso.json")
    m = rank_supernet(digits_checkpoint, tmp_path / "rank", ground_truth=str(tmp_path / "iso.json"),
                      archs="unique", progress=False)
    assert m["n"] == 6 and m["classes"]["n"] == 4 and m["architectures_evaluated"] == 4
    with (tmp_path / "rank" / "predictions.csv").open() as f:
        rows = {r["index"]: r for r in csv.DictReader(f)}
    assert rows["5"]["evaluated_as"] == "2" and rows["5"]["predicted_accuracy"] == rows["2"]["predicted_accuracy"]
    assert rows["9"]["evaluated_as"] == "7"


def test_stratified_and_file_protocols(digits_checkpoint, tmp_path):
    net = build_supernet("nb201", C=4, N=1, in_channels=1)
    truth = read_table(TABLE)
    sel = select("stratified:10", truth, net, seed=0)
    assert sel.protocol == "stratified:10" and len(sel.table) == 10
    listing = tmp_path / "archs.txt"
    listing.write_text(f"# chosen\n{truth.arch_strs[4]}\n{int(truth.indices[7])}  # by index\n"
                       f"{truth.arch_strs[9]}\n")
    sel = select(str(listing), truth, net)
    assert sel.table.arch_strs == [truth.arch_strs[i] for i in (4, 7, 9)]
    listing.write_text(f"{truth.arch_strs[4]}\n|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|\n")
    with pytest.raises(ValueError, match="archs.txt line 2"):
        select(str(listing), truth, net)
    with pytest.raises(ValueError, match="expected all, unique, stratified:N"):
        select("everything", truth, net)


# -- the engine -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("budget,sharing", [(0, "none"), (100_000, "stem"),
                                            (1 << 30, "stem and first-cell operations")])
def test_engine_equals_the_per_architecture_loop(budget, sharing):
    torch.manual_seed(0)
    net = build_supernet("nb201", C=3, N=2, num_classes=5, in_channels=3).eval()
    batches = [(torch.randn(20, 3, 8, 8), torch.randint(0, 5, (20,))) for _ in range(3)]
    rng = np.random.default_rng(1)
    archs = [tuple(int(g) for g in rng.integers(0, 5, 6)) for _ in range(40)]
    archs += [(1, 0, 0, 2, 2, 2), (1, 0, 3, 2, 2, 2)]     # edge 2<-1 dead in both: one path
    engine = RankingEngine(net, batches, prefix_budget_bytes=budget)
    assert engine.sharing == sharing      # the stem's output is 46 KB here, with the ops 461 KB
    got = [engine.accuracy(a) for a in archs]
    assert got == [inherited_accuracy(net, a, batches) for a in archs]
    assert engine.evaluations == len({net.path_key(a) for a in archs}) < len(archs)


def test_path_key_merges_only_identical_computations():
    torch.manual_seed(0)
    net = build_supernet("nb201", C=3, N=1, num_classes=4).eval()
    x = torch.randn(6, 3, 8, 8)
    a, b = (1, 0, 0, 2, 2, 2), (1, 0, 0, 2, 2, 4)       # differ only on dead edge 3<-2
    assert net.path_key(a) == net.path_key(b)
    assert torch.equal(net(x, a), net(x, b))
    c = (1, 0, 2, 2, 2, 2)                               # node 2 alive: a different path
    assert net.path_key(c) != net.path_key(a)


def test_engine_bf16_stays_close_to_fp32():
    torch.manual_seed(0)
    net = build_supernet("nb201", C=4, N=1, num_classes=5).eval()
    batches = [(torch.randn(64, 3, 8, 8), torch.randint(0, 5, (64,))) for _ in range(2)]
    archs = [(3, 3, 3, 3, 3, 3), (2, 1, 3, 4, 2, 3), (1, 1, 1, 1, 1, 1)]
    fp32 = RankingEngine(net, batches)
    bf16 = RankingEngine(net, batches, precision="bf16")
    for a in archs:
        assert abs(fp32.correct(a) - bf16.correct(a)) <= 4      # of 128 images
    with pytest.raises(ValueError, match="precision"):
        RankingEngine(net, batches, precision="fp8")


def test_engine_with_running_bn_recalibrates_per_architecture():
    torch.manual_seed(0)
    net = build_supernet("nb201", C=3, N=1, num_classes=4, bn_mode="running")
    batches = [(torch.randn(16, 3, 8, 8), torch.randint(0, 4, (16,)))]
    calib = [torch.randn(16, 3, 8, 8) for _ in range(2)]
    engine = RankingEngine(net, batches, calib)
    assert engine.sharing == "none"
    for a in [(3, 3, 3, 3, 3, 3), (2, 2, 2, 2, 2, 2)]:
        assert engine.accuracy(a) == inherited_accuracy(net, a, batches, calib)


def test_fixed_batches_follow_the_given_order():
    from pada_fast.data.datasets import ArrayDataset
    images = np.arange(12 * 4, dtype=np.uint8).reshape(12, 2, 2)
    ds = ArrayDataset(images, np.repeat([0, 1, 2], 4))
    order = class_mixed_order(ds.targets, 0)
    batches = fixed_batches(ds, 3, torch.device("cpu"), order=order)
    labels = torch.cat([y for _, y in batches]).tolist()
    assert labels == ds.targets[order].tolist()
    assert all(sorted(y.tolist()) == [0, 1, 2] for _, y in batches)


def test_progress_lines_without_a_terminal(capsys):
    from pada_fast.evaluate.progress import Progress
    bar = Progress(10, "ranking", bar=False, interval_s=0.0)
    bar.update(4)
    err = capsys.readouterr().err
    assert "ranking: 4/10" in err and "ETA" in err


def test_resume_after_a_kill_while_the_header_was_written(digits_checkpoint, tmp_path):
    common = dict(ground_truth=str(TABLE), archs="stratified:10", progress=False)
    full = rank_supernet(digits_checkpoint, tmp_path / "full", **common)
    (tmp_path / "part").mkdir()
    (tmp_path / "part" / PREDICTIONS).write_text('{"protoc')
    resumed = rank_supernet(digits_checkpoint, tmp_path / "part", resume=True, **common)
    assert _comparable(resumed) == _comparable(full) and resumed["paths_from_resume"] == 0
