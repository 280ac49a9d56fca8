"""``method.reproduce``: the method as docs/method.md states it (``design``), or as the authors'
released NAS-Bench-201 code runs it (``official``), point by point.

==========================  ===========================================  =============================================
key                         design                                       official (the authors' train_panda_201.py)
==========================  ===========================================  =============================================
method.pa_aggregation       ``mean``: per (edge, op) ``sqrt(Σ_cells       ``official``: per step, for each op type the
                            ‖g‖²)``, averaged over the steps it trained;   sum over cells of its per-tensor gradient norms
                            shared p = mean over edges of per-edge means,  divided by the number of edges holding it
                            dead edges excluded                            (dead edges counted), then ``g ← (g + x) / 2``
                                                                           from ``g = 0`` at each epoch's start
method.da_aggregation       ``mean``: mean importance over the draws       ``official``: ``s ← x`` at the first draw of
                                                                           the epoch, then ``s ← (s + x) / 2``
method.schedule_offset      ``current``: the epoch after epoch e (0-based)  ``lagged``: it uses e/E (the authors set
                            uses δ = τ = (e+1)/E                            δ = τ = epoch/E before each epoch, and
                                                                            update p, q at its end)
optim.lr_schedule           ``per_step`` cosine                            ``per_epoch`` cosine (CosineAnnealingLR)
optim.update_unsampled      ``off``: only the sampled path moves           ``on``: candidates trained before keep zero
                                                                           gradients (PyTorch 1.7's zero_grad), so weight
                                                                           decay and momentum move them every step
==========================  ===========================================  =============================================

Points where the authors' code already does what docs/method.md does, so ``official`` changes nothing:
affine-free batch-statistics BN in the search cells and in the reduction blocks (``space.reduction_bn``
``batch``; ``affine`` is NAS-Bench-201's stand-alone networks' choice), shared p over op types
(``method.pa_granularity`` auto → shared for nb201), the first epoch a permutation of the data, the
DA importance ``‖softmax(z) − y‖₂`` before the update, gradient clipping at 5 before the norms are
read, CIFAR's crop:4+flip recipe (``data.augment`` default).
"""
from __future__ import annotations

# key -> (design value, official value)
POINTS: dict[tuple[str, str], tuple[str, str]] = {
    ("method", "pa_aggregation"): ("mean", "official"),
    ("method", "da_aggregation"): ("mean", "official"),
    ("method", "schedule_offset"): ("current", "lagged"),
    ("optim", "lr_schedule"): ("per_step", "per_epoch"),
    ("optim", "update_unsampled"): ("off", "on"),
}


def resolve_reproduction(cfg) -> dict[str, str]:
    """Replace every ``auto`` point of ``cfg`` by ``method.reproduce``'s value (in place, so the
    saved config records what ran) and return the points as ``{"section.key": value}``."""
    official = cfg.method.reproduce == "official"
    resolved = {}
    for (section, key), values in POINTS.items():
        part = getattr(cfg, section)
        if getattr(part, key) == "auto":
            setattr(part, key, values[1] if official else values[0])
        resolved[f"{section}.{key}"] = getattr(part, key)
    return resolved

