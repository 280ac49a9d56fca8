"""Checkpoint files: atomic, checksummed, rotated, and checked for compatibility on resume.

Writing (:func:`save_atomic`): the state goes to a temporary file in the target's folder, is
flushed and fsynced, renamed over the target (``os.replace``, atomic on POSIX), and the folder is
fsynced so the rename itself survives a power cut. A crash at any point leaves either the old
file or the new one, never half of one; a process killed mid-write leaves only a ``*.tmp`` file,
which :class:`CheckpointManager` removes on start.

Checksum: the file holds, under the key ``checksum``, the SHA-256 of its payload (every other
entry, in a canonical byte encoding: tensor dtype, shape and raw bytes; plain values by type and
exact value; see :func:`payload_digest`). It lives inside the file rather than in a sidecar so
that one rename publishes file and checksum together (no window in which they disagree) and
``torch.load`` alone still reads a checkpoint. :func:`load` recomputes it: a truncated file fails
to unpickle, a flipped bit in a tensor or a value changes the digest; both raise
:class:`CorruptCheckpoint`.

Rotation (:class:`CheckpointManager`): ``checkpoint-e{epochs_done:04d}-s{step:06d}.pt`` for every
save (``step``: steps done inside the epoch in progress, 0 at an epoch boundary), the last
``keep_last`` kept, and ``checkpoint.pt`` always the newest (a hard link to it, or a copy where
the file system has no links), so ``pada-fast rank run/checkpoint.pt`` keeps working.
:meth:`CheckpointManager.latest_valid` walks back from the newest file past unreadable or corrupt
ones, saying which it skipped and why.

Compatibility (:func:`check_compatible`): a checkpoint of another format version, search space,
or method/space/data/optimiser config (or seed) is refused with a message naming every
differing key.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import pickle
import re
import shutil
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch

from pada_fast.config import Config
from pada_fast.errors import (
    CheckpointError,  # noqa: F401 - re-exported: callers catch checkpoint.CheckpointError
    CorruptCheckpoint,
    DiskFullError,
    IncompatibleCheckpoint,
    is_disk_full,
)
from pada_fast.files import _fsync_dir, write_atomic
from pada_fast.log import get_logger

_log = get_logger(__name__)

# 2: adds the payload checksum and the in-epoch ``step``. Version 1 files (epoch-boundary
# checkpoints without a checksum) are still read.
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
CHECKSUM_KEY = "checksum"
LATEST_NAME = "checkpoint.pt"
_NUMBERED = re.compile(r"^checkpoint-e(\d+)-s(\d+)\.pt$")


# -- checksum -------------------------------------------------------------------------------------
def _feed(h, obj: Any) -> None:
    """Add ``obj`` to the hash in a canonical, type-tagged encoding (so ``1``, ``1.0``, ``True``
    and ``"1"`` differ, and containers cannot be confused with their flattened items)."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach()
        if t.layout != torch.strided:
            raise TypeError(f"cannot checksum a {t.layout} tensor; store it dense")
        if t.device.type != "cpu":
            t = t.cpu()
        t = t.resolve_conj().resolve_neg().contiguous().reshape(-1)
        h.update(f"T{t.dtype}{tuple(obj.shape)}:".encode())
        if t.numel():
            h.update(memoryview(t.view(torch.uint8).numpy()))
    elif isinstance(obj, np.ndarray):
        a = np.ascontiguousarray(obj)
        h.update(f"A{a.dtype.str}{a.shape}:".encode())
        if a.dtype.hasobject:
            for item in a.reshape(-1):
                _feed(h, item)
        else:
            h.update(memoryview(a.reshape(-1)).cast("B"))
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}:".encode())
        for key, value in obj.items():
            _feed(h, key)
            _feed(h, value)
        if getattr(obj, "_metadata", None) is not None:
            _feed(h, obj._metadata)
    elif isinstance(obj, (list, tuple)):
        h.update(f"{'L' if isinstance(obj, list) else 'U'}{len(obj)}:".encode())
        for item in obj:
            _feed(h, item)
    elif obj is None or isinstance(obj, (bool, np.bool_)):
        h.update(f"b{obj!r};".encode())
    elif isinstance(obj, (int, np.integer)):
        h.update(f"i{int(obj)};".encode())
    elif isinstance(obj, (float, np.floating)):
        h.update(f"f{float(obj).hex()};".encode())
    elif isinstance(obj, str):
        data = obj.encode("utf-8", "surrogatepass")
        h.update(f"s{len(data)}:".encode() + data)
    elif isinstance(obj, bytes):
        h.update(f"y{len(obj)}:".encode() + obj)
    elif isinstance(obj, (torch.dtype, torch.device, torch.Size)):
        h.update(f"r{obj!r};".encode())
    else:
        data = pickle.dumps(obj, protocol=4)
        h.update(f"p{len(data)}:".encode() + data)


