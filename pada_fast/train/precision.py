"""The step's numeric format (docs/method.md, "GPU throughput"): weights' dtype, the forward pass's
autocast (``run.precision``), fp16's gradient scaler, the memory format and cuDNN autotuning.

A :class:`Precision` wraps the parts of a step that depend on them: ``with precision.autocast()``
around the forward pass, ``precision.backward(loss)`` (scaled under fp16),
``precision.unscale(optimizer)`` before clipping (returns the scaler's overflow flag, which feeds
the non-finite guard) and ``precision.update()`` after the optimiser step. ``run.channels_last``
and ``run.cudnn_benchmark`` left null are on for CUDA runs and off on the CPU; the values used are
written back into the config, so the saved config records them.
"""
from __future__ import annotations

import torch

from pada_fast.errors import ConfigError

from .nonfinite import scaler_found_inf

AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class Precision:
    def __init__(self, run_cfg, device: torch.device):
        r = run_cfg
        self.device = device
        self.dtype = getattr(torch, r.dtype)
        if r.precision != "fp32" and self.dtype != torch.float32:
            raise ConfigError(f"run.precision={r.precision} autocasts a float32 model; run.dtype={r.dtype} "
                              "asks for another: set run.precision=fp32 or run.dtype=float32")
        cuda = device.type == "cuda"
        if r.channels_last is None:
            r.channels_last = cuda
        if r.cudnn_benchmark is None:
            r.cudnn_benchmark = cuda
        if cuda:
            torch.backends.cudnn.benchmark = r.cudnn_benchmark
        self.memory_format = torch.channels_last if r.channels_last else torch.contiguous_format
        self.autocast_dtype = AUTOCAST_DTYPES[r.precision]
        self.scaler = torch.amp.GradScaler(device.type) if r.precision == "fp16" else None

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        """``model`` in the weights' dtype and memory format."""
        if self.dtype != torch.float32:
            model.to(self.dtype)
        if self.memory_format == torch.channels_last:
            model.to(memory_format=torch.channels_last)
        return model

    def autocast(self):
        """The forward pass's autocast context; a no-op for fp32."""
        if self.autocast_dtype is None:
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (loss if self.scaler is None else self.scaler.scale(loss)).backward()

    def unscale(self, optimizer) -> torch.Tensor | None:
        """True gradients before clipping and PA's record; the scaler's overflow flag (fp16)."""
        if self.scaler is None:
            return None
        self.scaler.unscale_(optimizer)
        return scaler_found_inf(self.scaler, optimizer)

    def update(self) -> None:
        """After the optimiser step: the scaler lowers its scale after an overflow (on the device)."""
        if self.scaler is not None:
            self.scaler.update()

    def state_dict(self) -> dict | None:
        return None if self.scaler is None else self.scaler.state_dict()

    def load_state_dict(self, state: dict | None) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)


__all__ = ["AUTOCAST_DTYPES", "Precision"]
