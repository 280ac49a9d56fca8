"""Multi-process training on the CPU (gloo), launched as users do:
``python -m torch.distributed.run --nproc-per-node 2 -m pada_fast.cli train ...``.

The equivalence tests compare 2 processes x per-rank batch b against 1 process x batch 2b with
``space.sync_bn=true``, in float64 (``run.dtype``): in float32 the two runs round differently
(different reduction orders), and within a few steps one ReLU input that sits within rounding
distance of 0 flips and moves some gradient by ~1% (observed on digits: one element of 16,384
changed the stem's gradient by 0.7%), after which the trajectories drift apart like any two
float32 runs with different reduction orders. In float64 that does not happen, so the tests can
demand the same weights and p (to ~1e-12) and q (to float32 rounding: DA's scores are float32).
"""
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from pada_fast.config import ConfigError, load_config
from pada_fast import checkpoint
from pada_fast.train import distributed
from pada_fast.train.sync_batchnorm import SyncBatchStats, convert_sync_batch_stats
from pada_fast.train.trainer import Trainer

from train_launch import REPO, child_env, free_port, train_command

STEPS_PER_EPOCH = 8          # 512 images / global batch 64

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="needs torch.distributed")


def overrides(out_dir, method, **extra):
    values = {"space.C": 4, "space.N": 1, "optim.epochs": 2, "data.batch_size": 64,
              "data.train_subset": 512, "data.augment": "true", "method.name": method,
              "space.sync_bn": "true", "run.dtype": "float64", "run.out_dir": out_dir, "run.threads": 1,
              "run.log_interval": 4, "run.progress": "lines", "run.device": "cpu"}
    values.update(extra)
    return [f"{k}={v}" for k, v in values.items()]


