"""``pada-fast gv``: gradient variance of trained runs, per epoch (the paper's Fig. 4).

    pada-fast gv RUN_DIR [RUN_DIR ...] [--draws K] [--epochs all|0,5,9] [--out gv.csv --out gv.png]

For each run directory: if training saved per-epoch GV snapshots (``gv.jsonl``, written when
``run.gv_draws > 0``), those are read; otherwise (or with ``--recompute``) GV is computed now for
the final checkpoint only, with the samplers' saved distributions — GV of earlier epochs needs
those epochs' weights, which a run keeps only as snapshots. Writes a CSV and a log-y plot (one
line per run) and prints a table.
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

from pada_fast.files import write_atomic

DEFAULT_DRAWS = 32


def _parse_epochs(text: str):
    if text in (None, "", "all"):
        return None
    try:
        return sorted({int(t) for t in text.split(",") if t.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"--epochs takes 'all' or comma-separated epoch numbers (0-based), "
                                         f"got {text!r}") from None


def gv_from_checkpoint(run_dir, draws: int = DEFAULT_DRAWS, device: str = "auto", data_root=None,
                       clip=None) -> dict:
    """GV of the final checkpoint of ``run_dir`` under the samplers' saved state."""
    # imported here: heavy imports stay out of `pada-fast --help`
    from pada_fast.data.datasets import build_split
    from pada_fast.devices import resolve_device
    from pada_fast.experiment import load_run

    from .gradient_variance import gradient_variance

    run_dir = Path(run_dir)
    ckpt = run_dir / "checkpoint.pt"
    if not ckpt.exists():
        raise FileNotFoundError(f"{run_dir} holds neither gv.jsonl (per-epoch GV snapshots, written when "
                                f"run.gv_draws > 0) nor checkpoint.pt to compute GV from")
    dev = resolve_device(device)
    run = load_run(ckpt, dev)
    model, cfg, state = run.model, run.cfg, run.state
    d, m = cfg.data, cfg.method
    train_set = build_split(d, "train", augment=d.augment, subset=d.train_subset, root=data_root)
    path_sampler, data_sampler = run.samplers(len(train_set), dev)
    epoch = int(state["epoch"]) - 1
    result = gradient_variance(model, path_sampler, data_sampler, train_set, cfg, num_draws=draws,
                               device=dev, epoch=epoch, clip=clip)
    return {"epoch": epoch, "method": m.name, **result}


def _run_name(run_dir: Path) -> str:
    config = run_dir / "config.yaml"
    if config.exists():
        import yaml
        try:
            return str(yaml.safe_load(config.read_text())["method"]["name"])
        except (KeyError, TypeError, yaml.YAMLError):
            pass
    return run_dir.name


def collect(run_dirs, draws=None, epochs=None, recompute=False, device="auto", data_root=None,
            clip=None) -> dict[str, list[dict]]:
    """name -> GV rows of each run (snapshots, or the final checkpoint's GV)."""
    from .gradient_variance import GV_FILE, read_gv_rows

    dirs = [Path(r) for r in run_dirs]
    names = [_run_name(r) for r in dirs]
    if len(set(names)) < len(names):
        names = [f"{n} ({r.name})" for n, r in zip(names, dirs)]
    out: dict[str, list[dict]] = {}
    for name, run_dir in zip(names, dirs):
        if not run_dir.is_dir():
            raise FileNotFoundError(f"run directory {run_dir} does not exist")
        snapshots = run_dir / GV_FILE
        if snapshots.exists() and not recompute:
            rows = [dict(r, source="snapshot") for r in read_gv_rows(snapshots)]
            if epochs is not None:
                missing = sorted(set(epochs) - {r["epoch"] for r in rows})
                if missing:
                    raise ValueError(f"{run_dir}: no GV snapshot for epoch(s) {missing}; it has "
                                     f"{[r['epoch'] for r in rows]}")
                rows = [r for r in rows if r["epoch"] in epochs]
        else:
            row = gv_from_checkpoint(run_dir, draws or DEFAULT_DRAWS, device, data_root, clip)
            if epochs is not None and epochs != [row["epoch"]]:
                raise ValueError(f"{run_dir} has no per-epoch GV snapshots (train with --set "
                                 f"run.gv_draws=K to save them); only its final checkpoint (epoch "
                                 f"{row['epoch']}) can be measured")
            rows = [dict(row, source="checkpoint")]
        out[name] = rows
    return out


