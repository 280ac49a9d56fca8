"""Multi-process training on torch.distributed (docs/method.md, "Distributed training"), launched by ``torchrun``.

    torchrun --nproc-per-node 8 -m pada_fast.cli train --config configs/proxyless_imagenet.yaml

Without a launcher (``WORLD_SIZE`` unset or 1) nothing here initialises anything and training is
the single-process run, unchanged. Under ``torchrun`` each process (rank) trains the same path on
its own shard of the global batch:

* the process group uses NCCL when the rank trains on a GPU (GPU = ``LOCAL_RANK``) and gloo on
  the CPU, with ``run.dist_timeout_s`` as the timeout of every collective (gloo and NCCL's
  watchdog honour it), so a rank that stops responding ends the job instead of hanging it;
* gradients of the path are averaged with a flat, bucketed all-reduce over the gradients that
  exist (:func:`average_gradients_`): the path is the same on every rank, so the set is the same,
  and only the active path's parameters travel (DDP would all-reduce every candidate's bucket);
* ``space.sync_bn`` swaps the batch-statistics BatchNorms for
  :class:`~pada_fast.train.sync_batchnorm.SyncBatchStats`, which
  normalises over the global batch, so that N ranks x batch b train exactly like one process with
  batch N*b. Without it each rank normalises over its local batch (the usual multi-GPU practice:
  BN statistics over b instead of N*b samples, a slightly different regulariser).

A rank that raises reports itself (:func:`report_failure`: rank, host, where) and aborts the
process group; torchrun then stops the other ranks.

Test hooks that crash, hang or stop a rank at a chosen step: :mod:`.fault_injection`.
"""
from __future__ import annotations

import datetime
import hashlib
import importlib
import math
import os
import socket
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterable, Optional, Sequence

import torch
from torch import nn

from pada_fast.devices import resolve_device
from pada_fast.log import get_logger

_log = get_logger(__name__)

_OWNS_GROUP = False          # whether setup() created the default process group


def _dist():
    import torch.distributed as dist
    return dist


def _initialized() -> bool:
    dist = _dist()
    return dist.is_available() and dist.is_initialized()


