"""What evolution and random search share: evaluation records, the resumable state file, the
outputs and progress reporting.

Outputs in ``out_dir`` (rewritten after every generation or round, each atomically):

* ``search_state.json`` — settings, every evaluation record and the RNG state after the last
  finished step; ``resume=True`` continues from it and reaches exactly the result of an
  uninterrupted run (the fitness must be deterministic). Settings must match, except the number
  of generations/rounds: raising it extends a finished search;
* ``history.jsonl`` — one record per evaluated architecture: ``index, step, origin, arch, genes,
  fitness, macs, params``, ``latency_ms`` when a latency table is given and ``true_accuracy``
  when a ground truth is known;
* ``best.json`` — the best architecture (the caller's ``export`` may turn it into an architecture
  file, see :mod:`.export`), ``top.json`` — the best ``top_k`` records;
* ``search.png`` — fitness vs MACs of every evaluation, coloured by generation/round (redrawn
  at the end, and at most once a minute during the search).
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from pada_fast.files import write_atomic, write_json_atomic
from pada_fast.log import get_logger

from .budget import Budget
from .operators import arch_key
from .plots import search_plot

Arch = tuple[int, ...]
STATE_FILE = "search_state.json"
PLOT_INTERVAL = 60.0
EXTENDABLE = ("generations", "rounds")


@dataclass
class SearchResult:
    best: dict
    top: list[dict]
    records: list[dict]
    out_dir: str | None = None
    files: dict = field(default_factory=dict)

    @property
    def best_arch(self) -> Arch:
        return tuple(self.best["genes"])

    @property
    def evaluations(self) -> int:
        return len(self.records)


def ranked(records: Sequence[dict]) -> list[dict]:
    """Highest fitness first; ties go to the earlier evaluation."""
    return sorted(records, key=lambda r: (-r["fitness"], r["index"]))


class SearchRun:
    """One search's bookkeeping; the algorithms drive it step by step."""

    def __init__(self, algorithm: str, settings: dict, space, fitness: Callable[[Arch], float],
                 budget: Budget | None, seed: int, out_dir=None, resume: bool = False,
                 progress: bool | None = None, true_accuracy: Callable[[Arch], float | None] | None = None,
                 export: Callable[[Arch, dict], dict] | None = None, top_k: int = 10,
                 total_steps: int = 1, step_name: str = "generation", log=None):
        self.algorithm = algorithm
        self.space = space
        self.fitness = fitness
        self.budget = budget or Budget()
        self.true_accuracy = true_accuracy
        self.export = export
        self.top_k = top_k
        self.total_steps = total_steps
        self.step_name = step_name
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.log = log or get_logger(__name__).info
        self.settings = {"algorithm": algorithm, **settings, "seed": seed,
                         "budget": self.budget.to_dict(),
                         "space": getattr(space, "space_name", type(space).__name__),
                         "layers": [len(c) for c in space.layer_candidates()]}
        self.records: list[dict] = []
        self.seen: set[str] = set()
        self.rng = np.random.default_rng(seed)
        self.next_step = 0
        self.started = time.perf_counter()
        self._last_plot = self.started
        if resume:
            self._load()
        self.bar = None
        if progress is None:
            progress = sys.stderr.isatty()
        self.progress = progress

    # -- state -----------------------------------------------------------------------------------
    def _state_path(self) -> Path | None:
        return None if self.out_dir is None else self.out_dir / STATE_FILE

    def _load(self) -> None:
        path = self._state_path()
        if path is None:
            raise ValueError("resume=True needs out_dir (where search_state.json lives)")
        if not path.exists():
            raise FileNotFoundError(f"cannot resume: {path} does not exist; start without resume")
        state = json.loads(path.read_text())
        saved = state["settings"]
        now = json.loads(json.dumps(self.settings))
        # The length of the search may change: more generations/rounds extend a finished run.
        diff = sorted(k for k in set(saved) | set(now)
                      if k not in EXTENDABLE and saved.get(k) != now.get(k))
        if diff:
            raise ValueError(f"cannot resume {path}: it was started with different settings: "
                             + ", ".join(f"{k}={saved.get(k)!r} (now {self.settings.get(k)!r})"
                                         for k in diff))
        self.records = state["records"]
        self.seen = {arch_key(self.space, r["genes"]) for r in self.records}
        self.rng.bit_generator.state = state["rng"]
        self.next_step = min(int(state["next_step"]), self.total_steps)
        self.log(f"resumed {self.algorithm} from {path}: {self.next_step}/{self.total_steps} "
                 f"{self.step_name}s done, {len(self.records)} evaluations")

    def save(self) -> None:
        if self.out_dir is None:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self._state_path(), {
            "settings": self.settings, "next_step": self.next_step,
            "rng": self.rng.bit_generator.state, "records": self.records}, indent=None)
        self._write_outputs()

    # -- evaluation ------------------------------------------------------------------------------
    def key(self, arch: Arch) -> str:
        return arch_key(self.space, arch)

    def is_new(self, arch: Arch) -> bool:
        return self.key(arch) not in self.seen

    def evaluate(self, arch: Arch, step: int, origin: str) -> dict:
        arch = tuple(int(g) for g in arch)
        self.seen.add(arch_key(self.space, arch))
        macs, params = self.budget.cost(arch)
        record = {"index": len(self.records), "step": step, "origin": origin,
                  "arch": self.space.arch_to_str(arch), "genes": list(arch),
                  "fitness": float(self.fitness(arch)), "macs": macs, "params": params}
        if self.budget.latency is not None:
            record["latency_ms"] = self.budget.latency_ms(arch)
        if self.true_accuracy is not None:
            record["true_accuracy"] = self.true_accuracy(arch)
        self.records.append(record)
        if self.bar is not None:
            self.bar.update(1)
        return record

    def top(self, k: int | None = None) -> list[dict]:
        return ranked(self.records)[: (k or self.top_k)]

    # -- progress --------------------------------------------------------------------------------
    def begin_step(self, step: int, count: int) -> None:
        if self.progress:
            from tqdm import tqdm
            self.bar = tqdm(total=count, desc=f"{self.step_name} {step + 1}/{self.total_steps}",
                            leave=False)

    def end_step(self, step: int) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        self.next_step = step + 1
        self.save()
        best = self.top(1)[0]
        cost = "" if best["macs"] is None else f" MACs {best['macs'] / 1e6:.2f}M"
        if best.get("latency_ms") is not None:
            cost += f" latency {best['latency_ms']:.3f} ms"
        true = ("" if best.get("true_accuracy") is None
                else f" (true {best['true_accuracy']:.2f})")
        step_fit = [r["fitness"] for r in self.records if r["step"] == step]
        self.log(f"{self.step_name} {step + 1}/{self.total_steps}: best fitness {best['fitness']:.3f}"
                 f"{true}{cost}; this {self.step_name} mean {np.mean(step_fit):.3f} max "
                 f"{np.max(step_fit):.3f}; {len(self.records)} evaluations, "
                 f"{time.perf_counter() - self.started:.0f}s")

    # -- outputs ---------------------------------------------------------------------------------
    def _write_outputs(self, final: bool = False) -> dict:
        files = {}
        if self.out_dir is None or not self.records:
            return files
        out = self.out_dir
        write_atomic(out / "history.jsonl", lambda f: f.writelines(json.dumps(r) + "\n" for r in self.records))
        files["history"] = str(out / "history.jsonl")
        top = self.top()
        write_json_atomic(out / "top.json", top, indent=1)
        files["top"] = str(out / "top.json")
        best = top[0]
        best_doc = self.export(tuple(best["genes"]), best) if self.export else dict(best)
        write_json_atomic(out / "best.json", best_doc, indent=2)
        files["best"] = str(out / "best.json")
        # The figure is redrawn at the end and at most every PLOT_INTERVAL seconds before.
        if final or time.perf_counter() - self._last_plot >= PLOT_INTERVAL:
            try:
                files["plot"] = search_plot(self.records, out / "search.png",
                                            step_name=self.step_name, max_macs=self.budget.max_macs,
                                            title=f"{self.algorithm} on {self.settings['space']}")
                self._last_plot = time.perf_counter()
            except ImportError:   # matplotlib missing: everything else is written
                pass
        return files

    def result(self) -> SearchResult:
        files = self._write_outputs(final=True)
        if not self.records:
            raise RuntimeError("the search evaluated no architecture")
        return SearchResult(best=self.top(1)[0], top=self.top(), records=list(self.records),
                            out_dir=None if self.out_dir is None else str(self.out_dir), files=files)


__all__ = ["STATE_FILE", "SearchResult", "SearchRun", "ranked"]
