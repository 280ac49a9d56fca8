"""The ranking probe: predictions during training equal a separate ranking of the same
architectures on the same checkpoint; the stability stop ends training and survives resume."""
import csv
import json
from pathlib import Path

import pytest

from pada_fast import checkpoint
from pada_fast.config import load_config
from pada_fast.evaluate.probe import ARCHS_FILE, LOG_FILE, PLOT_FILE, read_probe_log
from pada_fast.evaluate.rank import rank_supernet
from pada_fast.train.hooks import HookBase
from pada_fast.train.trainer import Trainer

DIGITS_TABLE = str(Path(__file__).resolve().parents[1] / "pada_fast/data/ground_truth/nb201_digits.json")


def probe_cfg(out, *extra):
    return load_config(None, ["space.C=4", "space.N=1", "optim.epochs=3", "data.batch_size=64",
                              "data.train_subset=320", f"run.out_dir={out}", "run.threads=1",
                              "run.progress=lines", "run.device=cpu", "run.log_interval=1000",
                              "probe.every=1", "probe.archs=12", "probe.eval_images=200",
                              "data.eval_batch_size=100", *extra])


def test_probe_predictions_equal_a_separate_rank_of_the_same_checkpoint(tmp_path):
    out = tmp_path / "run"
    Trainer(probe_cfg(out, f"rank.ground_truth={DIGITS_TABLE}")).fit()
    records = read_probe_log(out)
    assert [r["epoch"] for r in records] == [0, 1, 2]
    archs = [line for line in (out / ARCHS_FILE).read_text().splitlines() if not line.startswith("#")]
    assert len(archs) == 12 and (out / PLOT_FILE).stat().st_size > 0
    metrics = rank_supernet(out / "checkpoint.pt", tmp_path / "rank", archs=str(out / ARCHS_FILE),
                            eval_subset=200, progress=False)
    with open(tmp_path / "rank" / "predictions.csv") as f:
        ranked = {row["arch"]: float(row["predicted_accuracy"]) for row in csv.DictReader(f)}
    assert [ranked[a] for a in archs] == pytest.approx(records[-1]["predictions"], abs=1e-9)
    assert records[-1]["tau"] == pytest.approx(metrics["kendall_tau"], abs=1e-12)
    assert records[-1]["stability"] is not None and records[0]["stability"] is None
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["probe_tau"]) for r in rows] == pytest.approx([r["tau"] for r in records])
    assert rows[0]["probe_stability"] == "" and rows[1]["probe_p_top5"] != ""


def test_probe_every_k_epochs_and_after_the_last(tmp_path):
    out = tmp_path / "run"
    Trainer(probe_cfg(out, "probe.every=2", "optim.epochs=5")).fit()
    assert [r["epoch"] for r in read_probe_log(out)] == [1, 3, 4]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["probe_stability"] is None for r in rows] == [True, True, True, False, False]
    assert all(r["probe_tau"] is None for r in rows)            # no table: stability only


def test_stability_stop_ends_training_after_m_stable_probes_with_a_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    # tau >= -1 always holds: probes 2 and 3 are the first two stable ones, so training ends after epoch 3
    result = Trainer(probe_cfg(out, "optim.epochs=6", "probe.stop_tau=-1.0", "probe.stop_probes=2")).fit()
    assert result["stopped_by"] and "stable" in result["stopped_by"] and result["exit_code"] == 0
    assert checkpoint.load(out / "checkpoint.pt")["epoch"] == 3
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 3
    assert "stopped after epoch 3 of 6" in capsys.readouterr().out


def test_a_stability_rule_that_never_holds_trains_every_epoch(tmp_path):
    out = tmp_path / "run"
    result = Trainer(probe_cfg(out, "optim.epochs=3", "probe.stop_tau=1.0", "probe.stop_probes=1")).fit()
    stabilities = [r["stability"] for r in read_probe_log(out)[1:]]
    assert len(stabilities) == 2 and all(s < 1.0 for s in stabilities)   # rankings still move at 3 epochs
    assert result["stopped_by"] is None
    assert checkpoint.load(out / "checkpoint.pt")["epoch"] == 3


class StopAfterEpoch2(HookBase):
    def end_of_epoch(self, epoch, row):
        if epoch == 1:
            self.trainer.request_stop("a test stop")


def test_probe_state_resumes_exactly(tmp_path):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    settings = ("optim.epochs=4", "probe.stop_tau=0.99", "probe.stop_probes=3")
    Trainer(probe_cfg(whole, *settings)).fit()
    first = Trainer(probe_cfg(parts, *settings))
    first.register_hook(StopAfterEpoch2())
    assert first.fit()["stopped_by"] == "a test stop"
    # a probe record written after the last checkpoint (a crash before it) is taken again on resume
    log = parts / LOG_FILE
    log.write_text(log.read_text() + json.dumps({"epoch": 2, "predictions": []}) + "\n")
    Trainer(probe_cfg(parts, *settings), resume=True).fit()
    a, b = read_probe_log(whole), read_probe_log(parts)
    assert [r["epoch"] for r in b] == [0, 1, 2, 3]
    for x, y in zip(a, b):
        assert x["predictions"] == y["predictions"] and x["stability"] == y["stability"]
    assert checkpoint.load(parts / "checkpoint.pt")["hooks"]["ranking_probe"] == \
        checkpoint.load(whole / "checkpoint.pt")["hooks"]["ranking_probe"]
