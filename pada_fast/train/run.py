"""A training run: what the loop (:mod:`.loop`) needs around its steps, shared by supernet
training (:mod:`.trainer`) and retraining (:mod:`.retrain`).

The run owns ``run.out_dir`` (:mod:`.run_folder`), builds the data pipeline
(:mod:`pada_fast.data.pipeline`), the model (the subclass's ``build_model``) in its
:class:`~.precision.Precision`, the optimiser and the non-finite guard, and checkpoints everything
an exact resume needs (:mod:`.resume`). Each epoch's draws are functions of the seed and the epoch
only; under ``torchrun`` every rank checks once per epoch that it draws what the others draw.
Statistics stay on the device; the host reads them at log intervals and at the epoch's end.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path

import torch

from pada_fast import checkpoint, ops
from pada_fast.config import Config, ConfigError, check_paths
from pada_fast.data.pipeline import TrainingData
from pada_fast.errors import DataError
from pada_fast.experiment import build_optimizer, cosine_lr, epoch_generator
from pada_fast.files import write_text_atomic
from pada_fast.log import get_logger, printable, set_rank
from pada_fast.rng import seed_everything

from . import distributed
from . import resume as resume_module
from .fault_injection import fault_from_env
from .hooks import EpochState, default_hooks
from .logs import EpochLog
from .loop import TrainerBase
from .nonfinite import NonFiniteError, NonFiniteGuard
from .precision import Precision
from .run_folder import own_run_folder
from .signals import GracefulStop

_log = get_logger(__name__)


class TrainingRun(TrainerBase):
    """Subclasses provide ``build_model``, ``build_samplers`` (the path sampler may be None: one
    network, nothing to sample), ``step`` (set in ``setup_method``), ``end_epoch``,
    ``describe_model``, ``epoch_summary`` and ``method_label``."""

    #: config sections a resumed run must match (less resume.IGNORED_KEYS)
    checked_sections = checkpoint.CHECKED_SECTIONS

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
        self.hooks = []
        self._lock = None
        self._stop = None            # GracefulStop while fit() runs
        with distributed.report_failure(self.dist, lambda: self._where or "while setting up"):
            try:
                if self.dist.is_main:
                    if resume:
                        resume_module.check_resumable(Path(cfg.run.out_dir))
                    self._lock = own_run_folder(self, Path(cfg.run.out_dir), resume, overwrite)
                self._setup(resume)
            except BaseException:
                self.release()
                raise

    def release(self) -> None:
        """Give up ``run.out_dir`` (done by :meth:`fit` at its end, and when the trainer is freed)."""
        if self._lock is not None:
            self._lock.release()

    # -- set-up ------------------------------------------------------------------------------------
    def _setup(self, resume: bool) -> None:
        self._setup_data()
        self.precision = Precision(self.cfg.run, self.device)
        model = self.build_model(self.train_set.num_classes, self.train_set.in_channels).to(self.device)
        self.model = self.precision.prepare(model)
        self.setup_method()
        self._setup_optimisation()
        if resume:
            resume_module.resume(self)
        elif self.dist.is_main:
            self.log.truncate_after(0)
        # Every rank starts from rank 0's weights, as DDP does (they agree anyway: same seed).
        distributed.broadcast_module_(self.model, self.dist)
        if self.dist.is_main:
            self.cfg.save(self.out_dir / "config.yaml")

    def _setup_data(self) -> None:
        cfg = self.cfg
        self.out_dir = Path(cfg.run.out_dir)
        if self.dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        if cfg.run.threads:
            torch.set_num_threads(cfg.run.threads)
        self.device = self.dist.device
        seed_everything(cfg.run.seed)
        self.data = TrainingData(cfg.data, self.device, self.dist.rank, self.dist.world_size, cfg.run.seed)
        self.train_set = self.data.train_set
        self.recipe = self.data.recipe.text
        if self.train_set.skipped and self.dist.is_main:
            # file names that are not valid UTF-8 are written with their undecodable bytes escaped
            write_text_atomic(self.out_dir / "skipped_files.txt",
                              "".join(printable(line) + "\n" for line in self.train_set.skipped))
        self.drop_last = self.data.shard.drop_last
        self.steps_per_epoch = self.data.shard.steps_per_epoch
        self.total_steps = self.steps_per_epoch * cfg.optim.epochs

    def setup_method(self) -> None:
        """The samplers (and the subclass's checks of them) and the step."""
        self.path_sampler, self.data_sampler = self.build_samplers()

    def _setup_optimisation(self) -> None:
        cfg = self.cfg
        self.optimizer = build_optimizer(self.model.parameters(), cfg.optim, cfg.run.optimizer_impl)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        # Steps with a non-finite loss or gradient change nothing and are counted (nonfinite.py);
        # under torch.distributed the flag is all-reduced, so every rank skips the same steps.
        self.guard = NonFiniteGuard(cfg.run.nonfinite_max_consecutive, cfg.run.nonfinite_max_total,
                                    device=self.device, mode="auto", optimizer=self.optimizer)
        self.exit_code = 0
        self._progress = None        # a resumed mid-epoch checkpoint's running totals
        for hook in default_hooks(fault_from_env()):
            self.register_hook(hook)
        main = self.dist.is_main
        self.log = EpochLog(self.out_dir, cfg.run.tensorboard) if main else None
        self.ckpt_path = self.out_dir / checkpoint.LATEST_NAME
        # Numbered checkpoints, the newest run.keep_checkpoints kept, checkpoint.pt the newest
        # (rank 0 only: the others never touch the folder).
        self.ckpt_manager = checkpoint.CheckpointManager(self.out_dir, cfg.run.keep_checkpoints) if main else None

    # -- what the precision wrapper holds, under the names hooks and tools read ----------------------
    @property
    def dtype(self):
        return self.precision.dtype

    @property
    def memory_format(self):
        return self.precision.memory_format

    @property
    def scaler(self):
        return self.precision.scaler

    def autocast(self):
        return self.precision.autocast()

    def log_info(self, message: str) -> None:
        """One line of the run's output (rank 0 only)."""
        if self.dist.is_main:
            _log.info(message)

    def log_warning(self, message: str) -> None:
        """One warning line, on standard error (rank 0 only)."""
        if self.dist.is_main:
            _log.warning(message)

    def load_checkpoint(self):
        """(path, state) of the newest usable checkpoint (see :func:`.resume.load_checkpoint`)."""
        return resume_module.load_checkpoint(self)

    def state_dict(self, epoch: int, step: int = 0, progress: dict | None = None,
                   data_sampler: dict | None = None) -> dict:
        """Everything an exact resume needs (see :func:`.resume.run_state`)."""
        return resume_module.run_state(self, epoch, step, progress, data_sampler)

    # -- epochs ------------------------------------------------------------------------------------
    def lr_for(self, global_step: int) -> float:
        """Cosine learning rate of a step: per step, or (``optim.lr_schedule=per_epoch``) constant
        within an epoch at the value of its start, as ``CosineAnnealingLR`` stepped per epoch."""
        o = self.cfg.optim
        if o.lr_schedule == "per_epoch":
            return cosine_lr(global_step // self.steps_per_epoch, o.epochs, o.lr, o.lr_min)
        return cosine_lr(global_step, self.total_steps, o.lr, o.lr_min)

    def begin_epoch(self, epoch: int, start_step: int) -> EpochState:
        """The epoch's paths and stream (functions of the seed and the epoch only), its loader from
        ``start_step``, and its running totals (a resumed mid-epoch checkpoint's)."""
        self._where = f"at the start of epoch {epoch + 1}"
        gen = epoch_generator(self.cfg.run.seed, epoch)
        stream = self.data_sampler.epoch_stream(gen)
        paths = None if self.path_sampler is None else self.path_sampler.sample_epoch(self.steps_per_epoch, gen)
        if self.dist.enabled:
            self._check_ranks_agree(epoch, stream, paths)
        self.model.train()
        state = EpochState(epoch=epoch, steps=self.steps_per_epoch, start_step=start_step, paths=paths,
                           archs=[] if paths is None else [tuple(row) for row in paths.tolist()],
                           loader=self.data.epoch_batches(stream, epoch, start_step),
                           loss_sum=torch.zeros((), device=self.device),
                           correct=torch.zeros((), device=self.device, dtype=torch.long))
        if self.cfg.method.unbiased and paths is not None:
            state.path_weights = self.path_sampler.importance_weights(paths).to(torch.float32)
        progress = self._progress if start_step else None
        self._progress = None
        self._nonfinite_at_start = self.guard.counts()["total"]
        if progress is not None:
            self._continue_totals(state, progress)
        state.last = time.perf_counter()
        state.started = state.last - state.times.total
        return state

    def _continue_totals(self, state: EpochState, progress: dict) -> None:
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

    def _check_ranks_agree(self, epoch: int, stream: torch.Tensor, paths) -> None:
        """Once per epoch, one small all-reduce: every rank must draw the same paths and stream
        (they come from ``epoch_generator(seed, epoch)`` and ``p``/``q``, which agree) and hold
        the same weights; a rank that diverged would otherwise train silently on other data."""
        with torch.no_grad():
            weights = float(torch.stack([p.detach().abs().sum(dtype=torch.float64)
                                         for p in self.params]).sum())
        exact = {"index stream": distributed.fingerprint(stream)}
        if paths is not None:
            exact.update({"path draws": distributed.fingerprint(paths),
                          "p": distributed.fingerprint(self.path_sampler.probabilities())})
        distributed.check_consistent(self.dist, f"at the start of epoch {epoch + 1}", exact=exact,
                                     approx={"weights (sum of |w|)": weights})

    @property
    def paths_per_step(self) -> int:
        return 1 if self.path_sampler is None else self.path_sampler.paths_per_step

    def averages(self, state: EpochState) -> tuple[float, float, int]:
        """The epoch's mean loss and accuracy so far over the steps that were not skipped (a
        skipped step's loss counts nowhere), and the images seen (skipped ones included)."""
        total_loss, total_correct, total_seen = distributed.global_totals(
            self.dist, state.loss_sum, state.correct, state.seen)
        skipped = self.guard.counts()["total"] - self._nonfinite_at_start
        step_images = self.cfg.data.batch_size if self.drop_last else len(self.train_set)
        valid = max(total_seen - skipped * step_images, 0)
        return total_loss / max(valid, 1), total_correct / max(valid * self.paths_per_step, 1), total_seen

    def epoch_statistics(self, state: EpochState) -> dict:
        loss, acc, total_seen = self.averages(state)
        counts = self.guard.counts()
        return {"train_loss": loss,
                "nonfinite_skipped": counts["total"] - self._nonfinite_at_start,
                "nonfinite_total": counts["total"], "nonfinite_longest_run": counts["longest_run"],
                "train_acc": acc,
                "images": total_seen, "epoch_time": state.times.total, "data_time": state.times.data,
                "images_per_s": total_seen / max(state.times.total, 1e-9),
                "lr": self.lr_for((state.epoch + 1) * self.steps_per_epoch)}

    def save_epoch(self, epoch: int, row: dict) -> None:
        """The epoch's row logged and its checkpoint written (rank 0); every rank waits for it."""
        if self.dist.is_main:
            self._where = f"writing the checkpoint of epoch {epoch + 1}"
            self.log.append(row)
            self.ckpt_manager.save(self.state_dict(epoch + 1))
            _log.info(f"epoch {epoch + 1}/{self.cfg.optim.epochs} done: loss {row['train_loss']:.4f} "
                      f"acc {row['train_acc']:.4f} time {row['epoch_time']:.1f}s {self.epoch_summary(row)}")
        self._where = f"waiting for rank 0's checkpoint of epoch {epoch + 1}"
        distributed.barrier(self.dist)   # nobody runs ahead of (or exits before) the checkpoint

    def save_mid_epoch(self, state: EpochState) -> None:
        """Checkpoint after ``state.step + 1`` steps of the epoch (every rank calls it: under
        distributed training DA's scores and the running totals are summed over the ranks first)."""
        step = state.step + 1
        self._where = f"writing the checkpoint of epoch {state.epoch + 1} step {step}"
        progress, data_state = resume_module.mid_epoch_progress(self, state)
        progress.update(epoch_time=state.times.total, data_time=state.times.data,
                        nonfinite_at_start=self._nonfinite_at_start)
        if self.dist.is_main:
            self.ckpt_manager.save(self.state_dict(state.epoch, step, progress, data_state))
        distributed.barrier(self.dist)

    @contextmanager
    def data_errors(self, state: EpochState):
        """A file that cannot be read mid-epoch stops training: first, the steps finished since
        the last checkpoint are saved (one process; under torchrun the failing rank cannot
        coordinate a save), so fixing the file and resuming loses no work."""
        try:
            yield
        except DataError as exc:
            finished = state.start_step + state.steps_run
            note = ""
            if not self.dist.enabled and state.steps_run and finished < state.steps:
                self.call_hooks("after_epoch", state)
                self.save_mid_epoch(state)
                note = (f" A checkpoint after epoch {state.epoch + 1} step {finished} was written: fix the "
                        "file (or set data.bad_files=skip) and continue with --resume.")
            raise DataError(f"{exc}{note}") from exc

    # -- stops -------------------------------------------------------------------------------------
    def stop_requested(self, step: int) -> bool:
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

    def signal_stop_requested(self) -> bool:
        """After an epoch: whether a SIGTERM/SIGINT arrived (on any rank)."""
        if self._stop is None:
            return False
        return self._stop.requested_on_any_rank() if self.dist.enabled else self._stop.requested

    def report_stop(self, where: str) -> None:
        if self._stop is not None and self._stop.requested:
            self.exit_code = self._stop.exit_code
            self.log_info(self._stop.message(where))
        else:
            self.log_info(f"stopped {where} by a hook")

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
                row = self.fit_epochs()
            except NonFiniteError as exc:
                raise NonFiniteError(f"{exc} {resume_module.resume_advice(self)}") from None
            finally:
                self._stop = None
                self.release()
        return {"out_dir": str(self.out_dir), "checkpoint": str(self.ckpt_path),
                "train_time": time.perf_counter() - started, "last": row, "exit_code": self.exit_code,
                "stopped_by": self.stop_reason}


__all__ = ["TrainingRun"]
