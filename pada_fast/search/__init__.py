"""Architecture search with inherited supernet weights (docs/method.md, "Ranking" and "Search"): evolution and random
search under a MACs/parameter budget, MACs lookup tables counted with PyTorch's flop counter, and
export of the result as an architecture file that rebuilds the stand-alone network.

``pada-fast search`` (:mod:`.cli`, :func:`.run.run_search`) drives it from a training checkpoint;
the pieces work on their own too (any object with ``layer_candidates()`` and ``arch_to_str`` is a
searchable space, any callable a fitness)."""
from .budget import Budget, InfeasibleBudgetError
from .search_run import SearchResult
from .evolution import evolution_search
from pada_fast.architecture import load_arch, network_from_spec, save_arch

from .export import arch_spec
from .fitness import GroundTruthLookup, InheritedFitness
from .flops import CostTable, build_cost_table, count_macs, network_cost
from .random_search import random_search

__all__ = ["Budget", "CostTable", "GroundTruthLookup", "InfeasibleBudgetError", "InheritedFitness",
           "SearchResult", "arch_spec", "build_cost_table", "count_macs", "evolution_search",
           "load_arch", "network_cost", "network_from_spec", "random_search", "save_arch"]
