"""The trainer's step is run_step; everything around it is a hook, called in a fixed order."""
import json

from pada_fast.config import load_config
from pada_fast.train.hooks import (GradientVarianceHook, HookBase, IntervalLogHook, MidEpochCheckpointHook,
                                   ProgressBarHook, RankingProbeHook, SignalStopHook)
from pada_fast.train.trainer import Trainer


def small_cfg(tmp_path, *extra):
    return load_config(None, ["space.C=4", "space.N=1", "optim.epochs=2", "data.batch_size=64",
                              "data.train_subset=256", f"run.out_dir={tmp_path}", "run.threads=1",
                              "run.log_interval=2", "run.progress=lines", "run.device=cpu", *extra])


class Recorder(HookBase):
    def __init__(self):
        self.calls = []

    def before_epoch(self, state):
        self.calls.append(("before_epoch", state.epoch))

    def before_step(self, state):
        self.calls.append(("before_step", state.step))

    def after_step(self, state):
        self.calls.append(("after_step", state.step, state.seen))

    def after_epoch(self, state):
        self.calls.append(("after_epoch", state.epoch))

    def end_of_epoch(self, epoch, row):
        row["recorded"] = True
        self.calls.append(("end_of_epoch", epoch))


def test_hooks_run_in_order_around_every_step(tmp_path, capsys):
    trainer = Trainer(small_cfg(tmp_path))
    assert [type(h) for h in trainer.hooks] == [ProgressBarHook, IntervalLogHook, SignalStopHook,
                                                MidEpochCheckpointHook, GradientVarianceHook, RankingProbeHook]
    recorder = trainer.register_hook(Recorder())
    trainer.fit()
    steps = trainer.steps_per_epoch
    expected = []
    for epoch in range(2):
        expected.append(("before_epoch", epoch))
        for step in range(steps):
            expected += [("before_step", step), ("after_step", step, 64 * (step + 1))]
        expected += [("after_epoch", epoch), ("end_of_epoch", epoch)]
    assert recorder.calls == expected
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all(r["recorded"] for r in rows)                  # end_of_epoch may add to the logged row
    out = capsys.readouterr().out
    assert out.count("epoch 1/2 step ") == steps // 2          # IntervalLogHook: every 2 steps
    assert "epoch 2/2 done: loss" in out


def test_a_hook_can_stop_the_epoch_with_a_checkpoint(tmp_path, capsys):
    class StopAtStep1(HookBase):
        def after_step(self, state):
            state.stop = state.step == 1

    trainer = Trainer(small_cfg(tmp_path))
    trainer.hooks.insert(0, StopAtStep1())
    trainer.hooks[0].trainer = trainer
    result = trainer.fit()
    assert result["exit_code"] == 0 and "stopped at epoch 1 step 2 by a hook" in capsys.readouterr().out
    assert (tmp_path / "checkpoint-e0000-s000002.pt").exists()       # MidEpochCheckpointHook saved it
    resumed = Trainer(small_cfg(tmp_path), resume=True)
    assert (resumed.start_epoch, resumed.start_step) == (0, 2)


def test_gradient_variance_is_a_hook(tmp_path):
    trainer = Trainer(small_cfg(tmp_path, "run.gv_draws=2", "optim.epochs=1"))
    trainer.hooks = [h for h in trainer.hooks if not isinstance(h, GradientVarianceHook)]
    trainer.fit()
    assert not (tmp_path / "gv.jsonl").exists()
    again = Trainer(small_cfg(tmp_path / "with", "run.gv_draws=2", "optim.epochs=1"))
    again.fit()
    row = json.loads((tmp_path / "with" / "metrics.jsonl").read_text().splitlines()[0])
    assert row["gv"] > 0 and (tmp_path / "with" / "gv.jsonl").exists()


def test_train_epoch_is_short():
    import inspect
    lines = inspect.getsource(Trainer.train_epoch).splitlines()
    assert len(lines) <= 30, len(lines)
