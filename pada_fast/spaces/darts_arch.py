"""DARTS architectures as 28-gene tuples and as DARTS genotypes, without any network attached.

A cell has inputs 0 and 1 (the two previous cells' outputs) and intermediate nodes 2..5; node
``n`` may read every earlier node, so the cell has 2 + 3 + 4 + 5 = 14 edges, listed node by node
and, within a node, by input (DARTS' order). An architecture picks one of the 8 operations per
edge for the normal cell (genes 0..13) and for the reduction cell (genes 14..27); ``none`` leaves
the edge out. All normal cells share the normal genes and all reduction cells the reduce genes, as
in DARTS and RandomNAS. String form: ``normal=op,op,...|reduce=op,...`` (14 names each).

Genotypes use DARTS' own format, ``Genotype(normal=[(op, input), ...], normal_concat=range(2, 6),
reduce=[...], reduce_concat=range(2, 6))``: two ``(op, input)`` pairs per intermediate node, never
``none``. An architecture is *genotype-valid* when each intermediate node has exactly two incoming
edges whose operation is not ``none``; those are exactly the architectures with a genotype, and the
search draws only them (see :func:`random_genotype_arch`).
"""
from __future__ import annotations

import ast
from collections import namedtuple
from typing import Iterable, Sequence

from .genes import Arch, check_genes

import numpy as np

Genotype = namedtuple("Genotype", "normal normal_concat reduce reduce_concat")

OPS: tuple[str, ...] = ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3",
                        "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")
NONE = 0
PARAMETER_FREE_OPS = frozenset({0, 1, 2, 3})   # skip_connect has weights only when it reduces
STEPS = 4
EDGES: tuple[tuple[int, int], ...] = tuple((node, i) for node in range(2, 2 + STEPS)
                                           for i in range(node))   # (node, input)
NUM_EDGES = len(EDGES)          # 14 per cell type
NUM_GENES = 2 * NUM_EDGES       # 28
CELL_TYPES = ("normal", "reduce")
_OP_INDEX = {name: k for k, name in enumerate(OPS)}
_EDGE_INDEX = {edge: e for e, edge in enumerate(EDGES)}


def check_arch(arch: Iterable[int]) -> Arch:
    return check_genes(arch, NUM_GENES, OPS, "DARTS", "14 normal-cell edges, then 14 reduction-cell edges")


def cell_genes(arch: Sequence[int], cell_type: str) -> Arch:
    genes = check_arch(arch)
    return genes[:NUM_EDGES] if cell_type == "normal" else genes[NUM_EDGES:]


def arch_to_str(arch: Sequence[int]) -> str:
    genes = check_arch(arch)
    return "|".join(f"{t}=" + ",".join(OPS[g] for g in cell_genes(genes, t)) for t in CELL_TYPES)


def str_to_arch(text: str) -> Arch:
    """Inverse of :func:`arch_to_str`; a DARTS genotype string (``Genotype(...)``) is accepted
    too and becomes its genotype-valid architecture."""
    text = text.strip()
    if text.startswith("Genotype("):
        return genotype_to_arch(genotype_from_str(text))
    parts = dict(p.split("=", 1) for p in text.split("|") if "=" in p)
    if sorted(parts) != sorted(CELL_TYPES) or text.count("|") != 1:
        raise ValueError(f"a DARTS architecture string is 'normal=op,...|reduce=op,...' with "
                         f"{NUM_EDGES} ops each, got {text!r}")
    genes = []
    for t in CELL_TYPES:
        names = [n.strip() for n in parts[t].split(",")]
        if len(names) != NUM_EDGES:
            raise ValueError(f"the {t} cell needs {NUM_EDGES} operations, got {len(names)} in {text!r}")
        for n in names:
            if n not in _OP_INDEX:
                raise ValueError(f"unknown DARTS operation {n!r}; choose from {list(OPS)}")
            genes.append(_OP_INDEX[n])
    return tuple(genes)


def live_edges(cell: Sequence[int]) -> tuple[int, ...]:
    """Edges of one cell (14 genes) that run: not ``none`` and reading a node that is not
    identically zero (inputs 0 and 1 never are; a node is zero when no live edge feeds it). Every
    live edge reaches the output, which concatenates all intermediate nodes."""
    nonzero = [True, True] + [False] * STEPS
    live = []
    for e, (node, i) in enumerate(EDGES):
        if cell[e] != NONE and nonzero[i]:
            nonzero[node] = True
            live.append(e)
    return tuple(live)


def live_genes(arch: Sequence[int]) -> tuple[int, ...]:
    """Indices (0..27) of the genes whose edge runs."""
    genes = check_arch(arch)
    return (live_edges(genes[:NUM_EDGES])
            + tuple(NUM_EDGES + e for e in live_edges(genes[NUM_EDGES:])))


