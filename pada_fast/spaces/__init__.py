"""Search spaces behind the small :class:`~pada_fast.spaces.base.SuperNet` interface, by name."""
from __future__ import annotations

from torch import nn

from pada_fast.registry import SPACES

from .base import Arch, SuperNet
from .batchnorm import recalibrate_bn
# importing a space registers it; this order is the order of the config's choices
from .nb201 import NB201Network, NB201SuperNet
from .proxyless import ProxylessNetwork, ProxylessSuperNet
from .darts import DartsNetwork, DartsPathNetwork, DartsSuperNet, Genotype  # noqa: E402


def build_supernet(name: str, **kwargs) -> SuperNet:
    """The supernet of registered search space ``name`` (:data:`~pada_fast.registry.SPACES`),
    built with ``kwargs``."""
    factory = SPACES.get(name).supernet
    try:
        return factory(**kwargs)
    except TypeError as exc:
        raise TypeError(f"bad arguments for search space {name!r}: {exc}") from exc


def build_network(name: str, network: str | None = None, **kwargs) -> nn.Module:
    """The stand-alone network of one architecture of space ``name``, from the arguments its
    supernet's ``network_kwargs(arch)`` gave; ``network`` names another of the space's registered
    network classes (its entry's ``networks``)."""
    entry = SPACES.get(name)
    if network is None:
        return entry.network(**kwargs)
    if network not in (entry.networks or {}):
        raise ValueError(f"the {name} space has no network {network!r}; it has {', '.join(entry.networks or {}) or 'none'}")
    return entry.networks[network](**kwargs)


__all__ = ["Arch", "DartsNetwork", "DartsPathNetwork", "DartsSuperNet", "Genotype", "NB201Network",
           "NB201SuperNet", "ProxylessNetwork", "ProxylessSuperNet", "SuperNet",
           "build_network", "build_supernet", "recalibrate_bn"]
