"""``pada-fast export``: the stand-alone files reproduce the supernet's sub-model with inherited
weights (and a retrained network's outputs); ONNX is checked with onnxruntime where installed."""
import json

import numpy as np
import pytest
import torch

from pada_fast import checkpoint
from pada_fast.cli import main
from pada_fast.config import load_config
from pada_fast.deploy import export_network, load_state_dict_export, network_for_export
from pada_fast.deploy.formats import ExportMismatch
from pada_fast.experiment import load_run
from pada_fast.architecture import save_arch
from pada_fast.search.export import arch_spec
from pada_fast.spaces import NB201SuperNet
from pada_fast.train.retrain import RetrainTrainer
from pada_fast.train.trainer import Trainer

SPACES = {
    "nb201": ["space.name=nb201", "space.C=4", "space.N=1", "space.reduction_bn=affine"],
    "proxyless": ["space.name=proxyless", "space.width_mult=0.25", "space.stem_stride=1",
                  "space.last_channels=64", "space.resolution=8"],
    "darts": ["space.name=darts", "space.C=4", "space.num_cells=3", "space.resolution=8"],
}


def _train_supernet(out, space):
    cfg = load_config(None, SPACES[space] + [
        f"run.out_dir={out}", "data.dataset=digits", "data.train_subset=256", "data.batch_size=64",
        "optim.epochs=1", "run.threads=1", "run.progress=lines", "method.name=spos"])
    Trainer(cfg).fit()
    return out / "checkpoint.pt"


@pytest.fixture(scope="module")
def supernets(tmp_path_factory):
    root = tmp_path_factory.mktemp("supernets")
    return {space: _train_supernet(root / space, space) for space in SPACES}


def _arch_file(tmp_path, checkpoint_path, seed=3):
    run = load_run(checkpoint_path)
    arch = run.model.random_arch(np.random.default_rng(seed))
    spec = arch_spec(run.model, arch)
    save_arch(spec, tmp_path / "best.json")
    return tmp_path / "best.json", run, arch


def _onnx_outputs(path, x):
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {"images": x.numpy()})[0])


@pytest.mark.parametrize("space", list(SPACES))
@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "state_dict"])
def test_exported_file_matches_the_supernet_sub_model(tmp_path, supernets, space, fmt):
    if fmt == "onnx":
        pytest.importorskip("onnx")
    arch_path, run, arch = _arch_file(tmp_path, supernets[space])
    out = tmp_path / f"net.{fmt}"
    rc = main(["export", str(arch_path), "--format", fmt, "--out", str(out), "--checkpoint",
               str(supernets[space]), "--recalibrate-batches", "2"])
    assert rc == 0
    record = json.loads((tmp_path / f"net.{fmt}.json").read_text())
    assert record["arch"] == run.model.arch_to_str(arch) and "inherited" in record["weights"]
    # independently of the command's own check: the file against the supernet on that path
    supernet = run.model.eval()
    if "recalibrated" in record["weights"]:
        from pada_fast.data.datasets import build_split
        from pada_fast.search.supernet_search import shuffled_batches
        from pada_fast.spaces.batchnorm import recalibrate_bn
        d = run.cfg.data
        recalibrate_bn(supernet, arch, shuffled_batches(build_split(d, "train", subset=d.train_subset),
                                                        d.batch_size, 2, "cpu", 0))
    batch = 2 if record.get("dynamic_batch") is False else 5
    x = torch.randn(batch, *record["input_shape"][1:])
    with torch.no_grad():
        expected = supernet(x, arch)
        if fmt == "onnx":
            got = _onnx_outputs(out, x)
        elif fmt == "torchscript":
            got = torch.jit.load(str(out))(x)
        else:
            got = load_state_dict_export(out)(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    if fmt == "onnx":
        assert record["dynamic_batch"] == (space == "proxyless")   # batch-statistics BN fixes the batch
        assert record["checked_with"] == "onnxruntime"


def test_retrained_weights_export_with_the_run_checkpoint(tmp_path):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "retrain"
    cfg = load_config(None, [f"run.out_dir={out}", "data.dataset=digits", "data.train_subset=256",
                             "data.batch_size=64", "optim.epochs=1", "run.threads=1", "run.progress=lines",
                             "space.C=4", "space.N=1"])
    cfg.retrain.arch = "|nor_conv_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|avg_pool_3x3~0|none~1|nor_conv_3x3~2|"
    RetrainTrainer(cfg).fit()
    rc = main(["export", str(out / "retrained.json"), "--weights", str(out / "checkpoint.pt"),
               "--format", "onnx", "--out", str(tmp_path / "net.onnx")])
    assert rc == 0
    state = checkpoint.load(out / "checkpoint.pt")
    from pada_fast.architecture import network_from_spec
    net = network_from_spec(state["retrain"]["spec"]).eval()
    net.load_state_dict(state["model"])
    x = torch.randn(7, 1, 8, 8)
    torch.testing.assert_close(_onnx_outputs(tmp_path / "net.onnx", x), net(x).detach(), rtol=1e-4, atol=1e-4)


def test_a_file_that_does_not_reproduce_the_reference_fails(tmp_path, supernets):
    arch_path, run, arch = _arch_file(tmp_path, supernets["nb201"])
    from pada_fast.architecture import load_arch
    source = network_for_export(load_arch(arch_path), checkpoint=str(supernets["nb201"]))
    reference = source.reference
    source.reference = lambda x: reference(x) + 1.0
    with pytest.raises(ExportMismatch, match="differ"):
        export_network(source, tmp_path / "net.pt", "state_dict")
    assert json.loads((tmp_path / "net.pt.json").read_text())["diff_network_vs_reference"] == pytest.approx(1.0)


def test_the_wrong_supernet_or_weights_are_refused(tmp_path, supernets, capsys):
    arch_path, _, _ = _arch_file(tmp_path, supernets["nb201"])
    assert main(["export", str(arch_path), "--checkpoint", str(supernets["proxyless"]), "--format",
                 "state_dict"]) == 1
    assert "proxyless" in capsys.readouterr().err
    assert main(["export", str(arch_path), "--weights", str(supernets["nb201"]), "--format", "state_dict"]) == 1
    assert "not a `pada-fast retrain` checkpoint" in capsys.readouterr().err


def test_nb201_extract_equals_the_supernet_path():
    for reduction_bn in ("batch", "affine"):
        net = NB201SuperNet(C=4, N=2, reduction_bn=reduction_bn).eval()
        arch = (3, 2, 1, 0, 4, 3)
        x = torch.randn(4, 3, 16, 16)
        torch.testing.assert_close(net.extract(arch)(x), net(x, arch), rtol=0, atol=0)
