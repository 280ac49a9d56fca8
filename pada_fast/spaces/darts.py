"""The DARTS search space (docs/method.md) with single-path training, and stand-alone networks.

Skeleton as DARTS' search model: stem Conv3x3 to 3C + BN, ``num_cells`` cells (reduction cells at
1/3 and 2/3 of the depth double the width and halve the resolution), global average pooling and a
Linear classifier. Each cell preprocesses its two inputs to C channels (ReLU-Conv1x1-BN, or a
factorized reduction after a reduction cell), computes 4 intermediate nodes over its 14 edges and
concatenates them (4C channels). Every edge holds all 8 operations; single-path training runs one
operation per edge (see :mod:`.darts_arch` for genes, strings and genotypes), skipping ``none`` edges
and edges that read an identically zero node (exact under batch-statistics BN without affine).

A searchable "layer" of the :class:`~pada_fast.spaces.base.SuperNet` interface is an edge: 14
normal + 14 reduce = 28 layers x 8 operations; PA keeps a distribution per edge by default.

Operations follow DARTS: pooling is followed by a BN without affine in the supernet (so it stays
parameter-free), ``skip_connect`` in a reduction is a factorized reduce, supernet BNs have no
affine except the stem's. ``bn_mode="batch"`` (default) uses batch statistics also at evaluation;
``"running"`` keeps running statistics (recalibrate them per architecture before evaluating).

:class:`DartsNetwork` is DARTS' evaluation network (``NetworkCIFAR``, without the auxiliary head)
built from a genotype, for retraining; :class:`DartsPathNetwork` is the single-path sub-model of an
architecture (``DartsSuperNet.extract`` copies the supernet's weights into it).
"""
from __future__ import annotations

import re
from typing import Callable, Sequence

import torch
from torch import nn
import torch.nn.functional as F

from pada_fast.registry import METHODS, SPACES, SpaceEntry

from .base import Arch, SuperNet
from .darts_arch import (CELL_TYPES, EDGES, NUM_EDGES, OPS, STEPS, Genotype, arch_to_str,
                         check_arch, crossover_genotype_arch, derive_genotype, genotype_from_arch,
                         genotype_from_str, genotype_to_arch, genotype_to_str, live_edges, live_genes,
                         mutate_genotype_arch, random_genotype_arch, str_to_arch)
from .nb201 import BN_MODES

STEM_MULTIPLIER = 3


def _bn(channels: int, bn_mode: str, affine: bool) -> nn.BatchNorm2d:
    if bn_mode == "batch":
        return nn.BatchNorm2d(channels, affine=affine, track_running_stats=False)
    return nn.BatchNorm2d(channels, affine=affine)


class Zero(nn.Module):
    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x[:, :, ::self.stride, ::self.stride])


class ReLUConvBN(nn.Sequential):
    def __init__(self, c_in, c_out, kernel, stride, padding, bn_mode, affine):
        super().__init__(nn.ReLU(inplace=False),
                         nn.Conv2d(c_in, c_out, kernel, stride, padding, bias=False),
                         _bn(c_out, bn_mode, affine))


class DilConv(nn.Sequential):
    def __init__(self, c_in, c_out, kernel, stride, padding, dilation, bn_mode, affine):
        super().__init__(nn.ReLU(inplace=False),
                         nn.Conv2d(c_in, c_in, kernel, stride, padding, dilation=dilation,
                                   groups=c_in, bias=False),
                         nn.Conv2d(c_in, c_out, 1, bias=False),
                         _bn(c_out, bn_mode, affine))


class SepConv(nn.Sequential):
    def __init__(self, c_in, c_out, kernel, stride, padding, bn_mode, affine):
        super().__init__(DilConv(c_in, c_in, kernel, stride, padding, 1, bn_mode, affine),
                         DilConv(c_in, c_out, kernel, 1, padding, 1, bn_mode, affine))


