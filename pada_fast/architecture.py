"""The architecture file (``pada_fast.arch/1``): what search writes, retrain, export and deploy
read. One definition of the format, its reading and writing, and the stand-alone network (fresh
weights, for retraining) rebuilt from it. ``search.export.arch_spec`` fills one in from a supernet.

An architecture file holds::

    {"format": "pada_fast.arch/1", "space": "proxyless", "arch": "k3e6|skip|...",
     "genes": [...], "space_kwargs": {...}, "resolution": 224,
     "macs": ..., "params": ...,                     # the sub-model in the searched space
     "network": {"kwargs": {...}},                   # what network_from_spec builds
     "network_macs": ..., "network_params": ...,     # that network, counted directly
     "genotype": "Genotype(...)",                    # DARTS only
     ...anything the caller adds (fitness, true_accuracy, ...)}

For NAS-Bench-201 and ProxylessNAS the network is the sub-model itself (same MACs; parameters
differ only where the supernet's BatchNorm has no affine part, as NAS-Bench-201's does); for
DARTS it is DARTS' evaluation network of the genotype at the supernet's C and cell count
(``network_from_spec(spec, C=36, num_cells=20)`` gives DARTS' retraining size).
"""
from __future__ import annotations

import json
import os
from typing import Sequence

from torch import nn

from pada_fast.files import write_json_atomic
from pada_fast.spaces import build_network

FORMAT = "pada_fast.arch/1"


def space_kwargs(net) -> dict:
    """Constructor arguments that rebuild supernet ``net``."""
    return net.space_kwargs()


def plain_space_kwargs(net) -> dict:
    """``space_kwargs(net)`` as JSON stores it (what architecture files and latency tables hold)."""
    return json.loads(json.dumps(space_kwargs(net), default=str))


def space_kwargs_differences(saved: dict, net, ignore: Sequence[str] = ()) -> list[str]:
    """``key=saved (supernet now)`` for every constructor argument of supernet ``net`` that differs
    from ``saved`` (an architecture file's or a latency table's ``space_kwargs``)."""
    mine = plain_space_kwargs(net)
    return [f"{k}={saved.get(k)!r} (supernet {mine.get(k)!r})"
            for k in sorted(set(saved) | set(mine)) if k not in ignore and saved.get(k) != mine.get(k)]


def network_from_spec(spec: dict, **overrides) -> nn.Module:
    """The stand-alone network of an architecture file (or its loaded dict), with fresh weights
    and running-statistics BatchNorm; ``overrides`` replace constructor arguments (e.g.
    ``dropout=0.1`` for ProxylessNAS, ``C=36, num_cells=20, drop_path_prob=0.2`` for DARTS)."""
    if not isinstance(spec, dict):
        spec = load_arch(spec)
    return build_network(spec["space"], **{**spec["network"]["kwargs"], **overrides})


def save_arch(spec: dict, path: str | os.PathLike) -> None:
    write_json_atomic(path, spec, indent=2)


def load_arch(path: str | os.PathLike) -> dict:
    with open(path) as f:
        spec = json.load(f)
    if not isinstance(spec, dict) or spec.get("format") != FORMAT:
        raise ValueError(f"{path} is not a pada_fast architecture file (format {FORMAT})")
    return spec


__all__ = ["FORMAT", "load_arch", "network_from_spec", "plain_space_kwargs", "save_arch", "space_kwargs",
           "space_kwargs_differences"]
