"""Numeric faults: a step whose loss or gradients are NaN/Inf must not change anything.

:class:`NonFiniteGuard` sits between ``backward()`` and the optimiser step. Per step it computes
one flag, "the loss or the (clipped, all-reduced) gradients are not finite", and when it is set
the step changes nothing: no weight update, no momentum update, no gradient-norm record for
PA's ``p``, no importance record for DA's ``q``. The batch and path of a skipped step are still
consumed (the epoch's stream and paths are fixed by (seed, epoch)), so a resumed run replays the
same decisions. Skips are counted; more than ``max_consecutive`` in a row, or more than
``max_total`` in all, stops training with :class:`NonFiniteError`.

Two ways to apply the decision, picked by ``mode``:

``host``
    Read the flag on the host every step (``.item()``) and simply do not call ``record`` and
    ``optimizer.step()``. On the CPU that read costs nothing. On a GPU it is one host-device
    synchronisation per step: the host cannot queue step t+1's kernels before step t's backward
    has finished, which costs the launch overlap (a few percent on small models, where launch
    latency matters, little on large ones).

``device``
    No synchronisation. The flag stays on the device: the optimiser must support a device
    ``found_inf`` (``torch.optim.SGD(..., fused=True)``, as ``torch.amp.GradScaler`` uses it),
    whose kernel skips the whole update, momentum included, when the flag is set; the samplers'
    accumulators are restored where the flag is set (the ``[layers, candidates]`` PA buffers
    entirely, the DA buffers at the batch's indices only); the counters are device tensors read
    by :meth:`NonFiniteGuard.poll`, so a limit is noticed at the next poll (log interval, epoch
    end, checkpoint), not at once; the steps in between are skipped all the same. Fused SGD also
    needs every momentum buffer to exist before the first step (it cannot mix new and existing
    buffers, as a supernet does when a candidate is first sampled): :func:`init_momentum_buffers`.

``auto`` (default) chooses ``device`` when the optimiser supports ``found_inf`` (the trainer's
fused SGD, on the CPU as on CUDA), else ``host``. On finite steps both modes train bitwise alike.

With fp16 autocast, pass the gradient scaler's ``found_inf`` (after ``scaler.unscale_``) to
:meth:`NonFiniteGuard.check`: a step the scaler finds overflowing is skipped like any other
non-finite step (and counted), and ``scaler.update()`` then lowers the scale.

What the trainer calls each step, after ``backward()``, clipping and (distributed) the gradient
all-reduce::

    guard.check(loss, grads, total_norm=clip_norm_or_None, step=global_step)
    guard.record(path_sampler, path_grads, slots, data_sampler, indices, importance)
    guard.step(optimizer)
    loss_sum += guard.masked(per_sample.detach().sum())     # optional: keep logs finite

and ``guard.poll()`` at log intervals and epoch ends (returns a line to print when steps were
skipped since the last poll, raises :class:`NonFiniteError` past a limit); ``state_dict`` /
``load_state_dict`` go into the checkpoint.
"""
from __future__ import annotations

from typing import Sequence

import torch

from pada_fast.errors import NumericError

class NonFiniteError(NumericError):
    """Too many steps had a non-finite loss or gradient; training stopped."""


def init_momentum_buffers(optimizer: torch.optim.Optimizer) -> int:
    """Create a zero momentum buffer for every parameter of every group with momentum that has
    none yet; returns how many were created.

    Fused SGD takes a step's buffers all new or all existing, never mixed, and a supernet's steps
    mix them (a candidate trained for the first time). A zero buffer gives the same first update
    as a missing one: ``0 · momentum + grad = grad``."""
    created = 0
    for group in optimizer.param_groups:
        if not group.get("momentum", 0):
            continue
        for p in group["params"]:
            state = optimizer.state[p]
            if state.get("momentum_buffer") is None:
                state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                created += 1
    return created


