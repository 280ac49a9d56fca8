"""Search: budget enforcement by resampling, evolution vs random search on a toy problem with a
known optimum, resumption to the same result, outputs, the CLI parser, and the whole path
(train -> search -> export) on a tiny generated image-folder tree for every space."""
from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch

from pada_fast.search.budget import Budget, InfeasibleBudgetError
from pada_fast.search.cli import add_search_parser, parse_amount
from pada_fast.search.search_run import STATE_FILE
from pada_fast.search.evolution import evolution_search
from pada_fast.search.flops import CostTable
from pada_fast.search.operators import crossover, mutate, random_arch
from pada_fast.search.random_search import random_search

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
LAYERS, K = 16, 6


class ToySpace:
    """16 layers x 6 candidates; arch strings are the digits."""

    space_name = "toy"

    def layer_candidates(self):
        return [[f"op{k}" for k in range(K)] for _ in range(LAYERS)]

    def arch_to_str(self, arch):
        return "".join(str(int(g)) for g in arch)

    def str_to_arch(self, text):
        return tuple(int(c) for c in text)


def toy_table() -> CostTable:
    # Candidate k costs 10*k MACs on every layer, plus 100 fixed; params likewise /10.
    return CostTable([[10 * k for k in range(K)] for _ in range(LAYERS)],
                     [[k for k in range(K)] for _ in range(LAYERS)], 100, 10, resolution=1,
                     in_channels=1, space="toy")


TARGET = tuple(int(g) for g in np.random.default_rng(42).integers(0, K, LAYERS))


def toy_fitness(arch) -> float:
    """Number of genes equal to TARGET's (the optimum is TARGET: fitness 16)."""
    return float(sum(int(a == t) for a, t in zip(arch, TARGET)))


SMALL_EVO = dict(population=20, generations=8, mutation_children=10, crossover_children=10,
                 parents=5, mutation_prob=0.15)


def test_operators_generic():
    space, rng = ToySpace(), np.random.default_rng(0)
    a, b = random_arch(space, rng), random_arch(space, rng)
    assert len(a) == LAYERS and all(0 <= g < K for g in a)
    m = mutate(space, a, rng, prob=1.0)
    assert all(x != y for x, y in zip(m, a))              # a mutated gene always changes
    c = crossover(space, a, b, rng)
    assert all(x in (p, q) for x, p, q in zip(c, a, b))


def test_budget_checks_and_resampling():
    table = toy_table()
    assert table.macs((0,) * LAYERS) == 100 and table.macs((5,) * LAYERS) == 100 + 16 * 50
    with pytest.raises(InfeasibleBudgetError, match="below the cheapest"):
        Budget(table, max_macs=99)
    with pytest.raises(ValueError, match="cost table"):
        Budget(None, max_macs=10)
    budget = Budget(table, max_macs=100)                  # only the all-zero arch fits
    rng = np.random.default_rng(0)
    with pytest.raises(InfeasibleBudgetError, match="no architecture within MACs <= 100 in 50 draws"):
        budget.sample(lambda: random_arch(ToySpace(), rng), max_tries=50)
    assert budget.sample(lambda: (0,) * LAYERS) == (0,) * LAYERS
    with pytest.raises(InfeasibleBudgetError, match="exhausted"):
        budget.sample(lambda: (0,) * LAYERS, max_tries=5, accept=lambda a: False)
    both = Budget(table, max_macs=400, max_params=20)
    assert both.ok((1,) * 10 + (0,) * 6) and not both.ok((1,) * 11 + (0,) * 5)
    assert both.describe() == "MACs <= 400 and params <= 20"


@pytest.mark.parametrize("algorithm", ["evolution", "random"])
def test_search_respects_budget(algorithm, tmp_path):
    table = toy_table()
    budget = Budget(table, max_macs=100 + 16 * 20)        # average candidate index <= 2
    assert table.macs(TARGET) > budget.max_macs           # the unconstrained optimum is out of reach
    if algorithm == "evolution":
        result = evolution_search(ToySpace(), toy_fitness, budget, seed=1, progress=False,
                                  log=lambda _: None, **SMALL_EVO)
    else:
        result = random_search(ToySpace(), toy_fitness, budget, rounds=4, per_round=40, seed=1,
                               progress=False, log=lambda _: None)
    assert result.evaluations == 160
    assert all(r["macs"] <= budget.max_macs for r in result.records)
    assert len({r["arch"] for r in result.records}) == result.evaluations     # no re-evaluation
    assert result.best["fitness"] == max(r["fitness"] for r in result.records)


