"""Build logic for pada_fast's op library. Prints what it decided.

* torch importable at build time (``pip install --no-build-isolation -e .``): compile
  ``pada_fast._C`` now, CPU kernels always, CUDA kernels when a GPU is visible or ``FORCE_CUDA=1``
  (archs from ``TORCH_CUDA_ARCH_LIST``, default ``8.0;9.0+PTX`` for a forced build).
* torch not importable (an isolated build): install the Python package only; the ops are compiled
  just in time with ninja on first import (see ``pada_fast/ops/_library.py``).
"""
import os
import re
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (ROOT / "pada_fast" / "__init__.py").read_text()).group(1)
DEFAULT_FORCED_ARCHS = "8.0;9.0+PTX"


def say(msg):
    print(f"[pada_fast setup] {msg}", flush=True)


def write_build_config(path, torch_version, cuda_archs):
    path.parent.mkdir(parents=True, exist_ok=True)
    text = (f'#pragma once\n#define PADA_FAST_VERSION "{VERSION}"\n'
            f'#define PADA_FAST_TORCH_VERSION "{torch_version}"\n'
            f'#define PADA_FAST_CUDA_ARCHS "{cuda_archs}"\n')
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def extension_modules():
    try:
        import torch
        from torch.utils import cpp_extension
    except ImportError:
        say("torch is not importable in the build environment: installing the Python package only; "
            "the ops compile just in time on first use (pip install --no-build-isolation -e . "
            "compiles them now)")
        return [], {}
    force = os.environ.get("FORCE_CUDA", "0") == "1"
    cuda_home = cpp_extension.CUDA_HOME
    use_cuda = (torch.cuda.is_available() or force) and cuda_home is not None
    if (torch.cuda.is_available() or force) and cuda_home is None:
        say("CUDA requested but CUDA_HOME/nvcc not found: building CPU kernels only")
    archs = ""
    if use_cuda:
        if force and not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
            os.environ["TORCH_CUDA_ARCH_LIST"] = DEFAULT_FORCED_ARCHS
        archs = os.environ.get("TORCH_CUDA_ARCH_LIST", "(detected from the visible GPU)")
        if not os.environ.get("TORCH_CUDA_ARCH_LIST"):
            cap = torch.cuda.get_device_capability()
            archs = f"{cap[0]}.{cap[1]}"
    generated = ROOT / "build" / "generated"
    write_build_config(generated / "build_config.h", torch.__version__, archs)
    sources = ["csrc/ops.cpp"] + sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc" / "cpu").glob("*.cpp"))
    cxx = ["-O3", "-fopenmp", "-fno-trapping-math"]
    if use_cuda:
        sources += sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc" / "cuda").glob("*.cu"))
        cxx.append("-DPADA_FAST_WITH_CUDA")
        ext_cls = cpp_extension.CUDAExtension
        extra = {"cxx": cxx, "nvcc": ["-O3", "--use_fast_math", "-DPADA_FAST_WITH_CUDA"]}
    else:
        ext_cls = cpp_extension.CppExtension
        extra = {"cxx": cxx}
    say(f"torch {torch.__version__}; CPU kernels: yes; CUDA kernels: "
        f"{'yes, archs ' + archs + ', CUDA_HOME ' + str(cuda_home) if use_cuda else 'no'}")
    ext = ext_cls("pada_fast._C", sources, include_dirs=[str(ROOT / "csrc"), str(generated)],
                  extra_compile_args=extra, extra_link_args=["-fopenmp"])
    return [ext], {"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)}


class build_py_with_sources(build_py):
    """Also ships csrc/ inside the package (``pada_fast/_csrc``), so an installed wheel without
    a compiled extension can still build the ops just in time."""

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):   # an editable install reads csrc/ in place
            return
        target = Path(self.build_lib) / "pada_fast" / "_csrc"
        for source in sorted((ROOT / "csrc").rglob("*")):
            if source.suffix in (".cpp", ".cu", ".h", ".cuh"):
                self.mkpath(str((target / source.relative_to(ROOT / "csrc")).parent))
                self.copy_file(str(source), str(target / source.relative_to(ROOT / "csrc")), preserve_mode=False)
        say(f"csrc/ shipped as {target.relative_to(self.build_lib)} for just-in-time builds")


ext_modules, cmdclass = extension_modules()
cmdclass = {**cmdclass, "build_py": build_py_with_sources}
setup(
    name="pada_fast",
    version=VERSION,
    packages=find_packages(include=["pada_fast", "pada_fast.*"]),
    package_data={"pada_fast": ["data/ground_truth/*"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
