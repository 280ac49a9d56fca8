"""Gradient variance (GV), the PA&DA paper's diagnostic (docs/method.md; the paper's Fig. 4).

At one fixed weight snapshot, K (path, batch) pairs are drawn from the samplers under test, exactly
as training would draw them (paths from ``path_sampler.sample_epoch``, batches from
``data_sampler.epoch_stream`` served by the torch loader), and each pair's stochastic gradient
``g_k`` of the training loss is computed. GV is

    GV = (1 / P) · Σ_j Var_k[g_k,j]  =  E‖g − ḡ‖² / P

over the flattened gradient of **all** P trainable supernet parameters: the paper measures the
supernet's gradient, so a parameter the sampled path does not touch contributes a gradient of
exactly 0 for that draw (it is not skipped). The variance is the unbiased sample variance over
the K draws (``ddof=1``; ``ddof=0`` gives the plain mean of ``‖g_k − ḡ‖²``).

What the gradient is: the gradient of the loss the trainer backpropagates — the fused
``cross_entropy_with_importance`` per-sample loss (with the config's label smoothing), averaged
over the batch, reweighted by ``1/(N·q_i) · Π 1/(K_l·p)`` only when ``method.unbiased`` is set —
with the model in train mode. It is taken before gradient clipping unless ``clip`` is given, and
without weight decay or momentum (those belong to the optimizer, not the estimator).

Nothing about training is disturbed: no optimizer step, no sampler ``record``; the caller's torch
(CPU and CUDA), numpy and Python RNG states, the model's buffers (running-statistics BN), its
train/eval mode and every parameter's ``.grad`` are restored afterwards. Only a running mean and
sum of squared deviations (Welford, float64) are kept, never the K gradients: memory is
2 × P × 8 bytes plus one gradient.
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import torch

from pada_fast import ops
from pada_fast.data.loader import build_loader
from pada_fast.files import write_text_atomic
from pada_fast.rng import capture_rng_state, restore_rng_state

GV_FILE = "gv.jsonl"


def _get(cfg_like, section: str, key: str, default):
    return getattr(getattr(cfg_like, section, None), key, default)


@contextmanager
def preserved_training_state(model: torch.nn.Module):
    """Restore RNG states, buffers, train/eval mode and ``.grad`` of ``model`` on exit."""
    rng = capture_rng_state()
    was_training = model.training
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    params = list(model.parameters())
    grads = [p.grad for p in params]
    try:
        yield
    finally:
        for p, g in zip(params, grads):
            p.grad = g
        with torch.no_grad():
            for name, b in model.named_buffers():
                saved = buffers.get(name)
                if saved is not None:
                    b.copy_(saved)
        model.train(was_training)
        restore_rng_state(rng)


def draw_pairs(path_sampler, data_sampler, num_draws: int, batch_size: int,
               generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The K paths ``[K, layers]`` and the ``K · batch_size`` stream positions' dataset indices,
    drawn as the trainer draws an epoch (index stream first, then paths, one generator). When the
    sampler's stream is shorter than ``K · batch_size`` (a uniform permutation of a small dataset)
    further streams are appended, as consecutive epochs would be."""
    need = num_draws * batch_size
    chunks, have = [], 0
    while have < need:
        chunk = data_sampler.epoch_stream(generator, need - have)
        if chunk.numel() == 0:
            raise ValueError("the data sampler returned an empty index stream")
        chunks.append(chunk)
        have += chunk.numel()
    stream = torch.cat(chunks)[:need]
    paths = path_sampler.sample_epoch(num_draws, generator)
    return paths, stream


def _parameter_slots(model, paths: torch.Tensor) -> dict[int, int]:
    """id(parameter) -> flat slot (layer * max_candidates + candidate) for the candidate
    operations' parameters: those of the sampled paths plus, where valid, the paths that take
    candidate k on every layer (which cover every candidate of NAS-Bench-201). Parameters not
    found belong to the fixed skeleton ("shared")."""
    if not hasattr(model, "path_parameters"):
        return {}
    archs = [tuple(int(a) for a in row) for row in paths.tolist()]
    try:
        archs += [(k,) * model.num_layers for k in range(model.max_candidates)]
    except (AttributeError, NotImplementedError):
        pass
    slots: dict[int, int] = {}
    for arch in archs:
        try:
            params, arch_slots = model.path_parameters(arch)
        except (ValueError, IndexError, KeyError):
            continue
        for p, s in zip(params, arch_slots):
            slots[id(p)] = int(s)
    return slots