def launched() -> bool:
    """Whether this process was started by a launcher with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def requested_world_size() -> int:
    """The number of processes :func:`setup` will see (checkable before it runs)."""
    if _initialized():
        return _dist().get_world_size()
    return max(int(os.environ.get("WORLD_SIZE", "1")), 1)


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: ``rank`` of ``world_size`` (``local_rank`` on its node), the
    device it trains on and the process group's backend (``None`` in a single process)."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: Optional[str] = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def describe(self) -> str:
        return (f"rank {self.rank} of {self.world_size} "
                f"(local rank {self.local_rank} on {socket.gethostname()})")


def _rank_device(name: str, local_rank: int) -> torch.device:
    if name == "cpu":
        return torch.device("cpu")
    if name == "auto" and not torch.cuda.is_available():
        return torch.device("cpu")
    device = torch.device(name if name != "auto" else "cuda")
    if device.type != "cuda":
        raise ValueError(f"run.device={name} is not supported under torchrun; use auto, cpu or cuda")
    if not torch.cuda.is_available():
        raise RuntimeError(f"run.device={name} but no CUDA GPU is visible; use run.device=cpu")
    if device.index is not None:
        raise ValueError(f"run.device={name} names one GPU, but under torchrun every rank uses GPU "
                         "LOCAL_RANK; use run.device=cuda (or auto), and CUDA_VISIBLE_DEVICES to "
                         "choose the node's GPUs")
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise RuntimeError(f"LOCAL_RANK={local_rank} but only {count} GPU(s) are visible: start at "
                           f"most {count} processes per node (--nproc-per-node)")
    return torch.device("cuda", local_rank)


def _import_world_capturing_modules() -> None:
    """``torch.distributed.nn.functional`` binds ``group.WORLD`` as default arguments when it is
    first imported. Imported after ``init_process_group`` (``torch._dynamo`` imports it, and the
    optimizer imports dynamo) it keeps the process group alive past ``destroy_process_group``;
    gloo's worker threads then outlive it and may free tensors while the interpreter shuts down,
    which aborts the process ("terminate called without an active exception", SIGABRT) after a
    successful run. Imported now, while ``group.WORLD`` is still None, it holds nothing."""
    for name in ("torch.distributed.nn.functional", "torch._dynamo"):
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - optional: absent in some builds
            pass


def setup(device: str = "auto", timeout_s: float = 1800.0) -> DistContext:
    """This process's :class:`DistContext`. Under torchrun (``WORLD_SIZE`` > 1) initialise the
    default process group from the environment (``MASTER_ADDR``/``MASTER_PORT``/``RANK``/
    ``WORLD_SIZE``; NCCL for GPUs, gloo for the CPU) with ``timeout_s`` as the collective timeout,
    and pin the GPU ``LOCAL_RANK``; reuse a group the caller already initialised. Otherwise
    return the single-process context and touch nothing."""
    global _OWNS_GROUP
    if not launched() and not _initialized():
        return DistContext(0, 1, 0, resolve_device(device))
    dist = _dist()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = _rank_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not _initialized():
        _import_world_capturing_modules()
        backend = "nccl" if dev.type == "cuda" else "gloo"
        kwargs = {"device_id": dev} if dev.type == "cuda" else {}
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=float(timeout_s)), **kwargs)
        _OWNS_GROUP = True
    ctx = DistContext(dist.get_rank(), dist.get_world_size(), local_rank, dev, dist.get_backend())
    return ctx


def teardown() -> None:
    """Destroy the process group :func:`setup` created (no-op otherwise)."""
    global _OWNS_GROUP
    if _OWNS_GROUP and _initialized():
        _dist().destroy_process_group()
    _OWNS_GROUP = False


def abort() -> None:
    """Tear the process group down after a failure, without waiting for peers: NCCL
    communicators are aborted (a plain destroy could block on the failed collective), gloo
    closes its connections so blocked peers fail at once instead of at the timeout."""
    global _OWNS_GROUP
    if not _initialized():
        return
    dist = _dist()
    try:
        if dist.get_backend() == "nccl" and hasattr(dist.distributed_c10d, "_abort_process_group"):
            dist.distributed_c10d._abort_process_group()
        if _initialized():
            dist.destroy_process_group()
    except Exception:  # noqa: BLE001 - best effort: the process is about to exit with the real error
        pass
    _OWNS_GROUP = False


def rank() -> int:
    return _dist().get_rank() if _initialized() else 0


def world_size() -> int:
    return _dist().get_world_size() if _initialized() else 1


def is_main() -> bool:
    """True in the process that logs and writes checkpoints (rank 0; any single process)."""
    return rank() == 0


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist = _dist()
        if ctx.backend == "nccl":
            dist.barrier(device_ids=[ctx.device.index])
        else:
            dist.barrier()


def all_reduce_sum_(tensor: torch.Tensor) -> torch.Tensor:
    """In-place sum over ranks (identity in a single process)."""
    if _initialized() and world_size() > 1:
        _dist().all_reduce(tensor)
    return tensor


def broadcast_object(obj, ctx: DistContext, src: int = 0):
    """``obj`` of rank ``src`` on every rank (pickled; identity in a single process)."""
    if not ctx.enabled:
        return obj
    holder = [obj if ctx.rank == src else None]
    _dist().broadcast_object_list(holder, src=src, device=ctx.device if ctx.backend == "nccl" else None)
    return holder[0]


def all_gather_object(obj, ctx: DistContext) -> list:
    """Every rank's ``obj``, in rank order, on every rank (pickled; ``[obj]`` in a single process)."""
    if not ctx.enabled:
        return [obj]
    out = [None] * ctx.world_size
    _dist().all_gather_object(out, obj)
    return out


@torch.no_grad()
def broadcast_module_(module: nn.Module, ctx: DistContext, src: int = 0) -> None:
    """Parameters and buffers of rank ``src`` on every rank (as DDP does at construction)."""
    if not ctx.enabled:
        return
    dist = _dist()
    for tensor in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(tensor.data, src=src)


def _buckets(tensors: Sequence[torch.Tensor], bucket_bytes: int) -> Iterable[list[torch.Tensor]]:
    """Consecutive runs of same-dtype, same-device tensors of at most ``bucket_bytes`` (one tensor
    larger than that is a bucket of its own). Order is kept, so every rank forms the same buckets."""
    bucket: list[torch.Tensor] = []
    size = 0
    for t in tensors:
        nbytes = t.numel() * t.element_size()
        if bucket and (t.dtype != bucket[0].dtype or t.device != bucket[0].device
                       or size + nbytes > bucket_bytes):
            yield bucket
            bucket, size = [], 0
        bucket.append(t)
        size += nbytes
    if bucket:
        yield bucket


@torch.no_grad()
def average_gradients_(params: Sequence[torch.Tensor], world: int,
                       bucket_bytes: int = 64 << 20) -> int:
    """Replace each existing ``p.grad`` by its mean over ranks; returns the number of gradients
    averaged. Parameters without a gradient (candidates off the sampled path) are skipped, which
    is safe because every rank trains the same path: the gradients that exist, and their order,
    are the same on all ranks. Flattened into buckets of ``bucket_bytes`` (one all-reduce each)."""
    if world <= 1:
        return 0
    from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

    dist = _dist()
    grads = [p.grad for p in params if p.grad is not None]
    for bucket in _buckets(grads, bucket_bytes):
        if len(bucket) == 1:
            dist.all_reduce(bucket[0])
            bucket[0].div_(world)
            continue
        flat = _flatten_dense_tensors(bucket)
        dist.all_reduce(flat)
        flat.div_(world)
        for grad, synced in zip(bucket, _unflatten_dense_tensors(flat, bucket)):
            grad.copy_(synced)
    return len(grads)


