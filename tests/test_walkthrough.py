"""The README's walk-through (train -> latency-table -> search -> retrain -> export), run as a
user runs it: its shell block, command by command, in a fresh folder."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MARKER = "<!-- walk-through: tests/test_walkthrough.py runs this block -->"


def walkthrough_block() -> str:
    text = (REPO / "README.md").read_text()
    after = text.split(MARKER, 1)[1]
    match = re.match(r"\s*```bash\n(.*?)```", after, re.S)
    assert match, "the walk-through marker must precede a ```bash block"
    return match.group(1)


def test_readme_walkthrough_runs_and_its_network_matches(tmp_path):
    (tmp_path / "configs").symlink_to(REPO / "configs")
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONUNBUFFERED": "1",
           "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    script = "set -euo pipefail\n" + walkthrough_block()
    proc = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    runs = tmp_path / "runs" / "walkthrough"
    table = json.loads((runs / "latency_cpu.json").read_text())
    records = [json.loads(line) for line in (runs / "search" / "history.jsonl").read_text().splitlines()]
    budget = json.loads((runs / "search" / "search_args.json").read_text())["max_latency_ms"]
    assert table["batch_size"] == 1 and records and all(r["latency_ms"] <= budget for r in records)
    best = json.loads((runs / "search" / "best.json").read_text())
    retrained = json.loads((runs / "retrain" / "retrained.json").read_text())
    assert retrained["arch"] == best["arch"] and retrained["retrained"]["test_acc"] > 50.0
    exported = json.loads((runs / "net.onnx.json").read_text())
    assert exported["arch"] == best["arch"] and exported["format"] == "onnx"
    if exported["checked_with"] == "onnxruntime":
        assert exported["diff_file_vs_network"] < 1e-4
    else:
        pytest.skip("onnxruntime is not installed: the ONNX file was written but not run")