def payload_digest(state: dict) -> str:
    """SHA-256 (hex) of every entry of ``state`` except ``checksum``."""
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in state.items() if k != CHECKSUM_KEY})
    return h.hexdigest()


# -- single files ---------------------------------------------------------------------------------
def _to_cpu(obj: Any) -> Any:
    """Device tensors copied to the host once (both the checksum and torch.save read them), so
    a checkpoint also loads on a machine without the GPU it was written on."""
    if isinstance(obj, torch.Tensor):
        return obj if obj.device.type == "cpu" else obj.detach().cpu()
    if isinstance(obj, dict):
        out = {k: _to_cpu(v) for k, v in obj.items()}
        if type(obj) is dict:
            return out
        copy = type(obj)()              # e.g. a module state_dict's OrderedDict ...
        copy.update(out)
        if hasattr(obj, "_metadata"):   # ... whose _metadata load_state_dict reads
            copy._metadata = obj._metadata
        return copy
    if isinstance(obj, list):
        return [_to_cpu(v) for v in obj]
    if type(obj) is tuple:
        return tuple(_to_cpu(v) for v in obj)
    return obj


def save_atomic(state: dict, path: str | Path) -> None:
    """Write ``state`` (plus ``format_version`` and its checksum) to ``path`` atomically.
    Tensors are stored on the CPU."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format_version": FORMAT_VERSION,
               **{k: _to_cpu(v) for k, v in state.items() if k not in ("format_version", CHECKSUM_KEY)}}
    payload[CHECKSUM_KEY] = {"sha256": payload_digest(payload)}
    try:
        write_atomic(path, lambda handle: torch.save(payload, handle), binary=True, durable=True)
    except (OSError, RuntimeError) as exc:
        if not is_disk_full(exc):
            raise
        raise DiskFullError(f"no space left on {path.parent} (or a file-size limit) while "
                            f"writing {path.name}; {path.name} was not written") from None


def load(path: str | Path, map_location="cpu", verify: bool = True) -> dict:
    """Read a checkpoint; check its format version and (``verify``) its checksum.

    Raises FileNotFoundError when there is no file, :class:`CorruptCheckpoint` when it is
    truncated, unreadable or fails its checksum, :class:`IncompatibleCheckpoint` for a format
    version this pada_fast does not read."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:
        size = path.stat().st_size
        raise CorruptCheckpoint(f"checkpoint {path} ({size} bytes) cannot be read ({type(exc).__name__}: "
                                f"{exc}); it is truncated, corrupt or not a pada_fast checkpoint") from None
    if not isinstance(state, dict):
        raise CorruptCheckpoint(f"checkpoint {path} holds a {type(state).__name__}, not a pada_fast "
                                "checkpoint dictionary")
    # The checksum first: a flipped bit can also hit the version entry, and a damaged file must
    # be reported (and walked past) as damaged, not refused as foreign.
    version = state.get("format_version")
    stored = state.get(CHECKSUM_KEY)
    has_sum = isinstance(stored, dict) and isinstance(stored.get("sha256"), str)
    if verify and has_sum:
        actual = payload_digest(state)
        if actual != stored["sha256"]:
            raise CorruptCheckpoint(f"checkpoint {path} fails its checksum (stored sha256 "
                                    f"{stored['sha256'][:12]}..., payload {actual[:12]}...): its contents "
                                    "changed after it was written")
    if version not in READABLE_VERSIONS:
        if not has_sum and (not isinstance(version, int) or isinstance(version, bool)):
            raise CorruptCheckpoint(f"checkpoint {path} has neither a format version nor a checksum: "
                                    "it is damaged or not a pada_fast checkpoint")
        raise IncompatibleCheckpoint(
            f"checkpoint {path} has format version {version!r}; this pada_fast reads version(s) "
            f"{', '.join(map(str, READABLE_VERSIONS))} (it was written by a different pada_fast "
            "release: resume it with that release, or start a new run)")
    if verify and version >= 2 and not has_sum:
        raise CorruptCheckpoint(f"checkpoint {path} (format version {version}) has no checksum "
                                "entry; the file is damaged")
    return state


