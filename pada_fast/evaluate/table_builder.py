"""``pada-fast build-benchmark``: train sub-models of a space stand-alone and write the ground-truth
table that ``pada-fast rank`` reads (``arch, accuracy, index``; index = position in the space's
``all_archs()`` order, which for NAS-Bench-201 is lexicographic in the genes, not the benchmark's
own order).

Architectures: every one, every functionally distinct one, or a seeded random sample of distinct
ones. Each is trained ``seeds`` times with the run config's data, optimiser and schedule (uniform
shuffled epochs, the fused loss) and its test accuracies are averaged. Resumable: each finished
(architecture, seed) is appended to ``<table>.partial.jsonl`` and skipped when the command runs
again; the table is rewritten after every architecture.
"""
from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.stats import kendalltau

from pada_fast import ops
from pada_fast.config import Config
from pada_fast.errors import ConfigError
from pada_fast.data.datasets import build_split, training_recipe
from pada_fast.data.loader import build_loader
from pada_fast.devices import resolve_device
from pada_fast.experiment import build_model, build_optimizer, cosine_lr, epoch_generator
from pada_fast.log import get_logger

from .ground_truth import GroundTruth
from .inherited import accuracy, fixed_batches
from .progress import Progress

_log = get_logger(__name__)


def select_archs(supernet, which: str | int, seed: int = 0) -> list[tuple[int, ...]]:
    """``"all"``, ``"distinct"`` (one per functional equivalence class) or an int: that many
    distinct architectures drawn at random with ``seed``."""
    archs = supernet.all_archs()
    if which == "all":
        return archs
    firsts: dict[str, tuple[int, ...]] = {}
    for a in archs:
        firsts.setdefault(supernet.functional_arch_key(a), a)
    distinct = list(firsts.values())
    if which == "distinct":
        return distinct
    n = int(which)
    if not 1 <= n <= len(distinct):
        raise ConfigError(f"--archs {n}: choose between 1 and {len(distinct)} (the distinct architectures)")
    return sorted(random.Random(seed).sample(distinct, n))


def train_standalone(model, train_set, test_batches, cfg: Config, seed: int, device) -> float:
    torch.manual_seed(seed)
    model.to(device)
    optimizer = build_optimizer(model.parameters(), cfg.optim)
    bs = cfg.data.batch_size
    drop_last = len(train_set) >= bs
    steps = len(train_set) // bs if drop_last else 1
    total = steps * cfg.optim.epochs
    for epoch in range(cfg.optim.epochs):
        stream = torch.randperm(len(train_set), generator=epoch_generator(seed, epoch))
        loader = build_loader(train_set, stream, bs, num_workers=cfg.data.num_workers, drop_last=drop_last,
                              seed=seed, epoch=epoch)
        model.train()
        for step, (x, y, _) in enumerate(loader):
            for group in optimizer.param_groups:
                group["lr"] = cosine_lr(epoch * steps + step, total, cfg.optim.lr, cfg.optim.lr_min)
            x, y = x.to(device), y.to(device)
            loss, _ = ops.cross_entropy_with_importance(model(x), y, cfg.optim.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.mean().backward()
            if cfg.optim.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip, foreach=True)
            optimizer.step()
    model.eval()
    return accuracy(model, None, test_batches)


def _read_partial(partial: Path) -> dict[tuple[str, int], float]:
    """(arch, seed) -> accuracy of every finished stand-alone training in ``partial``."""
    done: dict[tuple[str, int], float] = {}
    if partial.exists():
        for line in partial.read_text().splitlines():
            if line.strip():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue            # the torn last line of a killed build: trained again
                done[(rec["arch"], rec["seed"])] = rec["accuracy"]
    return done


NOISE_PICKS = ("spread", "first")


