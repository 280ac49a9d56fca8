"""Atomic file writes: a temporary file in the target's folder, renamed over the target, so a
crash or a kill leaves either the old file or the new one, never half of one."""
from __future__ import annotations

import json
import os
import tempfile
from typing import Callable, TextIO


def write_atomic(path: str | os.PathLike, write: Callable[[TextIO], object], newline: str | None = None) -> None:
    """Call ``write(handle)`` on a temporary text file, then rename it over ``path``. On any
    failure the temporary file is removed and the error propagates; ``path`` is untouched."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle = tempfile.NamedTemporaryFile("w", dir=folder, suffix=".tmp", delete=False, newline=newline)
    try:
        with handle:
            write(handle)
        os.replace(handle.name, path)
    except BaseException:
        if os.path.exists(handle.name):
            os.unlink(handle.name)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_atomic(path, lambda handle: handle.write(text))


def write_json_atomic(path: str | os.PathLike, data, indent: int | None = 1) -> None:
    def dump(handle):
        json.dump(data, handle, indent=indent)
        handle.write("\n")
    write_atomic(path, dump)


__all__ = ["write_atomic", "write_json_atomic", "write_text_atomic"]
