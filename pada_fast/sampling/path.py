"""Path samplers: uniform (SPOS) and PA's gradient-norm importance sampling.

Both keep a ``[layers, candidates]`` distribution ``p`` on the host and the epoch's gradient-norm
accumulators on the device. A whole epoch of paths is drawn at once from the host copy of ``p``
(``p`` only changes at epoch end), so neither sampling nor recording ever waits for the device;
``end_epoch`` is the one place that copies from the device, once.

Importance update (docs/method.md): ``g`` = mean gradient norm of each operation over the steps it was
trained this epoch, then ``p = δ · g / Σg + (1 − δ) · uniform`` per layer, over the layer's valid
candidates, with ``δ = mix_weight(schedule, next_epoch, epochs)``. Granularity:

* ``per_edge``: ``g[l, k]`` is operation ``k``'s own mean on layer ``l``.
* ``shared`` (the authors' NAS-Bench-201 code: one distribution over operation types):
  ``g_k = (1 / |S_k|) · Σ_{l ∈ S_k} norm_sum[l, k] / step_count[l, k]`` with
  ``S_k = {l : step_count[l, k] > 0}`` (``g_k = 0`` if ``S_k`` is empty): the mean over layers of
  the per-layer means, each layer that trained ``k`` weighing the same however often it drew ``k``.
  Every layer then uses ``g_k``, renormalised over that layer's valid candidates.
"""
from __future__ import annotations

from typing import Sequence

import torch

from pada_fast import ops
from pada_fast.registry import PATH_SAMPLERS

from .base import PathSampler
from .schedule import check_offset, check_schedule, mix_weight

GRANULARITIES = ("shared", "per_edge")
AGGREGATIONS = ("mean", "official")


def _check_mask(candidate_mask) -> torch.Tensor:
    mask = torch.as_tensor(candidate_mask).detach().cpu()
    if mask.dtype != torch.bool or mask.dim() != 2:
        raise ValueError("candidate_mask must be a 2-D bool tensor [layers, max_candidates] "
                         f"(SuperNet.candidate_mask()), got dtype {mask.dtype} and shape "
                         f"{tuple(mask.shape)}")
    empty = (~mask.any(dim=1)).nonzero().flatten().tolist()
    if mask.shape[0] == 0 or empty:
        raise ValueError(f"every layer needs at least one candidate; layers without any: {empty}")
    return mask.clone()


def uniform_probabilities(mask: torch.Tensor) -> torch.Tensor:
    m = mask.to(torch.float64)
    return m / m.sum(dim=1, keepdim=True)


