"""Supernet training with SPOS, PA, DA or PA&DA (docs/method.md, Algorithm 1 of the paper).

Each step trains one path on one batch: the path comes from the path sampler's epoch draw (made
on the host at the start of the epoch, so sampling never waits for the device), the batch from
the data sampler's epoch stream. After backward and clipping the step records the path's
per-operation gradient norms (fused op) and every sample's importance, which the fused loss
computed from the same logits, by dataset index. At the epoch's end both samplers update their
distributions. Statistics stay on the device; the host reads them at log intervals and at the
epoch's end only.

Under ``torchrun`` (see :mod:`.distributed`) every rank draws the same paths and global stream,
trains its strided shard of each global batch, averages the gradients before clipping and PA's
record, and sums DA's scores at the epoch's end: with ``space.sync_bn`` the run equals a single
process with the same global ``data.batch_size`` up to floating-point rounding.
"""
from __future__ import annotations

import time
import weakref
from contextlib import contextmanager
from pathlib import Path

import torch

from pada_fast import checkpoint, ops
from pada_fast.config import Config, ConfigError, check_paths
from pada_fast.data.pipeline import TrainingData
from pada_fast.errors import DataError
from pada_fast.files import write_text_atomic
from pada_fast.experiment import build_model, build_optimizer, build_samplers, cosine_lr, epoch_generator
from pada_fast.rng import capture_rng_state, restore_rng_state, seed_everything

from pada_fast.log import get_logger, printable, set_rank

from . import distributed
from .fault_injection import fault_from_env
from .nonfinite import NonFiniteError, NonFiniteGuard, init_momentum_buffers, scaler_found_inf
from .run_folder import RunLock, prepare_fresh_run
from .signals import GracefulStop
from .hooks import EpochState, HookBase, default_hooks
from .logs import EpochLog
from .sync_batchnorm import convert_sync_batch_stats


# Config keys a resumed run may change (besides checkpoint.IGNORED_KEYS): BN synchronisation
# across ranks (the process count is not in the config), the number of epochs (extension), and
# the step size (the remedy for a run stopped by non-finite steps); a changed one is logged.
RESUME_CHANGEABLE_KEYS = frozenset({"optim.epochs", "optim.lr", "optim.lr_min", "optim.grad_clip"})
RESUME_IGNORED_KEYS = checkpoint.IGNORED_KEYS | {"space.sync_bn"} | RESUME_CHANGEABLE_KEYS


_log = get_logger(__name__)


