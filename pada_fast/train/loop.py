"""The training loop, which knows only epochs, steps and hooks (detectron2's ``TrainerBase``).

``fit`` runs the epochs; an epoch is ``begin_epoch`` (its draws and loader), then for each batch
``before_step`` hooks, ``step(state, batch)``, ``after_step`` hooks; ``after_epoch`` hooks, the
epoch's statistics, ``end_epoch`` (the samplers' updates, the epoch's row), ``end_of_epoch`` hooks
and ``save_epoch`` (the row logged, the checkpoint written). A hook ends the epoch after a step by
setting ``state.stop``, and training after an epoch by calling :meth:`TrainerBase.request_stop`.
What a step, an epoch's set-up and a checkpoint are is the subclass's (:mod:`.run`,
:mod:`.trainer`, :mod:`.retrain`).
"""
from __future__ import annotations

import time

from .hooks import EpochState, HookBase


class TrainerBase:
    """The loop. Subclasses provide ``cfg``, ``step``, ``begin_epoch``, ``epoch_statistics``,
    ``end_epoch``, ``save_epoch``, ``data_errors`` (a context for a batch that cannot be read) and
    ``report_stop``; ``hooks`` is filled with :meth:`register_hook`."""

    hooks: list[HookBase]
    start_epoch = 0
    start_step = 0
    _where = ""
    _stop_request: str | None = None

    def register_hook(self, hook: HookBase) -> HookBase:
        """Append ``hook`` (see :mod:`.hooks`) to the hooks the trainer calls, in order."""
        hook.trainer = self
        self.hooks.append(hook)
        return hook

    def call_hooks(self, point: str, *args) -> None:
        for hook in self.hooks:
            getattr(hook, point)(*args)

    def request_stop(self, reason: str) -> None:
        """End training after the current epoch's checkpoint (a hook's ``end_of_epoch`` calls it)."""
        self._stop_request = reason

    @property
    def stop_reason(self) -> str | None:
        return self._stop_request

    def run_step(self, state: EpochState, batch) -> None:
        """One optimiser step on ``batch`` (the subclass's ``step``)."""
        self.step(state, batch)

    def train_epoch(self, epoch: int, start_step: int = 0) -> dict | None:
        """Train one epoch from step ``start_step`` (a resumed mid-epoch checkpoint); returns its
        statistics, or None when a hook stopped it (a SIGTERM/SIGINT; a checkpoint was written)."""
        state = self.begin_epoch(epoch, start_step)
        self.call_hooks("before_epoch", state)
        with self.data_errors(state):
            for step, batch in enumerate(state.loader, start_step):
                state.step = step
                self._where = f"at epoch {epoch + 1} step {step + 1}"
                state.times.data += time.perf_counter() - state.last
                self.call_hooks("before_step", state)
                self.run_step(state, batch)
                state.steps_run += 1
                state.last = time.perf_counter()
                state.times.total = state.last - state.started
                self.call_hooks("after_step", state)
                if state.stop:
                    self.call_hooks("after_epoch", state)
                    self.report_stop(f"at epoch {epoch + 1} step {step + 1}")
                    return None
        self.call_hooks("after_epoch", state)
        self._where = f"at the end of epoch {epoch + 1}"
        return self.epoch_statistics(state)

    def fit_epochs(self) -> dict:
        """Epochs ``start_epoch`` .. ``optim.epochs``; returns the last epoch's row."""
        epochs = self.cfg.optim.epochs
        row: dict = {}
        for epoch in range(self.start_epoch, epochs):
            trained = self.train_epoch(epoch, self.start_step if epoch == self.start_epoch else 0)
            if trained is None:        # stopped by a signal, checkpoint written
                return row
            row = {"epoch": epoch, "method": self.method_label, **trained}
            row.update(self.end_epoch(epoch))
            self.call_hooks("end_of_epoch", epoch, row)
            self.save_epoch(epoch, row)
            if epoch + 1 < epochs and self._stop_request is not None:
                self.log_info(f"stopped after epoch {epoch + 1} of {epochs}: {self._stop_request}; "
                              f"the checkpoint is {self.ckpt_path}")
                return row
            if epoch + 1 < epochs and self.signal_stop_requested():
                self.report_stop(f"after epoch {epoch + 1}")
                return row
        return row


__all__ = ["TrainerBase"]
