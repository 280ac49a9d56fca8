"""The contract every path and data sampler keeps (the trainer, the non-finite guard, gradient
variance and checkpoints use samplers only through it).

A path sampler draws each epoch's paths over a ``[layers, candidates]`` candidate mask; a data
sampler draws each epoch's stream of dataset indices. Both record per-step statistics on the
device, turn them into the next epoch's distribution in ``end_epoch``, and round-trip through
``state_dict``/``load_state_dict`` so a resumed run continues exactly. A new sampler subclasses
one of these, implements the abstract methods, registers itself (:mod:`pada_fast.registry`), and
subclasses the contract test in ``tests/sampler_contract.py``.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable, Sequence

import torch


class PathSampler(ABC):
    """``kind`` names the sampler in checkpoints. ``paths_per_step`` paths train on each batch
    (1, but FairNAS's K)."""

    kind: str = ""
    paths_per_step: int = 1

    @classmethod
    @abstractmethod
    def from_options(cls, candidate_mask, device, **options) -> "PathSampler":
        """Build from the method's options (``granularity``, ``schedule``, ``aggregation``,
        ``offset``); a sampler ignores the options it has no use for."""

    @abstractmethod
    def sample_epoch(self, num_steps: int, generator: torch.Generator) -> torch.Tensor:
        """``num_steps * paths_per_step`` paths, LongTensor [rows, layers] on the CPU."""

    @abstractmethod
    def record(self, grads: Sequence[torch.Tensor], slots: Sequence[int], arch=None) -> None:
        """One step's gradients of the path's parameters (after backward and clipping)."""

    @abstractmethod
    def end_epoch(self, next_epoch: int, epochs: int) -> torch.Tensor:
        """Set ``p`` for epoch ``next_epoch`` (0-based) of ``epochs``; return it (host)."""

    @abstractmethod
    def probabilities(self) -> torch.Tensor:
        """The current ``p`` [layers, max_candidates], float64 on the host."""

    @abstractmethod
    def importance_weights(self, paths: torch.Tensor) -> torch.Tensor:
        """Unbiased loss weight of each path (1 under uniform sampling), [S] float64."""

    @abstractmethod
    def state_dict(self) -> dict: ...

    @abstractmethod
    def load_state_dict(self, state: dict) -> None: ...

    def statistics(self) -> list[torch.Tensor]:
        """The device buffers ``record`` changes (restored by :meth:`record_masked`)."""
        return []

    def record_masked(self, skip: torch.Tensor, grads, slots, arch=None) -> None:
        """``record`` unless the device flag ``skip`` (a bool tensor) is set: without a host
        synchronisation, the statistics are put back where ``skip`` holds."""
        buffers = self.statistics()
        saved = [b.clone() for b in buffers]
        self.record(grads, slots, arch)
        for b, old in zip(buffers, saved):
            b.copy_(torch.where(skip, old, b))


class DataSampler(ABC):
    """``num_samples``: the training set's size; ``kind`` names the sampler in checkpoints."""

    kind: str = ""
    num_samples: int

    @classmethod
    @abstractmethod
    def from_options(cls, num_samples: int, device, **options) -> "DataSampler":
        """Build from the method's options (``schedule``, ``aggregation``, ``offset``)."""

    @abstractmethod
    def epoch_stream(self, generator: torch.Generator, num_draws: int | None = None) -> torch.Tensor:
        """The next epoch's dataset indices, LongTensor on the CPU."""

    @abstractmethod
    def record(self, indices: torch.Tensor, importance: torch.Tensor) -> None:
        """One batch's per-sample importance by dataset index (both on the sampler's device)."""

    @abstractmethod
    def end_epoch(self, next_epoch: int, epochs: int) -> None:
        """Set ``q`` for epoch ``next_epoch`` (0-based) of ``epochs`` and reset the statistics."""

    @abstractmethod
    def importance_weights(self, indices: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def summary(self) -> dict:
        """Plain numbers describing ``q`` for the logs."""

    @abstractmethod
    def state_dict(self) -> dict: ...

    @abstractmethod
    def load_state_dict(self, state: dict) -> None: ...

    def statistics(self) -> list[torch.Tensor]:
        """The per-sample device buffers ``[num_samples]`` that ``record`` changes (restored by
        :meth:`record_masked`, split by rank in :meth:`local_state`)."""
        return []

    def reduce_(self, all_reduce_sum: Callable[[torch.Tensor], object]) -> None:
        """Sum the epoch's statistics over processes before ``end_epoch`` (``all_reduce_sum``
        sums a tensor in place); nothing to do without statistics."""
        buffers = self.statistics()
        if not buffers:
            return
        stacked = torch.stack(buffers)
        all_reduce_sum(stacked)
        for b, total in zip(buffers, stacked):
            b.copy_(total)

    def record_masked(self, skip: torch.Tensor, indices: torch.Tensor, importance: torch.Tensor) -> None:
        """``record`` unless the device flag ``skip`` is set, without a host synchronisation:
        only the batch's entries can change, so only those are put back (duplicates hold equal
        values, so the order of the writes does not matter)."""
        buffers = self.statistics()
        saved = [b.index_select(0, indices) for b in buffers]
        self.record(indices, importance)
        for b, old in zip(buffers, saved):
            b.index_copy_(0, indices, torch.where(skip, old, b.index_select(0, indices)))

    # -- distributed resume: each rank's own part of an epoch's statistics ------------------------
    def local_state(self) -> dict:
        """This process's statistics of the running epoch, sparse (the samples it drew)."""
        buffers = self.statistics()
        if not buffers:
            return {}
        drawn = torch.nonzero(torch.stack(buffers).ne(0).any(dim=0)).flatten()
        return {"index": drawn.cpu(), "values": [b[drawn].cpu() for b in buffers]}

    def load_local_state(self, local: dict | None) -> None:
        """Start from ``local`` (:meth:`local_state` of this rank), or from zero (None)."""
        buffers = self.statistics()
        for b in buffers:
            b.zero_()
        if not local or not buffers:
            return
        index = local["index"].to(buffers[0].device)
        values = local.get("values") or [local[name] for name in self.statistic_names()]
        for b, values in zip(buffers, values):
            b[index] = values.to(b)

    def combine_local_states(self, state: dict, parts: list[dict]) -> dict:
        """``state`` (a :meth:`state_dict`) with its statistics replaced by the sum of every
        rank's ``parts``: the whole epoch so far, for a resume with another number of ranks."""
        names = self.statistic_names()
        if not names:
            return state
        state = dict(state)
        for k, name in enumerate(names):
            total = torch.zeros_like(state[name])
            for part in parts:
                total.index_add_(0, part["index"], part["values"][k].to(total))
            state[name] = total
        return state

    def statistic_names(self) -> tuple[str, ...]:
        """The ``state_dict`` keys holding :meth:`statistics`, in the same order."""
        return ()


__all__ = ["DataSampler", "PathSampler"]
