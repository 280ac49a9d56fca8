"""The small interface every search space's supernet implements.

An architecture is a tuple of ints, one candidate index per searchable layer (for NAS-Bench-201 a
"layer" is one of the 6 cell edges, shared by all cells). Statistics are kept in
``[num_layers, max_candidates]`` buffers; ``candidate_mask`` marks the entries that exist
(ProxylessNAS layers have 6 or 7 candidates). Flat slot of (layer, candidate) is
``layer * max_candidates + candidate``.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import torch
from torch import nn

from .genes import Arch


class SuperNet(nn.Module):
    space_name: str = ""

    def layer_candidates(self) -> list[list[str]]:
        """Candidate operation names of each searchable layer."""
        raise NotImplementedError

    @property
    def num_layers(self) -> int:
        return len(self.layer_candidates())

    @property
    def max_candidates(self) -> int:
        return max(len(c) for c in self.layer_candidates())

    def candidate_mask(self) -> torch.Tensor:
        mask = torch.zeros(self.num_layers, self.max_candidates, dtype=torch.bool)
        for layer, cands in enumerate(self.layer_candidates()):
            mask[layer, : len(cands)] = True
        return mask

    def forward(self, x: torch.Tensor, arch: Sequence[int]) -> torch.Tensor:
        raise NotImplementedError

    def path_modules(self, arch: tuple[int, ...]) -> Iterable[tuple[int, nn.Module]]:
        """``(slot, module)`` for every searchable operation the path ``arch`` runs (each cell's
        instance), slot = ``layer * max_candidates + candidate``; what a space supplies for
        :meth:`path_parameters`."""
        raise NotImplementedError

    def path_parameters(self, arch: Sequence[int]) -> tuple[list[nn.Parameter], list[int]]:
        """Parameters of the candidate operations that ``arch`` selects (from
        :meth:`path_modules`), and the flat (layer, candidate) slot of each. Parameters outside
        the searchable operations (stem, reduction blocks, classifier) are not included. Cached
        per arch (called every step): the returned lists are shared, do not modify them."""
        key = self._key(arch)
        cache = self.__dict__.setdefault("_path_parameter_cache", {})
        cached = cache.get(key)
        if cached is None:
            params: list[nn.Parameter] = []
            slots: list[int] = []
            for slot, module in self.path_modules(key):
                for p in module.parameters():
                    params.append(p)
                    slots.append(slot)
            cached = cache[key] = (params, slots)
        return cached

    def _apply(self, fn, *args, **kwargs):
        # .to()/.cuda() may swap Parameter objects (torch.__future__ swap mode): drop the cache.
        self.__dict__.get("_path_parameter_cache", {}).clear()
        return super()._apply(fn, *args, **kwargs)

    @staticmethod
    def _key(arch: Sequence[int]) -> Arch:
        """``arch`` (any int sequence or a CPU tensor row) as a tuple of ints."""
        if isinstance(arch, torch.Tensor):
            arch = arch.tolist()
        return tuple(int(g) for g in arch)

    def arch_to_str(self, arch: Sequence[int]) -> str:
        raise NotImplementedError

    def str_to_arch(self, text: str) -> Arch:
        raise NotImplementedError

    # -- optional extras (search, cost tables, export); spaces override what they can ----------
    def random_arch(self, rng) -> Arch:
        """One architecture drawn uniformly per layer; ``rng`` is a ``numpy.random.Generator``
        (its state is plain JSON, which resumable searches save)."""
        return tuple(int(rng.integers(len(c))) for c in self.layer_candidates())

    def path_key(self, arch: Sequence[int]) -> Arch:
        """A key equal for two architectures exactly when this supernet runs the same operations
        for both (so their inherited predictions are identical): the ranking engine evaluates
        each key once. The architecture itself unless the space prunes dead layers."""
        return tuple(int(g) for g in arch)

    def active_layers(self, arch: Sequence[int]) -> tuple[int, ...]:
        """Layers whose chosen operation actually runs for ``arch`` (cost tables sum these).
        All of them unless the space prunes dead edges."""
        return tuple(range(self.num_layers))

    def candidate_modules(self) -> list[list[list[nn.Module]]]:
        """``[layer][candidate]`` -> the module instances that candidate owns (one per cell that
        shares the layer's choice), each called with a single tensor. Instance ``i`` of every
        candidate of a layer sees the same input shape. Used to build MACs/parameter tables."""
        raise NotImplementedError(f"{type(self).__name__} does not list its candidate modules")

    def space_kwargs(self) -> dict:
        """Constructor arguments that rebuild this supernet (``build_supernet(name, **kwargs)``)."""
        return dict(getattr(self, "_space_kwargs", {}))

    def network_kwargs(self, arch: Sequence[int], weights=None) -> dict:
        """Arguments of the registered stand-alone network builder
        (:class:`~pada_fast.registry.SpaceEntry` ``network``) for ``arch``; ``weights``: optional
        per-(layer, candidate) scores a space may use to make ``arch`` valid (DARTS)."""
        raise NotImplementedError(f"{type(self).__name__} has no stand-alone network")
