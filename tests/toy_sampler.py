"""A test-only path sampler, to show what adding one takes: this file (a PathSampler subclass),
its registration and a method that uses it, and a contract subclass
(tests/test_toy_components.py). "Greedy" sampling: with probability ``1 - epsilon`` each layer
trains the candidate with the largest mean gradient norm so far, otherwise a uniform one; it
reuses the uniform sampler's gradient-norm statistics and checkpointing."""
from __future__ import annotations

import torch

from pada_fast.registry import METHODS, PATH_SAMPLERS, MethodEntry
from pada_fast.sampling import UniformPathSampler
from pada_fast.sampling.path import uniform_probabilities


class GreedyPathSampler(UniformPathSampler):
    kind = "greedy"
    epsilon = 0.5

    @classmethod
    def from_options(cls, candidate_mask, device, **options):
        return cls(candidate_mask, device=device)

    def _next_probabilities(self, mean_norms: torch.Tensor, weight: float):
        mask = self._mask_device
        norms = torch.where(mask, mean_norms.to(torch.float64), -1.0)
        best = torch.zeros_like(norms).scatter_(1, norms.argmax(dim=1, keepdim=True), 1.0)
        uniform = uniform_probabilities(mask)
        p = (1 - self.epsilon) * best + self.epsilon * uniform
        return p, torch.ones(self.num_layers, dtype=torch.bool, device=self.device)


def register() -> None:
    PATH_SAMPLERS.register("greedy", GreedyPathSampler)
    METHODS.register("greedy", MethodEntry("greedy", "uniform"))


def unregister() -> None:
    METHODS.unregister("greedy")
    PATH_SAMPLERS.unregister("greedy")
