"""The ``pada-fast`` command."""
from __future__ import annotations

import argparse
import sys


def cmd_info(args) -> int:
    import platform

    import torch

    from pada_fast import __version__
    from pada_fast.ops import STATUS

    print(f"pada_fast {__version__}")
    print(f"python {platform.python_version()}, torch {torch.__version__} (CUDA {torch.version.cuda}), "
          f"GPU visible: {torch.cuda.is_available()}")
    if STATUS.loaded:
        info = STATUS.build_info
        print(f"compiled op library: loaded ({STATUS.source}), built against torch {info.get('torch')}, "
              f"OpenMP {'yes' if info.get('openmp') == '1' else 'no'}")
        devices = [d for d in ("cpu", "cuda") if STATUS.has_kernel(d)]
        print(f"kernels for: {', '.join(devices)}")
        print(f"CUDA archs compiled: {info.get('cuda_archs') or 'none'}")
    else:
        print(f"compiled op library: NOT loaded ({STATUS.reason}); the PyTorch reference ops serve")
    try:
        import nvidia.dali as dali
        print(f"DALI {dali.__version__}")
    except ImportError:
        print("DALI: not installed (the torch data loader serves)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pada-fast", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="versions, compiled kernels and devices")
    p.set_defaults(func=cmd_info)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
