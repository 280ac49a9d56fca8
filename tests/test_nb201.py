"""NAS-Bench-201 search space: shapes, architecture strings, path parameters, isomorphism keys,
stand-alone networks, BN recalibration, and (when present) agreement with the benchmark file."""
from __future__ import annotations

import csv
import os
import random
from collections import defaultdict
from pathlib import Path

import pytest
import torch

from pada_fast.spaces import NB201SuperNet, build_supernet, recalibrate_bn
from pada_fast.spaces.nb201_arch import (NUM_ARCHS, OPS, all_archs, arch_to_str, functional_arch_key,
                                         live_edges, str_to_arch, unique_arch_key)

REPO = Path(__file__).resolve().parents[1]
CSV = Path(os.environ.get("PADA_FAST_NB201_CSV", REPO / ".." / "shared" / "nb201" / "nats_bench.csv"))

EXAMPLE = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
EXAMPLE_ARCH = (3, 3, 4, 1, 3, 1)
NONE, SKIP, C1, C3, POOL = range(5)
SPLICED_PAIR = ((POOL, SKIP, SKIP, C3, NONE, SKIP), (POOL, C3, NONE, SKIP, SKIP, SKIP))


def tiny(**kwargs) -> NB201SuperNet:
    torch.manual_seed(0)
    return NB201SuperNet(**{"C": 4, "N": 1, **kwargs})


def search_cells(net):
    return [m for m in net.body if m.__class__.__name__ == "SearchCell"]


# -- shapes and construction --------------------------------------------------------------------

@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("bn_mode", ["batch", "running"])
def test_output_shape(in_channels, bn_mode):
    net = tiny(in_channels=in_channels, num_classes=7, bn_mode=bn_mode)
    x = torch.randn(2, in_channels, 16, 16)
    for arch in [EXAMPLE_ARCH, (0,) * 6, (1,) * 6, (2, 4, 0, 3, 1, 2)]:
        assert net(x, arch).shape == (2, 7)
    assert net(torch.randn(3, in_channels, 15, 9), EXAMPLE_ARCH).shape == (3, 7)  # odd sizes too


def test_interface_sizes():
    net = tiny()
    assert net.num_layers == 6 and net.max_candidates == 5
    assert net.layer_candidates() == [list(OPS)] * 6
    assert net.candidate_mask().all() and net.candidate_mask().shape == (6, 5)
    assert len(search_cells(net)) == 3
    assert len(NB201SuperNet(C=4, N=2).body) == 3 * 2 + 2


def test_arch_accepts_tensor_rows_and_rejects_bad_archs():
    net = tiny()
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(net(x, torch.tensor(EXAMPLE_ARCH)), net(x, list(EXAMPLE_ARCH)))
    with pytest.raises(ValueError, match="6 genes"):
        net(x, (1, 2, 3))
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        net(x, (0, 0, 0, 0, 0, 5))


def test_build_supernet_registry():
    assert isinstance(build_supernet("nb201", C=4, N=1), NB201SuperNet)
    with pytest.raises(ValueError, match="registered: nb201, proxyless, darts"):
        build_supernet("nb101")
    with pytest.raises(TypeError, match="nb201"):
        build_supernet("nb201", channels=4)
    with pytest.raises(ValueError, match="bn_mode"):
        NB201SuperNet(C=4, N=1, bn_mode="sync")


# -- architecture strings ------------------------------------------------------------------------

def test_example_string():
    assert arch_to_str(EXAMPLE_ARCH) == EXAMPLE
    assert str_to_arch(EXAMPLE) == EXAMPLE_ARCH
    assert tiny().arch_to_str(EXAMPLE_ARCH) == EXAMPLE


def test_all_archs_round_trip():
    archs = all_archs()
    assert len(archs) == NUM_ARCHS == 15_625 and archs == sorted(archs)
    strings = [arch_to_str(a) for a in archs]
    assert len(set(strings)) == NUM_ARCHS
    assert all(str_to_arch(s) == a for s, a in zip(strings, archs))