def gradient_variance(model, path_sampler, data_sampler, dataset, cfg_like, num_draws: int = 32,
                      generator: Optional[torch.Generator] = None, device=None, epoch: int = 0,
                      ddof: int = 1, clip: Optional[float] = None, breakdown: bool = True) -> dict:
    """Gradient variance of the supernet's stochastic gradient under the given samplers.

    ``model``: the supernet (``forward(x, arch)``, ``path_parameters``); ``path_sampler`` /
    ``data_sampler``: the samplers under test (only their draw methods and, with
    ``method.unbiased``, ``importance_weights`` are called: their state is not changed);
    ``dataset``: the training set (with its training augmentation); ``cfg_like``: anything with
    ``data.batch_size``, ``data.num_workers``, ``optim.label_smoothing``, ``method.unbiased`` and
    ``run.seed`` (a :class:`~pada_fast.config.Config`); ``generator``: CPU generator of the draws
    (default: seeded from ``run.seed`` and ``epoch``); ``epoch`` also seeds the augmentation;
    ``clip``: clip each g_k's norm to this value first, as the trainer does before its step
    (default: no clipping, the raw estimator).

    Returns ``gv`` (per-parameter variance, see the module docstring), ``trace`` (Σ_j Var),
    ``mean_grad_sq`` (‖ḡ‖² / P, the squared mean gradient per parameter, for scale),
    ``num_parameters`` P, ``num_draws``, ``ddof``, ``batch_size``, ``clip``, ``unbiased``, and with
    ``breakdown`` ``by_layer`` {"shared" | "layer l": trace part} and ``by_slot`` [layers][cands]
    trace parts of the candidate operations (sum over cells)."""
    if num_draws < max(2, ddof + 1):
        raise ValueError(f"num_draws must be at least {max(2, ddof + 1)} to estimate a variance, got {num_draws}")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    seed, batch_size, label_smoothing, unbiased, num_workers = _options(cfg_like, len(dataset))
    if generator is None:
        generator = torch.Generator().manual_seed((seed * 1_000_003 + epoch * 104_729 + 977) % (2**63))

    params = [p for p in model.parameters() if p.requires_grad]
    sizes = [p.numel() for p in params]
    total = sum(sizes)
    mean, m2 = (torch.zeros(total, dtype=torch.float64, device=device) for _ in range(2))

    with preserved_training_state(model):
        paths, stream = draw_pairs(path_sampler, data_sampler, num_draws, batch_size, generator)
        path_weights = path_sampler.importance_weights(paths).to(torch.float32) if unbiased else None
        loader = build_loader(dataset, stream, batch_size, num_workers=num_workers, drop_last=True,
                              seed=seed, epoch=epoch, pin_memory=device.type == "cuda")
        model.train()
        k = 0
        # the inputs the training step would give this model (run.dtype, run.channels_last)
        memory_format = torch.channels_last if _get(cfg_like, "run", "channels_last", False) else torch.contiguous_format
        for k, batch in enumerate(loader, start=1):
            weight = None if path_weights is None else path_weights[k - 1].to(device)
            g = _draw_gradient(model, params, batch, tuple(paths[k - 1].tolist()), data_sampler, weight,
                               label_smoothing, clip, device, memory_format)
            delta = g - mean
            mean.add_(delta, alpha=1.0 / k)
            m2.addcmul_(delta, g - mean)
        if k != num_draws:
            raise RuntimeError(f"drew {num_draws} batches but the loader served {k}")
        slots = _parameter_slots(model, paths) if breakdown else {}

    var_sum = m2 / (num_draws - ddof)
    trace = float(var_sum.sum())
    result = {"gv": trace / total, "trace": trace, "mean_grad_sq": float((mean * mean).sum()) / total,
              "num_parameters": total, "num_draws": num_draws, "ddof": ddof, "batch_size": batch_size,
              "clip": clip, "unbiased": unbiased}
    if breakdown:
        result.update(_breakdown(params, sizes, var_sum, slots, path_sampler))
    return result


