"""Training logs: one line per interval (or a progress bar on a terminal), per-epoch CSV and JSON
lines, optional TensorBoard. Only the process that owns the run (rank 0) logs."""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

from pada_fast.files import write_atomic, write_text_atomic
from pada_fast.log import get_logger

_log = get_logger(__name__)


class EpochLog:
    """Appends one row per epoch to ``metrics.csv`` and ``metrics.jsonl`` under ``out_dir``."""

    def __init__(self, out_dir: Path, tensorboard: bool = False):
        self.csv_path = out_dir / "metrics.csv"
        self.jsonl_path = out_dir / "metrics.jsonl"
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.writer = SummaryWriter(str(out_dir / "tensorboard"))
            except ImportError:
                _log.warning("run.tensorboard=true but tensorboard is not installed (pip install tensorboard); "
                             "continuing without it")

    def truncate_after(self, epoch: int) -> None:
        """On resume, drop rows of epochs that the checkpoint does not include."""
        if not self.jsonl_path.exists():
            return
        rows = [json.loads(line) for line in self.jsonl_path.read_text().splitlines() if line.strip()]
        rows = [r for r in rows if r["epoch"] < epoch]
        write_text_atomic(self.jsonl_path, "".join(json.dumps(r) + "\n" for r in rows))
        self._rewrite_csv(rows)

    def _rewrite_csv(self, rows: list[dict]) -> None:
        if not rows:
            self.csv_path.unlink(missing_ok=True)
            return
        flat = [self._flat(r) for r in rows]

        def write(f):
            w = csv.DictWriter(f, fieldnames=list(flat[0]))
            w.writeheader()
            w.writerows(flat)
        write_atomic(self.csv_path, write, newline="")

    @staticmethod
    def _flat(row: dict) -> dict:
        return {k: (json.dumps(v) if isinstance(v, (list, dict)) else v) for k, v in row.items()}

    def append(self, row: dict) -> None:
        with self.jsonl_path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        flat = self._flat(row)
        new = not self.csv_path.exists()
        with self.csv_path.open("a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(flat))
            if new:
                w.writeheader()
            w.writerow(flat)
        if self.writer is not None:
            for key, value in row.items():
                if isinstance(value, (int, float)) and key != "epoch":
                    self.writer.add_scalar(key, value, row["epoch"])
            self.writer.flush()


def use_progress_bar(mode: str) -> bool:
    return mode == "bar" or (mode == "auto" and sys.stderr.isatty())
