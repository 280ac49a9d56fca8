"""docs/method.md, "GPU throughput" on the CPU: fused SGD (bitwise the foreach step), the precision modes (bf16 autocast,
fp16 with a gradient scaler whose overflow feeds the non-finite guard), no host read inside the
training step between log points, and the auto values of channels-last and cuDNN autotuning."""
import json

import pytest
import torch

from pada_fast.config import ConfigError, load_config
from pada_fast.train.trainer import Trainer

from test_trainer import small_config, trained_per_value

HOST_READS = ("item", "tolist", "__bool__", "cpu", "numpy", "__int__", "__float__", "__index__")


def weights_of(trainer):
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


def test_fused_sgd_trains_like_foreach(tmp_path):
    """The default fused optimiser (guard in device mode) against foreach SGD (guard in host mode):
    the same training up to float rounding (the fused kernel rounds some updates differently, by
    one unit in the last place) after two PA&DA epochs: weights, momentum, p and q."""
    runs = trained_per_value(tmp_path, "pada", "run.optimizer_impl", ("fused", "foreach"))
    fused, foreach = runs["fused"], runs["foreach"]
    assert fused.guard.mode == "device" and foreach.guard.mode == "host"
    a, b = weights_of(fused), weights_of(foreach)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)
    torch.testing.assert_close(fused.path_sampler.probabilities(), foreach.path_sampler.probabilities(),
                               rtol=0, atol=1e-4)
    torch.testing.assert_close(fused.data_sampler.probabilities(), foreach.data_sampler.probabilities(),
                               rtol=1e-3, atol=1e-7)
    for p_fused, p_foreach in zip(fused.params, foreach.params):
        m_fused = fused.optimizer.state[p_fused].get("momentum_buffer")
        m_foreach = foreach.optimizer.state[p_foreach].get("momentum_buffer")
        if m_foreach is None:       # never trained: fused keeps a zero buffer (nonfinite.py)
            assert not m_fused.any()
        else:
            torch.testing.assert_close(m_fused, m_foreach, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains_and_keeps_statistics_float32(tmp_path, precision):
    cfg = small_config(tmp_path, "pada", epochs=3, **{"run.precision": precision, "optim.lr": 0.2})
    trainer = Trainer(cfg)
    assert trainer.precision.autocast_dtype == {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    trainer.fit()
    rows = [json.loads(line) for line in (tmp_path / "pada" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["train_loss"] < rows[0]["train_loss"] - 0.05
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    assert trainer.path_sampler.norm_sum.dtype == torch.float32
    assert trainer.data_sampler.score_sum.dtype == torch.float32
    p = trainer.path_sampler.probabilities()
    assert p[:, 2:4].sum(1).min() > 0.8          # PA's ranking of the operations survives autocast
    assert (trainer.scaler is not None) == (precision == "fp16")


def test_fp16_overflow_steps_are_skipped_by_the_guard_and_lower_the_scale(tmp_path):
    """A scale far too large overflows fp16's backward: the scaler's found_inf makes the guard skip
    those steps (weights and p unchanged, counted), and the scale falls until steps are finite."""
    cfg = small_config(tmp_path, "pada", epochs=1, **{"run.precision": "fp16",
                                                       "run.nonfinite_max_consecutive": 60})
    trainer = Trainer(cfg)
    trainer.precision.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 40)
    before = weights_of(trainer)
    state = trainer.begin_epoch(0, 0)
    batch = next(iter(state.loader))
    state.step = 0
    trainer.run_step(state, batch)
    assert trainer.guard.counts()["total"] == 1
    after = weights_of(trainer)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not trainer.path_sampler.step_count.any()
    assert trainer.scaler.get_scale() == 2.0 ** 39
    row = trainer.train_epoch(0)
    assert row["nonfinite_skipped"] >= 1
    assert trainer.scaler.get_scale() < 2.0 ** 39
    assert row["nonfinite_skipped"] < trainer.steps_per_epoch    # then it trained


def test_fp16_scaler_state_is_checkpointed_and_resumed(tmp_path):
    """A scale other than a new scaler's (2^16) goes through the checkpoint."""
    cfg = small_config(tmp_path, "spos", epochs=1, **{"run.precision": "fp16"})
    trainer = Trainer(cfg)
    trainer.precision.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    trainer.fit()
    scale = trainer.scaler.get_scale()
    assert scale != torch.amp.GradScaler("cpu").get_scale()
    cfg = small_config(tmp_path, "spos", epochs=2, **{"run.precision": "fp16"})
    resumed = Trainer(cfg, resume=True)
    assert resumed.scaler.get_scale() == scale


class HostReadCounter:
    """Counts calls of the tensor methods that read a value to the host (a device synchronisation
    on a GPU) while ``active``; ``log`` keeps (phase, step, method) of each."""

    def __init__(self, monkeypatch):
        self.active = None
        self.log = []
        for name in HOST_READS:
            original = getattr(torch.Tensor, name)
            monkeypatch.setattr(torch.Tensor, name, self._wrap(name, original))

    def _wrap(self, name, original):
        def counted(tensor, *args, **kwargs):
            if self.active is not None:
                self.log.append((*self.active, name))
            return original(tensor, *args, **kwargs)
        return counted


def count_step_reads(trainer, monkeypatch, epochs=1):
    """Train ``epochs`` epochs counting host reads inside ``run_step`` and inside the per-step hooks."""
    counter = HostReadCounter(monkeypatch)
    run_step, call_hooks = trainer.run_step, trainer.call_hooks

    def counted_step(state, batch):
        counter.active = ("step", state.global_step)
        try:
            run_step(state, batch)
        finally:
            counter.active = None

    def counted_hooks(point, *args):
        if point in ("before_step", "after_step"):
            counter.active = (point, args[0].global_step)
        try:
            call_hooks(point, *args)
        finally:
            counter.active = None

    monkeypatch.setattr(trainer, "run_step", counted_step)
    monkeypatch.setattr(trainer, "call_hooks", counted_hooks)
    for epoch in range(epochs):
        assert trainer.train_epoch(epoch) is not None
        trainer.end_epoch(epoch)
    return counter.log


@pytest.mark.parametrize("setting", [
    {"method.name": "spos"},
    {"method.name": "pada"},
    {"method.name": "pada", "method.reproduce": "official"},
    {"method.name": "pada", "method.unbiased": "true"},
    {"method.name": "fairnas"},
    {"method.name": "pada", "run.precision": "fp16"},
    {"method.name": "pada", "data.backend": "device"},
], ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()))
def test_no_host_read_inside_the_step_between_log_points(tmp_path, monkeypatch, setting):
    """With fused SGD and the guard in device mode the step reads nothing to the host: the only
    reads are the log hook's, at ``run.log_interval`` steps and the epoch's last step."""
    extra = {"run.log_interval": 5, "data.train_subset": 704, **setting}
    cfg = small_config(tmp_path, setting["method.name"], epochs=2, **extra)
    trainer = Trainer(cfg)
    assert trainer.guard.mode == "device"
    reads = count_step_reads(trainer, monkeypatch, epochs=2)
    steps = trainer.steps_per_epoch
    assert steps == 11
    in_steps = [r for r in reads if r[0] == "step"]
    assert in_steps == [], f"host reads inside the training step: {in_steps[:5]}"
    log_points = {e * steps + s for e in range(2) for s in range(steps) if (s + 1) % 5 == 0 or s + 1 == steps}
    in_hooks = {r[1] for r in reads}
    assert in_hooks and in_hooks <= log_points, sorted(in_hooks - log_points)


def test_the_host_read_counter_sees_the_foreach_guard(tmp_path, monkeypatch):
    """The counter's own check: foreach SGD puts the guard in host mode, which reads its flag every
    step, and the counter must see it."""
    cfg = small_config(tmp_path, "pada", epochs=1, **{"run.optimizer_impl": "foreach"})
    trainer = Trainer(cfg)
    assert trainer.guard.mode == "host"
    reads = count_step_reads(trainer, monkeypatch)
    steps_with_reads = {r[1] for r in reads if r[0] == "step"}
    assert steps_with_reads == set(range(trainer.steps_per_epoch))


def test_channels_last_and_cudnn_benchmark_default_off_on_the_cpu_and_recorded(tmp_path):
    cfg = small_config(tmp_path, "spos", epochs=1)
    assert cfg.run.channels_last is None and cfg.run.cudnn_benchmark is None
    trainer = Trainer(cfg)
    assert trainer.memory_format == torch.contiguous_format
    saved = (tmp_path / "spos" / "config.yaml").read_text()
    assert "channels_last: false" in saved and "cudnn_benchmark: false" in saved


def test_autocast_refuses_a_float64_model(tmp_path):
    cfg = small_config(tmp_path, "spos", epochs=1, **{"run.precision": "bf16", "run.dtype": "float64"})
    with pytest.raises(ConfigError, match="run.precision=bf16"):
        Trainer(cfg)


def test_precision_is_a_checked_choice():
    with pytest.raises(ConfigError, match="run.precision"):
        load_config(None, ["run.precision=fp8"])
