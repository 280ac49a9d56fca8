"""Test hooks that make a training process fail at a chosen step, to exercise failure handling.

``PADA_FAST_FAULT_STEP=k`` (global step, 0-based) with ``PADA_FAST_FAULT_RANK=r`` (default 0)
makes rank r raise at the start of step k. ``PADA_FAST_FAULT_MODE`` picks another fault:
``hang`` stops responding (to exercise the collective timeout), ``sigterm`` sends SIGTERM to the
process (a graceful stop), ``sigstop`` freezes the process (SIGSTOP) so that a test can SIGKILL
the whole job at exactly that step, launcher and every rank at once, like a lost machine. Also
works in a single process (rank 0). The trainer runs it as a hook
(:class:`~pada_fast.train.hooks.FaultInjectionHook`) only when the variable is set.
"""
from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import dataclass
from typing import Optional

from pada_fast.log import get_logger

_log = get_logger(__name__)


@dataclass(frozen=True)
class Fault:
    rank: int
    step: int
    mode: str = "raise"


FAULT_MODES = ("raise", "hang", "sigterm", "sigstop")


def fault_from_env() -> Optional[Fault]:
    """The test hook ``PADA_FAST_FAULT_STEP``/``_RANK``/``_MODE`` (see the module docstring)."""
    step = os.environ.get("PADA_FAST_FAULT_STEP")
    if not step:
        return None
    mode = os.environ.get("PADA_FAST_FAULT_MODE", "raise")
    if mode not in FAULT_MODES:
        raise ValueError(f"PADA_FAST_FAULT_MODE must be one of {', '.join(FAULT_MODES)}, got {mode!r}")
    return Fault(int(os.environ.get("PADA_FAST_FAULT_RANK", "0")), int(step), mode)


def inject_fault(fault: Fault, rank: int, global_step: int) -> None:
    if fault.rank != rank or fault.step != global_step:
        return
    if fault.mode == "hang":
        _log.warning(f"pada-fast: rank {rank} hangs at step {global_step} (PADA_FAST_FAULT_MODE=hang test hook)")
        while True:
            time.sleep(60)
    if fault.mode == "sigterm":
        os.kill(os.getpid(), signal.SIGTERM)
        return
    if fault.mode == "sigstop":
        _log.warning(f"pada-fast: rank {rank} stops at step {global_step} (PADA_FAST_FAULT_MODE=sigstop test hook)")
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGSTOP)
        return
    raise RuntimeError(f"injected fault on rank {rank} at step {global_step} "
                       "(PADA_FAST_FAULT_RANK/PADA_FAST_FAULT_STEP test hook)")