@PATH_SAMPLERS.register("uniform")
class UniformPathSampler(PathSampler):
    """SPOS: every valid candidate of every layer equally likely. Still records gradient norms
    (``last_mean_norms`` after ``end_epoch``) so SPOS and PA runs log the same statistics."""

    kind = "uniform"

    @classmethod
    def from_options(cls, candidate_mask, device, **options):
        return cls(candidate_mask, device=device)

    def __init__(self, candidate_mask, device: torch.device | str = "cpu"):
        self.candidate_mask = _check_mask(candidate_mask)
        self.device = torch.device(device)
        shape = tuple(self.candidate_mask.shape)
        self.norm_sum = torch.zeros(shape, dtype=torch.float32, device=self.device)
        self.step_count = torch.zeros(shape, dtype=torch.float32, device=self.device)
        self._mask_device = self.candidate_mask.to(self.device)
        self._p = uniform_probabilities(self.candidate_mask)
        self.last_mean_norms: torch.Tensor | None = None    # host [L, K], last finished epoch
        self.last_mix_weight = 0.0
        self.fallback_message: str | None = None
        self.epochs_finished = 0

    @property
    def num_layers(self) -> int:
        return self.candidate_mask.shape[0]

    def statistics(self) -> list[torch.Tensor]:
        return [self.norm_sum, self.step_count]

    # -- hot path --------------------------------------------------------------------------------
    def sample_epoch(self, num_steps: int, generator: torch.Generator) -> torch.Tensor:
        """``num_steps`` paths drawn independently from ``p``: LongTensor [num_steps, layers] on
        the CPU. Same generator state, same ``p`` => same paths."""
        if num_steps < 0:
            raise ValueError(f"num_steps must be >= 0, got {num_steps}")
        if not isinstance(generator, torch.Generator) or generator.device.type != "cpu":
            raise TypeError("sample_epoch needs a CPU torch.Generator (paths are drawn on the host "
                            "so sampling never waits for the device)")
        if num_steps == 0:
            return torch.empty((0, self.num_layers), dtype=torch.long)
        draws = torch.multinomial(self._p, num_steps, replacement=True, generator=generator)
        return draws.t().contiguous()

    def record(self, grads: Sequence[torch.Tensor], slots: Sequence[int], arch=None) -> None:
        """Add one step's per-operation gradient norms (call after backward and clipping);
        ``grads``/``slots`` as from ``SuperNet.path_parameters``; ``arch`` (the path, one
        candidate per layer) is needed by ``aggregation="official"`` only."""
        ops.grad_norm_accumulate_(grads, slots, self.norm_sum, self.step_count)

    # -- epoch boundary -------------------------------------------------------------------------
    def end_epoch(self, next_epoch: int, epochs: int) -> torch.Tensor:
        """Finish the epoch: set ``p`` for epoch ``next_epoch`` (0-based) of ``epochs``, reset the
        accumulators, and return the new ``p`` (host)."""
        mean_norms = self._epoch_norms()
        weight = self._mix_weight(next_epoch, epochs)
        p, row_ok = self._next_probabilities(mean_norms, weight)
        L, K = self.candidate_mask.shape
        # One device->host copy for everything the host needs.
        host = torch.cat([p.reshape(-1), mean_norms.to(torch.float64).reshape(-1),
                          row_ok.to(torch.float64).reshape(-1)]).cpu()
        self._p = host[: L * K].view(L, K).clone()
        self.last_mean_norms = host[L * K: 2 * L * K].view(L, K).to(torch.float32)
        bad_rows = (host[2 * L * K:] == 0).nonzero().flatten().tolist()
        self.fallback_message = None
        if bad_rows and weight > 0:
            self.fallback_message = (
                f"path importance fell back to uniform on layers {bad_rows}: their gradient norms "
                "summed to 0 or were not finite (were gradients recorded this epoch? record() must "
                "run after backward(); NaN gradients also cause this)")
        self.last_mix_weight = weight
        self.norm_sum.zero_()
        self.step_count.zero_()
        self.epochs_finished += 1
        return self.probabilities()

    def _epoch_norms(self) -> torch.Tensor:
        """The epoch's gradient norm of every (layer, candidate): the mean over its steps."""
        return ops.grad_norm_finalize(self.norm_sum, self.step_count)

    def _mix_weight(self, next_epoch: int, epochs: int) -> float:
        mix_weight("off", next_epoch, epochs)   # validates the epoch numbers
        return 0.0

    def _next_probabilities(self, mean_norms: torch.Tensor, weight: float):
        uniform = uniform_probabilities(self._mask_device)
        return uniform, torch.ones(self.num_layers, dtype=torch.bool, device=self.device)

    # -- queries -------------------------------------------------------------------------------
    def probabilities(self) -> torch.Tensor:
        """The current ``p`` [layers, max_candidates], float64 on the host; 0 for invalid slots."""
        return self._p.clone()

    def importance_weights(self, paths: torch.Tensor) -> torch.Tensor:
        """Optional unbiased loss weight of each path, ``Π_l 1 / (K_l · p[l, a_l])``
        (1 under uniform sampling). ``paths`` [S, layers] host LongTensor; returns [S] float64."""
        paths = torch.as_tensor(paths, dtype=torch.long).cpu()
        if paths.dim() == 1:
            paths = paths[None]
        counts = self.candidate_mask.sum(dim=1).to(torch.float64)
        chosen = self._p.gather(1, paths.t().contiguous()).t()      # [S, L]
        return (1.0 / (counts[None, :] * chosen)).prod(dim=1)

    # -- checkpointing -------------------------------------------------------------------------
    def _config(self) -> dict:
        return {"kind": self.kind}

    def state_dict(self) -> dict:
        return {
            **self._config(),
            "candidate_mask": self.candidate_mask.clone(),
            "p": self._p.clone(),
            "norm_sum": self.norm_sum.detach().cpu().clone(),
            "step_count": self.step_count.detach().cpu().clone(),
            "last_mean_norms": None if self.last_mean_norms is None else self.last_mean_norms.clone(),
            "last_mix_weight": self.last_mix_weight,
            "fallback_message": self.fallback_message,
            "epochs_finished": self.epochs_finished,
        }

    def load_state_dict(self, state: dict) -> None:
        defaults = {"aggregation": "mean", "offset": "current"}     # checkpoints older than them
        for key, value in self._config().items():
            if state.get(key, defaults.get(key)) != value:
                raise ValueError(f"checkpoint path sampler has {key}={state.get(key)!r} but this "
                                 f"sampler has {key}={value!r}; build the sampler with the "
                                 "checkpoint's settings")
        if not torch.equal(state["candidate_mask"].cpu(), self.candidate_mask):
            raise ValueError("checkpoint path sampler was built for a different search space "
                             f"(candidate mask {tuple(state['candidate_mask'].shape)} vs "
                             f"{tuple(self.candidate_mask.shape)})")
        self._p = state["p"].to(torch.float64).cpu().clone()
        self.norm_sum.copy_(state["norm_sum"])
        self.step_count.copy_(state["step_count"])
        last = state["last_mean_norms"]
        self.last_mean_norms = None if last is None else last.clone()
        self.last_mix_weight = float(state["last_mix_weight"])
        self.fallback_message = state["fallback_message"]
        self.epochs_finished = int(state["epochs_finished"])


