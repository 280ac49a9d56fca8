"""Step time of multi-process training (torchrun, gloo on the CPU) against one process.

    python benchmarks/bench_distributed.py [--config configs/nb201_cifar10_cpu.yaml] [--nproc 2]
        [--steps 20] [--rounds 5] [--threads-single 2] [--threads-per-rank 1] [--sync-bn]
        [--set section.key=value ...]

Both sides train the same global batch (``data.batch_size`` of the config) on the same data for
``--steps`` steps per epoch (``data.train_subset = steps x batch``), two epochs per launch; the
second epoch is timed (the first pays for imports, page cache and allocator warm-up). Each round
launches one process (``python -m pada_fast.cli train``) and then ``--nproc`` processes
(``python -m torch.distributed.run --nproc-per-node N -m pada_fast.cli train``), so drift hits
both alike; per round the speed-up is ``t_1 / t_N`` of the timed epoch. CPU threads: by default
the single process gets all cores and each rank ``cores / nproc`` (the same machine, shared
fairly). Reported: the median and IQR over rounds of the step time (whole step and step minus
data loading, rank 0's clock) and of the speed-up.

On a small CPU box this measures the cost of the collectives (gradient all-reduce per step, with
``--sync-bn`` one all-reduce per BatchNorm call forward and backward) against the parallel compute.
Do not run it while other jobs load the machine; ``--steps 2 --rounds 1 --set data.dataset=digits``
is a quick smoke test.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median, spread  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(nproc: int, config: str, sets: list[str], out_dir: Path, timeout: float) -> dict:
    """One training launch; returns the timed (second) epoch's row of metrics.jsonl."""
    if nproc == 1:
        cmd = [sys.executable, "-m", "pada_fast.cli", "train"]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}",
               "--master-addr=127.0.0.1", f"--master-port={free_port()}", "-m", "pada_fast.cli", "train"]
    cmd += ["--config", config]
    for s in sets + [f"run.out_dir={out_dir}"]:
        cmd += ["--set", s]
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        # the whole output: a crash's cause can sit far above torchrun's summary
        raise SystemExit(f"launch with {nproc} process(es) failed:\n{proc.stdout}\n{proc.stderr}")
    rows = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    return rows[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "nb201_cifar10_cpu.yaml"))
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20, help="steps per epoch (timed epoch: the second)")
    parser.add_argument("--rounds", type=int, default=5)
    cores = os.cpu_count() or 2
    parser.add_argument("--threads-single", type=int, default=cores)
    parser.add_argument("--threads-per-rank", type=int, default=None, help="default: cores / nproc")
    parser.add_argument("--sync-bn", action="store_true", help="space.sync_bn=true on the N-process side")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args()

    sys.path.insert(0, str(REPO))
    from pada_fast.config import load_config
    cfg = load_config(args.config, args.set + ["rank.ground_truth="])   # training only
    batch = cfg.data.batch_size
    if batch % args.nproc:
        raise SystemExit(f"data.batch_size={batch} is not divisible by --nproc {args.nproc}")
    per_rank = args.threads_per_rank or max(cores // args.nproc, 1)
    common = ["run.device=cpu"] + args.set + [f"data.train_subset={args.steps * batch}", "optim.epochs=2",
                                              "rank.ground_truth=", "run.progress=lines",
                                              f"run.log_interval={10**6}"]
    sides = {1: common + [f"run.threads={args.threads_single}"],
             args.nproc: common + [f"run.threads={per_rank}", f"space.sync_bn={str(args.sync_bn).lower()}"]}
    print(f"{cfg.space.name} C={cfg.space.C} N={cfg.space.N} {cfg.method.name} on {cfg.data.dataset}, global "
          f"batch {batch}, {args.steps} steps timed; 1 process x {args.threads_single} threads vs "
          f"{args.nproc} x {per_rank} threads{' with sync_bn' if args.sync_bn else ''}; {args.rounds} rounds",
          flush=True)
    step = {n: [] for n in sides}
    compute = {n: [] for n in sides}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for n, sets in sides.items():
                start = time.perf_counter()
                row = launch(n, args.config, sets, Path(tmp) / f"r{r}_n{n}", args.timeout)
                steps = row["images"] / batch
                step[n].append(row["epoch_time"] / steps)
                compute[n].append((row["epoch_time"] - row["data_time"]) / steps)
                print(f"round {r + 1}: {n} process(es) {step[n][-1] * 1e3:.1f} ms/step "
                      f"(launch {time.perf_counter() - start:.0f}s)", flush=True)
    one, many = 1, args.nproc
    print()
    print(f"| measure | 1 process (ms) | {many} processes (ms) | speed-up (median) | IQR |")
    print("|---|---|---|---|---|")
    for name, series in (("step", step), ("step minus data", compute)):
        ratios = [a / b for a, b in zip(series[one], series[many])]
        lo, hi = spread(ratios) if len(ratios) > 1 else (ratios[0], ratios[0])
        print(f"| {name} | {median(series[one]) * 1e3:.1f} | {median(series[many]) * 1e3:.1f} | "
              f"**{statistics.median(ratios):.2f}x** | {lo:.2f}–{hi:.2f} |")


if __name__ == "__main__":
    main()