def test_inputs_may_come_in_any_order():
    assert str_to_arch("|nor_conv_3x3~0|+|avg_pool_3x3~1|nor_conv_3x3~0|+"
                       "|skip_connect~2|nor_conv_3x3~1|skip_connect~0|") == EXAMPLE_ARCH


@pytest.mark.parametrize("bad", [
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|",                      # 2 nodes
    EXAMPLE.replace("avg_pool_3x3", "max_pool_3x3"),                         # unknown op
    EXAMPLE.replace("avg_pool_3x3~1", "avg_pool_3x3~0"),                     # input twice
    EXAMPLE.replace("skip_connect~2", "skip_connect~3"),                     # input out of range
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|",  # missing
    EXAMPLE.replace("~1|+", "1|+"),                                          # no '~'
])
def test_bad_strings_are_rejected(bad):
    with pytest.raises(ValueError):
        str_to_arch(bad)


# -- path parameters and gradients ----------------------------------------------------------------

def expected_path(net, arch):
    ids, slots = set(), []
    for e in live_edges(arch):
        for cell in search_cells(net):
            for p in cell.edges[e][arch[e]].parameters():
                ids.add(id(p))
                slots.append(e * 5 + arch[e])
    return ids, sorted(slots)


@pytest.mark.parametrize("bn_mode,per_op", [("batch", 2), ("running", 3)])
def test_path_parameters_slots(bn_mode, per_op):
    net = tiny(bn_mode=bn_mode)
    params, slots = net.path_parameters(EXAMPLE_ARCH)
    # conv_3x3 on edges 0, 1, 4 in each of 3 cells; skip and pool bring nothing.
    assert sorted(set(slots)) == [3, 8, 23]
    assert len(params) == len(slots) == 3 * 3 * per_op
    ids, want_slots = expected_path(net, EXAMPLE_ARCH)
    assert {id(p) for p in params} == ids and sorted(slots) == want_slots
    assert net.path_parameters(list(EXAMPLE_ARCH)) is net.path_parameters(EXAMPLE_ARCH)  # cached

    params, slots = net.path_parameters((C1, POOL, SKIP, NONE, C3, C1))
    assert sorted(set(slots)) == [0 * 5 + C1, 4 * 5 + C3, 5 * 5 + C1]
    assert net.path_parameters((NONE, SKIP, POOL, SKIP, POOL, NONE)) == ([], [])


def test_dead_edges_bring_no_parameters():
    net = tiny()
    # 3<-2 is none, so node 2 (edges 2<-0, 2<-1) cannot reach the output.
    arch = (C3, C1, C3, C3, C1, NONE)
    assert live_edges(arch) == (0, 3, 4)
    assert sorted(set(net.path_parameters(arch)[1])) == [0 * 5 + C3, 3 * 5 + C3, 4 * 5 + C1]
    # node 1 is zero (1<-0 none), so its outgoing convs are dead too.
    assert live_edges((NONE, C3, C3, C3, C3, C3)) == (1, 3, 5)
    assert live_edges((NONE, NONE, C3, NONE, C3, C3)) == ()


@pytest.mark.parametrize("bn_mode", ["batch", "running"])
def test_gradients_reach_only_the_path(bn_mode):
    net = tiny(bn_mode=bn_mode)
    fixed = {id(p) for name, p in net.named_parameters() if ".edges." not in name}
    x = torch.randn(4, 3, 8, 8)
    for arch in [EXAMPLE_ARCH, (C3, C1, C3, C3, C1, NONE), (C1, C1, C1, C1, C1, C1)]:
        net.zero_grad(set_to_none=True)
        net(x, arch).square().mean().backward()
        with_grad = {id(p) for p in net.parameters() if p.grad is not None}
        path_ids = {id(p) for p in net.path_parameters(arch)[0]}
        assert with_grad == path_ids | fixed
        assert all(net.get_parameter(n).grad.abs().sum() > 0 for n, p in net.named_parameters()
                   if id(p) in path_ids and n.endswith("weight"))


