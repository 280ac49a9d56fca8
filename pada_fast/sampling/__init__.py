"""Path and data samplers, and which pair each training method uses.

========  =====================  =====================
method    path sampler           data sampler
========  =====================  =====================
spos      uniform                uniform (permutation)
pa        importance (PA)        uniform
da        uniform                importance (DA)
pada      importance (PA)        importance (DA)
fairnas   fair (K paths a step)  uniform (permutation)
========  =====================  =====================
"""
from __future__ import annotations

import torch

from .data import ImportanceDataSampler, UniformDataSampler
from .path import GRANULARITIES, FairPathSampler, ImportancePathSampler, UniformPathSampler
from .schedule import SCHEDULES, mix_weight

# method -> (importance paths, importance data)
METHODS: dict[str, tuple[bool, bool]] = {
    "spos": (False, False),
    "pa": (True, False),
    "da": (False, True),
    "pada": (True, True),
    "fairnas": (False, False),
}


def _check_method(method: str) -> tuple[bool, bool]:
    try:
        return METHODS[method]
    except KeyError:
        raise ValueError(f"unknown method {method!r}; choose one of {list(METHODS)}") from None


def build_path_sampler(method: str, candidate_mask, granularity: str = "shared",
                       schedule: str = "linear_increase", device: torch.device | str = "cpu",
                       aggregation: str = "mean", offset: str = "current"):
    """The path sampler of ``method``; the other arguments only matter for pa/pada."""
    if method == "fairnas":
        return FairPathSampler(candidate_mask, device=device)
    if _check_method(method)[0]:
        return ImportancePathSampler(candidate_mask, granularity=granularity, schedule=schedule,
                                     device=device, aggregation=aggregation, offset=offset)
    return UniformPathSampler(candidate_mask, device=device)


def build_data_sampler(method: str, num_samples: int, schedule: str = "linear_increase",
                       device: torch.device | str = "cpu", aggregation: str = "mean",
                       offset: str = "current"):
    """The data sampler of ``method``; the other arguments only matter for da/pada."""
    if _check_method(method)[1]:
        return ImportanceDataSampler(num_samples, schedule=schedule, device=device,
                                     aggregation=aggregation, offset=offset)
    return UniformDataSampler(num_samples)


__all__ = ["GRANULARITIES", "METHODS", "SCHEDULES", "FairPathSampler", "ImportanceDataSampler", "ImportancePathSampler",
           "UniformDataSampler", "UniformPathSampler", "build_data_sampler", "build_path_sampler",
           "mix_weight"]
