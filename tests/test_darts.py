"""DARTS space: sizes, shapes, arch strings, genotype derivation and round trips, dead edges, path
parameters, sub-model extraction, the MACs table against direct counts, genotype networks."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pada_fast.config import Config
from pada_fast.architecture import network_from_spec
from pada_fast.search.export import arch_spec
from pada_fast.search.flops import build_cost_table, network_cost
from pada_fast.spaces import DartsNetwork, DartsSuperNet
from pada_fast.spaces.darts import reduction_cells
from pada_fast.spaces.darts_arch import (EDGES, NUM_EDGES, OPS, Genotype, arch_to_str,
                                         crossover_genotype_arch, derive_genotype, genotype_from_arch,
                                         genotype_from_str, genotype_to_arch, genotype_to_str,
                                         is_genotype_valid, live_genes, mutate_genotype_arch,
                                         random_genotype_arch, str_to_arch)

# DARTS' published DARTS_V2 genotype (genotypes.py of the DARTS repository).
DARTS_V2 = Genotype(
    normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1),
            ('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)],
    normal_concat=range(2, 6),
    reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1),
            ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)],
    reduce_concat=range(2, 6))
OP = {name: k for k, name in enumerate(OPS)}


def tiny(**kwargs) -> DartsSuperNet:
    torch.manual_seed(0)
    return DartsSuperNet(**{"C": 4, "num_cells": 3, **kwargs})


def uniform_archs(n, seed=0):
    rng = np.random.default_rng(seed)
    return [tuple(int(g) for g in rng.integers(0, len(OPS), 2 * NUM_EDGES)) for _ in range(n)]


def valid_archs(n, seed=0):
    rng = np.random.default_rng(seed)
    return [random_genotype_arch(rng) for _ in range(n)]


def canonical(g: Genotype):
    """Per node, the set of (op, input) pairs (the order within a node does not matter)."""
    return tuple(tuple(sorted(cell[2 * k: 2 * k + 2])) for cell in (g.normal, g.reduce) for k in range(4))


def test_sizes():
    assert len(EDGES) == 14 and [n for n, _ in EDGES].count(5) == 5
    net = tiny()
    assert net.num_layers == 28 and net.max_candidates == 8 and net.candidate_mask().all()
    assert reduction_cells(8) == (2, 5) and reduction_cells(3) == (1, 2)
    assert [c.reduction for c in DartsSuperNet(C=4, num_cells=8).cells] == [
        False, False, True, False, False, True, False, False]


@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("bn_mode", ["batch", "running"])
def test_output_shapes(in_channels, bn_mode):
    net = tiny(in_channels=in_channels, num_classes=7, bn_mode=bn_mode)
    x = torch.randn(2, in_channels, 16, 16)
    for arch in uniform_archs(3) + valid_archs(2) + [(0,) * 28, (OP["skip_connect"],) * 28]:
        assert net(x, arch).shape == (2, 7)
    assert net(torch.randn(2, in_channels, 15, 9), valid_archs(1)[0]).shape == (2, 7)   # odd sizes


def test_arch_strings_round_trip():
    for arch in uniform_archs(20):
        text = arch_to_str(arch)
        assert text.startswith("normal=") and "|reduce=" in text and str_to_arch(text) == arch
    assert str_to_arch(genotype_to_str(DARTS_V2)) == genotype_to_arch(DARTS_V2)
    with pytest.raises(ValueError, match="14"):
        str_to_arch("normal=none|reduce=none")
    with pytest.raises(ValueError, match="unknown"):
        str_to_arch(arch_to_str((0,) * 28).replace("none", "conv", 1))


def test_genotype_round_trips():
    arch = genotype_to_arch(DARTS_V2)
    assert is_genotype_valid(arch) and sum(g != 0 for g in arch) == 16
    assert canonical(genotype_from_arch(arch)) == canonical(DARTS_V2)
    text = genotype_to_str(DARTS_V2)
    assert text.startswith("Genotype(normal=[('sep_conv_3x3', 0)") and "range(2, 6)" in text
    assert genotype_from_str(text) == DARTS_V2
    for a in valid_archs(50, seed=1):
        g = genotype_from_arch(a)
        assert genotype_to_arch(g) == a
        assert genotype_from_str(genotype_to_str(g)) == g
    with pytest.raises(ValueError, match="twice"):
        genotype_to_arch(DARTS_V2._replace(normal=[('sep_conv_3x3', 0)] * 8))
    with pytest.raises(ValueError, match="not one of"):
        genotype_to_arch(DARTS_V2._replace(normal=[('none', 0), ('none', 1)] * 4))


def test_derive_genotype_keeps_two_strongest_non_none_inputs():
    w = np.zeros((28, 8))
    w[:, 0] = 10.0                                  # "none" is ignored however strong
    e = {edge: i for i, edge in enumerate(EDGES)}
    w[e[(2, 1)], OP["sep_conv_5x5"]] = 0.9
    w[e[(2, 0)], OP["max_pool_3x3"]] = 0.5
    w[e[(5, 3)], OP["dil_conv_3x3"]] = 0.8
    w[e[(5, 0)], OP["skip_connect"]] = 0.7
    w[e[(5, 4)], OP["sep_conv_3x3"]] = 0.1
    w[NUM_EDGES + e[(3, 2)], OP["avg_pool_3x3"]] = 0.6
    g = derive_genotype(w)
    assert g.normal[:2] == [("sep_conv_5x5", 1), ("max_pool_3x3", 0)]       # strongest first
    assert g.normal[6:] == [("dil_conv_3x3", 3), ("skip_connect", 0)]
    assert ("avg_pool_3x3", 2) == g.reduce[2]
    assert all(op != "none" for op, _ in g.normal + g.reduce)
    assert is_genotype_valid(genotype_to_arch(g))


def test_genotype_from_sampled_arch_with_weights():
    arch = [0] * 28
    e = {edge: i for i, edge in enumerate(EDGES)}
    for i in range(5):                              # node 5 samples all five inputs
        arch[e[(5, i)]] = OP["sep_conv_3x3"]
    arch[e[(2, 1)]] = OP["skip_connect"]           # node 2 samples one input
    w = np.zeros((28, 8))
    w[e[(5, 4)], OP["sep_conv_3x3"]] = 0.9
    w[e[(5, 2)], OP["sep_conv_3x3"]] = 0.8
    w[e[(2, 0)], OP["dil_conv_5x5"]] = 0.5
    g = genotype_from_arch(arch, w)
    assert g.normal[6:] == [("sep_conv_3x3", 4), ("sep_conv_3x3", 2)]
    assert g.normal[:2] == [("skip_connect", 1), ("dil_conv_5x5", 0)]        # completed from weights
    g0 = genotype_from_arch(arch)                   # without weights: lowest inputs, skip_connect
    assert g0.normal[:2] == [("skip_connect", 1), ("skip_connect", 0)]
    assert g0.normal[6:] == [("sep_conv_3x3", 0), ("sep_conv_3x3", 1)]
    assert is_genotype_valid(genotype_to_arch(g)) and is_genotype_valid(genotype_to_arch(g0))


def test_mutation_and_crossover_stay_genotype_valid():
    rng = np.random.default_rng(0)
    archs = valid_archs(20, seed=2)
    changed = 0
    for a, b in zip(archs, archs[1:]):
        m = mutate_genotype_arch(a, rng, 0.3)
        c = crossover_genotype_arch(a, b, rng)
        assert is_genotype_valid(m) and is_genotype_valid(c)
        changed += m != a
        for k in range(28):
            assert c[k] in (a[k], b[k]) or (a[k] == 0 and b[k] == 0)
    assert changed >= 15


def test_dead_edges_are_skipped():
    net = tiny()
    e = {edge: i for i, edge in enumerate(EDGES)}
    arch = [OP["sep_conv_3x3"]] * 28
    for i in (0, 1):
        arch[e[(2, i)]] = 0                         # node 2 of the normal cell is zero ...
    live = live_genes(arch)
    for j in (3, 4, 5):
        assert e[(j, 2)] not in live                # ... so edges reading it are dead
    assert len(live) == 28 - 2 - 3
    x = torch.randn(2, 3, 16, 16)
    pruned = list(arch)
    for j in (3, 4, 5):
        pruned[e[(j, 2)]] = 0
    torch.testing.assert_close(net(x, arch), net(x, pruned), rtol=0, atol=0)
    assert net.path_parameters(arch)[1] == net.path_parameters(pruned)[1]


def test_path_parameters_slots_and_gradients():
    net = tiny()
    arch = uniform_archs(1, seed=5)[0]
    params, slots = net.path_parameters(arch)
    assert net.path_parameters(arch)[0] is params
    live = set(live_genes(arch))
    assert {s // 8 for s in slots} <= live and all(arch[s // 8] == s % 8 for s in slots)
    parametric = {g for g in live if OPS[arch[g]] in ("sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3",
                                                      "dil_conv_5x5")}
    assert parametric <= {s // 8 for s in slots}
    net(torch.randn(2, 3, 16, 16), arch).sum().backward()
    in_path = {id(p) for p in params}
    for cell in net.cells:
        for p in cell.edges.parameters():
            assert (p.grad is not None) == (id(p) in in_path)


@pytest.mark.parametrize("bn_mode", ["batch", "running"])
def test_extracted_submodel_matches_supernet(bn_mode):
    net = tiny(bn_mode=bn_mode)
    x = torch.randn(4, 3, 16, 16)
    for arch in uniform_archs(2, seed=7):
        net(x, arch)
    net.eval()
    for arch in uniform_archs(3, seed=8) + valid_archs(2, seed=8):
        torch.testing.assert_close(net.extract(arch).eval()(x), net(x, arch), rtol=0, atol=0)


def test_macs_table_matches_direct_count():
    net = DartsSuperNet(C=8, num_cells=5, resolution=32)
    table = build_cost_table(net)
    assert table.resolution == 32
    for arch in uniform_archs(4, seed=9) + valid_archs(4, seed=9) + [(0,) * 28]:
        macs, params = network_cost(net.extract(arch), (3, 32, 32))
        assert table.macs(arch) == macs and table.params(arch) == params
    assert table.macs((0,) * 28) == table.fixed_macs


def test_genotype_network_and_export():
    net = tiny()
    table = build_cost_table(net, resolution=16)
    arch = genotype_to_arch(DARTS_V2)
    spec = arch_spec(net, arch, table)
    assert genotype_from_str(spec["genotype"]) == genotype_from_arch(arch)
    model = network_from_spec(spec)
    assert isinstance(model, DartsNetwork) and model.num_cells == 3 and model.C == 4
    assert network_cost(model, (3, 16, 16)) == (spec["network_macs"], spec["network_params"])
    big = network_from_spec(spec, C=8, num_cells=5, drop_path_prob=0.2)
    big.train()
    assert big(torch.randn(2, 3, 16, 16)).shape == (2, 10)
    v2 = DartsNetwork(DARTS_V2, C=8, num_cells=5)
    assert v2(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert isinstance(net.standalone(arch), DartsNetwork)


def test_build_model_from_config():
    from pada_fast.experiment import build_model
    cfg = Config()
    cfg.space.name, cfg.space.C, cfg.space.num_cells = "darts", 4, 5
    model = build_model(cfg, 10, 3)
    assert isinstance(model, DartsSuperNet) and len(model.cells) == 5 and model.resolution == 32
    assert cfg.space.bn_mode == "batch" and cfg.method.pa_granularity == "per_edge"
