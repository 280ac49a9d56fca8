"""Multiply-accumulate (MAC) and parameter lookup tables: the cost of any architecture as a sum.

MACs are what the literature calls "FLOPs" (ProxylessNAS' 400M budget is 400M multiply-accumulates
at 224x224). They are counted with PyTorch's own ``torch.utils.flop_counter.FlopCounterMode``
(MACs = counted FLOPs / 2), never by hand formulas, so convolutions, depthwise convolutions and
linear layers count as PyTorch defines them; BatchNorm, activations, pooling and additions count 0.

The table is built once per supernet configuration and input resolution:

* each candidate module instance is counted alone on a batch-1 zero tensor of the input shape it
  sees inside the supernet (shapes captured with forward pre-hooks during a few batch-1 forward
  passes; every candidate of a layer sees the same shape, whatever the architecture);
* ``layer_macs[l][k]`` sums candidate ``k``'s instances on layer ``l`` (several cells share one
  choice in NAS-Bench-201 and DARTS);
* the fixed part (stem, reductions, preprocessing, head) is the count of a whole batch-1 forward
  pass minus that architecture's table sum.

So ``macs(arch) = fixed_macs + sum(layer_macs[l][arch[l]] for l in active layers)``, where the
active layers are those the space actually runs (NAS-Bench-201 and DARTS skip dead edges).
Parameters likewise: each candidate's own parameters, plus everything else in the supernet as
the fixed part.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from pada_fast.architecture import space_kwargs
from pada_fast.files import write_json_atomic

_TABLE_CACHE: dict[str, "CostTable"] = {}


# Cost is counted on batches of 2 and halved: batch-statistics BatchNorm cannot run on a single
# image at 1x1 resolution, and every counted operation is linear in the batch size.
COUNT_BATCH = 2


def count_macs(module: nn.Module, *inputs, **kwargs) -> int:
    """MACs of one forward call ``module(*inputs, **kwargs)`` (FLOPs / 2), without gradients."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(*inputs, **kwargs)
    return int(counter.get_total_flops()) // 2


def macs_per_image(module: nn.Module, image_shape: Sequence[int], *args, device=None,
                   dtype=None) -> int:
    """MACs of ``module`` on one input of shape ``image_shape`` (without the batch dimension)."""
    x = torch.zeros(COUNT_BATCH, *image_shape, device=device, dtype=dtype)
    return count_macs(module, x, *args) // COUNT_BATCH


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def network_cost(network: nn.Module, input_size: Sequence[int]) -> tuple[int, int]:
    """(MACs, parameters) of a stand-alone network on one ``input_size`` = (C, H, W) image,
    counted directly (eval mode)."""
    param = next(network.parameters())
    was_training = network.training
    network.eval()
    try:
        return (macs_per_image(network, input_size, device=param.device, dtype=param.dtype),
                count_params(network))
    finally:
        network.train(was_training)


def summed_layers(arch: Sequence[int], num_layers: int, active_layers, what: str) -> Sequence[int]:
    """The layers a lookup table sums for ``arch``: ``active_layers(arch)``, or all of them."""
    if len(arch) != num_layers:
        raise ValueError(f"architecture has {len(arch)} genes but the {what} has {num_layers} layers")
    return range(len(arch)) if active_layers is None else active_layers(arch)


@dataclass
class CostTable:
    """Per-(layer, candidate) MACs and parameters plus the fixed part; ``macs(arch)`` and
    ``params(arch)`` are table sums. ``active_layers(arch)`` (default: all) says which layers
    count for ``arch``."""

    layer_macs: list[list[int]]
    layer_params: list[list[int]]
    fixed_macs: int
    fixed_params: int
    resolution: int
    in_channels: int
    space: str = ""
    active_layers: Callable[[Sequence[int]], Sequence[int]] | None = field(default=None, repr=False)

    def _layers(self, arch: Sequence[int]) -> Sequence[int]:
        return summed_layers(arch, len(self.layer_macs), self.active_layers, "cost table")

    def macs(self, arch: Sequence[int]) -> int:
        arch = [int(g) for g in arch]
        return self.fixed_macs + sum(self.layer_macs[l][arch[l]] for l in self._layers(arch))

    def params(self, arch: Sequence[int]) -> int:
        arch = [int(g) for g in arch]
        return self.fixed_params + sum(self.layer_params[l][arch[l]] for l in self._layers(arch))

    def bounds(self, which: str = "macs") -> tuple[int, int]:
        """Lower and upper bound over all architectures (exact for chains; for spaces that prune
        dead edges the lower bound counts every layer at its cheapest candidate, which can only be
        lower than any real architecture's cost)."""
        table = self.layer_macs if which == "macs" else self.layer_params
        fixed = self.fixed_macs if which == "macs" else self.fixed_params
        return (fixed + sum(min(row) for row in table), fixed + sum(max(row) for row in table))

    def to_dict(self) -> dict:
        return {"space": self.space, "resolution": self.resolution, "in_channels": self.in_channels,
                "fixed_macs": self.fixed_macs, "fixed_params": self.fixed_params,
                "layer_macs": self.layer_macs, "layer_params": self.layer_params}

    def save(self, path: str | os.PathLike) -> None:
        write_json_atomic(path, self.to_dict())

    @classmethod
    def from_dict(cls, data: dict, active_layers=None) -> "CostTable":
        return cls(layer_macs=[list(map(int, r)) for r in data["layer_macs"]],
                   layer_params=[list(map(int, r)) for r in data["layer_params"]],
                   fixed_macs=int(data["fixed_macs"]), fixed_params=int(data["fixed_params"]),
                   resolution=int(data["resolution"]), in_channels=int(data["in_channels"]),
                   space=data.get("space", ""), active_layers=active_layers)


