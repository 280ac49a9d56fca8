"""Latency lookup tables: an architecture's inference latency on one device as a table sum.

``pada-fast latency-table`` measures, on the user's own device, every candidate operation of every
layer at the input shape it sees at the search resolution (shapes as the MACs table captures
them, :func:`~pada_fast.search.flops.candidate_input_shapes`), in eval mode under
``torch.inference_mode``, on a zero batch of ``batch_size`` images: ``warmup`` untimed rounds,
then the median of ``repeats`` timed calls, every operation once per round in turn (round-robin,
so the machine's drift during the measurement hits all operations alike; CUDA: CUDA events
around each call).
The fixed part (stem, head, classifier, and the per-layer work outside the candidate modules:
residual additions, Python dispatch) is calibrated end to end: the median, over
``calibration_archs`` seeded random architectures, of the measured latency of the stand-alone
network minus that architecture's table sum. So

    latency_ms(arch) = fixed_ms + sum(layer_ms[l][arch[l]] for l in active layers)

:func:`evaluate_latency_table` measures how well that predicts the stand-alone networks' measured
end-to-end latency on other random architectures (correlation and mean error). Timings depend on
the device, the number of threads and the batch size; the table records all three and
``pada-fast search --max-latency-ms`` refuses a table built for another space configuration.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from pada_fast.architecture import plain_space_kwargs, space_kwargs_differences
from pada_fast.files import write_json_atomic
from pada_fast.spaces import build_network

from .flops import candidate_input_shapes, default_resolution, input_channels, summed_layers

FORMAT = "pada_fast.latency/1"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_once(fn: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return float(start.elapsed_time(end))
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


@torch.inference_mode()
def time_calls(fns: Sequence[Callable[[], object]], device: torch.device | str, warmup: int = 10,
               repeats: int = 30) -> list[float]:
    """Median milliseconds of each of ``fns``: ``warmup`` untimed rounds, then ``repeats`` timed
    rounds, each calling every function once in turn (in reverse order every other round), so
    that the machine's drift over the measurement hits all of them alike."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got {repeats} and {warmup}")
    device = torch.device(device)
    for _ in range(warmup):
        for fn in fns:
            fn()
    _sync(device)
    times: list[list[float]] = [[] for _ in fns]
    order = list(range(len(fns)))
    for r in range(repeats):
        for i in (order if r % 2 == 0 else reversed(order)):
            times[i].append(_time_once(fns[i], device))
    return [float(statistics.median(t)) for t in times]


def _eval_call(module: nn.Module, x: torch.Tensor) -> Callable[[], object]:
    module.eval()
    return lambda: module(x)


def networks_latency_ms(networks: Sequence[nn.Module], input_shape: Sequence[int], batch_size: int = 1,
                        warmup: int = 10, repeats: int = 30) -> list[float]:
    """Median end-to-end milliseconds of each stand-alone network on a zero batch, measured
    round-robin (:func:`time_calls`)."""
    param = next(networks[0].parameters())
    x = torch.zeros(batch_size, *input_shape, device=param.device, dtype=param.dtype)
    return time_calls([_eval_call(n, x) for n in networks], param.device, warmup, repeats)


def standalone_network(net, arch: Sequence[int]) -> nn.Module:
    """The stand-alone network of ``arch`` of supernet ``net`` (fresh weights; timing does not
    depend on their values), on the supernet's device, in eval mode."""
    param = next(net.parameters())
    return build_network(net.space_name, **net.network_kwargs(arch)).to(param.device).eval()


