"""Architecture genes: the check every search space's architecture tuples go through (plain Python,
no torch, so the architecture modules stay importable on their own)."""
from __future__ import annotations

from typing import Iterable, Sequence

Arch = tuple[int, ...]


def check_genes(arch: Iterable[int], num_genes: int, op_names: Sequence[str], space: str, layout: str) -> Arch:
    """``arch`` as a tuple of ints after checking it holds ``num_genes`` operation indices into
    ``op_names``; errors name the space and the gene ``layout`` (e.g. which edge each gene is)."""
    try:
        genes = tuple(int(g) for g in arch)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"a {space} architecture is a sequence of {num_genes} operation indices, "
                        f"got {arch!r}") from exc
    if len(genes) != num_genes:
        raise ValueError(f"a {space} architecture has {num_genes} genes ({layout}), got {len(genes)}: {genes}")
    if any(not 0 <= g < len(op_names) for g in genes):
        raise ValueError(f"operation indices must lie in [0, {len(op_names)}) for {list(op_names)}, got {genes}")
    return genes
