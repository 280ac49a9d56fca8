"""What happens around the training step (detectron2's ``HookBase`` pattern): the trainer's
:meth:`~pada_fast.train.trainer.Trainer.run_step` is the PA&DA step itself; fault injection, the
progress bar, interval logging, the signal stop, mid-epoch checkpoints and the per-epoch gradient
variance are hooks, called in list order at fixed points:

``before_epoch(state)`` · per step ``before_step(state)``, the step, ``after_step(state)`` ·
``after_epoch(state)`` (also when a hook stopped the epoch early) · ``end_of_epoch(epoch, row)``
(after the samplers set the next epoch's distributions, before the row is logged and
checkpointed; a hook may add to ``row``).

``state`` is the running epoch's :class:`EpochState`. A hook sets ``state.stop`` to end the epoch
after this step (the trainer then reports the stop and returns).
"""
from __future__ import annotations

import time
import weakref
from dataclasses import dataclass, field

import torch

from .fault_injection import inject_fault
from .logs import use_progress_bar


@dataclass
class StepTimes:
    data: float = 0.0
    total: float = 0.0


@dataclass
class EpochState:
    """The running epoch: its draws, loader and running totals."""
    epoch: int
    steps: int                   # steps in the epoch
    start_step: int
    paths: torch.Tensor          # the epoch's paths, [steps * paths_per_step, layers]
    archs: list                  # the same as tuples (read once per epoch, not per step)
    loader: object
    loss_sum: torch.Tensor
    correct: torch.Tensor        # (image, path) pairs predicted right
    seen: int = 0                # images
    times: StepTimes = field(default_factory=StepTimes)
    step: int = 0                # the step in progress (0-based)
    steps_run: int = 0           # steps finished in this call (a resumed epoch starts at start_step)
    lr: float = 0.0
    last: float = 0.0            # perf_counter at the end of the previous step (or of a checkpoint)
    started: float = 0.0         # perf_counter at the epoch's start, less the time before a resume
    stop: bool = False
    bar: object = None           # a tqdm bar while ProgressBarHook shows one
    path_weights: torch.Tensor | None = None   # method.unbiased: each path's loss weight

    @property
    def global_step(self) -> int:
        return self.epoch * self.steps + self.step

    @property
    def last_step_of_epoch(self) -> bool:
        return self.step + 1 == self.steps


class HookBase:
    """Override what you need; ``trainer`` is set when the trainer registers the hook (held
    weakly: a trainer nobody references is freed, and gives up its run folder, at once)."""

    _trainer_ref = None

    @property
    def trainer(self):
        return None if self._trainer_ref is None else self._trainer_ref()

    @trainer.setter
    def trainer(self, trainer) -> None:
        self._trainer_ref = None if trainer is None else weakref.ref(trainer)

    def before_epoch(self, state: EpochState) -> None: ...

    def before_step(self, state: EpochState) -> None: ...

    def after_step(self, state: EpochState) -> None: ...

    def after_epoch(self, state: EpochState) -> None: ...

    def end_of_epoch(self, epoch: int, row: dict) -> None: ...


class FaultInjectionHook(HookBase):
    """Test-only crash and hang injection (``PADA_FAST_FAULT_*``, see :mod:`.fault_injection`)."""

    def __init__(self, fault):
        self.fault = fault

    def before_step(self, state):
        inject_fault(self.fault, self.trainer.dist.rank, state.global_step)


class ProgressBarHook(HookBase):
    """A tqdm bar per epoch on rank 0 when ``run.progress`` asks for one (a terminal by default)."""

    def before_epoch(self, state):
        t = self.trainer
        if t.dist.is_main and use_progress_bar(t.cfg.run.progress):
            from tqdm import tqdm
            state.bar = tqdm(total=state.steps, initial=state.start_step,
                             desc=f"epoch {state.epoch + 1}/{t.cfg.optim.epochs}", leave=False)

    def after_step(self, state):
        if state.bar is not None:
            state.bar.update(1)

    def after_epoch(self, state):
        if state.bar is not None:
            state.bar.close()
            state.bar = None


class IntervalLogHook(HookBase):
    """Every ``run.log_interval`` steps and at the epoch's last: the non-finite guard's report (it
    raises past its limits) and one line (loss, accuracy, images/s, lr, data time), on the bar
    when one is shown."""

    def after_step(self, state):
        t = self.trainer
        if (state.step + 1) % t.cfg.run.log_interval and not state.last_step_of_epoch:
            return
        skipped = t.guard.poll()
        if skipped:
            t.log_info(f"warning: epoch {state.epoch + 1} step {state.step + 1}: {skipped}")
        loss, acc, seen = t.averages(state)
        line = (f"epoch {state.epoch + 1}/{t.cfg.optim.epochs} step {state.step + 1}/{state.steps} "
                f"loss {loss:.4f} acc {acc:.4f} "
                f"img/s {seen / max(state.times.total, 1e-9):.0f} lr {state.lr:.5f} data {state.times.data:.2f}s")
        if state.bar is not None:
            state.bar.set_postfix_str(line.split(" loss ", 1)[1])
        else:
            t.log_info(line)


class SignalStopHook(HookBase):
    """A SIGTERM/SIGINT ends the epoch after the current step (not after the last: the epoch's end
    writes its own checkpoint and the fit loop stops there)."""

    def after_step(self, state):
        if not state.last_step_of_epoch and self.trainer._stop_now(state.step):
            state.stop = True


class MidEpochCheckpointHook(HookBase):
    """A checkpoint every ``run.checkpoint_every_steps`` steps inside an epoch, and when a stop is
    requested (run this hook after :class:`SignalStopHook`)."""

    def after_step(self, state):
        if state.last_step_of_epoch:
            return
        every = self.trainer.cfg.run.checkpoint_every_steps
        if state.stop or (every and (state.step + 1) % every == 0):
            self.trainer._save_mid_epoch(state)
            state.last = time.perf_counter()      # the checkpoint's time is not data time


class GradientVarianceHook(HookBase):
    """``run.gv_draws > 0``: the paper's gradient variance at the end of every epoch, of the p and q
    the next epoch draws from, into the epoch's row and ``gv.jsonl`` (one process only)."""

    def end_of_epoch(self, epoch, row):
        t = self.trainer
        if not t.cfg.run.gv_draws or t.dist.world_size != 1:
            return
        from pada_fast.evaluate.gradient_variance import measure_epoch_gv
        row["gv"] = measure_epoch_gv(t.model, t.path_sampler, t.data_sampler, t.train_set, t.cfg,
                                     t.out_dir, t.device, t.cfg.run.gv_draws, epoch)["gv"]


def default_hooks(fault=None) -> list[HookBase]:
    """The trainer's hooks, in the order they run."""
    hooks: list[HookBase] = [FaultInjectionHook(fault)] if fault is not None else []
    return hooks + [ProgressBarHook(), IntervalLogHook(), SignalStopHook(), MidEpochCheckpointHook(),
                    GradientVarianceHook()]


__all__ = ["EpochState", "FaultInjectionHook", "GradientVarianceHook", "HookBase", "IntervalLogHook",
           "MidEpochCheckpointHook", "ProgressBarHook", "SignalStopHook", "StepTimes", "default_hooks"]