def torchrun(sets, nproc=2, resume=False, env=None, timeout=120):
    """Run ``pada_fast.cli train`` under torchrun; returns (returncode, output, seconds)."""
    start = time.perf_counter()
    proc = subprocess.run(train_command(sets, nproc, resume), cwd=REPO, env=child_env(**(env or {})),
                          capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout + proc.stderr, time.perf_counter() - start


def single(out_dir, method, resume=False, **extra):
    cfg = load_config(None, overrides(out_dir, method, **extra))
    Trainer(cfg, resume=resume).fit()
    return checkpoint.load(Path(out_dir) / "checkpoint.pt")


def assert_same_training(a, b):
    assert a["epoch"] == b["epoch"]
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=1e-6, atol=1e-9, msg=key)
    torch.testing.assert_close(a["path_sampler"]["p"], b["path_sampler"]["p"], rtol=1e-6, atol=1e-9)
    qa, qb = a["data_sampler"].get("q"), b["data_sampler"].get("q")
    assert (qa is None) == (qb is None)
    if qa is not None:
        torch.testing.assert_close(qa, qb, rtol=1e-4, atol=0.0)
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        torch.testing.assert_close(sa["momentum_buffer"], sb["momentum_buffer"], rtol=1e-6, atol=1e-9)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One process, global batch 64, two epochs, per method (computed once)."""
    root = tmp_path_factory.mktemp("reference")
    return {m: single(root / m, m) for m in ("spos", "pada")}


def rows(out_dir):
    return [json.loads(line) for line in (Path(out_dir) / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("method", ["spos", "pada"])
def test_two_processes_train_like_one_with_the_global_batch(tmp_path, reference, method):
    rc, out, _ = torchrun(overrides(tmp_path / "two", method))
    assert rc == 0, out
    assert "x 2 processes (gloo, 32 images per rank, BN statistics global)" in out
    assert out.count("epoch 2/2 done") == 1, out          # only rank 0 logs
    assert_same_training(reference[method], checkpoint.load(tmp_path / "two" / "checkpoint.pt"))
    logged = rows(tmp_path / "two")
    assert [r["epoch"] for r in logged] == [0, 1]
    assert all(r["images"] == 512 for r in logged)           # global counts, not rank 0's
    if method == "pada":
        assert logged[-1]["q"]["ess_fraction"] < 0.999


def test_dali_backend_serves_the_same_shards(tmp_path):
    pytest.importorskip("nvidia.dali")
    extra = {"data.backend": "dali", "data.augment": "false"}
    one = single(tmp_path / "one", "pada", **extra)
    rc, out, _ = torchrun(overrides(tmp_path / "two", "pada", **extra))
    assert rc == 0, out
    assert_same_training(one, checkpoint.load(tmp_path / "two" / "checkpoint.pt"))


def test_a_failing_rank_ends_the_job_and_its_checkpoint_resumes_in_one_process(tmp_path, reference):
    run = tmp_path / "run"
    rc, out, seconds = torchrun(overrides(run, "pada"), env={
        "PADA_FAST_FAULT_RANK": "1", "PADA_FAST_FAULT_STEP": str(STEPS_PER_EPOCH)})
    assert rc != 0
    assert seconds < 60, out
    assert "pada-fast: rank 1 of 2" in out and "failed at epoch 2 step 1" in out, out
    assert "injected fault on rank 1" in out
    # epoch 1 was checkpointed before the fault; one process continues it
    assert checkpoint.load(run / "checkpoint.pt")["epoch"] == 1
    resumed = single(run, "pada", resume=True)
    assert_same_training(reference["pada"], resumed)
    assert [r["epoch"] for r in rows(run)] == [0, 1]


def test_a_single_process_checkpoint_resumes_with_two_processes(tmp_path, reference, monkeypatch):
    run = tmp_path / "run"
    monkeypatch.setenv("PADA_FAST_FAULT_STEP", str(STEPS_PER_EPOCH))
    with pytest.raises(RuntimeError, match="injected fault on rank 0"):
        single(run, "pada")
    monkeypatch.delenv("PADA_FAST_FAULT_STEP")
    rc, out, _ = torchrun(overrides(run, "pada"), resume=True)
    assert rc == 0, out
    assert out.count("resumed from") == 1
    assert_same_training(reference["pada"], checkpoint.load(run / "checkpoint.pt"))


def test_a_hung_rank_times_out(tmp_path):
    # Without sync_bn (each rank's own BN statistics): rank 0 then waits in the gradient
    # all-reduce, and gives up after run.dist_timeout_s.
    sets = overrides(tmp_path / "run", "spos", **{"space.sync_bn": "false", "run.dist_timeout_s": 5,
                                                  "run.dtype": "float32"})
    rc, out, seconds = torchrun(sets, env={"PADA_FAST_FAULT_RANK": "1", "PADA_FAST_FAULT_STEP": "2",
                                           "PADA_FAST_FAULT_MODE": "hang"})
    assert rc != 0
    assert seconds < 60, out
    assert "rank 1 hangs at step 2" in out
    assert "pada-fast: rank 0 of 2" in out and "stopped responding" in out, out


def test_global_batch_must_divide_by_the_number_of_processes(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    cfg = load_config(None, overrides(tmp_path, "spos"))
    with pytest.raises(ConfigError, match="data.batch_size=64 .* divisible by the number of processes"):
        Trainer(cfg)
    assert not torch.distributed.is_initialized()


# -- pieces ---------------------------------------------------------------------------------------

def test_single_process_context_touches_nothing(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ctx = distributed.setup("cpu")
    assert (ctx.rank, ctx.world_size, ctx.enabled, ctx.is_main) == (0, 1, False, True)
    assert not torch.distributed.is_initialized()
    params = [torch.nn.Parameter(torch.ones(3))]
    params[0].grad = torch.full((3,), 2.0)
    assert distributed.average_gradients_(params, 1) == 0
    assert torch.equal(params[0].grad, torch.full((3,), 2.0))


def test_convert_sync_batch_stats_keeps_parameters_and_keys():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4, affine=True,
                                                                               track_running_stats=False),
                                torch.nn.BatchNorm2d(4))   # running statistics: left alone
    weight = model[1].weight
    keys = list(model.state_dict())
    assert convert_sync_batch_stats(model) == 1
    assert isinstance(model[1], SyncBatchStats) and model[1].weight is weight
    assert isinstance(model[2], torch.nn.BatchNorm2d)
    assert list(model.state_dict()) == keys
    # without a process group it is plain batch-statistics BN
    x = torch.randn(8, 4, 5, 5, dtype=torch.float64)
    bn = model[1].double()
    expected = torch.nn.functional.batch_norm(x, None, None, bn.weight, bn.bias, True, 0.0, bn.eps)
    torch.testing.assert_close(bn(x), expected)


def test_buckets_keep_order_and_split_by_size_and_dtype():
    ts = [torch.zeros(10), torch.zeros(10), torch.zeros(10, dtype=torch.float64), torch.zeros(100),
          torch.zeros(1)]
    buckets = list(distributed._buckets(ts, bucket_bytes=100))
    assert [[t.numel() for t in b] for b in buckets] == [[10, 10], [10], [100], [1]]
    assert [t for b in buckets for t in b] == ts


def _sync_bn_worker(rank, world, port, path):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4, affine=True,
                                                                              track_running_stats=False),
                              torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(4 * 36, 2)).double()
    with torch.no_grad():
        net[1].weight.uniform_(0.5, 1.5)
        net[1].bias.uniform_(-0.5, 0.5)
    x = torch.randn(12, 3, 8, 8, dtype=torch.float64) * 3 + 1
    y = torch.randn(12, 2, dtype=torch.float64)
    # reference: one process, the whole batch
    loss = torch.nn.functional.mse_loss(net(x), y)
    loss.backward()
    ref = {n: p.grad.clone() for n, p in net.named_parameters()}
    out_ref = net(x)
    net.zero_grad()
    convert_sync_batch_stats(net)
    shard = slice(rank, None, world)           # strided shards, as the trainer's
    out = net(x[shard])
    torch.nn.functional.mse_loss(out, y[shard]).backward()
    distributed.average_gradients_(list(net.parameters()), world)
    errors = {"out": (out - out_ref[shard]).abs().max().item()}
    errors.update({n: (p.grad - ref[n]).abs().max().item() for n, p in net.named_parameters()})
    if rank == 0:
        torch.save(errors, path)
    torch.distributed.destroy_process_group()


def test_sync_batch_stats_equals_global_batch_norm(tmp_path):
    """Forward and gradients of 2 ranks x 6 samples with SyncBatchStats and averaged gradients
    equal one process with 12 samples."""
    torch.multiprocessing.spawn(_sync_bn_worker, args=(2, free_port(), str(tmp_path / "err.pt")),
                                nprocs=2, join=True)
    errors = torch.load(tmp_path / "err.pt")
    assert max(errors.values()) < 1e-12, errors


def _teardown_worker(rank, world, port, path):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world))
    threads = len(os.listdir("/proc/self/task"))
    ctx = distributed.setup("cpu", 60)
    torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=0.1)   # imports torch._dynamo
    t = torch.ones(4)
    distributed.all_reduce_sum_(t)
    distributed.barrier(ctx)
    distributed.teardown()
    if rank == 0:
        torch.save({"before": threads, "after": len(os.listdir("/proc/self/task"))}, path)


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads through /proc")
def test_teardown_stops_the_process_group_threads(tmp_path):
    """After teardown no gloo thread may survive: one that does can free a tensor while the
    interpreter shuts down and abort a finished run (SIGABRT)."""
    torch.multiprocessing.spawn(_teardown_worker, args=(2, free_port(), str(tmp_path / "t.pt")),
                                nprocs=2, join=True)
    counts = torch.load(tmp_path / "t.pt")
    assert counts["after"] == counts["before"], counts


def test_mid_epoch_checkpoints_resume_across_process_counts(tmp_path, reference):
    """Mid-epoch checkpoints of a 2-process run hold DA's scores summed over the ranks: a 2-process
    resume (rank 0 carries them) and a 1-process resume both continue the same training."""
    run = tmp_path / "run"
    sets = overrides(run, "pada", **{"run.checkpoint_every_steps": 3})
    rc, out, _ = torchrun(sets, env={"PADA_FAST_FAULT_RANK": "1", "PADA_FAST_FAULT_STEP": "6"})
    assert rc != 0 and "injected fault on rank 1" in out, out
    state = checkpoint.load(run / "checkpoint.pt")
    assert (state["epoch"], state["step"]) == (0, 6)
    rc, out, _ = torchrun(sets, resume=True, env={"PADA_FAST_FAULT_RANK": "0",
                                                  "PADA_FAST_FAULT_STEP": str(STEPS_PER_EPOCH + 4)})
    assert rc != 0 and "resumed from" in out and "after epoch 0 step 6" in out, out
    state = checkpoint.load(run / "checkpoint.pt")
    assert (state["epoch"], state["step"]) == (1, 3)
    resumed = single(run, "pada", resume=True, **{"run.checkpoint_every_steps": 3})
    assert_same_training(reference["pada"], resumed)
    assert [r["epoch"] for r in rows(run)] == [0, 1]
    assert all(r["images"] == 512 for r in rows(run))


def test_sigterm_to_torchrun_stops_every_rank_with_a_checkpoint(tmp_path, reference):
    run = tmp_path / "run"
    sets = overrides(run, "pada", **{"run.log_interval": 1, "optim.epochs": 2})
    proc = subprocess.Popen(train_command(sets, 2), cwd=REPO, env=child_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("epoch 1/2 step 3/"):
                proc.send_signal(signal.SIGTERM)
                break
        out = "".join(lines) + proc.communicate(timeout=90)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    assert "stopped by SIGTERM" in out, out
    state = checkpoint.load(run / "checkpoint.pt")
    assert state["epoch"] == 1 or (state["epoch"] == 0 and 3 <= state["step"] < STEPS_PER_EPOCH), out
    resumed = single(run, "pada", resume=True)
    assert_same_training(reference["pada"], resumed)
