"""Capture and restore every global random generator a training step may draw from, so a resumed
run (or a measurement that must not disturb training) continues exactly where it was."""
from __future__ import annotations

import random

import numpy as np
import torch


def capture_rng_state(only: torch.device | None = None) -> dict:
    """torch (CPU and CUDA), numpy, Python's ``random``. (The epoch's paths and stream do not use
    them: they come from ``epoch_generator(seed, epoch)``; augmentation is seeded per stream
    position.) ``only``: this process's device alone (a torchrun rank: reading every GPU's
    generator would open a context on each; a CPU device stores none). Otherwise every GPU's, once
    CUDA is initialised: before that no CUDA generator has drawn."""
    if only is not None:
        cuda = [torch.cuda.get_rng_state(only)] if only.type == "cuda" else None
    elif torch.cuda.is_available() and torch.cuda.is_initialized():
        cuda = torch.cuda.get_rng_state_all()
    else:
        cuda = None
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "cuda": cuda}


def restore_rng_state(rng: dict, only: torch.device | None = None) -> None:
    """Undo :func:`capture_rng_state` (``only`` as there). CUDA states are restored when this
    machine has as many devices (a checkpoint written on a GPU machine still resumes on the CPU)."""
    torch.set_rng_state(rng["torch"])
    np.random.set_state(rng["numpy"])
    random.setstate(rng["python"])
    cuda = rng.get("cuda")
    if cuda is None or not torch.cuda.is_available():
        return
    if only is not None:
        if only.type == "cuda":
            torch.cuda.set_rng_state(cuda[0], only)
    elif len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def seed_everything(seed: int) -> None:
    """Seed torch, numpy and Python's ``random`` from one run seed."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


__all__ = ["capture_rng_state", "restore_rng_state", "seed_everything"]
