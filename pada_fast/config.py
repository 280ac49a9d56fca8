"""Experiment configuration: typed dataclasses, overridden by a YAML file, overridden by
``--set section.key=value``. Unknown keys, wrong types and values outside the allowed set are
errors that name the key, before any work starts. Every run saves its resolved config.
"""
from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pada_fast.errors import ConfigError
from pada_fast.files import write_text_atomic
from pada_fast.log import get_logger
from pada_fast.registry import registered

_log = get_logger(__name__)


class _Loader(yaml.SafeLoader):
    """YAML 1.2 booleans: only true/false. YAML 1.1 would read schedule names such as ``off``
    (and yes/no/on) as booleans."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool",
                              __import__("re").compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))


def _unique_keys_mapping(loader, node, deep=False):
    """A mapping whose keys are all different: YAML would silently keep the last of two."""
    seen = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} appears twice (lines {seen[key] + 1} and {key_node.start_mark.line + 1}); "
                "keep one", key_node.start_mark)
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_keys_mapping)


def _yaml_load(text: str):
    return yaml.load(text, Loader=_Loader)


def choice(default, *allowed, help: str = "", registry: str | None = None):
    """A value out of ``allowed``, or out of the names in a registry (:mod:`pada_fast.registry`:
    ``spaces``, ``methods``), read when a value is checked so that registered components count."""
    return field(default=default, metadata={"choices": allowed, "registry": registry, "help": help})


def allowed_choices(f: dataclasses.Field) -> tuple:
    """The values config field ``f`` accepts (empty: any value of its type)."""
    if f.metadata.get("registry"):
        return registered(f.metadata["registry"])
    return tuple(f.metadata.get("choices") or ())


def bounded(default, low=None, high=None, help: str = ""):
    return field(default=default, metadata={"low": low, "high": high, "help": help})


@dataclass
class DataConfig:
    dataset: str = choice("digits", registry="datasets")
    root: str | None = None                 # dataset root (image-folder tree holds train/ and test/)
    download: bool = False                  # torchvision datasets: fetch when missing
    train_subset: int | None = bounded(None, 1)  # class-stratified subset of the training split
    eval_split: str = choice("test", "test", "train")
    eval_subset: int | None = bounded(None, 1)   # held-out images used for ranking
    # Seed of every split and subset of the data (the digits train/test split, train_subset,
    # eval_subset, the held-out evaluation order): fixed per dataset, never a training seed, so
    # no supernet is ever ranked on images it trained on.
    split_seed: int = 0
    # training recipe: default (CIFAR: crop:4+flip; grey images: crop:size//8), none, flip, crop,
    # crop_flip, or a list of steps ("crop:3,flip" or a YAML list); true/false mean default/none
    augment: bool | str | list = "default"
    # how train_subset / eval_subset are drawn: class-stratified, or uniformly at random
    subset_mode: str = choice("stratified", "stratified", "random")
    # in-memory datasets (Fashion-MNIST, CIFAR in torchvision's layout, digits): every image resized
    # once at load to image_size x image_size by area averaging (part of the dataset, like the subset:
    # training, held-out and benchmark images alike); null keeps the stored size
    image_size: int | None = bounded(None, 4)
    batch_size: int = bounded(64, 1)
    eval_batch_size: int = bounded(256, 1)
    num_workers: int = bounded(0, 0)
    # torch: a DataLoader (host decode and augmentation); dali: NVIDIA DALI; device: the training set
    # decoded once and kept on the training device, augmented there per batch (data/device_data.py)
    backend: str = choice("torch", registry="data_backends")
    # image folders: a non-image or unreadable file is an error ("error"), or is left out and
    # reported ("skip": every selected image is decoded once when the dataset is built)
    bad_files: str = choice("error", "error", "skip")


@dataclass
class SpaceConfig:
    name: str = choice("nb201", registry="spaces")       # nb201, proxyless, darts, or a registered space
    C: int = bounded(16, 1)                 # nb201 and darts: initial channels
    N: int = bounded(5, 1)                  # nb201: cells per stage
    # auto: batch statistics for nb201/darts (the authors' supernets), running for proxyless
    bn_mode: str = choice("auto", "auto", "batch", "running")
    num_cells: int = bounded(8, 1)          # darts: cells (reductions at 1/3 and 2/3)
    width_mult: float = bounded(1.0, 0.0)   # proxyless: channel multiplier
    stem_stride: int = bounded(2, 1)        # proxyless: 1 keeps resolution for 32x32 inputs
    last_channels: int = bounded(1280, 1)   # proxyless: width of the final 1x1 conv
    candidates: str | None = None           # proxyless: "k3e3,k3e6,...,skip" or 21 ';'-separated sets
    resolution: int | None = None           # MACs-table input size; None: 224 proxyless, 32 otherwise
    # nb201 reduction blocks' BN: affine-free batch statistics (the authors' supernet), or with
    # learnable affine parameters (NAS-Bench-201's stand-alone networks)
    reduction_bn: str = choice("batch", "batch", "affine")
    # multi-process runs: batch-statistics BN over the global batch instead of each rank's shard
    sync_bn: bool = False


@dataclass
class MethodConfig:
    name: str = choice("pada", registry="methods")       # spos, pa, da, pada, fairnas, or a registered method
    # auto: shared for nb201 (the authors' code), per_edge (per layer) for proxyless and darts
    pa_granularity: str = choice("auto", "auto", "shared", "per_edge")
    pa_schedule: str = choice("linear_increase", "linear_increase", "linear_decrease", "constant", "off")
    da_schedule: str = choice("linear_increase", "linear_increase", "linear_decrease", "constant", "off")
    unbiased: bool = False                  # weight the loss by 1/(N q_i) and 1/(K p)
    # design: the method as docs/method.md states it; official: every point of the authors' released
    # NAS-Bench-201 code (pada_fast/reproduce.py lists them). The four keys below default to
    # "auto" (follow reproduce) and can each be set on their own.
    reproduce: str = choice("design", "design", "official")
    pa_aggregation: str = choice("auto", "auto", "mean", "official")
    da_aggregation: str = choice("auto", "auto", "mean", "official")
    schedule_offset: str = choice("auto", "auto", "current", "lagged")


@dataclass
class OptimConfig:
    # sgd (momentum, optionally nesterov; fused) or rmsprop (momentum, rmsprop_alpha, rmsprop_eps)
    name: str = choice("sgd", registry="optimizers")
    epochs: int = bounded(250, 1)
    lr: float = bounded(0.05, 0.0)
    lr_min: float = bounded(0.0, 0.0)
    momentum: float = bounded(0.9, 0.0, 1.0)
    nesterov: bool = False
    weight_decay: float = bounded(2.5e-4, 0.0)
    grad_clip: float | None = bounded(5.0, 0.0)  # max gradient norm; null or 0 turns clipping off
    label_smoothing: float = bounded(0.0, 0.0, 1.0)
    rmsprop_alpha: float = bounded(0.9, 0.0, 1.0)   # rmsprop: smoothing of the squared gradients
    rmsprop_eps: float = bounded(1e-3, 0.0)          # rmsprop: added to the root (TensorFlow's 1e-3)
    # cosine learning rate updated every step, or once per epoch (the authors' CosineAnnealingLR)
    lr_schedule: str = choice("auto", "auto", "per_step", "per_epoch")
    # on: candidates trained before keep zero gradients, so weight decay and momentum move them
    # every step (PyTorch < 1.7's zero_grad, which the authors' code ran on); off: only the path
    update_unsampled: str = choice("auto", "auto", "off", "on")


@dataclass
class RunConfig:
    out_dir: str = "runs/default"
    seed: int = 0
    device: str = field(default="auto", metadata={"pattern": r"auto|cpu|cuda(:\d+)?",
                                                  "help": "auto, cpu, cuda or cuda:N"})
    threads: int | None = bounded(None, 1)  # torch CPU threads (None: torch's default)
    log_interval: int = bounded(50, 1)
    tensorboard: bool = False
    progress: str = choice("auto", "auto", "bar", "lines")
    # Checkpoints: every N optimiser steps inside an epoch as well (0: at epoch ends only), so a
    # crash loses at most N steps; the newest keep_checkpoints numbered files are kept.
    checkpoint_every_steps: int = bounded(0, 0)
    keep_checkpoints: int = bounded(2, 1)
    # Steps whose loss or gradients are not finite are skipped (no weight, momentum, p or q
    # update): at most this many in a row, and this many in total (None: no limit); the next one
    # stops training with a message (0: stop at the first).
    nonfinite_max_consecutive: int = bounded(10, 0)
    nonfinite_max_total: int | None = bounded(None, 0)
    gv_draws: int = bounded(0, 0)           # >0: gradient variance after every epoch, K draws (gv.jsonl)
    dist_timeout_s: float = bounded(1800.0, 1.0)   # torchrun runs: collective timeout (hung rank)
    # weights and activations; float64 for numerical checks (e.g. the distributed equivalence tests)
    dtype: str = choice("float32", "float32", "float64")
    # the forward pass's precision: fp32, or autocast to bf16, or to fp16 with a gradient scaler
    # (its overflow steps are skipped by the non-finite guard); weights, gradients, PA's gradient
    # norms and DA's scores stay float32
    precision: str = choice("fp32", "fp32", "bf16", "fp16")
    # train in channels-last memory format (NHWC): faster convolutions on CPUs (oneDNN) and on
    # tensor-core GPUs; the trajectory differs from NCHW's in float rounding only. null: on for
    # CUDA runs, off on the CPU (the saved config records the value used)
    channels_last: bool | None = None
    # torch.backends.cudnn.benchmark (CUDA runs only; null: on)
    cudnn_benchmark: bool | None = None
    # the optimiser step: fused (one kernel, honours the non-finite guard's device flag, so the
    # step never waits for the host) or foreach (the guard then reads its flag every step)
    optimizer_impl: str = choice("fused", "fused", "foreach")


@dataclass
class RankConfig:
    ground_truth: str | None = None         # NATS CSV, JSON/CSV table, or NAS-Bench-201 .pth
    gt_dataset: str = choice("cifar10", "cifar10", "cifar100", "imagenet16-120")
    # which architectures: all | unique | stratified:N | a file listing them; checked, with the
    # file, when a ranking starts (evaluate/protocols.py)
    archs: str = "stratified:1000"
    seed: int = 0
    recalibrate_batches: int = bounded(0, 0)  # running-stats BN only


@dataclass
class ProbeConfig:
    """The ranking probe (evaluate/probe.py): a fixed set of architectures ranked by the engine
    during training, every ``every`` epochs and after the last."""
    every: int = bounded(0, 0)              # epochs between probes; 0: no probe
    # how many architectures: stratified by true accuracy when rank.ground_truth names a table,
    # else that many distinct architectures drawn at random (seed rank.seed); the list is written
    # to probe_archs.txt in the run folder
    archs: int = bounded(100, 2)
    eval_images: int | None = bounded(500, 1)   # held-out images (class-stratified; null: the whole split)
    precision: str = choice("fp32", "fp32", "bf16")
    # opt-in stop on ranking stability: training ends once the Kendall tau between successive
    # probes' predictions has been at least stop_tau for stop_probes probes in a row
    stop_tau: float | None = bounded(None, -1.0, 1.0)
    stop_probes: int = bounded(3, 1)


@dataclass
class RetrainConfig:
    """``pada-fast retrain``: one architecture trained stand-alone (the other sections give its
    data, optimiser and run settings)."""
    # the architecture: a search's architecture file (best.json), a NAS-Bench-201 string
    # ("|nor_conv_3x3~0|+|...|"), a DARTS genotype ("Genotype(normal=[...], ...)") or a
    # ProxylessNAS ops string ("k3e6|skip|...")
    arch: str | None = None
    # network size; null: the architecture file's (a string: the space section's)
    C: int | None = bounded(None, 1)          # nb201, darts: initial channels
    N: int | None = bounded(None, 1)          # nb201: cells per stage
    num_cells: int | None = bounded(None, 1)  # darts: cells
    auxiliary_weight: float = bounded(0.0, 0.0)  # darts: loss weight of the auxiliary head (0: none)
    drop_path: float = bounded(0.0, 0.0, 0.99)   # darts: drop-path probability, raised linearly over the epochs
    dropout: float = bounded(0.0, 0.0, 0.99)     # proxyless: dropout before the classifier
    # exponential moving average of the weights (e.g. 0.9999), evaluated beside the weights; null: off
    ema_decay: float | None = bounded(None, 0.0, 1.0)
    eval_every: int = bounded(1, 1)              # test accuracy every N epochs and after the last


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    space: SpaceConfig = field(default_factory=SpaceConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    rank: RankConfig = field(default_factory=RankConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    retrain: RetrainConfig = field(default_factory=RetrainConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        write_text_atomic(path, yaml.safe_dump(self.to_dict(), sort_keys=False))


def _type_ok(value: Any, annotation) -> tuple[bool, Any]:
    """Whether value fits the annotation; ints are accepted (and converted) for floats."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            ok, converted = _type_ok(value, arg)
            if ok:
                return True, converted
        return False, value
    if annotation is type(None):
        return value is None, value
    if annotation is bool:
        return isinstance(value, bool), value
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if annotation is float:
        if isinstance(value, str):      # YAML 1.1 reads 1e-3 (no dot) as a string: any float literal counts
            try:
                return True, float(value.strip())
            except ValueError:
                return False, value
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if annotation is str:
        return isinstance(value, str), value
    if annotation is list:
        ok = isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
        return ok, list(value) if ok else value
    return True, value


