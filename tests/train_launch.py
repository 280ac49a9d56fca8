"""Starting `pada-fast train` in child processes the way users do (one process, or torchrun with
several gloo ranks), for the distributed and fault-injection tests."""
import os
import socket
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FAULT_KEYS = ("PADA_FAST_FAULT_STEP", "PADA_FAST_FAULT_RANK", "PADA_FAST_FAULT_MODE")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_command(sets, nproc: int = 1, resume: bool = False) -> list[str]:
    """``python -m pada_fast.cli train --set ...`` (under torchrun when ``nproc > 1``)."""
    if nproc == 1:
        cmd = [sys.executable, "-m", "pada_fast.cli", "train"]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}",
               "--master-addr=127.0.0.1", f"--master-port={free_port()}", "-m", "pada_fast.cli", "train"]
    for s in sets:
        cmd += ["--set", s]
    return cmd + (["--resume"] if resume else [])


def child_env(**extra) -> dict:
    """One thread, unbuffered output, this checkout importable, and no fault hook unless given."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    for key in FAULT_KEYS:
        env.pop(key, None)
    return {**env, **extra}