# -- compatibility --------------------------------------------------------------------------------
# Keys that may differ between the checkpointed run and the resumed one: where the data lives,
# how fast it is read, evaluation-only settings. Everything else in these sections decides what
# is trained, so a difference would break an exact resume.
CHECKED_SECTIONS = ("space", "method", "data", "optim")
IGNORED_KEYS = frozenset({"data.root", "data.num_workers", "data.download", "data.eval_batch_size",
                          "data.eval_subset", "data.eval_split"})
CHECKED_RUN_KEYS = ("seed",)


def _config_values(config) -> dict:
    if dataclasses.is_dataclass(config):
        return dataclasses.asdict(config)
    if isinstance(config, dict):
        return config
    raise TypeError(f"expected a Config or its dict, got {type(config).__name__}")


def config_differences(saved: dict, current, sections: Iterable[str] = CHECKED_SECTIONS,
                       run_keys: Iterable[str] = CHECKED_RUN_KEYS,
                       ignore: Iterable[str] = IGNORED_KEYS) -> list[str]:
    """``section.key=saved (now current)`` for every checked key that differs. ``saved`` is a
    checkpoint's config dict; keys it lacks (written before the key existed) take the current
    release's default."""
    defaults = dataclasses.asdict(Config())
    now = _config_values(current)
    ignore = set(ignore)
    checked = [(s, k) for s in sections for k in defaults.get(s, {})]
    checked += [("run", k) for k in run_keys]
    saved = {s: (v if isinstance(v, dict) else {}) for s, v in saved.items()}
    unknown = [f"{s}.{k}" for s in sections for k in saved.get(s, {}) if k not in defaults.get(s, {})]
    diffs = [f"{name} (in the checkpoint, unknown to this pada_fast)" for name in unknown]
    for section, key in checked:
        name = f"{section}.{key}"
        if name in ignore:
            continue
        old = saved.get(section, {}).get(key, defaults[section][key])
        new = now.get(section, {}).get(key, defaults[section][key])
        if old != new:
            diffs.append(f"{name}={old!r} (now {new!r})")
    return diffs


