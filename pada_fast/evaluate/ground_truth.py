"""Benchmark ground truth: architecture string -> true accuracy and benchmark index.

Readers: the NATS-Bench CSV export, the official NAS-Bench-201 file through ``nas_201_api``, and a
plain ``arch -> accuracy`` table (JSON or CSV) such as pada_fast's benchmark builder writes.
:func:`load_ground_truth` picks the reader from the file.
"""
from __future__ import annotations

import csv
import inspect
import json
import math
import os
from typing import Iterator, Optional, Sequence

import numpy as np

from pada_fast.errors import GroundTruthError
from pada_fast.files import write_atomic

NATS_COLUMNS = {
    "cifar10": "CIFAR10TestAccuracy200Epochs",
    "cifar100": "CIFAR100TestAccuracy200Epochs",
    "imagenet16-120": "ImageNetTestAccuracy200Epochs",
}
NATS_ARCH_COLUMN = "ArchitectureString"
# Dataset names as the official NAS-Bench-201 API spells them.
NB201_API_DATASETS = {"cifar10": "cifar10", "cifar100": "cifar100",
                      "imagenet16-120": "ImageNet16-120"}
NB201_API_SUFFIXES = (".pth", ".pickle", ".pkl", ".pbz2")


class GroundTruth:
    """True accuracies of a benchmark's architectures, each with its benchmark index.

    ``indices`` default to positions ``0..n-1``. Architecture strings and indices must be unique;
    accuracies must be finite numbers.
    """

    def __init__(self, arch_strs: Sequence[str], accuracies: Sequence[float],
                 indices: Optional[Sequence[int]] = None, *, dataset: str = "", source: str = "",
                 meta: Optional[dict] = None):
        self.dataset = dataset
        self.source = source
        # how the table was made (build-benchmark: dataset, training recipe, epochs, seed noise)
        self.meta = dict(meta or {})
        self._archs = [str(a) for a in arch_strs]
        self._accuracies = np.asarray(accuracies, dtype=np.float64).reshape(-1)
        if indices is None:
            indices = range(len(self._archs))
        self._indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        where = f" in {source}" if source else ""
        if not (len(self._archs) == len(self._accuracies) == len(self._indices)):
            raise GroundTruthError(f"ground truth{where}: {len(self._archs)} architectures, "
                             f"{len(self._accuracies)} accuracies and {len(self._indices)} indices; "
                             "they must be equally many")
        if not self._archs:
            raise GroundTruthError(f"ground truth{where} holds no architectures")
        bad = np.flatnonzero(~np.isfinite(self._accuracies))
        if bad.size:
            i = int(bad[0])
            raise GroundTruthError(f"ground truth{where}: accuracy of {self._archs[i]} (index "
                             f"{self._indices[i]}) is {self._accuracies[i]}, not a finite number")
        self._position_of_arch: dict[str, int] = {}
        for pos, arch in enumerate(self._archs):
            first = self._position_of_arch.setdefault(arch, pos)
            if first != pos:
                raise GroundTruthError(f"ground truth{where}: architecture {arch} appears twice (index "
                                 f"{self._indices[first]} and index {self._indices[pos]}); each "
                                 "architecture must have one accuracy")
        self._position_of_index: dict[int, int] = {}
        for pos, index in enumerate(self._indices.tolist()):
            first = self._position_of_index.setdefault(index, pos)
            if first != pos:
                raise GroundTruthError(f"ground truth{where}: benchmark index {index} is used by both "
                                 f"{self._archs[first]} and {self._archs[pos]}")

    # -- lookups -------------------------------------------------------------------------------
    def _position(self, arch_str: str) -> int:
        try:
            return self._position_of_arch[arch_str]
        except KeyError:
            where = f" from {self.source}" if self.source else ""
            raise KeyError(f"architecture {arch_str!r} is not in the ground truth ({len(self)} "
                           f"architectures{where}); check the string's format, e.g. "
                           "'|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|...|'") from None

    def accuracy(self, arch_str: str) -> float:
        return float(self._accuracies[self._position(arch_str)])

    def index(self, arch_str: str) -> int:
        return int(self._indices[self._position(arch_str)])

    def arch_str(self, index: int) -> str:
        try:
            return self._archs[self._position_of_index[int(index)]]
        except KeyError:
            raise KeyError(f"benchmark index {index} is not in the ground truth (indices "
                           f"{self._indices.min()}..{self._indices.max()}, {len(self)} entries)"
                           ) from None

    def accuracies_of(self, arch_strs: Sequence[str]) -> np.ndarray:
        """True accuracies of ``arch_strs``, in that order (the ``true`` side of a ranking)."""
        return np.array([self.accuracy(a) for a in arch_strs], dtype=np.float64)

    def best(self) -> str:
        """Architecture with the highest accuracy (lowest index on ties)."""
        order = np.lexsort((self._indices, -self._accuracies))
        return self._archs[int(order[0])]

    @property
    def arch_strs(self) -> list[str]:
        return list(self._archs)

    @property
    def accuracies(self) -> np.ndarray:
        return self._accuracies.copy()

    @property
    def indices(self) -> np.ndarray:
        return self._indices.copy()

    def __len__(self) -> int:
        return len(self._archs)

    def __contains__(self, arch_str) -> bool:
        return arch_str in self._position_of_arch

    def __iter__(self) -> Iterator[str]:
        return iter(self._archs)

    def __repr__(self):
        what = f" {self.dataset}" if self.dataset else ""
        where = f" from {self.source}" if self.source else ""
        return f"GroundTruth({len(self)} architectures{what}{where})"

    # -- subsets and output ----------------------------------------------------------------------
    def select(self, arch_strs: Sequence[str]) -> "GroundTruth":
        positions = [self._position(a) for a in arch_strs]
        return GroundTruth([self._archs[p] for p in positions], self._accuracies[positions],
                           self._indices[positions], dataset=self.dataset, meta=self.meta, source=self.source)

    def stratified_subset(self, n: int, seed: int = 0) -> "GroundTruth":
        """``n`` architectures spread over the whole accuracy range, as a GroundTruth sorted by
        benchmark index.

        Exactly: sort all N architectures by true accuracy (ties by benchmark index), cut that
        order into ``n`` consecutive strata of near-equal size (stratum s holds ranks
        ``floor(s*N/n) .. floor((s+1)*N/n) - 1``), and draw one architecture uniformly from each
        stratum with ``numpy.random.default_rng(seed)``. So the subset holds one architecture from
        each accuracy quantile bin of width 1/n — it always includes one of the worst N/n and one
        of the best N/n — and its accuracy distribution follows the benchmark's.
        """
        total = len(self)
        if not 1 <= n <= total:
            raise GroundTruthError(f"subset size must be between 1 and {total}, got {n}")
        order = np.lexsort((self._indices, self._accuracies))
        bounds = (np.arange(n + 1, dtype=np.int64) * total) // n
        rng = np.random.default_rng(seed)
        ranks = rng.integers(bounds[:-1], bounds[1:])
        chosen = order[ranks]
        chosen = chosen[np.argsort(self._indices[chosen], kind="stable")]
        return GroundTruth([self._archs[p] for p in chosen], self._accuracies[chosen],
                           self._indices[chosen], dataset=self.dataset, meta=self.meta,
                           source=f"{self.source} (stratified subset n={n}, seed={seed})")

    def write_table(self, path: str | os.PathLike, extra: Optional[Sequence[dict]] = None) -> None:
        """Write ``arch, accuracy, index`` records as JSON or CSV, chosen by the extension; written
        to a temporary file first, so a crash never leaves half a table. ``extra``: per-record
        fields added to each record (JSON only). With ``meta``, JSON holds ``{"meta": ...,
        "records": [...]}``; a CSV's meta goes to ``<path>.meta.json`` beside it."""
        path = os.fspath(path)
        suffix = os.path.splitext(path)[1].lower()
        if suffix not in (".json", ".csv"):
            raise GroundTruthError(f"cannot write {path}: use a .json or .csv file name")
        records = [{"arch": a, "accuracy": float(acc), "index": int(i)}
                   for a, acc, i in zip(self._archs, self._accuracies, self._indices)]
        if extra is not None and suffix == ".json":
            for record, more in zip(records, extra):
                record.update(more)
        def write(handle):
            if suffix == ".json":
                json.dump({"meta": self.meta, "records": records} if self.meta else records, handle, indent=1)
                handle.write("\n")
            else:
                writer = csv.DictWriter(handle, fieldnames=["arch", "accuracy", "index"])
                writer.writeheader()
                writer.writerows(records)
        if suffix == ".csv" and self.meta:
            write_atomic(path + ".meta.json", lambda h: json.dump(self.meta, h, indent=1))
        write_atomic(path, write, newline="")


