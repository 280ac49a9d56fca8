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

from pada_fast.registry import DATA_SAMPLERS, METHODS, PATH_SAMPLERS, MethodEntry

from .base import DataSampler, PathSampler
from .data import ImportanceDataSampler, UniformDataSampler
from .path import GRANULARITIES, FairPathSampler, ImportancePathSampler, UniformPathSampler
from .schedule import SCHEDULES, mix_weight

for _name, _path, _data in (("spos", "uniform", "uniform"), ("pa", "importance", "uniform"),
                            ("da", "uniform", "importance"), ("pada", "importance", "importance"),
                            ("fairnas", "fair", "uniform")):
    METHODS.register(_name, MethodEntry(_path, _data))


def build_path_sampler(method: str, candidate_mask, granularity: str = "shared",
                       schedule: str = "linear_increase", device: torch.device | str = "cpu",
                       aggregation: str = "mean", offset: str = "current") -> PathSampler:
    """The path sampler of ``method`` (:data:`~pada_fast.registry.METHODS`); the other arguments
    only matter for samplers that use them (PA's)."""
    cls = PATH_SAMPLERS.get(METHODS.get(method).path_sampler)
    return cls.from_options(candidate_mask, device, granularity=granularity, schedule=schedule,
                            aggregation=aggregation, offset=offset)


def build_data_sampler(method: str, num_samples: int, schedule: str = "linear_increase",
                       device: torch.device | str = "cpu", aggregation: str = "mean",
                       offset: str = "current") -> DataSampler:
    """The data sampler of ``method``; the other arguments only matter for DA's."""
    cls = DATA_SAMPLERS.get(METHODS.get(method).data_sampler)
    return cls.from_options(num_samples, device, schedule=schedule, aggregation=aggregation, offset=offset)


__all__ = ["DataSampler", "GRANULARITIES", "FairPathSampler", "ImportanceDataSampler", "ImportancePathSampler",
           "PathSampler", "SCHEDULES", "UniformDataSampler", "UniformPathSampler", "build_data_sampler",
           "build_path_sampler", "mix_weight"]
