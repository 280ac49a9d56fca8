"""``arch_spec``: the architecture file (:mod:`pada_fast.architecture`) of one sub-model of a
supernet, with its MACs and parameters from the search's cost table."""
from __future__ import annotations

from typing import Sequence

from pada_fast.architecture import FORMAT, network_from_spec, space_kwargs

from .flops import CostTable, build_cost_table, network_cost


def arch_spec(net, arch: Sequence[int], table: CostTable | None = None, weights=None,
              **extra) -> dict:
    """The architecture file's content for ``arch`` of supernet ``net``; ``table`` supplies the
    sub-model's MACs/params (built when missing); ``weights`` (DARTS) ranks edges when ``arch``
    is not genotype-valid (see ``genotype_from_arch``)."""
    arch = tuple(int(g) for g in arch)
    table = table or build_cost_table(net)
    arch_str = net.arch_to_str(arch)
    kwargs = space_kwargs(net)
    network = net.network_kwargs(arch, weights)
    genotype = network.get("genotype")
    spec = {"format": FORMAT, "space": net.space_name, "arch": arch_str, "genes": list(arch),
            "space_kwargs": kwargs, "resolution": table.resolution,
            "macs": table.macs(arch), "params": table.params(arch)}
    if genotype is not None:
        spec["genotype"] = genotype
    spec["network"] = {"kwargs": network}
    spec["network_macs"], spec["network_params"] = network_cost(
        network_from_spec(spec), (table.in_channels, table.resolution, table.resolution))
    spec.update(extra)
    return spec


__all__ = ["arch_spec"]
