"""Supernet training on digits: every method learns, checkpoints resume exactly, logs are written."""
import json
import math

import pytest
import torch

from pathlib import Path

from pada_fast.config import load_config
from pada_fast.errors import CheckpointError, ConfigError
from pada_fast import checkpoint
from pada_fast.experiment import cosine_lr
from pada_fast.train.trainer import Trainer


def trained_per_value(tmp_path, method, key, values, epochs=2, **extra):
    """A fitted Trainer of ``small_config`` for each value of config ``key``, by value."""
    runs = {}
    for value in values:
        trainer = Trainer(small_config(tmp_path / str(value), method, epochs=epochs, **{key: value}, **extra))
        trainer.fit()
        runs[value] = trainer
    return runs


def small_config(tmp_path, method, epochs=3, **extra):
    overrides = ["space.C=4", "space.N=1", f"optim.epochs={epochs}", "data.batch_size=64",
                 f"method.name={method}", f"run.out_dir={tmp_path / method}", "run.threads=1",
                 "run.log_interval=1000", "run.progress=lines"]
    overrides += [f"{k}={v}" for k, v in extra.items()]
    return load_config(None, overrides)


@pytest.mark.parametrize("method", ["spos", "pa", "da", "pada"])
def test_each_method_decreases_the_loss(tmp_path, method):
    cfg = small_config(tmp_path, method, epochs=4, **{"optim.lr": 0.2})
    Trainer(cfg).fit()
    rows = [json.loads(line) for line in (tmp_path / method / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1, 2, 3]
    assert rows[-1]["train_loss"] < rows[0]["train_loss"] - 0.1
    p = torch.tensor(rows[-1]["p"])
    assert torch.allclose(p.sum(1), torch.ones(6), atol=1e-4)
    if method in ("pa", "pada"):
        # parameter-free operations decay towards (1 - δ)/K; convolutions take the rest
        assert p[:, 2:4].sum(1).min() > 0.9
    else:
        assert torch.allclose(p, torch.full_like(p, 0.2), atol=1e-4)
    q = rows[-1]["q"]
    if method in ("da", "pada"):
        assert q["ess_fraction"] < 0.999
    assert (tmp_path / method / "metrics.csv").exists()
    assert (tmp_path / method / "config.yaml").exists()


def test_unbiased_mode_trains(tmp_path):
    cfg = small_config(tmp_path, "pada", epochs=2, **{"method.unbiased": "true"})
    result = Trainer(cfg).fit()
    assert math.isfinite(result["last"]["train_loss"])
    assert result["last"]["train_loss"] < 2.5       # learning, not just running


@pytest.mark.parametrize("method", ["spos", "pada"])
def test_resume_equals_uninterrupted(tmp_path, method):
    # On the CPU: CUDA's convolution backward and index_add_ use atomics, so two uninterrupted
    # GPU runs already differ in the last bits (seen on an H200: epoch-1 losses 2.3212 vs 2.3211).
    straight = small_config(tmp_path / "a", method, epochs=3, **{"run.device": "cpu"})
    Trainer(straight).fit()
    interrupted = small_config(tmp_path / "b", method, epochs=3, **{"run.device": "cpu"})
    interrupted.optim.epochs = 3
    trainer = Trainer(interrupted)
    for epoch in range(2):   # stop after two epochs, as if killed at the epoch boundary
        row = {"epoch": epoch, **trainer.train_epoch(epoch)}
        row.update(trainer.end_epoch(epoch))
        trainer.log.append(row)
        checkpoint.save_atomic(trainer.state_dict(epoch + 1), trainer.ckpt_path)
    del trainer
    Trainer(interrupted, resume=True).fit()
    a = checkpoint.load(tmp_path / "a" / method / "checkpoint.pt")
    b = checkpoint.load(tmp_path / "b" / method / "checkpoint.pt")
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert torch.equal(a["path_sampler"]["p"], b["path_sampler"]["p"])
    qa, qb = a["data_sampler"].get("q"), b["data_sampler"].get("q")
    assert (qa is None and qb is None) or torch.equal(qa, qb)
    rows = (tmp_path / "b" / method / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in rows] == [0, 1, 2]


def test_resume_refuses_a_different_method(tmp_path):
    Trainer(small_config(tmp_path, "pada", epochs=1)).fit()
    other = small_config(tmp_path, "pada", epochs=1, **{"method.pa_granularity": "per_edge"})
    with pytest.raises(ValueError, match="method.pa_granularity='shared'"):
        Trainer(other, resume=True)


def test_resume_without_checkpoint_says_so_and_creates_nothing(tmp_path):
    cfg = small_config(tmp_path, "spos")
    with pytest.raises(CheckpointError, match="--resume: .* holds no checkpoint to continue"):
        Trainer(cfg, resume=True)
    assert not Path(cfg.run.out_dir).exists()          # no folder, no .lock left behind


def test_resume_with_fewer_epochs_than_done_is_refused_and_rewrites_nothing(tmp_path):
    cfg = small_config(tmp_path, "spos", epochs=2)
    Trainer(cfg).fit()
    out = Path(cfg.run.out_dir)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != ".lock"}
    fewer = small_config(tmp_path, "spos", epochs=1)
    with pytest.raises(ConfigError, match="has trained 2 epochs; --resume with optim.epochs=1 would train none"):
        Trainer(fewer, resume=True)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != ".lock"} == before