# -- readers -----------------------------------------------------------------------------------
def _number(value, where: str) -> float:
    if isinstance(value, bool):
        raise GroundTruthError(f"{where}: accuracy is {value!r}, not a number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise GroundTruthError(f"{where}: accuracy is {value!r}, not a number") from None
    if not math.isfinite(number):
        raise GroundTruthError(f"{where}: accuracy is {value!r}, not a finite number")
    return number


def _index(value, where: str) -> int:
    """A benchmark index: an integer (or integral float/string) within int64, never truncated."""
    number = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, float) and math.isfinite(value) and value.is_integer():
        number = int(value)
    elif isinstance(value, str):
        try:
            number = int(value.strip())
        except ValueError:
            number = None
    if number is None or not -2**63 <= number < 2**63:
        raise GroundTruthError(f"{where}: index {value!r} is not an integer within int64")
    return number


def _check_dataset(dataset: str) -> None:
    if dataset not in NATS_COLUMNS:
        raise GroundTruthError(f"unknown dataset {dataset!r}; choose one of {', '.join(NATS_COLUMNS)}")


def read_nats_csv(path: str | os.PathLike, dataset: str = "cifar10") -> GroundTruth:
    """The NATS-Bench CSV export: one row per architecture, row i (after the header) is benchmark
    index i; ``dataset`` picks the accuracy column (see ``NATS_COLUMNS``)."""
    _check_dataset(dataset)
    path = os.fspath(path)
    column = NATS_COLUMNS[dataset]
    archs, accuracies = [], []
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in (column, NATS_ARCH_COLUMN) if c not in (reader.fieldnames or [])]
        if missing:
            raise GroundTruthError(f"{path} lacks column(s) {', '.join(missing)} (it has "
                             f"{', '.join(reader.fieldnames or [])}); is it the NATS-Bench export?")
        for row_number, row in enumerate(reader):
            where = f"{path} row {row_number} (line {row_number + 2}), column {column}"
            arch = (row[NATS_ARCH_COLUMN] or "").strip()
            if not arch:
                raise GroundTruthError(f"{path} row {row_number} (line {row_number + 2}) has no "
                                 f"{NATS_ARCH_COLUMN}")
            archs.append(arch)
            accuracies.append(_number(row[column], where))
    return GroundTruth(archs, accuracies, dataset=dataset, source=path)


