"""benchmarks/gpu_paper_run.sh: valid bash, its dry run runs every step of the paper run at toy size
on the CPU (training, ranking, the summary), and the real run refuses missing data in one line."""
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_paper_run.sh"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def run(*args, timeout=600):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHON": shutil.which("python") or "python3"}
    return subprocess.run(["bash", str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_syntax():
    result = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


def test_dry_run_trains_ranks_and_summarises(tmp_path):
    result = run("--dry-run", tmp_path / "out")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [r["method"] for r in summary["runs"]] == ["pada", "spos"]
    assert all(-1 <= r["kendall_tau"] <= 1 and r["epochs"] == 1 for r in summary["runs"])
    assert {(r["precision"], r["format"]) for r in summary["step_times"]} == {
        ("fp32", "nchw"), ("fp32", "nhwc"), ("bf16", "nchw"), ("bf16", "nhwc")}
    assert summary["sync_check"].startswith("not run")
    assert "no number here is a GPU measurement" in (tmp_path / "out" / "summary.md").read_text()
    assert not (tmp_path / "out" / "step_timing").exists() or not any((tmp_path / "out" / "step_timing").iterdir())


def test_real_run_needs_the_data_folders(tmp_path):
    result = run(tmp_path / "missing", tmp_path / "nats.csv", tmp_path / "out", timeout=60)
    assert result.returncode == 2
    assert "is not a folder" in result.stderr and len(result.stderr.strip().splitlines()) == 1
