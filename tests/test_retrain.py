"""``pada-fast retrain``: architecture sources, the recipes' pieces (auxiliary head, drop-path,
cutout, EMA, RMSProp), the trainer's machinery (exact resume, torchrun), and the paper configs at
toy size."""
import json
import math
from pathlib import Path

import pytest
import torch

from pada_fast import checkpoint
from pada_fast.config import ConfigError, load_config
from pada_fast.data import transforms as T
from pada_fast.experiment import build_optimizer
from pada_fast.spaces import DartsSuperNet, NB201SuperNet
from pada_fast.spaces.darts import DartsNetwork
from pada_fast.spaces.darts_arch import genotype_to_str
from pada_fast.train.hooks import HookBase
from pada_fast.train.retrain import RetrainTrainer, WeightEMA, heldout_accuracy, parse_arch_source

from train_launch import REPO, child_env, free_port

NB201_ARCH = "|nor_conv_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+|avg_pool_3x3~0|nor_conv_1x1~1|skip_connect~2|"
PROXYLESS_ARCH = "|".join(["k3e3", "k5e6", "skip", "k3e6"] * 5 + ["k7e3"])
CONFIGS = REPO / "configs"


def darts_genotype(seed=0):
    import numpy as np
    arch = DartsSuperNet(C=4, num_cells=3).random_arch(np.random.default_rng(seed))
    return genotype_to_str(DartsSuperNet.genotype(arch))


def digits(out_dir, *sets, config=None, epochs=2):
    base = [f"run.out_dir={out_dir}", "data.dataset=digits", "data.batch_size=64", "data.train_subset=512",
            "data.eval_batch_size=500", f"optim.epochs={epochs}", "run.threads=1", "run.progress=lines",
            "run.log_interval=100", "data.root=null", "data.num_workers=0", "data.backend=torch",
            "run.precision=fp32", "run.channels_last=false"]
    return load_config(config, base + list(sets))


def fit(cfg, arch, **kwargs):
    cfg.retrain.arch = arch
    trainer = RetrainTrainer(cfg, **kwargs)
    return trainer, trainer.fit()


# -- architecture sources ---------------------------------------------------------------------------
def test_every_kind_of_architecture_source_names_its_space(tmp_path):
    space = load_config(None).space
    assert parse_arch_source(NB201_ARCH, space)["space"] == "nb201"
    assert parse_arch_source(darts_genotype(), space)["space"] == "darts"
    spec = parse_arch_source(PROXYLESS_ARCH, space)
    assert spec["space"] == "proxyless" and spec["network"]["kwargs"]["ops"] == PROXYLESS_ARCH.split("|")
    from pada_fast.architecture import save_arch
    from pada_fast.search.export import arch_spec
    net = NB201SuperNet(C=4, N=1)
    save_arch(arch_spec(net, net.str_to_arch(NB201_ARCH)), tmp_path / "best.json")
    loaded = parse_arch_source(str(tmp_path / "best.json"), space)
    assert loaded["space"] == "nb201" and loaded["arch"] == NB201_ARCH


@pytest.mark.parametrize("bad, says", [("not an arch", "neither an architecture file"),
                                       ("missing/best.json", "does not exist"),
                                       ("|nor_conv_9x9~0|+|x~0|y~1|+|a~0|b~1|c~2|", "NAS-Bench-201"),
                                       ("Genotype(normal=[", "DARTS genotype")])
def test_a_bad_architecture_says_what_was_wrong(bad, says):
    with pytest.raises(ConfigError, match=says):
        parse_arch_source(bad, load_config(None).space)


def test_retrain_without_an_architecture_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="retrain.arch is not set"):
        RetrainTrainer(digits(tmp_path / "run"))


def test_options_of_another_space_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="retrain.auxiliary_weight applies to darts"):
        fit(digits(tmp_path / "run", "retrain.auxiliary_weight=0.4"), NB201_ARCH)


# -- recipe pieces ------------------------------------------------------------------------------------
def test_cutout_zeroes_one_clipped_square_after_normalisation():
    image = torch.ones(3, 32, 32)
    cut = T.Cutout(16)
    out = cut(image, torch.Generator().manual_seed(0))
    top, bottom, left, right = cut.draw(torch.Generator().manual_seed(0), 32, 32)
    zero = out == 0
    assert zero[:, top:bottom, left:right].all() and zero.sum() == 3 * (bottom - top) * (right - left)
    assert 0 < (bottom - top) <= 16 and 0 < (right - left) <= 16
    assert image.eq(1).all()          # the input is not modified
    steps = T.recipe_steps("crop:4,flip,cutout:16", "colour", 32)
    assert steps == ["crop:4", "flip", "cutout:16"]
    transform = T.recipe_transform(steps, T.CIFAR10_MEAN, T.CIFAR10_STD, 32)
    assert isinstance(transform.steps[-1], T.Cutout) and isinstance(transform.steps[-2], T.Normalize)
    with pytest.raises(ValueError, match="cutout:L"):
        T.recipe_steps("cutout:0", "colour", 32)


