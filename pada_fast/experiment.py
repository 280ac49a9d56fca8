"""Builds a run from a config or from a checkpoint, for training, ranking, search and gradient
variance alike: the config's ``auto`` values resolved, the supernet, the samplers, the optimiser
and the learning-rate schedule, and the generator of each epoch's draws.

:func:`load_run` is the one way back from a checkpoint file to a usable supernet (and, on
request, its samplers in their saved state).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from pada_fast import checkpoint
from pada_fast.config import Config, config_from_dict
from pada_fast.registry import OPTIMIZERS, SPACES
from pada_fast.reproduce import resolve_reproduction
from pada_fast.sampling import build_data_sampler, build_path_sampler
from pada_fast.spaces import build_supernet


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The host generator of one epoch's path and index draws: a function of (seed, epoch) only,
    so a resumed run draws exactly what the uninterrupted run would have."""
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch * 7919 + 17) % (2**63))


def cosine_lr(step: int, total: int, lr: float, lr_min: float) -> float:
    return lr_min + 0.5 * (lr - lr_min) * (1.0 + math.cos(math.pi * min(step, total) / max(total, 1)))


@OPTIMIZERS.register("sgd")
def _sgd(params, o, implementation: str) -> torch.optim.Optimizer:
    kind = {"fused": True} if implementation == "fused" else {"foreach": True}
    return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay,
                           nesterov=o.nesterov, **kind)


@OPTIMIZERS.register("rmsprop")
def _rmsprop(params, o, implementation: str) -> torch.optim.Optimizer:
    return torch.optim.RMSprop(params, lr=o.lr, alpha=o.rmsprop_alpha, eps=o.rmsprop_eps, momentum=o.momentum,
                               weight_decay=o.weight_decay, foreach=True)


def build_optimizer(params, optim_cfg, implementation: str = "fused") -> torch.optim.Optimizer:
    """The optimiser of ``optim_cfg`` (``optim.name``, from :data:`OPTIMIZERS`): SGD with
    ``implementation`` ``fused`` (one kernel per step, on the CPU too; it honours a device
    ``found_inf`` flag) or ``foreach`` (they agree up to float rounding: the fused kernel rounds
    some updates differently in the last place); RMSProp (foreach; TensorFlow-style ``eps``, as the
    MobileNet recipes use it)."""
    if implementation not in ("fused", "foreach"):
        raise ValueError(f"implementation must be 'fused' or 'foreach', got {implementation!r}")
    return OPTIMIZERS.get(optim_cfg.name)(params, optim_cfg, implementation)


def build_model(cfg: Config, num_classes: int, in_channels: int):
    """The supernet of ``cfg.space`` (a registered space, :data:`~pada_fast.registry.SPACES`).
    The config's ``auto`` values (``space.bn_mode`` and ``method.pa_granularity``: the space's
    defaults; the reproduction keys, see :mod:`pada_fast.reproduce`) are resolved here and written
    back into ``cfg``, so the saved config records what ran and a resumed run compares equal."""
    entry = SPACES.get(cfg.space.name)
    resolve_bn_mode(cfg)
    resolve_granularity(cfg)
    resolve_reproduction(cfg)
    return build_supernet(cfg.space.name, **entry.from_config(cfg.space, num_classes, in_channels))


def resolve_bn_mode(cfg: Config, standalone: bool = False) -> str:
    """``space.bn_mode`` with ``auto`` resolved (written back): the space's supernet default, or
    running statistics for a stand-alone network (``standalone``)."""
    if cfg.space.bn_mode == "auto":
        cfg.space.bn_mode = "running" if standalone else SPACES.get(cfg.space.name).default_bn_mode
    return cfg.space.bn_mode


def resolve_granularity(cfg: Config) -> str:
    """``method.pa_granularity`` with ``auto`` resolved to the space's default (``shared`` for
    nb201, as the authors' code; ``per_edge`` for proxyless and darts, whose layers differ) and
    written back into ``cfg`` so the saved config records it."""
    m = cfg.method
    if m.pa_granularity == "auto":
        m.pa_granularity = SPACES.get(cfg.space.name).default_granularity
    return m.pa_granularity


def build_samplers(cfg: Config, candidate_mask, num_samples: int, device):
    """The path and data samplers of ``cfg.method`` (``auto`` values already resolved, see
    :func:`build_model`) for a training set of ``num_samples``."""
    m = cfg.method
    path_sampler = build_path_sampler(m.name, candidate_mask, m.pa_granularity, m.pa_schedule, device,
                                      aggregation=m.pa_aggregation, offset=m.schedule_offset)
    data_sampler = build_data_sampler(m.name, num_samples, m.da_schedule, device,
                                      aggregation=m.da_aggregation, offset=m.schedule_offset)
    return path_sampler, data_sampler


@dataclass
class LoadedRun:
    """A trained supernet read back from its checkpoint: the run's config, the model with its
    weights (on ``device``), and the checkpoint's whole state."""
    path: Path
    cfg: Config
    model: torch.nn.Module
    state: dict

    def samplers(self, num_samples: int, device):
        """The run's path and data samplers in their saved state (the training set's size
        ``num_samples`` must match the run's)."""
        path_sampler, data_sampler = build_samplers(self.cfg, self.model.candidate_mask(), num_samples, device)
        path_sampler.load_state_dict(self.state["path_sampler"])
        data_sampler.load_state_dict(self.state["data_sampler"])
        return path_sampler, data_sampler


def load_run(checkpoint_path: str | Path, device: torch.device | str = "cpu") -> LoadedRun:
    """Read ``checkpoint_path`` (checksum verified) and rebuild its supernet on ``device``."""
    state = checkpoint.load(checkpoint_path)
    cfg = config_from_dict(state["config"])
    model = build_model(cfg, state["num_classes"], state["in_channels"]).to(device)
    model.load_state_dict(state["model"])
    return LoadedRun(Path(checkpoint_path), cfg, model, state)


__all__ = ["LoadedRun", "build_model", "build_optimizer", "build_samplers", "cosine_lr", "epoch_generator",
           "load_run", "resolve_bn_mode", "resolve_granularity"]
