"""Trainer fault tolerance end to end: a `pada-fast train` process stopped by SIGTERM (graceful:
finishes the step, checkpoints mid-epoch, exits 143) or killed by SIGKILL (mid-epoch checkpoints
every 5 steps) resumes and ends bitwise identical to an uninterrupted run: weights, momentum, p, q,
the metric rows and the ranking of the shipped digits table, for SPOS and PA&DA, in one process
and in two gloo processes (killed as a whole process group, resumed with two processes).

CI runs a short version (one epoch-boundary kill and one random kill per run).
PADA_FAST_FULL_FAULTS=1 runs more kill points; PADA_FAST_FAULT_SEED picks them."""
import json
import os
import random
import signal
import subprocess
from pathlib import Path

import pytest
import torch

from pada_fast.config import load_config
from pada_fast.evaluate.rank import rank_supernet
from pada_fast.quickstart import TABLE
from pada_fast import checkpoint
from pada_fast.train.trainer import Trainer

from train_launch import REPO, child_env, train_command

EPOCHS = 3
SETS = ["space.C=4", "space.N=1", f"optim.epochs={EPOCHS}", "data.batch_size=64",
        "run.threads=1", "run.device=cpu", "run.log_interval=1", "run.progress=lines"]
FULL = os.environ.get("PADA_FAST_FULL_FAULTS") == "1"
METHODS = ["spos", "pada"]


def _sets(out_dir, method, **extra):
    return SETS + [f"method.name={method}", f"run.out_dir={out_dir}"] + [f"{k}={v}" for k, v in extra.items()]


@pytest.fixture(scope="module", params=METHODS)
def reference(request, tmp_path_factory):
    """One uninterrupted single-process run per method: (method, steps per epoch, checkpoint, folder)."""
    method = request.param
    out = tmp_path_factory.mktemp(f"reference_{method}")
    trainer = Trainer(load_config(None, _sets(out, method)))
    trainer.fit()
    return method, trainer.steps_per_epoch, checkpoint.load(out / "checkpoint.pt"), out


def _assert_same(a, b):
    assert a["epoch"] == b["epoch"] == EPOCHS and b["step"] == 0
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(sa["momentum_buffer"], sb["momentum_buffer"])
    assert torch.equal(a["path_sampler"]["p"], b["path_sampler"]["p"])
    qa, qb = a["data_sampler"].get("q"), b["data_sampler"].get("q")
    assert (qa is None) == (qb is None) and (qa is None or torch.equal(qa, qb))