def _type_name(annotation) -> str:
    return str(annotation).replace("typing.", "").replace("<class '", "").replace("'>", "")


def _set_field(section_obj, section: str, key: str, value: Any) -> None:
    fields = {f.name: f for f in dataclasses.fields(section_obj)}
    if key not in fields:
        raise ConfigError(f"unknown config key '{section}.{key}'; {section} has: {', '.join(fields)}")
    f = fields[key]
    hints = typing.get_type_hints(type(section_obj))
    ok, converted = _type_ok(value, hints[key])
    if not ok:
        raise ConfigError(f"config key '{section}.{key}' must be {_type_name(hints[key])}, got {value!r} "
                          f"({type(value).__name__})")
    allowed = allowed_choices(f)
    if allowed and converted not in allowed:
        raise ConfigError(f"config key '{section}.{key}' must be one of {', '.join(allowed)}; got {converted!r}")
    if isinstance(converted, float) and not math.isfinite(converted):
        raise ConfigError(f"config key '{section}.{key}' must be a finite number, got {value!r}")
    pattern = f.metadata.get("pattern")
    if pattern and converted is not None and not re.fullmatch(pattern, converted):
        raise ConfigError(f"config key '{section}.{key}' must look like {f.metadata['help']}, got {converted!r}")
    low, high = f.metadata.get("low"), f.metadata.get("high")
    if converted is not None and ((low is not None and converted < low) or (high is not None and converted > high)):
        rng = f"[{low if low is not None else '-inf'}, {high if high is not None else 'inf'}]"
        raise ConfigError(f"config key '{section}.{key}' must lie in {rng}, got {converted!r}")
    setattr(section_obj, key, converted)


