"""Supernet training with SPOS, PA, DA, PA&DA or FairNAS (docs/method.md, Algorithm 1 of the paper).

Each step trains one path on one batch (:class:`~.steps.SupernetStep`): the path comes from the
path sampler's epoch draw (made on the host at the start of the epoch, so sampling never waits for
the device), the batch from the data sampler's epoch stream. After backward and clipping the step
records the path's per-operation gradient norms (fused op) and every sample's importance, which
the fused loss computed from the same logits, by dataset index. At the epoch's end both samplers
update their distributions (:meth:`Trainer.end_epoch`).

Under ``torchrun`` (see :mod:`.distributed`) every rank draws the same paths and global stream,
trains its strided shard of each global batch, averages the gradients before clipping and PA's
record, and sums DA's scores at the epoch's end: with ``space.sync_bn`` the run equals a single
process with the same global ``data.batch_size`` up to floating-point rounding.

The loop is :mod:`.loop`'s, the run's machinery (data, precision, checkpoints, resume) :mod:`.run`'s.
"""
from __future__ import annotations

import torch

from pada_fast.config import ConfigError
from pada_fast.experiment import build_model, build_samplers
from pada_fast.log import get_logger

from . import distributed
from .resume import CHANGEABLE_KEYS as RESUME_CHANGEABLE_KEYS
from .resume import IGNORED_KEYS as RESUME_IGNORED_KEYS
from .run import TrainingRun
from .steps import SupernetStep
from .sync_batchnorm import convert_sync_batch_stats

_log = get_logger(__name__)


class Trainer(TrainingRun):
    """Trains ``cfg``'s supernet; under ``torchrun`` one Trainer per process (see
    :mod:`pada_fast.train.distributed`): ``data.batch_size`` is then the global batch, each rank
    trains ``batch_size / world_size`` images of every step on the same path, and only rank 0
    logs and writes checkpoints. The process group stays up after :meth:`fit` (the CLI tears it
    down; API users call ``distributed.teardown()``)."""

    def build_model(self, num_classes: int, in_channels: int) -> torch.nn.Module:
        """The model this trainer trains: ``cfg``'s supernet (``auto`` values resolved)."""
        return build_model(self.cfg, num_classes, in_channels)

    def build_samplers(self):
        """The path and data samplers this trainer draws from: ``cfg.method``'s."""
        return build_samplers(self.cfg, self.model.candidate_mask(), len(self.train_set), self.device)

    def setup_method(self) -> None:
        cfg = self.cfg
        if cfg.space.sync_bn and self.dist.enabled and convert_sync_batch_stats(self.model) == 0:
            self.log_warning("warning: space.sync_bn=true but the supernet has no batch-statistics BatchNorm "
                             f"(space.bn_mode={cfg.space.bn_mode}); each rank keeps its own statistics")
        super().setup_method()
        m = cfg.method
        if m.unbiased and self.path_sampler.paths_per_step > 1:
            raise ConfigError(f"method.unbiased weights the loss by 1/p of one sampled path; {m.name} trains "
                              f"{self.path_sampler.paths_per_step} paths a step, every candidate (nothing to "
                              "reweight): set method.unbiased=false")
        if self.dist.enabled and m.da_aggregation == "official" and self.data_sampler.statistics():
            raise ConfigError("method.da_aggregation=official (the authors' single-process running average of "
                              "each sample's importance) cannot run under torchrun; set method.da_aggregation=mean")
        self.step = SupernetStep(self)

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
        """One path's logits and auxiliary logits (None: the supernet has no auxiliary head)."""
        return self.model(images, arch), None

    def end_epoch(self, epoch: int) -> dict:
        """Both samplers set the next epoch's distributions; the row records them."""
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


__all__ = ["RESUME_CHANGEABLE_KEYS", "RESUME_IGNORED_KEYS", "Trainer"]
