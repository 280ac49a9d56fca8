"""Stand-alone files of a network, each read back and checked against the network it came from.

* ``onnx``: ``torch.onnx.export`` (the TorchScript-based exporter, opset 17), input ``images``,
  output ``logits``; the batch dimension is dynamic unless the network normalises with
  batch-statistics BatchNorm (then the file takes exactly the batch it was exported with). Checked
  with onnxruntime when it is installed;
* ``torchscript``: ``torch.jit.trace`` in eval mode, loadable with ``torch.jit.load`` without
  pada_fast;
* ``state_dict``: ``{"format": "pada_fast.weights/1", "spec": <architecture file>, "builder":
  <how to construct the network>, "state_dict": ...}`` (``torch.save``);
  :func:`load_state_dict_export` rebuilds the network.

Next to the file, ``<file>.json`` records the architecture, where the weights came from, the
input shape, and the largest absolute differences found.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from pada_fast.files import write_json_atomic
from pada_fast.spaces import build_network

FORMATS = ("onnx", "torchscript", "state_dict")
WEIGHTS_FORMAT = "pada_fast.weights/1"
ONNX_OPSET = 17


class ExportMismatch(RuntimeError):
    """The written file does not reproduce the network's outputs within the tolerance."""


def has_batch_stat_bn(network: nn.Module) -> bool:
    return any(isinstance(m, _BatchNorm) and not m.track_running_stats for m in network.modules())


def _write_onnx(network: nn.Module, x: torch.Tensor, path: Path, dynamic_batch: bool) -> None:
    axes = {"images": {0: "batch"}, "logits": {0: "batch"}} if dynamic_batch else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(network, (x,), str(path), dynamo=False, input_names=["images"],
                              output_names=["logits"], dynamic_axes=axes, opset_version=ONNX_OPSET)
        except ModuleNotFoundError as exc:
            raise RuntimeError(f"--format onnx needs {exc.name}: pip install 'pada_fast[export]' "
                               "(or use --format torchscript)") from None


def _run_onnx(path: Path, x: torch.Tensor) -> torch.Tensor | None:
    try:
        import onnxruntime
    except ImportError:
        return None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {"images": x.numpy()})[0])


def load_state_dict_export(path: str | Path) -> nn.Module:
    """The network of a ``state_dict`` export, with its weights, in eval mode."""
    saved = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(saved, dict) or saved.get("format") != WEIGHTS_FORMAT:
        raise ValueError(f"{path} is not a pada_fast state-dict export (format {WEIGHTS_FORMAT})")
    network = build_from(saved["builder"])
    network.load_state_dict(saved["state_dict"])
    return network.eval()


def build_from(builder: dict) -> nn.Module:
    """A network from an export's ``builder``: ``{"space", "kwargs"}`` (the space's registered
    stand-alone network) or ``{"space", "network", "kwargs"}`` (one of the space's other registered
    network classes, e.g. DARTS' single-path network)."""
    return build_network(builder["space"], builder.get("network"), **builder["kwargs"])


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max())


@torch.no_grad()
def export_network(source, path: str | Path, fmt: str, batch_size: int = 2, atol: float = 1e-4,
                   seed: int = 0) -> dict:
    """Write ``source.network`` (an :class:`~pada_fast.deploy.weights.ExportSource`) to ``path``
    in format ``fmt``, read it back, and compare its outputs on a seeded random batch with the
    network's and the reference's (the supernet's path, for inherited weights). Raises
    :class:`ExportMismatch` when a difference exceeds ``atol`` (relative to the logits' scale,
    ``atol * max(1, max |logit|)``). Returns the record written to ``<path>.json``."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    network = source.network.cpu().eval()
    x = torch.randn(batch_size, *source.input_shape, generator=torch.Generator().manual_seed(seed))
    expected = network(x)
    reference = source.reference(x)
    scale = max(1.0, float(expected.abs().max()))
    record = {"format": fmt, "file": str(path), "space": source.spec.get("space"), "arch": source.spec.get("arch"),
              "weights": source.weights, "input_shape": [batch_size, *source.input_shape],
              "diff_network_vs_reference": _max_diff(expected, reference), "atol": atol}
    dynamic = not has_batch_stat_bn(network)
    if fmt == "onnx":
        _write_onnx(network, x, path, dynamic)
        record.update(opset=ONNX_OPSET, dynamic_batch=dynamic, input_name="images", output_name="logits")
        got = _run_onnx(path, x)
        record["checked_with"] = "onnxruntime" if got is not None else None
    elif fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(network, x, check_trace=False)
        traced.save(str(path))
        got = torch.jit.load(str(path))(x)
        record["checked_with"] = "torch.jit.load"
    else:
        torch.save({"format": WEIGHTS_FORMAT, "spec": source.spec, "builder": source.builder,
                    "state_dict": network.state_dict()}, path)
        got = load_state_dict_export(path)(x)
        record["checked_with"] = "load_state_dict_export"
    if got is not None:
        record["diff_file_vs_network"] = _max_diff(got, expected)
        record["diff_file_vs_reference"] = _max_diff(got, reference)
    write_json_atomic(Path(f"{path}.json"), record, indent=2)
    worst = max(v for k, v in record.items() if k.startswith("diff_"))
    if worst > atol * scale:
        raise ExportMismatch(f"the exported {fmt} file's outputs differ from the network's by {worst:.3g} "
                             f"(tolerance {atol * scale:.3g}); details in {path}.json")
    return record


__all__ = ["ExportMismatch", "FORMATS", "WEIGHTS_FORMAT", "build_from", "export_network", "has_batch_stat_bn",
           "load_state_dict_export"]
