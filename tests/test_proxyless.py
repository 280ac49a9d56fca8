"""ProxylessNAS space: layer structure, shapes, arch strings, candidate sets, path parameters,
sub-model extraction, the MACs/parameter table against direct counts, export and build_model."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pada_fast.config import Config
from pada_fast.architecture import load_arch, network_from_spec, save_arch
from pada_fast.search.export import arch_spec
from pada_fast.search.flops import build_cost_table, count_params, network_cost
from pada_fast.spaces import ProxylessNetwork, ProxylessSuperNet, build_supernet
from pada_fast.spaces.proxyless import (DEFAULT_MBCONVS, NUM_LAYERS, SKIP, layer_plan,
                                        make_divisible, parse_op)


def small(**kwargs) -> ProxylessSuperNet:
    torch.manual_seed(0)
    args = {"num_classes": 10, "width_mult": 0.25, "resolution": 32, "stem_stride": 1,
            "last_channels": 64}
    return ProxylessSuperNet(**{**args, **kwargs})


def rand_archs(net, n, seed=0):
    rng = np.random.default_rng(seed)
    return [net.random_arch(rng) for _ in range(n)]


def test_layer_structure_at_width_1():
    net = ProxylessSuperNet(num_classes=1000)
    cands = net.layer_candidates()
    assert net.num_layers == NUM_LAYERS == 21 and net.max_candidates == 7
    firsts = {0, 4, 8, 12, 16, 20}      # first layer of each stage: resolution or width changes
    for layer, names in enumerate(cands):
        if layer in firsts:
            assert names == list(DEFAULT_MBCONVS)
        else:
            assert names == list(DEFAULT_MBCONVS) + [SKIP]
    mask = net.candidate_mask()
    assert mask.shape == (21, 7) and mask.sum().item() == 6 * 6 + 15 * 7
    widths = [p[1] for p in layer_plan(1.0)]
    assert widths == [24] * 4 + [40] * 4 + [80] * 4 + [96] * 4 + [192] * 4 + [320]
    assert [p[2] for p in layer_plan(1.0)] == [2, 1, 1, 1, 2, 1, 1, 1, 2, 1, 1, 1, 1, 1, 1, 1, 2,
                                               1, 1, 1, 1]
    assert net.stem[0].out_channels == 32 and net.stem[0].stride == (2, 2)
    assert net.head[0].out_channels == 1280 and net.classifier.out_features == 1000


def test_make_divisible_and_parse_op():
    assert make_divisible(32 * 0.35) == 16 and make_divisible(24) == 24 and make_divisible(4) == 8
    assert parse_op("k5e6") == (5, 6) and parse_op("skip") is None
    for bad in ("k4e6", "conv", "k3e0"):
        with pytest.raises(ValueError, match="operation"):
            parse_op(bad)


@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("bn_mode", ["running", "batch"])
def test_output_shapes(in_channels, bn_mode):
    net = small(in_channels=in_channels, num_classes=7, bn_mode=bn_mode)
    for arch in rand_archs(net, 3) + [(0,) * 21]:
        assert net(torch.randn(2, in_channels, 32, 32), arch).shape == (2, 7)
    net2 = small(in_channels=in_channels, stem_stride=2)
    assert net2(torch.randn(2, in_channels, 17, 23), (1,) * 21).shape == (2, 10)   # odd sizes


def test_arch_strings_round_trip_and_errors():
    net = small()
    for arch in rand_archs(net, 20):
        text = net.arch_to_str(arch)
        assert len(text.split("|")) == 21 and net.str_to_arch(text) == arch
    assert net.arch_to_str(torch.tensor((1,) * 21)) == "|".join(["k3e6"] * 21)
    with pytest.raises(ValueError, match="21"):
        net.str_to_arch("k3e3|k3e6")
    with pytest.raises(ValueError, match="layer 0 has no candidate 'skip'"):
        net.str_to_arch("|".join(["skip"] + ["k3e3"] * 20))
    with pytest.raises(ValueError, match="out of range"):
        net(torch.randn(1, 3, 32, 32), (6,) + (0,) * 20)


def test_configurable_candidate_sets():
    net = small(candidates="k3e3,k5e6,skip")
    cands = net.layer_candidates()
    assert cands[0] == ["k3e3", "k5e6"] and cands[1] == ["k3e3", "k5e6", "skip"]
    skippable = [p[3] for p in layer_plan(0.25)]
    per_layer = ";".join(["k3e3"] + ["k3e3,k7e6" + (",skip" if s else "") for s in skippable[1:]])
    net = small(candidates=per_layer)
    assert net.layer_candidates()[0] == ["k3e3"] and net.layer_candidates()[5] == ["k3e3", "k7e6", "skip"]
    assert net.candidate_mask().shape == (21, 3)
    with pytest.raises(ValueError, match="cannot"):
        small(candidates=[["skip", "k3e3"]] + [["k3e3"]] * 20)
    with pytest.raises(ValueError, match="one set per layer"):
        small(candidates="k3e3;k5e5")
    with pytest.raises(ValueError, match="operation"):
        small(candidates="k3e3,conv")


def test_path_parameters_slots_cache_and_gradients():
    net = small()
    arch = rand_archs(net, 1, seed=3)[0]
    params, slots = net.path_parameters(arch)
    assert net.path_parameters(arch)[0] is params          # cached
    width = net.max_candidates
    for layer, choice in enumerate(arch):
        module = net.blocks[layer].candidates[choice]
        expected = list(module.parameters())
        got = [p for p, s in zip(params, slots) if s == layer * width + choice]
        assert len(got) == len(expected) and all(a is b for a, b in zip(got, expected))
    assert set(slots) <= {l * width + c for l, c in enumerate(arch)}
    net(torch.randn(4, 3, 32, 32), arch).sum().backward()
    in_path = {id(p) for p in params}
    for layer in net.blocks:
        for p in layer.parameters():
            assert (p.grad is not None) == (id(p) in in_path)
    skip_arch = tuple(6 if len(c) == 7 else 0 for c in net.layer_candidates())
    assert all(s // width in (0, 4, 8, 16, 20) for s in net.path_parameters(skip_arch)[1])


@pytest.mark.parametrize("bn_mode", ["running", "batch"])
def test_extracted_submodel_matches_supernet(bn_mode):
    net = small(bn_mode=bn_mode)
    x = torch.randn(4, 3, 32, 32)
    # Train-mode passes give the running statistics something to hold.
    for arch in rand_archs(net, 3, seed=1):
        net(x, arch)
    net.eval()
    for arch in rand_archs(net, 4, seed=2):
        sub = net.extract(arch).eval()
        assert isinstance(sub, ProxylessNetwork) and sub.arch_str == net.arch_to_str(arch)
        torch.testing.assert_close(sub(x), net(x, arch), rtol=0, atol=0)
        assert count_params(sub) == sum(p.numel() for p in sub.parameters())


def test_macs_table_matches_direct_count_small():
    net = small()
    table = build_cost_table(net)
    assert table.resolution == 32 and table.fixed_macs > 0
    for arch in rand_archs(net, 6, seed=4) + [(0,) * 21]:
        macs, params = network_cost(net.extract(arch), (3, 32, 32))
        assert table.macs(arch) == macs
        assert table.params(arch) == params
    low, high = table.bounds()
    assert low < table.macs((0,) * 21) < high


def test_macs_table_at_224_matches_direct_count():
    net = ProxylessSuperNet(num_classes=1000)
    table = build_cost_table(net)
    assert table.resolution == 224
    for arch in rand_archs(net, 2, seed=5):
        macs, params = network_cost(net.standalone(arch), (3, 224, 224))
        assert table.macs(arch) == macs and table.params(arch) == params
    # The MobileNetV2-like all-k3e6 chain is in the few-hundred-million range of the literature.
    assert 300e6 < table.macs((1,) * 21) < 600e6
    assert build_cost_table(net) is not table     # cached copies, same numbers
    assert build_cost_table(net).to_dict() == table.to_dict()


def test_export_json_and_standalone_network(tmp_path):
    net = small()
    table = build_cost_table(net)
    arch = rand_archs(net, 1, seed=6)[0]
    spec = arch_spec(net, arch, table, fitness=12.5)
    save_arch(spec, tmp_path / "arch.json")
    loaded = load_arch(tmp_path / "arch.json")
    assert loaded == json.loads(json.dumps(spec)) and loaded["fitness"] == 12.5
    assert loaded["macs"] == table.macs(arch) == loaded["network_macs"]
    model = network_from_spec(loaded)
    assert isinstance(model, ProxylessNetwork) and model.arch_str == loaded["arch"]
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert network_cost(model, (3, 32, 32)) == (loaded["network_macs"], loaded["network_params"])
    assert network_from_spec(tmp_path / "arch.json", dropout=0.2).dropout.p == 0.2
    with pytest.raises(ValueError, match="cannot be 'skip'"):
        ProxylessNetwork(["skip"] * 21)


def test_build_model_from_config():
    from pada_fast.experiment import build_model, resolve_granularity
    cfg = Config()
    cfg.space.name = "proxyless"
    cfg.space.width_mult = 0.25
    cfg.space.candidates = "k3e3,k5e3,skip"
    model = build_model(cfg, 10, 1)
    assert isinstance(model, ProxylessSuperNet) and model.resolution == 224
    assert cfg.space.bn_mode == "running" and cfg.method.pa_granularity == "per_edge"
    assert resolve_granularity(cfg) == "per_edge"
    assert model.layer_candidates()[1] == ["k3e3", "k5e3", "skip"]
    assert isinstance(build_supernet("proxyless", width_mult=0.25), ProxylessSuperNet)


def test_imagenet_config_is_valid_apart_from_the_dataset_entry():
    """configs/proxyless_imagenet.yaml loads once the data module knows 'imagenet_folder'; every
    other value is checked here already."""
    from pathlib import Path

    import yaml

    from pada_fast.config import DataConfig, apply_dict, load_config
    path = Path(__file__).resolve().parents[1] / "configs" / "proxyless_imagenet.yaml"
    values = yaml.safe_load(path.read_text())
    assert values["data"]["dataset"] == "imagenet_folder"
    known = DataConfig.__dataclass_fields__["dataset"].metadata["choices"]
    if "imagenet_folder" in known:
        cfg = load_config(path)
    else:
        values["data"]["dataset"] = "cifar10_folder"
        cfg = apply_dict(Config(), values)
    assert cfg.space.name == "proxyless" and cfg.optim.epochs == 120 and cfg.data.batch_size == 2048
    assert (cfg.optim.lr, cfg.optim.lr_min, cfg.optim.weight_decay) == (0.5, 5e-4, 4e-5)
    assert cfg.method.name == "pada" and cfg.data.backend == "dali"