def test_cosine_schedule():
    assert cosine_lr(0, 100, 0.05, 0.0) == pytest.approx(0.05)
    assert cosine_lr(50, 100, 0.05, 0.0) == pytest.approx(0.025)
    assert cosine_lr(100, 100, 0.05, 0.001) == pytest.approx(0.001)


def test_dali_backend_trains_like_the_torch_backend(tmp_path):
    pytest.importorskip("nvidia.dali")
    results = {}
    for backend in ("torch", "dali"):
        # one epoch: its paths and stream do not depend on the training, while a later epoch's
        # draws from p and q can flip on a float-rounding difference and then train other paths
        cfg = small_config(tmp_path / backend, "pada", epochs=1, **{"data.backend": backend,
                                                                     "data.augment": "false"})
        Trainer(cfg).fit()
        results[backend] = checkpoint.load(tmp_path / backend / "pada" / "checkpoint.pt")
    # same stream, same samples, same paths: the same training up to float noise
    a, b = results["torch"], results["dali"]
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(a["data_sampler"]["q"], b["data_sampler"]["q"], rtol=1e-4, atol=1e-9)


def test_channels_last_trains_like_contiguous_and_resumes_bitwise(tmp_path, monkeypatch):
    """run.channels_last: NHWC weights and inputs, the same training up to float rounding, and an
    exact resume of its own."""
    results = {}
    for fmt in ("false", "true"):
        cfg = small_config(tmp_path / fmt, "pada", epochs=1, **{"run.channels_last": fmt,
                                                                  "data.train_subset": 320})
        trainer = Trainer(cfg)
        trainer.fit()
        results[fmt] = checkpoint.load(tmp_path / fmt / "pada" / "checkpoint.pt")
    conv = [p for p in trainer.model.parameters() if p.dim() == 4]
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in conv)
    assert any(not p.is_contiguous() for p in conv)          # 1x1 kernels are both
    a, b = results["false"], results["true"]
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(a["path_sampler"]["p"], b["path_sampler"]["p"], rtol=1e-3, atol=1e-5)
    # two epochs in one go vs. stopped by a fault at global step 9 (checkpoint every 3 steps) and resumed
    extra = {"run.channels_last": "true", "data.train_subset": 320, "run.checkpoint_every_steps": 3}
    Trainer(small_config(tmp_path / "once", "pada", epochs=2, **extra)).fit()
    monkeypatch.setenv("PADA_FAST_FAULT_STEP", "9")
    with pytest.raises(RuntimeError, match="injected fault"):
        Trainer(small_config(tmp_path / "twice", "pada", epochs=2, **extra)).fit()
    monkeypatch.delenv("PADA_FAST_FAULT_STEP")
    assert checkpoint.load(tmp_path / "twice" / "pada" / "checkpoint.pt")["step"] == 3
    Trainer(small_config(tmp_path / "twice", "pada", epochs=2, **extra), resume=True).fit()
    _assert_same_state(checkpoint.load(tmp_path / "once" / "pada" / "checkpoint.pt"),
                       checkpoint.load(tmp_path / "twice" / "pada" / "checkpoint.pt"))


