"""The NAS-Bench-201 supernet (docs/method.md) and stand-alone networks of single architectures.

Macro skeleton, as in NAS-Bench-201 and the PA&DA authors' supernet: stem Conv3x3+BN, N cells at
C channels, a ResNet basic block (stride 2) to 2C, N cells, a block to 4C, N cells, then
BN-ReLU-GAP-Linear. Every cell holds all five candidate operations on each of its six edges and
all cells follow the same 6-gene architecture, so a searchable "layer" of the
:class:`~pada_fast.spaces.base.SuperNet` interface is an edge position (6 layers x 5 candidates).

Only edges that can influence the output are run (see :func:`~.nb201_arch.live_edges`); the
others would contribute exact zeros in the authors' supernet, and skipping them both saves time
and keeps their operations out of the path-importance statistics for that step.
"""
from __future__ import annotations

import re

from typing import Callable, Sequence

import torch
from torch import nn

from pada_fast.registry import SPACES, SpaceEntry

from .base import Arch, SuperNet
from .batchnorm import recalibrate_bn
from .nb201_arch import (EDGE_NAMES, EDGES, NUM_EDGES, NUM_NODES, OPS, all_archs, arch_to_str,
                         check_arch, functional_arch_key, live_edges, str_to_arch, unique_arch_key)

BN_MODES = ("batch", "running")

# Per node 1..3, the live (edge, input node, op) triples that feed it.
CellPlan = tuple[tuple[tuple[int, int, int], ...], ...]


def make_batchnorm(channels: int, bn_mode: str) -> nn.BatchNorm2d:
    """``batch``: no affine, batch statistics also at evaluation (the authors' supernet, where
    running statistics would mix many architectures). ``running``: the usual affine BN with
    running statistics; recalibrate them per architecture with :func:`recalibrate_bn`."""
    if bn_mode == "batch":
        return nn.BatchNorm2d(channels, affine=False, track_running_stats=False)
    if bn_mode == "running":
        return nn.BatchNorm2d(channels, affine=True, track_running_stats=True)
    if bn_mode == "affine_batch":       # reduction blocks with space.reduction_bn=affine
        return nn.BatchNorm2d(channels, affine=True, track_running_stats=False)
    raise ValueError(f"bn_mode must be one of {BN_MODES}, got {bn_mode!r}")


class ReLUConvBN(nn.Sequential):
    """NAS-Bench-201's ``nor_conv``. The conv has a bias exactly when BN has no affine part
    (``bias=not affine`` in the benchmark's code), so the two BN modes match the originals."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int, padding: int,
                 bn_mode: str):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel_size, stride=stride, padding=padding,
                      bias=bn_mode == "batch"),
            make_batchnorm(c_out, bn_mode),
        )


class Zero(nn.Module):
    """The ``none`` operation. The supernet never calls it (a ``none`` edge is skipped); it is
    here so that every edge holds all five candidates at their benchmark indices."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)


def make_op(op: int, channels: int, bn_mode: str) -> nn.Module:
    name = OPS[op]
    if name == "none":
        return Zero()
    if name == "skip_connect":
        return nn.Identity()
    if name == "nor_conv_1x1":
        return ReLUConvBN(channels, channels, 1, 1, 0, bn_mode)
    if name == "nor_conv_3x3":
        return ReLUConvBN(channels, channels, 3, 1, 1, bn_mode)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    raise AssertionError(name)


