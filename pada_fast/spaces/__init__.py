"""Search spaces behind the small :class:`~pada_fast.spaces.base.SuperNet` interface, by name."""
from __future__ import annotations

from typing import Callable

from .base import Arch, SuperNet
from .batchnorm import recalibrate_bn
from .nb201 import NB201Network, NB201SuperNet

SUPERNETS: dict[str, Callable[..., SuperNet]] = {
    "nb201": NB201SuperNet,
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


__all__ = ["Arch", "NB201Network", "NB201SuperNet", "SUPERNETS", "SuperNet", "build_supernet",
           "recalibrate_bn"]
