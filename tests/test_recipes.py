"""``data.augment`` recipes, random subsets, and the recipe a ground-truth table records and
``rank`` compares."""
import json

import numpy as np
import pytest
import scipy.stats
import torch

from pada_fast.cli import main
from pada_fast.config import ConfigError, load_config
from pada_fast.data import transforms as T
from pada_fast.data.datasets import build_dataset
from pada_fast.data.subset import random_subset_indices, subset_indices
from pada_fast.registry import DATASETS
from pada_fast.evaluate.ground_truth import read_table


@pytest.mark.parametrize("augment, dataset, size, steps", [
    ("default", "cifar10_folder", 32, ["crop:4", "flip"]),
    ("default", "fashion_mnist", 28, ["crop:3"]),
    ("default", "digits", 8, ["crop:1"]),
    (True, "digits", 8, ["crop:1"]),
    (False, "cifar10", 32, []),
    ("none", "fashion_mnist", 28, []),
    ("flip", "fashion_mnist", 28, ["flip"]),
    ("crop_flip", "fashion_mnist", 28, ["crop:3", "flip"]),
    ("crop:2,flip", "digits", 8, ["crop:2", "flip"]),
    (["flip", "crop:5"], "cifar10", 32, ["flip", "crop:5"]),
])
def test_recipes_resolve_per_dataset(augment, dataset, size, steps):
    assert T.recipe_steps(augment, DATASETS.get(dataset).recipe, size) == steps


@pytest.mark.parametrize("bad", ["rotate", "crop:0", "crop:x", 3.5])
def test_a_bad_recipe_says_what_is_allowed(bad):
    with pytest.raises(ValueError, match="data.augment"):
        T.recipe_steps(bad, "grey", 8)


def test_flip_recipe_flips_and_never_crops():
    ds = build_dataset("digits", split="train", augment="flip", seed=0)
    assert "RandomHorizontalFlip" in repr(ds.transform) and "RandomCrop" not in repr(ds.transform)
    image = torch.arange(64, dtype=torch.uint8).view(1, 8, 8)
    outputs = {tuple(T.apply_transform(ds.transform, image, torch.Generator().manual_seed(seed)).flatten().tolist())
               for seed in range(12)}
    plain = T.eval_transform(T.DIGITS_MEAN, T.DIGITS_STD)(image)
    assert outputs == {tuple(plain.flatten().tolist()), tuple(plain.flip(-1).flatten().tolist())}


def test_config_accepts_names_lists_and_legacy_booleans():
    assert load_config(None, ["data.augment=flip"]).data.augment == "flip"
    assert load_config(None, ["data.augment=[crop:2, flip]"]).data.augment == ["crop:2", "flip"]
    assert load_config(None, ["data.augment=false"]).data.augment is False
    with pytest.raises(ConfigError, match="data.augment"):
        load_config(None, ["data.augment=3"])


def test_random_subsets_are_seeded_and_differ_from_stratified():
    targets = np.repeat(np.arange(4), [70, 10, 10, 10])
    a = random_subset_indices(len(targets), 20, seed=3)
    assert np.array_equal(a, random_subset_indices(len(targets), 20, seed=3))
    assert len(set(a.tolist())) == 20 and np.all(np.diff(a) > 0)
    strat = subset_indices(targets, 20, 3, "stratified")
    assert np.bincount(targets[strat], minlength=4).tolist() == [14, 2, 2, 2]
    with pytest.raises(ValueError, match="subset mode"):
        subset_indices(targets, 20, 3, "balanced")


def test_table_records_recipe_and_noise_and_rank_notes_a_mismatch(tmp_path, capsys):
    table = tmp_path / "table.json"
    common = ["--set", "space.C=2", "--set", "space.N=1", "--set", "optim.epochs=1", "--set", "run.threads=1"]
    assert main(["build-benchmark", *common, "--set", "data.augment=flip", "--archs", "4",
                 "--noise-archs", "3", "--out", str(table)]) == 0
    raw = json.loads(table.read_text())
    meta = raw["meta"]
    assert meta["augment"] == "flip" and meta["dataset"] == "digits" and meta["epochs"] == 1
    assert meta["noise"]["archs"] == 3 and meta["noise"]["seed"] == 1
    firsts = [r["accuracies"][0] for r in raw["records"][:3]]
    seconds = [r["accuracies"][1] for r in raw["records"][:3]]
    expected = scipy.stats.kendalltau(firsts, seconds).statistic
    assert meta["noise"]["kendall_tau"] == pytest.approx(expected) or (np.isnan(expected) and np.isnan(meta["noise"]["kendall_tau"]))
    assert [len(r["accuracies"]) for r in raw["records"]] == [2, 2, 2, 1]
    assert [r["accuracy"] for r in raw["records"]] == [r["accuracies"][0] for r in raw["records"]]
    assert read_table(table).meta["augment"] == "flip"

    run = tmp_path / "run"
    assert main(["train", *common[:6], "--set", "space.C=2", "--set", f"run.out_dir={run}",
                 "--set", "run.threads=1", "--set", "method.name=spos"]) == 0
    assert main(["rank", str(run / "checkpoint.pt"), "--out", str(tmp_path / "rank"),
                 "--ground-truth", str(table), "--archs", "all", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "crop:1" in out and "flip" in out and "data.augment" in out
    metrics = json.loads((tmp_path / "rank" / "metrics.json").read_text())
    assert metrics["train_recipe"] == "crop:1" and metrics["table_recipe"] == "flip"


def test_shipped_fashion_mnist_table_matches_its_config():
    from pathlib import Path
    from pada_fast.evaluate.ground_truth import load_ground_truth
    repo = Path(__file__).resolve().parents[1]
    cfg = load_config(repo / "configs" / "nb201_fashion_mnist.yaml")
    table = load_ground_truth(repo / cfg.rank.ground_truth)
    assert len(table) == 100 and len(set(table.indices.tolist())) == 100
    meta = table.meta
    assert meta["augment"] == T.describe_recipe(T.recipe_steps(cfg.data.augment, "grey", 28))
    assert (meta["C"], meta["N"], meta["train_images"], meta["epochs"]) == (cfg.space.C, cfg.space.N,
                                                                              cfg.data.train_subset, cfg.optim.epochs)
    assert meta["noise"]["archs"] == 20 and -1 <= meta["noise"]["kendall_tau"] <= 1