class FactorizedReduce(nn.Module):
    """Two stride-2 1x1 convs on offset grids, concatenated. Odd sizes are padded so both halves
    have ``ceil(H/2) x ceil(W/2)`` pixels."""

    def __init__(self, c_in, c_out, bn_mode, affine):
        super().__init__()
        if c_out % 2:
            raise ValueError(f"FactorizedReduce needs an even number of output channels, got {c_out}")
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.bn = _bn(c_out, bn_mode, affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        shifted = x[:, :, 1:, 1:]
        h, w = x.shape[-2:]
        if h % 2 or w % 2:
            shifted = nn.functional.pad(shifted, (0, w % 2, 0, h % 2))
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(shifted)], dim=1))


def make_op(name: str, channels: int, stride: int, bn_mode: str, affine: bool,
            pool_bn: bool) -> nn.Module:
    c = channels
    if name == "none":
        return Zero(stride)
    if name in ("max_pool_3x3", "avg_pool_3x3"):
        pool = (nn.MaxPool2d(3, stride, padding=1) if name == "max_pool_3x3"
                else nn.AvgPool2d(3, stride, padding=1, count_include_pad=False))
        return nn.Sequential(pool, _bn(c, bn_mode, False)) if pool_bn else pool
    if name == "skip_connect":
        return nn.Identity() if stride == 1 else FactorizedReduce(c, c, bn_mode, affine)
    if name == "sep_conv_3x3":
        return SepConv(c, c, 3, stride, 1, bn_mode, affine)
    if name == "sep_conv_5x5":
        return SepConv(c, c, 5, stride, 2, bn_mode, affine)
    if name == "dil_conv_3x3":
        return DilConv(c, c, 3, stride, 2, 2, bn_mode, affine)
    if name == "dil_conv_5x5":
        return DilConv(c, c, 5, stride, 4, 2, bn_mode, affine)
    raise ValueError(f"unknown DARTS operation {name!r}")


def _preprocess(c_pp, c_p, c, reduction_prev, bn_mode, affine):
    pre0 = (FactorizedReduce(c_pp, c, bn_mode, affine) if reduction_prev
            else ReLUConvBN(c_pp, c, 1, 1, 0, bn_mode, affine))
    return pre0, ReLUConvBN(c_p, c, 1, 1, 0, bn_mode, affine)


# Per intermediate node, the live (edge, input, op) triples that feed it.
CellPlan = tuple[tuple[tuple[int, int, int], ...], ...]


def cell_plan(cell: Sequence[int]) -> CellPlan:
    live = set(live_edges(cell))
    return tuple(tuple((e, i, cell[e]) for e, (n, i) in enumerate(EDGES) if n == node and e in live)
                 for node in range(2, 2 + STEPS))


class _SinglePathCell(nn.Module):
    reduction: bool

    def run(self, s0, s1, plan: CellPlan, op_of: Callable[[int, int], nn.Module]) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for inputs in plan:
            total = None
            for e, i, op in inputs:
                y = op_of(e, op)(states[i])
                total = y if total is None else total + y
            if total is None:
                ref = states[1][:, :, ::2, ::2] if self.reduction else states[1]
                total = torch.zeros_like(ref)
            states.append(total)
        return torch.cat(states[2:], dim=1)


class SearchCell(_SinglePathCell):
    """All 8 operations on each of the 14 edges: ``edges[e][op]``."""

    def __init__(self, c_pp, c_p, c, reduction, reduction_prev, bn_mode):
        super().__init__()
        self.reduction = reduction
        self.preprocess0, self.preprocess1 = _preprocess(c_pp, c_p, c, reduction_prev, bn_mode, False)
        self.edges = nn.ModuleList(
            nn.ModuleList(make_op(name, c, 2 if reduction and i < 2 else 1, bn_mode, False, True)
                          for name in OPS)
            for _, i in EDGES)

    def forward(self, s0, s1, plan: CellPlan) -> torch.Tensor:
        return self.run(s0, s1, plan, lambda e, op: self.edges[e][op])


