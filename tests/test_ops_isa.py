"""Every CPU instruction-set build of the row kernels agrees with the reference ops."""
import os
import subprocess
import sys

import pytest

from pada_fast import ops

SCRIPT = r"""
import torch
from pada_fast import ops
from pada_fast.ops import reference
assert ops.STATUS.build_info["cpu_isa"] == "{isa}", ops.STATUS.build_info
g = torch.Generator().manual_seed(0)
for classes in (3, 10, 1000, 1003):
    z = torch.randn(33, classes, generator=g) * 4
    y = torch.randint(0, classes, (33,), generator=g)
    for eps in (0.0, 0.1):
        got = torch.ops.pada_fast.cross_entropy_with_importance(z, y, eps)
        want = reference.cross_entropy_with_importance(z.double(), y, eps)
        for a, b in zip(got, want):
            torch.testing.assert_close(a.double(), b, rtol=2e-5, atol=2e-5)
        grad = torch.rand(33, generator=g)
        got = torch.ops.pada_fast.cross_entropy_with_importance_backward(grad, z, y, want[2].float(), eps)
        want_grad = reference.cross_entropy_with_importance_backward(grad.double(), z.double(), y, want[2], eps)
        torch.testing.assert_close(got.double(), want_grad, rtol=2e-5, atol=2e-6)
grads = [torch.randn(n, generator=g) for n in (1, 17, 70001)]
s, c = torch.zeros(4), torch.zeros(4)
ops.grad_norm_accumulate_(grads, [0, 0, 3], s, c)
rs, rc = torch.zeros(4), torch.zeros(4)
reference.grad_norm_accumulate_(grads, [0, 0, 3], rs, rc)
torch.testing.assert_close(s, rs)
print("ok")
"""


def supported(isa: str) -> bool:
    if isa == "default":
        return True
    flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    need = {"avx2": ["avx2", "fma"], "avx512": ["avx512f", "avx512dq", "avx512bw", "avx512vl"]}[isa]
    return all(f" {flag}" in flags for flag in need)


@pytest.mark.skipif(not ops.COMPILED, reason="compiled library not loaded")
@pytest.mark.parametrize("isa", ["default", "avx2", "avx512"])
def test_instruction_set_build_matches_reference(isa):
    if not supported(isa):
        pytest.skip(f"this CPU lacks {isa}")
    env = {**os.environ, "PADA_FAST_CPU_ISA": isa, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", SCRIPT.replace("{isa}", isa)], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-2000:]


def test_unknown_instruction_set_is_an_error():
    if not ops.COMPILED:
        pytest.skip("compiled library not loaded")
    env = {**os.environ, "PADA_FAST_CPU_ISA": "sse9"}
    result = subprocess.run([sys.executable, "-c", "import pada_fast.ops"], env=env, capture_output=True,
                            text=True, timeout=120)
    assert "PADA_FAST_CPU_ISA must be default, avx2 or avx512" in result.stderr
