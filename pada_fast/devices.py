"""Which device a single process computes on."""
from __future__ import annotations

import torch


def resolve_device(name: str) -> torch.device:
    """``run.device`` for a single process: ``auto`` is the GPU when one is visible."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"run.device={name} but no CUDA GPU is visible; use run.device=cpu")
    return device


__all__ = ["resolve_device"]