def test_evolution_improves_and_beats_random_at_equal_evaluations():
    evo, rnd, first = [], [], []
    for seed in range(5):
        e = evolution_search(ToySpace(), toy_fitness, None, seed=seed, progress=False,
                             log=lambda _: None, **SMALL_EVO)
        r = random_search(ToySpace(), toy_fitness, None, rounds=8, per_round=20, seed=seed,
                          progress=False, log=lambda _: None)
        assert e.evaluations == r.evaluations == 160
        evo.append(e.best["fitness"])
        rnd.append(r.best["fitness"])
        first.append(max(x["fitness"] for x in e.records if x["step"] == 0))
        by_gen = [np.mean([x["fitness"] for x in e.records if x["step"] == g]) for g in range(8)]
        assert by_gen[-1] > by_gen[0] + 3               # the population moves towards the optimum
    assert np.mean(evo) > np.mean(first) + 3
    assert np.mean(evo) >= np.mean(rnd) + 3
    assert min(evo) >= max(rnd)


def test_evolution_resumes_to_the_same_result(tmp_path):
    full = evolution_search(ToySpace(), toy_fitness, Budget(toy_table(), max_macs=600), seed=3,
                            out_dir=tmp_path / "full", progress=False, log=lambda _: None, **SMALL_EVO)

    class Crash(RuntimeError):
        pass

    calls = {"n": 0}

    def crashing(arch):
        calls["n"] += 1
        if calls["n"] > 75:                              # dies inside generation 4
            raise Crash
        return toy_fitness(arch)

    out = tmp_path / "resumed"
    with pytest.raises(Crash):
        evolution_search(ToySpace(), crashing, Budget(toy_table(), max_macs=600), seed=3,
                         out_dir=out, progress=False, log=lambda _: None, **SMALL_EVO)
    state = json.loads((out / STATE_FILE).read_text())
    assert state["next_step"] == 3 and len(state["records"]) == 60
    lines = []
    resumed = evolution_search(ToySpace(), toy_fitness, Budget(toy_table(), max_macs=600), seed=3,
                               out_dir=out, resume=True, progress=False, log=lines.append,
                               **SMALL_EVO)
    assert lines[0].startswith("resumed evolution") and "3/8" in lines[0]
    assert resumed.records == full.records and resumed.best == full.best
    history = (out / "history.jsonl").read_text().splitlines()
    assert [json.loads(h) for h in history] == full.records
    with pytest.raises(ValueError, match="population=20 \\(now 30\\)"):
        evolution_search(ToySpace(), toy_fitness, Budget(toy_table(), max_macs=600), seed=3,
                         out_dir=out, resume=True, progress=False, log=lambda _: None,
                         **{**SMALL_EVO, "population": 30})
    with pytest.raises(FileNotFoundError):
        random_search(ToySpace(), toy_fitness, resume=True, out_dir=tmp_path / "nothing")


def test_random_search_extends_on_resume_and_writes_outputs(tmp_path):
    def run(rounds, out, resume=False):
        return random_search(ToySpace(), toy_fitness, Budget(toy_table(), max_macs=500),
                             rounds=rounds, per_round=10, seed=4, out_dir=tmp_path / out,
                             resume=resume, progress=False, log=lambda _: None)

    full = run(3, "a")
    first = run(1, "b")
    assert first.records == full.records[:10]
    extended = run(3, "b", resume=True)       # more rounds on resume extend the finished search
    assert extended.records == full.records and extended.best == full.best
    out = tmp_path / "a"
    assert len((out / "history.jsonl").read_text().splitlines()) == 30
    best = json.loads((out / "best.json").read_text())
    assert best["fitness"] == full.best["fitness"] and best["macs"] <= 500
    top = json.loads((out / "top.json").read_text())
    assert len(top) == 10 and top[0] == best
    assert [t["fitness"] for t in top] == sorted((t["fitness"] for t in top), reverse=True)
    assert (out / "search.png").read_bytes()[:8] == PNG_MAGIC


def test_cli_parser_and_amounts():
    assert parse_amount("400M") == 400e6 and parse_amount("4e8") == 4e8
    assert parse_amount("0.5G") == 5e8 and parse_amount("12") == 12
    with pytest.raises(argparse.ArgumentTypeError):
        parse_amount("lots")
    parser = argparse.ArgumentParser(prog="pada-fast")
    sub = parser.add_subparsers(dest="command", required=True)
    add_search_parser(sub)
    args = parser.parse_args(["search", "ck.pt", "--out", "o", "--max-macs", "400M",
                              "--algorithm", "random", "--rounds", "3"])
    assert args.max_macs == 400e6 and args.rounds == 3 and args.population == 50
    assert args.func.__name__ == "cmd_search"