# -- isomorphism -------------------------------------------------------------------------------------

def test_unique_key_merges_edges_cut_off_from_the_output():
    # Differ only on 2<-0 and 2<-1, which cannot reach node 3 when 3<-2 is none.
    a, b = (C3, C1, POOL, SKIP, C3, NONE), (C3, SKIP, C3, SKIP, C3, NONE)
    assert unique_arch_key(a) == unique_arch_key(b)
    assert functional_arch_key(a) == functional_arch_key(b)
    # Differ only on 1<-0, which is dead when 2<-1 and 3<-1 are none.
    a, b = (C3, C1, NONE, SKIP, NONE, C3), (POOL, C1, NONE, SKIP, NONE, C3)
    assert unique_arch_key(a) == unique_arch_key(b)
    # A live difference is never merged.
    assert unique_arch_key(EXAMPLE_ARCH) != unique_arch_key((3, 3, 4, 1, 2, 1))
    assert functional_arch_key(EXAMPLE_ARCH) != functional_arch_key((3, 3, 4, 1, 2, 1))
    # The benchmark's own example.
    assert unique_arch_key(EXAMPLE_ARCH) == \
        "((0)@nor_conv_3x3)@avg_pool_3x3+(0)@nor_conv_3x3+((0)@nor_conv_3x3)@nor_conv_3x3+0"


def test_functional_key_merges_more_than_the_benchmark_key():
    # Node 2 is zero in both; the benchmark still tells conv-of-zero from pool-of-zero.
    a, b = (C3, NONE, NONE, SKIP, C1, C3), (C3, NONE, NONE, SKIP, C1, POOL)
    assert unique_arch_key(a) != unique_arch_key(b)
    assert functional_arch_key(a) == functional_arch_key(b)
    # Skip connections splice sums: node 3 = skip(node 2 = x + pool(x)) + conv(x) equals
    # x + pool(x) + conv(x) built from three skips.
    a, b = SPLICED_PAIR
    assert unique_arch_key(a) != unique_arch_key(b)
    assert functional_arch_key(a) == functional_arch_key(b) == \
        "(0)@avg_pool_3x3+(0)@nor_conv_3x3+0"
    # Zero output: everything collapses to '#'.
    assert functional_arch_key((C3, C3, C3, NONE, NONE, NONE)) == "#"
    unique = {unique_arch_key(a) for a in all_archs()}
    functional = {functional_arch_key(a) for a in all_archs()}
    assert len(unique) == 6466
    assert len(functional) < len(unique)


def test_functionally_equal_archs_compute_the_same_outputs():
    """With every edge of a cell holding the same weights per operation type, two architectures
    with the same functional key must compute the same function (batch-statistics BN)."""
    net = tiny().double()
    with torch.no_grad():
        for cell in search_cells(net):
            for op in (C1, C3):
                for e in range(1, 6):
                    cell.edges[e][op].load_state_dict(cell.edges[0][op].state_dict())
    groups = defaultdict(list)
    for arch in all_archs():
        groups[functional_arch_key(arch)].append(arch)
    rng = random.Random(0)
    merged = [g for g in groups.values() if len(g) > 1]
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    pairs = [SPLICED_PAIR] + [tuple(rng.sample(group, 2)) for group in rng.sample(merged, 25)]
    checked = 0
    for a, b in pairs:
        torch.testing.assert_close(net(x, a), net(x, b), msg=f"{arch_to_str(a)} vs {arch_to_str(b)}")
        checked += 1
    # ... and different keys really differ.
    keys = rng.sample(sorted(groups), 10)
    outs = [net(x, groups[k][0]) for k in keys]
    for i in range(len(outs)):
        for j in range(i):
            assert not torch.allclose(outs[i], outs[j])
    assert checked == 26


# -- stand-alone networks ---------------------------------------------------------------------------

