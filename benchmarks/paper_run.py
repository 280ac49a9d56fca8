"""The paper's NAS-Bench-201 experiment (Table 1: PA&DA, then SPOS) in one time-budgeted run.

Called by ``benchmarks/gpu_paper_run.sh`` after it built the op library. In order, inside
``--budget-s`` seconds:

1. **Step times**: the trainer's PA&DA step on one GPU at C=16, N=5, batch 256, for fp32/bf16 x
   NCHW/NHWC (``--precisions``, ``--formats``), and PA&DA's machinery against SPOS (PA&DA with
   its schedules off: uniform draws, every statistic recorded). Medians of timed steps.
2. **Sync check** (CUDA): ``torch.cuda.set_sync_debug_mode("error")`` around training steps
   between log points: any host synchronisation inside the step raises.
3. **PA&DA**: the paper's supernet and optimiser (``configs/nb201_cifar10.yaml``: C=16, N=5,
   batch 256, SGD 0.05 cosine, wd 2.5e-4, clip 5, crop+flip) on the whole CIFAR-10 training
   folder, with ``data.backend=device``, bf16 and channels-last. Epochs: 250 if the measured
   step time says they fit in the time left (with the ranking's share kept back), otherwise the
   most that fit; the summary says which.
4. **Ranking** of ``--archs`` architectures with the ranking engine on the test folder (bf16).
5. **SPOS**, the same, if the time left fits it at the same number of epochs.

Everything lands in ``--out``: ``summary.json`` and ``summary.md`` (tau, P@Top5%, epochs,
epoch time, images/s, ranking time, the step-time table, the sync check), and each run's folder.

    python benchmarks/paper_run.py --data-root DATA --ground-truth nats_bench.csv --out OUT
    python benchmarks/paper_run.py --dry-run --out OUT     # tiny CPU version of every step

``--dry-run`` runs every step at toy size on the CPU (C=4, N=1, 512 images, 1 epoch, 20
architectures); without ``--data-root`` it writes a small JPEG folder and a ground-truth table
of its own, so it runs anywhere (its tau means nothing).
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

import torch

from pada_fast.config import load_config
from pada_fast.evaluate.rank import rank_supernet
from pada_fast.files import write_text_atomic
from pada_fast.train.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]
PAPER_EPOCHS = 250


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def paper_overrides(args, method: str, out_dir: Path, epochs: int, precision: str | None = None,
                    channels_last: bool | None = None) -> list[str]:
    o = [f"data.root={args.data_root}", f"method.name={method}", f"run.out_dir={out_dir}",
         f"optim.epochs={epochs}", f"run.device={args.device}", "data.backend=device",
         f"data.num_workers={args.workers}", f"run.precision={precision or args.precision}",
         f"rank.ground_truth={args.ground_truth}", "run.progress=lines", "run.log_interval=50",
         "data.eval_subset=null"]
    if channels_last is not None:
        o.append(f"run.channels_last={'true' if channels_last else 'false'}")
    if args.dry_run:
        o += ["space.C=4", "space.N=1", "data.batch_size=64", "data.train_subset=512", "data.eval_subset=200",
              "data.eval_batch_size=100", "run.threads=1"]
    return o


def time_steps(args, method: str, out_dir: Path, precision: str, channels_last: bool,
               pada_off: bool = False) -> dict:
    """Median time of the trainer's step (ms) and images/s, after warm-up steps."""
    extra = ["method.pa_schedule=off", "method.da_schedule=off"] if pada_off else []
    subset = [] if args.dry_run else [f"data.train_subset={256 * (args.warmup + args.timed + 1)}"]
    cfg = load_config(REPO / "configs" / "nb201_cifar10.yaml",
                      paper_overrides(args, method, out_dir, 1, precision, channels_last) + extra + subset)
    trainer = Trainer(cfg)
    state = trainer.begin_epoch(0, 0)
    times = []
    device = trainer.device
    for step, batch in enumerate(state.loader):
        if step >= args.warmup + args.timed:
            break
        sync(device)
        start = time.perf_counter()
        state.step = step
        trainer.run_step(state, batch)
        sync(device)
        if step >= args.warmup:
            times.append(time.perf_counter() - start)
    trainer.release()
    shutil.rmtree(out_dir)          # a timing run, not a result
    ms = 1000 * statistics.median(times)
    return {"step_ms": ms, "images_per_s": cfg.data.batch_size / (ms / 1000), "steps_timed": len(times)}


