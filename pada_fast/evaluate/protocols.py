"""Which architectures a ranking covers: the named protocols of ``pada-fast rank --archs``.

- ``all``: every architecture of the ground-truth table (the PA&DA authors' protocol: all 15,625
  of NAS-Bench-201).
- ``unique``: one representative per isomorphism class (NAS-Bench-201's own ``UniqueString``,
  6,466 classes; the aw_nas protocol). The representative is the member with the lowest benchmark
  index; every member receives its prediction. Metrics are reported over the classes (each
  representative against its own true accuracy) and over all members.
- ``stratified:N``: N architectures spread over the accuracy range
  (:meth:`GroundTruth.stratified_subset`, seeded by ``rank.seed``).
- a file: architectures listed one per line (benchmark strings or benchmark indices; ``#``
  starts a comment) or as a JSON list.

Every architecture string of the table is parsed and checked before any evaluation starts.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np

from pada_fast.errors import GroundTruthError

from .ground_truth import GroundTruth


@dataclass
class Selection:
    """The rows of a ranking. ``table`` holds every ranked architecture with its true accuracy;
    ``archs`` their parsed genes; ``representative[i]`` the row whose evaluation row ``i``
    receives (itself, except under ``unique``); ``classes`` the representative rows (``unique``)."""

    protocol: str
    description: str
    table: GroundTruth
    archs: list[tuple]
    representative: np.ndarray
    classes: np.ndarray | None = None
    extra: dict = field(default_factory=dict)

    @property
    def evaluated_rows(self) -> np.ndarray:
        return np.unique(self.representative)


def parse_archs(table: GroundTruth, supernet) -> list[tuple]:
    """Every architecture of ``table`` as genes; the first string that does not parse or does
    not fit the supernet fails at once, naming the file, the row and the benchmark index."""
    archs = []
    indices = table.indices
    for row, text in enumerate(table.arch_strs):
        try:
            archs.append(tuple(int(g) for g in supernet.str_to_arch(text)))
        except (ValueError, KeyError, IndexError, TypeError) as err:
            where = table.source or "the ground truth"
            raise GroundTruthError(f"{where} row {row} (benchmark index {int(indices[row])}): architecture "
                             f"{text!r} is not a valid {supernet.space_name} architecture ({err}); fix "
                             "or remove that row") from None
    return archs


def select(spec: str, truth: GroundTruth, supernet, seed: int = 0) -> Selection:
    """The :class:`Selection` that ``spec`` names (see the module docstring)."""
    spec = (spec or "all").strip()
    if spec == "all":
        return _plain("all", f"all {len(truth)} architectures of the table", truth, supernet)
    if spec == "unique":
        return _unique(truth, supernet)
    if spec.startswith("stratified:"):
        text = spec.split(":", 1)[1]
        try:
            n = int(text)
        except ValueError:
            raise GroundTruthError(f"--archs {spec}: N must be an integer, e.g. stratified:1000") from None
        if n >= len(truth):
            return _plain("all", f"all {len(truth)} architectures of the table (stratified:{n} "
                          "covers the whole table)", truth, supernet)
        subset = truth.stratified_subset(n, seed)
        return _plain(f"stratified:{n}", f"{n} architectures stratified by true accuracy, seed "
                      f"{seed}", subset, supernet, extra={"seed": seed})
    if os.path.isfile(spec):
        return _from_file(spec, truth, supernet)
    raise GroundTruthError(f"--archs {spec!r}: expected all, unique, stratified:N or an existing file "
                     "listing architectures")


def _plain(protocol, description, table, supernet, extra=None) -> Selection:
    archs = parse_archs(table, supernet)
    return Selection(protocol, description, table, archs, np.arange(len(table)), extra=extra or {})


def _unique(truth: GroundTruth, supernet) -> Selection:
    key_of = getattr(supernet, "unique_arch_key", None)
    if key_of is None:
        raise GroundTruthError(f"--archs unique needs isomorphism classes, which the {supernet.space_name} "
                         "space does not define; use all, stratified:N or a file")
    archs = parse_archs(truth, supernet)
    indices = truth.indices
    first: dict[str, int] = {}
    for row in np.argsort(indices, kind="stable"):
        first.setdefault(key_of(archs[row]), int(row))
    representative = np.array([first[key_of(a)] for a in archs], dtype=np.int64)
    classes = np.array(sorted(first.values(), key=lambda r: indices[r]), dtype=np.int64)
    return Selection("unique", f"{len(classes)} isomorphism classes (NAS-Bench-201 unique "
                     f"strings) of the {len(truth)} architectures; each member takes its class "
                     "representative's (lowest benchmark index) prediction", truth, archs,
                     representative, classes)


def _from_file(path: str, truth: GroundTruth, supernet) -> Selection:
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    if path.lower().endswith(".json"):
        try:
            entries = [(i + 1, e) for i, e in enumerate(json.loads(text))]
        except (json.JSONDecodeError, TypeError) as err:
            raise GroundTruthError(f"{path} must be a JSON list of architecture strings or benchmark "
                             f"indices ({err})") from None
    else:
        entries = [(i + 1, line.split("#", 1)[0].strip()) for i, line in enumerate(text.splitlines())]
        entries = [(n, e) for n, e in entries if e]
    chosen = []
    for line, entry in entries:
        try:
            if isinstance(entry, int) or (isinstance(entry, str) and entry.lstrip("-").isdigit()):
                arch = truth.arch_str(int(entry))
            else:
                arch = supernet.arch_to_str(supernet.str_to_arch(str(entry)))
                truth.index(arch)
        except (KeyError, ValueError) as err:
            message = err.args[0] if err.args else err
            raise GroundTruthError(f"{path} line {line}: {message}") from None
        chosen.append(arch)
    if len(set(chosen)) != len(chosen):
        raise GroundTruthError(f"{path} lists an architecture twice; list each once")
    if len(chosen) < 2:
        raise GroundTruthError(f"{path} lists {len(chosen)} architecture(s); a ranking needs at least 2")
    return _plain(f"file:{os.path.basename(path)}", f"{len(chosen)} architectures listed in {path}",
                  truth.select(chosen), supernet, extra={"file": os.path.abspath(path)})


__all__ = ["Selection", "parse_archs", "select"]
