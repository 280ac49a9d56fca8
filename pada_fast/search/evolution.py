"""Evolutionary search (SPOS / ProxylessNAS style) under a cost budget.

Generation 0 is ``population`` distinct random architectures within the budget. Every later
generation makes ``mutation_children`` children by mutating a parent and ``crossover_children``
by crossing two parents, where the parents are the ``parents`` fittest architectures evaluated so
far; a child that breaks the budget or was already evaluated is drawn again (up to
``max(100, max_tries // 100)`` times; should that find nothing new, a random new architecture
within the budget stands in, recorded with origin ``random``). ``generations`` counts
generation 0, so the defaults (50, 20, 25 + 25) evaluate 20 x 50 = 1,000 architectures. Fitness
is maximised.
"""
from __future__ import annotations

from typing import Callable

from .budget import Budget, InfeasibleBudgetError
from .search_run import SearchResult, SearchRun
from .operators import crossover, mutate, random_arch

Arch = tuple[int, ...]


def _check_settings(population, generations, mutation_children, crossover_children, parents, mutation_prob):
    for name, value in (("population", population), ("generations", generations),
                        ("parents", parents)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if mutation_children < 0 or crossover_children < 0 or mutation_children + crossover_children < 1:
        raise ValueError("need at least one child per generation (mutation_children + "
                         "crossover_children >= 1)")
    if not 0 < mutation_prob <= 1:
        raise ValueError(f"mutation_prob must be in (0, 1], got {mutation_prob}")


def _generation(run, space, budget: Budget, gen: int, s: dict) -> list[tuple[Arch, str]]:
    """Generation ``gen``'s new architectures and where each came from: random ones first, then
    mutations and crossovers of the best ``parents`` so far (a random one where breeding keeps
    producing known children)."""
    rng = run.rng
    # A converged parent pool can keep producing known children; give up on breeding early.
    breed_tries = max(100, s["max_tries"] // 100)
    pending: set = set()

    def fresh(arch):
        return run.is_new(arch) and run.key(arch) not in pending

    def draw_random(what="architecture"):
        return budget.sample(lambda: random_arch(space, rng), s["max_tries"], fresh, what)

    children: list[tuple[Arch, str]] = []
    if gen == 0:
        run.begin_step(gen, s["population"])
        for _ in range(s["population"]):
            arch = draw_random("random architecture")
            pending.add(run.key(arch))
            children.append((arch, "random"))
        return children
    run.begin_step(gen, s["mutation_children"] + s["crossover_children"])
    pool = [tuple(r["genes"]) for r in run.top(s["parents"])]
    for origin in ["mutation"] * s["mutation_children"] + ["crossover"] * s["crossover_children"]:
        if origin == "mutation":
            def draw():
                return mutate(space, pool[int(rng.integers(len(pool)))], rng, s["mutation_prob"])
        else:
            def draw():
                i, j = rng.choice(len(pool), size=2, replace=len(pool) < 2)
                return crossover(space, pool[int(i)], pool[int(j)], rng)
        try:
            arch = budget.sample(draw, breed_tries, fresh, f"{origin} child")
        except InfeasibleBudgetError:
            arch, origin = draw_random("replacement child"), "random"
        pending.add(run.key(arch))
        children.append((arch, origin))
    return children


def evolution_search(space, fitness: Callable[[Arch], float], budget: Budget | None = None, *,
                     population: int = 50, generations: int = 20, mutation_children: int = 25,
                     crossover_children: int = 25, parents: int = 10, mutation_prob: float = 0.1,
                     seed: int = 0, max_tries: int = 10000, out_dir=None, resume: bool = False,
                     progress: bool | None = None, true_accuracy=None, export=None,
                     top_k: int = 10, log=None) -> SearchResult:
    """Run (or, with ``resume``, continue) the evolution; see the module docstring. ``space``
    needs ``layer_candidates()`` and ``arch_to_str``; ``out_dir`` (optional) receives the state
    file and outputs described in :mod:`.core`."""
    _check_settings(population, generations, mutation_children, crossover_children, parents, mutation_prob)
    budget = budget or Budget()
    settings = {"population": population, "generations": generations,
                "mutation_children": mutation_children, "crossover_children": crossover_children,
                "parents": parents, "mutation_prob": mutation_prob, "max_tries": max_tries}
    run = SearchRun("evolution", settings, space, fitness, budget, seed, out_dir, resume, progress,
                    true_accuracy, export, top_k, total_steps=generations, step_name="generation",
                    log=log)
    for gen in range(run.next_step, generations):
        for arch, origin in _generation(run, space, budget, gen, settings):
            run.evaluate(arch, gen, origin)
        run.end_step(gen)
    return run.result()


__all__ = ["evolution_search"]
