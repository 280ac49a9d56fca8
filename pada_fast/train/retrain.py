"""``pada-fast retrain``: a found architecture trained stand-alone with the trainer's machinery.

The architecture (``retrain.arch``) is a search's architecture file, a NAS-Bench-201 string, a
DARTS genotype or a ProxylessNAS ops string (:func:`retrain_spec`). Its stand-alone network
(fresh weights, running-statistics BatchNorm) is trained by :class:`RetrainTrainer`: a training
run (:mod:`.run`) whose step is :class:`~.steps.PlainStep` (the network alone, no path to sample)
on plain shuffled epochs, so checkpoints, exact resume, torchrun, precision modes, the non-finite
guard, hooks and ``metrics.csv``/``metrics.jsonl`` are the supernet trainer's. What the
papers' recipes add are hooks and options here:

* DARTS' auxiliary head (``retrain.auxiliary_weight``: its loss is added with that weight) and
  drop-path (``retrain.drop_path``, raised linearly from 0 over the epochs, as DARTS does);
* ProxylessNAS/MobileNet: dropout before the classifier (``retrain.dropout``), label smoothing
  (``optim.label_smoothing``), nesterov SGD or RMSProp (``optim.name``), and an exponential
  moving average of the weights (``retrain.ema_decay``), evaluated beside the weights;
* the test accuracy every ``retrain.eval_every`` epochs and after the last (``test_acc``,
  ``ema_test_acc`` in the epoch's row); ``retrained.json`` in ``run.out_dir`` holds the
  architecture file of the network with its final accuracy, ``pada-fast export --weights`` reads
  the checkpoint.
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from pada_fast.architecture import FORMAT as ARCH_FORMAT
from pada_fast.architecture import load_arch
from pada_fast.config import Config, ConfigError
from pada_fast.data.datasets import build_split
from pada_fast.data.loader import build_loader
from pada_fast.experiment import resolve_bn_mode, resolve_granularity
from pada_fast.files import write_json_atomic
from pada_fast.log import get_logger
from pada_fast.registry import SPACES
from pada_fast.reproduce import resolve_reproduction
from pada_fast.sampling.data import UniformDataSampler
from pada_fast.search.flops import network_cost
from pada_fast.spaces import build_network

from .hooks import HookBase
from .run import TrainingRun
from .steps import PlainStep

_log = get_logger(__name__)


# -- the architecture ---------------------------------------------------------------------------------
def _is_file(text: str) -> bool:
    try:
        return Path(text).is_file()
    except OSError:          # e.g. a name longer than the file system allows
        return False


# retrain options that only some spaces' networks have (their registry entries list them)
RETRAIN_OPTIONS = ("auxiliary_weight", "drop_path", "dropout")


def parse_arch_source(text: str, space_cfg) -> dict:
    """``retrain.arch`` as ``{"space", "arch", "network": {"kwargs"}}`` (an architecture file's
    fields). A string names the network's sizes through the config's ``space`` section."""
    text = str(text).strip()
    for name in SPACES.names():
        parse = SPACES.get(name).parse_string
        if parse is None:
            continue
        try:
            spec = parse(text, space_cfg)
        except (ValueError, KeyError, IndexError, TypeError, SyntaxError) as exc:
            title = SPACES.get(name).title or name
            raise ConfigError(f"retrain.arch is not a valid {title} architecture string: {exc}") from None
        if spec is not None:
            return {"space": name, **spec, "source": "string"}
    if text.endswith(".json") or _is_file(text):
        if not _is_file(text):
            raise ConfigError(f"retrain.arch {text} does not exist (an architecture file such as a search's "
                              "best.json, or an architecture string)")
        try:
            spec = load_arch(text)
        except ValueError as exc:
            raise ConfigError(f"retrain.arch: {exc}") from None
        return {**spec, "source": text}
    raise ConfigError(f"retrain.arch {text[:80]!r} is neither an architecture file nor an architecture "
                      "string (NAS-Bench-201 '|op~0|+|...|', DARTS 'Genotype(...)', ProxylessNAS 'k3e6|skip|...')")


def retrain_spec(cfg: Config, num_classes: int, in_channels: int) -> dict:
    """The architecture and the stand-alone network's constructor arguments for this run: the
    architecture's, with the dataset's classes and channels, the ``retrain`` section's sizes, and
    running-statistics BatchNorm."""
    r = cfg.retrain
    if not r.arch:
        raise ConfigError("retrain.arch is not set: pass an architecture file (a search's best.json) or "
                          "string with --arch, or set retrain.arch")
    spec = parse_arch_source(r.arch, cfg.space)
    kwargs = dict(spec["network"]["kwargs"])
    kwargs.update(num_classes=num_classes, in_channels=in_channels)
    space = spec["space"]
    entry = SPACES.get(space)
    for key in entry.retrain_sizes:
        if getattr(r, key) is not None:
            kwargs[key] = getattr(r, key)
    for key in RETRAIN_OPTIONS:
        if getattr(r, key) and key not in entry.retrain_options:
            accepting = [n for n in SPACES.names() if key in SPACES.get(n).retrain_options]
            raise ConfigError(f"retrain.{key} applies to {', '.join(accepting)} networks, not {space}; set it to 0")
    if entry.retrain_kwargs is not None:
        kwargs.update(entry.retrain_kwargs(r))
    kwargs["bn_mode"] = "running"
    return {**spec, "network": {"kwargs": kwargs}}


# -- hooks ------------------------------------------------------------------------------------------------
class DropPathScheduleHook(HookBase):
    """DARTS: the network's drop-path probability is ``retrain.drop_path * epoch / epochs``."""

    def before_epoch(self, state):
        t = self.trainer
        t.network.drop_path_prob = t.cfg.retrain.drop_path * state.epoch / t.cfg.optim.epochs


