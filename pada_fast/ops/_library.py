"""Finds and loads the compiled ``pada_fast`` op library, once.

Order: the extension built at install time (``pada_fast._C``), then a just-in-time build of
``csrc/`` (in a checkout; ``pada_fast/_csrc`` in an installed wheel) with ninja cached under ``$PADA_FAST_CACHE`` (default ``~/.cache/pada_fast``), which is
the route after an isolated ``pip install -e .`` (``PADA_FAST_FORCE_JIT=1`` takes it even when an
installed extension exists). If neither works, one warning says why and the
reference ops in :mod:`pada_fast.ops.reference` serve.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pada_fast import __version__
from pada_fast.files import write_text_atomic

# The kernel sources: shipped inside an installed wheel, or csrc/ of a source checkout.
_CANDIDATES = (Path(__file__).resolve().parents[1] / "_csrc", Path(__file__).resolve().parents[2] / "csrc")
REPO_CSRC = next((c for c in _CANDIDATES if (c / "ops.cpp").is_file()), _CANDIDATES[-1])


@dataclass
class LibraryStatus:
    loaded: bool = False
    source: str = "none"        # "installed", "jit" or "none"
    reason: str = ""            # why it did not load
    build_info: dict = field(default_factory=dict)

    def has_kernel(self, device: str) -> bool:
        if not self.loaded:
            return False
        key = {"cpu": "CPU", "cuda": "CUDA"}[device]
        return torch._C._dispatch_has_kernel_for_dispatch_key(
            "pada_fast::cross_entropy_with_importance", key)


STATUS = LibraryStatus()


def _op_registered() -> bool:
    return hasattr(torch.ops, "pada_fast") and hasattr(torch.ops.pada_fast, "build_info")


def _jit_build() -> None:
    from torch.utils import cpp_extension

    sources = sorted(str(p) for p in (REPO_CSRC / "cpu").glob("*.cpp")) + [str(REPO_CSRC / "ops.cpp")]
    cuda = (torch.cuda.is_available() and cpp_extension.CUDA_HOME is not None)
    flags = ["-O3", "-fno-trapping-math"]
    if cuda:
        sources += sorted(str(p) for p in (REPO_CSRC / "cuda").glob("*.cu"))
        flags.append("-DPADA_FAST_WITH_CUDA")
    cache = Path(os.environ.get("PADA_FAST_CACHE", Path.home() / ".cache" / "pada_fast"))
    build_dir = cache / f"torch{torch.__version__}{'-cuda' if cuda else '-cpu'}"
    build_dir.mkdir(parents=True, exist_ok=True)
    archs = ".".join(map(str, torch.cuda.get_device_capability())) if cuda else ""
    config = (f'#pragma once\n#define PADA_FAST_VERSION "{__version__}"\n'
              f'#define PADA_FAST_TORCH_VERSION "{torch.__version__}"\n#define PADA_FAST_CUDA_ARCHS "{archs}"\n')
    header = build_dir / "build_config.h"
    if not header.exists() or header.read_text() != config:
        write_text_atomic(header, config)   # ranks building at once never read half a header
    cpp_extension.load(
        name="pada_fast_jit", sources=sources, extra_cflags=flags + ["-fopenmp"],
        extra_ldflags=["-fopenmp"], extra_cuda_cflags=["-O3", "--use_fast_math", "-DPADA_FAST_WITH_CUDA"] if cuda else None,
        extra_include_paths=[str(REPO_CSRC), str(build_dir)], build_directory=str(build_dir),
        is_python_module=False, with_cuda=cuda, verbose=bool(os.environ.get("PADA_FAST_VERBOSE")))


def parse_build_info(text: str) -> dict:
    """``key=value;...`` pairs; a piece without ``=`` continues the previous value (arch lists
    such as ``8.0;9.0+PTX`` contain the separator)."""
    info: dict = {}
    key = None
    for piece in text.split(";"):
        if "=" in piece:
            key, value = piece.split("=", 1)
            info[key] = value
        elif key is not None:
            info[key] += ";" + piece
    return info


def load() -> LibraryStatus:
    if STATUS.loaded or STATUS.reason:
        return STATUS
    if os.environ.get("PADA_FAST_DISABLE_LIBRARY"):
        STATUS.reason = "disabled by PADA_FAST_DISABLE_LIBRARY"
    else:
        errors = []
        if os.environ.get("PADA_FAST_FORCE_JIT"):
            errors.append("installed extension skipped (PADA_FAST_FORCE_JIT)")
        else:
            try:
                from pada_fast import _C  # noqa: F401  (registers the ops on import)
                STATUS.source = "installed"
            except ImportError as exc:
                errors.append(f"no installed extension ({exc})")
        if not _op_registered() and REPO_CSRC.is_dir() and not os.environ.get("PADA_FAST_NO_JIT"):
            try:
                _jit_build()
                STATUS.source = "jit"
            except Exception as exc:  # any build failure means: fall back, say why
                errors.append(f"just-in-time build failed ({type(exc).__name__}: {str(exc)[:300]})")
        if _op_registered():
            STATUS.loaded = True
        else:
            STATUS.reason = "; ".join(errors) or "csrc/ not found for a just-in-time build"
    if STATUS.loaded:
        STATUS.build_info = parse_build_info(torch.ops.pada_fast.build_info())
    else:
        warnings.warn(f"pada_fast: compiled op library not loaded, using the PyTorch reference ops: "
                      f"{STATUS.reason}", RuntimeWarning, stacklevel=3)
    return STATUS