def _assert_same_rows(run_dir, ref_dir):
    rows = [json.loads(r) for r in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    ref_rows = [json.loads(r) for r in (Path(ref_dir) / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(EPOCHS))
    for a, b in zip(rows, ref_rows):
        assert a["train_loss"] == b["train_loss"] and a["train_acc"] == b["train_acc"] and a["p"] == b["p"]


def _assert_same_ranking(run_dir, ref_dir):
    """Both supernets rank the shipped digits table (60 architectures) identically."""
    got = [rank_supernet(Path(d) / "checkpoint.pt", Path(d) / "rank", ground_truth=str(TABLE), archs="all",
                         eval_subset=200, progress=False) for d in (run_dir, ref_dir)]
    assert got[0]["kendall_tau"] == got[1]["kendall_tau"]
    assert (Path(run_dir) / "rank" / "predictions.csv").read_bytes() == \
        (Path(ref_dir) / "rank" / "predictions.csv").read_bytes()


def _command(out_dir, method, resume, nproc=1, **extra):
    return train_command(_sets(out_dir, method, **extra), nproc, resume)


def _descendants(pid):
    """Every live descendant of ``pid`` (torchrun starts its ranks in sessions of their own, so a
    process-group kill would miss them)."""
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _run_with_fault(cmd, global_step, mode):
    """Run ``cmd`` with the trainer's fault hook set at the start of ``global_step`` (0-based).
    ``sigterm``: the trainer sends itself SIGTERM (a graceful stop). ``sigkill``: rank 0 freezes
    there (SIGSTOP) and the whole job -- launcher and every rank -- is SIGKILLed at once.
    Returns (exit code, stdout, stderr)."""
    hook = "sigstop" if mode == "sigkill" else mode
    env = child_env(PADA_FAST_FAULT_STEP=str(global_step), PADA_FAST_FAULT_MODE=hook)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=REPO, start_new_session=True)
    try:
        if mode == "sigkill":
            for line in proc.stderr:
                if "PADA_FAST_FAULT_MODE=sigstop test hook" in line:
                    break
            for pid in [proc.pid] + _descendants(proc.pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode, out, err


def _finish(cmd):
    done = subprocess.run(cmd, capture_output=True, text=True, env=child_env(), cwd=REPO, timeout=300)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    return done


def _kill_points(steps, count, seed):
    """Global steps (0-based) to kill at: the first step after epoch 1's checkpoint (an epoch
    boundary) plus ``count - 1`` random mid-epoch steps, in order."""
    rng = random.Random(seed)
    mid_epoch = [g for g in range(1, EPOCHS * steps) if g % steps]
    return sorted({steps} | set(rng.sample(mid_epoch, count - 1)))


def _kill_and_resume(out_dir, method, steps, points, nproc, extra):
    """SIGKILL the run at each global step in ``points`` (resuming between kills), then finish."""
    for g in points:
        resume = (Path(out_dir) / "checkpoint.pt").exists()   # a kill before the first checkpoint restarts
        rc, out, err = _run_with_fault(_command(out_dir, method, resume, nproc, **extra), g, "sigkill")
        assert rc == -signal.SIGKILL, (out + err)[-3000:]
        epoch, step = divmod(g, steps)       # the last step logged before the kill
        assert (f"epoch {epoch + 1}/{EPOCHS} step {step}/" if step else f"epoch {epoch}/{EPOCHS} done") in out, out
    assert list(Path(out_dir).glob("checkpoint-e*-s*.pt"))
    return _finish(_command(out_dir, method, True, nproc, **extra))


def test_sigterm_mid_epoch_checkpoints_and_resumes_identically(tmp_path, reference):
    method, steps, ref, ref_dir = reference
    step = steps // 2
    # SIGTERM arrives at the start of epoch 2's step `step + 1`; that step finishes first
    rc, out, err = _run_with_fault(_command(tmp_path, method, False), steps + step, "sigterm")
    assert rc == 128 + signal.SIGTERM, err[-3000:]
    assert "received SIGTERM" in err and "stopped by SIGTERM" in out
    state = checkpoint.load(tmp_path / "checkpoint.pt")
    assert state["epoch"] == 1 and state["step"] == step + 1
    done = _finish(_command(tmp_path, method, True))
    assert f"after epoch 1 step {state['step']}" in done.stdout
    _assert_same(ref, checkpoint.load(tmp_path / "checkpoint.pt"))
    _assert_same_rows(tmp_path, ref_dir)


def test_sigkill_at_random_steps_resumes_bitwise(tmp_path, reference):
    method, steps, ref, ref_dir = reference
    seed = int(os.environ.get("PADA_FAST_FAULT_SEED", "7"))
    points = _kill_points(steps, 5 if FULL else 2, seed)
    _kill_and_resume(tmp_path, method, steps, points, 1,
                     {"run.checkpoint_every_steps": 5, "run.keep_checkpoints": 3})
    _assert_same(ref, checkpoint.load(tmp_path / "checkpoint.pt"))
    _assert_same_rows(tmp_path, ref_dir)
    _assert_same_ranking(tmp_path, ref_dir)


@pytest.mark.skipif(not torch.distributed.is_available(), reason="needs torch.distributed")
@pytest.mark.parametrize("method", METHODS)
def test_two_process_sigkill_resumes_bitwise(tmp_path, method):
    """Two gloo ranks killed together (SIGKILL to the process group) at random steps, resumed with
    two ranks: bitwise the uninterrupted two-rank run."""
    extra = {"data.train_subset": 512, "run.checkpoint_every_steps": 3, "run.keep_checkpoints": 2}
    steps = 512 // 64
    ref_dir = tmp_path / "reference"
    _finish(_command(ref_dir, method, False, 2, **extra))
    seed = int(os.environ.get("PADA_FAST_FAULT_SEED", "7"))
    points = _kill_points(steps, 3 if FULL else 2, seed)
    done = _kill_and_resume(tmp_path / "run", method, steps, points, 2, extra)
    assert "x 2 processes (gloo" in done.stdout
    _assert_same(checkpoint.load(ref_dir / "checkpoint.pt"), checkpoint.load(tmp_path / "run" / "checkpoint.pt"))
    _assert_same_rows(tmp_path / "run", ref_dir)
    _assert_same_ranking(tmp_path / "run", ref_dir)