@dataclass
class LatencyTable:
    """Per-(layer, candidate) milliseconds plus the calibrated fixed part; ``latency_ms(arch)`` is
    the table sum over the layers ``active_layers(arch)`` selects (default: all)."""

    layer_ms: list[list[float]]
    fixed_ms: float
    resolution: int
    in_channels: int
    batch_size: int
    device: str
    space: str = ""
    candidates: list[list[str]] = field(default_factory=list)
    space_kwargs: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    active_layers: Callable[[Sequence[int]], Sequence[int]] | None = field(default=None, repr=False)

    def _layers(self, arch: Sequence[int]) -> Sequence[int]:
        return summed_layers(arch, len(self.layer_ms), self.active_layers, "latency table")

    def latency_ms(self, arch: Sequence[int]) -> float:
        arch = [int(g) for g in arch]
        return self.fixed_ms + sum(self.layer_ms[l][arch[l]] for l in self._layers(arch))

    def bounds(self) -> tuple[float, float]:
        """Lowest and highest table sum (for spaces that prune dead edges the lower bound counts
        every layer at its cheapest candidate)."""
        return (self.fixed_ms + sum(min(r) for r in self.layer_ms),
                self.fixed_ms + sum(max(r) for r in self.layer_ms))

    def check_matches(self, net, resolution: int | None = None) -> None:
        """Refuse a table measured for another space configuration or resolution than ``net``'s."""
        problems = []
        if self.space != net.space_name:
            problems.append(f"space {self.space!r}, the supernet's is {net.space_name!r}")
        elif self.candidates != [list(c) for c in net.layer_candidates()]:
            problems.append("other candidate operations per layer")
        else:
            diff = space_kwargs_differences(self.space_kwargs, net, ignore=("resolution",))
            if diff:
                problems.append("other space settings: " + ", ".join(diff))
        if resolution is not None and int(resolution) != self.resolution:
            problems.append(f"resolution {self.resolution}, the search's is {resolution}")
        if problems:
            raise ValueError("the latency table does not fit this supernet: " + "; ".join(problems)
                             + "; measure one for it with pada-fast latency-table")

    def to_dict(self) -> dict:
        return {"format": FORMAT, "space": self.space, "device": self.device,
                "batch_size": self.batch_size, "resolution": self.resolution,
                "in_channels": self.in_channels, "fixed_ms": self.fixed_ms,
                "layer_ms": self.layer_ms, "candidates": self.candidates,
                "space_kwargs": self.space_kwargs, "meta": self.meta}

    def save(self, path: str | os.PathLike) -> None:
        write_json_atomic(path, self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, data: dict, active_layers=None) -> "LatencyTable":
        return cls(layer_ms=[[float(v) for v in r] for r in data["layer_ms"]],
                   fixed_ms=float(data["fixed_ms"]), resolution=int(data["resolution"]),
                   in_channels=int(data["in_channels"]), batch_size=int(data["batch_size"]),
                   device=str(data["device"]), space=data.get("space", ""),
                   candidates=[list(c) for c in data.get("candidates", [])],
                   space_kwargs=dict(data.get("space_kwargs", {})), meta=dict(data.get("meta", {})),
                   active_layers=active_layers)


def load_latency_table(path: str | os.PathLike, net=None) -> LatencyTable:
    """Read a table written by :meth:`LatencyTable.save`; with ``net`` its dead-edge rule applies."""
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"latency table {path} does not exist; measure one with "
                                "pada-fast latency-table") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"latency table {path} is not JSON ({exc}); measure it again") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{path} is not a pada_fast latency table (format {FORMAT})")
    return LatencyTable.from_dict(data, active_layers=None if net is None else net.active_layers)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