class WeightEMA:
    """An exponential moving average of a network's weights (buffers copied): after each step
    ``ema = decay * ema + (1 - decay) * weights``."""

    def __init__(self, network: nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(network).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self._pairs = None

    @torch.no_grad()
    def update(self, network: nn.Module) -> None:
        if self._pairs is None:
            self._pairs = ([p for p in self.model.parameters()], [p.detach() for p in network.parameters()],
                           [b for b in self.model.buffers()], [b for b in network.buffers()])
        ema, live, ema_buffers, live_buffers = self._pairs
        torch._foreach_lerp_(ema, live, 1.0 - self.decay)
        if ema_buffers:
            torch._foreach_copy_(ema_buffers, live_buffers)

    def state_dict(self) -> dict:
        return self.model.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state)


class EMAHook(HookBase):
    def after_step(self, state):
        t = self.trainer
        t.ema.update(t.network)


@torch.no_grad()
def heldout_accuracy(network: nn.Module, test_set, batch_size: int, device, num_workers: int = 0,
                  memory_format=torch.contiguous_format, autocast=None) -> tuple[float, float]:
    """(top-1 accuracy in percent, mean cross-entropy) of ``network`` in eval mode on ``test_set``."""
    was_training = network.training
    network.eval()
    correct = torch.zeros((), dtype=torch.long, device=device)
    loss = torch.zeros((), dtype=torch.float64, device=device)
    loader = build_loader(test_set, torch.arange(len(test_set)), batch_size, num_workers=num_workers,
                          pin_memory=torch.device(device).type == "cuda")
    for x, y, _ in loader:
        x = x.to(device, non_blocking=True, memory_format=memory_format)
        y = y.to(device, non_blocking=True)
        with autocast() if autocast is not None else torch.autocast(torch.device(device).type, enabled=False):
            logits = network(x)
        logits = logits.float()
        correct += (logits.argmax(1) == y).sum()
        loss += nn.functional.cross_entropy(logits, y, reduction="sum").double()
    network.train(was_training)
    n = max(len(test_set), 1)
    return 100.0 * correct.item() / n, loss.item() / n


class HeldOutAccuracyHook(HookBase):
    """The test split's accuracy (and the EMA weights') every ``retrain.eval_every`` epochs and
    after the last, into the epoch's row; rank 0 evaluates, the others wait at the epoch's barrier."""

    def end_of_epoch(self, epoch, row):
        t = self.trainer
        epochs = t.cfg.optim.epochs
        if not t.dist.is_main or ((epoch + 1) % t.cfg.retrain.eval_every and epoch + 1 != epochs):
            return
        d = t.cfg.data
        kwargs = dict(batch_size=d.eval_batch_size, device=t.device, num_workers=d.num_workers,
                      memory_format=t.memory_format, autocast=t.autocast)
        row["test_acc"], row["test_loss"] = heldout_accuracy(t.network, t.test_set, **kwargs)
        if t.ema is not None:
            row["ema_test_acc"], row["ema_test_loss"] = heldout_accuracy(t.ema.model, t.test_set, **kwargs)