def test_darts_auxiliary_head_sits_after_the_second_reduction_and_only_runs_in_training():
    net = DartsNetwork(darts_genotype(), C=4, num_cells=6, auxiliary=True)
    assert net.aux_index == 4 and net.aux_index in net.reductions
    x = torch.randn(2, 3, 32, 32)
    logits, aux = net.train().forward_with_aux(x)
    assert logits.shape == aux.shape == (2, 10)
    assert net.eval().forward_with_aux(x)[1] is None
    assert torch.equal(net(x), net.forward_with_aux(x)[0])
    assert DartsNetwork(darts_genotype(), C=4, num_cells=6).auxiliary is None


def test_weight_ema_averages_parameters_and_copies_buffers():
    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    ema = WeightEMA(net, decay=0.5)
    before = net[0].weight.detach().clone()
    with torch.no_grad():
        net[0].weight.add_(2.0)
        net[1].running_mean.fill_(3.0)
    ema.update(net)
    torch.testing.assert_close(ema.model[0].weight, before + 1.0)
    assert ema.model[1].running_mean.eq(3.0).all()


def test_rmsprop_is_built_from_the_config():
    cfg = load_config(None, ["optim.name=rmsprop", "optim.lr=0.064", "optim.rmsprop_eps=0.001"])
    opt = build_optimizer([torch.nn.Parameter(torch.zeros(2))], cfg.optim)
    assert isinstance(opt, torch.optim.RMSprop)
    assert opt.defaults["eps"] == 0.001 and opt.defaults["alpha"] == 0.9 and opt.defaults["lr"] == 0.064


# -- training -----------------------------------------------------------------------------------------
def test_nb201_retrain_reports_the_test_accuracy_of_its_checkpoint(tmp_path):
    out = tmp_path / "run"
    trainer, result = fit(digits(out, "space.C=4", "space.N=1", "optim.lr=0.2", epochs=4), NB201_ARCH)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1, 2, 3] and all("test_acc" in r for r in rows)
    retrained = json.loads((out / "retrained.json").read_text())
    assert retrained["arch"] == NB201_ARCH and retrained["network"]["kwargs"]["C"] == 4
    assert retrained["retrained"]["test_acc"] == rows[-1]["test_acc"] > 30.0   # chance is 10%
    # the checkpoint's weights give the logged accuracy again
    state = checkpoint.load(out / "checkpoint.pt")
    from pada_fast.architecture import network_from_spec
    net = network_from_spec(state["retrain"]["spec"])
    net.load_state_dict(state["model"])
    acc, _ = heldout_accuracy(net, trainer.test_set, 500, "cpu")
    assert acc == pytest.approx(rows[-1]["test_acc"])
    assert state["config"]["space"]["name"] == "nb201" and rows[-1]["method"] == "retrain"
    assert state["path_sampler"] is None and state["data_sampler"]["kind"] == "uniform"


class StopAfter(HookBase):
    def __init__(self, step):
        self.step = step

    def after_step(self, state):
        if state.global_step + 1 == self.step:
            state.stop = True


def test_a_stopped_retrain_resumes_exactly_with_its_ema(tmp_path):
    sets = ["space.C=4", "space.N=1", "retrain.ema_decay=0.9", "optim.nesterov=true", "optim.label_smoothing=0.1"]
    _, _ = fit(digits(tmp_path / "whole", *sets), NB201_ARCH)
    cfg = digits(tmp_path / "parts", *sets)
    cfg.retrain.arch = NB201_ARCH
    first = RetrainTrainer(cfg)
    first.register_hook(StopAfter(11))          # epoch 2, step 3 of 8
    first.hooks.insert(0, first.hooks.pop())    # before the mid-epoch checkpoint hook
    first.fit()
    first.release()
    assert checkpoint.load(tmp_path / "parts" / "checkpoint.pt")["step"] == 3
    _, _ = fit(digits(tmp_path / "parts", *sets), NB201_ARCH, resume=True)
    a = checkpoint.load(tmp_path / "whole" / "checkpoint.pt")
    b = checkpoint.load(tmp_path / "parts" / "checkpoint.pt")
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for key in a["retrain"]["ema"]:
        assert torch.equal(a["retrain"]["ema"][key], b["retrain"]["ema"][key]), key


def test_darts_recipe_trains_the_auxiliary_head_with_drop_path_and_cutout(tmp_path):
    out = tmp_path / "run"
    trainer, _ = fit(digits(out, "retrain.C=4", "retrain.num_cells=3", "retrain.auxiliary_weight=0.4",
                            "retrain.drop_path=0.2", "data.augment=crop:1,cutout:4", "optim.lr_schedule=per_epoch",
                            epochs=2), darts_genotype())
    net = trainer.network
    assert net.C == 4 and net.num_cells == 3 and net.auxiliary is not None
    assert net.drop_path_prob == pytest.approx(0.2 * 1 / 2)     # epoch 2 of 2 (0-based 1)
    state = checkpoint.load(out / "checkpoint.pt")
    fresh = DartsNetwork(darts_genotype(), C=4, num_cells=3, num_classes=10, in_channels=1, auxiliary=True)
    trained_aux = {k[len("auxiliary."):]: v for k, v in state["model"].items()
                   if k.startswith("auxiliary.")}
    assert trained_aux and any(not torch.equal(v, fresh.auxiliary.state_dict()[k])
                               for k, v in trained_aux.items() if v.is_floating_point())
    assert trainer.recipe == "crop:1+cutout:4"


