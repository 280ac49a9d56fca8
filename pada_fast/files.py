"""Atomic file writes: a temporary file in the target's folder, renamed over the target, so a
crash or a kill leaves either the old file or the new one, never half of one. ``durable=True``
also fsyncs the file and its folder, so the rename survives a power cut (checkpoints)."""
from __future__ import annotations

import json
import os
import tempfile
from typing import IO, Callable


def _fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:         # e.g. platforms that cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: str | os.PathLike, write: Callable[[IO], object], newline: str | None = None,
                 binary: bool = False, durable: bool = False) -> None:
    """Call ``write(handle)`` on a temporary file (text, or bytes with ``binary``) named
    ``<name>.<random>.tmp`` beside ``path``, then rename it over ``path``. On any failure the
    temporary file is removed and the error propagates; ``path`` is untouched."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        with (os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", newline=newline)) as handle:
            write(handle)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    if durable:
        _fsync_dir(folder)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_atomic(path, lambda handle: handle.write(text))


def write_json_atomic(path: str | os.PathLike, data, indent: int | None = 1) -> None:
    def dump(handle):
        json.dump(data, handle, indent=indent)
        handle.write("\n")
    write_atomic(path, dump)


__all__ = ["write_atomic", "write_json_atomic", "write_text_atomic"]
