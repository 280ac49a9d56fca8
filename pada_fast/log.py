"""pada_fast's output: one ``logging`` logger tree under ``pada_fast``, one format (the message
alone, as the documented commands show it). Information goes to standard output, warnings and
errors to standard error, each line flushed; ``extra=STDERR`` sends an information line (a
progress report, a note beside the results) to standard error too. Under torch.distributed only rank 0 logs
information (:func:`set_rank`); every rank reports its own warnings and failures.

An application that configures ``logging`` itself can take over: :func:`get_logger` installs
pada_fast's handlers only while the ``pada_fast`` logger has none.
"""
from __future__ import annotations

import logging
import sys

ROOT = "pada_fast"
STDERR = {"to_stderr": True}


class _CurrentStream(logging.StreamHandler):
    """Writes to ``sys.stdout``/``sys.stderr`` as they are at each record (a redirect or pytest's
    capture made after import still sees the output)."""

    def __init__(self, name: str, accept):
        super().__init__()
        self._name = name
        self.addFilter(accept)

    @property
    def stream(self):
        return getattr(sys, self._name)

    def format(self, record) -> str:
        # a file name that is not valid UTF-8 carries surrogates: print them escaped, not fail
        return printable(super().format(record))

    @stream.setter
    def stream(self, value):     # StreamHandler.__init__ assigns one; the property decides
        pass


def printable(text: str) -> str:
    """``text`` with the bytes of a file name that is not valid UTF-8 (kept by ``os.listdir`` as
    surrogates) shown as ``\\xNN`` escapes, so that it can be printed and written as UTF-8."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _configure(root: logging.Logger) -> None:
    formatter = logging.Formatter("%(message)s")
    def to_stderr(record):
        return record.levelno >= logging.WARNING or getattr(record, "to_stderr", False)

    for name, accept in (("stdout", lambda record: not to_stderr(record)), ("stderr", to_stderr)):
        handler = _CurrentStream(name, accept)
        handler.setFormatter(formatter)
        root.addHandler(handler)
    root.setLevel(logging.INFO)
    root.propagate = False


def get_logger(name: str) -> logging.Logger:
    """The logger ``pada_fast.<name>`` (``name`` usually a module's ``__name__``)."""
    root = logging.getLogger(ROOT)
    if not root.handlers:
        _configure(root)
    if name == ROOT or name.startswith(ROOT + "."):
        return logging.getLogger(name)
    return logging.getLogger(f"{ROOT}.{name}")


def set_rank(rank: int) -> None:
    """Only rank 0 logs information; other ranks keep warnings and errors."""
    get_logger(ROOT).setLevel(logging.INFO if rank == 0 else logging.WARNING)


__all__ = ["STDERR", "get_logger", "printable", "set_rank"]