def test_proxyless_retrain_with_rmsprop_dropout_and_ema(tmp_path):
    out = tmp_path / "run"
    trainer, _ = fit(digits(out, "optim.name=rmsprop", "optim.lr=0.01", "retrain.dropout=0.1", "retrain.ema_decay=0.9",
                            "space.width_mult=0.25", "space.stem_stride=1", "space.last_channels=64",
                            "space.resolution=8", epochs=1), PROXYLESS_ARCH)
    assert isinstance(trainer.optimizer, torch.optim.RMSprop)
    assert isinstance(trainer.network.dropout, torch.nn.Dropout) and trainer.network.dropout.p == 0.1
    row = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert "ema_test_acc" in row and math.isfinite(row["train_loss"])


@pytest.mark.parametrize("name, arch, sets", [
    ("retrain_darts_cifar10.yaml", "darts", ["retrain.C=4", "retrain.num_cells=3", "data.augment=crop:1,cutout:4"]),
    ("retrain_proxyless_imagenet.yaml", "proxyless", ["space.width_mult=0.25", "space.stem_stride=1",
                                                       "space.last_channels=64", "run.precision=fp32"]),
    ("retrain_nb201.yaml", "nb201", ["space.C=4", "space.N=1"]),
    ("retrain_proxyless_digits_cpu.yaml", "proxyless", ["space.width_mult=0.25", "space.stem_stride=1",
                                                         "space.last_channels=64"]),
])
def test_each_retrain_config_runs_at_toy_size(tmp_path, name, arch, sets):
    cfg = digits(tmp_path / "run", *sets, "data.batch_size=32", config=CONFIGS / name, epochs=1)
    source = {"darts": darts_genotype(), "proxyless": PROXYLESS_ARCH, "nb201": NB201_ARCH}[arch]
    _, result = fit(cfg, source)
    assert result["exit_code"] == 0 and (tmp_path / "run" / "retrained.json").is_file()


def test_paper_recipes_hold_the_papers_values():
    darts = load_config(CONFIGS / "retrain_darts_cifar10.yaml")
    assert (darts.retrain.C, darts.retrain.num_cells, darts.optim.epochs, darts.data.batch_size) == (36, 20, 600, 96)
    assert (darts.retrain.auxiliary_weight, darts.retrain.drop_path, darts.optim.lr) == (0.4, 0.2, 0.025)
    assert darts.optim.weight_decay == 3e-4 and "cutout:16" in darts.data.augment
    mobile = load_config(CONFIGS / "retrain_proxyless_imagenet.yaml")
    assert mobile.optim.label_smoothing == 0.1 and mobile.optim.nesterov and mobile.optim.weight_decay == 4e-5
    nb201 = load_config(CONFIGS / "retrain_nb201.yaml")
    assert (nb201.optim.epochs, nb201.optim.lr, nb201.optim.weight_decay, nb201.data.batch_size) == (200, 0.1, 5e-4, 256)


@pytest.mark.skipif(not torch.distributed.is_available(), reason="needs torch.distributed")
def test_retrain_runs_under_torchrun_and_resumes_in_one_process(tmp_path):
    import subprocess
    import sys
    from pada_fast.architecture import save_arch
    from pada_fast.search.export import arch_spec
    net = NB201SuperNet(C=4, N=1, in_channels=1)
    save_arch(arch_spec(net, net.str_to_arch(NB201_ARCH)), tmp_path / "arch.json")
    out = tmp_path / "run"
    sets = [f"run.out_dir={out}", "data.dataset=digits", "data.train_subset=512", "data.batch_size=64",
            "optim.epochs=1", "run.threads=1", "run.progress=lines", "run.device=cpu"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", "--master-addr=127.0.0.1",
           f"--master-port={free_port()}", "-m", "pada_fast.cli", "retrain", str(tmp_path / "arch.json")]
    for s in sets:
        cmd += ["--set", s]
    proc = subprocess.run(cmd, cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "x 2 processes" in proc.stdout + proc.stderr
    assert json.loads((out / "retrained.json").read_text())["retrained"]["epochs"] == 1
    cfg = load_config(None, sets[:-1] + ["optim.epochs=2"])
    cfg.retrain.arch = str(tmp_path / "arch.json")
    RetrainTrainer(cfg, resume=True).fit()
    assert checkpoint.load(out / "checkpoint.pt")["epoch"] == 2
    assert Path(out / "retrained.json").is_file()
