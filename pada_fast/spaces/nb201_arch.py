"""NAS-Bench-201 architectures as 6-gene tuples, without any network attached.

Gene ``e`` is the operation on edge ``EDGES[e]``; the edge order ``1<-0, 2<-0, 2<-1, 3<-0, 3<-1,
3<-2`` is also the order in which the benchmark's architecture string lists its entries, so gene
order and string order agree. Everything here is plain Python so that ground-truth readers and
search code can use it without building a model.
"""
from __future__ import annotations

import itertools
from functools import lru_cache
from typing import Iterable, Sequence

from .genes import Arch, check_genes


OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
NONE, SKIP, CONV_1X1, CONV_3X3, AVG_POOL = range(len(OPS))
PARAMETER_FREE_OPS = frozenset({NONE, SKIP, AVG_POOL})

NUM_NODES = 4                   # node 0 is the cell input, node 3 its output
EDGES: tuple[tuple[int, int], ...] = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))  # (node, input)
EDGE_NAMES: tuple[str, ...] = tuple(f"{j}<-{i}" for j, i in EDGES)
NUM_EDGES = len(EDGES)
NUM_ARCHS = len(OPS) ** NUM_EDGES   # 15,625

_OP_INDEX = {name: k for k, name in enumerate(OPS)}
_EDGE_INDEX = {edge: e for e, edge in enumerate(EDGES)}


def check_arch(arch: Iterable[int]) -> Arch:
    """``arch`` as a tuple of ints, after checking it has one valid operation index per edge."""
    return check_genes(arch, NUM_EDGES, OPS, "NAS-Bench-201", f"one per edge {', '.join(EDGE_NAMES)}")


def arch_to_str(arch: Sequence[int]) -> str:
    """The benchmark's string, e.g. ``|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|...|``."""
    genes = check_arch(arch)
    nodes = []
    for j in range(1, NUM_NODES):
        entries = [f"{OPS[genes[_EDGE_INDEX[(j, i)]]]}~{i}" for i in range(j)]
        nodes.append("|" + "|".join(entries) + "|")
    return "+".join(nodes)


def str_to_arch(text: str) -> Arch:
    """Inverse of :func:`arch_to_str`. Within a node the inputs may come in any order, but each
    input ``0..j-1`` of node ``j`` must appear exactly once."""
    nodes = text.strip().split("+")
    if len(nodes) != NUM_NODES - 1:
        raise ValueError(f"a NAS-Bench-201 string has {NUM_NODES - 1} '+'-separated nodes, got "
                         f"{len(nodes)} in {text!r}")
    genes = [-1] * NUM_EDGES
    for j, node in enumerate(nodes, start=1):
        if not (node.startswith("|") and node.endswith("|")):
            raise ValueError(f"node {j} of {text!r} must be written |op~input|...|, got {node!r}")
        seen = set()
        for entry in node[1:-1].split("|"):
            op, sep, source = entry.partition("~")
            if not sep or op not in _OP_INDEX or not source.isdigit():
                raise ValueError(f"entry {entry!r} of {text!r} is not 'op~input' with op one of "
                                 f"{list(OPS)}")
            i = int(source)
            if not 0 <= i < j or i in seen:
                raise ValueError(f"node {j} of {text!r} must list each input 0..{j - 1} once, "
                                 f"got {node!r}")
            seen.add(i)
            genes[_EDGE_INDEX[(j, i)]] = _OP_INDEX[op]
        if len(seen) != j:
            raise ValueError(f"node {j} of {text!r} must list inputs 0..{j - 1}, got {node!r}")
    return tuple(genes)


def all_archs() -> list[Arch]:
    """All 15,625 architectures in lexicographic gene order (not the benchmark's index order:
    read that from the benchmark file's architecture strings)."""
    return list(itertools.product(range(len(OPS)), repeat=NUM_EDGES))


def live_edges(arch: Sequence[int]) -> tuple[int, ...]:
    """Edges whose operation can influence the cell output, in edge order.

    An edge is dead when its operation is ``none``, when its input node is identically zero
    (every edge into that node is dead) or when its output node cannot reach node 3. Dead edges
    are neither run nor trained. Treating an operation applied to a zero node as zero is exact for
    ``nor_conv`` under batch-statistics BatchNorm without affine (the authors' supernet) and for
    pooling, and is the same convention NAS-Bench-201 uses to identify isomorphic cells.
    """
    return _live_edges(check_arch(arch))


@lru_cache(maxsize=None)
def _live_edges(genes: Arch) -> tuple[int, ...]:
    nonzero = [True] + [False] * (NUM_NODES - 1)
    for e, (j, i) in enumerate(EDGES):      # edges are sorted by target node
        if genes[e] != NONE and nonzero[i]:
            nonzero[j] = True
    reaches_output = [False] * (NUM_NODES - 1) + [True]
    for e in reversed(range(NUM_EDGES)):    # ... and so, reversed, by decreasing target
        j, i = EDGES[e]
        if genes[e] != NONE and reaches_output[j]:
            reaches_output[i] = True
    return tuple(e for e, (j, i) in enumerate(EDGES)
                 if genes[e] != NONE and nonzero[i] and reaches_output[j])


def unique_arch_key(arch: Sequence[int]) -> str:
    """NAS-Bench-201's own isomorphism string (``Structure.to_unique_str(consider_zero=True)``),
    reproduced exactly: it equals the ``UniqueString`` column of the NATS-Bench export and has
    6,466 distinct values over the 15,625 architectures.

    Each node becomes the sorted '+'-join of its incoming terms: ``none`` (or an op on a node
    whose string is exactly ``#``) gives ``#``, ``skip_connect`` passes the input's string through,
    any other op gives ``(input)@op``. So edges cut off from the output collapse to ``#``, but
    the merge is approximate: a node whose inputs are all ``#`` becomes ``#+#``, not ``#``, and
    skip-connected sums are not re-flattened. :func:`functional_arch_key` merges more.
    """
    genes = check_arch(arch)
    nodes = {0: "0"}
    for j in range(1, NUM_NODES):
        terms = []
        for i in range(j):
            op = genes[_EDGE_INDEX[(j, i)]]
            if op == NONE or nodes[i] == "#":
                terms.append("#")
            elif op == SKIP:
                terms.append(nodes[i])
            else:
                terms.append(f"({nodes[i]})@{OPS[op]}")
        nodes[j] = "+".join(sorted(terms))
    return nodes[NUM_NODES - 1]


def functional_arch_key(arch: Sequence[int]) -> str:
    """A stricter canonical form: identical for any two architectures that compute the same
    function under the conventions of :func:`live_edges` (a node is a multiset of terms, zero
    terms vanish, an op on a zero node is zero, skip connections splice the input's terms into
    the sum). Architectures whose output is identically zero all map to ``"#"``. Merges strictly
    more than :func:`unique_arch_key`; use it to deduplicate, and :func:`unique_arch_key` to join
    with the benchmark."""
    genes = check_arch(arch)
    nodes: dict[int, tuple[str, ...]] = {0: ("0",)}
    for j in range(1, NUM_NODES):
        terms: list[str] = []
        for i in range(j):
            op = genes[_EDGE_INDEX[(j, i)]]
            if op == NONE or not nodes[i]:
                continue
            if op == SKIP:
                terms.extend(nodes[i])
            else:
                terms.append(f"({'+'.join(nodes[i])})@{OPS[op]}")
        nodes[j] = tuple(sorted(terms))
    return "+".join(nodes[NUM_NODES - 1]) or "#"
