"""Search spaces behind the small :class:`~pada_fast.spaces.base.SuperNet` interface, by name."""
from __future__ import annotations

from typing import Callable

from .base import Arch, SuperNet
from .batchnorm import recalibrate_bn
from .darts import DartsNetwork, DartsPathNetwork, DartsSuperNet, Genotype
from .nb201 import NB201Network, NB201SuperNet
from .proxyless import ProxylessNetwork, ProxylessSuperNet

SUPERNETS: dict[str, Callable[..., SuperNet]] = {
    "nb201": NB201SuperNet,
    "proxyless": ProxylessSuperNet,
    "darts": DartsSuperNet,
}


def build_supernet(name: str, **kwargs) -> SuperNet:
    """The supernet of search space ``name`` (see ``SUPERNETS``), built with ``kwargs``."""
    try:
        factory = SUPERNETS[name]
    except KeyError:
        raise ValueError(f"unknown search space {name!r}; available: {sorted(SUPERNETS)}") from None
    try:
        return factory(**kwargs)
    except TypeError as exc:
        raise TypeError(f"bad arguments for search space {name!r}: {exc}") from exc


__all__ = ["Arch", "DartsNetwork", "DartsPathNetwork", "DartsSuperNet", "Genotype", "NB201Network",
           "NB201SuperNet", "ProxylessNetwork", "ProxylessSuperNet", "SUPERNETS", "SuperNet",
           "build_supernet", "recalibrate_bn"]
