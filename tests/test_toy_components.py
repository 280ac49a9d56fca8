"""Adding a search space or a sampler is one file plus its registration: the test-only toy space
(toy_space.py) and greedy path sampler (toy_sampler.py) pass the shared contracts, the config
accepts their names, and the trainer, checkpoints and load_run use them with no other change."""
import json

import pytest
import torch

import toy_sampler
import toy_space
from pada_fast.config import ConfigError, load_config
from pada_fast.experiment import load_run
from pada_fast.train.trainer import Trainer

from sampler_contract import PathSamplerContract
from space_contract import SpaceContract


@pytest.fixture(autouse=True)
def registered_toys():
    toy_space.register()
    toy_sampler.register()
    yield
    toy_sampler.unregister()
    toy_space.unregister()


class TestToySpace(SpaceContract):
    input_shape = (2, 1, 8, 8)
    make = staticmethod(lambda: toy_space.ToySuperNet(C=4, num_classes=10, in_channels=1))


class TestGreedyPathSampler(PathSamplerContract):
    make = staticmethod(toy_sampler.GreedyPathSampler)


def test_names_are_config_choices_only_while_registered():
    load_config(None, ["space.name=toy", "method.name=greedy"])
    toy_space.unregister()
    with pytest.raises(ConfigError, match="'space.name' must be one of nb201, proxyless, darts; got 'toy'"):
        load_config(None, ["space.name=toy"])


def test_the_trainer_trains_resumes_and_reloads_a_toy_run(tmp_path):
    overrides = ["space.name=toy", "space.C=4", "method.name=greedy", "optim.epochs=2", "data.batch_size=64",
                 f"run.out_dir={tmp_path}", "run.threads=1", "run.log_interval=1000", "run.progress=lines",
                 "run.device=cpu", "data.train_subset=256"]
    Trainer(load_config(None, overrides[:3] + ["optim.epochs=1"] + overrides[4:])).fit()
    Trainer(load_config(None, overrides), resume=True).fit()      # one more epoch, from the checkpoint
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1]
    p = rows[-1]["p"]
    assert all(max(layer[:3]) >= 0.5 + 0.5 / 3 - 1e-6 for layer in p)    # greedy: 1 - eps + eps/3 on the best
    run = load_run(tmp_path / "checkpoint.pt")
    assert isinstance(run.model, toy_space.ToySuperNet) and run.cfg.method.name == "greedy"
    path_sampler, _ = run.samplers(256, "cpu")
    assert type(path_sampler) is toy_sampler.GreedyPathSampler
    torch.testing.assert_close(path_sampler.probabilities(), torch.tensor(p, dtype=torch.float64), atol=1e-5, rtol=0)