def noise_indices(n: int, k: int, pick: str) -> set[int]:
    """Which of ``n`` architectures (table order) get the second seed."""
    if pick not in NOISE_PICKS:
        raise ConfigError(f"--noise-pick {pick!r}: choose one of {', '.join(NOISE_PICKS)}")
    if pick == "first" or k == 0:
        return set(range(k))
    return {int(j * n // k) for j in range(k)}


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"K/N"`` (0 <= K < N): this process trains architectures K, K+N, K+2N, ... of the list."""
    if text is None:
        return None
    try:
        k, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard {text!r}: write K/N, e.g. 0/2 and 1/2 for two processes") from None
    if not 0 <= k < n:
        raise ConfigError(f"--shard {text}: K must be between 0 and N-1 ({n - 1})")
    return k, n


@dataclass
class _Build:
    """What one table build trains: the data, the architectures and the seeds of each."""
    cfg: Config
    device: torch.device
    train_set: object
    test_batches: list
    supernet: object
    archs: list
    texts: list
    seeds_of: list
    index_of: dict
    seeds: int
    meta: dict


def _plan(cfg: Config, which, seeds: int, noise_archs: int, noise_pick: str) -> _Build:
    device = resolve_device(cfg.run.device)
    d = cfg.data
    train_set = build_split(d, "train", augment=d.augment, subset=d.train_subset)
    test_set = build_split(d, d.eval_split, subset=d.eval_subset)
    test_batches = fixed_batches(test_set, d.eval_batch_size, device)
    supernet = build_model(cfg, train_set.num_classes, train_set.in_channels)
    archs = select_archs(supernet, which, cfg.run.seed)
    if not 0 <= noise_archs <= len(archs):
        raise ConfigError(f"--noise-archs {noise_archs}: choose between 0 and the {len(archs)} architectures")
    noisy = noise_indices(len(archs), noise_archs, noise_pick)
    meta = {"dataset": d.dataset, "augment": training_recipe(d, train_set), "space": cfg.space.name,
            "C": cfg.space.C, "N": cfg.space.N, "image_size": train_set.image_size,
            "train_images": len(train_set), "test_images": len(test_set),
            "subset_mode": d.subset_mode, "split_seed": d.split_seed, "epochs": cfg.optim.epochs,
            "batch_size": d.batch_size, "lr": cfg.optim.lr, "weight_decay": cfg.optim.weight_decay,
            "seeds": [cfg.run.seed + s for s in range(seeds)], "archs": str(which), "noise_pick": noise_pick}
    return _Build(cfg, device, train_set, test_batches, supernet, archs,
                  [supernet.arch_to_str(a) for a in archs],
                  [[cfg.run.seed + s for s in range(seeds + (1 if i in noisy else 0))] for i in range(len(archs))],
                  {a: i for i, a in enumerate(supernet.all_archs())}, seeds, meta)


def _write_table(b: _Build, table_path: Path, partial: Path, done: dict) -> GroundTruth | None:
    """The table of every architecture whose trainings are all done (by any shard)."""
    everyone = {**_read_partial(partial), **done}
    rows = [(b.texts[i], [everyone[(b.texts[i], s)] for s in b.seeds_of[i]], b.index_of[a])
            for i, a in enumerate(b.archs) if all((b.texts[i], s) in everyone for s in b.seeds_of[i])]
    if not rows:
        return None
    table_meta = dict(b.meta)
    noise = [r for r in rows if len(r[1]) > b.seeds]
    if noise:
        first = [float(np.mean(r[1][:b.seeds])) for r in noise]
        second = [r[1][b.seeds] for r in noise]
        table_meta["noise"] = {"archs": len(noise), "seed": b.cfg.run.seed + b.seeds,
                               "kendall_tau": float(kendalltau(first, second).statistic) if len(noise) > 1 else None,
                               "mean_abs_diff": float(np.mean(np.abs(np.subtract(first, second))))}
    gt = GroundTruth([r[0] for r in rows], [float(np.mean(r[1][:b.seeds])) for r in rows], [r[2] for r in rows],
                     dataset=b.cfg.data.dataset, source=str(table_path), meta=table_meta)
    gt.write_table(table_path, extra=[{"accuracies": r[1]} for r in rows])
    return gt


def build_benchmark(cfg: Config, table_path: str | Path, which: str | int = 50, seeds: int = 1,
                    progress: bool = True, noise_archs: int = 0,
                    shard: tuple[int, int] | None = None, noise_pick: str = "spread") -> GroundTruth | None:
    """Train ``which`` architectures stand-alone ``seeds`` times each (accuracy: their mean) and
    write the table. ``noise_archs``: that many of them are trained once more with the next seed,
    kept apart from the accuracy, and the table's meta records Kendall's tau between the two (the
    benchmark's noise ceiling). ``noise_pick``: ``"spread"`` takes them evenly spaced along the
    table (its order is lexicographic in the genes, so the first ones share their first genes),
    ``"first"`` the first ones. They are trained first. The meta also records the dataset, the
    training recipe (``data.augment``, as ``rank`` compares it), the image size, the subsets and
    the schedule.

    ``shard=(K, N)``: train only architectures K, K+N, ... (N processes share one build through
    the partial file). The table is rewritten after every architecture with every architecture
    whose trainings are all done (by any process); returns it, or None while none is."""
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    b = _plan(cfg, which, seeds, noise_archs, noise_pick)
    table_path = Path(table_path)
    partial = table_path.with_name(table_path.name + ".partial.jsonl")
    done = _read_partial(partial)
    table_path.parent.mkdir(parents=True, exist_ok=True)
    noisy = {i for i, s in enumerate(b.seeds_of) if len(s) > seeds}
    mine = sorted((i for i in range(len(b.archs)) if shard is None or i % shard[1] == shard[0]),
                  key=lambda i: (i not in noisy, i))
    jobs = [(b.texts[i], s) for i in mine for s in b.seeds_of[i]]
    bar = Progress(len(jobs), "stand-alone training", done=sum(1 for job in jobs if job in done), bar=progress)
    started = time.perf_counter()
    gt = None
    for i in mine:
        for seed in b.seeds_of[i]:
            key = (b.texts[i], seed)
            if key in done:
                continue
            torch.manual_seed(seed)     # the network's initialisation: a function of (arch, seed) alone
            acc = train_standalone(b.supernet.standalone(b.archs[i]), b.train_set, b.test_batches, cfg, seed, b.device)
            done[key] = acc
            with partial.open("a") as f:       # one short line per append: shards never interleave
                f.write(json.dumps({"arch": key[0], "seed": seed, "accuracy": acc}) + "\n")
            bar.update()
            if bar.bar is None:
                _log.info(f"{sum(1 for job in jobs if job in done)}/{len(jobs)} {key[0]} seed {seed}: {acc:.2f}% "
                          f"({time.perf_counter() - started:.0f}s)")
        gt = _write_table(b, table_path, partial, done)
    bar.close()
    return _write_table(b, table_path, partial, done) if gt is None or shard is not None else gt
