"""What a training run's checkpoint holds, and how a run continues from one.

A checkpoint holds everything an exact resume needs: the config, the epoch and step reached (and,
mid-epoch, the epoch's running totals), weights, optimiser, the samplers' state, the non-finite
guard's counts, RNG states, the gradient scaler's, and each stateful hook's ``state_dict``.
Under distributed training it is global and the same on every rank (weights, optimiser and ``p``
agree because the gradients are averaged; ``q`` is computed from the scores summed over ranks),
so a run can resume with any number of processes as long as the global batch is unchanged.
"""
from __future__ import annotations

from pathlib import Path

import torch

from pada_fast import checkpoint
from pada_fast.errors import CheckpointError, ConfigError
from pada_fast.rng import capture_rng_state, restore_rng_state

from . import distributed
from .nonfinite import init_momentum_buffers

# Config keys a resumed run may change (besides checkpoint.IGNORED_KEYS): BN synchronisation
# across ranks (the process count is not in the config), the number of epochs (extension), and
# the step size (the remedy for a run stopped by non-finite steps); a changed one is logged.
CHANGEABLE_KEYS = frozenset({"optim.epochs", "optim.lr", "optim.lr_min", "optim.grad_clip"})
IGNORED_KEYS = checkpoint.IGNORED_KEYS | {"space.sync_bn"} | CHANGEABLE_KEYS


def run_state(run, epoch: int, step: int = 0, progress: dict | None = None, data_sampler: dict | None = None) -> dict:
    """The checkpoint of ``run`` after ``epoch`` epochs and ``step`` steps of the next."""
    return {
        "config": run.cfg.to_dict(),
        "space": run.cfg.space.name,
        "epoch": epoch,                      # epochs finished
        "step": step,                        # steps done of the next epoch (mid-epoch checkpoint)
        "progress": progress,                # that epoch's running totals (mid-epoch only)
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "path_sampler": None if run.path_sampler is None else run.path_sampler.state_dict(),
        "data_sampler": data_sampler if data_sampler is not None else run.data_sampler.state_dict(),
        "nonfinite": run.guard.state_dict(),
        "rng": capture_rng_state(run.device if run.dist.enabled else None),
        "num_classes": run.train_set.num_classes,
        "classes": list(run.train_set.classes),
        "augment": run.recipe,
        "in_channels": run.train_set.in_channels,
        "scaler": run.precision.state_dict(),
        "hooks": {h.state_key: h.state_dict() for h in run.hooks if h.state_key is not None},
    }


def mid_epoch_progress(run, state) -> tuple[dict, dict]:
    """The running epoch's totals and the data sampler's state for a mid-epoch checkpoint (every
    rank calls it: under distributed training they are gathered from all ranks)."""
    data_state = run.data_sampler.state_dict()
    if not run.dist.enabled:
        return ({"loss_sum": state.loss_sum.detach().clone(), "correct": state.correct.detach().clone(),
                 "seen": state.seen}, data_state)
    # every rank's own totals (exact: one non-zero row per rank), so that a resume with the same
    # number of ranks sums them in the same order as the uninterrupted run
    rows = torch.zeros(run.dist.world_size, 3, dtype=torch.float64, device=run.device)
    rows[run.dist.rank] = distributed.rank_totals(state.loss_sum, state.correct, state.seen, run.device)
    per_rank = distributed.all_reduce_sum_(rows).tolist()
    progress = {"loss_sum": sum(r[0] for r in per_rank), "correct": sum(r[1] for r in per_rank),
                "seen": int(sum(r[2] for r in per_rank)), "per_rank": per_rank}
    if run.data_sampler.statistics():
        # Each rank's own partial scores (sparse: the samples it drew so far), so a resume with as
        # many ranks sums them at the epoch's end in the same order as the uninterrupted run (a
        # sample drawn on two ranks makes the order matter); their sum serves another rank count.
        local = distributed.all_gather_object(run.data_sampler.local_state(), run.dist)
        data_state = run.data_sampler.combine_local_states(data_state, local)
        data_state["per_rank"] = local
    return progress, data_state


def check_resumable(out_dir: Path) -> None:
    """Before anything is created: ``--resume`` needs a run folder with a checkpoint in it."""
    if not out_dir.is_dir() or not any(out_dir.glob("checkpoint*.pt")):
        raise CheckpointError(f"--resume: {out_dir} holds no checkpoint to continue (no checkpoint*.pt); start the "
                              "run without --resume, or point run.out_dir at the run to continue")