def sync_check(args, out_dir: Path) -> str:
    """Training steps under ``set_sync_debug_mode("error")`` (CUDA only): 'passed' or the error."""
    if args.device != "cuda" and not args.device.startswith("cuda:"):
        return "not run (no CUDA device)"
    subset = [] if args.dry_run else ["data.train_subset=5120"]
    cfg = load_config(REPO / "configs" / "nb201_cifar10.yaml",
                      paper_overrides(args, "pada", out_dir, 1) + subset + ["run.log_interval=1000"])
    trainer = Trainer(cfg, overwrite=True)
    state = trainer.begin_epoch(0, 0)
    batches = list(itertools.islice(state.loader, min(15, trainer.steps_per_epoch - 1)))
    try:
        for step, batch in enumerate(batches):
            state.step = step
            torch.cuda.set_sync_debug_mode("error")
            try:
                trainer.run_step(state, batch)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        torch.cuda.synchronize()
        return f"passed ({len(batches)} steps, bf16, device-resident data: no synchronising call)"
    except RuntimeError as exc:
        return f"FAILED: {str(exc).splitlines()[0]}"
    finally:
        trainer.release()


def train_and_rank(args, method: str, epochs: int, out: Path) -> dict:
    folder = out / f"nb201_{method}"
    cfg = load_config(REPO / "configs" / "nb201_cifar10.yaml", paper_overrides(args, method, folder, epochs))
    started = time.perf_counter()
    result = Trainer(cfg, overwrite=True).fit()
    train_s = time.perf_counter() - started
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    started = time.perf_counter()
    metrics = rank_supernet(folder / "checkpoint.pt", folder / "rank", archs=args.archs, eval_subset=None,
                            device=args.device, progress=False, precision=args.rank_precision,
                            batch_size=args.rank_batch)
    rank_s = time.perf_counter() - started
    epoch_times = [r["epoch_time"] for r in rows]
    return {"method": method, "epochs": epochs, "train_s": train_s, "rank_s": rank_s,
            "epoch_time_median_s": statistics.median(epoch_times),
            "images_per_s_median": statistics.median(r["images_per_s"] for r in rows),
            "kendall_tau": metrics["kendall_tau"], "precision_top5pct": metrics["precision_top5pct"],
            "archs": metrics.get("num_archs", args.archs), "exit_code": result["exit_code"]}


def fit_epochs(left_s: float, epoch_s: float, rank_s: float) -> int:
    """Epochs that fit in ``left_s`` with the ranking's estimated time kept back (at least 1)."""
    return max(1, min(PAPER_EPOCHS, math.floor((left_s - rank_s) / epoch_s)))


def make_toy_data(root: Path) -> tuple[Path, Path]:
    """A 10-class JPEG folder (train/test) of 32x32 images and a ground-truth table for it, for a
    dry run anywhere; accuracies are a fixed function of the architecture (not a benchmark)."""
    from torchvision.io import encode_jpeg
    from pada_fast.spaces.nb201 import all_archs, arch_to_str
    g = torch.Generator().manual_seed(0)
    for split, per_class in (("train", 60), ("test", 25)):
        for c in range(10):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                base = torch.full((3, 32, 32), 25 * c, dtype=torch.uint8)
                noise = torch.randint(0, 40, (3, 32, 32), generator=g, dtype=torch.uint8)
                (folder / f"{i}.jpg").write_bytes(bytes(encode_jpeg(base + noise).numpy()))
    archs = all_archs()[::97]
    table = {arch_to_str(a): 50.0 + sum((k + 1) * op for k, op in enumerate(a)) / 10 for a in archs}
    gt = root / "ground_truth.json"
    write_text_atomic(gt, json.dumps(table))
    return root, gt


