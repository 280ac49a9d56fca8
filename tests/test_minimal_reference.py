"""benchmarks/minimal_pada.py, the independent reference of docs/method.md: one tiny run end to end on
digits, and its PA and DA distribution updates against hand-computed answers."""
import importlib
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import kendalltau

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

minimal = importlib.import_module("minimal_pada")

TINY_ARCHS = [
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|",
    "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|",
    "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|",
    "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|",
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|",
    "|nor_conv_1x1~0|+|nor_conv_1x1~0|nor_conv_1x1~1|+|nor_conv_1x1~0|nor_conv_1x1~1|nor_conv_1x1~2|",
    "|avg_pool_3x3~0|+|avg_pool_3x3~0|avg_pool_3x3~1|+|avg_pool_3x3~0|avg_pool_3x3~1|avg_pool_3x3~2|",
    "|nor_conv_3x3~0|+|none~0|nor_conv_1x1~1|+|skip_connect~0|avg_pool_3x3~1|nor_conv_3x3~2|",
]


def test_tiny_pada_run_writes_a_tau_that_scipy_reproduces(tmp_path):
    table = tmp_path / "table.json"
    table.write_text(json.dumps({arch: 50.0 + 5 * i for i, arch in enumerate(TINY_ARCHS)}))
    out = tmp_path / "result.json"
    minimal.main(["--method", "pada", "--dataset", "digits", "--table", str(table), "--train-subset", "256",
                  "--eval-subset", "128", "--epochs", "2", "--C", "4", "--N", "1", "--batch-size", "64",
                  "--augment", "crop", "--threads", "1", "--out", str(out)])
    result = json.loads(out.read_text())
    assert result["archs"] == TINY_ARCHS
    assert math.isfinite(result["kendall_tau"])
    assert result["kendall_tau"] == pytest.approx(kendalltau(result["true"], result["predicted"])[0])
    assert 0.0 <= result["precision_top5"] <= 1.0
    assert [e["p"] for e in result["epochs"]][0] == pytest.approx([0.2] * 5)
    final_p = np.array(result["final_p"])
    assert final_p.sum() == pytest.approx(1.0)
    # after epoch 1 of 2, delta = 1/2: parameter-free ops keep (1 - delta) / 5 each
    assert final_p[[0, 1, 4]] == pytest.approx([0.1, 0.1, 0.1])
    assert [minimal.arch_str(minimal.parse_arch(a)) for a in TINY_ARCHS] == TINY_ARCHS


def test_pa_update_matches_hand_computed_probabilities():
    paths = minimal.PathImportance()
    paths.add({2: 1.0, 3: 2.0, 0: 0.0})
    paths.add({2: 3.0, 1: 0.0})
    paths.add({3: 4.0})
    # means: conv1x1 (1 + 3) / 2 = 2, conv3x3 (2 + 4) / 2 = 3, the rest 0; sum 5
    p = paths.update(delta=0.5)
    assert p.tolist() == pytest.approx([0.1, 0.1, 0.5 * 2 / 5 + 0.1, 0.5 * 3 / 5 + 0.1, 0.1])
    assert paths.counts.sum() == 0, "statistics restart every epoch"
    no_gradients = torch.zeros(5, dtype=torch.float64)
    assert minimal.path_probabilities(no_gradients, 0.9).tolist() == pytest.approx([0.2] * 5)
    assert minimal.schedule_weight(1, 4, "next") == 0.25 and minimal.schedule_weight(1, 4, "current") == 0.0


def test_da_update_matches_hand_computed_probabilities():
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    scores = minimal.importance_scores(logits, torch.tensor([0, 1]))
    # softmax [.5, .5] - [1, 0] -> norm sqrt(.5); softmax [.75, .25] - [0, 1] -> norm sqrt(1.125)
    assert scores.tolist() == pytest.approx([math.sqrt(0.5), math.sqrt(1.125)])
    samples = minimal.DataImportance(4)
    samples.add(torch.tensor([0, 1, 0]), torch.tensor([1.0, 2.0, 3.0]))
    # sample 0 seen twice: mean 2; sample 1: 2; samples 2, 3 unseen: 0
    q = samples.update(tau=0.5)
    assert q.tolist() == pytest.approx([0.375, 0.375, 0.125, 0.125])
    assert samples.counts.sum() == 0, "scores restart every epoch"