# -- the trainer ------------------------------------------------------------------------------------------
class RetrainTrainer(TrainingRun):
    """Trains ``cfg.retrain.arch``'s stand-alone network (see the module's docstring): the one
    path is drawn by a uniform path sampler and the data is a plain shuffled epoch, whatever the
    ``method`` section says (it does not apply to retraining)."""

    checked_sections = TrainingRun.checked_sections + ("retrain",)

    def __init__(self, cfg: Config, resume: bool = False, overwrite: bool = False):
        self.spec = None
        self.ema = None
        self._saved_ema = None       # a resumed checkpoint's EMA weights, until the EMA exists
        super().__init__(cfg, resume=resume, overwrite=overwrite)

    # -- what is trained ---------------------------------------------------------------------------
    def build_model(self, num_classes: int, in_channels: int) -> nn.Module:
        cfg = self.cfg
        self.spec = retrain_spec(cfg, num_classes, in_channels)
        self.spec["input_shape"] = [int(v) for v in self.train_set[0][0].shape]
        cfg.space.name = self.spec["space"]
        resolve_bn_mode(cfg, standalone=True)
        resolve_granularity(cfg)
        resolve_reproduction(cfg)
        try:
            network = build_network(self.spec["space"], **self.spec["network"]["kwargs"])
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"retrain.arch {cfg.retrain.arch}: cannot build its network: {exc}") from None
        self.aux_weight = cfg.retrain.auxiliary_weight
        return network

    @property
    def network(self) -> nn.Module:
        return self.model

    def build_samplers(self):
        """Nothing to sample but the data: plain shuffled epochs."""
        return None, UniformDataSampler(len(self.train_set))

    def setup_method(self) -> None:
        super().setup_method()
        self.step = PlainStep(self)

    def end_epoch(self, epoch: int) -> dict:
        return {}

    @property
    def method_label(self) -> str:
        return "retrain"

    def describe_model(self) -> str:
        millions = sum(p.numel() for p in self.network.parameters()) / 1e6
        return f"the stand-alone {self.spec['space']} network {self.spec['arch']} ({millions:.2f}M parameters)"

    def epoch_summary(self, row: dict) -> str:
        parts = [f"lr {row['lr']:.5f}"]
        if "test_acc" in row:
            parts.append(f"{self.cfg.data.eval_split} acc {row['test_acc']:.2f}% ({len(self.test_set)} images)")
        if "ema_test_acc" in row:
            parts.append(f"EMA {row['ema_test_acc']:.2f}%")
        return " ".join(parts)

    def forward(self, images, arch):
        if self.aux_weight and hasattr(self.network, "forward_with_aux"):
            return self.network.forward_with_aux(images)
        return self.network(images), None

    # -- set-up, checkpoints ------------------------------------------------------------------------
    def _setup(self, resume: bool) -> None:
        super()._setup(resume)   # builds the model (build_model) and, on resume, loads it
        d = self.cfg.data
        self.test_set = build_split(d, d.eval_split, subset=d.eval_subset)
        if self.cfg.retrain.drop_path:
            self.register_hook(DropPathScheduleHook())
        if self.cfg.retrain.ema_decay is not None:
            self.ema = WeightEMA(self.network, self.cfg.retrain.ema_decay)
            if self._saved_ema is not None:
                self.ema.load_state_dict(self._saved_ema)
            # first: a mid-epoch checkpoint after this step holds the step's average
            hook = EMAHook()
            hook.trainer = self
            self.hooks.insert(0, hook)
        self._saved_ema = None
        self.register_hook(HeldOutAccuracyHook())

    def load_checkpoint(self):
        path, state = super().load_checkpoint()
        self._saved_ema = (state.get("retrain") or {}).get("ema")
        return path, state

    def state_dict(self, *args, **kwargs) -> dict:
        state = super().state_dict(*args, **kwargs)
        state["retrain"] = {"spec": self.spec, "ema": None if self.ema is None else self.ema.state_dict()}
        return state

    def fit(self) -> dict:
        result = super().fit()
        if self.dist.is_main and not result.get("exit_code"):
            self._write_result(result)
        return result

    def _write_result(self, result: dict) -> None:
        """``retrained.json``: the architecture file of the trained network, its last test
        accuracy and where its weights are."""
        last = result.get("last") or {}
        spec = {k: v for k, v in self.spec.items() if k not in ("source",)}
        spec["format"] = ARCH_FORMAT
        spec["network_macs"], spec["network_params"] = network_cost(self.network, self.spec["input_shape"])
        spec["retrained"] = {"checkpoint": str(self.ckpt_path), "epochs": self.cfg.optim.epochs,
                             "test_acc": last.get("test_acc"), "ema_test_acc": last.get("ema_test_acc"),
                             "dataset": self.cfg.data.dataset, "eval_split": self.cfg.data.eval_split,
                             "source": self.spec.get("source")}
        write_json_atomic(self.out_dir / "retrained.json", spec, indent=2)
        result["retrained"] = str(self.out_dir / "retrained.json")


__all__ = ["DropPathScheduleHook", "EMAHook", "HeldOutAccuracyHook", "RetrainTrainer",
           "WeightEMA", "heldout_accuracy", "parse_arch_source", "retrain_spec"]
