"""benchmarks/gpu_check.sh: valid bash, and its dry run lists the steps without building or running
anything (the real run needs a GPU machine)."""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.sh"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def run_script(tmp_path, **env):
    full = {k: v for k, v in os.environ.items() if k != "DATA_ROOT"}
    full.update({"OUT": str(tmp_path / "out"), "GPU_CHECK_DRY_RUN": "1", **env})
    return subprocess.run(["bash", str(SCRIPT)], cwd=tmp_path, env=full, capture_output=True, text=True,
                          timeout=30)


def test_syntax():
    result = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


def test_dry_run_lists_the_steps_and_touches_nothing(tmp_path):
    result = run_script(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "setup.py build_ext --inplace" in out
    assert "pytest" in out and "tests/test_ops_" in out
    assert "bench_ops.py --device cuda" in out
    assert "bench_overhead.py" in out and "run.device=cuda" in out and "quickstart_digits.yaml" in out
    assert "--scaling" in out
    assert "bench_latency_table.py --device cuda" in out and "tests/test_export.py" in out
    assert all(line.startswith(("[dry-run]", "overhead run data")) for line in out.splitlines() if line)
    assert not (tmp_path / "out").exists()


def test_dry_run_uses_data_root_when_given(tmp_path):
    (tmp_path / "cifar" / "train").mkdir(parents=True)
    result = run_script(tmp_path, DATA_ROOT=str(tmp_path / "cifar"), GPU_CHECK_SUBSET="1024")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "nb201_cifar10_cpu.yaml" in result.stdout
    assert f"data.root={tmp_path / 'cifar'}" in result.stdout
    assert "data.train_subset=1024" in result.stdout


def test_dry_run_times_the_ranking_engine_when_given_data_and_ground_truth(tmp_path):
    (tmp_path / "cifar" / "train").mkdir(parents=True)
    (tmp_path / "cifar" / "test").mkdir()
    result = run_script(tmp_path, DATA_ROOT=str(tmp_path / "cifar"), GT_FILE="nats.csv")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "bench_rank.py" in result.stdout and "--archs all --eval-subset 0 --device cuda" in result.stdout
    assert "bench_rank.py" not in run_script(tmp_path).stdout