def apply_dict(cfg: Config, values: dict, source: str = "config") -> Config:
    if not isinstance(values, dict):
        raise ConfigError(f"{source} must be a mapping of sections ({', '.join(_sections(cfg))}), "
                          f"got {type(values).__name__}")
    sections = _sections(cfg)
    for section, entries in values.items():
        if section not in sections:
            raise ConfigError(f"unknown config section '{section}' in {source}; sections: {', '.join(sections)}")
        if entries is None:
            continue
        if not isinstance(entries, dict):
            raise ConfigError(f"config section '{section}' in {source} must be a mapping of keys")
        for key, value in entries.items():
            _set_field(getattr(cfg, section), section, key, value)
    return cfg


def _sections(cfg: Config) -> list[str]:
    return [f.name for f in dataclasses.fields(cfg)]


def parse_override(text: str) -> tuple[str, str, Any]:
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise ConfigError(f"--set expects section.key=value (e.g. optim.lr=0.1), got {text!r}")
    dotted, raw = text.split("=", 1)
    section, key = dotted.strip().split(".", 1)
    try:
        value = _yaml_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {dotted}: cannot parse value {raw!r}: {exc}") from None
    return section, key, value


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Defaults, then the YAML file, then each ``section.key=value`` override, in that order."""
    cfg = Config()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            values = _yaml_load(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as exc:
            raise ConfigError(f"config file {path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
        if values is None:
            _log.warning(f"note: config file {path} is empty: every setting is its default")
            values = {}
        apply_dict(cfg, values, source=str(path))
    for text in overrides:
        section, key, value = parse_override(text)
        apply_dict(cfg, {section: {key: value}}, source=f"--set {text}")
    return cfg


def config_from_dict(values: dict) -> Config:
    """A saved config (a checkpoint's or a run's config.yaml), including those that name their
    ranking subset the older way (``rank.num_archs: N`` or null for every architecture)."""
    rank = values.get("rank")
    if isinstance(rank, dict) and "num_archs" in rank:
        rank = dict(rank)
        n = rank.pop("num_archs")
        rank.setdefault("archs", "all" if not n else f"stratified:{n}")
        values = {**values, "rank": rank}
    return apply_dict(Config(), values, source="saved config")


def check_paths(cfg: Config) -> None:
    """Missing data paths are configuration errors too: report them before any work starts."""
    needs_root = cfg.data.dataset in ("cifar10_folder", "imagenet_folder", "fashion_mnist") or (
        cfg.data.dataset in ("cifar10", "cifar100") and not cfg.data.download)
    if needs_root and cfg.data.dataset != "fashion_mnist" and not cfg.data.root:
        raise ConfigError(f"data.root is required for data.dataset={cfg.data.dataset}")
    if cfg.data.root and needs_root and not Path(cfg.data.root).exists():
        raise ConfigError(f"data.root {cfg.data.root} does not exist (data.dataset={cfg.data.dataset})")
    if cfg.rank.ground_truth and not Path(cfg.rank.ground_truth).exists():
        raise ConfigError(f"rank.ground_truth {cfg.rank.ground_truth} does not exist")