# -- the whole path on a tiny image-folder tree --------------------------------------------------

def make_image_tree(root, classes=3, per_class=(12, 6), size=16, seed=0):
    from PIL import Image
    rng = np.random.default_rng(seed)
    for split, n in zip(("train", "test"), per_class):
        for c in range(classes):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(n):
                base = np.full((size, size, 3), 60 + 70 * c, dtype=np.uint8)
                noise = rng.integers(0, 40, (size, size, 3), dtype=np.uint8)
                Image.fromarray(base + noise).save(folder / f"{i:04d}.jpg")
    return root


SPACE_SETTINGS = {
    "nb201": {"C": 4, "N": 1, "resolution": 16},
    "proxyless": {"width_mult": 0.25, "stem_stride": 1, "last_channels": 32, "resolution": 16},
    "darts": {"C": 4, "num_cells": 3, "resolution": 16},
}


@pytest.mark.parametrize("space", ["nb201", "proxyless", "darts"])
def test_train_search_export_end_to_end(space, tmp_path):
    from pada_fast.config import Config
    from pada_fast.evaluate.ground_truth import GroundTruth
    from pada_fast.architecture import load_arch, network_from_spec
    from pada_fast.search.flops import network_cost
    from pada_fast.search.supernet_search import run_search
    from pada_fast.spaces.nb201_arch import all_archs, arch_to_str
    from pada_fast.train.trainer import Trainer

    root = make_image_tree(tmp_path / "data")
    cfg = Config()
    cfg.data.dataset, cfg.data.root, cfg.data.batch_size = "cifar10_folder", str(root), 12
    cfg.data.eval_batch_size = 9
    cfg.space.name = space
    for key, value in SPACE_SETTINGS[space].items():
        setattr(cfg.space, key, value)
    cfg.optim.epochs, cfg.optim.lr = 2, 0.05
    cfg.run.out_dir, cfg.run.progress, cfg.run.log_interval = str(tmp_path / "run"), "lines", 100
    torch.manual_seed(0)
    result = Trainer(cfg).fit()
    assert cfg.method.pa_granularity == ("shared" if space == "nb201" else "per_edge")

    gt = None
    if space == "nb201":                 # a synthetic benchmark: more 3x3 convs, higher accuracy
        archs = all_archs()
        gt = tmp_path / "gt.json"
        GroundTruth([arch_to_str(a) for a in archs], [10.0 + 10 * a.count(3) + a.count(2) for a in archs]
                    ).write_table(gt)
    lines = []
    from pada_fast.search.flops import build_cost_table
    from pada_fast.experiment import load_run
    model = load_run(result["checkpoint"]).model
    low, high = build_cost_table(model).bounds()
    max_macs = low + 0.6 * (high - low)
    summary = run_search(result["checkpoint"], tmp_path / "search", "evolution", max_macs=max_macs,
                         ground_truth=str(gt) if gt else None, device="cpu", progress=False,
                         recalibrate_batches=1, log=lines.append,
                         evolution=dict(population=6, generations=2, mutation_children=3,
                                        crossover_children=3, parents=3))
    assert summary["evaluations"] == 12 and summary["best"]["macs"] <= max_macs
    out = tmp_path / "search"
    for name in ("history.jsonl", "best.json", "top.json", "search.png", "cost_table.json",
                 "summary.json", STATE_FILE, "search_args.json"):
        assert (out / name).exists(), name
    records = [json.loads(x) for x in (out / "history.jsonl").read_text().splitlines()]
    assert all(r["macs"] <= max_macs for r in records)
    spec = load_arch(out / "best.json")
    assert spec["space"] == space and spec["fitness"] == summary["best"]["fitness"]
    net = network_from_spec(spec)
    assert net(torch.randn(2, 3, 16, 16)).shape == (2, 3)
    assert network_cost(net, (3, 16, 16)) == (spec["network_macs"], spec["network_params"])
    if space == "nb201":
        assert all(r["true_accuracy"] is not None for r in records)
        assert summary["benchmark_best"]["accuracy"] == 70.0
        assert spec["true_accuracy"] == summary["best"]["true_accuracy"]
    if space == "darts":
        assert spec["genotype"].startswith("Genotype(normal=[")
        assert summary["pa_genotype"].startswith("Genotype(normal=[")
    if space == "proxyless":
        assert any("recalibrated on 1 training batches" in x for x in lines)
    # The random search works on the same checkpoint too.
    summary = run_search(result["checkpoint"], tmp_path / "random", "random", device="cpu",
                         progress=False, log=lambda _: None, random=dict(rounds=2, per_round=3))
    assert summary["evaluations"] == 6