@PATH_SAMPLERS.register("fair")
class FairPathSampler(UniformPathSampler):
    """FairNAS's strict fairness: each step trains ``paths_per_step`` = K paths (K: the most
    candidates of any layer) on the same batch, their gradients accumulated into one update; in
    each layer the K paths take a random permutation of its candidates, so every candidate trains
    exactly once per step (a layer with fewer candidates repeats its permutation cyclically).
    ``p`` stays uniform; gradient norms are recorded for the logs as under SPOS."""

    kind = "fair"

    def __init__(self, candidate_mask, device: torch.device | str = "cpu"):
        super().__init__(candidate_mask, device)
        self.paths_per_step = int(self.candidate_mask.sum(dim=1).max())

    def sample_epoch(self, num_steps: int, generator: torch.Generator) -> torch.Tensor:
        """``num_steps * paths_per_step`` paths: rows ``s*K .. s*K + K - 1`` are step ``s``'s."""
        if num_steps < 0:
            raise ValueError(f"num_steps must be >= 0, got {num_steps}")
        if not isinstance(generator, torch.Generator) or generator.device.type != "cpu":
            raise TypeError("sample_epoch needs a CPU torch.Generator (paths are drawn on the host "
                            "so sampling never waits for the device)")
        L, width = self.candidate_mask.shape
        K = self.paths_per_step
        keys = torch.rand(num_steps, L, width, generator=generator, dtype=torch.float64)
        keys[:, ~self.candidate_mask] = 2.0                  # invalid slots sort last
        order = keys.argsort(dim=2)                          # a random permutation per layer
        counts = self.candidate_mask.sum(dim=1)
        take = torch.arange(K)[None, :] % counts[:, None]    # [L, K]: cycle short layers
        paths = order.gather(2, take.expand(num_steps, L, K))
        return paths.permute(0, 2, 1).reshape(num_steps * K, L).contiguous()