def _options(cfg_like, num_samples: int) -> tuple[int, int, float, bool, int]:
    """(run.seed, batch size, label smoothing, method.unbiased, data.num_workers) of ``cfg_like``."""
    return (int(_get(cfg_like, "run", "seed", 0)), min(int(_get(cfg_like, "data", "batch_size", 64)), num_samples),
            float(_get(cfg_like, "optim", "label_smoothing", 0.0)), bool(_get(cfg_like, "method", "unbiased", False)),
            int(_get(cfg_like, "data", "num_workers", 0)))


def _draw_gradient(model, params, batch, arch, data_sampler, path_weight, label_smoothing, clip, device,
                   memory_format) -> torch.Tensor:
    """One draw's stochastic gradient, flattened to float64 (zeros for parameters off the path)."""
    images, labels, indices = batch
    images = images.to(device, dtype=params[0].dtype, non_blocking=True, memory_format=memory_format)
    labels = labels.to(device, non_blocking=True)
    for p in params:
        p.grad = None
    logits = model(images, arch)
    per_sample, _ = ops.cross_entropy_with_importance(logits, labels, label_smoothing)
    if path_weight is not None:
        weights = data_sampler.importance_weights(indices.to(device)) * path_weight
        loss = (per_sample * weights).mean()
    else:
        loss = per_sample.mean()
    loss.backward()
    if clip:
        torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], clip)
    return torch.cat([(p.grad.detach().reshape(-1) if p.grad is not None
                       else torch.zeros(p.numel(), device=device)).to(torch.float64) for p in params])


def _breakdown(params, sizes, var_sum, slots: dict, path_sampler) -> dict:
    """The variance's trace by layer ("shared" for the parameters every path uses) and by
    candidate slot."""
    per_tensor = torch.stack([seg.sum() for seg in var_sum.split(sizes)]).tolist()
    mask = getattr(path_sampler, "candidate_mask", None)
    n_layers, n_cands = (tuple(mask.shape) if mask is not None else (0, 0))
    by_slot = [[0.0] * n_cands for _ in range(n_layers)]
    by_layer: dict[str, float] = {"shared": 0.0}
    for p, v in zip(params, per_tensor):
        slot = slots.get(id(p))
        if slot is None or not n_cands:
            by_layer["shared"] += v
            continue
        layer, cand = divmod(slot, n_cands)
        by_slot[layer][cand] += v
        by_layer[f"layer {layer}"] = by_layer.get(f"layer {layer}", 0.0) + v
    return {"by_layer": by_layer, "by_slot": by_slot}


def measure_epoch_gv(model, path_sampler, data_sampler, train_set, cfg, out_dir, device, draws: int,
                     epoch: Optional[int] = None, clip: Optional[float] = None, save: bool = True) -> dict:
    """GV of a training run at its current weights and samplers, for a call at the end of epoch
    ``epoch`` (0-based, after the samplers' ``end_epoch``: the distributions are the ones the next
    epoch draws from). Appends ``{"epoch", "method", "gv", ...}`` to ``out_dir / gv.jsonl``
    (replacing an earlier row of the same epoch, as after a resume) and returns that row.
    Training is not perturbed (see :func:`gradient_variance`); the draws come from their own
    generator, seeded from ``run.seed`` and the epoch."""
    epoch = int(path_sampler.epochs_finished - 1 if epoch is None else epoch)
    result = gradient_variance(model, path_sampler, data_sampler, train_set, cfg, num_draws=draws,
                               device=device, epoch=epoch, clip=clip)
    row = {"epoch": epoch, "method": cfg.method.name, **result}
    if save:
        append_gv_row(Path(out_dir) / GV_FILE, row)
    return row


def append_gv_row(path: Path, row: dict) -> None:
    rows = [r for r in read_gv_rows(path) if r["epoch"] != row["epoch"]] if path.exists() else []
    rows.append(row)
    rows.sort(key=lambda r: r["epoch"])
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in rows))


def read_gv_rows(path: Path) -> list[dict]:
    """Rows of a run's ``gv.jsonl``, one per epoch (the last one written wins), by epoch."""
    rows: dict[int, dict] = {}
    for line in Path(path).read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            rows[int(r["epoch"])] = r
    return [rows[e] for e in sorted(rows)]


__all__ = ["GV_FILE", "append_gv_row", "draw_pairs", "gradient_variance", "measure_epoch_gv",
           "preserved_training_state", "read_gv_rows"]
