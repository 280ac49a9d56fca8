"""A training run owns its ``run.out_dir``: one process at a time, and never a silent overwrite.

* :class:`RunLock` takes an exclusive ``flock`` on ``<out_dir>/.lock`` for the run's lifetime. The
  kernel drops the lock when the process ends, however it ends (SIGKILL included), so a lock left
  behind by a killed run is never in the way; the file holds the holder's pid, host and start time,
  which the refusal names.
* :func:`prepare_fresh_run` refuses to start a new run (no ``--resume``) in a folder that already
  holds one (its ``config.yaml``, metrics or checkpoints): resume it, or pass ``--overwrite``, which
  moves the old run aside to ``<out_dir>.old-<time>`` (nothing is deleted).
"""
from __future__ import annotations

import datetime
import fcntl
import json
import os
import socket
import weakref
from pathlib import Path

from pada_fast.config import ConfigError
from pada_fast.log import get_logger

_log = get_logger(__name__)

LOCK_NAME = ".lock"
RUN_FILES = ("config.yaml", "metrics.jsonl", "metrics.csv", "checkpoint.pt")


class RunFolderBusy(ConfigError):
    """Another live process trains into this ``run.out_dir``."""


class RunLock:
    """Exclusive ownership of a run folder (``with RunLock(folder): ...`` or ``acquire``/``release``)."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise RunFolderBusy(f"run.out_dir {self.folder} is in use by another run ({holder}); wait for it "
                                "to finish or choose another run.out_dir") from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "since": datetime.datetime.now().isoformat(timespec="seconds")}).encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        info = json.loads(os.read(fd, 4096).decode() or "{}")
        return f"pid {info['pid']} on {info['host']}, since {info['since']}"
    except (OSError, ValueError, KeyError):
        return "a process that has not written its pid yet"


def holds_a_run(folder: Path) -> list[str]:
    """The run files ``folder`` holds (empty: nothing a new run would overwrite)."""
    if not folder.is_dir():
        return []
    found = [name for name in RUN_FILES if (folder / name).exists()]
    found += sorted(p.name for p in folder.glob("checkpoint-e*-s*.pt"))
    return found


def prepare_fresh_run(folder: str | os.PathLike, overwrite: bool = False) -> Path | None:
    """Before a new run (no resume) starts in ``folder``: nothing to do if it holds no run;
    otherwise refuse (:class:`~pada_fast.config.ConfigError`), or with ``overwrite`` move the old
    folder aside and return where it went."""
    folder = Path(folder)
    found = holds_a_run(folder)
    if not found:
        return None
    if not overwrite:
        shown = ", ".join(found[:4]) + (", ..." if len(found) > 4 else "")
        raise ConfigError(f"run.out_dir {folder} already holds a run ({shown}); continue it with --resume, "
                          "or pass --overwrite to move it aside and start a new one")
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    aside = folder.with_name(f"{folder.name}.old-{stamp}")
    n = 1
    while aside.exists():
        aside = folder.with_name(f"{folder.name}.old-{stamp}-{n}")
        n += 1
    folder.rename(aside)
    return aside


def own_run_folder(owner, folder: Path, resume: bool, overwrite: bool) -> RunLock:
    """Lock ``folder`` for ``owner``'s lifetime (released when ``owner`` is freed) and, for a new
    run, make sure it holds no earlier run (moving it aside with ``overwrite``)."""
    lock = RunLock(folder).acquire()
    try:
        moved = None if resume else prepare_fresh_run(folder, overwrite)
    except BaseException:
        lock.release()
        raise
    if moved is not None:           # the lock file went along: take the new folder's
        lock.release()
        lock = RunLock(folder).acquire()
        _log.info(f"--overwrite: {folder} held a run, now at {moved}")
    weakref.finalize(owner, lock.release)
    return lock


__all__ = ["RunFolderBusy", "RunLock", "holds_a_run", "own_run_folder", "prepare_fresh_run"]
