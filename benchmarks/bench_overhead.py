"""What PA, DA and PA&DA cost over SPOS in training time, measured in one run; prints markdown.

    python benchmarks/bench_overhead.py --config configs/nb201_cifar10_cpu.yaml \\
        --set data.train_subset=2560 [--set run.device=cuda] [--rounds 5] [--warmup 1]
    python benchmarks/bench_overhead.py --config configs/quickstart_digits.yaml
    python benchmarks/bench_overhead.py --scaling [--sizes 50000,1281167] [--device cuda]

Epochs: every variant's Trainer is built first from the same config (``load_config(config,
overrides)`` plus the method), then in each round every variant trains one epoch
(``train_epoch(e)`` + ``end_epoch(e)``), in an order rotated each round, so drift hits all alike.
Each round's paths come from a generator shared by all variants (common random numbers), so
variants with the same ``p`` train identical paths.
``optim.epochs`` is set to warmup + rounds, so δ and τ sweep 0 → 1 over the measured rounds as over
a whole training run. Ratios are per round (variant / SPOS of the same round), reported as median
and interquartile range. Variants: ``spos``, ``pa``, ``da``, ``pada`` and ``pada-off`` (PA&DA with
``pa_schedule=off`` and ``da_schedule=off``: uniform draws with all the statistics machinery on;
``pada-off / spos`` is the pure machinery overhead, ``pada / pada-off`` the effect of the path and
data mix: PA samples convolutions more often than SPOS, so its steps cost more compute).

Breakdown (micro-benchmarks on the same model, batch and device; A/B alternated):
(a) loss + importance: the fused op against plain ``F.cross_entropy`` (every method, SPOS
included, runs the fused op in this trainer, so this is what the importance costs at all);
(b) per-operation gradient-norm accumulation ``path_sampler.record`` (SPOS records too);
(c) DA ``data_sampler.record`` against the uniform sampler's no-op; (d) both samplers'
``end_epoch``; (e) drawing the epoch's index stream and paths. (d) and (e) happen once per epoch
and are also shown amortised per step.

``--scaling``: drawing an epoch stream and updating q (``end_epoch``) for N = 50,000 (CIFAR-10)
and N = 1,281,167 (ImageNet), and the memory PA&DA's sampler state takes.
Absolute times are only meaningful from a GPU (docs/results.md); on CPU read the ratios.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import median, spread, time_ab  # noqa: E402

from pada_fast import ops  # noqa: E402
from pada_fast.config import load_config  # noqa: E402
from pada_fast.data.loader import build_loader  # noqa: E402
from pada_fast.sampling import (ImportanceDataSampler, ImportancePathSampler,  # noqa: E402
                                UniformDataSampler, UniformPathSampler)

VARIANTS: dict[str, list[str]] = {
    "spos": ["method.name=spos"],
    "pa": ["method.name=pa"],
    "da": ["method.name=da"],
    "pada": ["method.name=pada"],
    "pada-off": ["method.name=pada", "method.pa_schedule=off", "method.da_schedule=off"],
}
IMAGENET_N = 1_281_167


# -- helpers --------------------------------------------------------------------------------------
def _ratio_stats(num: list[float], den: list[float]) -> str:
    r = [a / b for a, b in zip(num, den)]
    if len(r) >= 2:
        lo, hi = spread(r)
        return f"**{median(r):.3f}x** | {lo:.3f}–{hi:.3f}"
    return f"**{median(r):.3f}x** | n/a (1 round)"


def tensor_bytes(obj) -> dict[str, int]:
    """Bytes of the tensors an object holds as attributes, by device type (shared storage once)."""
    seen, out = set(), {}
    for value in vars(obj).values():
        if isinstance(value, torch.Tensor):
            key = (value.device, value.untyped_storage().data_ptr())
            if key in seen:
                continue
            seen.add(key)
            out[value.device.type] = out.get(value.device.type, 0) + value.untyped_storage().nbytes()
    return out


def _fmt_bytes(b: dict[str, int]) -> str:
    def one(n):
        return f"{n / 2**20:.2f} MiB" if n >= 2**20 else f"{n / 2**10:.2f} KiB"
    return ", ".join(f"{dev} {one(n)}" for dev, n in sorted(b.items())) or "0"


def _quiet():
    return contextlib.redirect_stdout(io.StringIO())


# -- epochs ---------------------------------------------------------------------------------------
def build_trainers(config, overrides, variants, epochs, out_root):
    from pada_fast.train.trainer import Trainer
    trainers = {}
    for name in variants:
        cfg = load_config(config, list(overrides) + VARIANTS[name] + [
            f"run.out_dir={Path(out_root) / name}", f"optim.epochs={epochs}", "run.progress=lines",
            f"run.log_interval={10**9}", "run.tensorboard=false"])
        with _quiet():
            trainers[name] = Trainer(cfg)
    return trainers


class _CommonPaths:
    """Replaces a sampler's ``sample_epoch`` generator by one seeded from the round alone, shared by
    every variant (common random numbers): variants whose ``p`` is the same (spos, da, pada-off
    are all uniform) then train exactly the same paths, so their ratio is not path-mix noise; the
    trainer's generator would otherwise differ between them after drawing different index
    streams. The draw itself (and its cost) is unchanged."""

    def __init__(self, sampler):
        self.inner = sampler.sample_epoch
        self.round = 0

    def __call__(self, num_steps, generator):
        return self.inner(num_steps, torch.Generator().manual_seed(7919 * self.round + 1))


def time_epochs(trainers, warmup: int, rounds: int) -> dict[str, dict[str, list[float]]]:
    """Per variant, per measured round: wall time of train_epoch + end_epoch ("epoch"), compute
    time per step excluding data loading ("step"), end_epoch alone ("end"), and the host time of
    train_epoch outside the step loop ("setup": stream and path draws, loader construction)."""
    names = list(trainers)
    out = {n: {"epoch": [], "step": [], "end": [], "setup": [], "p": []} for n in names}
    common = {}
    for name, tr in trainers.items():
        common[name] = tr.path_sampler.sample_epoch = _CommonPaths(tr.path_sampler)
    for e in range(warmup + rounds):
        order = names[e % len(names):] + names[: e % len(names)]
        for name in order:
            tr = trainers[name]
            common[name].round = e
            p_before = tr.path_sampler.probabilities()
            with _quiet():
                t0 = time.perf_counter()
                stats = tr.train_epoch(e)
                t1 = time.perf_counter()
                tr.end_epoch(e)
                t2 = time.perf_counter()
            if e < warmup:
                continue
            rec = out[name]
            rec["epoch"].append(t2 - t0)
            rec["step"].append((stats["epoch_time"] - stats["data_time"]) / tr.steps_per_epoch)
            rec["end"].append(t2 - t1)
            rec["setup"].append(max(t1 - t0 - stats["epoch_time"], 0.0))
            rec["p"].append(p_before)
    return out


def epoch_table(trainers, times) -> list[str]:
    ref = times["spos"]
    rows = ["| variant | step compute (ms, median) | step ratio vs SPOS | step IQR | epoch (s, median) "
            "| epoch ratio vs SPOS | epoch IQR | epoch setup (ms) | end_epoch (ms) |",
            "|---|---|---|---|---|---|---|---|---|"]
    for name, t in times.items():
        rows.append(f"| {name} | {median(t['step']) * 1e3:.2f} | {_ratio_stats(t['step'], ref['step'])} "
                    f"| {median(t['epoch']):.3f} | {_ratio_stats(t['epoch'], ref['epoch'])} "
                    f"| {median(t['setup']) * 1e3:.2f} | {median(t['end']) * 1e3:.2f} |")
    if "pada-off" in times:
        for num, den, what in (("pada-off", "spos", "pure machinery (uniform draws, statistics on)"),
                               ("pada", "pada-off", "(f) path + data mix effect")):
            if num in times and den in times:
                step = _ratio_stats(times[num]["step"], times[den]["step"])
                epoch = _ratio_stats(times[num]["epoch"], times[den]["epoch"])
                rows.append(f"| {num} / {den}: {what} | | {step} | | {epoch} | | |")
    return rows


def mix_table(trainers, times) -> list[str]:
    """Mean p of layer 0 over the measured epochs: how much more often PA trains convolutions."""
    any_tr = next(iter(trainers.values()))
    names = any_tr.model.layer_candidates()[0]
    rows = ["| variant | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for name, t in times.items():
        p = torch.stack(t["p"]).mean(0)[0].tolist()
        rows.append(f"| {name} | " + " | ".join(f"{v:.3f}" for v in p[: len(names)]) + " |")
    return rows


# -- breakdown ------------------------------------------------------------------------------------
def breakdown(trainers, times, micro_rounds: int) -> list[str]:
    spos = trainers["spos"]
    dev = spos.device
    dstr = str(dev)
    cfg = spos.cfg
    n = len(spos.train_set)
    B = min(cfg.data.batch_size, n)
    S = spos.steps_per_epoch
    model = spos.model
    gen = torch.Generator().manual_seed(0)
    stream = torch.randperm(n, generator=gen)[:B]
    images, labels, indices = next(iter(build_loader(spos.train_set, stream, B)))
    images, labels, indices = images.to(dev), labels.to(dev), indices.to(dev)
    paths = spos.path_sampler.sample_epoch(8, gen)
    mask = model.candidate_mask()
    step_ms = median(times["spos"]["step"]) * 1e3
    rows = ["| component | SPOS (ms) | PA&DA (ms) | PA&DA − SPOS per step (ms) | % of SPOS step |",
            "|---|---|---|---|---|"]
    machinery = []      # per-step differences that PA&DA adds over SPOS: (c), amortised (d), (e)

    def row(label, a, b, counts=False):
        diff = b - a
        rows.append(f"| {label} | {a * 1e3:.4f} | {b * 1e3:.4f} | {diff * 1e3:+.4f} "
                    f"| {diff * 1e3 / step_ms * 100:+.2f}% |")
        if counts:
            machinery.append(diff)

    # (a) loss: plain F.cross_entropy vs the fused loss + importance, forward + backward
    with torch.no_grad():
        logits = model(images, tuple(paths[0].tolist())).detach()
    leaf = logits.clone().requires_grad_(True)

    def plain():
        leaf.grad = None
        F.cross_entropy(leaf, labels).backward()

    def fused():
        leaf.grad = None
        loss, _ = ops.cross_entropy_with_importance(leaf, labels, cfg.optim.label_smoothing)
        loss.mean().backward()

    t = time_ab({"plain": plain, "fused": fused}, dstr, micro_rounds)
    a, b = median(t["plain"]), median(t["fused"])
    rows.append(f"| (a) loss fwd+bwd: plain F.cross_entropy vs fused loss+importance [{B}x{logits.shape[1]}] "
                f"(all methods run the fused op) | {a * 1e3:.4f} | {b * 1e3:.4f} | {(b - a) * 1e3:+.4f} "
                f"| {(b - a) * 1e3 / step_ms * 100:+.2f}% |")

    # (b) gradient-norm accumulation of real path gradients
    recorded = []
    for arch in paths.tolist():
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(images, tuple(arch)), labels).backward()
        params, slots = model.path_parameters(tuple(arch))
        recorded.append(([p.grad.detach().clone() for p in params], list(slots)))
    model.zero_grad(set_to_none=True)
    ps_u = UniformPathSampler(mask, device=dev)
    ps_i = ImportancePathSampler(mask, granularity=cfg.method.pa_granularity, device=dev)

    def rec(sampler):
        return lambda: [sampler.record(g, s) for g, s in recorded]

    t = time_ab({"spos": rec(ps_u), "pada": rec(ps_i)}, dstr, micro_rounds, inner=1)
    row(f"(b) path_sampler.record, mean of {len(recorded)} sampled paths (SPOS records too)",
        median(t["spos"]) / len(recorded), median(t["pada"]) / len(recorded))

    # (c) DA record
    ds_u = UniformDataSampler(n)
    ds_i = ImportanceDataSampler(n, device=dev)
    importance = torch.rand(B, device=dev)
    t = time_ab({"spos": lambda: ds_u.record(indices, importance),
                 "pada": lambda: ds_i.record(indices, importance)}, dstr, micro_rounds)
    row(f"(c) data_sampler.record [{B}]", median(t["spos"]), median(t["pada"]), counts=True)

    # (d) end_epoch of both samplers (values of the accumulators do not change the work done)
    def end(ps, ds):
        def fn():
            ps.end_epoch(1, 2)
            ds.end_epoch(1, 2)
        return fn

    t = time_ab({"spos": end(ps_u, ds_u), "pada": end(ps_i, ds_i)}, dstr, micro_rounds, inner=1)
    a, b = median(t["spos"]), median(t["pada"])
    row(f"(d) end_epoch, both samplers (N={n}), per epoch", a, b)
    row(f"(d) … amortised over {S} steps", a / S, b / S, counts=True)

    # (e) the epoch's draws: index stream + S paths (q set by the end_epoch calls above)
    def draws(ps, ds):
        g = torch.Generator().manual_seed(1)
        return lambda: (ds.epoch_stream(g), ps.sample_epoch(S, g))

    t = time_ab({"spos": draws(ps_u, ds_u), "pada": draws(ps_i, ds_i)}, "cpu", micro_rounds, inner=1)
    a, b = median(t["spos"]), median(t["pada"])
    row(f"(e) epoch_stream + sample_epoch({S}), per epoch", a, b)
    row(f"(e) … amortised over {S} steps", a / S, b / S, counts=True)

    mem = dict(tensor_bytes(ds_i))
    for dev_type, nbytes in tensor_bytes(ps_i).items():
        mem[dev_type] = mem.get(dev_type, 0) + nbytes
    rows.append("")
    rows.append(f"PA&DA sampler state for N={n}: {_fmt_bytes(mem)}. "
                f"SPOS step (compute) median {step_ms:.3f} ms; "
                f"(c) + amortised (d) + (e) predict a machinery overhead of "
                f"{sum(machinery) * 1e3 / step_ms * 100:+.2f}% per step; compare the measured "
                "pada-off / spos ratio above.")
    return rows


# -- scaling --------------------------------------------------------------------------------------
def scaling(sizes, device, rounds: int, batch_size: int = 256) -> list[str]:
    dev = torch.device(device)
    rows = ["| N | DA end_epoch (ms) | DA epoch_stream (ms) | SPOS randperm (ms) | PA sample_epoch "
            "(N/{b} steps, ms) | DA state | PA state |".format(b=batch_size),
            "|---|---|---|---|---|---|---|"]
    mask = torch.ones(6, 5, dtype=torch.bool)
    for n in sizes:
        ds = ImportanceDataSampler(n, device=dev)
        g = torch.Generator().manual_seed(0)
        ds.record(torch.randint(0, n, (n,), generator=g).to(dev), torch.rand(n, generator=g).to(dev))
        ds_u = UniformDataSampler(n)
        ps = ImportancePathSampler(mask, device=dev)
        steps = max(n // batch_size, 1)
        t = time_ab({"end": lambda: ds.end_epoch(1, 2)}, str(dev), rounds, inner=1, warmup=1)
        t_end = median(t["end"])
        gen = torch.Generator().manual_seed(1)
        t = time_ab({"da": lambda: ds.epoch_stream(gen), "spos": lambda: ds_u.epoch_stream(gen),
                     "pa": lambda: ps.sample_epoch(steps, gen)}, "cpu", rounds, inner=1, warmup=1)
        rows.append(f"| {n:,} | {t_end * 1e3:.2f} | {median(t['da']) * 1e3:.2f} "
                    f"| {median(t['spos']) * 1e3:.2f} | {median(t['pa']) * 1e3:.2f} "
                    f"| {_fmt_bytes(tensor_bytes(ds))} | {_fmt_bytes(tensor_bytes(ps))} |")
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="YAML experiment file (e.g. configs/nb201_cifar10_cpu.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--variants", default="spos,pa,da,pada,pada-off",
                        help=f"comma-separated subset of {','.join(VARIANTS)} (spos is always measured)")
    parser.add_argument("--rounds", type=int, default=5, help="measured epochs per variant")
    parser.add_argument("--warmup", type=int, default=1,
                        help="unmeasured epochs first (epoch 0: q is still unset)")
    parser.add_argument("--micro-rounds", type=int, default=20,
                        help="rounds of each breakdown micro-benchmark")
    parser.add_argument("--no-breakdown", action="store_true")
    parser.add_argument("--scaling", action="store_true", help="stream/end_epoch time and state memory vs N")
    parser.add_argument("--sizes", default=f"50000,{IMAGENET_N}", help="N values for --scaling")
    parser.add_argument("--device", default="cpu", help="device of the --scaling samplers")
    parser.add_argument("--scaling-rounds", type=int, default=5)
    args = parser.parse_args(argv)
    if not args.config and not args.scaling:
        parser.error("give --config (epoch overhead) and/or --scaling")

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, fused ops "
          f"{'compiled' if ops.COMPILED else 'reference (NOT compiled)'}", flush=True)
    if args.config:
        variants = ["spos"] + [v for v in args.variants.split(",") if v and v != "spos"]
        unknown = [v for v in variants if v not in VARIANTS]
        if unknown:
            parser.error(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
        with tempfile.TemporaryDirectory(prefix="bench_overhead_") as tmp:
            trainers = build_trainers(args.config, args.set, variants, args.warmup + args.rounds, tmp)
            spos = trainers["spos"]
            print(f"\n## Epoch overhead: {args.config} {' '.join('--set ' + s for s in args.set)}\n")
            print(f"{spos.cfg.space.name} C={spos.cfg.space.C} N={spos.cfg.space.N}, {spos.cfg.data.dataset} "
                  f"{len(spos.train_set)} images, batch {spos.cfg.data.batch_size}, {spos.steps_per_epoch} "
                  f"steps/epoch, device {spos.device}; {args.rounds} measured rounds after {args.warmup} "
                  f"warm-up, order rotated per round\n", flush=True)
            started = time.perf_counter()
            times = time_epochs(trainers, args.warmup, args.rounds)
            print("\n".join(epoch_table(trainers, times)))
            print("\nMean p (layer 0) over the measured epochs:\n")
            print("\n".join(mix_table(trainers, times)))
            print(f"\n(epochs took {time.perf_counter() - started:.1f}s)\n", flush=True)
            if not args.no_breakdown:
                print("### Breakdown (micro-benchmarks, medians)\n")
                print("\n".join(breakdown(trainers, times, args.micro_rounds)), flush=True)
    if args.scaling:
        sizes = [int(s) for s in args.sizes.split(",") if s]
        print(f"\n## Scaling with N (device {args.device})\n")
        print("\n".join(scaling(sizes, args.device, args.scaling_rounds)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