def markdown(summary: dict) -> str:
    lines = [f"# NAS-Bench-201 paper run ({summary['date']}, {summary['device_name']})", ""]
    lines += ["| precision | memory format | PA&DA step ms | images/s |", "|---|---|---|---|"]
    for row in summary["step_times"]:
        lines.append(f"| {row['precision']} | {row['format']} | {row['step_ms']:.2f} | {row['images_per_s']:.0f} |")
    m = summary.get("machinery")
    if m:
        lines += ["", f"PA&DA machinery / SPOS step time: {m['ratio']:.3f} (PA&DA with schedules off "
                  f"{m['pada_off_ms']:.2f} ms, SPOS {m['spos_ms']:.2f} ms; {m['setting']})"]
    lines += ["", f"sync check: {summary['sync_check']}", ""]
    lines += ["| method | epochs | epoch time s (median) | images/s | train s | ranking s | archs | tau | P@Top5% |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in summary["runs"]:
        lines.append(f"| {r['method']} | {r['epochs']} | {r['epoch_time_median_s']:.2f} | {r['images_per_s_median']:.0f} | "
                     f"{r['train_s']:.0f} | {r['rank_s']:.0f} | {r['archs']} | {r['kendall_tau']:.3f} | "
                     f"{r['precision_top5pct']:.3f} |")
    if len(summary["runs"]) == 2:
        a, b = summary["runs"]
        lines += ["", f"PA&DA / SPOS epoch time as trained: {a['epoch_time_median_s'] / b['epoch_time_median_s']:.3f}"]
    lines += ["", summary["epochs_note"]] + [f"- {n}" for n in summary["notes"]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", help="CIFAR-10 JPEG folder (train/ and test/)")
    parser.add_argument("--ground-truth", help="the NATS-Bench CSV (or a JSON table)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--budget-s", type=float, default=480.0, help="for everything this script does")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--precision", default="bf16", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--formats", default="nchw,nhwc")
    parser.add_argument("--archs", default="stratified:1000", help="rank.archs of the ranking")
    parser.add_argument("--rank-precision", default="bf16", choices=["fp32", "bf16"])
    parser.add_argument("--rank-batch", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=8, help="decoding processes for the device-resident set")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--timed", type=int, default=30)
    parser.add_argument("--methods", default="pada,spos")
    parser.add_argument("--dry-run", action="store_true", help="every step at toy size on the CPU")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    notes = []
    if args.dry_run:
        args.device, args.workers, args.warmup, args.timed = "cpu", 0, 1, 2
        args.rank_precision, args.rank_batch, args.archs = "fp32", 100, "stratified:20"
        torch.set_num_threads(1)
        if not args.data_root:
            args.data_root, toy_gt = make_toy_data(out / "toy_data")
            args.ground_truth = args.ground_truth or toy_gt
            notes.append("dry run on a generated toy JPEG folder and table: its tau means nothing")
        notes.append("dry run: C=4, N=1, 512 training images, CPU; no number here is a GPU measurement")
    if not args.data_root or not args.ground_truth:
        parser.error("--data-root and --ground-truth are required (or --dry-run)")
    if not args.dry_run and not torch.cuda.is_available():
        print("paper_run: no CUDA device visible; run with --dry-run on a CPU", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    summary = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
               "torch": torch.__version__, "budget_s": args.budget_s, "step_times": [], "runs": [], "notes": notes,
               "epochs_note": ""}

    def save():
        summary["elapsed_s"] = time.perf_counter() - start
        write_text_atomic(out / "summary.json", json.dumps(summary, indent=2))
        write_text_atomic(out / "summary.md", markdown(summary))

    steps = out / "step_timing"
    for precision in args.precisions.split(","):
        for fmt in args.formats.split(","):
            row = time_steps(args, "pada", steps / f"pada_{precision}_{fmt}", precision, fmt == "nhwc")
            summary["step_times"].append({"precision": precision, "format": fmt, **row})
            print(f"step time {precision} {fmt}: {row['step_ms']:.2f} ms, {row['images_per_s']:.0f} images/s", flush=True)
    spos = time_steps(args, "spos", steps / "spos", args.precision, device.type == "cuda")
    pada_off = time_steps(args, "pada", steps / "pada_off", args.precision, device.type == "cuda", pada_off=True)
    summary["machinery"] = {"spos_ms": spos["step_ms"], "pada_off_ms": pada_off["step_ms"],
                            "ratio": pada_off["step_ms"] / spos["step_ms"],
                            "setting": f"{args.precision}, {'NHWC' if device.type == 'cuda' else 'NCHW'}"}
    summary["sync_check"] = sync_check(args, out / "sync_check")
    print(f"sync check: {summary['sync_check']}", flush=True)
    save()

    # the epoch budget from the measured step: the run's own precision and format
    used = [r for r in summary["step_times"] if r["precision"] == args.precision
            and r["format"] == ("nhwc" if device.type == "cuda" else "nchw")]
    step_ms = used[0]["step_ms"] if used else pada_off["step_ms"]
    steps_per_epoch = 50000 // 256 if not args.dry_run else 512 // 64
    epoch_s = 1.25 * steps_per_epoch * step_ms / 1000          # PA draws convolutions more often later
    rank_s = 60.0 if not args.dry_run else 5.0
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    left = args.budget_s - (time.perf_counter() - start)
    epochs = 1 if args.dry_run else fit_epochs(left, epoch_s, rank_s)     # PA&DA first; SPOS if time remains
    summary["epochs_note"] = (f"Epochs: {epochs} of the paper's {PAPER_EPOCHS}"
                              + (" (all of them fit)" if epochs == PAPER_EPOCHS else
                                 f" (the most that fit: {epoch_s:.1f} s per epoch estimated from the measured step)"))
    for method in methods:
        left = args.budget_s - (time.perf_counter() - start)
        needed = epochs * epoch_s + rank_s
        if summary["runs"] and needed > left:
            summary["notes"].append(f"{method}: not run, {needed:.0f} s needed and {left:.0f} s left")
            break
        row = train_and_rank(args, method, epochs, out)
        summary["runs"].append(row)
        print(f"{method}: {epochs} epochs, tau {row['kendall_tau']:.3f}, P@Top5% {row['precision_top5pct']:.3f}, "
              f"epoch {row['epoch_time_median_s']:.2f} s, ranking {row['rank_s']:.0f} s", flush=True)
        save()
    save()
    print((out / "summary.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