class ResNetBasicBlock(nn.Module):
    """NAS-Bench-201's reduction block: ReLU-Conv-BN (stride 2), ReLU-Conv-BN, plus a shortcut
    AvgPool2d(2) + Conv1x1. The pool uses ``ceil_mode`` so odd image sizes keep both branches
    the same size; for even sizes it is identical to the benchmark's."""

    def __init__(self, c_in: int, c_out: int, bn_mode: str):
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, 2, 1, bn_mode)
        self.conv_b = ReLUConvBN(c_out, c_out, 3, 1, 1, bn_mode)
        self.downsample = nn.Sequential(
            nn.AvgPool2d(2, stride=2, ceil_mode=True),
            nn.Conv2d(c_in, c_out, 1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(x) + self.conv_b(self.conv_a(x))


def cell_plan(arch: Arch) -> CellPlan:
    live = set(live_edges(arch))
    return tuple(
        tuple((e, i, arch[e]) for e, (j, i) in enumerate(EDGES) if node == j and e in live)
        for node in range(1, NUM_NODES))


def run_cell(x: torch.Tensor, plan: CellPlan, op_of: Callable[[int, int], nn.Module]) -> torch.Tensor:
    """Node j = sum of its live incoming edges; a node without any is never read, except the
    output node, which is then zero."""
    nodes: list[torch.Tensor | None] = [x] + [None] * (NUM_NODES - 1)
    for j, inputs in enumerate(plan, start=1):
        total = None
        for e, i, op in inputs:
            y = op_of(e, op)(nodes[i])
            total = y if total is None else total + y
        nodes[j] = total
    out = nodes[NUM_NODES - 1]
    return torch.zeros_like(x) if out is None else out


def _cached_or(cache: dict[tuple[int, int], torch.Tensor], e: int, op: int, cell: "SearchCell"):
    hit = cache.get((e, op))
    return cell.edges[e][op] if hit is None else (lambda _x: hit)


class SearchCell(nn.Module):
    """All five candidates on each of the six edges: ``edges[e][op]``."""

    def __init__(self, channels: int, bn_mode: str):
        super().__init__()
        self.edges = nn.ModuleList(
            nn.ModuleList(make_op(op, channels, bn_mode) for op in range(len(OPS)))
            for _ in range(NUM_EDGES))

    def forward(self, x: torch.Tensor, plan: CellPlan) -> torch.Tensor:
        return run_cell(x, plan, lambda e, op: self.edges[e][op])


class FixedCell(nn.Module):
    """One architecture's cell: only the operations of live edges exist, keyed ``"j<-i"``."""

    def __init__(self, channels: int, arch: Arch, bn_mode: str):
        super().__init__()
        self.plan = cell_plan(arch)
        self.edges = nn.ModuleDict({EDGE_NAMES[e]: make_op(op, channels, bn_mode)
                                    for inputs in self.plan for e, _, op in inputs})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return run_cell(x, self.plan, lambda e, op: self.edges[EDGE_NAMES[e]])


def _check_sizes(C: int, N: int, num_classes: int, in_channels: int, bn_mode: str) -> None:
    for name, value in (("C", C), ("N", N), ("num_classes", num_classes), ("in_channels", in_channels)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if bn_mode not in BN_MODES:
        raise ValueError(f"bn_mode must be one of {BN_MODES}, got {bn_mode!r}")


class _Skeleton(nn.Module):
    """Stem, the 3N cells with two reduction blocks between them, and the classifier head;
    ``make_cell(channels)`` builds each cell."""

    def __init__(self, C: int, N: int, num_classes: int, in_channels: int, bn_mode: str,
                 make_cell: Callable[[int], nn.Module], reduction_bn_mode: str | None = None):
        super().__init__()
        _check_sizes(C, N, num_classes, in_channels, bn_mode)
        self.C, self.N, self.num_classes = C, N, num_classes
        self.in_channels, self.bn_mode = in_channels, bn_mode
        self.stem = nn.Sequential(nn.Conv2d(in_channels, C, 3, padding=1, bias=False),
                                  make_batchnorm(C, bn_mode))
        body: list[nn.Module] = []
        for stage, width in enumerate((C, 2 * C, 4 * C)):
            if stage:
                body.append(ResNetBasicBlock(width // 2, width, reduction_bn_mode or bn_mode))
            body.extend(make_cell(width) for _ in range(N))
        self.body = nn.ModuleList(body)
        self.head = nn.Sequential(make_batchnorm(4 * C, bn_mode), nn.ReLU(inplace=False),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(4 * C, num_classes))


class NB201SuperNet(_Skeleton, SuperNet):
    """The weight-sharing supernet. ``forward(x, arch)`` runs the path ``arch`` (6 ints, any
    sequence or a CPU tensor row; keep it on the host, reading a CUDA tensor would synchronise)."""

    space_name = "nb201"

    def __init__(self, C: int = 16, N: int = 5, num_classes: int = 10, in_channels: int = 3,
                 bn_mode: str = "batch", reduction_bn: str = "batch"):
        """``reduction_bn="affine"``: the two reduction blocks' BN get learnable affine parameters
        (batch statistics still, with ``bn_mode="batch"``), as NAS-Bench-201's stand-alone networks."""
        if reduction_bn not in ("batch", "affine"):
            raise ValueError(f"reduction_bn must be 'batch' or 'affine', got {reduction_bn!r}")
        self.reduction_bn = reduction_bn
        reduction_mode = "affine_batch" if reduction_bn == "affine" and bn_mode == "batch" else bn_mode
        super().__init__(C, N, num_classes, in_channels, bn_mode,
                         lambda width: SearchCell(width, bn_mode), reduction_mode)
        self._plans: dict[Arch, CellPlan] = {}
        self._space_kwargs = {"C": C, "N": N, "num_classes": num_classes, "in_channels": in_channels,
                              "bn_mode": bn_mode, "reduction_bn": reduction_bn}

    # -- SuperNet interface --------------------------------------------------------------------
    def layer_candidates(self) -> list[list[str]]:
        return [list(OPS) for _ in range(NUM_EDGES)]

    def forward(self, x: torch.Tensor, arch: Sequence[int]) -> torch.Tensor:
        return self._forward_body(self.stem(x), self._plan(arch))

    def _forward_body(self, x: torch.Tensor, plan: CellPlan,
                      first_cell_inputs: dict[tuple[int, int], torch.Tensor] | None = None) -> torch.Tensor:
        for position, layer in enumerate(self.body):
            if not isinstance(layer, SearchCell):
                x = layer(x)
            elif position == 0 and first_cell_inputs is not None:
                x = run_cell(x, plan, lambda e, op: _cached_or(first_cell_inputs, e, op, layer))
            else:
                x = layer(x, plan)
        return self.head(x)

    # -- shared work of many evaluations (the ranking engine) ----------------------------------
    def path_key(self, arch: Sequence[int]) -> Arch:
        """Dead edges never run: the genes with every dead edge set to ``none``."""
        key = check_arch(self._key(arch))
        live = set(live_edges(key))
        return tuple(g if e in live else OPS.index("none") for e, g in enumerate(key))

    def shared_prefix(self, x: torch.Tensor, with_ops: bool = True) -> dict:
        """What every architecture computes identically from input ``x`` under batch-statistics
        BN: the stem's output and, with ``with_ops``, each parametrised or pooling operation of
        the first cell's edges out of its input node (edges 1<-0, 2<-0, 3<-0). Feed it to
        :meth:`forward_prefixed`. Running-statistics BN is recalibrated per architecture, so
        there nothing is shared (``ValueError``)."""
        if self.bn_mode != "batch":
            raise ValueError("shared_prefix needs batch-statistics BatchNorm (space.bn_mode=batch); "
                             "running statistics are recalibrated per architecture")
        stem = self.stem(x)
        ops: dict[tuple[int, int], torch.Tensor] = {}
        if with_ops and isinstance(self.body[0], SearchCell):
            cell = self.body[0]
            for e, (_, i) in enumerate(EDGES):
                if i != 0:
                    continue
                for op, name in enumerate(OPS):
                    if name not in ("none", "skip_connect"):
                        ops[(e, op)] = cell.edges[e][op](stem)
        return {"stem": stem, "first_cell_inputs": ops if with_ops else None}

    def forward_prefixed(self, prefix: dict, arch: Sequence[int]) -> torch.Tensor:
        """``forward(x, arch)`` from ``shared_prefix(x)``: the same values, less work."""
        return self._forward_body(prefix["stem"], self._plan(arch), prefix["first_cell_inputs"])

    def path_modules(self, arch: Arch):
        """The operation ``arch`` runs on each live edge, in every cell, slot ``edge * 5 + op``."""
        cells = self._search_cells()
        for e in live_edges(arch):
            for cell in cells:
                yield e * len(OPS) + arch[e], cell.edges[e][arch[e]]

    def active_layers(self, arch: Sequence[int]) -> tuple[int, ...]:
        """The live edges: a dead edge's operation never runs."""
        return tuple(live_edges(self._key(arch)))

    def candidate_modules(self) -> list[list[list[nn.Module]]]:
        cells = self._search_cells()
        return [[[cell.edges[e][k] for cell in cells] for k in range(len(OPS))] for e in range(NUM_EDGES)]

    def network_kwargs(self, arch: Sequence[int], weights=None) -> dict:
        return {"arch_str": arch_to_str(self._key(arch)), "C": self.C, "N": self.N,
                "num_classes": self.num_classes, "in_channels": self.in_channels}

    def arch_to_str(self, arch: Sequence[int]) -> str:
        return arch_to_str(arch)

    def str_to_arch(self, text: str) -> Arch:
        return str_to_arch(text)

    # -- NAS-Bench-201 extras ------------------------------------------------------------------
    @staticmethod
    def all_archs() -> list[Arch]:
        return all_archs()

    @staticmethod
    def unique_arch_key(arch: Sequence[int]) -> str:
        return unique_arch_key(arch)

    @staticmethod
    def functional_arch_key(arch: Sequence[int]) -> str:
        return functional_arch_key(arch)

    def standalone(self, arch: Sequence[int], bn_mode: str = "running") -> "NB201Network":
        """A fresh network of just ``arch`` with this supernet's sizes and its own new weights.
        Defaults to running-statistics BN, as NAS-Bench-201 trains its stand-alone networks."""
        return NB201Network(arch, C=self.C, N=self.N, num_classes=self.num_classes,
                            in_channels=self.in_channels, bn_mode=bn_mode)

    def extract(self, arch: Sequence[int]) -> "NB201Network":
        """The sub-model of ``arch`` with the supernet's weights (and BN mode) copied in:
        ``extract(arch)(x)`` equals ``self(x, arch)``."""
        genes = check_arch(self._key(arch))
        net = NB201Network(genes, C=self.C, N=self.N, num_classes=self.num_classes,
                           in_channels=self.in_channels, bn_mode=self.bn_mode,
                           reduction_bn=self.reduction_bn)
        source = self.state_dict()
        index = {name: e for e, name in enumerate(EDGE_NAMES)}
        pattern = re.compile(r"^body\.(\d+)\.edges\.([^.]+)\.(.*)$")
        state = {}
        for name in net.state_dict():
            m = pattern.match(name)
            if m:
                e = index[m.group(2)]
                name = f"body.{m.group(1)}.edges.{e}.{genes[e]}.{m.group(3)}"
                state[f"body.{m.group(1)}.edges.{m.group(2)}.{m.group(3)}"] = source[name]
            else:
                state[name] = source[name]
        net.load_state_dict(state)
        return net.to(next(self.parameters()).device)

    # -- internals -----------------------------------------------------------------------------
    def _search_cells(self) -> list[SearchCell]:
        return [m for m in self.body if isinstance(m, SearchCell)]

    def _plan(self, arch: Sequence[int]) -> CellPlan:
        key = self._key(arch)
        plan = self._plans.get(key)
        if plan is None:
            key = check_arch(key)
            plan = self._plans[key] = cell_plan(key)
        return plan


class NB201Network(_Skeleton):
    """A stand-alone NAS-Bench-201 network of one architecture: same skeleton, only the
    operations of its live edges instantiated. ``forward(x)``."""

    def __init__(self, arch: Sequence[int], C: int = 16, N: int = 5, num_classes: int = 10,
                 in_channels: int = 3, bn_mode: str = "running", reduction_bn: str = "batch"):
        """``reduction_bn`` as the supernet's (it matters with ``bn_mode="batch"`` only)."""
        genes = check_arch(arch)
        if reduction_bn not in ("batch", "affine"):
            raise ValueError(f"reduction_bn must be 'batch' or 'affine', got {reduction_bn!r}")
        reduction_mode = "affine_batch" if reduction_bn == "affine" and bn_mode == "batch" else bn_mode
        super().__init__(C, N, num_classes, in_channels, bn_mode,
                         lambda width: FixedCell(width, genes, bn_mode), reduction_mode)
        self.arch = genes

    @property
    def arch_str(self) -> str:
        return arch_to_str(self.arch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for layer in self.body:
            x = layer(x)
        return self.head(x)


def _from_config(s, num_classes: int, in_channels: int) -> dict:
    return {"C": s.C, "N": s.N, "num_classes": num_classes, "in_channels": in_channels,
            "bn_mode": s.bn_mode, "reduction_bn": s.reduction_bn}


def _parse_string(text: str, s) -> dict | None:
    if not (text.startswith("|") and "~" in text):
        return None
    str_to_arch(text)
    return {"arch": text, "network": {"kwargs": {"arch_str": text, "C": s.C, "N": s.N}}}


def _extract_builder(supernet: "NB201SuperNet", arch) -> dict:
    return {"space": "nb201", "kwargs": dict(supernet.network_kwargs(arch), bn_mode=supernet.bn_mode,
                                             reduction_bn=supernet.reduction_bn)}


SPACES.register("nb201", SpaceEntry(
    NB201SuperNet, _from_config, lambda arch_str, **kw: NB201Network(str_to_arch(arch_str), **kw),
    default_bn_mode="batch", default_granularity="shared", parse_string=_parse_string,
    retrain_sizes=("C", "N"), extract_builder=_extract_builder, benchmark_table=True,
    title="NAS-Bench-201"))


__all__ = ["BN_MODES", "NB201Network", "NB201SuperNet", "OPS", "EDGES", "all_archs", "arch_to_str",
           "functional_arch_key", "live_edges", "recalibrate_bn", "str_to_arch", "unique_arch_key"]