# -- genotypes ------------------------------------------------------------------------------------
def _node_edges(node: int) -> list[int]:
    return [_EDGE_INDEX[(node, i)] for i in range(node)]


def is_genotype_valid(arch: Sequence[int]) -> bool:
    genes = check_arch(arch)
    return all(sum(cell_genes(genes, t)[e] != NONE for e in _node_edges(node)) == 2
               for t in CELL_TYPES for node in range(2, 2 + STEPS))


def derive_genotype(weights) -> Genotype:
    """DARTS' derivation from a per-gene, per-operation score matrix ``weights`` [28, 8] (e.g.
    PA's ``p``, or search statistics): per node keep the two incoming edges whose best non-``none``
    score is highest (ties: lower input first) and give each its best non-``none`` operation;
    pairs are listed strongest first, as DARTS does."""
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (NUM_GENES, len(OPS)):
        raise ValueError(f"weights must have shape ({NUM_GENES}, {len(OPS)}), got {w.shape}")
    cells = []
    for c in range(2):
        cw = w[c * NUM_EDGES:(c + 1) * NUM_EDGES]
        gene = []
        for node in range(2, 2 + STEPS):
            edges = _node_edges(node)
            best = {e: max(range(1, len(OPS)), key=lambda k, e=e: (cw[e, k], -k)) for e in edges}
            order = sorted(edges, key=lambda e: -cw[e, best[e]])[:2]
            gene += [(OPS[best[e]], EDGES[e][1]) for e in order]
        cells.append(gene)
    return _genotype(*cells)


def genotype_from_arch(arch: Sequence[int], weights=None) -> Genotype:
    """The genotype of a sampled architecture. Per node: the incoming edges whose sampled operation
    is not ``none``, ranked by ``weights[gene, op]`` (or all equal without ``weights``; ties: lower
    input first), the best two kept with their sampled operations. A node with fewer than two such
    edges is completed from its remaining inputs: with ``weights``, the strongest remaining edges
    with their best non-``none`` operation; without, the lowest remaining inputs with
    ``skip_connect``. Exact (and weights irrelevant) for genotype-valid architectures, for which
    ``genotype_to_arch(genotype_from_arch(a)) == a``."""
    genes = check_arch(arch)
    w = None if weights is None else np.asarray(weights, dtype=np.float64)
    if w is not None and w.shape != (NUM_GENES, len(OPS)):
        raise ValueError(f"weights must have shape ({NUM_GENES}, {len(OPS)}), got {w.shape}")
    cells = []
    for c, t in enumerate(CELL_TYPES):
        cell = cell_genes(genes, t)
        gene = []
        for node in range(2, 2 + STEPS):
            edges = _node_edges(node)

            def score(e, op):
                return 0.0 if w is None else float(w[c * NUM_EDGES + e, op])

            chosen = [e for e in edges if cell[e] != NONE]
            chosen = sorted(chosen, key=lambda e: -score(e, cell[e]))[:2]
            pairs = [(OPS[cell[e]], EDGES[e][1]) for e in chosen]
            rest = [e for e in edges if e not in chosen]
            if len(pairs) < 2:
                if w is None:
                    pairs += [("skip_connect", EDGES[e][1]) for e in rest[:2 - len(pairs)]]
                else:
                    best = {e: max(range(1, len(OPS)), key=lambda k, e=e: (score(e, k), -k))
                            for e in rest}
                    rest = sorted(rest, key=lambda e: -score(e, best[e]))
                    pairs += [(OPS[best[e]], EDGES[e][1]) for e in rest[:2 - len(pairs)]]
            gene += pairs
        cells.append(gene)
    return _genotype(*cells)


def genotype_to_arch(genotype: Genotype) -> Arch:
    """The genotype-valid architecture of ``genotype``: its 8 + 8 edges carry their operations,
    every other edge ``none``."""
    genes = [NONE] * NUM_GENES
    for c, cell in enumerate((genotype.normal, genotype.reduce)):
        cell = list(cell)
        if len(cell) != 2 * STEPS:
            raise ValueError(f"a DARTS genotype cell lists {2 * STEPS} (op, input) pairs, got "
                             f"{len(cell)}")
        for k, (op, i) in enumerate(cell):
            node = 2 + k // 2
            if op not in _OP_INDEX or op == "none":
                raise ValueError(f"genotype operation {op!r} is not one of {list(OPS[1:])}")
            if not 0 <= int(i) < node:
                raise ValueError(f"node {node} cannot read input {i} (inputs 0..{node - 1})")
            gene = c * NUM_EDGES + _EDGE_INDEX[(node, int(i))]
            if genes[gene] != NONE:
                raise ValueError(f"node {node} of the genotype reads input {i} twice")
            genes[gene] = _OP_INDEX[op]
    return tuple(genes)


