"""Data samplers: the epoch's stream of dataset indices, uniform (SPOS) or DA importance-weighted.

DA (docs/method.md): during an epoch every trained sample's importance ``‖softmax(z) − target‖₂`` is
scattered into device buffers by dataset index (no host synchronisation). At epoch end
``s_i`` = mean importance of sample i over the times it was drawn (0 if never drawn) and
``q = τ · s / Σs + (1 − τ) / N``, so unseen samples keep exactly the uniform share ``(1 − τ)/N``.
The next epoch is N indices drawn with replacement from ``q``.

The first epoch, before any importance exists, is a plain permutation, as in the authors' code
(their first epoch iterates the dataset once); every later epoch draws with replacement, even
when ``q`` is uniform.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from pada_fast.registry import DATA_SAMPLERS

from .base import DataSampler
from .schedule import check_offset, check_schedule, mix_weight


def _check_num_samples(num_samples: int) -> int:
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive int (the dataset size), got {num_samples!r}")
    return num_samples


def _check_generator(generator) -> None:
    if not isinstance(generator, torch.Generator) or generator.device.type != "cpu":
        raise TypeError("epoch_stream needs a CPU torch.Generator (the stream is drawn on the host, "
                        "identically on every rank from the same seed)")


def _distribution_summary(q: torch.Tensor) -> dict:
    n = q.numel()
    positive = q[q > 0]
    entropy = float(-(positive * positive.log()).sum())
    ess = float(1.0 / (q * q).sum())
    return {"min": float(q.min()), "max": float(q.max()), "entropy": entropy,
            "max_entropy": math.log(n), "effective_sample_size": ess, "ess_fraction": ess / n}


@DATA_SAMPLERS.register("uniform")
class UniformDataSampler(DataSampler):
    """SPOS: each epoch is a fresh permutation of the dataset. ``record``/``end_epoch`` are no-ops
    so the trainer can treat both samplers alike."""

    kind = "uniform"

    @classmethod
    def from_options(cls, num_samples: int, device, **options):
        return cls(num_samples)

    def __init__(self, num_samples: int):
        self.num_samples = _check_num_samples(num_samples)

    def epoch_stream(self, generator: torch.Generator, num_draws: int | None = None) -> torch.Tensor:
        """LongTensor of dataset indices for one epoch (a permutation, cut to ``num_draws``)."""
        _check_generator(generator)
        stream = torch.randperm(self.num_samples, generator=generator)
        return stream if num_draws is None else stream[:num_draws]

    def record(self, indices: torch.Tensor, importance: torch.Tensor) -> None:
        pass

    def end_epoch(self, next_epoch: int, epochs: int) -> None:
        mix_weight("off", next_epoch, epochs)   # same argument checks as the importance sampler

    def importance_weights(self, indices: torch.Tensor) -> torch.Tensor:
        return torch.ones(indices.shape, dtype=torch.float32, device=indices.device)

    def summary(self) -> dict:
        n = self.num_samples
        return {"kind": self.kind, "tau": 0.0, "min": 1.0 / n, "max": 1.0 / n,
                "entropy": math.log(n), "max_entropy": math.log(n), "effective_sample_size": float(n),
                "ess_fraction": 1.0, "seen_fraction": None, "fallback": None}

    def state_dict(self) -> dict:
        return {"kind": self.kind, "num_samples": self.num_samples}

    def load_state_dict(self, state: dict) -> None:
        if state.get("kind") != self.kind or state.get("num_samples") != self.num_samples:
            raise ValueError(f"checkpoint data sampler is {state.get('kind')!r} over "
                             f"{state.get('num_samples')} samples, this one is {self.kind!r} over "
                             f"{self.num_samples}; build it with the checkpoint's method and dataset")


AGGREGATIONS = ("mean", "official")


@DATA_SAMPLERS.register("importance")
class ImportanceDataSampler(DataSampler):
    """DA: indices drawn with replacement from ``q``, which follows each sample's importance.

    ``aggregation="mean"`` (docs/method.md): a sample's score is its mean importance over the epoch's
    draws. ``"official"`` (the authors' code): ``s ← x`` at its first draw of the epoch, then
    ``s ← (s + x) / 2`` at each later one, in stream order (``score_sum`` then holds ``s``).
    ``offset``: see :func:`~pada_fast.sampling.schedule.mix_weight`."""

    kind = "importance"

    def __init__(self, num_samples: int, schedule: str = "linear_increase",
                 device: torch.device | str = "cpu", aggregation: str = "mean", offset: str = "current"):
        self.num_samples = _check_num_samples(num_samples)
        self.schedule = check_schedule(schedule)
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
        self.aggregation = aggregation
        self.offset = check_offset(offset)
        self.score_sum = torch.zeros(num_samples, dtype=torch.float32, device=device)
        self.count = torch.zeros(num_samples, dtype=torch.float32, device=device)
        self.device = self.score_sum.device
        self._q: torch.Tensor | None = None         # host float64; None until the first end_epoch
        self._q_device: torch.Tensor | None = None
        self._cdf: torch.Tensor | None = None
        self.last_tau = 0.0
        self.seen_fraction: float | None = None
        self.fallback_message: str | None = None
        self.epochs_finished = 0

    @classmethod
    def from_options(cls, num_samples: int, device, schedule: str = "linear_increase",
                     aggregation: str = "mean", offset: str = "current", **options):
        return cls(num_samples, schedule=schedule, device=device, aggregation=aggregation, offset=offset)

    def statistics(self) -> list[torch.Tensor]:
        return [self.score_sum, self.count]

    def statistic_names(self) -> tuple[str, ...]:
        return ("score_sum", "count")

    # -- hot path --------------------------------------------------------------------------------
    def record(self, indices: torch.Tensor, importance: torch.Tensor) -> None:
        """Scatter one batch's importances (``[B]``, any float dtype) by dataset index (``[B]``
        int64), both on the sampler's device."""
        if indices.device != self.device or importance.device != self.device:
            raise ValueError(f"record() needs indices and importance on {self.device}, got "
                             f"{indices.device} and {importance.device}; move them first (the "
                             "loader returns indices on the host)")
        if indices.shape != importance.shape or indices.dim() != 1:
            raise ValueError(f"indices and importance must be 1-D of equal length, got "
                             f"{tuple(indices.shape)} and {tuple(importance.shape)}")
        importance = importance.detach().to(torch.float32)
        if self.aggregation == "official":
            self._record_running_pairs(indices, importance)
            return
        self.score_sum.index_add_(0, indices, importance)
        self.count.index_add_(0, indices, torch.ones_like(importance))

    def _record_running_pairs(self, indices: torch.Tensor, importance: torch.Tensor) -> None:
        """The authors' per-sample update ``s ← (s + x) / 2`` (``s ← x`` at the epoch's first draw),
        in batch order also when a sample is drawn more than once in the batch, in closed form and
        without a host sync: after ``m`` draws ``x_0 .. x_{m-1}`` this batch,
        ``s = s_old / 2^m + Σ_k x_k / 2^(m-k)``, where a first draw of the epoch gives ``x_0``
        twice that weight and ``s_old`` none."""
        if indices.numel() == 0:
            return
        order = torch.argsort(indices, stable=True)
        ordered = indices[order]
        positions = torch.arange(len(ordered), device=indices.device)
        starts = torch.ones_like(ordered, dtype=torch.bool)
        starts[1:] = ordered[1:] != ordered[:-1]
        ends = torch.ones_like(starts)
        ends[:-1] = starts[1:]
        run_start = torch.cummax(torch.where(starts, positions, 0), dim=0).values
        last = len(ordered) - 1
        run_end = last - torch.cummax(torch.where(ends, last - positions, 0).flip(0), dim=0).values.flip(0)
        occurrence = torch.empty_like(positions)
        draws = torch.empty_like(positions)
        occurrence[order] = positions - run_start
        draws[order] = run_end - run_start + 1
        first = occurrence == 0
        fresh = self.count[indices] == 0
        weight = torch.exp2((occurrence - draws).to(torch.float32))
        weight = torch.where(first & fresh, 2 * weight, weight)
        old = self.score_sum[indices[first]]
        kept = torch.where(fresh[first], 0.0, old * torch.exp2(-draws[first].to(torch.float32)))
        self.score_sum[indices[first]] = kept
        self.score_sum.index_add_(0, indices, importance * weight)
        self.count.index_add_(0, indices, torch.ones_like(importance))

    def epoch_stream(self, generator: torch.Generator, num_draws: int | None = None) -> torch.Tensor:
        """LongTensor of ``num_draws`` (default N) dataset indices for the next epoch, on the CPU.

        Inverse-CDF sampling (float64 cumulative sum, uniform draws, binary search) rather than
        ``torch.multinomial``, which refuses more than 2^24 categories; same generator state and
        same ``q`` give the same stream."""
        _check_generator(generator)
        n = self.num_samples if num_draws is None else int(num_draws)
        if n < 0:
            raise ValueError(f"num_draws must be >= 0, got {num_draws}")
        if self._q is None:
            return torch.randperm(self.num_samples, generator=generator)[:n]
        u = torch.rand(n, generator=generator, dtype=torch.float64) * self._cdf[-1]
        # right=True skips zero-probability indices (their cdf equals their predecessor's).
        return torch.searchsorted(self._cdf, u, right=True).clamp_(max=self.num_samples - 1)

    # -- epoch boundary -------------------------------------------------------------------------
    def reduce_(self, all_reduce_sum: Callable[[torch.Tensor], object]) -> None:
        """Combine the epoch's scores of all processes before ``end_epoch``: under distributed
        training each rank records only its own shard's samples. ``all_reduce_sum`` sums a tensor
        over processes in place (e.g. ``torch.distributed.all_reduce``); one call, on a
        ``[2, N]`` buffer of ``score_sum`` and ``count``. The sampler itself stays free of
        torch.distributed."""
        if self.aggregation == "official":
            raise ValueError("data aggregation 'official' (the authors' single-process running average) "
                             "cannot be combined across processes; use method.da_aggregation=mean under torchrun")
        super().reduce_(all_reduce_sum)

    def end_epoch(self, next_epoch: int, epochs: int) -> None:
        """Set ``q`` for epoch ``next_epoch`` (0-based) of ``epochs`` and reset the scores."""
        tau = mix_weight(self.schedule, next_epoch, epochs, self.offset)
        seen = self.count > 0
        per_draw = self.count.clamp_min(1) if self.aggregation == "mean" else 1.0
        s = torch.where(seen, self.score_sum.to(torch.float64) / per_draw, 0.0)
        total = s.sum()
        # Scores are norms (>= 0); a negative one from a caller would give a negative q.
        ok = torch.isfinite(total) & (total > 0) & (s >= 0).all()
        n = self.num_samples
        mixed = tau * (s / torch.where(ok, total, 1.0)) + (1.0 - tau) / n
        q = torch.where(ok, mixed, torch.full_like(s, 1.0 / n))
        extras = torch.stack([ok.to(torch.float64), seen.to(torch.float64).mean()])
        host = torch.cat([q, extras]).cpu()             # the epoch's one device->host copy
        self._q = host[:n].clone()
        self._q_device = q
        self._cdf = torch.cumsum(self._q, dim=0)
        valid, self.seen_fraction = bool(host[n]), float(host[n + 1])
        self.fallback_message = None
        if not valid and tau > 0:
            self.fallback_message = (
                "data importance fell back to uniform: the importance scores summed to 0 or were "
                "not finite (were importances recorded this epoch? a NaN importance means a "
                "non-finite logit or an out-of-range target)")
        self.last_tau = tau
        self.score_sum.zero_()
        self.count.zero_()
        self.epochs_finished += 1

    # -- queries -------------------------------------------------------------------------------
    def probabilities(self) -> torch.Tensor:
        """The current ``q`` [N], float64 on the host (uniform before the first update)."""
        if self._q is None:
            return torch.full((self.num_samples,), 1.0 / self.num_samples, dtype=torch.float64)
        return self._q.clone()

    def importance_weights(self, indices: torch.Tensor) -> torch.Tensor:
        """Optional unbiased loss weight ``1 / (N · q_i)`` of each index, float32 on the indices'
        device (1 before the first update)."""
        if self._q_device is None:
            return torch.ones(indices.shape, dtype=torch.float32, device=indices.device)
        q = self._q_device.to(indices.device)[indices]
        return (1.0 / (self.num_samples * q)).to(torch.float32)

    def summary(self) -> dict:
        """Shape of ``q`` for logging: min/max, entropy (nats) against its maximum log N, effective
        sample size ``1 / Σq²`` (N when uniform), and the fraction of samples seen last epoch."""
        return {"kind": self.kind, "tau": self.last_tau, **_distribution_summary(self.probabilities()),
                "seen_fraction": self.seen_fraction, "fallback": self.fallback_message}

    # -- checkpointing -------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "kind": self.kind, "num_samples": self.num_samples, "schedule": self.schedule,
            "aggregation": self.aggregation, "offset": self.offset,
            "q": None if self._q is None else self._q.clone(),
            "score_sum": self.score_sum.detach().cpu().clone(),
            "count": self.count.detach().cpu().clone(),
            "last_tau": self.last_tau, "seen_fraction": self.seen_fraction,
            "fallback_message": self.fallback_message, "epochs_finished": self.epochs_finished,
        }

    def load_state_dict(self, state: dict) -> None:
        defaults = {"aggregation": "mean", "offset": "current"}     # checkpoints older than them
        for key, value in (("kind", self.kind), ("num_samples", self.num_samples),
                           ("schedule", self.schedule), ("aggregation", self.aggregation),
                           ("offset", self.offset)):
            if state.get(key, defaults.get(key)) != value:
                raise ValueError(f"checkpoint data sampler has {key}={state.get(key)!r} but this "
                                 f"sampler has {key}={value!r}; build it with the checkpoint's "
                                 "settings and dataset")
        q = state["q"]
        self._q = None if q is None else q.to(torch.float64).cpu().clone()
        self._q_device = None if q is None else self._q.to(self.device)
        self._cdf = None if q is None else torch.cumsum(self._q, dim=0)
        self.score_sum.copy_(state["score_sum"])
        self.count.copy_(state["count"])
        self.last_tau = float(state["last_tau"])
        self.seen_fraction = state["seen_fraction"]
        self.fallback_message = state["fallback_message"]
        self.epochs_finished = int(state["epochs_finished"])