def read_table(path: str | os.PathLike) -> GroundTruth:
    """A plain table: JSON ``{"arch": accuracy, ...}`` (index = order in the file) or a list of
    ``{"arch", "accuracy"[, "index"]}`` records, or CSV with columns ``arch,accuracy[,index]``."""
    path = os.fspath(path)
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".json":
        with open(path) as handle:
            try:
                data = json.load(handle)
            except json.JSONDecodeError as err:
                raise GroundTruthError(f"{path} is not valid JSON: {err}") from err
        meta = None
        if isinstance(data, dict) and set(data) == {"meta", "records"}:
            meta, data = data["meta"], data["records"]
            if not isinstance(meta, dict):
                raise GroundTruthError(f"{path}: 'meta' must be an object, found {type(meta).__name__}")
        if isinstance(data, dict):
            empty = [a for a in data if not a.strip()]
            if empty:
                raise GroundTruthError(f"{path} maps an empty architecture name to {data[empty[0]]!r}")
            archs = [a.strip() for a in data]
            accuracies = [_number(v, f"{path} entry {a!r}") for a, v in data.items()]
            return GroundTruth(archs, accuracies, source=path)
        if not isinstance(data, list):
            raise GroundTruthError(f"{path} must hold an object {{arch: accuracy}} or a list of "
                             f"records, found {type(data).__name__}")
        records = data
    elif suffix == ".csv":
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in ("arch", "accuracy") if c not in (reader.fieldnames or [])]
            if missing:
                raise GroundTruthError(f"{path} lacks column(s) {', '.join(missing)} (it has "
                                 f"{', '.join(reader.fieldnames or [])}); a table needs a header "
                                 "'arch,accuracy' and optionally 'index'")
            records = list(reader)
        meta = None
        sidecar = path + ".meta.json"
        if os.path.exists(sidecar):
            with open(sidecar) as handle:
                meta = json.load(handle)
    else:
        raise GroundTruthError(f"cannot read {path} as a table: use .json or .csv")
    table = _from_records(records, path)
    table.meta = dict(meta or {})
    return table


