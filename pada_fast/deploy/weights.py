"""The network an export writes, with its weights, and what its outputs must match.

* ``checkpoint`` (a supernet's ``checkpoint.pt``): the sub-model of the architecture with the
  supernet's weights (``SuperNet.extract``); its outputs must equal the supernet's on that path.
  Running-statistics BatchNorm is recalibrated first on ``recalibrate_batches`` shuffled training
  batches, in the sub-model and in the supernet alike (as the search judged the candidate);
* ``weights`` (a ``pada-fast retrain`` run's checkpoint): the retrained stand-alone network;
* neither: the stand-alone network with fresh weights (``network_from_spec``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from pada_fast import checkpoint
from pada_fast.architecture import network_from_spec, space_kwargs_differences
from pada_fast.data.datasets import build_split
from pada_fast.experiment import load_run
from pada_fast.log import get_logger
from pada_fast.registry import SPACES
from pada_fast.search.supernet_search import has_running_bn, shuffled_batches
from pada_fast.spaces.batchnorm import recalibrate_bn

_log = get_logger(__name__)


@dataclass
class ExportSource:
    """The network to export (eval mode, CPU), where its weights come from, the input shape
    ``(C, H, W)`` it is checked at, ``reference(x)``: the outputs it must reproduce, and
    ``builder``: how :func:`~pada_fast.deploy.formats.build_from` constructs it again."""
    network: nn.Module
    weights: str
    input_shape: tuple[int, int, int]
    reference: Callable[[torch.Tensor], torch.Tensor]
    spec: dict
    builder: dict


def _registry_builder(spec: dict) -> dict:
    return {"space": spec["space"], "kwargs": dict(spec["network"]["kwargs"])}


def _extracted_builder(supernet, arch) -> dict:
    """How to construct ``supernet.extract(arch)`` again (its space's ``extract_builder``)."""
    builder = SPACES.get(supernet.space_name).extract_builder
    if builder is None:
        raise ValueError(f"the {supernet.space_name} space cannot rebuild an extracted network (its registry "
                         "entry has no extract_builder)")
    return builder(supernet, arch)


def _arch_of(spec: dict, supernet) -> tuple[int, ...]:
    if spec.get("genes") is not None:
        return tuple(int(g) for g in spec["genes"])
    return supernet.str_to_arch(spec["arch"])


def _from_supernet(spec: dict, checkpoint_path, recalibrate_batches: int, seed: int) -> ExportSource:
    run = load_run(checkpoint_path, "cpu")
    supernet = run.model.eval()
    if spec["space"] != supernet.space_name:
        raise ValueError(f"the architecture is of space {spec['space']!r} but {checkpoint_path} holds a "
                         f"{supernet.space_name!r} supernet; pass the supernet the search ran on")
    diff = space_kwargs_differences(spec.get("space_kwargs") or {}, supernet) if "space_kwargs" in spec else []
    if diff:
        raise ValueError(f"the architecture file was searched on a supernet with other settings than "
                         f"{checkpoint_path} ({', '.join(diff)}); pass the supernet the search ran on")
    if not hasattr(supernet, "extract"):
        raise ValueError(f"space {supernet.space_name!r} cannot extract a sub-model with inherited weights")
    arch = _arch_of(spec, supernet)
    network = supernet.extract(arch)
    weights = f"inherited from the supernet {checkpoint_path}"
    if has_running_bn(supernet) and recalibrate_batches > 0:
        d = run.cfg.data
        batches = shuffled_batches(build_split(d, "train", subset=d.train_subset), d.batch_size,
                                   recalibrate_batches, "cpu", seed)
        recalibrate_bn(supernet, arch, batches)
        recalibrate_bn(network, None, batches)
        weights += f" (BatchNorm recalibrated on {len(batches)} training batches of {d.batch_size})"
    network.eval()
    resolution = int(spec.get("resolution") or getattr(supernet, "resolution", 32))
    shape = (int(run.state["in_channels"]), resolution, resolution)
    return ExportSource(network, weights, shape, lambda x: supernet(x, arch), spec,
                        _extracted_builder(supernet, arch))


def _from_retrained(spec: dict, weights_path) -> ExportSource:
    state = checkpoint.load(weights_path)
    retrained = state.get("retrain")
    if not retrained:
        raise ValueError(f"{weights_path} is not a `pada-fast retrain` checkpoint (it holds no retrained "
                         "network); for a supernet's weights pass it with --checkpoint")
    trained_spec = retrained["spec"]
    if spec.get("arch") != trained_spec.get("arch"):
        raise ValueError(f"{weights_path} retrained {trained_spec.get('arch')!r}, not the architecture file's "
                         f"{spec.get('arch')!r}; pass the run's retrained.json or the matching checkpoint")
    network = network_from_spec(trained_spec)
    network.load_state_dict(state["model"])
    network.eval()
    shape = tuple(int(v) for v in trained_spec["input_shape"])
    return ExportSource(network, f"retrained ({weights_path})", shape, network, trained_spec,
                        _registry_builder(trained_spec))


def network_for_export(spec: dict, checkpoint: str | None = None, weights: str | None = None,
                       recalibrate_batches: int = 10, seed: int = 0) -> ExportSource:
    """The network of architecture file ``spec`` with its weights (see the module's docstring)."""
    if checkpoint and weights:
        raise ValueError("pass --checkpoint (a supernet's inherited weights) or --weights (a retrained "
                         "network), not both")
    if checkpoint:
        return _from_supernet(spec, checkpoint, recalibrate_batches, seed)
    if weights:
        return _from_retrained(spec, weights)
    _log.warning("warning: no --checkpoint or --weights: exporting the network with fresh (untrained) weights")
    network = network_from_spec(spec).eval()
    kwargs = spec["network"]["kwargs"]
    resolution = int(spec.get("resolution") or kwargs.get("resolution") or 32)
    shape = (int(kwargs.get("in_channels", 3)), resolution, resolution)
    return ExportSource(network, "fresh (untrained)", shape, network, spec, _registry_builder(spec))


__all__ = ["ExportSource", "network_for_export"]
