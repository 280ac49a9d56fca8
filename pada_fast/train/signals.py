"""Graceful stop: SIGTERM or SIGINT finishes the current step, writes a checkpoint, and exits.

:class:`GracefulStop` is a context manager that, while active, replaces the SIGTERM and SIGINT
handlers with one that only sets a flag; the training loop checks :attr:`GracefulStop.requested`
after each step, writes a checkpoint and leaves. A second SIGINT (Ctrl-C twice) raises
KeyboardInterrupt at once, for when the step or the checkpoint write hangs. The previous handlers
come back on exit. Outside the main thread (where Python cannot install handlers) it installs
nothing and only :meth:`GracefulStop.request` sets the flag.

Under torch.distributed each rank gets the signal at a slightly different step (torchrun
forwards it to every worker), so ranks must agree on when to stop:
:meth:`GracefulStop.requested_on_any_rank` all-reduces the flag. That is a collective (and, on
CUDA, a host-device synchronisation), so a GPU trainer calls it at its checkpoint or log
cadence rather than every step; every rank must call it at the same steps.

Trainer use::

    with GracefulStop() as stop:
        for step ...:
            ...train one step...
            if stop.requested_on_any_rank():    # or stop.requested, single process
                manager.save(state_at_this_step)
                log(stop.message(step))
                return stop.exit_code            # 128 + signal number, as a shell reports it
"""
from __future__ import annotations

import signal
import threading
from typing import Callable, Iterable

from pada_fast.log import STDERR, get_logger

_log = get_logger(__name__)


def _stderr(message: str) -> None:
    _log.info(message, extra=STDERR)


class GracefulStop:
    def __init__(self, signals: Iterable[int] = (signal.SIGTERM, signal.SIGINT),
                 log: Callable[[str], None] = _stderr):
        self.signals = tuple(signals)
        self.log = log
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    # -- context ---------------------------------------------------------------------------------
    def __enter__(self) -> "GracefulStop":
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum, frame) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            self.log("second interrupt: stopping now, without a checkpoint")
            raise KeyboardInterrupt
        if self.signum is None:
            self.signum = signum
            self.log(f"received {self.signal_name}: finishing the current step, writing a checkpoint, "
                     "then exiting (press Ctrl-C again to stop at once)")

    # -- queries ---------------------------------------------------------------------------------
    def request(self, signum: int = signal.SIGTERM) -> None:
        """Ask for a stop as if ``signum`` had arrived (tests, or code that wants to stop)."""
        if self.signum is None:
            self.signum = int(signum)

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def signal_name(self) -> str:
        if self.signum is None:
            return ""
        try:
            return signal.Signals(self.signum).name
        except ValueError:
            return f"signal {self.signum}"

    @property
    def exit_code(self) -> int:
        """128 + the signal's number (130 for SIGINT, 143 for SIGTERM), 0 if none arrived."""
        return 0 if self.signum is None else 128 + self.signum

    def requested_on_any_rank(self, group=None, device: str | None = None) -> bool:
        """``requested`` on any rank of ``group`` (all-reduce max); plain ``requested`` without
        an initialised process group. ``device``: where the flag tensor lives (default: CUDA for
        NCCL, CPU otherwise). Every rank must call this at the same steps."""
        import torch
        import torch.distributed as dist
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size(group) == 1:
            return self.requested
        if device is None:
            device = "cuda" if dist.get_backend(group) == "nccl" else "cpu"
        flag = torch.tensor([1 if self.requested else 0], dtype=torch.int32, device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=group)
        stop = bool(flag.item())
        if stop and self.signum is None:
            self.signum = int(signal.SIGTERM)       # another rank got it; stop the same way
        return stop

    def message(self, where: str = "") -> str:
        at = f" {where}" if where else ""
        return (f"stopped by {self.signal_name}{at} after writing a checkpoint; continue with "
                "`pada-fast train ... --resume`")