class PathCell(_SinglePathCell):
    """One architecture's single-path cell: only live edges, ``edges[str(e)]``."""

    def __init__(self, c_pp, c_p, c, reduction, reduction_prev, bn_mode, cell: Sequence[int]):
        super().__init__()
        self.reduction = reduction
        self.plan = cell_plan(cell)
        self.preprocess0, self.preprocess1 = _preprocess(c_pp, c_p, c, reduction_prev, bn_mode, False)
        self.edges = nn.ModuleDict({
            str(e): make_op(OPS[op], c, 2 if reduction and i < 2 else 1, bn_mode, False, True)
            for inputs in self.plan for e, i, op in inputs})

    def forward(self, s0, s1) -> torch.Tensor:
        return self.run(s0, s1, self.plan, lambda e, op: self.edges[str(e)])


def drop_path(x: torch.Tensor, drop_prob: float) -> torch.Tensor:
    keep = 1.0 - drop_prob
    mask = torch.empty(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype).bernoulli_(keep)
    return x / keep * mask


class GenotypeCell(nn.Module):
    """DARTS' evaluation cell: two (op, input) pairs per node, summed (affine BN, no BN after
    pooling), with drop-path in training."""

    def __init__(self, genotype: Genotype, c_pp, c_p, c, reduction, reduction_prev, bn_mode):
        super().__init__()
        self.reduction = reduction
        self.preprocess0, self.preprocess1 = _preprocess(c_pp, c_p, c, reduction_prev, bn_mode, True)
        pairs = genotype.reduce if reduction else genotype.normal
        concat = genotype.reduce_concat if reduction else genotype.normal_concat
        self.indices = [int(i) for _, i in pairs]
        self.concat = list(concat)
        self.ops = nn.ModuleList(make_op(name, c, 2 if reduction and int(i) < 2 else 1, bn_mode,
                                         True, False) for name, i in pairs)

    def forward(self, s0, s1, drop_prob: float = 0.0) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for step in range(len(self.ops) // 2):
            hs = []
            for k in (2 * step, 2 * step + 1):
                h = self.ops[k](states[self.indices[k]])
                if self.training and drop_prob > 0 and not isinstance(self.ops[k], nn.Identity):
                    h = drop_path(h, drop_prob)
                hs.append(h)
            states.append(hs[0] + hs[1])
        return torch.cat([states[i] for i in self.concat], dim=1)


def reduction_cells(num_cells: int) -> tuple[int, ...]:
    return tuple(sorted({num_cells // 3, 2 * num_cells // 3}))


class _Skeleton(nn.Module):
    def __init__(self, C: int, num_cells: int, num_classes: int, in_channels: int, bn_mode: str,
                 make_cell, stem_affine: bool, multiplier: int = STEPS):
        super().__init__()
        for key, value in (("C", C), ("num_cells", num_cells), ("num_classes", num_classes),
                           ("in_channels", in_channels)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{key} must be a positive int, got {value!r}")
        if C % 2:
            raise ValueError(f"C must be even (factorized reductions halve it), got {C}")
        if bn_mode not in BN_MODES:
            raise ValueError(f"bn_mode must be one of {BN_MODES}, got {bn_mode!r}")
        self.C, self.num_cells, self.num_classes = C, num_cells, num_classes
        self.in_channels, self.bn_mode = in_channels, bn_mode
        c_curr = STEM_MULTIPLIER * C
        self.stem = nn.Sequential(nn.Conv2d(in_channels, c_curr, 3, padding=1, bias=False),
                                  _bn(c_curr, bn_mode, stem_affine))
        c_pp, c_p, c_curr = c_curr, c_curr, C
        reductions = reduction_cells(num_cells)
        self.reductions = reductions
        cells = []
        reduction_prev = False
        for index in range(num_cells):
            reduction = index in reductions
            if reduction:
                c_curr *= 2
            cells.append(make_cell(c_pp, c_p, c_curr, reduction, reduction_prev, index))
            reduction_prev = reduction
            c_pp, c_p = c_p, multiplier * c_curr
        self.cells = nn.ModuleList(cells)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        self.classifier = nn.Linear(c_p, num_classes)


class DartsSuperNet(_Skeleton, SuperNet):
    """The weight-sharing DARTS supernet. ``forward(x, arch)`` with a 28-gene ``arch``."""

    space_name = "darts"

    def __init__(self, C: int = 16, num_cells: int = 8, num_classes: int = 10, in_channels: int = 3,
                 bn_mode: str = "batch", resolution: int = 32):
        super().__init__(C, num_cells, num_classes, in_channels, bn_mode,
                         lambda c_pp, c_p, c, red, red_prev, i: SearchCell(c_pp, c_p, c, red,
                                                                           red_prev, bn_mode),
                         stem_affine=True)
        if not isinstance(resolution, int) or resolution < 1:
            raise ValueError(f"resolution must be a positive int, got {resolution!r}")
        self.resolution = resolution
        self._space_kwargs = {"C": C, "num_cells": num_cells, "num_classes": num_classes,
                              "in_channels": in_channels, "bn_mode": bn_mode,
                              "resolution": resolution}
        self._plans: dict[Arch, tuple[CellPlan, CellPlan]] = {}

    # -- SuperNet interface ----------------------------------------------------------------------
    def layer_candidates(self) -> list[list[str]]:
        return [list(OPS) for _ in range(2 * NUM_EDGES)]

    def forward(self, x: torch.Tensor, arch: Sequence[int]) -> torch.Tensor:
        normal, reduce = self._plan(arch)
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, reduce if cell.reduction else normal)
        return self.classifier(self.pool(s1))

    def path_modules(self, arch: Arch):
        """The chosen operation of every live edge in every cell of its type, slot ``gene * 8 + op``."""
        for gene in live_genes(arch):
            reduction, e = gene >= NUM_EDGES, gene % NUM_EDGES
            for cell in self.cells:
                if cell.reduction == reduction:
                    yield gene * len(OPS) + arch[gene], cell.edges[e][arch[gene]]

    def network_kwargs(self, arch: Sequence[int], weights=None) -> dict:
        """DARTS' evaluation network of the genotype of ``arch`` (``weights`` ranks the edges when
        ``arch`` is not genotype-valid, see :func:`genotype_from_arch`)."""
        return {"genotype": genotype_to_str(genotype_from_arch(self._key(arch), weights)),
                "C": self.C, "num_cells": self.num_cells, "num_classes": self.num_classes,
                "in_channels": self.in_channels}

    def arch_to_str(self, arch: Sequence[int]) -> str:
        return arch_to_str(arch)

    def str_to_arch(self, text: str) -> Arch:
        return str_to_arch(text)

    # -- search and cost-table hooks ---------------------------------------------------------------
    def random_arch(self, rng) -> Arch:
        """A genotype-valid architecture (two non-``none`` inputs per node), as RandomNAS samples:
        the search evaluates exactly the sub-models it can return as genotypes."""
        return random_genotype_arch(rng)

    def mutate_arch(self, arch: Sequence[int], rng, prob: float) -> Arch:
        return mutate_genotype_arch(arch, rng, prob)

    def crossover_arch(self, a: Sequence[int], b: Sequence[int], rng) -> Arch:
        return crossover_genotype_arch(a, b, rng)

    def active_layers(self, arch: Sequence[int]) -> tuple[int, ...]:
        return live_genes(arch)

    def candidate_modules(self) -> list[list[list[nn.Module]]]:
        table = []
        for gene in range(2 * NUM_EDGES):
            reduction, e = gene >= NUM_EDGES, gene % NUM_EDGES
            cells = [c for c in self.cells if c.reduction == reduction]
            table.append([[c.edges[e][op] for c in cells] for op in range(len(OPS))])
        return table

    # -- genotypes and sub-models --------------------------------------------------------------------
    @staticmethod
    def genotype(arch: Sequence[int], weights=None) -> Genotype:
        return genotype_from_arch(arch, weights)

    @staticmethod
    def derive_genotype(weights) -> Genotype:
        return derive_genotype(weights)

    def extract(self, arch: Sequence[int]) -> "DartsPathNetwork":
        """The single-path sub-model of ``arch`` with the supernet's weights (and BN statistics):
        ``extract(arch)(x)`` equals ``self(x, arch)``."""
        key = self._key(arch)
        net = DartsPathNetwork(key, C=self.C, num_cells=self.num_cells, num_classes=self.num_classes,
                               in_channels=self.in_channels, bn_mode=self.bn_mode)
        source = self.state_dict()
        pattern = re.compile(r"^cells\.(\d+)\.edges\.(\d+)\.(.*)$")
        state = {}
        for name in net.state_dict():
            m = pattern.match(name)
            if m:
                cell, e = int(m.group(1)), int(m.group(2))
                gene = e + (NUM_EDGES if self.cells[cell].reduction else 0)
                name_in = f"cells.{cell}.edges.{e}.{key[gene]}.{m.group(3)}"
            else:
                name_in = name
            state[name] = source[name_in]
        net.load_state_dict(state)
        return net.to(next(self.parameters()).device)

    def standalone(self, arch: Sequence[int] | Genotype, C: int | None = None,
                   num_cells: int | None = None, bn_mode: str = "running") -> "DartsNetwork":
        """DARTS' evaluation network of ``arch`` (or a genotype) with fresh weights, at this
        supernet's sizes unless ``C``/``num_cells`` are given (DARTS retrains at C=36, 20 cells)."""
        genotype = arch if isinstance(arch, Genotype) else genotype_from_arch(arch)
        return DartsNetwork(genotype, C=C or self.C, num_cells=num_cells or self.num_cells,
                            num_classes=self.num_classes, in_channels=self.in_channels,
                            bn_mode=bn_mode)

    # -- internals -----------------------------------------------------------------------------------
    def _plan(self, arch: Sequence[int]) -> tuple[CellPlan, CellPlan]:
        key = self._key(arch)
        plan = self._plans.get(key)
        if plan is None:
            key = check_arch(key)
            plan = self._plans[key] = (cell_plan(key[:NUM_EDGES]), cell_plan(key[NUM_EDGES:]))
        return plan


class DartsPathNetwork(_Skeleton):
    """The single-path sub-model of one architecture (supernet-style cells, only live edges)."""

    def __init__(self, arch: Sequence[int], C: int = 16, num_cells: int = 8, num_classes: int = 10,
                 in_channels: int = 3, bn_mode: str = "batch"):
        genes = check_arch(arch)
        super().__init__(C, num_cells, num_classes, in_channels, bn_mode,
                         lambda c_pp, c_p, c, red, red_prev, i: PathCell(
                             c_pp, c_p, c, red, red_prev, bn_mode,
                             genes[NUM_EDGES:] if red else genes[:NUM_EDGES]),
                         stem_affine=True)
        self.arch = genes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1)
        return self.classifier(self.pool(s1))


class AuxiliaryHead(nn.Module):
    """DARTS' auxiliary classifier (``AuxiliaryHeadCIFAR``) on the output of the cell at 2/3 of
    the depth: ReLU, 5x5 average pooling with stride 3 (an 8x8 map becomes 2x2; other sizes are
    pooled to 2x2 adaptively), 1x1 conv to 128, BN, ReLU, 2x2 conv to 768, BN, ReLU, linear."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, 128, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False), nn.BatchNorm2d(768), nn.ReLU(inplace=True))
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(x)
        if tuple(x.shape[-2:]) == (8, 8):
            x = F.avg_pool2d(x, 5, stride=3, padding=0, count_include_pad=False)
        else:
            x = F.adaptive_avg_pool2d(x, 2)
        return self.classifier(self.features(x).flatten(1))


class DartsNetwork(_Skeleton):
    """DARTS' evaluation network (``NetworkCIFAR``) of a genotype; set ``drop_path_prob`` before
    training steps as DARTS does. ``forward(x)`` returns the logits; with ``auxiliary`` the
    network also holds DARTS' auxiliary head, and ``forward_with_aux(x)`` returns ``(logits,
    auxiliary logits)`` in training mode (the head is not run in eval mode, nor exported)."""

    def __init__(self, genotype: Genotype | str, C: int = 36, num_cells: int = 20,
                 num_classes: int = 10, in_channels: int = 3, bn_mode: str = "running",
                 drop_path_prob: float = 0.0, auxiliary: bool = False):
        if isinstance(genotype, str):
            genotype = genotype_from_str(genotype)
        genotype_to_arch(genotype)   # validates
        super().__init__(C, num_cells, num_classes, in_channels, bn_mode,
                         lambda c_pp, c_p, c, red, red_prev, i: GenotypeCell(
                             genotype, c_pp, c_p, c, red, red_prev, bn_mode),
                         stem_affine=True, multiplier=len(genotype.normal_concat))
        if len(genotype.normal_concat) != len(genotype.reduce_concat):
            raise ValueError("normal_concat and reduce_concat must have the same length")
        self.genotype = genotype
        self.drop_path_prob = drop_path_prob
        self.aux_index = 2 * num_cells // 3
        self.auxiliary = None
        if auxiliary:
            width = len(genotype.normal_concat) * C * 2 ** sum(r <= self.aux_index for r in self.reductions)
            self.auxiliary = AuxiliaryHead(width, num_classes)
        self.spec = {"space": "darts", "genotype": genotype_to_str(genotype), "C": C,
                     "num_cells": num_cells, "num_classes": num_classes, "in_channels": in_channels}

    def forward_with_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        s0 = s1 = self.stem(x)
        aux = None
        for index, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if index == self.aux_index and self.auxiliary is not None and self.training:
                aux = self.auxiliary(s1)
        return self.classifier(self.pool(s1)), aux

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_aux(x)[0]


def _from_config(s, num_classes: int, in_channels: int) -> dict:
    return {"C": s.C, "num_cells": s.num_cells, "num_classes": num_classes, "in_channels": in_channels,
            "bn_mode": s.bn_mode, "resolution": s.resolution or 32}


def _parse_string(text: str, s) -> dict | None:
    if not text.startswith("Genotype("):
        return None
    genotype_from_str(text)
    return {"arch": text, "genotype": text, "network": {"kwargs": {"genotype": text, "C": s.C, "num_cells": s.num_cells}}}


def _retrain_kwargs(r) -> dict:
    return {"auxiliary": r.auxiliary_weight > 0}


def _extract_builder(supernet: "DartsSuperNet", arch) -> dict:
    """DARTS' single-path network (``extract``), not its genotype network."""
    return {"space": "darts", "network": "path",
            "kwargs": {"arch": list(check_arch(tuple(arch))), "C": supernet.C, "num_cells": supernet.num_cells,
                       "num_classes": supernet.num_classes, "in_channels": supernet.in_channels,
                       "bn_mode": supernet.bn_mode}}


def _after_search(model, cfg, state) -> dict:
    """DARTS' derivation from PA's final per-edge distribution, to compare with the search."""
    p = state.get("path_sampler", {}).get("p")
    if p is None or METHODS.get(cfg.method.name).path_sampler != "importance":
        return {}
    return {"pa_genotype": genotype_to_str(derive_genotype(p.numpy()))}


SPACES.register("darts", SpaceEntry(DartsSuperNet, _from_config, DartsNetwork,
                                    default_bn_mode="batch", default_granularity="per_edge",
                                    parse_string=_parse_string, retrain_sizes=("C", "num_cells"),
                                    retrain_options=("auxiliary_weight", "drop_path"),
                                    retrain_kwargs=_retrain_kwargs, extract_builder=_extract_builder,
                                    networks={"path": DartsPathNetwork}, after_search=_after_search,
                                    title="DARTS"))


__all__ = ["CELL_TYPES", "DartsNetwork", "DartsPathNetwork", "DartsSuperNet", "Genotype", "OPS",
           "derive_genotype", "genotype_from_arch", "genotype_from_str", "genotype_to_arch",
           "genotype_to_str", "reduction_cells"]