def check_compatible(state: dict, cfg, space_name: str | None = None, *, path: str | Path | None = None,
                     sections: Iterable[str] = CHECKED_SECTIONS, run_keys: Iterable[str] = CHECKED_RUN_KEYS,
                     ignore: Iterable[str] = IGNORED_KEYS) -> None:
    """Refuse to resume ``cfg`` from ``state`` unless they describe the same training.

    Checks the format version, the search space (``space_name``, default ``cfg.space.name``) and
    every key of ``sections`` plus ``run.<run_keys>`` except ``ignore``; ``cfg`` must have its
    ``auto`` values resolved as the checkpointed run had (the trainer resolves them when it builds
    the model). Raises :class:`IncompatibleCheckpoint` naming each mismatch."""
    where = f"checkpoint {path}" if path is not None else "the checkpoint"
    version = state.get("format_version")
    if version not in READABLE_VERSIONS:
        raise IncompatibleCheckpoint(f"{where} has format version {version!r}; this pada_fast reads "
                                     f"version(s) {', '.join(map(str, READABLE_VERSIONS))}")
    values = _config_values(cfg)
    space_name = space_name if space_name is not None else values["space"]["name"]
    saved_space = state.get("space")
    if saved_space != space_name:
        raise IncompatibleCheckpoint(f"{where} holds a supernet of search space {saved_space!r}, but "
                                     f"this run trains {space_name!r}; point run.out_dir at a new "
                                     "folder or set space.name to match")
    saved = state.get("config")
    if not isinstance(saved, dict):
        raise IncompatibleCheckpoint(f"{where} has no saved config to compare with")
    diffs = config_differences(saved, values, sections, run_keys, ignore)
    if diffs:
        raise IncompatibleCheckpoint(
            f"{where} was trained with different settings: {', '.join(diffs)}. Resume with the "
            "checkpoint's settings, or start a new run in another run.out_dir")


# -- rotation -------------------------------------------------------------------------------------
def _warn(message: str) -> None:
    _log.warning(f"warning: {message}")


def checkpoint_name(epoch: int, step: int = 0) -> str:
    """File name of the checkpoint taken after ``epoch`` finished epochs and ``step`` steps of
    the next one."""
    if epoch < 0 or step < 0:
        raise ValueError(f"epoch and step must be >= 0, got {epoch} and {step}")
    return f"checkpoint-e{epoch:04d}-s{step:06d}.pt"


