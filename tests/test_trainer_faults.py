"""Trainer fault tolerance end to end: a `pada-fast train` process stopped by SIGTERM (graceful:
finishes the step, checkpoints mid-epoch, exits 143) or killed by SIGKILL (mid-epoch checkpoints
every 5 steps) resumes and ends bitwise identical to an uninterrupted run (weights, p, q).

PADA_FAST_FULL_FAULTS=1 runs more SIGKILL points."""
import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pada_fast.config import load_config
from pada_fast.train import checkpoint
from pada_fast.train.trainer import Trainer

SETS = ["space.C=4", "space.N=1", "optim.epochs=3", "data.batch_size=64", "method.name=pada",
        "run.threads=1", "run.device=cpu", "run.log_interval=1", "run.progress=lines"]


def _sets(out_dir, **extra):
    return SETS + [f"run.out_dir={out_dir}"] + [f"{k}={v}" for k, v in extra.items()]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    trainer = Trainer(load_config(None, _sets(out)))
    trainer.fit()
    return trainer.steps_per_epoch, checkpoint.load(out / "checkpoint.pt"), out


def _assert_same(a, b):
    assert a["epoch"] == b["epoch"] == 3 and b["step"] == 0
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert torch.equal(a["path_sampler"]["p"], b["path_sampler"]["p"])
    assert torch.equal(a["data_sampler"]["q"], b["data_sampler"]["q"])


def _command(out_dir, resume, **extra):
    cmd = [sys.executable, "-m", "pada_fast.cli", "train"]
    for s in _sets(out_dir, **extra):
        cmd += ["--set", s]
    return cmd + (["--resume"] if resume else [])


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _run_until(out_dir, resume, epoch, step, sig, **extra):
    """Start `pada-fast train`, send ``sig`` once it logs ``epoch`` (1-based) ``step``; returns
    (exit code, stdout, stderr)."""
    marker = f"epoch {epoch}/3 step {step}/"
    proc = subprocess.Popen(_command(out_dir, resume, **extra), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env())
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith(marker):
                proc.send_signal(sig)
                break
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, "".join(lines) + out, err


def _finish(out_dir, **extra):
    done = subprocess.run(_command(out_dir, True, **extra), capture_output=True, text=True,
                          env=_env(), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_sigterm_mid_epoch_checkpoints_and_resumes_identically(tmp_path, reference):
    steps, ref, ref_dir = reference
    step = steps // 2
    rc, out, err = _run_until(tmp_path, False, 2, step, signal.SIGTERM)
    assert rc == 128 + signal.SIGTERM, err[-3000:]
    assert "received SIGTERM" in err and "stopped by SIGTERM" in out
    state = checkpoint.load(tmp_path / "checkpoint.pt")
    # the signal arrives while step `step` (or the next) runs; that step finishes first
    assert state["epoch"] == 1 and step <= state["step"] < steps
    done = _finish(tmp_path)
    assert f"after epoch 1 step {state['step']}" in done.stdout
    _assert_same(ref, checkpoint.load(tmp_path / "checkpoint.pt"))
    rows = [json.loads(r) for r in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    ref_rows = [json.loads(r) for r in (ref_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1, 2]
    for a, b in zip(rows, ref_rows):
        assert a["train_loss"] == b["train_loss"] and a["train_acc"] == b["train_acc"] and a["p"] == b["p"]


def test_sigkill_at_random_steps_resumes_from_the_last_mid_epoch_checkpoint(tmp_path, reference):
    steps, ref, _ = reference
    total = 3 * steps
    count = 5 if os.environ.get("PADA_FAST_FULL_FAULTS") == "1" else 2
    rng = random.Random(int(os.environ.get("PADA_FAST_FAULT_SEED", "7")))
    points = sorted(rng.sample(range(1, total - 1), count))
    extra = {"run.checkpoint_every_steps": 5, "run.keep_checkpoints": 3}
    last = None
    for i, g in enumerate(points):
        epoch, step = divmod(g, steps)
        if step == 0:
            epoch, step = epoch - 1, steps
        if last is not None and (epoch, step) <= last:
            continue
        resume = (tmp_path / "checkpoint.pt").exists()     # a kill before the first checkpoint restarts
        rc, _, err = _run_until(tmp_path, resume, epoch + 1, step, signal.SIGKILL, **extra)
        assert rc == -signal.SIGKILL, err[-3000:]
        last = (epoch, step)
    assert list(tmp_path.glob("checkpoint-e*-s*.pt"))
    _finish(tmp_path, **extra)
    _assert_same(ref, checkpoint.load(tmp_path / "checkpoint.pt"))