COLUMNS = ["run", "method", "epoch", "gv", "trace", "mean_grad_sq", "num_parameters", "num_draws",
           "batch_size", "clip", "unbiased", "source"]


def write_csv(runs: dict[str, list[dict]], path) -> str:
    path = Path(path)

    def write(f):
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        for name, rows in runs.items():
            for r in rows:
                w.writerow({"run": name, **r})
    write_atomic(path, write, newline="")
    return str(path)


def print_method_summary(runs: dict[str, list[dict]], methods: dict[str, str]) -> None:
    """Per method: its runs' per-epoch mean GV, summarised as the median over epochs (and the
    median of the last third of the epochs)."""
    import statistics
    from .gv_plot import group_mean

    grouped: dict[str, list[str]] = {}
    for name, method in methods.items():
        grouped.setdefault(method, []).append(name)
    print("\n| method | runs | epochs | median GV over epochs | median GV, last third |")
    print("|---|---|---|---|---|")
    for method, names in grouped.items():
        mean = group_mean([[(r["epoch"], r["gv"]) for r in runs[n]] for n in names])
        if not mean:
            continue
        values = [v for _, v in mean]
        last = values[len(values) - max(1, len(values) // 3):]
        print(f"| {method} | {len(names)} | {len(values)} | {statistics.median(values):.4e} | "
              f"{statistics.median(last):.4e} |")


def cmd_gv(args) -> int:
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    runs = collect(args.run_dirs, draws=args.draws, epochs=args.epochs, recompute=args.recompute,
                   device=args.device, data_root=args.data_root, clip=args.clip)
    outs = args.out or ([Path(args.run_dirs[0]) / "gv.csv", Path(args.run_dirs[0]) / "gv.png"]
                        if len(args.run_dirs) == 1 else [Path("gv.csv"), Path("gv.png")])
    methods = {name: rows[0].get("method", name) if rows else name for name, rows in runs.items()}
    print("| run | epoch | GV (per parameter) | ‖ḡ‖²/P | draws | source |")
    print("|---|---|---|---|---|---|")
    for name, rows in runs.items():
        for r in rows:
            print(f"| {name} | {r['epoch']} | {r['gv']:.4e} | {r['mean_grad_sq']:.4e} | {r['num_draws']} "
                  f"| {r['source']} |")
    print_method_summary(runs, methods)
    for out in map(Path, outs):
        if out.suffix.lower() == ".png":
            from .gv_plot import gv_plot
            gv_plot({n: [(r["epoch"], r["gv"]) for r in rows] for n, rows in runs.items()}, out,
                    title="gradient variance", groups=methods)
        elif out.suffix.lower() == ".csv":
            write_csv(runs, out)
        else:
            raise ValueError(f"--out {out}: give a .csv or a .png path")
        print(f"wrote {out}")
    return 0


def add_gv_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``gv`` on the ``pada-fast`` sub-command parsers."""
    p = subparsers.add_parser(allow_abbrev=False, name="gv", help="gradient variance per epoch of trained runs (paper Fig. 4)",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run.out_dir of a training run; several "
                   "runs (e.g. SPOS and PA&DA) share one plot")
    p.add_argument("--draws", type=int, default=None,
                   help=f"(path, batch) draws when computing from a checkpoint (default {DEFAULT_DRAWS})")
    p.add_argument("--epochs", type=_parse_epochs, default=None, metavar="all|LIST",
                   help="0-based epochs of the saved snapshots to report (default all)")
    p.add_argument("--out", action="append", metavar="PATH.csv|PATH.png",
                   help="CSV table or PNG plot; repeatable (default RUN_DIR/gv.csv and RUN_DIR/gv.png)")
    p.add_argument("--recompute", action="store_true",
                   help="ignore saved snapshots and measure the final checkpoint now")
    p.add_argument("--clip", type=float, default=None,
                   help="clip each gradient's norm to this first, as training does (default: raw gradients)")
    p.add_argument("--device", default="auto")
    p.add_argument("--data-root", help="dataset root, if it moved since training")
    p.add_argument("--threads", type=int)
    p.set_defaults(func=cmd_gv)
    return p