@torch.no_grad()
def build_latency_table(net, resolution: int | None = None, batch_size: int = 1, warmup: int = 10,
                        repeats: int = 30, calibration_archs: int = 5, seed: int = 0,
                        progress: Callable[[str], None] | None = None) -> LatencyTable:
    """Measure supernet ``net``'s latency table on the device it lives on (see the module's
    docstring); ``seed`` draws the calibration architectures."""
    if batch_size < 1 or calibration_archs < 1:
        raise ValueError(f"batch_size and calibration_archs must be >= 1, got {batch_size} and "
                         f"{calibration_archs}")
    resolution = int(resolution or default_resolution(net))
    in_channels = input_channels(net)
    param = next(net.parameters())
    device, dtype = param.device, param.dtype
    was_training = net.training
    net.eval()
    shapes = candidate_input_shapes(net, resolution, in_channels)
    try:
        calls, owners = [], []
        for l, per_cand in enumerate(net.candidate_modules()):
            for k, per_inst in enumerate(per_cand):
                for i, m in enumerate(per_inst):
                    x = torch.zeros(batch_size, *shapes[(l, i)], device=device, dtype=dtype)
                    calls.append(_eval_call(m, x))
                    owners.append((l, k))
        timed = time_calls(calls, device, warmup, repeats)
        layer_ms = [[0.0] * len(c) for c in net.layer_candidates()]
        for (l, k), ms in zip(owners, timed):
            layer_ms[l][k] += ms
        if progress is not None:
            for l, row in enumerate(layer_ms):
                progress(f"layer {l + 1}/{net.num_layers}: " + " ".join(f"{v:.3f}" for v in row) + " ms")
        table = LatencyTable(layer_ms, 0.0, resolution, in_channels, batch_size, str(device),
                             space=net.space_name, candidates=[list(c) for c in net.layer_candidates()],
                             space_kwargs=plain_space_kwargs(net),
                             active_layers=net.active_layers)
        rng = np.random.default_rng(seed)
        archs = [net.random_arch(rng) for _ in range(calibration_archs)]
        measured = networks_latency_ms([standalone_network(net, a) for a in archs],
                                       (in_channels, resolution, resolution), batch_size, warmup, repeats)
        table.fixed_ms = float(statistics.median(m - table.latency_ms(a) for a, m in zip(archs, measured)))
    finally:
        net.train(was_training)
    table.meta = {"warmup": warmup, "repeats": repeats, "statistic": "median",
                  "calibration_archs": calibration_archs, "seed": seed,
                  "threads": torch.get_num_threads() if device.type == "cpu" else None,
                  "device_name": _device_name(device), "torch": torch.__version__,
                  "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    return table


def evaluate_latency_table(net, table: LatencyTable, num_archs: int = 50, seed: int = 1,
                           warmup: int = 10, repeats: int = 30) -> dict:
    """Measure ``num_archs`` random stand-alone networks end to end and compare with the table's
    predictions: Pearson and Spearman correlation, Kendall's tau, mean absolute and mean relative
    error, and every (arch, predicted, measured) row."""
    from scipy.stats import kendalltau, pearsonr, spearmanr
    rng = np.random.default_rng(seed)
    shape = (table.in_channels, table.resolution, table.resolution)
    archs = [net.random_arch(rng) for _ in range(num_archs)]
    measured = networks_latency_ms([standalone_network(net, a) for a in archs], shape, table.batch_size,
                                   warmup, repeats)
    rows = [{"arch": net.arch_to_str(a), "predicted_ms": table.latency_ms(a), "measured_ms": m}
            for a, m in zip(archs, measured)]
    pred = np.array([r["predicted_ms"] for r in rows])
    meas = np.array([r["measured_ms"] for r in rows])
    err = pred - meas
    return {"num_archs": num_archs, "seed": seed, "batch_size": table.batch_size,
            "device": table.device, "resolution": table.resolution,
            "pearson": float(pearsonr(pred, meas)[0]), "spearman": float(spearmanr(pred, meas)[0]),
            "kendall_tau": float(kendalltau(pred, meas)[0]),
            "mean_abs_error_ms": float(np.abs(err).mean()), "mean_error_ms": float(err.mean()),
            "mean_rel_error": float(np.mean(np.abs(err) / meas)),
            "measured_ms_range": [float(meas.min()), float(meas.max())], "rows": rows}


__all__ = ["FORMAT", "LatencyTable", "build_latency_table", "evaluate_latency_table", "load_latency_table",
           "networks_latency_ms", "standalone_network", "time_calls"]
