"""benchmarks/bench_overhead.py runs end to end on a tiny digits config (a smoke test: the numbers
themselves mean nothing at this size)."""
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import bench_overhead  # noqa: E402


def test_smoke(capsys):
    rc = bench_overhead.main(["--config", str(REPO / "configs" / "quickstart_digits.yaml"),
                              "--set", "data.train_subset=128", "--set", "space.C=2", "--rounds", "2",
                              "--micro-rounds", "2", "--variants", "pada-off", "--scaling", "--sizes", "1000",
                              "--scaling-rounds", "2"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "| pada-off / spos: pure machinery" in out
    assert "| (e) epoch_stream + sample_epoch" in out
    assert "| 1,000 |" in out


def test_memory_format_benchmark_prints_both_rows(capsys):
    import bench_memory_format
    bench_memory_format.main(["--config", str(REPO / "configs" / "quickstart_digits.yaml"), "--batch", "8",
                              "--resolution", "8", "--rounds", "2", "--paths", "1"])
    out = capsys.readouterr().out
    assert "| heaviest |" in out and "| 1 uniform draws |" in out and out.count("x** (") == 2