class CheckpointManager:
    """Numbered checkpoints in ``out_dir``, the newest ``keep_last`` kept, ``checkpoint.pt`` the
    latest. Only one process (rank 0) should own a manager for a folder.

    ``log`` receives the messages about skipped or removed files (default: stderr)."""

    def __init__(self, out_dir: str | Path, keep_last: int = 2, log: Callable[[str], None] = _warn):
        if int(keep_last) < 1:
            raise ValueError(f"keep_last must be >= 1, got {keep_last}")
        self.out_dir = Path(out_dir)
        self.keep_last = int(keep_last)
        self.log = log
        self.latest_path = self.out_dir / LATEST_NAME

    # -- listing ------------------------------------------------------------------------------
    def checkpoints(self) -> list[tuple[int, int, Path]]:
        """``(epochs_done, step, path)`` of every numbered checkpoint, newest first."""
        found = []
        if self.out_dir.is_dir():
            for entry in self.out_dir.iterdir():
                m = _NUMBERED.match(entry.name)
                if m and entry.is_file():
                    found.append((int(m.group(1)), int(m.group(2)), entry))
        return sorted(found, key=lambda item: (item[0], item[1]), reverse=True)

    def remove_stale_temporaries(self) -> list[Path]:
        """Delete ``*.tmp`` files left by a process killed while writing a checkpoint."""
        removed = []
        if self.out_dir.is_dir():
            for entry in self.out_dir.iterdir():
                if (entry.name.endswith(".tmp") and entry.name.startswith("checkpoint")
                        and entry.is_file()):
                    entry.unlink(missing_ok=True)
                    removed.append(entry)
        if removed:
            self.log(f"removed {len(removed)} partial checkpoint file(s) left by an interrupted write: "
                     + ", ".join(p.name for p in removed))
        return removed

    # -- writing ------------------------------------------------------------------------------
    def save(self, state: dict) -> Path:
        """Write ``state`` as the checkpoint of ``(state['epoch'], state.get('step', 0))``,
        make it ``checkpoint.pt``, and prune to the newest ``keep_last``. Returns its path."""
        epoch, step = int(state["epoch"]), int(state.get("step", 0))
        path = self.out_dir / checkpoint_name(epoch, step)
        try:
            save_atomic({**state, "step": step}, path)
        except DiskFullError:
            newest = self.checkpoints()
            intact = (f"the previous checkpoint {newest[0][2]} is intact" if newest
                      else "no earlier checkpoint of this run exists")
            raise DiskFullError(f"no space left on {self.out_dir} (or a file-size limit) while "
                                f"writing {path.name}; {intact}; free space and resume") from None
        self._publish_latest(path)
        self.prune()
        return path

    def _publish_latest(self, path: Path) -> None:
        tmp = self.out_dir / f"{LATEST_NAME}.{uuid.uuid4().hex}.tmp"
        try:
            try:
                os.link(path, tmp)          # no copy: the same immutable file under a second name
            except OSError:
                with open(path, "rb") as src, open(tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                    dst.flush()
                    os.fsync(dst.fileno())
            os.replace(tmp, self.latest_path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(self.out_dir)

    def prune(self) -> list[Path]:
        """Delete numbered checkpoints beyond the newest ``keep_last``; returns what it removed."""
        removed = []
        for _, _, path in self.checkpoints()[self.keep_last:]:
            path.unlink(missing_ok=True)
            removed.append(path)
        return removed

    # -- reading ------------------------------------------------------------------------------
    def latest_valid(self, map_location="cpu") -> tuple[Path, dict] | None:
        """The newest checkpoint that reads and passes its checksum, as ``(path, state)``.

        Tries the numbered files newest first. ``checkpoint.pt`` is normally a hard link to the
        newest of them and is then not read twice; where it is a separate file (a copy on file
        systems without links, or the only file of a run written before rotation existed) it
        takes its place by the ``(epoch, step)`` it records, after a numbered file of the same
        position. Each file skipped is reported through ``log`` with the reason. Returns None
        when the folder holds no checkpoint at all; raises :class:`CorruptCheckpoint` listing
        every failure when none is usable, and :class:`IncompatibleCheckpoint` at once for a
        file of another format version (walking back past it would silently resume from an
        older, equally foreign file)."""
        numbered = self.checkpoints()
        failures: list[str] = []

        def attempt(path: Path):
            try:
                return load(path, map_location=map_location)
            except FileNotFoundError:       # removed by someone else in between
                return None
            except CorruptCheckpoint as exc:
                failures.append(str(exc))
                self.log(f"skipping {path.name}: {exc}")
                return None

        latest_state, latest_key = None, None
        if self.latest_path.is_file() and not any(_same_file(self.latest_path, p) for _, _, p in numbered):
            latest_state = attempt(self.latest_path)
            if latest_state is not None:
                latest_key = (int(latest_state.get("epoch", 0)), int(latest_state.get("step", 0)))
        for epoch, step, path in numbered:
            if latest_state is not None and latest_key > (epoch, step):
                return self._chosen(self.latest_path, latest_state, failures)
            state = attempt(path)
            if state is not None:
                if latest_state is not None and latest_state.get(CHECKSUM_KEY) != state.get(CHECKSUM_KEY):
                    self._set_aside_latest(latest_key, path)   # not a copy of the file resumed from
                return self._chosen(path, state, failures)
        if latest_state is not None:
            return self._chosen(self.latest_path, latest_state, failures)
        if failures:
            raise CorruptCheckpoint(f"no usable checkpoint in {self.out_dir}: " + "; ".join(failures))
        return None

    def _set_aside_latest(self, key: tuple[int, int], chosen: Path) -> None:
        """``checkpoint.pt`` is a separate file no newer than ``chosen``: it is not used, and the
        next save would replace it, so it is renamed aside first and the log says so."""
        aside = self.latest_path.with_name(f"{LATEST_NAME}.not-used-{uuid.uuid4().hex[:8]}")
        os.replace(self.latest_path, aside)
        self.log(f"{self.latest_path} is not used: it is a separate file at epoch {key[0]} step {key[1]}, "
                 f"not newer than {chosen.name}, which is resumed from; it is kept as {aside.name}")

    def _chosen(self, path: Path, state: dict, failures: list[str]) -> tuple[Path, dict]:
        if failures:
            self.log(f"using {path.name}, the newest usable checkpoint ({len(failures)} file(s) skipped)")
        return path, state


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False