# -- cache keys ----------------------------------------------------------------------------------------
def default_resolution(net) -> int:
    return int(getattr(net, "resolution", 32))


def input_channels(net) -> int:
    """Image channels supernet ``net`` takes."""
    return int(space_kwargs(net).get("in_channels", getattr(net, "in_channels", 3)))


def space_key(net) -> str:
    """Identifies a supernet configuration for the table cache."""
    kwargs = space_kwargs(net)
    kwargs.pop("num_classes", None)   # the table still depends on it (classifier): keep below
    return json.dumps({"space": net.space_name, "kwargs": kwargs,
                       "num_classes": getattr(net, "num_classes", None)}, sort_keys=True, default=str)


@torch.no_grad()
def candidate_input_shapes(net, resolution: int, in_channels: int) -> dict[tuple[int, int], tuple[int, ...]]:
    """``(layer, instance) -> input shape`` (without the batch) of every candidate module instance
    of supernet ``net`` (:meth:`~pada_fast.spaces.base.SuperNet.candidate_modules`) on
    ``resolution`` x ``resolution`` inputs, captured with forward pre-hooks during a few batch-2
    forward passes in eval mode (every candidate of a layer sees the same shape)."""
    modules = net.candidate_modules()
    candidates = net.layer_candidates()
    param = next(net.parameters())
    shapes: dict[tuple[int, int], tuple[int, ...]] = {}
    handles = []
    for l, per_cand in enumerate(modules):
        for per_inst in per_cand:
            for i, m in enumerate(per_inst):
                def hook(module, args, l=l, i=i):
                    shapes.setdefault((l, i), tuple(args[0].shape[1:]))
                handles.append(m.register_forward_pre_hook(hook))
    was_training = net.training
    net.eval()
    x = torch.zeros(COUNT_BATCH, in_channels, resolution, resolution, device=param.device, dtype=param.dtype)
    try:
        # Pass k runs candidate min(k, K_l - 1) everywhere; passes 1.. avoid index 0, which is
        # "none" in NAS-Bench-201 and DARTS (a dead edge runs nothing, so its input is not seen).
        for k in range(max(len(c) for c in candidates) - 1, -1, -1):
            net(x, tuple(min(k, len(c) - 1) for c in candidates))
            if all((l, i) in shapes for l, per_cand in enumerate(modules)
                   for i in range(len(per_cand[0]))):
                break
    finally:
        for h in handles:
            h.remove()
        net.train(was_training)
    for l, per_cand in enumerate(modules):
        for i in range(len(per_cand[0])):
            if (l, i) not in shapes:
                raise RuntimeError(f"layer {l} instance {i} never ran while capturing input shapes; "
                                   "cannot tell its input shape")
    return shapes


# -- building ----------------------------------------------------------------------------------------
@torch.no_grad()
def build_cost_table(net, resolution: int | None = None, in_channels: int | None = None,
                     use_cache: bool = True) -> CostTable:
    """The MACs/parameter table of supernet ``net`` at ``resolution`` x ``resolution`` inputs
    (default: the supernet's ``resolution`` attribute, else 32). Cached per (space configuration,
    resolution) in this process. Runs a few tiny forward passes (eval mode) on the supernet's device."""
    resolution = int(resolution or default_resolution(net))
    in_channels = int(in_channels or input_channels(net))
    key = f"{space_key(net)}|{resolution}|{in_channels}"
    if use_cache and key in _TABLE_CACHE:
        cached = _TABLE_CACHE[key]
        return CostTable.from_dict(cached.to_dict(), active_layers=net.active_layers)
    modules = net.candidate_modules()
    param = next(net.parameters())
    device, dtype = param.device, param.dtype
    was_training = net.training
    shapes = candidate_input_shapes(net, resolution, in_channels)
    x = torch.zeros(COUNT_BATCH, in_channels, resolution, resolution, device=device, dtype=dtype)
    net.eval()
    layer_macs, layer_params = [], []
    for l, per_cand in enumerate(modules):
        macs_row, params_row = [], []
        for per_inst in per_cand:
            total = 0
            for i, m in enumerate(per_inst):
                total += macs_per_image(m, shapes[(l, i)], device=device, dtype=dtype)
            macs_row.append(total)
            params_row.append(sum(count_params(m) for m in per_inst))
        layer_macs.append(macs_row)
        layer_params.append(params_row)
    active = net.active_layers
    # Reference architecture: the costliest candidate everywhere (never "none", so every layer runs).
    ref = tuple(int(np.argmax(row)) for row in layer_macs)
    total_macs = count_macs(net, x, ref) // COUNT_BATCH
    net.train(was_training)
    fixed_macs = total_macs - sum(layer_macs[l][ref[l]] for l in active(ref))
    fixed_params = count_params(net) - sum(sum(row) for row in layer_params)
    if fixed_macs < 0 or fixed_params < 0:
        raise RuntimeError(f"inconsistent cost table for {net.space_name}: negative fixed part "
                           f"(MACs {fixed_macs}, params {fixed_params})")
    table = CostTable(layer_macs, layer_params, fixed_macs, fixed_params, resolution, in_channels,
                      space=net.space_name, active_layers=active)
    if use_cache:
        _TABLE_CACHE[key] = table
    return table


__all__ = ["CostTable", "build_cost_table", "candidate_input_shapes", "count_macs", "count_params",
           "macs_per_image", "network_cost", "summed_layers"]
