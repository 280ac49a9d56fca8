"""Training steps: what one optimiser step does to one batch. The loop (:mod:`.loop`) calls
``step(state, batch)`` and knows nothing else about it.

- :class:`SupernetStep`: the step of SPOS, PA, DA, PA&DA and FairNAS (docs/method.md): this
  step's path(s) on the batch, the loss and every sample's importance in one fused op, gradients
  averaged over ranks and clipped, PA's and DA's records, the update.
- :class:`PlainStep`: a stand-alone network (retraining): forward, loss (with an auxiliary head's
  when the network has one), gradients averaged and clipped, the update.

Both run under the trainer's :class:`~.precision.Precision` and its non-finite guard: a step whose
loss or gradients are not finite changes nothing and is counted; nothing is read to the host.
"""
from __future__ import annotations

import weakref

import torch

from pada_fast import ops

from . import distributed


def _to_device(t, batch):
    images, labels, indices = batch
    images = images.to(t.device, dtype=t.precision.dtype, non_blocking=True, memory_format=t.precision.memory_format)
    return images, labels.to(t.device, non_blocking=True), indices.to(t.device, non_blocking=True)


def _set_lr(t, state) -> None:
    state.lr = t.lr_for(state.global_step)
    for group in t.optimizer.param_groups:
        group["lr"] = state.lr


def _clip_and_check(t, loss, global_step: int) -> None:
    """Gradients averaged over ranks (the global batch's), unscaled, clipped; the guard checks the
    loss and them (under torch.distributed its flag is all-reduced: every rank skips alike)."""
    distributed.average_gradients_(t.params, t.dist.world_size)
    found_inf = t.precision.unscale(t.optimizer)
    total_norm = None
    if t.cfg.optim.grad_clip:
        total_norm = torch.nn.utils.clip_grad_norm_(t.params, t.cfg.optim.grad_clip, foreach=True)
    t.guard.check(loss, [p.grad for p in t.params], total_norm=total_norm, step=global_step, found_inf=found_inf)


class _Step:
    """A step holds its trainer weakly (no cycle: a trainer nobody references is freed, and gives
    up its run folder, at once)."""

    def __init__(self, trainer):
        self._trainer = weakref.ref(trainer)

    @property
    def t(self):
        return self._trainer()


class SupernetStep(_Step):

    def __call__(self, state, batch) -> None:
        t = self.t
        cfg = t.cfg
        _set_lr(t, state)
        images, labels, indices = _to_device(t, batch)
        per_step = t.path_sampler.paths_per_step
        archs = state.archs[state.step * per_step:(state.step + 1) * per_step]
        # update_unsampled=on keeps zero gradients on candidates trained before, so SGD's weight
        # decay and momentum move them this step too (the authors' PyTorch 1.7 behaviour)
        t.optimizer.zero_grad(set_to_none=cfg.optim.update_unsampled == "off")
        loss, importance, step_loss_sum, step_correct = self._paths_backward(state, archs, images, labels, indices)
        _clip_and_check(t, loss, state.global_step)
        self._record(archs, indices, importance)
        t.guard.step(t.optimizer)
        t.precision.update()
        # loss and accuracy: the mean over the step's paths (one path but for FairNAS)
        state.loss_sum += t.guard.masked(step_loss_sum / per_step)
        state.correct += t.guard.masked(step_correct)
        state.seen += labels.shape[0]

    def _paths_backward(self, state, archs, images, labels, indices):
        """Forward and backward of each path of the step (FairNAS: K, gradients accumulated)."""
        t = self.t
        step_loss_sum = step_correct = None
        for arch in archs:
            with t.precision.autocast():
                logits, _ = t.forward(images, arch)
                # float32 losses and importance whatever the logits' dtype
                per_sample, importance = ops.cross_entropy_with_importance(logits, labels, t.cfg.optim.label_smoothing)
            if t.cfg.method.unbiased:
                weights = t.data_sampler.importance_weights(indices) * state.path_weights[state.step]
                loss = (per_sample * weights).mean()
            else:
                loss = per_sample.mean()
            t.precision.backward(loss)
            path_loss = per_sample.detach().sum()
            path_correct = (logits.detach().argmax(1) == labels).sum()
            step_loss_sum = path_loss if step_loss_sum is None else step_loss_sum + path_loss
            step_correct = path_correct if step_correct is None else step_correct + path_correct
        return loss, importance, step_loss_sum, step_correct

    def _record(self, archs, indices, importance) -> None:
        """PA's per-operation gradient norms of the path(s) and DA's importance of this rank's
        samples (summed over ranks at the epoch's end), unless the guard skips the step."""
        t = self.t
        if len(archs) == 1:
            path_params, slots = t.model.path_parameters(archs[0])
            path = archs[0]
        else:               # FairNAS: every path's operations (each (layer, op) once a step)
            pairs = [t.model.path_parameters(a) for a in archs]
            path_params = [q for params, _ in pairs for q in params]
            slots = [slot for _, sl in pairs for slot in sl]
            path = None     # FairNAS samples uniformly: no official PA record needs the path
        t.guard.record(t.path_sampler, [p.grad for p in path_params], slots,
                       t.data_sampler, indices, importance, arch=path)


class PlainStep(_Step):

    def __call__(self, state, batch) -> None:
        t = self.t
        _set_lr(t, state)
        images, labels, _ = _to_device(t, batch)
        t.optimizer.zero_grad(set_to_none=True)
        with t.precision.autocast():
            logits, aux_logits = t.forward(images, None)
            per_sample, _ = ops.cross_entropy_with_importance(logits, labels, t.cfg.optim.label_smoothing)
        loss = per_sample.mean()
        if aux_logits is not None:      # DARTS' auxiliary head
            loss = loss + t.aux_weight * torch.nn.functional.cross_entropy(
                aux_logits.float(), labels, label_smoothing=t.cfg.optim.label_smoothing)
        t.precision.backward(loss)
        _clip_and_check(t, loss, state.global_step)
        t.guard.step(t.optimizer)
        t.precision.update()
        state.loss_sum += t.guard.masked(per_sample.detach().sum())
        state.correct += t.guard.masked((logits.detach().argmax(1) == labels).sum())
        state.seen += labels.shape[0]


__all__ = ["PlainStep", "SupernetStep"]
