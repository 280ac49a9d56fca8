"""The ProxylessNAS / MobileNetV2-style search space (docs/method.md) and stand-alone networks of it.

Chain: Conv3x3 (stride ``stem_stride``, 32 x width) + BN + ReLU6, a fixed MBConv1 3x3 to 16 x width,
then 21 searchable layers in stages of width/count/stride 24x4/s2, 40x4/s2, 80x4/s2, 96x4/s1,
192x4/s2, 320x1/s1, then Conv1x1 to 1280 + BN + ReLU6, global average pooling and a Linear
classifier. Every searchable layer chooses one operation: an MBConv ``k{K}e{E}`` (1x1 expansion to
``round(E * c_in)`` channels when E > 1, depthwise KxK with the layer's stride, linear 1x1
projection, each conv followed by BN, ReLU6 after the first two) or ``skip`` (identity), which
exists only on layers that keep resolution and width (all but the first layer of each stage). An
MBConv on such a layer also gets the residual connection. Candidate order per layer: the MBConv
names in the order given (default k3e3, k3e6, k5e3, k5e6, k7e3, k7e6), then ``skip``.

Architectures are tuples of 21 candidate indices; their string form is the operation names joined
by ``|`` (``k3e6|skip|k5e3|...``).
"""
from __future__ import annotations

import re
from typing import Sequence

import torch
from torch import nn

from pada_fast.registry import SPACES, SpaceEntry

from .base import Arch, SuperNet
from .nb201 import BN_MODES, make_batchnorm

STAGES: tuple[tuple[int, int, int], ...] = ((24, 4, 2), (40, 4, 2), (80, 4, 2), (96, 4, 1),
                                            (192, 4, 2), (320, 1, 1))   # (width, layers, stride)
NUM_LAYERS = sum(n for _, n, _ in STAGES)   # 21
SKIP = "skip"
DEFAULT_MBCONVS: tuple[str, ...] = ("k3e3", "k3e6", "k5e3", "k5e6", "k7e3", "k7e6")
STEM_CHANNELS = 32
FIRST_CHANNELS = 16
LAST_CHANNELS = 1280
_OP_RE = re.compile(r"^k(\d+)e(\d+)$")