class Trainer:
    """Trains ``cfg``'s supernet; under ``torchrun`` one Trainer per process (see
    :mod:`pada_fast.train.distributed`): ``data.batch_size`` is then the global batch, each rank
    trains ``batch_size / world_size`` images of every step on the same path, and only rank 0
    logs and writes checkpoints. The process group stays up after :meth:`fit` (the CLI tears it
    down; API users call ``distributed.teardown()``)."""

    #: config sections a resumed run must match (less RESUME_IGNORED_KEYS)
    checked_sections = checkpoint.CHECKED_SECTIONS
    #: loss weight of an auxiliary head's logits (see :meth:`forward`)
    aux_weight = 0.0

    def __init__(self, cfg: Config, resume: bool = False, overwrite: bool = False):
        """``resume``: continue the run in ``run.out_dir``. Otherwise ``run.out_dir`` must not hold
        a run, unless ``overwrite``, which moves that run aside (``<out_dir>.old-<time>``)."""
        check_paths(cfg)
        self.cfg = cfg
        world = distributed.requested_world_size()
        if cfg.data.batch_size % world:
            raise ConfigError(f"data.batch_size={cfg.data.batch_size} is the global batch (all processes "
                              f"together) and must be divisible by the number of processes ({world})")
        self.dist = distributed.setup(cfg.run.device, cfg.run.dist_timeout_s)
        set_rank(self.dist.rank)
        self.local_batch = cfg.data.batch_size // self.dist.world_size
        self._where = ""
        self._lock = None
        with distributed.report_failure(self.dist, lambda: self._where or "while setting up"):
            try:
                self._own_out_dir(resume, overwrite)
                self._setup(resume)
            except BaseException:
                self.release()
                raise

    def _own_out_dir(self, resume: bool, overwrite: bool) -> None:
        """Rank 0 locks ``run.out_dir`` for this run and, for a new run, makes sure it holds no
        earlier run (moving it aside with ``overwrite``)."""
        if not self.dist.is_main:
            return
        out = Path(self.cfg.run.out_dir)
        self._lock = RunLock(out).acquire()
        moved = None if resume else prepare_fresh_run(out, overwrite)
        if moved is not None:           # the lock file went along: take the new folder's
            self._lock.release()
            self._lock = RunLock(out).acquire()
            _log.info(f"--overwrite: {out} held a run, now at {moved}")
        weakref.finalize(self, self._lock.release)

    def _resume_advice(self) -> str:
        """Where a stopped run can continue from: its newest checkpoint, if it has one."""
        newest = self.ckpt_manager.checkpoints() if self.ckpt_manager is not None else []
        if not newest:
            return "No checkpoint of this run was written yet: start it again with --overwrite."
        epoch, step, path = newest[0]
        return (f"The newest checkpoint is {path} (after {epoch} epoch(s) and {step} step(s)); continue "
                f"with --resume ({', '.join(sorted(RESUME_CHANGEABLE_KEYS))} may change on resume).")

    def release(self) -> None:
        """Give up ``run.out_dir`` (done by :meth:`fit` at its end, and when the trainer is freed)."""
        if self._lock is not None:
            self._lock.release()

    def _setup(self, resume: bool) -> None:
        cfg = self.cfg
        main = self.dist.is_main
        self.out_dir = Path(cfg.run.out_dir)
        if main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        if cfg.run.threads:
            torch.set_num_threads(cfg.run.threads)
        self.device = self.dist.device
        seed_everything(cfg.run.seed)
        d = cfg.data
        self.data = TrainingData(d, self.device, self.dist.rank, self.dist.world_size, cfg.run.seed)
        self.train_set = self.data.train_set
        self.recipe = self.data.recipe.text
        if self.train_set.skipped and self.dist.is_main:
            # file names that are not valid UTF-8 are written with their undecodable bytes escaped
            write_text_atomic(self.out_dir / "skipped_files.txt",
                              "".join(printable(line) + "\n" for line in self.train_set.skipped))
        self.model = self.build_model(self.train_set.num_classes, self.train_set.in_channels).to(self.device)
        self.dtype = getattr(torch, cfg.run.dtype)
        if self.dtype != torch.float32:
            self.model.to(self.dtype)
        self._setup_throughput()
        if cfg.space.sync_bn and self.dist.enabled:
            if convert_sync_batch_stats(self.model) == 0 and main:
                _log.warning("warning: space.sync_bn=true but the supernet has no batch-statistics BatchNorm "
                          f"(space.bn_mode={cfg.space.bn_mode}); each rank keeps its own statistics")
        m = cfg.method
        self.path_sampler, self.data_sampler = self.build_samplers()
        if m.unbiased and self.path_sampler.paths_per_step > 1:
            raise ConfigError(f"method.unbiased weights the loss by 1/p of one sampled path; {m.name} trains "
                              f"{self.path_sampler.paths_per_step} paths a step, every candidate (nothing to "
                              "reweight): set method.unbiased=false")
        if self.dist.enabled and m.da_aggregation == "official" and self.data_sampler.statistics():
            raise ConfigError("method.da_aggregation=official (the authors' single-process running average of "
                              "each sample's importance) cannot run under torchrun; set method.da_aggregation=mean")
        self.drop_last = self.data.shard.drop_last
        self.steps_per_epoch = self.data.shard.steps_per_epoch
        self.total_steps = self.steps_per_epoch * cfg.optim.epochs
        self.optimizer = build_optimizer(self.model.parameters(), cfg.optim, cfg.run.optimizer_impl)
        # fp16: the gradient scaler; its overflow flag feeds the non-finite guard (docs/method.md, "GPU throughput")
        self.scaler = torch.amp.GradScaler(self.device.type) if cfg.run.precision == "fp16" else None
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        # Steps with a non-finite loss or gradient change nothing and are counted (faults.py);
        # under torch.distributed the flag is all-reduced, so every rank skips the same steps.
        self.guard = NonFiniteGuard(cfg.run.nonfinite_max_consecutive, cfg.run.nonfinite_max_total,
                                    device=self.device, mode="auto", optimizer=self.optimizer)
        self.start_epoch = 0
        self.start_step = 0          # steps of start_epoch already done (a mid-epoch checkpoint)
        self._progress = None        # that epoch's running totals at the checkpoint
        self._stop = None            # GracefulStop while fit() runs
        self._stop_request = None    # a hook's reason to end training after this epoch
        self.exit_code = 0
        self.hooks: list[HookBase] = []
        for hook in default_hooks(fault_from_env()):
            self.register_hook(hook)
        self.log = EpochLog(self.out_dir, cfg.run.tensorboard) if main else None
        self.ckpt_path = self.out_dir / checkpoint.LATEST_NAME
        # Numbered checkpoints, the newest run.keep_checkpoints kept, checkpoint.pt the newest
        # (rank 0 only: the others never touch the folder).
        self.ckpt_manager = checkpoint.CheckpointManager(self.out_dir, cfg.run.keep_checkpoints) if main else None
        if resume:
            self._resume()
        elif main:
            self.log.truncate_after(0)
        # Every rank starts from rank 0's weights, as DDP does (they agree anyway: same seed).
        distributed.broadcast_module_(self.model, self.dist)
        if main:
            cfg.save(self.out_dir / "config.yaml")

    def build_model(self, num_classes: int, in_channels: int) -> torch.nn.Module:
        """The model this trainer trains: ``cfg``'s supernet (``auto`` values resolved)."""
        return build_model(self.cfg, num_classes, in_channels)

    def build_samplers(self):
        """The path and data samplers this trainer draws from: ``cfg.method``'s."""
        return build_samplers(self.cfg, self.model.candidate_mask(), len(self.train_set), self.device)

    @property
    def method_label(self) -> str:
        """What trains, for each epoch's row: the method's name."""
        return self.cfg.method.name

    def describe_model(self) -> str:
        """What is trained, for the run's first line."""
        millions = sum(p.numel() for p in self.model.parameters()) / 1e6
        return (f"{self.cfg.space.name} ({self.model.num_layers} searchable layers, {millions:.2f}M "
                f"parameters) with {self.cfg.method.name}")

    def epoch_summary(self, row: dict) -> str:
        """The end of an epoch's log line: the first layer's path distribution and DA's effective
        sample size."""
        p_text = " ".join(f"{v:.3f}" for v in self.path_sampler.probabilities()[0].tolist())
        return f"p[edge 0] {p_text} q ess/N {row['q']['ess_fraction']:.3f}"

    def forward(self, images: torch.Tensor, arch) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One path's logits and auxiliary logits (None: no auxiliary head) inside the step's
        autocast; the supernet has no auxiliary head."""
        return self.model(images, arch), None

    def _setup_throughput(self) -> None:
        """Precision, memory format and cuDNN autotuning (docs/method.md, "GPU throughput"). ``run.channels_last`` and
        ``run.cudnn_benchmark`` left null are on for CUDA runs and off on the CPU; the values used
        are written back into the config, so the saved config records them."""
        r = self.cfg.run
        cuda = self.device.type == "cuda"
        if r.precision != "fp32" and self.dtype != torch.float32:
            raise ConfigError(f"run.precision={r.precision} autocasts a float32 model; run.dtype={r.dtype} "
                              "asks for another: set run.precision=fp32 or run.dtype=float32")
        if r.channels_last is None:
            r.channels_last = cuda
        if r.cudnn_benchmark is None:
            r.cudnn_benchmark = cuda
        if cuda:
            torch.backends.cudnn.benchmark = r.cudnn_benchmark
        self.memory_format = torch.channels_last if r.channels_last else torch.contiguous_format
        if r.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.autocast_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[r.precision]

    def autocast(self):
        """The forward pass's autocast context (``run.precision``); a no-op for fp32."""
        if self.autocast_dtype is None:
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def log_info(self, message: str) -> None:
        """One line of the run's output (rank 0 only)."""
        if self.dist.is_main:
            _log.info(message)

    def log_warning(self, message: str) -> None:
        """One warning line, on standard error (rank 0 only)."""
        if self.dist.is_main:
            _log.warning(message)

    # -- checkpointing ---------------------------------------------------------------------------
    def state_dict(self, epoch: int, step: int = 0, progress: dict | None = None,
                   data_sampler: dict | None = None) -> dict:
        """Everything an exact resume needs. Under distributed training it is global and the same
        on every rank (weights, optimizer and ``p`` agree because the gradients are averaged;
        ``q`` is computed from the scores summed over ranks), so a run can resume with any number
        of processes as long as the global batch is unchanged."""
        return {
            "config": self.cfg.to_dict(),
            "space": self.cfg.space.name,
            "epoch": epoch,                      # epochs finished
            "step": step,                        # steps done of the next epoch (mid-epoch checkpoint)
            "progress": progress,                # that epoch's running totals (mid-epoch only)
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "path_sampler": self.path_sampler.state_dict(),
            "data_sampler": data_sampler if data_sampler is not None else self.data_sampler.state_dict(),
            "nonfinite": self.guard.state_dict(),
            "rng": capture_rng_state(self.device if self.dist.enabled else None),
            "num_classes": self.train_set.num_classes,
            "classes": list(self.train_set.classes),
            "augment": self.recipe,
            "in_channels": self.train_set.in_channels,
            "scaler": None if self.scaler is None else self.scaler.state_dict(),
            "hooks": {h.state_key: h.state_dict() for h in self.hooks if h.state_key is not None},
        }

    def _load_checkpoint(self) -> tuple[Path, dict]:
        """Rank 0 finds the newest usable checkpoint (walking back past corrupt or truncated files,
        saying which it skipped) and sends it to the others (no shared file system needed); a
        missing or unusable checkpoint raises the same error on every rank."""
        found, error = None, None
        if self.dist.is_main:
            try:
                self.ckpt_manager.remove_stale_temporaries()
                found = self.ckpt_manager.latest_valid()
                if found is None:
                    raise FileNotFoundError(
                        f"--resume given but {self.ckpt_path} does not exist; start without "
                        "--resume or point run.out_dir at the run to continue")
            except (FileNotFoundError, ValueError) as exc:
                if not self.dist.enabled:
                    raise
                error = exc
        if self.dist.enabled:
            found, error = distributed.broadcast_object((found, error), self.dist)
            if error is not None:
                raise error
        return found

    def _resume(self) -> None:
        path, state = self._load_checkpoint()
        # How the work is spread (workers, BN sync across ranks) may change on resume, like the
        # number of processes (the global batch may not); optim.epochs may grow to train longer.
        checkpoint.check_compatible(state, self.cfg, path=path, ignore=RESUME_IGNORED_KEYS,
                                    sections=self.checked_sections)
        saved = state["config"]
        for key in sorted(RESUME_CHANGEABLE_KEYS):
            section, name = key.split(".")
            before, now = saved.get(section, {}).get(name), getattr(getattr(self.cfg, section), name)
            if before != now:
                self.log_info(f"resuming with {key} changed: {before} -> {now}")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.guard.mode == "device":
            init_momentum_buffers(self.optimizer)   # fused SGD: every buffer present (nonfinite.py)
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.path_sampler.load_state_dict(state["path_sampler"])
        self.data_sampler.load_state_dict(state["data_sampler"])
        if state.get("nonfinite") is not None:
            self.guard.load_state_dict(state["nonfinite"])
        restore_rng_state(state["rng"], self.device if self.dist.enabled else None)
        for hook in self.hooks:
            if hook.state_key is not None and hook.state_key in state.get("hooks", {}):
                hook.load_state_dict(state["hooks"][hook.state_key])
        self.start_epoch = int(state["epoch"])
        self.start_step = int(state.get("step") or 0)
        self._progress = state.get("progress") if self.start_step else None
        per_rank = state["data_sampler"].get("per_rank")
        if self.dist.enabled and per_rank is not None and len(per_rank) == self.dist.world_size:
            self.data_sampler.load_local_state(per_rank[self.dist.rank])   # the same ranks: each its own
        elif self.dist.enabled and not self.dist.is_main:
            # A mid-epoch checkpoint holds DA's scores summed over all ranks so far; rank 0
            # carries them and the others start from zero, so the epoch-end sum counts each once.
            self.data_sampler.load_local_state(None)
        if self.dist.is_main:
            self.log.truncate_after(self.start_epoch)
        at = f" step {self.start_step}" if self.start_step else ""
        self.log_info(f"resumed from {path} after epoch {self.start_epoch}{at}")

    # -- training --------------------------------------------------------------------------------
    def _lr_for(self, global_step: int) -> float:
        """Cosine learning rate of a step: per step, or (``optim.lr_schedule=per_epoch``) constant
        within an epoch at the value of its start, as ``CosineAnnealingLR`` stepped per epoch."""
        o = self.cfg.optim
        if o.lr_schedule == "per_epoch":
            return cosine_lr(global_step // self.steps_per_epoch, o.epochs, o.lr, o.lr_min)
        return cosine_lr(global_step, self.total_steps, o.lr, o.lr_min)

    def _check_ranks_agree(self, epoch: int, stream: torch.Tensor, paths: torch.Tensor) -> None:
        """Once per epoch, one small all-reduce: every rank must draw the same paths and stream
        (they come from ``epoch_generator(seed, epoch)`` and ``p``/``q``, which agree) and hold
        the same weights; a rank that diverged would otherwise train silently on other data."""
        with torch.no_grad():
            weights = float(torch.stack([p.detach().abs().sum(dtype=torch.float64)
                                         for p in self.params]).sum())
        distributed.check_consistent(
            self.dist, f"at the start of epoch {epoch + 1}",
            exact={"path draws": distributed.fingerprint(paths),
                   "index stream": distributed.fingerprint(stream),
                   "p": distributed.fingerprint(self.path_sampler.probabilities())},
            approx={"weights (sum of |w|)": weights})

    def _rank_totals(self, loss_sum: torch.Tensor, correct: torch.Tensor, seen: int) -> torch.Tensor:
        """This rank's running ``[loss sum, correct, images]`` as one float64 tensor (exact)."""
        return torch.stack([loss_sum.detach().to(torch.float64), correct.to(torch.float64),
                            torch.tensor(float(seen), dtype=torch.float64, device=self.device)])

    def _totals(self, loss_sum: torch.Tensor, correct: torch.Tensor, seen: int) -> tuple[float, float, int]:
        """Summed loss, correct predictions and images over all ranks (the host reads them)."""
        if not self.dist.enabled:
            return loss_sum.item(), correct.item(), seen
        totals = distributed.all_reduce_sum_(self._rank_totals(loss_sum, correct, seen))
        loss, right, images = totals.tolist()
        return loss, right, int(images)

    def _stop_now(self, step: int) -> bool:
        """Whether a SIGTERM/SIGINT asks to stop after this step. One process reads its flag every
        step; under torch.distributed the ranks agree through a small all-reduce, only at log and
        checkpoint steps (every rank calls it at the same steps)."""
        if self._stop is None:
            return False
        if not self.dist.enabled:
            return self._stop.requested
        every = self.cfg.run.checkpoint_every_steps
        if (step + 1) % self.cfg.run.log_interval and not (every and (step + 1) % every == 0):
            return False
        return self._stop.requested_on_any_rank()

    def _save_mid_epoch(self, state: EpochState) -> None:
        """Checkpoint after ``state.step + 1`` steps of the epoch (every rank calls it: under
        distributed training DA's scores and the running totals are summed over the ranks first)."""
        epoch, step, times = state.epoch, state.step + 1, state.times
        loss_sum, correct, seen = state.loss_sum, state.correct, state.seen
        self._where = f"writing the checkpoint of epoch {epoch + 1} step {step}"
        data_state = self.data_sampler.state_dict()
        if self.dist.enabled:
            # every rank's own totals (exact: one non-zero row per rank), so that a resume with the
            # same number of ranks sums them in the same order as the uninterrupted run
            rows = torch.zeros(self.dist.world_size, 3, dtype=torch.float64, device=self.device)
            rows[self.dist.rank] = self._rank_totals(loss_sum, correct, seen)
            per_rank = distributed.all_reduce_sum_(rows).tolist()
            progress = {"loss_sum": sum(r[0] for r in per_rank), "correct": sum(r[1] for r in per_rank),
                        "seen": int(sum(r[2] for r in per_rank)), "per_rank": per_rank}
            if self.data_sampler.statistics():
                # Each rank's own partial scores (sparse: the samples it drew so far), so a resume
                # with as many ranks sums them at the epoch's end in the same order as the
                # uninterrupted run (a sample drawn on two ranks makes the order matter); their
                # sum serves a resume with another number of ranks.
                local = distributed.all_gather_object(self.data_sampler.local_state(), self.dist)
                data_state = self.data_sampler.combine_local_states(data_state, local)
                data_state["per_rank"] = local
        else:
            progress = {"loss_sum": loss_sum.detach().clone(), "correct": correct.detach().clone(), "seen": seen}
        progress.update(epoch_time=times.total, data_time=times.data, nonfinite_at_start=self._nonfinite_at_start)
        if self.dist.is_main:
            self.ckpt_manager.save(self.state_dict(epoch, step, progress, data_state))
        distributed.barrier(self.dist)

    def _stopped(self, where: str) -> None:
        if self._stop is not None and self._stop.requested:
            self.exit_code = self._stop.exit_code
            self.log_info(self._stop.message(where))
        else:
            self.log_info(f"stopped {where} by a hook")

    def train_epoch(self, epoch: int, start_step: int = 0) -> dict | None:
        """Train one epoch from step ``start_step`` (a resumed mid-epoch checkpoint); returns its
        statistics, or None when a hook stopped it (a SIGTERM/SIGINT; a checkpoint was written)."""
        state = self._begin_epoch(epoch, start_step)
        self._call_hooks("before_epoch", state)
        with self._checkpoint_on_data_error(state):
            for step, batch in enumerate(state.loader, start_step):
                state.step = step
                self._where = f"at epoch {epoch + 1} step {step + 1}"
                state.times.data += time.perf_counter() - state.last
                self._call_hooks("before_step", state)
                self.run_step(state, batch)
                state.steps_run += 1
                state.last = time.perf_counter()
                state.times.total = state.last - state.started
                self._call_hooks("after_step", state)
                if state.stop:
                    self._call_hooks("after_epoch", state)
                    self._stopped(f"at epoch {epoch + 1} step {step + 1}")
                    return None
        self._call_hooks("after_epoch", state)
        self._where = f"at the end of epoch {epoch + 1}"
        return self._epoch_statistics(state)

    def run_step(self, state: EpochState, batch) -> None:
        """One PA&DA step: this step's path(s) on the batch, the loss and every sample's importance
        in one fused op, gradients averaged over ranks and clipped, PA's and DA's records, the
        update; a non-finite loss or gradient skips the records and the update."""
        cfg = self.cfg
        images, labels, indices = batch
        state.lr = self._lr_for(state.global_step)
        for group in self.optimizer.param_groups:
            group["lr"] = state.lr
        images = images.to(self.device, dtype=self.dtype, non_blocking=True, memory_format=self.memory_format)
        labels = labels.to(self.device, non_blocking=True)
        indices = indices.to(self.device, non_blocking=True)
        per_step = self.path_sampler.paths_per_step
        archs = state.archs[state.step * per_step:(state.step + 1) * per_step]
        # update_unsampled=on keeps zero gradients on candidates trained before, so SGD's weight
        # decay and momentum move them this step too (the authors' PyTorch 1.7 behaviour)
        self.optimizer.zero_grad(set_to_none=cfg.optim.update_unsampled == "off")
        step_loss_sum = step_correct = None
        for arch in archs:          # one path; FairNAS: K paths, gradients accumulated
            with self.autocast():
                logits, aux_logits = self.forward(images, arch)
                # float32 losses and importance whatever the logits' dtype
                per_sample, importance = ops.cross_entropy_with_importance(logits, labels,
                                                                           cfg.optim.label_smoothing)
            if cfg.method.unbiased:
                weights = self.data_sampler.importance_weights(indices) * state.path_weights[state.step]
                loss = (per_sample * weights).mean()
            else:
                loss = per_sample.mean()
            if aux_logits is not None:      # DARTS' auxiliary head (retraining)
                loss = loss + self.aux_weight * torch.nn.functional.cross_entropy(
                    aux_logits.float(), labels, label_smoothing=cfg.optim.label_smoothing)
            (loss if self.scaler is None else self.scaler.scale(loss)).backward()
            path_loss = per_sample.detach().sum()
            path_correct = (logits.detach().argmax(1) == labels).sum()
            step_loss_sum = path_loss if step_loss_sum is None else step_loss_sum + path_loss
            step_correct = path_correct if step_correct is None else step_correct + path_correct
        # Mean over ranks of per-rank mean losses = the loss of the global batch; clipping and
        # PA's record see the averaged gradients, identical on every rank.
        distributed.average_gradients_(self.params, self.dist.world_size)
        found_inf = None
        if self.scaler is not None:     # true gradients before clipping and PA's record
            self.scaler.unscale_(self.optimizer)
            found_inf = scaler_found_inf(self.scaler, self.optimizer)
        total_norm = None
        if cfg.optim.grad_clip:
            total_norm = torch.nn.utils.clip_grad_norm_(self.params, cfg.optim.grad_clip, foreach=True)
        self.guard.check(loss, [p.grad for p in self.params], total_norm=total_norm, step=state.global_step,
                         found_inf=found_inf)
        if per_step == 1:
            path_params, slots = self.model.path_parameters(archs[0])
            path = archs[0]
        else:               # FairNAS: every path's operations (each (layer, op) once a step)
            pairs = [self.model.path_parameters(a) for a in archs]
            path_params = [q for params, _ in pairs for q in params]
            slots = [slot for _, sl in pairs for slot in sl]
            path = None     # FairNAS samples uniformly: no official PA record needs the path
        # DA: this rank's samples; summed over ranks at the epoch's end
        self.guard.record(self.path_sampler, [p.grad for p in path_params], slots,
                          self.data_sampler, indices, importance, arch=path)
        self.guard.step(self.optimizer)
        if self.scaler is not None:
            self.scaler.update()        # on the device: lowers the scale after an overflow
        # loss and accuracy: the mean over the step's paths (one path but for FairNAS)
        state.loss_sum += self.guard.masked(step_loss_sum / per_step)
        state.correct += self.guard.masked(step_correct)
        state.seen += labels.shape[0]

    @contextmanager
    def _checkpoint_on_data_error(self, state: EpochState):
        """A file that cannot be read mid-epoch stops training: first, the steps finished since
        the last checkpoint are saved (one process; under torchrun the failing rank cannot
        coordinate a save), so fixing the file and resuming loses no work."""
        try:
            yield
        except DataError as exc:
            finished = state.start_step + state.steps_run
            note = ""
            if not self.dist.enabled and state.steps_run and finished < state.steps:
                self._call_hooks("after_epoch", state)
                self._save_mid_epoch(state)
                note = (f" A checkpoint after epoch {state.epoch + 1} step {finished} was written: fix the "
                        "file (or set data.bad_files=skip) and continue with --resume.")
            raise DataError(f"{exc}{note}") from exc

    def _begin_epoch(self, epoch: int, start_step: int) -> EpochState:
        """The epoch's paths and stream (functions of the seed and the epoch only), its loader from
        ``start_step``, and its running totals (a resumed mid-epoch checkpoint's)."""
        cfg = self.cfg
        self._where = f"at the start of epoch {epoch + 1}"
        gen = epoch_generator(cfg.run.seed, epoch)
        stream = self.data_sampler.epoch_stream(gen)
        paths = self.path_sampler.sample_epoch(self.steps_per_epoch, gen)
        if self.dist.enabled:
            self._check_ranks_agree(epoch, stream, paths)
        self.model.train()
        state = EpochState(epoch=epoch, steps=self.steps_per_epoch, start_step=start_step, paths=paths,
                           archs=[tuple(row) for row in paths.tolist()],
                           loader=self.data.epoch_batches(stream, epoch, start_step),
                           loss_sum=torch.zeros((), device=self.device),
                           correct=torch.zeros((), device=self.device, dtype=torch.long))
        state.path_weights = (self.path_sampler.importance_weights(paths).to(torch.float32)
                              if cfg.method.unbiased else None)
        progress = self._progress if start_step else None
        self._progress = None
        self._nonfinite_at_start = self.guard.counts()["total"]
        if progress is not None:
            self._nonfinite_at_start = int(progress.get("nonfinite_at_start", self._nonfinite_at_start))
            state.times.total, state.times.data = float(progress["epoch_time"]), float(progress["data_time"])
            per_rank = progress.get("per_rank")
            if per_rank is not None and len(per_rank) == self.dist.world_size:
                mine = per_rank[self.dist.rank]     # the same ranks again: each continues its own totals
                state.loss_sum = torch.tensor(mine[0], dtype=torch.float32, device=self.device)
                state.correct = torch.tensor(int(mine[1]), dtype=torch.long, device=self.device)
                state.seen = int(mine[2])
            elif self.dist.is_main:     # another number of ranks: one rank carries the global totals
                state.loss_sum = torch.as_tensor(progress["loss_sum"], dtype=torch.float32).to(self.device).clone()
                state.correct = torch.as_tensor(progress["correct"]).to(self.device, torch.long).clone()
                state.seen = int(progress["seen"])
        state.last = time.perf_counter()
        state.started = state.last - state.times.total
        return state

    def averages(self, state: EpochState) -> tuple[float, float, int]:
        """The epoch's mean loss and accuracy so far over the steps that were not skipped (a
        skipped step's loss counts nowhere), and the images seen (skipped ones included)."""
        total_loss, total_correct, total_seen = self._totals(state.loss_sum, state.correct, state.seen)
        skipped = self.guard.counts()["total"] - self._nonfinite_at_start
        step_images = self.cfg.data.batch_size if self.drop_last else len(self.train_set)
        valid = max(total_seen - skipped * step_images, 0)
        per_step = self.path_sampler.paths_per_step
        return total_loss / max(valid, 1), total_correct / max(valid * per_step, 1), total_seen

    def _epoch_statistics(self, state: EpochState) -> dict:
        loss, acc, total_seen = self.averages(state)
        counts = self.guard.counts()
        return {"train_loss": loss,
                "nonfinite_skipped": counts["total"] - self._nonfinite_at_start,
                "nonfinite_total": counts["total"], "nonfinite_longest_run": counts["longest_run"],
                "train_acc": acc,
                "images": total_seen, "epoch_time": state.times.total, "data_time": state.times.data,
                "images_per_s": total_seen / max(state.times.total, 1e-9),
                "lr": self._lr_for((state.epoch + 1) * self.steps_per_epoch)}

    def register_hook(self, hook: HookBase) -> HookBase:
        """Append ``hook`` (see :mod:`.hooks`) to the hooks the trainer calls, in order."""
        hook.trainer = self
        self.hooks.append(hook)
        return hook

    def request_stop(self, reason: str) -> None:
        """End training after the current epoch's checkpoint (a hook's ``end_of_epoch`` calls it)."""
        self._stop_request = reason

    def _call_hooks(self, point: str, *args) -> None:
        for hook in self.hooks:
            getattr(hook, point)(*args)

    def end_epoch(self, epoch: int) -> dict:
        epochs = self.cfg.optim.epochs
        next_epoch = min(epoch + 1, epochs)
        if self.dist.enabled:
            # Each rank scored only its own shard; PA's statistics already agree (averaged grads).
            self.data_sampler.reduce_(distributed.all_reduce_sum_)
        self.path_sampler.end_epoch(next_epoch, epochs)
        self.data_sampler.end_epoch(next_epoch, epochs)
        row = {"p": [[round(v, 5) for v in r] for r in self.path_sampler.probabilities().tolist()],
               "mean_grad_norms": None if self.path_sampler.last_mean_norms is None else
               [[round(v, 5) for v in r] for r in self.path_sampler.last_mean_norms.tolist()],
               "q": self.data_sampler.summary()}
        for sampler in (self.path_sampler, self.data_sampler):
            if getattr(sampler, "fallback_message", None):
                self.log_warning(f"warning: {sampler.fallback_message}")
        return row

    def fit(self) -> dict:
        cfg = self.cfg
        ranks = ""
        if self.dist.enabled:
            ranks = (f" x {self.dist.world_size} processes ({self.dist.backend}, {self.local_batch} "
                     f"images per rank, BN statistics {'global' if cfg.space.sync_bn else 'per rank'})")
        self.log_info(f"training {self.describe_model()} on "
                    f"{cfg.data.dataset} ({len(self.train_set)} images, {self.steps_per_epoch} steps/epoch) "
                    f"on {self.device}{ranks}; fused ops {'compiled' if ops.COMPILED else 'reference'}; "
                    f"outputs in {self.out_dir}")
        started = time.perf_counter()
        row = {}
        self.exit_code = 0
        with GracefulStop() as stop, distributed.report_failure(self.dist, lambda: self._where):
            self._stop = stop
            try:
                row = self._fit_epochs(row)
            except NonFiniteError as exc:
                raise NonFiniteError(f"{exc} {self._resume_advice()}") from None
            finally:
                self._stop = None
                self.release()
        return {"out_dir": str(self.out_dir), "checkpoint": str(self.ckpt_path),
                "train_time": time.perf_counter() - started, "last": row, "exit_code": self.exit_code,
                "stopped_by": self._stop_request}

    def _fit_epochs(self, row: dict) -> dict:
        cfg = self.cfg
        for epoch in range(self.start_epoch, cfg.optim.epochs):
            trained = self.train_epoch(epoch, self.start_step if epoch == self.start_epoch else 0)
            if trained is None:        # stopped by a signal, checkpoint written
                return row
            row = {"epoch": epoch, "method": self.method_label, **trained}
            row.update(self.end_epoch(epoch))
            self._call_hooks("end_of_epoch", epoch, row)
            if self.dist.is_main:
                self._where = f"writing the checkpoint of epoch {epoch + 1}"
                self.log.append(row)
                self.ckpt_manager.save(self.state_dict(epoch + 1))
                _log.info(f"epoch {epoch + 1}/{cfg.optim.epochs} done: loss {row['train_loss']:.4f} "
                          f"acc {row['train_acc']:.4f} time {row['epoch_time']:.1f}s {self.epoch_summary(row)}")
            self._where = f"waiting for rank 0's checkpoint of epoch {epoch + 1}"
            distributed.barrier(self.dist)   # nobody runs ahead of (or exits before) the checkpoint
            if self._stop_request is not None and epoch + 1 < cfg.optim.epochs:
                self.log_info(f"stopped after epoch {epoch + 1} of {cfg.optim.epochs}: {self._stop_request}; "
                              f"the checkpoint is {self.ckpt_path}")
                return row
            if epoch + 1 < cfg.optim.epochs and self._stop is not None and (
                    self._stop.requested_on_any_rank() if self.dist.enabled else self._stop.requested):
                self._stopped(f"after epoch {epoch + 1}")
                return row
        return row
