"""Ranking through training: the probe's tau against epochs, per method over seeds, from runs trained
with ``--set probe.every=K`` (their ``probe.jsonl``), e.g. the run folders of ``ablation.py``.

Reports, per method: tau (mean ± std over seeds) at every probed epoch and a PNG of the curves; the
epochs each method needs to reach the baseline's final mean tau (``--baseline``, default spos) as a
fraction of the baseline's epochs; and where the stability stop (``probe.stop_tau``,
``probe.stop_probes``) would have ended each run, next to the run's tau plateau (the first probe
whose tau is within ``--plateau-margin`` of the run's best).

    python benchmarks/probe_study.py runs/fm28_ablation --methods spos,pada,pada_official,fairnas \\
        --stop-tau 0.9 --stop-probes 3 --out runs/fm28_ablation/probe_curves.png
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from pada_fast.evaluate.probe import read_probe_log


def runs_of(root: Path, method: str) -> list[list[dict]]:
    """The probe records of every seed folder ``root/<method>/s<seed>``, seed order."""
    folders = sorted((root / method).glob("s*"), key=lambda p: int(p.name[1:]) if p.name[1:].isdigit() else 0)
    return [r for r in (read_probe_log(f) for f in folders) if r]


def mean_curve(runs: list[list[dict]]) -> dict[int, list[float]]:
    """epoch (1-based) -> the taus of every run probed there."""
    curve: dict[int, list[float]] = {}
    for records in runs:
        for r in records:
            if r.get("tau") is not None:
                curve.setdefault(r["epoch"] + 1, []).append(r["tau"])
    return dict(sorted(curve.items()))


def first_epoch_reaching(curve: dict[int, list[float]], target: float) -> int | None:
    """The first probed epoch whose mean tau is at least ``target``."""
    return next((e for e, taus in curve.items() if statistics.mean(taus) >= target), None)


def stability_stop(records: list[dict], stop_tau: float, stop_probes: int) -> int | None:
    """The epoch (1-based) after which the stability rule ends the run, or None."""
    stable = 0
    for r in records:
        if r.get("stability") is not None:
            stable = stable + 1 if r["stability"] >= stop_tau else 0
        if stable >= stop_probes:
            return r["epoch"] + 1
    return None


def plateau_epoch(records: list[dict], margin: float) -> int | None:
    taus = [(r["epoch"] + 1, r["tau"]) for r in records if r.get("tau") is not None]
    if not taus:
        return None
    best = max(t for _, t in taus)
    return next(e for e, t in taus if t >= best - margin)


def plot(curves: dict[str, dict[int, list[float]]], path: Path, title: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4.2))
    axes = figure.add_subplot()
    for method, curve in curves.items():
        epochs = list(curve)
        means = [statistics.mean(v) for v in curve.values()]
        stds = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in curve.values()]
        axes.errorbar(epochs, means, yerr=stds, marker="o", capsize=3, label=f"{method} (n={max(map(len, curve.values()))})")
    axes.set_xlabel("epoch")
    axes.set_ylabel("Kendall tau (probe architectures)")
    axes.grid(alpha=0.3)
    axes.set_title(title)
    axes.legend(loc="lower right", fontsize="small")
    figure.tight_layout()
    FigureCanvasAgg(figure)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    ap.add_argument("root", help="folder holding <method>/s<seed>/probe.jsonl")
    ap.add_argument("--methods", default="spos,pada", help="the method folders (ablation.py's names, spaces as _)")
    ap.add_argument("--baseline", default="spos")
    ap.add_argument("--stop-tau", type=float, default=0.9)
    ap.add_argument("--stop-probes", type=int, default=3)
    ap.add_argument("--plateau-margin", type=float, default=0.02)
    ap.add_argument("--out", required=True, help="PNG of the curves (summary JSON beside it)")
    args = ap.parse_args(argv)
    root = Path(args.root)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    runs = {m: runs_of(root, m) for m in methods}
    missing = [m for m, r in runs.items() if not r]
    if missing:
        ap.error(f"no probe.jsonl under {', '.join(str(root / m) for m in missing)}")
    curves = {m: mean_curve(r) for m, r in runs.items()}
    epochs = sorted({e for c in curves.values() for e in c})
    print("| epoch | " + " | ".join(methods) + " |")
    print("|---" * (len(methods) + 1) + "|")
    for e in epochs:
        cells = []
        for m in methods:
            taus = curves[m].get(e)
            cells.append("" if not taus else f"{statistics.mean(taus):.3f} ± "
                         f"{statistics.stdev(taus) if len(taus) > 1 else 0.0:.3f}")
        print(f"| {e} | " + " | ".join(cells) + " |")
    summary = {"curves": {m: {str(e): v for e, v in c.items()} for m, c in curves.items()}}
    if args.baseline in curves:
        base = curves[args.baseline]
        last = max(base)
        target = statistics.mean(base[last])
        print(f"\n{args.baseline}'s final mean tau (epoch {last}): {target:.3f}")
        summary["baseline"] = {"method": args.baseline, "final_epoch": last, "final_tau": target, "reach": {}}
        for m in methods:
            reach = first_epoch_reaching(curves[m], target)
            text = "never (within the probed epochs)" if reach is None else f"epoch {reach} ({reach / last:.2f} of {last})"
            print(f"- {m} reaches it at {text}")
            summary["baseline"]["reach"][m] = None if reach is None else reach / last
    print(f"\nstability stop (tau between successive probes >= {args.stop_tau} for {args.stop_probes} probes) "
          f"vs the tau plateau (first probe within {args.plateau_margin} of the run's best):")
    summary["stability"] = {}
    for m in methods:
        rows = []
        for seed, records in enumerate(runs[m]):
            stop = stability_stop(records, args.stop_tau, args.stop_probes)
            flat = plateau_epoch(records, args.plateau_margin)
            tau_at_stop = next((r["tau"] for r in records if stop is not None and r["epoch"] + 1 == stop), None)
            final = records[-1].get("tau")
            rows.append({"seed": seed, "stop_epoch": stop, "plateau_epoch": flat, "tau_at_stop": tau_at_stop,
                         "final_tau": final})
            print(f"- {m} seed {seed}: stops after epoch {stop if stop is not None else '- (never)'}; plateau at "
                  f"epoch {flat}; tau there {tau_at_stop if tau_at_stop is None else round(tau_at_stop, 3)} vs final "
                  f"{final if final is None else round(final, 3)}")
        summary["stability"][m] = rows
    plot(curves, Path(args.out), f"ranking probe over training ({root.name})")
    Path(args.out).with_suffix(".json").write_text(json.dumps(summary, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
