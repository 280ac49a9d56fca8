"""Random search (RandomNAS / the PA&DA paper's DARTS search): ``rounds`` rounds of
``per_round`` distinct random architectures within the budget, each evaluated with inherited
weights; the best over all rounds wins (paper: 60 x 100). Resumable after every round."""
from __future__ import annotations

from typing import Callable

from .budget import Budget
from .search_run import SearchResult, SearchRun
from .operators import random_arch

Arch = tuple[int, ...]


def random_search(space, fitness: Callable[[Arch], float], budget: Budget | None = None, *,
                  rounds: int = 60, per_round: int = 100, seed: int = 0, max_tries: int = 10000,
                  out_dir=None, resume: bool = False, progress: bool | None = None,
                  true_accuracy=None, export=None, top_k: int = 10, log=None) -> SearchResult:
    if rounds < 1 or per_round < 1:
        raise ValueError(f"rounds and per_round must be >= 1, got {rounds} and {per_round}")
    budget = budget or Budget()
    settings = {"rounds": rounds, "per_round": per_round, "max_tries": max_tries}
    run = SearchRun("random", settings, space, fitness, budget, seed, out_dir, resume, progress,
                    true_accuracy, export, top_k, total_steps=rounds, step_name="round", log=log)
    rng = run.rng
    for step in range(run.next_step, rounds):
        run.begin_step(step, per_round)
        pending: set = set()
        archs = []
        for _ in range(per_round):
            arch = budget.sample(lambda: random_arch(space, rng), max_tries,
                                 lambda a: run.is_new(a) and run.key(a) not in pending, "random architecture")
            pending.add(run.key(arch))
            archs.append(arch)
        for arch in archs:
            run.evaluate(arch, step, "random")
        run.end_step(step)
    return run.result()


__all__ = ["random_search"]