def test_gradient_variance_is_logged_per_epoch(tmp_path):
    cfg = small_config(tmp_path, "pada", epochs=2, **{"run.gv_draws": 4})
    Trainer(cfg).fit()
    rows = [json.loads(line) for line in (tmp_path / "pada" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["gv"] > 0 for r in rows)
    assert len((tmp_path / "pada" / "gv.jsonl").read_text().splitlines()) == 2


@pytest.mark.parametrize("setting", ["run.dtype=float64", "run.channels_last=true"])
def test_gradient_variance_feeds_the_model_what_training_does(tmp_path, setting):
    key, value = setting.split("=")
    cfg = small_config(tmp_path, "pada", epochs=1, **{"run.gv_draws": 2, "data.train_subset": 256, key: value})
    Trainer(cfg).fit()
    rows = [json.loads(line) for line in (tmp_path / "pada" / "gv.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["gv"] > 0


def _assert_same_state(a, b):
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert torch.equal(a["path_sampler"]["p"], b["path_sampler"]["p"])
    qa, qb = a["data_sampler"].get("q"), b["data_sampler"].get("q")
    assert (qa is None and qb is None) or torch.equal(qa, qb)


def test_checkpoints_rotate_and_resume_walks_back_past_a_corrupt_newest_file(tmp_path, capfd):
    cfg = small_config(tmp_path, "pada", epochs=3, **{"run.device": "cpu", "run.keep_checkpoints": 2})
    Trainer(cfg).fit()
    run = tmp_path / "pada"
    numbered = sorted(p.name for p in run.glob("checkpoint-e*.pt"))
    assert numbered == ["checkpoint-e0002-s000000.pt", "checkpoint-e0003-s000000.pt"]
    reference = checkpoint.load(run / "checkpoint.pt")
    assert reference["epoch"] == 3
    newest = run / "checkpoint-e0003-s000000.pt"
    data = bytearray(newest.read_bytes())
    # 1 KiB in the middle (a single byte may land in the zip container's alignment padding,
    # which no reader uses); checkpoint.pt is a link to it: both are damaged
    middle = len(data) // 2
    data[middle:middle + 1024] = bytes(b ^ 0xFF for b in data[middle:middle + 1024])
    newest.write_bytes(bytes(data))
    capfd.readouterr()
    resumed = Trainer(small_config(tmp_path, "pada", epochs=3, **{"run.device": "cpu",
                                                                  "run.keep_checkpoints": 2}), resume=True)
    assert resumed.start_epoch == 2
    resumed.fit()
    err = capfd.readouterr()
    assert "skipping checkpoint-e0003-s000000.pt" in err.err
    assert "resumed from" in err.out and "checkpoint-e0002-s000000.pt" in err.out
    _assert_same_state(reference, checkpoint.load(run / "checkpoint.pt"))
    rows = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in rows] == [0, 1, 2]


def test_resume_may_extend_the_epochs_but_not_change_the_seed(tmp_path):
    Trainer(small_config(tmp_path, "spos", epochs=1, **{"run.device": "cpu"})).fit()
    with pytest.raises(checkpoint.IncompatibleCheckpoint, match="run.seed"):
        Trainer(small_config(tmp_path, "spos", epochs=1, **{"run.device": "cpu", "run.seed": 7}), resume=True)
    longer = Trainer(small_config(tmp_path, "spos", epochs=2, **{"run.device": "cpu"}), resume=True)
    assert longer.start_epoch == 1


def _poison_steps(trainer, steps):
    """Make the model's logits NaN on the given global steps (counted by forward calls)."""
    forward = trainer.model.forward
    calls = {"n": 0}

    def poisoned(images, arch):
        logits = forward(images, arch)
        calls["n"] += 1
        return logits * float("nan") if calls["n"] - 1 in steps else logits

    trainer.model.forward = poisoned


def test_nonfinite_steps_are_skipped_counted_and_checkpointed(tmp_path):
    cfg = small_config(tmp_path, "pada", epochs=2, **{"run.device": "cpu"})
    trainer = Trainer(cfg)
    _poison_steps(trainer, {3, 4, trainer.steps_per_epoch + 1})
    trainer.fit()
    rows = [json.loads(r) for r in (tmp_path / "pada" / "metrics.jsonl").read_text().splitlines()]
    assert [r["nonfinite_skipped"] for r in rows] == [2, 1]
    assert rows[-1]["nonfinite_total"] == 3 and rows[-1]["nonfinite_longest_run"] == 2
    assert all(torch.isfinite(torch.tensor(r["p"])).all() and r["train_loss"] == r["train_loss"] for r in rows)
    state = checkpoint.load(tmp_path / "pada" / "checkpoint.pt")
    assert state["nonfinite"]["total"] == 3
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert torch.isfinite(state["data_sampler"]["q"]).all()


def test_too_many_consecutive_nonfinite_steps_stop_training(tmp_path):
    from pada_fast.train.nonfinite import NonFiniteError
    cfg = small_config(tmp_path, "spos", epochs=1, **{"run.device": "cpu", "run.nonfinite_max_consecutive": 1})
    trainer = Trainer(cfg)
    _poison_steps(trainer, {2, 3})
    with pytest.raises(NonFiniteError, match="2 consecutive"):
        trainer.fit()


def test_skipped_steps_do_not_count_in_the_logged_averages(tmp_path):
    from pada_fast.train.hooks import HookBase
    cfg = small_config(tmp_path, "spos", epochs=1, **{"run.device": "cpu", "data.train_subset": 256})
    trainer = Trainer(cfg)
    assert trainer.steps_per_epoch == 4
    _poison_steps(trainer, {1, 2, 3})          # only step 0 is finite

    class FirstStep(HookBase):
        def after_step(self, state):
            if state.step == 0:
                self.loss, self.correct = state.loss_sum.item() / state.seen, state.correct.item() / state.seen

    first = trainer.register_hook(FirstStep())
    trainer.fit()
    row = json.loads((tmp_path / "spos" / "metrics.jsonl").read_text().splitlines()[0])
    assert row["nonfinite_skipped"] == 3 and row["images"] == 256
    assert row["train_loss"] == pytest.approx(first.loss, rel=1e-6)
    assert row["train_acc"] == pytest.approx(first.correct, rel=1e-6)