def supports_device_skip(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer.step()`` honours a device ``found_inf`` flag (the fused optimisers)."""
    return bool(getattr(optimizer, "_step_supports_amp_scaling", False)) and all(
        g.get("fused") for g in optimizer.param_groups)


def scaler_found_inf(scaler: torch.amp.GradScaler, optimizer: torch.optim.Optimizer) -> torch.Tensor:
    """The overflow flag ``scaler.unscale_(optimizer)`` recorded for this step (summed over
    devices; non-zero = overflow), without reading it to the host. GradScaler keeps it per
    optimiser for its own ``step``/``update``; this reads the same record."""
    found = scaler._per_optimizer_states[id(optimizer)]["found_inf_per_device"]
    if not found:
        raise RuntimeError("scaler_found_inf needs scaler.unscale_(optimizer) to have run this step")
    return torch.stack([f.reshape(()) for f in found.values()]).sum()


def _world_size(group) -> int:
    import torch.distributed as dist
    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size(group)


class NonFiniteGuard:
    """Skip-and-count for steps whose loss or gradients are not finite (see the module doc).

    ``max_consecutive``: skipped steps tolerated in a row (0: stop at the first).
    ``max_total``: skipped steps tolerated in all (None: no limit).
    ``mode``: ``auto``, ``host`` or ``device``. ``optimizer``: needed to choose ``auto`` and to
    prepare ``device`` mode (its momentum buffers are created here).
    ``process_group``: with torch.distributed initialised and more than one rank, the flag is
    all-reduced (max) so every rank skips the same steps even if only one rank's loss is bad.
    """

    MODES = ("auto", "host", "device")

    def __init__(self, max_consecutive: int = 10, max_total: int | None = None, *,
                 device: torch.device | str = "cpu", mode: str = "auto",
                 optimizer: torch.optim.Optimizer | None = None, process_group=None):
        if int(max_consecutive) < 0:
            raise ValueError(f"max_consecutive must be >= 0, got {max_consecutive}")
        if max_total is not None and int(max_total) < 0:
            raise ValueError(f"max_total must be >= 0 or None, got {max_total}")
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {', '.join(self.MODES)}, got {mode!r}")
        self.max_consecutive = int(max_consecutive)
        self.max_total = None if max_total is None else int(max_total)
        self.device = torch.device(device)
        if mode == "auto":
            mode = "device" if optimizer is not None and supports_device_skip(optimizer) else "host"
        if mode == "device":
            if optimizer is None or not supports_device_skip(optimizer):
                raise ValueError("mode='device' needs an optimiser that honours a device found_inf "
                                 "flag, e.g. torch.optim.SGD(..., fused=True); use mode='host' "
                                 "otherwise")
            init_momentum_buffers(optimizer)
        self.mode = mode
        self.process_group = process_group
        self._found = torch.zeros(1, dtype=torch.float32, device=self.device)
        self._skip_flag = self._found.bool().reshape(())
        # total, current run, longest run, last skipped step (-1: none), kept on the host; device
        # mode keeps each step's flag (a device tensor) until the next poll reads them all at once.
        self._host = [0, 0, 0, -1]
        self._pending: list[tuple[torch.Tensor, int]] = []
        self._skip = False
        self._step: int | None = None
        self._reported_total = 0

    # -- per step --------------------------------------------------------------------------------
    def check(self, loss: torch.Tensor, grads: Sequence[torch.Tensor | None],
              total_norm: torch.Tensor | None = None, step: int | None = None,
              found_inf: torch.Tensor | None = None):
        """Decide whether this step may update anything. ``loss``: the loss that was
        backpropagated (any shape); ``grads``: the gradients the optimiser would apply (None
        entries ignored); ``total_norm``: the norm ``clip_grad_norm_`` returned, if clipping ran
        (it covers every gradient, so no second pass is needed); ``step``: the global step, for
        messages; ``found_inf``: a gradient scaler's overflow flag (any shape, non-zero = overflow).

        Host mode returns True when the step is skipped and raises :class:`NonFiniteError` past a
        limit; device mode returns the device flag (float32 [1], 1 = skip) without waiting."""
        self._step = step
        if total_norm is None:
            present = [g for g in grads if g is not None]
            if present:
                norms = torch._foreach_norm(present)
                total_norm = torch.linalg.vector_norm(torch.stack([n.to(torch.float32) for n in norms]))
        # One finiteness test of everything: a NaN or an infinity anywhere makes the sum non-finite.
        checked = loss.detach().to(torch.float32).sum()
        if total_norm is not None:
            checked = checked + total_norm.detach().to(torch.float32)
        bad = ~torch.isfinite(checked)
        if found_inf is not None:
            bad = bad | (found_inf.detach() != 0).any()
        found = bad.to(torch.float32).reshape(1)          # a new tensor each step (device mode keeps it)
        if _world_size(self.process_group) > 1:
            import torch.distributed as dist
            dist.all_reduce(found, op=dist.ReduceOp.MAX, group=self.process_group)
        self._found = found
        if self.mode == "host":
            self._skip = bool(found.item())
            self._count([self._skip], [step])
            return self._skip
        self._skip_flag = found.bool().reshape(())
        self._pending.append((found, -1 if step is None else int(step)))
        return found

    def _count(self, flags, steps, raise_past_limits: bool = True) -> None:
        """Add steps' skip flags (in order) to the host counters (and raise past a limit)."""
        total, run, longest, last = self._host
        for skipped, step in zip(flags, steps):
            if skipped:
                total, run, last = total + 1, run + 1, (-1 if step is None else int(step))
                longest = max(longest, run)
            else:
                run = 0
        self._host = [total, run, longest, last]
        if raise_past_limits:
            self._raise_past_limits(total, longest, last)

    def _flush(self) -> None:
        """Device mode: read the flags of the steps since the last read (one synchronisation)."""
        if not self._pending:
            return
        flags = torch.cat([f for f, _ in self._pending]).tolist()
        steps = [s for _, s in self._pending]
        self._pending = []
        self._count([f != 0 for f in flags], steps, raise_past_limits=False)   # poll() raises

    def record(self, path_sampler, path_grads: Sequence[torch.Tensor | None], slots: Sequence[int],
               data_sampler=None, indices: torch.Tensor | None = None,
               importance: torch.Tensor | None = None, arch=None) -> None:
        """``path_sampler.record(path_grads, slots, arch)`` and ``data_sampler.record(indices,
        importance)``, unless this step is skipped."""
        if self.mode == "host":
            if not self._skip:
                path_sampler.record(path_grads, slots, arch)
                if data_sampler is not None:
                    data_sampler.record(indices, importance)
            return
        bad = self._skip_flag
        path_sampler.record_masked(bad, path_grads, slots, arch)
        if data_sampler is not None:
            data_sampler.record_masked(bad, indices, importance)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """``optimizer.step()``, unless this step is skipped (host mode: not called; device mode:
        called with the flag, and the fused kernel leaves weights and momentum untouched)."""
        if self.mode == "host":
            if not self._skip:
                optimizer.step()
            return
        optimizer.grad_scale = None
        optimizer.found_inf = self._found
        try:
            optimizer.step()
        finally:
            del optimizer.found_inf, optimizer.grad_scale

    def masked(self, value: torch.Tensor) -> torch.Tensor:
        """``value``, or zero when this step is skipped (for running loss/accuracy sums)."""
        if self.mode == "host":
            return torch.zeros_like(value) if self._skip else value
        return torch.where(self._skip_flag, 0, value)

    # -- reporting ---------------------------------------------------------------------------------
    def counts(self) -> dict:
        """Skipped steps: ``total``, ``consecutive`` (current run), ``longest_run``,
        ``last_step`` (-1: none). Device mode reads the flags of the steps since the last read
        (one synchronisation)."""
        self._flush()
        total, run, longest, last = self._host
        return {"total": total, "consecutive": run, "longest_run": longest, "last_step": last}

    def poll(self) -> str | None:
        """Raise :class:`NonFiniteError` past a limit; otherwise a line describing the steps
        skipped since the last poll (None if there were none)."""
        c = self.counts()
        self._raise_past_limits(c["total"], c["longest_run"], c["last_step"])
        new = c["total"] - self._reported_total
        if new <= 0:
            return None
        self._reported_total = c["total"]
        where = f", last at step {c['last_step']}" if c["last_step"] >= 0 else ""
        return (f"skipped {new} step(s) with a non-finite loss or gradient ({c['total']} in total{where}); "
                "weights, momentum and sampler statistics were left unchanged on those steps")

    def _raise_past_limits(self, total: int, longest: int, last: int) -> None:
        at = f" at step {last}" if last >= 0 else ""
        if self._step is not None and last >= 0 and self._step != last:
            at += f" (noticed at step {self._step})"
        advice = ("The weights, momentum and PA/DA statistics are those of the last finite step; lower "
                  "optim.lr, set optim.grad_clip, or look for NaN/Inf in the data.")
        if longest > self.max_consecutive:
            raise NonFiniteError(
                f"training stopped{at}: the loss or gradients were not finite on {longest} consecutive "
                f"steps (run.nonfinite_max_consecutive={self.max_consecutive}); {total} step(s) "
                f"skipped in total. {advice}")
        if self.max_total is not None and total > self.max_total:
            raise NonFiniteError(
                f"training stopped{at}: {total} steps had a non-finite loss or gradients "
                f"(run.nonfinite_max_total={self.max_total}). {advice}")

    # -- checkpointing -------------------------------------------------------------------------
    def state_dict(self) -> dict:
        c = self.counts()
        return {**c, "reported_total": self._reported_total}

    def load_state_dict(self, state: dict) -> None:
        values = [int(state["total"]), int(state["consecutive"]), int(state["longest_run"]),
                  int(state["last_step"])]
        self._host = list(values)
        self._pending = []
        self._reported_total = int(state.get("reported_total", values[0]))