def load_checkpoint(run) -> tuple[Path, dict]:
    """Rank 0 finds the newest usable checkpoint (walking back past corrupt or truncated files,
    saying which it skipped) and sends it to the others (no shared file system needed); a missing
    or unusable checkpoint raises the same error on every rank."""
    found, error = None, None
    if run.dist.is_main:
        try:
            run.ckpt_manager.remove_stale_temporaries()
            found = run.ckpt_manager.latest_valid()
            if found is None:
                raise CheckpointError(f"--resume given but {run.ckpt_path} does not exist; start without "
                                      "--resume or point run.out_dir at the run to continue")
        except (FileNotFoundError, ValueError) as exc:
            if not run.dist.enabled:
                raise
            error = exc
    if run.dist.enabled:
        found, error = distributed.broadcast_object((found, error), run.dist)
        if error is not None:
            raise error
    return found


def resume(run) -> None:
    """Continue ``run`` from its newest usable checkpoint."""
    path, state = run.load_checkpoint()
    # How the work is spread (workers, BN sync across ranks) may change on resume, like the number
    # of processes (the global batch may not); optim.epochs may grow to train longer.
    checkpoint.check_compatible(state, run.cfg, path=path, ignore=IGNORED_KEYS, sections=run.checked_sections)
    done = int(state["epoch"])
    if run.cfg.optim.epochs < done:
        raise ConfigError(f"{path} has trained {done} epochs; --resume with optim.epochs={run.cfg.optim.epochs} "
                          f"would train none and contradict it: set optim.epochs to {done} or more")
    saved = state["config"]
    for key in sorted(CHANGEABLE_KEYS):
        section, name = key.split(".")
        before, now = saved.get(section, {}).get(name), getattr(getattr(run.cfg, section), name)
        if before != now:
            run.log_info(f"resuming with {key} changed: {before} -> {now}")
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    if run.guard.mode == "device":
        init_momentum_buffers(run.optimizer)   # fused SGD: every buffer present (nonfinite.py)
    run.precision.load_state_dict(state.get("scaler"))
    if run.path_sampler is not None:
        run.path_sampler.load_state_dict(state["path_sampler"])
    run.data_sampler.load_state_dict(state["data_sampler"])
    if state.get("nonfinite") is not None:
        run.guard.load_state_dict(state["nonfinite"])
    restore_rng_state(state["rng"], run.device if run.dist.enabled else None)
    for hook in run.hooks:
        if hook.state_key is not None and hook.state_key in state.get("hooks", {}):
            hook.load_state_dict(state["hooks"][hook.state_key])
    run.start_epoch = int(state["epoch"])
    run.start_step = int(state.get("step") or 0)
    run._progress = state.get("progress") if run.start_step else None
    _continue_data_sampler(run, state["data_sampler"].get("per_rank"))
    if run.dist.is_main:
        run.log.truncate_after(run.start_epoch)
    at = f" step {run.start_step}" if run.start_step else ""
    run.log_info(f"resumed from {path} after epoch {run.start_epoch}{at}")


def _continue_data_sampler(run, per_rank) -> None:
    if run.dist.enabled and per_rank is not None and len(per_rank) == run.dist.world_size:
        run.data_sampler.load_local_state(per_rank[run.dist.rank])   # the same ranks: each its own
    elif run.dist.enabled and not run.dist.is_main:
        # A mid-epoch checkpoint holds DA's scores summed over all ranks so far; rank 0 carries
        # them and the others start from zero, so the epoch-end sum counts each once.
        run.data_sampler.load_local_state(None)


def resume_advice(run) -> str:
    """Where a stopped run can continue from: its newest checkpoint, if it has one."""
    newest = run.ckpt_manager.checkpoints() if run.ckpt_manager is not None else []
    if not newest:
        return "No checkpoint of this run was written yet: start it again with --overwrite."
    epoch, step, path = newest[0]
    return (f"The newest checkpoint is {path} (after {epoch} epoch(s) and {step} step(s)); continue "
            f"with --resume ({', '.join(sorted(CHANGEABLE_KEYS))} may change on resume).")


__all__ = ["CHANGEABLE_KEYS", "IGNORED_KEYS", "load_checkpoint", "mid_epoch_progress", "resume", "resume_advice",
           "run_state"]