def fingerprint(data) -> int:
    """A 63-bit hash of a tensor's (or bytes') contents."""
    if isinstance(data, torch.Tensor):
        data = data.detach().cpu().contiguous().numpy().tobytes()
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little") >> 1


def check_consistent(ctx: DistContext, what: str, exact: dict[str, int],
                     approx: Optional[dict[str, float]] = None, rtol: float = 1e-6) -> None:
    """Raise on every rank if the ranks disagree on any value: ``exact`` are integers (hashes,
    see :func:`fingerprint`), ``approx`` floats compared with ``rtol``. One small all-reduce."""
    if not ctx.enabled:
        return
    approx = approx or {}
    names = list(exact) + list(approx)
    # NaN/inf stand-ins, so ranks that all diverged agree and max/min stay well defined
    values = torch.tensor([v if math.isfinite(v) else (1e300 if math.isnan(v) else math.copysign(1e299, v))
                           for v in map(float, approx.values())], dtype=torch.float64)
    ints = torch.tensor(list(exact.values()), dtype=torch.int64)
    # max of (v, -v) gives (max, -min) in one reduction; integers travel as int64, exactly.
    ints_t = torch.cat([ints, -ints]).to(ctx.device)
    vals_t = torch.cat([values, -values]).to(ctx.device)
    dist = _dist()
    k, m = len(exact), len(approx)
    if k:
        dist.all_reduce(ints_t, op=dist.ReduceOp.MAX)
    if m:
        dist.all_reduce(vals_t, op=dist.ReduceOp.MAX)
    ints_t, vals_t = ints_t.cpu(), vals_t.cpu()
    bad = [names[i] for i in range(k) if ints_t[i] != -ints_t[k + i]]
    for j in range(m):
        hi, lo = float(vals_t[j]), -float(vals_t[m + j])
        if not abs(hi - lo) <= rtol * max(abs(hi), abs(lo), 1e-30):
            bad.append(f"{names[k + j]} ({lo!r} .. {hi!r})")
    if bad:
        raise RuntimeError(f"the {ctx.world_size} ranks disagree on {', '.join(bad)} {what}; every "
                           "rank must run the same code, config, seed and checkpoint")


# -- failure handling ----------------------------------------------------------------------------

def _looks_like_peer_failure(exc: BaseException) -> bool:
    dist = _dist()
    kinds = tuple(k for k in (getattr(dist, "DistError", None), getattr(dist, "DistBackendError", None))
                  if k is not None)
    text = str(exc).lower()
    return bool(kinds and isinstance(exc, kinds)) or any(
        word in text for word in ("connection closed", "connection reset", "timed out", "timeout",
                                  "broken pipe", "gloo", "nccl"))


@contextmanager
def report_failure(ctx: DistContext, where: Callable[[], str] = lambda: ""):
    """On an exception in a multi-process run: print which rank failed (and where), abort the
    process group so the peers fail fast instead of waiting for the timeout, and re-raise, so the
    process exits non-zero and torchrun stops the others. A single process just re-raises."""
    try:
        yield
    except BaseException as exc:
        if ctx.enabled and not isinstance(exc, SystemExit):
            place = where()
            hint = ""
            if _looks_like_peer_failure(exc):
                hint = (" -- a collective failed: another rank probably failed first (see its "
                        "message) or stopped responding for run.dist_timeout_s")
            _log.error(f"pada-fast: {ctx.describe()} failed{' ' + place if place else ''}: "
                       f"{type(exc).__name__}: {exc}{hint}")
            abort()
        raise


def rank_totals(loss_sum: torch.Tensor, correct: torch.Tensor, seen: int, device) -> torch.Tensor:
    """A rank's running ``[loss sum, correct, images]`` as one float64 tensor (exact)."""
    return torch.stack([loss_sum.detach().to(torch.float64), correct.to(torch.float64),
                        torch.tensor(float(seen), dtype=torch.float64, device=device)])


def global_totals(dist, loss_sum: torch.Tensor, correct: torch.Tensor, seen: int) -> tuple[float, float, int]:
    """Summed loss, correct predictions and images over all ranks (the host reads them)."""
    if not dist.enabled:
        return loss_sum.item(), correct.item(), seen
    totals = all_reduce_sum_(rank_totals(loss_sum, correct, seen, loss_sum.device))
    loss, right, images = totals.tolist()
    return loss, right, int(images)
