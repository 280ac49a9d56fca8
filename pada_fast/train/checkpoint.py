"""Checkpoint files: written atomically (temporary file, fsync, rename), so a crash mid-write
never replaces a good checkpoint with a truncated one."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

FORMAT_VERSION = 1


def save_atomic(state: dict, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format_version": FORMAT_VERSION, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load(path: str | Path, map_location="cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:
        raise ValueError(f"checkpoint {path} cannot be read ({type(exc).__name__}: {exc}); it may be "
                         "truncated or not a pada_fast checkpoint") from None
    version = state.get("format_version") if isinstance(state, dict) else None
    if version != FORMAT_VERSION:
        raise ValueError(f"checkpoint {path} has format version {version!r}; this pada_fast reads "
                         f"version {FORMAT_VERSION}")
    return state