def make_divisible(value: float, divisor: int = 8) -> int:
    """MobileNet's channel rounding: nearest multiple of ``divisor``, at least ``divisor``, and
    never more than 10% below ``value``."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


def parse_op(name: str) -> tuple[int, int] | None:
    """``"k5e6"`` -> ``(5, 6)``; ``"skip"`` -> ``None``."""
    if name == SKIP:
        return None
    match = _OP_RE.match(name)
    if not match or int(match.group(1)) % 2 == 0 or int(match.group(2)) < 1:
        raise ValueError(f"unknown ProxylessNAS operation {name!r}: use 'k<odd kernel>e<expansion>' "
                         f"(e.g. k3e6) or {SKIP!r}")
    return int(match.group(1)), int(match.group(2))


def layer_plan(width_mult: float = 1.0) -> list[tuple[int, int, int, bool]]:
    """Per searchable layer: (c_in, c_out, stride, skippable)."""
    c_in = make_divisible(FIRST_CHANNELS * width_mult)
    plan = []
    for width, count, stride in STAGES:
        c_out = make_divisible(width * width_mult)
        for i in range(count):
            s = stride if i == 0 else 1
            plan.append((c_in, c_out, s, s == 1 and c_in == c_out))
            c_in = c_out
    return plan


def resolve_candidates(candidates, skippable: Sequence[bool]) -> list[list[str]]:
    """Per-layer candidate names. ``candidates``: None (default set), one list (or a comma-separated
    string) used on every layer, or one list per layer (or a ``;``-separated string of 21
    comma-separated groups). ``skip`` is always last and is dropped from shared sets on layers that
    cannot skip; naming it explicitly for such a layer in a per-layer set is an error."""
    n = len(skippable)
    if candidates is None:
        shared: list[str] | None = list(DEFAULT_MBCONVS) + [SKIP]
        per_layer = None
    elif isinstance(candidates, str):
        groups = [g.strip() for g in candidates.split(";")] if ";" in candidates else [candidates]
        parsed = [[name.strip() for name in g.split(",") if name.strip()] for g in groups]
        shared, per_layer = (parsed[0], None) if len(parsed) == 1 else (None, parsed)
    else:
        items = list(candidates)
        if items and all(isinstance(c, str) for c in items):
            shared, per_layer = items, None
        else:
            shared, per_layer = None, [list(c) for c in items]
    if per_layer is not None and len(per_layer) != n:
        raise ValueError(f"per-layer ProxylessNAS candidates need one set per layer ({n}), got "
                         f"{len(per_layer)}")
    result = []
    for layer in range(n):
        names = list(shared) if per_layer is None else list(per_layer[layer])
        if not names:
            raise ValueError(f"layer {layer} has no candidate operations")
        if len(set(names)) != len(names):
            raise ValueError(f"layer {layer} lists a candidate twice: {names}")
        for name in names:
            parse_op(name)
        if SKIP in names:
            if not skippable[layer]:
                if per_layer is not None:
                    raise ValueError(f"layer {layer} changes resolution or width, so it cannot "
                                     f"offer {SKIP!r}")
            names.remove(SKIP)
            if skippable[layer]:
                names.append(SKIP)
        if not names:
            raise ValueError(f"layer {layer} has no candidate besides {SKIP!r}, which it cannot use")
        result.append(names)
    return result


def _conv_bn(c_in: int, c_out: int, kernel: int, stride: int, groups: int, bn_mode: str,
             act: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups,
                                         bias=False), make_batchnorm(c_out, bn_mode)]
    if act:
        layers.append(nn.ReLU6(inplace=False))
    return nn.Sequential(*layers)


class MBConv(nn.Module):
    """Inverted bottleneck without the residual (the layer adds it)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, expand: int, bn_mode: str):
        super().__init__()
        hidden = int(round(c_in * expand))
        self.expand = _conv_bn(c_in, hidden, 1, 1, 1, bn_mode, True) if expand != 1 else None
        self.depthwise = _conv_bn(hidden, hidden, kernel, stride, hidden, bn_mode, True)
        self.project = _conv_bn(hidden, c_out, 1, 1, 1, bn_mode, False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.expand is not None:
            x = self.expand(x)
        return self.project(self.depthwise(x))


def make_op(name: str, c_in: int, c_out: int, stride: int, bn_mode: str) -> nn.Module:
    spec = parse_op(name)
    if spec is None:
        return nn.Identity()
    return MBConv(c_in, c_out, spec[0], stride, spec[1], bn_mode)


class SearchLayer(nn.Module):
    def __init__(self, names: Sequence[str], c_in: int, c_out: int, stride: int, skippable: bool,
                 bn_mode: str):
        super().__init__()
        self.names = list(names)
        self.residual = skippable
        self.candidates = nn.ModuleList(make_op(n, c_in, c_out, stride, bn_mode) for n in names)

    def forward(self, x: torch.Tensor, choice: int) -> torch.Tensor:
        if self.names[choice] == SKIP:
            return x
        y = self.candidates[choice](x)
        return y + x if self.residual else y


class FixedLayer(nn.Module):
    def __init__(self, name: str, c_in: int, c_out: int, stride: int, skippable: bool, bn_mode: str):
        super().__init__()
        self.name = name
        self.residual = skippable
        self.op = make_op(name, c_in, c_out, stride, bn_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.name == SKIP:
            return x
        y = self.op(x)
        return y + x if self.residual else y


class _Chain(nn.Module):
    """Stem, fixed first block, the 21 layers (``make_layer(i, c_in, c_out, stride, skippable)``),
    head and classifier."""

    def __init__(self, num_classes: int, in_channels: int, width_mult: float, bn_mode: str,
                 stem_stride: int, last_channels: int, dropout: float, make_layer):
        super().__init__()
        for key, value in (("num_classes", num_classes), ("in_channels", in_channels),
                           ("stem_stride", stem_stride), ("last_channels", last_channels)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{key} must be a positive int, got {value!r}")
        if not width_mult > 0:
            raise ValueError(f"width_mult must be > 0, got {width_mult!r}")
        if bn_mode not in BN_MODES:
            raise ValueError(f"bn_mode must be one of {BN_MODES}, got {bn_mode!r}")
        stem = make_divisible(STEM_CHANNELS * width_mult)
        first = make_divisible(FIRST_CHANNELS * width_mult)
        last = make_divisible(last_channels * width_mult) if width_mult > 1.0 else last_channels
        self.plan = layer_plan(width_mult)
        self.stem = _conv_bn(in_channels, stem, 3, stem_stride, 1, bn_mode, True)
        self.first = nn.Sequential(_conv_bn(stem, stem, 3, 1, stem, bn_mode, True),
                                   _conv_bn(stem, first, 1, 1, 1, bn_mode, False))
        self.blocks = nn.ModuleList(make_layer(i, *p) for i, p in enumerate(self.plan))
        self.head = _conv_bn(self.plan[-1][1], last, 1, 1, 1, bn_mode, True)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Linear(last, num_classes)

    def _finish(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.pool(self.head(x))))


class ProxylessSuperNet(_Chain, SuperNet):
    """The weight-sharing supernet: every layer holds all its candidates.

    ``resolution`` is the input size the MACs table counts at (224 for the literature's FLOPs);
    the network itself takes any input size. ``stem_stride=1`` keeps more resolution for 32x32
    inputs. ``bn_mode``: ``running`` (default, recalibrate per architecture before evaluating) or
    ``batch``.
    """

    space_name = "proxyless"

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, width_mult: float = 1.0,
                 resolution: int = 224, bn_mode: str = "running", stem_stride: int = 2,
                 candidates=None, last_channels: int = LAST_CHANNELS):
        plan = layer_plan(width_mult)
        names = resolve_candidates(candidates, [p[3] for p in plan])
        super().__init__(num_classes, in_channels, width_mult, bn_mode, stem_stride, last_channels,
                         0.0, lambda i, c_in, c_out, s, skip: SearchLayer(names[i], c_in, c_out, s,
                                                                           skip, bn_mode))
        if not isinstance(resolution, int) or resolution < 1:
            raise ValueError(f"resolution must be a positive int, got {resolution!r}")
        self.resolution = resolution
        self.width_mult = float(width_mult)
        self.bn_mode = bn_mode
        self._names = names
        self._index = [{n: k for k, n in enumerate(layer)} for layer in names]
        self._space_kwargs = {"num_classes": num_classes, "in_channels": in_channels,
                              "width_mult": float(width_mult), "resolution": resolution,
                              "bn_mode": bn_mode, "stem_stride": stem_stride,
                              "candidates": [list(n) for n in names],
                              "last_channels": last_channels}

    # -- SuperNet interface ----------------------------------------------------------------------
    def layer_candidates(self) -> list[list[str]]:
        return [list(n) for n in self._names]

    def forward(self, x: torch.Tensor, arch: Sequence[int]) -> torch.Tensor:
        genes = self._key(arch)
        x = self.first(self.stem(x))
        for layer, choice in zip(self.blocks, genes):
            x = layer(x, choice)
        return self._finish(x)

    def path_modules(self, arch: Arch):
        """Each layer's chosen MBConv, slot ``layer * max_candidates + choice`` (``skip`` has no
        parameters)."""
        width = self.max_candidates
        for layer, choice in enumerate(self._key(arch)):
            yield layer * width + choice, self.blocks[layer].candidates[choice]

    def network_kwargs(self, arch: Sequence[int], weights=None) -> dict:
        keep = ("num_classes", "in_channels", "width_mult", "stem_stride", "last_channels", "resolution")
        return {"ops": self.arch_ops(arch), **{k: self._space_kwargs[k] for k in keep}}

    def arch_to_str(self, arch: Sequence[int]) -> str:
        return "|".join(self._names[i][g] for i, g in enumerate(self._key(arch)))

    def str_to_arch(self, text: str) -> Arch:
        parts = [p.strip() for p in text.strip().split("|")]
        if len(parts) != len(self._names):
            raise ValueError(f"a ProxylessNAS architecture string has {len(self._names)} "
                             f"'|'-separated operations, got {len(parts)} in {text!r}")
        genes = []
        for layer, name in enumerate(parts):
            if name not in self._index[layer]:
                raise ValueError(f"layer {layer} has no candidate {name!r}; its candidates are "
                                 f"{self._names[layer]}")
            genes.append(self._index[layer][name])
        return tuple(genes)

    # -- extras ------------------------------------------------------------------------------------
    def candidate_modules(self) -> list[list[list[nn.Module]]]:
        return [[[op] for op in layer.candidates] for layer in self.blocks]

    def arch_ops(self, arch: Sequence[int]) -> list[str]:
        genes = self._key(arch)
        return [self._names[i][g] for i, g in enumerate(genes)]

    def standalone(self, arch: Sequence[int], bn_mode: str = "running",
                   dropout: float = 0.0) -> "ProxylessNetwork":
        """A fresh network of just ``arch`` (new weights), for retraining."""
        kw = self._space_kwargs
        return ProxylessNetwork(self.arch_ops(arch), num_classes=kw["num_classes"],
                                in_channels=kw["in_channels"], width_mult=kw["width_mult"],
                                bn_mode=bn_mode, stem_stride=kw["stem_stride"],
                                last_channels=kw["last_channels"], dropout=dropout,
                                resolution=kw["resolution"])

    def extract(self, arch: Sequence[int]) -> "ProxylessNetwork":
        """The sub-model of ``arch`` with the supernet's weights (and BN statistics) copied in;
        ``extract(arch)(x)`` equals ``self(x, arch)``."""
        genes = self._key(arch)
        net = self.standalone(genes, bn_mode=self.bn_mode)
        for name in ("stem", "first", "head", "classifier"):
            getattr(net, name).load_state_dict(getattr(self, name).state_dict())
        for layer, choice in enumerate(genes):
            net.blocks[layer].op.load_state_dict(self.blocks[layer].candidates[choice].state_dict())
        return net.to(next(self.parameters()).device)

    def _key(self, arch: Sequence[int]) -> Arch:
        if isinstance(arch, torch.Tensor):
            arch = arch.tolist()
        genes = tuple(int(g) for g in arch)
        if len(genes) != len(self._names):
            raise ValueError(f"a ProxylessNAS architecture has {len(self._names)} genes, got "
                             f"{len(genes)}: {genes}")
        for layer, g in enumerate(genes):
            if not 0 <= g < len(self._names[layer]):
                raise ValueError(f"gene {g} of layer {layer} is out of range: the layer has "
                                 f"{len(self._names[layer])} candidates {self._names[layer]}")
        return genes


class ProxylessNetwork(_Chain):
    """A stand-alone network: ``ops`` names each of the 21 layers' operation (``k3e6``, ``skip``,
    ...). ``forward(x)``."""

    def __init__(self, ops: Sequence[str], num_classes: int = 1000, in_channels: int = 3,
                 width_mult: float = 1.0, bn_mode: str = "running", stem_stride: int = 2,
                 last_channels: int = LAST_CHANNELS, dropout: float = 0.0, resolution: int = 224):
        ops = list(ops)
        plan = layer_plan(width_mult)
        if len(ops) != len(plan):
            raise ValueError(f"a ProxylessNAS network has {len(plan)} layers, got {len(ops)} ops")
        for i, (name, p) in enumerate(zip(ops, plan)):
            if parse_op(name) is None and not p[3]:
                raise ValueError(f"layer {i} changes resolution or width and cannot be {SKIP!r}")
        super().__init__(num_classes, in_channels, width_mult, bn_mode, stem_stride, last_channels,
                         dropout, lambda i, c_in, c_out, s, skip: FixedLayer(ops[i], c_in, c_out, s,
                                                                             skip, bn_mode))
        self.ops = ops
        self.resolution = resolution
        self.spec = {"space": "proxyless", "ops": list(ops), "num_classes": num_classes,
                     "in_channels": in_channels, "width_mult": float(width_mult),
                     "stem_stride": stem_stride, "last_channels": last_channels,
                     "resolution": resolution}

    @property
    def arch_str(self) -> str:
        return "|".join(self.ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.first(self.stem(x))
        for layer in self.blocks:
            x = layer(x)
        return self._finish(x)


def _from_config(s, num_classes: int, in_channels: int) -> dict:
    return {"num_classes": num_classes, "in_channels": in_channels, "width_mult": s.width_mult,
            "resolution": s.resolution or 224, "bn_mode": s.bn_mode, "stem_stride": s.stem_stride,
            "candidates": s.candidates, "last_channels": s.last_channels}


def _parse_string(text: str, s) -> dict | None:
    if not re.fullmatch(r"[A-Za-z0-9_]+(\|[A-Za-z0-9_]+)+", text):
        return None
    return {"arch": text, "network": {"kwargs": {"ops": text.split("|"), "width_mult": s.width_mult,
                                                 "stem_stride": s.stem_stride, "last_channels": s.last_channels,
                                                 "resolution": s.resolution or 224}}}


def _retrain_kwargs(r) -> dict:
    return {"dropout": r.dropout} if r.dropout else {}


def _extract_builder(supernet: "ProxylessSuperNet", arch) -> dict:
    return {"space": "proxyless", "kwargs": dict(supernet.network_kwargs(arch), bn_mode=supernet.bn_mode)}


SPACES.register("proxyless", SpaceEntry(ProxylessSuperNet, _from_config, ProxylessNetwork,
                                        default_bn_mode="running", default_granularity="per_edge",
                                        parse_string=_parse_string, retrain_options=("dropout",),
                                        retrain_kwargs=_retrain_kwargs, extract_builder=_extract_builder,
                                        default_classes=1000, title="ProxylessNAS"))


__all__ = ["DEFAULT_MBCONVS", "MBConv", "NUM_LAYERS", "ProxylessNetwork", "ProxylessSuperNet", "SKIP",
           "STAGES", "layer_plan", "make_divisible", "parse_op", "resolve_candidates"]

