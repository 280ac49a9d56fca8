"""Progress of a long evaluation: a bar with an ETA on a terminal, a plain line every
``interval_s`` seconds otherwise (logs and ``nohup`` runs)."""
from __future__ import annotations

import sys
import time

from pada_fast.log import STDERR, get_logger

_log = get_logger(__name__)


class Progress:
    def __init__(self, total: int, desc: str, done: int = 0, bar: bool | None = None,
                 interval_s: float = 30.0):
        self.total, self.desc, self.done = total, desc, done
        self.start_done = done
        self.interval_s = interval_s
        self.started = self.last = time.perf_counter()
        self.bar = None
        if bar if bar is not None else sys.stderr.isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=total, initial=done, desc=desc, leave=False)

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.perf_counter()
        if now - self.last >= self.interval_s:
            self.last = now
            _log.info(self.line(now), extra=STDERR)

    def rate(self, now: float | None = None) -> float:
        elapsed = (now or time.perf_counter()) - self.started
        return (self.done - self.start_done) / elapsed if elapsed > 0 else 0.0

    def line(self, now: float | None = None) -> str:
        rate = self.rate(now)
        left = (self.total - self.done) / rate if rate > 0 else float("nan")
        return (f"{self.desc}: {self.done}/{self.total} ({rate:.2f}/s, ETA "
                f"{_duration(left)})")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _duration(seconds: float) -> str:
    if seconds != seconds:
        return "?"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"