def _from_records(records: list, path: str) -> GroundTruth:
    archs, accuracies, indices = [], [], []
    for row, record in enumerate(records):
        if not isinstance(record, dict) or "arch" not in record or "accuracy" not in record:
            raise GroundTruthError(f"{path} record {row} is {record!r}; each needs 'arch' and 'accuracy'")
        if not isinstance(record["arch"], str) or not record["arch"].strip():
            raise GroundTruthError(f"{path} record {row} has 'arch' {record['arch']!r}; it must be a non-empty string")
        arch = record["arch"].strip()
        archs.append(arch)
        accuracies.append(_number(record["accuracy"], f"{path} record {row} ({arch})"))
        index = record.get("index")
        indices.append(None if index in (None, "") else index)
    given = [i is not None for i in indices]
    if any(given) and not all(given):
        row = given.index(False) if given[0] else given.index(True)
        raise GroundTruthError(f"{path}: some records have an 'index' and some do not (first differing "
                         f"record {row}); give every record an index or none")
    if all(given):
        indices = [_index(i, f"{path} record {row}") for row, i in enumerate(indices)]
    else:
        indices = None
    return GroundTruth(archs, accuracies, indices, source=path)


def read_nb201_api(path: str | os.PathLike, dataset: str = "cifar10") -> GroundTruth:
    """The official NAS-Bench-201 file (e.g. NAS-Bench-201-v1_1-096897.pth) through its API:
    200-epoch test accuracy of every architecture on ``dataset``."""
    _check_dataset(dataset)
    try:
        from nas_201_api import NASBench201API
    except ImportError as err:
        raise ImportError("reading the official NAS-Bench-201 file needs its API: "
                          "pip install nas-bench-201 (or use the NATS-Bench CSV export)") from err
    path = os.fspath(path)
    api = NASBench201API(path, verbose=False)
    name = NB201_API_DATASETS[dataset]
    # API 2.x takes hp="200"; 1.x took use_12epochs_result (False means the 200-epoch run).
    if "hp" in inspect.signature(api.get_more_info).parameters:
        def info(i):
            return api.get_more_info(i, name, hp="200", is_random=False)
    else:
        def info(i):
            return api.get_more_info(i, name, None, False, False)
    archs, accuracies = [], []
    for index in range(len(api)):
        archs.append(api.arch(index))
        accuracies.append(_number(info(index)["test-accuracy"], f"{path} index {index}"))
    return GroundTruth(archs, accuracies, dataset=dataset, source=path)


def load_ground_truth(path: str | os.PathLike, dataset: str = "cifar10") -> GroundTruth:
    """See :func:`_load_ground_truth`; decoding and CSV-format failures are reported as
    ``ValueError`` naming the file."""
    try:
        return _load_ground_truth(path, dataset)
    except UnicodeDecodeError as exc:
        raise GroundTruthError(f"{os.fspath(path)} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except csv.Error as exc:
        raise GroundTruthError(f"{os.fspath(path)} is not a readable CSV table: {exc}") from None


def _load_ground_truth(path: str | os.PathLike, dataset: str = "cifar10") -> GroundTruth:
    """Read ground truth from ``path`` with the right reader: a directory or .pth/.pickle file is
    the official NAS-Bench-201 file, a CSV whose header has ``ArchitectureString`` is the NATS-Bench
    export, other .csv/.json files are plain tables (one accuracy column; ``dataset`` is then
    only recorded)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"ground-truth file {path} does not exist")
    suffix = os.path.splitext(path)[1].lower()
    if os.path.isdir(path) or suffix in NB201_API_SUFFIXES:
        return read_nb201_api(path, dataset)
    if suffix == ".csv":
        with open(path, newline="") as handle:
            header = next(csv.reader(handle), [])
        if NATS_ARCH_COLUMN in header:
            return read_nats_csv(path, dataset)
        if "arch" in header and "accuracy" in header:
            truth = read_table(path)
            truth.dataset = dataset
            return truth
        raise GroundTruthError(f"{path}: unrecognised CSV header {header}; expected the NATS-Bench "
                         f"export ({NATS_ARCH_COLUMN}, ...) or a table 'arch,accuracy[,index]'")
    if suffix == ".json":
        truth = read_table(path)
        truth.dataset = dataset
        return truth
    raise GroundTruthError(f"cannot tell how to read {path}: expected the NATS-Bench CSV, a .json/.csv "
                     f"table, or the NAS-Bench-201 file ({', '.join(NB201_API_SUFFIXES)})")
