"""Kinds of failure, and the exit code ``pada-fast`` returns for each (listed in the README).

Library code raises the most specific class that applies; the CLI prints one line per failure
(what went wrong, where, what to do: the exception's message) and exits with the code of its
kind. ``--debug`` or ``PADA_FAST_DEBUG=1`` also prints the traceback.
"""
from __future__ import annotations

import errno

from pada_fast.log import printable


class ConfigError(ValueError):
    """A configuration value is unknown, mistyped or out of range; the message names the key."""


class CheckpointError(ValueError):
    """A checkpoint cannot be used; the message says which file and why."""


class CorruptCheckpoint(CheckpointError):
    """The file is truncated, unreadable, or its checksum does not match its payload."""


class IncompatibleCheckpoint(CheckpointError):
    """The file is intact but belongs to another format version, search space or config."""


class DataError(ValueError):
    """A dataset or one of its files is missing, unreadable or not what it should be."""


class GroundTruthError(ValueError):
    """A ground-truth table cannot be read or does not cover what is asked of it."""


class NumericError(RuntimeError):
    """Training produced non-finite numbers past the configured limits."""


class DiskFullError(OSError):
    """A file could not be written: no space left on its device (or a file-size limit)."""


class DistributedError(RuntimeError):
    """A torch.distributed collective or rank failed."""


# kind -> exit code (1: anything else, an internal error)
EXIT_CODES = {"configuration": 2, "data": 3, "checkpoint": 4, "ground truth": 5, "numeric": 6,
              "disk": 7, "distributed": 8}


def is_disk_full(exc: BaseException) -> bool:
    """An OS error for a full device or a file-size limit, or torch's serializer failing on one
    (its message then is ``unexpected pos``, the errno lost)."""
    if isinstance(exc, DiskFullError):
        return True
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        return True
    return isinstance(exc, RuntimeError) and "unexpected pos" in str(exc)


def classify(exc: BaseException) -> tuple[str, int]:
    """``(kind, exit code)`` of a failure."""
    kinds = ((ConfigError, "configuration"), (CheckpointError, "checkpoint"), (GroundTruthError, "ground truth"),
             (NumericError, "numeric"), (DataError, "data"), (DistributedError, "distributed"))
    for cls, kind in kinds:
        if isinstance(exc, cls):
            return kind, EXIT_CODES[kind]
    if is_disk_full(exc):
        return "disk", EXIT_CODES["disk"]
    if type(exc).__module__.startswith("torch.distributed") or "DistBackendError" in type(exc).__name__:
        return "distributed", EXIT_CODES["distributed"]
    if isinstance(exc, (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)):
        return "data", EXIT_CODES["data"]
    return "internal", 1


def one_line(exc: BaseException) -> str:
    """The failure as one line: its message with line breaks folded."""
    text = " ".join(part.strip() for part in str(exc).splitlines() if part.strip())
    return printable(text or type(exc).__name__)


__all__ = ["CheckpointError", "ConfigError", "CorruptCheckpoint", "DataError", "DiskFullError", "DistributedError", "EXIT_CODES", "GroundTruthError", "IncompatibleCheckpoint", "NumericError",
           "classify", "is_disk_full", "one_line"]
