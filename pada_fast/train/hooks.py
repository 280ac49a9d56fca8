"""What happens around the training step (detectron2's ``HookBase`` pattern): the trainer's
:meth:`~pada_fast.train.trainer.Trainer.run_step` is the PA&DA step itself; fault injection, the
progress bar, interval logging, the signal stop, mid-epoch checkpoints and the per-epoch gradient
variance are hooks, called in list order at fixed points:

``before_epoch(state)`` · per step ``before_step(state)``, the step, ``after_step(state)`` ·
``after_epoch(state)`` (also when a hook stopped the epoch early) · ``end_of_epoch(epoch, row)``
(after the samplers set the next epoch's distributions, before the row is logged and
checkpointed; a hook may add to ``row``).

``state`` is the running epoch's :class:`EpochState`. A hook sets ``state.stop`` to end the epoch
after this step (the trainer then reports the stop and returns), or calls
``trainer.request_stop(reason)`` in ``end_of_epoch`` to end training after that epoch's checkpoint.

A hook with state of its own names it ``state_key`` and implements ``state_dict`` /
``load_state_dict``: the trainer keeps it in every checkpoint and hands it back on resume.
"""
from __future__ import annotations

import json
import time
import weakref
from dataclasses import dataclass, field

import numpy as np
import torch

from pada_fast.evaluate import probe as probe_module
from pada_fast.evaluate.gradient_variance import measure_epoch_gv
from pada_fast.evaluate.probe import LOG_FILE
from pada_fast.files import write_text_atomic

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
    #: the hook's entry in a checkpoint's ``hooks`` (None: the hook keeps no state)
    state_key: str | None = None

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

    def state_dict(self) -> dict | None:
        return None

    def load_state_dict(self, state: dict) -> None: ...


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
            t.log_warning(f"warning: epoch {state.epoch + 1} step {state.step + 1}: {skipped}")
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
        if not state.last_step_of_epoch and self.trainer.stop_requested(state.step):
            state.stop = True


class MidEpochCheckpointHook(HookBase):
    """A checkpoint every ``run.checkpoint_every_steps`` steps inside an epoch, and when a stop is
    requested (run this hook after :class:`SignalStopHook`)."""

    def after_step(self, state):
        if state.last_step_of_epoch:
            return
        every = self.trainer.cfg.run.checkpoint_every_steps
        if state.stop or (every and (state.step + 1) % every == 0):
            self.trainer.save_mid_epoch(state)
            state.last = time.perf_counter()      # the checkpoint's time is not data time


class GradientVarianceHook(HookBase):
    """``run.gv_draws > 0``: the paper's gradient variance at the end of every epoch, of the p and q
    the next epoch draws from, into the epoch's row and ``gv.jsonl`` (one process only)."""

    def end_of_epoch(self, epoch, row):
        t = self.trainer
        if not t.cfg.run.gv_draws or t.dist.world_size != 1 or t.path_sampler is None:
            return
        row["gv"] = measure_epoch_gv(t.model, t.path_sampler, t.data_sampler, t.train_set, t.cfg,
                                     t.out_dir, t.device, t.cfg.run.gv_draws, epoch)["gv"]


class RankingProbeHook(HookBase):
    """``probe.every > 0``: the ranking probe (:mod:`pada_fast.evaluate.probe`) every ``every``
    epochs and after the last, at the epoch's end (after the samplers' update, before the
    checkpoint, so a probe at epoch E ranks exactly the weights of E's checkpoint). Every row gets
    ``probe_tau``, ``probe_p_top5`` and ``probe_stability`` (empty between probes); each probe goes
    to ``probe.jsonl`` and redraws ``probe.png``. With ``probe.stop_tau`` set, training ends once
    ``probe.stop_probes`` probes in a row were at least that stable. Every rank probes (the same
    weights and batches give the same predictions, so all ranks take the same stop decision);
    rank 0 writes."""

    state_key = "ranking_probe"

    def __init__(self):
        self.probe = None
        self.previous: list[float] | None = None
        self.stable = 0             # probes in a row at least probe.stop_tau stable
        self.probes = 0             # records in probe.jsonl that the checkpoint covers

    def state_dict(self):
        return {"previous": self.previous, "stable": self.stable, "probes": self.probes}

    def load_state_dict(self, state):
        self.previous, self.stable, self.probes = state["previous"], int(state["stable"]), int(state["probes"])
        t = self.trainer
        if t.dist.is_main:          # a probe written after the checkpoint is taken again
            path = t.out_dir / LOG_FILE
            if path.exists():
                lines = [line for line in path.read_text().splitlines() if line.strip()][: self.probes]
                write_text_atomic(path, "".join(line + "\n" for line in lines))

    def end_of_epoch(self, epoch, row):
        t = self.trainer
        p = t.cfg.probe
        if not p.every:
            return
        row.update(probe_tau=None, probe_p_top5=None, probe_stability=None)
        if (epoch + 1) % p.every and epoch + 1 != t.cfg.optim.epochs:
            return
        started = time.perf_counter()
        if self.probe is None:
            self.probe = probe_module.RankingProbe(t.model, t.cfg, t.train_set.classes, t.train_set.num_classes,
                                                   t.device)
            if t.dist.is_main:
                self.probe.write_archs(t.out_dir)
        result = self.probe.measure(t.model, None if self.previous is None else np.asarray(self.previous))
        self.previous = result["predictions"]
        row.update(probe_tau=result["tau"], probe_p_top5=result["p_top5"], probe_stability=result["stability"])
        if p.stop_tau is not None and result["stability"] is not None:
            self.stable = self.stable + 1 if result["stability"] >= p.stop_tau else 0
        self.probes += 1
        seconds = time.perf_counter() - started
        if t.dist.is_main:
            record = {"epoch": epoch, "archs": len(self.probe.archs), "seconds": round(seconds, 3), **result}
            with (t.out_dir / probe_module.LOG_FILE).open("a") as f:
                f.write(json.dumps(record) + "\n")
            probe_module.probe_plot(probe_module.read_probe_log(t.out_dir), t.out_dir / probe_module.PLOT_FILE,
                                    title=f"ranking probe: {t.cfg.method.name}, seed {t.cfg.run.seed}")
            parts = [f"{name} {result[key]:.3f}" for key, name in
                     (("tau", "tau"), ("p_top5", "P@Top5%"), ("stability", "stability")) if result[key] is not None]
            t.log_info(f"probe after epoch {epoch + 1}: {' '.join(parts) or 'first probe'} "
                       f"({len(self.probe.archs)} archs, {seconds:.1f}s)")
        if p.stop_tau is not None and self.stable >= p.stop_probes:
            t.request_stop(f"the ranking was stable (Kendall tau between successive probes >= {p.stop_tau}) "
                           f"for {self.stable} probes in a row (probe.stop_tau, probe.stop_probes)")


def default_hooks(fault=None) -> list[HookBase]:
    """The trainer's hooks, in the order they run."""
    hooks: list[HookBase] = [FaultInjectionHook(fault)] if fault is not None else []
    return hooks + [ProgressBarHook(), IntervalLogHook(), SignalStopHook(), MidEpochCheckpointHook(),
                    GradientVarianceHook(), RankingProbeHook()]


__all__ = ["EpochState", "FaultInjectionHook", "GradientVarianceHook", "HookBase", "IntervalLogHook",
           "MidEpochCheckpointHook", "ProgressBarHook", "RankingProbeHook", "SignalStopHook", "StepTimes", "default_hooks"]