def _genotype(normal, reduce) -> Genotype:
    return Genotype(normal=list(normal), normal_concat=range(2, 2 + STEPS),
                    reduce=list(reduce), reduce_concat=range(2, 2 + STEPS))


def genotype_to_str(genotype: Genotype) -> str:
    """DARTS' ``genotypes.py`` spelling, e.g. ``Genotype(normal=[('sep_conv_3x3', 0), ...],
    normal_concat=range(2, 6), ...)``."""
    return repr(Genotype(*genotype))


def genotype_from_str(text: str) -> Genotype:
    """Parse ``Genotype(normal=[...], normal_concat=range(2, 6), ...)`` (DARTS' ``genotypes.py``
    format; concat may also be a list) without evaluating code."""
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except SyntaxError as exc:
        raise ValueError(f"not a DARTS genotype: {text!r} ({exc})") from None
    if not (isinstance(tree, ast.Call) and getattr(tree.func, "id", None) == "Genotype"):
        raise ValueError(f"a genotype string starts with Genotype(, got {text!r}")
    values = {}
    for kw in tree.keywords:
        node = kw.value
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "range":
            values[kw.arg] = range(*[ast.literal_eval(a) for a in node.args])
        else:
            values[kw.arg] = ast.literal_eval(node)
    for arg, field in zip(tree.args, Genotype._fields):
        values[field] = ast.literal_eval(arg)
    missing = [f for f in Genotype._fields if f not in values]
    if missing:
        raise ValueError(f"genotype {text!r} lacks {missing}")
    concat = {f: (v if isinstance(v, range) else list(v)) for f, v in values.items()
              if f.endswith("concat")}
    return Genotype(normal=[tuple(p) for p in values["normal"]], reduce=[tuple(p) for p in values["reduce"]],
                    **concat)


# -- genotype-valid sampling and variation (what the search uses) ----------------------------------
def random_genotype_arch(rng: np.random.Generator) -> Arch:
    """Per cell type and node: two distinct inputs, each with a uniform non-``none`` operation
    (RandomNAS' sampler)."""
    genes = [NONE] * NUM_GENES
    for c in range(2):
        for node in range(2, 2 + STEPS):
            for i in rng.choice(node, size=2, replace=False):
                genes[c * NUM_EDGES + _EDGE_INDEX[(node, int(i))]] = int(rng.integers(1, len(OPS)))
    return tuple(genes)


def _node_slots(genes: Sequence[int], c: int, node: int) -> list[int]:
    return [c * NUM_EDGES + e for e in _node_edges(node) if genes[c * NUM_EDGES + e] != NONE]


def mutate_genotype_arch(arch: Sequence[int], rng: np.random.Generator, prob: float) -> Arch:
    """Each of the 16 (op, input) pairs changes with probability ``prob``: half the time its
    operation (to another non-``none`` one), otherwise its input (to one the node does not read)."""
    genes = list(check_arch(arch))
    for c in range(2):
        for node in range(2, 2 + STEPS):
            for gene in _node_slots(genes, c, node):
                if rng.random() >= prob:
                    continue
                free = [c * NUM_EDGES + e for e in _node_edges(node)
                        if genes[c * NUM_EDGES + e] == NONE]
                if rng.random() < 0.5 or not free:
                    genes[gene] = int(rng.choice([k for k in range(1, len(OPS)) if k != genes[gene]]))
                else:
                    target = int(rng.choice(free))
                    genes[target], genes[gene] = genes[gene], NONE
    return tuple(genes)


def crossover_genotype_arch(a: Sequence[int], b: Sequence[int], rng: np.random.Generator) -> Arch:
    """Each node (of each cell type) comes whole from one parent, chosen uniformly."""
    a, b = check_arch(a), check_arch(b)
    genes = list(a)
    for c in range(2):
        for node in range(2, 2 + STEPS):
            if rng.random() < 0.5:
                for e in _node_edges(node):
                    genes[c * NUM_EDGES + e] = b[c * NUM_EDGES + e]
    return tuple(genes)


__all__ = ["CELL_TYPES", "EDGES", "Genotype", "NUM_EDGES", "NUM_GENES", "OPS", "STEPS", "arch_to_str",
           "check_arch", "crossover_genotype_arch", "derive_genotype", "genotype_from_arch",
           "genotype_from_str", "genotype_to_arch", "genotype_to_str", "is_genotype_valid",
           "live_edges", "live_genes", "mutate_genotype_arch", "random_genotype_arch", "str_to_arch"]
