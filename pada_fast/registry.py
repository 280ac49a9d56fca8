"""Name -> component tables, the only dispatch for search spaces, samplers and methods (timm's
``register_model``/``create_model`` pattern). A component registers itself where it is defined;
the config's choice lists, ``build_supernet`` and ``build_*_sampler`` read these tables, so adding
one is one file plus its registration."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


class Registry:
    """Entries by name, in registration order."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Any] = {}

    def register(self, name: str, entry: Any = None):
        """``register(name, entry)``, or ``@register(name)`` on a class or function. A name can
        be registered once."""
        def add(obj):
            if name in self._entries and self._entries[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is already registered ({self._entries[name]!r})")
            self._entries[name] = obj
            return obj
        return add if entry is None else add(entry)

    def unregister(self, name: str) -> None:
        """Remove ``name`` (tests that register a toy component clean up with this)."""
        self._entries.pop(name, None)

    def get(self, name: str) -> Any:
        try:
            return self._entries[name]
        except KeyError:
            raise ValueError(f"unknown {self.kind} {name!r}; registered: {', '.join(self._entries)}") from None

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._entries)})"


@dataclass(frozen=True)
class SpaceEntry:
    """A search space: ``supernet`` (a :class:`~pada_fast.spaces.base.SuperNet` class),
    ``from_config(space_cfg, num_classes, in_channels)`` -> the supernet's constructor arguments
    from the ``space`` config section, ``network(**kwargs)`` -> the stand-alone network of one
    architecture from the arguments its supernet's ``network_kwargs(arch)`` returns, and what the
    config's ``auto`` values mean for it (``space.bn_mode``, ``method.pa_granularity``).

    What else a space knows, for the commands that would otherwise branch on its name (None or
    empty: the space does not offer it):

    - ``parse_string(text, space_cfg)`` -> ``{"arch", "network": {"kwargs"}, ...}`` for an
      architecture string of this space (``retrain ARCH``), None for a string of another form;
      raises ``ValueError`` for a string of this form that does not parse;
    - ``retrain_sizes``: the ``retrain`` keys that size its network (``C``, ``N``, ``num_cells``);
      ``retrain_options``: the other ``retrain`` keys it accepts, and ``retrain_kwargs(retrain_cfg)``
      the network arguments they become;
    - ``extract_builder(supernet, arch)`` -> how to rebuild ``supernet.extract(arch)`` (an export's
      ``builder``: ``{"space", "kwargs"}`` or ``{"space", "network", "kwargs"}`` naming one of
      ``networks``, the space's other stand-alone network classes);
    - ``default_classes``: classifier outputs when no dataset says (a latency table of the space);
    - ``benchmark_table``: ``rank.ground_truth`` is this space's benchmark, so search adds each
      candidate's true accuracy by default;
    - ``after_search(model, cfg, state)`` -> extra fields of a search's summary."""
    supernet: type
    from_config: Callable[..., dict]
    network: Callable[..., Any]
    default_bn_mode: str = "batch"
    default_granularity: str = "per_edge"
    parse_string: Callable[..., dict | None] | None = None
    retrain_sizes: tuple[str, ...] = ()
    retrain_options: tuple[str, ...] = ()
    retrain_kwargs: Callable[..., dict] | None = None
    extract_builder: Callable[..., dict] | None = None
    networks: dict | None = None
    default_classes: int = 10
    benchmark_table: bool = False
    after_search: Callable[..., dict] | None = None
    title: str = ""                     # how messages name it ("NAS-Bench-201"); default the name


@dataclass(frozen=True)
class MethodEntry:
    """A training method: the path sampler and the data sampler it trains with (names in
    :data:`PATH_SAMPLERS` and :data:`DATA_SAMPLERS`)."""
    path_sampler: str
    data_sampler: str


SPACES = Registry("search space")
PATH_SAMPLERS = Registry("path sampler")
DATA_SAMPLERS = Registry("data sampler")
METHODS = Registry("method")
DATASETS = Registry("dataset")
DATA_BACKENDS = Registry("data backend")
OPTIMIZERS = Registry("optimiser")

# The registries fill when the modules defining their entries are imported.
_PROVIDERS = {"spaces": ("pada_fast.spaces", SPACES), "methods": ("pada_fast.sampling", METHODS),
              "path_samplers": ("pada_fast.sampling", PATH_SAMPLERS),
              "data_samplers": ("pada_fast.sampling", DATA_SAMPLERS),
              "datasets": ("pada_fast.data.datasets", DATASETS),
              "data_backends": ("pada_fast.data.pipeline", DATA_BACKENDS),
              "optimizers": ("pada_fast.experiment", OPTIMIZERS)}


def registered(table: str) -> tuple[str, ...]:
    """Names in registry ``table`` (``spaces``, ``methods``, ``path_samplers``, ``data_samplers``,
    ``datasets``, ``data_backends``, ``optimizers``), importing the built-in components first."""
    import importlib
    module, registry = _PROVIDERS[table]
    importlib.import_module(module)
    return registry.names()


__all__ = ["DATASETS", "DATA_BACKENDS", "DATA_SAMPLERS", "METHODS", "OPTIMIZERS", "MethodEntry", "PATH_SAMPLERS", "Registry", "SPACES", "SpaceEntry",
           "registered"]