def test_standalone_forward_and_size():
    net = tiny()
    sub = net.standalone(EXAMPLE_ARCH)
    assert sub(torch.randn(2, 3, 16, 16)).shape == (2, 10)
    assert sub.arch == EXAMPLE_ARCH and sub.arch_str == EXAMPLE
    n_sub = sum(p.numel() for p in sub.parameters())
    assert n_sub < sum(p.numel() for p in net.parameters())
    assert all(p is not q for p in sub.parameters() for q in net.parameters())   # own weights
    # Only the three live conv_3x3 edges per cell are instantiated.
    assert {k.split(".edges.")[1].split(".")[0] for k, _ in sub.named_parameters()
            if ".edges." in k} == {"1<-0", "2<-0", "3<-1"}
    # Full-size parameter counts against NAS-Bench-201's (1.53M for all nor_conv_3x3).
    full = NB201SuperNet().standalone((C3,) * 6)
    assert abs(sum(p.numel() for p in full.parameters()) - 1_531_546) == 0


def test_standalone_computes_the_supernet_path():
    net = tiny()
    for arch in [EXAMPLE_ARCH, (C3, C1, C3, C3, C1, NONE), (NONE,) * 6]:
        sub = net.standalone(arch, bn_mode="batch")
        state = {}
        for name in sub.state_dict():
            if ".edges." in name:
                prefix, rest = name.split(".edges.")
                edge, tail = rest.split(".", 1)
                e = ["1<-0", "2<-0", "2<-1", "3<-0", "3<-1", "3<-2"].index(edge)
                state[name] = net.state_dict()[f"{prefix}.edges.{e}.{arch[e]}.{tail}"]
            else:
                state[name] = net.state_dict()[name]
        sub.load_state_dict(state)
        x = torch.randn(3, 3, 8, 8)
        torch.testing.assert_close(sub(x), net(x, arch))


# -- BatchNorm recalibration -------------------------------------------------------------------------

def test_recalibrate_bn_running_mode():
    net = tiny(bn_mode="running")
    torch.manual_seed(1)
    batches = [(torch.randn(8, 3, 8, 8) * 2 + 1, torch.zeros(8, dtype=torch.long)) for _ in range(3)]
    net.eval()
    momentum = net.stem[1].momentum
    assert recalibrate_bn(net, EXAMPLE_ARCH, batches) == 3
    assert not net.training and net.stem[1].momentum == momentum
    stem_bn = net.stem[1]
    with torch.no_grad():
        feats = [net.stem[0](x) for x, _ in batches]
    want_mean = torch.stack([f.mean(dim=(0, 2, 3)) for f in feats]).mean(0)
    torch.testing.assert_close(stem_bn.running_mean, want_mean)
    assert int(stem_bn.num_batches_tracked) == 3
    # A dead operation's BN was reset and not touched.
    dead_bn = search_cells(net)[0].edges[0][C1][2]
    assert torch.equal(dead_bn.running_mean, torch.zeros(4)) and int(dead_bn.num_batches_tracked) == 0
    with pytest.raises(ValueError, match="no batches"):
        recalibrate_bn(net, EXAMPLE_ARCH, [])


def test_recalibrate_bn_batch_mode_is_a_no_op():
    assert recalibrate_bn(tiny(), EXAMPLE_ARCH, [torch.randn(2, 3, 8, 8)]) == 0


# -- the benchmark file ------------------------------------------------------------------------------

@pytest.mark.skipif(not CSV.is_file(), reason=f"NAS-Bench-201 CSV not found at {CSV} "
                                               "(set PADA_FAST_NB201_CSV)")
def test_benchmark_strings_and_unique_keys():
    with CSV.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == NUM_ARCHS
    archs = [str_to_arch(r["ArchitectureString"]) for r in rows]
    assert all(arch_to_str(a) == r["ArchitectureString"] for a, r in zip(archs, rows))
    assert len(set(archs)) == NUM_ARCHS
    keys = [unique_arch_key(a) for a in archs]
    if "UniqueString" in rows[0]:
        mismatches = [(r["ArchitectureString"], k) for r, k in zip(rows, keys) if k != r["UniqueString"]]
        assert not mismatches, mismatches[:5]
    assert len(set(keys)) == 6466
