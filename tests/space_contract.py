"""The contract every search space's supernet keeps, as a test class a space's tests subclass:
set ``make`` (a small supernet) and ``input_shape`` and inherit every check. Not collected on its
own (no ``test_`` prefix)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pada_fast.registry import SPACES
from pada_fast.spaces import SuperNet, build_network


class SpaceContract:
    input_shape = (2, 3, 16, 16)       # batch, channels, height, width

    @staticmethod
    def make() -> SuperNet:
        raise NotImplementedError

    def archs(self, net: SuperNet, n: int = 6):
        rng = np.random.default_rng(0)
        return [net.random_arch(rng) for _ in range(n)]

    def test_is_registered_under_its_name(self):
        net = self.make()
        assert isinstance(net, SuperNet) and net.space_name
        assert isinstance(net, SPACES.get(net.space_name).supernet)

    def test_candidate_mask_matches_the_layers(self):
        net = self.make()
        mask = net.candidate_mask()
        assert mask.shape == (net.num_layers, net.max_candidates)
        assert mask.sum(dim=1).tolist() == [len(c) for c in net.layer_candidates()]

    def test_forward_gives_logits_and_trains_only_the_path(self):
        net = self.make()
        x = torch.randn(self.input_shape)
        for arch in self.archs(net, 3):
            net.zero_grad(set_to_none=True)
            out = net(x, arch)
            assert out.shape[0] == x.shape[0] and out.dim() == 2
            out.sum().backward()
            path = {id(p) for p in net.path_parameters(arch)[0]}
            candidates = {id(p) for layer in net.candidate_modules() for cand in layer
                          for m in cand for p in m.parameters()}
            trained = {id(p) for p in net.parameters() if p.grad is not None}
            assert (trained & candidates) <= path         # no unsampled candidate gets a gradient

    def test_path_parameters_slots_and_cache(self):
        net = self.make()
        K = net.max_candidates
        for arch in self.archs(net):
            params, slots = net.path_parameters(arch)
            assert len(params) == len(slots)
            for slot in slots:
                layer, op = divmod(slot, K)
                assert op == arch[layer] and layer in net.active_layers(arch)
            assert net.path_parameters(list(arch))[0] is params          # cached per arch
            owned = {id(p) for slot, m in net.path_modules(tuple(arch)) for p in m.parameters()}
            assert {id(p) for p in params} == owned

    def test_arch_strings_round_trip(self):
        net = self.make()
        for arch in self.archs(net):
            assert net.str_to_arch(net.arch_to_str(arch)) == tuple(arch)

    def test_stand_alone_network_runs(self):
        net = self.make()
        arch = self.archs(net, 1)[0]
        try:
            kwargs = net.network_kwargs(arch)
        except NotImplementedError:
            pytest.skip(f"{net.space_name} has no stand-alone network")
        network = build_network(net.space_name, **kwargs).eval()
        assert network(torch.randn(self.input_shape)).shape == net.eval()(torch.randn(self.input_shape), arch).shape