@PATH_SAMPLERS.register("importance")
class ImportancePathSampler(UniformPathSampler):
    """PA: ``p`` follows each operation's gradient norm, mixed with uniform by ``δ``.

    ``aggregation="mean"`` (docs/method.md): the mean norm over the steps an operation trained (see the
    module docstring). ``aggregation="official"`` (the authors' NAS-Bench-201 code, ``shared``
    only): each step, for every operation type ``k`` on the path, ``x_k`` = the sum over cells of
    its per-tensor gradient norms divided by the number of layers holding ``k`` (dead edges
    counted), then ``g_k ← (g_k + x_k) / 2`` if ``x_k ≠ 0``, from ``g_k = 0`` at each epoch's
    start: a moving average dominated by the epoch's last steps. ``norm_sum`` then holds ``g``
    (every row the same) and ``step_count`` the steps each (layer, candidate) was drawn.
    ``offset``: see :func:`~pada_fast.sampling.schedule.mix_weight`."""

    kind = "importance"

    def __init__(self, candidate_mask, granularity: str = "shared",
                 schedule: str = "linear_increase", device: torch.device | str = "cpu",
                 aggregation: str = "mean", offset: str = "current"):
        if granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
        if aggregation == "official" and granularity != "shared":
            raise ValueError("aggregation='official' is the authors' shared distribution over operation "
                             "types; use granularity='shared' with it")
        self.granularity = granularity
        self.schedule = check_schedule(schedule)
        self.aggregation = aggregation
        self.offset = check_offset(offset)
        self._official_cache: dict = {}     # path -> its index tensors (official record)
        super().__init__(candidate_mask, device)

    @classmethod
    def from_options(cls, candidate_mask, device, granularity: str = "shared",
                     schedule: str = "linear_increase", aggregation: str = "mean", offset: str = "current",
                     **options):
        return cls(candidate_mask, granularity=granularity, schedule=schedule, device=device,
                   aggregation=aggregation, offset=offset)

    def _config(self) -> dict:
        return {"kind": self.kind, "granularity": self.granularity, "schedule": self.schedule,
                "aggregation": self.aggregation, "offset": self.offset}

    def _mix_weight(self, next_epoch: int, epochs: int) -> float:
        return mix_weight(self.schedule, next_epoch, epochs, self.offset)

    def record(self, grads: Sequence[torch.Tensor], slots: Sequence[int], arch=None) -> None:
        if self.aggregation == "mean":
            super().record(grads, slots)
            return
        if arch is None:
            raise ValueError("aggregation='official' needs record(grads, slots, arch=path): it divides "
                             "by the number of layers holding each operation")
        layers, chosen, holding, ops_of = self._official_indices(arch, slots)
        self.step_count[layers, chosen] += 1
        if not grads:
            return
        norms = torch.stack(torch._foreach_norm([g.float() for g in grads]))
        K = self.candidate_mask.shape[1]
        summed = torch.zeros(K, dtype=torch.float32, device=self.device).index_add_(0, ops_of, norms)
        x = summed / holding.clamp_min(1)
        g = self.norm_sum[0]
        updated = torch.where(x != 0, (g + x) / 2, g)
        self.norm_sum.copy_(updated.expand_as(self.norm_sum))

    def _official_indices(self, arch, slots: Sequence[int]):
        """Device index tensors of one path for the official record, built once per path: the
        layers, the chosen candidates, each operation's count of layers holding it, and the
        operation of every gradient tensor."""
        key = tuple(int(a) for a in arch)
        cached = self._official_cache.get(key)
        if cached is None or cached[3].numel() != len(slots):
            L, K = self.candidate_mask.shape
            chosen = torch.as_tensor(key, dtype=torch.long)
            holding = torch.bincount(chosen, minlength=K).to(torch.float32)
            ops_of = torch.as_tensor([slot % K for slot in slots], dtype=torch.long)
            cached = self._official_cache[key] = tuple(t.to(self.device) for t in (torch.arange(L), chosen, holding, ops_of))
        return cached

    def _epoch_norms(self) -> torch.Tensor:
        if self.aggregation == "mean":
            return super()._epoch_norms()
        return self.norm_sum.clone()

    def _next_probabilities(self, mean_norms: torch.Tensor, weight: float):
        mask = self._mask_device
        g = torch.where(mask, mean_norms.to(torch.float64), 0.0)
        if self.granularity == "shared":
            trained = (self.step_count > 0) & mask
            layers = trained.sum(dim=0)
            per_op = torch.where(layers > 0, (g * trained).sum(dim=0) / layers.clamp_min(1), 0.0)
            g = torch.where(mask, per_op.expand_as(g), 0.0)
        total = g.sum(dim=1, keepdim=True)
        row_ok = torch.isfinite(total) & (total > 0)
        uniform = uniform_probabilities(mask)
        mixed = weight * (g / torch.where(row_ok, total, 1.0)) + (1.0 - weight) * uniform
        return torch.where(row_ok, mixed, uniform), row_ok.flatten()
