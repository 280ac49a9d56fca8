"""The held-out images a supernet is judged on, as ranking and search both build them.

The split is drawn with ``data.split_seed`` (never a training seed), checked against the classes
the supernet was trained on, and served in one seeded class-mixed order in batches of a stated
size; the description of all of it goes into each output's ``metrics.json``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from pada_fast.data.datasets import build_split
from pada_fast.errors import DataError

from .inherited import evaluation_order, fixed_batches, order_digest


@dataclass
class HeldOut:
    dataset: object
    batches: list
    calib: list | None
    protocol: dict


def check_classes(trained: list[str] | None, num_classes: int, dataset, where: str) -> None:
    """Refuse a held-out set whose classes are not the ones the supernet learned: its labels
    would be read as other classes."""
    found = list(dataset.classes)
    if trained is not None:
        if found != list(trained):
            missing = [c for c in trained if c not in found]
            extra = [c for c in found if c not in trained]
            detail = "; ".join(part for part in (
                f"missing {', '.join(missing)}" if missing else "",
                f"not trained on {', '.join(extra)}" if extra else "",
                "same names in another order" if not missing and not extra else "") if part)
            raise ValueError(f"{where} has classes {', '.join(found)} but the supernet was trained on "
                             f"{', '.join(trained)} ({detail}); rank on a split with exactly the "
                             "training classes (check --data-root)")
    elif len(found) != num_classes:
        raise ValueError(f"{where} has {len(found)} classes but the supernet was trained on "
                         f"{num_classes}; rank on a split with exactly the training classes "
                         "(check --data-root)")


def load_heldout(cfg, state: dict, device: torch.device, *, data_root: str | None = None,
                 split: str | None = None, subset: int | None = -1, batch_size: int | None = None,
                 recalibrate_batches: int = 0, channels_last: bool = True) -> HeldOut:
    """``split`` (default ``data.eval_split``) of the run's dataset, ``subset`` images of it
    (-1: ``data.eval_subset``), in fixed class-mixed batches of ``batch_size`` (default
    ``data.eval_batch_size``); with ``recalibrate_batches`` > 0 also that many training batches of
    ``data.batch_size`` in the same kind of order, for running-statistics BatchNorm."""
    d = cfg.data
    split = split or d.eval_split
    subset = d.eval_subset if subset == -1 else subset
    batch_size = batch_size or d.eval_batch_size
    root = data_root or d.root
    if root and not Path(root).exists():
        raise DataError(f"the {d.dataset} data the run was trained on is not at {root} any more; "
                        "pass --data-root with its new location")
    dataset = build_split(d, split, subset=subset, root=data_root)
    where = f"the {split} split of {d.dataset} at {root or '(bundled)'}"
    check_classes(state.get("classes"), int(state["num_classes"]), dataset, where)
    order = evaluation_order(dataset, d.split_seed)
    batches = fixed_batches(dataset, batch_size, device, order=order, channels_last=channels_last)
    protocol = {
        "eval_split": split, "eval_images": len(dataset),
        "eval_subset": "all" if subset is None else f"{subset} class-stratified",
        "eval_batch_size": batch_size, "eval_batches": len(batches),
        "eval_order": f"class-mixed, seed {d.split_seed} (data.split_seed)",
        "eval_order_sha1": order_digest(order), "split_seed": d.split_seed,
    }
    calib = None
    if recalibrate_batches:
        train = build_split(d, "train", subset=d.train_subset, root=data_root)
        calib_order = evaluation_order(train, d.split_seed, recalibrate_batches * d.batch_size)
        calib = fixed_batches(train, d.batch_size, device, order=calib_order,
                              channels_last=channels_last)
        protocol.update({"bn_calibration": f"{len(calib)} training batches of {d.batch_size}, "
                                           f"class-mixed order, seed {d.split_seed}",
                         "bn_calibration_sha1": order_digest(calib_order)})
    else:
        protocol["bn_calibration"] = "none"
    return HeldOut(dataset, batches, calib, protocol)


__all__ = ["HeldOut", "check_classes", "load_heldout"]
