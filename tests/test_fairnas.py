"""FairNAS's strict fairness: every candidate of every layer trains exactly once per step."""
import json

import torch

from pada_fast.sampling import FairPathSampler, build_path_sampler
from pada_fast.config import load_config
from pada_fast.train.trainer import Trainer


def test_each_step_trains_every_candidate_of_every_layer_once():
    mask = torch.ones(6, 5, dtype=torch.bool)
    sampler = build_path_sampler("fairnas", mask)
    assert isinstance(sampler, FairPathSampler) and sampler.paths_per_step == 5
    paths = sampler.sample_epoch(7, torch.Generator().manual_seed(0))
    assert paths.shape == (35, 6)
    for step in paths.view(7, 5, 6):
        for layer in range(6):
            assert sorted(step[:, layer].tolist()) == [0, 1, 2, 3, 4]
    again = sampler.sample_epoch(7, torch.Generator().manual_seed(0))
    assert torch.equal(paths, again)


def test_layers_with_fewer_candidates_cycle_their_permutation():
    mask = torch.tensor([[True, True, True], [True, True, False]])
    sampler = FairPathSampler(mask)
    paths = sampler.sample_epoch(20, torch.Generator().manual_seed(1)).view(20, 3, 2)
    for step in paths:
        assert sorted(step[:, 0].tolist()) == [0, 1, 2]
        second = step[:, 1].tolist()
        assert set(second) == {0, 1} and second[2] == second[0]      # never the invalid slot


def test_fairnas_trains_and_updates_every_candidate_each_step(tmp_path):
    cfg = load_config(None, ["space.C=4", "space.N=1", "optim.epochs=2", "data.batch_size=64",
                             "method.name=fairnas", f"run.out_dir={tmp_path}", "run.threads=1",
                             "run.log_interval=1000", "run.progress=lines", "run.device=cpu",
                             "optim.lr=0.2"])
    trainer = Trainer(cfg)
    trainer.fit()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    # every convolution of the first cell has been trained (a momentum buffer exists)
    cell = trainer.model.body[0]
    for edge in range(6):
        for op in (2, 3):
            weight = next(cell.edges[edge][op].parameters())
            assert "momentum_buffer" in trainer.optimizer.state[weight]
