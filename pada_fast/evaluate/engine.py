"""The ranking engine: inherited accuracy of many architectures on one set of fixed batches.

Ranking a whole search space is most of the cost of a NAS-Bench-201 study, and most of that work
repeats. The engine does each piece once:

- architectures the supernet runs identically (``supernet.path_key``: for NAS-Bench-201 the genes
  with dead edges set to ``none``, 9,445 paths for the 15,625 architectures) are evaluated once;
- work every architecture shares (``supernet.shared_prefix``: the stem's output, and the first
  cell's operations on its input) is computed once per batch and kept, within a memory budget;
- correct predictions are counted on the device and read once per architecture.

Predictions equal :func:`~pada_fast.evaluate.inherited.inherited_accuracy` on the same batches
exactly in float32 (the same operations on the same inputs). ``precision="bf16"`` runs under bf16
autocast: faster on tensor-core GPUs, and approximate (the tolerance is stated in
``docs/results.md``). The batch size is part of the protocol (batch-statistics BatchNorm), never
changed here.
"""
from __future__ import annotations

import contextlib
from typing import Sequence

import torch

from pada_fast.spaces import recalibrate_bn

PRECISIONS = ("fp32", "bf16")
# Memory for the shared activations (the stem's output alone, or with the first cell's ops): on a
# CPU this much, on a GPU a quarter of its memory.
DEFAULT_PREFIX_BUDGET_BYTES = 4 << 30


def default_prefix_budget(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory // 4
    return DEFAULT_PREFIX_BUDGET_BYTES


class RankingEngine:
    """``engine.correct(arch)`` -> images of the fixed batches that ``arch`` classifies correctly.

    ``calib_batches``: running-statistics BN is recalibrated on them before each architecture
    (nothing is then shared but the deduplication). ``prefix_budget_bytes`` bounds the memory of
    the shared activations (0 turns sharing off; default :func:`default_prefix_budget`).
    """

    def __init__(self, supernet, eval_batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
                 calib_batches=None, precision: str = "fp32",
                 prefix_budget_bytes: int | None = None):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.supernet = supernet
        self.batches = list(eval_batches)
        if not self.batches:
            raise ValueError("the ranking engine needs at least one evaluation batch")
        self.calib = list(calib_batches) if calib_batches else None
        self.precision = precision
        self.total = sum(int(y.shape[0]) for _, y in self.batches)
        self.device = self.batches[0][0].device
        self._done: dict[tuple, int] = {}
        self.evaluations = 0
        self.sharing = "none"
        self._prefixes = None
        if prefix_budget_bytes is None:
            prefix_budget_bytes = default_prefix_budget(self.device)
        if self.calib is None and hasattr(supernet, "shared_prefix") and prefix_budget_bytes > 0 \
                and getattr(supernet, "bn_mode", "batch") == "batch":
            self._prefixes = self._build_prefixes(prefix_budget_bytes)

    # -- public --------------------------------------------------------------------------------
    def key(self, arch: Sequence[int]) -> tuple:
        return self.supernet.path_key(arch)

    def correct(self, arch: Sequence[int]) -> int:
        """Correctly classified images (of :attr:`total`); each distinct path is evaluated once."""
        key = self.key(arch)
        hit = self._done.get(key)
        if hit is None:
            hit = self._done[key] = self._evaluate(key)
        return hit

    def accuracy(self, arch: Sequence[int]) -> float:
        return 100.0 * self.correct(arch) / self.total

    def remember(self, key: tuple, correct: int) -> None:
        """A result computed earlier (a resumed ranking): ``key`` is not evaluated again."""
        self._done[tuple(key)] = int(correct)

    # -- internals -----------------------------------------------------------------------------
    def _autocast(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    @torch.inference_mode()
    def _build_prefixes(self, budget: int):
        model = self.supernet
        model.eval()
        first = self.batches[0][0]
        with self._autocast():
            probe = model.shared_prefix(first[:1], with_ops=True)
        per_image = {level: sum(t.element_size() * t[0].numel() for t in _tensors(probe, level))
                     for level in ("stem", "ops")}
        level = next((lvl for lvl in ("ops", "stem") if per_image[lvl] * self.total <= budget), None)
        if level is None:
            return None
        self.sharing = "stem and first-cell operations" if level == "ops" else "stem"
        prefixes = []
        with self._autocast():
            for x, _ in self.batches:
                prefixes.append(model.shared_prefix(x, with_ops=level == "ops"))
        return prefixes

    def _evaluate(self, arch: tuple) -> int:
        model = self.supernet
        if self.calib is not None:
            recalibrate_bn(model, arch, self.calib)
        model.eval()
        self.evaluations += 1
        with torch.inference_mode(), self._autocast():
            correct = torch.zeros((), dtype=torch.long, device=self.device)
            for b, (x, y) in enumerate(self.batches):
                if self._prefixes is not None:
                    logits = model.forward_prefixed(self._prefixes[b], arch)
                else:
                    logits = model(x, arch)
                correct += (logits.argmax(1) == y).sum()
        return int(correct.item())


def _tensors(prefix: dict, level: str) -> list[torch.Tensor]:
    out = [prefix["stem"]]
    if level == "ops" and prefix.get("first_cell_inputs"):
        out += list(prefix["first_cell_inputs"].values())
    return out


__all__ = ["DEFAULT_PREFIX_BUDGET_BYTES", "PRECISIONS", "RankingEngine", "default_prefix_budget"]
