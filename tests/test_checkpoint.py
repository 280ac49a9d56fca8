"""Checkpoint files: atomic writes, checksums, rotation, walking back past damaged files, and
refusing checkpoints of another version, search space or config."""
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from pada_fast.config import load_config
from pada_fast import checkpoint
from pada_fast.rng import capture_rng_state, restore_rng_state
from pada_fast.checkpoint import (
    CheckpointManager,
    CorruptCheckpoint,
    IncompatibleCheckpoint,
    check_compatible,
    payload_digest,
)


def make_state(epoch=1, step=0, seed=0, cfg=None):
    g = torch.Generator().manual_seed(seed)
    cfg = cfg or load_config(None, ["space.C=4", "space.N=1"])
    return {
        "config": cfg.to_dict(), "space": cfg.space.name, "epoch": epoch, "step": step,
        "model": {"w": torch.randn(64, 8, generator=g), "b": torch.arange(8, dtype=torch.float64),
                  "mask": torch.tensor([True, False]), "half": torch.randn(5, generator=g).bfloat16()},
        "optimizer": {"state": {0: {"momentum_buffer": torch.randn(3, generator=g)}},
                      "param_groups": [{"lr": 0.05, "params": [0]}]},
        "rng": {"torch": torch.get_rng_state(), "numpy": np.random.RandomState(seed).get_state(),
                "python": random.Random(seed).getstate()},
        "note": "épsilon", "scalar": torch.tensor(3.5),
    }


def assert_same_state(a, b):
    assert payload_digest(a) == payload_digest(b)
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key])


def logs():
    messages = []
    return messages, messages.append


# -- single files -------------------------------------------------------------------------------
def test_round_trip_keeps_everything_and_torch_load_still_reads_it(tmp_path):
    state = make_state()
    path = tmp_path / "ck.pt"
    checkpoint.save_atomic(state, path)
    loaded = checkpoint.load(path)
    assert loaded["format_version"] == checkpoint.FORMAT_VERSION
    assert loaded["checksum"]["sha256"] == payload_digest(loaded)
    assert_same_state({"format_version": checkpoint.FORMAT_VERSION, **state}, loaded)
    plain = torch.load(path, weights_only=False)            # what tests and users do directly
    assert torch.equal(plain["model"]["w"], state["model"]["w"])
    assert list(tmp_path.iterdir()) == [path]


def test_digest_is_sensitive_to_values_types_and_structure():
    base = payload_digest(make_state())
    assert payload_digest(make_state()) == base
    for change in (lambda s: s["model"]["w"].__setitem__((0, 0), s["model"]["w"][0, 0] + 1e-7),
                   lambda s: s.__setitem__("epoch", 1.0),
                   lambda s: s.__setitem__("epoch", True),
                   lambda s: s["model"].__setitem__("b", s["model"]["b"].float()),
                   lambda s: s["model"].__setitem__("w", s["model"]["w"].reshape(8, 64)),
                   lambda s: s.__setitem__("note", "epsilon")):
        s = make_state()
        change(s)
        assert payload_digest(s) != base


def test_interrupted_write_leaves_the_old_file_and_no_partial_one(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    checkpoint.save_atomic(make_state(epoch=1), path)
    before = path.read_bytes()

    def dies_half_way(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(checkpoint.torch, "save", dies_half_way)
    with pytest.raises(OSError, match="simulated"):
        checkpoint.save_atomic(make_state(epoch=2), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]
    monkeypatch.undo()
    assert checkpoint.load(path)["epoch"] == 1


def test_truncated_files_are_detected(tmp_path):
    path = tmp_path / "ck.pt"
    checkpoint.save_atomic(make_state(), path)
    data = path.read_bytes()
    for size in (0, 10, len(data) // 3, len(data) // 2, len(data) - 100, len(data) - 1):
        path.write_bytes(data[:size])
        with pytest.raises(CorruptCheckpoint, match="truncated|checksum"):
            checkpoint.load(path)


def test_every_bit_flip_is_detected_or_harmless(tmp_path):
    """A flipped bit either makes the file fail (unreadable or wrong checksum) or lands where it
    changes nothing (zip padding, unused header fields): the payload is never silently wrong."""
    path = tmp_path / "ck.pt"
    state = make_state()
    checkpoint.save_atomic(state, path)
    data = bytearray(path.read_bytes())
    expected = payload_digest({"format_version": checkpoint.FORMAT_VERSION, **state})
    rng = random.Random(0)
    detected = harmless = 0
    for _ in range(150):
        pos, bit = rng.randrange(len(data)), rng.randrange(8)
        flipped = bytearray(data)
        flipped[pos] ^= 1 << bit
        path.write_bytes(bytes(flipped))
        try:
            loaded = checkpoint.load(path)
        except CorruptCheckpoint:
            detected += 1
            continue
        assert payload_digest(loaded) == expected, f"silent corruption at byte {pos} bit {bit}"
        harmless += 1
    assert detected > 100, (detected, harmless)
    # A flip inside a tensor's bytes is always caught by the checksum.
    w = state["model"]["w"].numpy().tobytes()
    start = bytes(data).find(w)
    assert start > 0
    flipped = bytearray(data)
    flipped[start + 123] ^= 0x10
    path.write_bytes(bytes(flipped))
    with pytest.raises(CorruptCheckpoint):
        checkpoint.load(path)


def test_other_format_versions_are_refused_by_name(tmp_path):
    path = tmp_path / "ck.pt"
    torch.save({"format_version": 99, "epoch": 1}, path)
    with pytest.raises(IncompatibleCheckpoint, match="format version 99.*reads version"):
        checkpoint.load(path)
    torch.save([1, 2, 3], path)
    with pytest.raises(CorruptCheckpoint, match="not a pada_fast checkpoint"):
        checkpoint.load(path)
    with pytest.raises(FileNotFoundError):
        checkpoint.load(tmp_path / "missing.pt")


def test_version_1_files_without_checksum_still_load(tmp_path):
    path = tmp_path / "checkpoint.pt"
    torch.save({"format_version": 1, **make_state()}, path)
    assert checkpoint.load(path)["epoch"] == 1


# -- rotation -----------------------------------------------------------------------------------
def test_manager_names_prunes_and_publishes_the_latest(tmp_path):
    manager = CheckpointManager(tmp_path, keep_last=3)
    positions = [(0, 5), (0, 10), (1, 0), (1, 5), (1, 10), (2, 0)]
    for epoch, step in positions:
        manager.save(make_state(epoch=epoch, step=step, seed=epoch * 100 + step))
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["checkpoint-e0001-s000005.pt", "checkpoint-e0001-s000010.pt",
                     "checkpoint-e0002-s000000.pt", "checkpoint.pt"]
    assert [(e, s) for e, s, _ in manager.checkpoints()] == [(2, 0), (1, 10), (1, 5)]
    latest = checkpoint.load(tmp_path / "checkpoint.pt")
    assert (latest["epoch"], latest["step"]) == (2, 0)
    path, state = manager.latest_valid()
    assert path.name == "checkpoint-e0002-s000000.pt" and state["epoch"] == 2
    assert_same_state(state, latest)


def test_keep_last_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="keep_last"):
        CheckpointManager(tmp_path, keep_last=0)


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty"])
def test_latest_valid_walks_back_past_a_damaged_newest(tmp_path, damage):
    messages, log = logs()
    manager = CheckpointManager(tmp_path, keep_last=3, log=log)
    for step in (4, 8, 12):
        manager.save(make_state(epoch=0, step=step, seed=step))
    newest = tmp_path / "checkpoint-e0000-s000012.pt"
    data = bytearray(newest.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip":
        start = bytes(data).find(make_state(seed=12)["model"]["w"].numpy().tobytes())
        data[start + 7] ^= 0x01
    else:
        data = b""
    newest.write_bytes(bytes(data))                 # checkpoint.pt is the same file: damaged too
    path, state = manager.latest_valid()
    assert path.name == "checkpoint-e0000-s000008.pt" and state["step"] == 8
    assert_same_state(state, {"format_version": checkpoint.FORMAT_VERSION, "checksum": None,
                              **make_state(epoch=0, step=8, seed=8)})
    assert any("skipping checkpoint-e0000-s000012.pt" in m and ("truncated" in m or "checksum" in m)
               for m in messages), messages
    assert any("using checkpoint-e0000-s000008.pt" in m for m in messages), messages


def test_no_usable_checkpoint_lists_every_failure(tmp_path):
    messages, log = logs()
    manager = CheckpointManager(tmp_path, keep_last=2, log=log)
    assert manager.latest_valid() is None                  # empty folder: nothing to resume
    for step in (1, 2):
        manager.save(make_state(epoch=0, step=step))
    for p in tmp_path.glob("checkpoint-*.pt"):
        p.write_bytes(p.read_bytes()[:100])
    with pytest.raises(CorruptCheckpoint, match="no usable checkpoint.*s000002.*s000001"):
        manager.latest_valid()


def test_a_foreign_version_is_refused_not_walked_past(tmp_path):
    manager = CheckpointManager(tmp_path, log=lambda m: None)
    manager.save(make_state(epoch=0, step=1))
    torch.save({"format_version": 7}, tmp_path / "checkpoint-e0000-s000002.pt")
    with pytest.raises(IncompatibleCheckpoint, match="format version 7"):
        manager.latest_valid()


def test_copy_when_links_are_unavailable(tmp_path, monkeypatch):
    """Without hard links checkpoint.pt is a copy; if the newest numbered file is damaged later,
    the intact copy of the same position is used."""
    def no_links(*args):
        raise OSError("links not supported (simulated)")
    monkeypatch.setattr(checkpoint.os, "link", no_links)
    messages, log = logs()
    manager = CheckpointManager(tmp_path, keep_last=2, log=log)
    manager.save(make_state(epoch=0, step=3, seed=3))
    manager.save(make_state(epoch=1, step=0, seed=10))
    assert not os.path.samefile(tmp_path / "checkpoint.pt", tmp_path / "checkpoint-e0001-s000000.pt")
    newest = tmp_path / "checkpoint-e0001-s000000.pt"
    newest.write_bytes(newest.read_bytes()[:-50])
    path, state = manager.latest_valid()
    assert path.name == "checkpoint.pt" and (state["epoch"], state["step"]) == (1, 0)


def test_legacy_run_with_only_checkpoint_pt(tmp_path):
    checkpoint.save_atomic(make_state(epoch=3), tmp_path / "checkpoint.pt")
    path, state = CheckpointManager(tmp_path).latest_valid()
    assert path.name == "checkpoint.pt" and state["epoch"] == 3


def test_stale_temporaries_from_a_killed_write_are_removed(tmp_path):
    messages, log = logs()
    (tmp_path / "checkpoint-e0000-s000004.pt.abc123.tmp").write_bytes(b"partial")
    (tmp_path / "checkpoint.pt.deadbeef.tmp").write_bytes(b"partial")
    (tmp_path / "metrics.jsonl").write_text("{}\n")
    manager = CheckpointManager(tmp_path, log=log)
    removed = manager.remove_stale_temporaries()
    assert len(removed) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]
    assert "2 partial checkpoint file(s)" in messages[0]


# -- compatibility ------------------------------------------------------------------------------
def cfg_with(*overrides):
    return load_config(None, ["space.C=4", "space.N=1", *overrides])


def test_compatible_config_passes_and_ignored_keys_may_differ():
    state = {"format_version": 2, **make_state(cfg=cfg_with())}
    check_compatible(state, cfg_with())
    check_compatible(state, cfg_with("data.root=/elsewhere", "data.num_workers=4", "run.out_dir=/x",
                                     "run.device=cpu", "run.log_interval=7", "data.eval_batch_size=9",
                                     "run.checkpoint_every_steps=5"))


@pytest.mark.parametrize("override, named", [
    ("method.name=spos", "method.name='pada' (now 'spos')"),
    ("method.pa_granularity=per_edge", "method.pa_granularity='auto' (now 'per_edge')"),
    ("space.C=8", "space.C=4 (now 8)"),
    ("data.batch_size=32", "data.batch_size=64 (now 32)"),
    ("data.dataset=fashion_mnist", "data.dataset='digits' (now 'fashion_mnist')"),
    ("optim.lr=0.1", "optim.lr=0.05 (now 0.1)"),
    ("optim.epochs=7", "optim.epochs=250 (now 7)"),
    ("run.seed=3", "run.seed=0 (now 3)"),
])
def test_a_different_config_is_refused_naming_the_key(override, named):
    state = {"format_version": 2, **make_state(cfg=cfg_with())}
    with pytest.raises(IncompatibleCheckpoint) as info:
        check_compatible(state, cfg_with(override), path="run/checkpoint.pt")
    assert named in str(info.value) and "run/checkpoint.pt" in str(info.value)


def test_several_differences_are_all_named():
    state = {"format_version": 2, **make_state(cfg=cfg_with())}
    expected = r"space\.N=1 \(now 2\).*optim\.momentum=0\.9 \(now 0\.5\)"
    with pytest.raises(IncompatibleCheckpoint, match=expected):
        check_compatible(state, cfg_with("space.N=2", "optim.momentum=0.5"))


def test_another_search_space_or_version_is_refused():
    state = {"format_version": 2, **make_state(cfg=cfg_with())}
    with pytest.raises(IncompatibleCheckpoint, match="search space 'nb201'.*trains 'darts'"):
        check_compatible(state, cfg_with(), space_name="darts")
    with pytest.raises(IncompatibleCheckpoint, match="format version 5"):
        check_compatible({**state, "format_version": 5}, cfg_with())


def test_keys_missing_from_an_old_checkpoint_take_defaults_and_unknown_keys_are_named():
    state = {"format_version": 2, **make_state(cfg=cfg_with())}
    del state["config"]["optim"]["label_smoothing"]            # written before the key existed
    check_compatible(state, cfg_with())
    state["config"]["method"]["future_knob"] = 1
    with pytest.raises(IncompatibleCheckpoint, match="method.future_knob .*unknown to this pada_fast"):
        check_compatible(state, cfg_with())


def test_ignore_list_can_allow_extending_training():
    state = {"format_version": 2, **make_state(cfg=cfg_with())}
    check_compatible(state, cfg_with("optim.epochs=300"),
                     ignore=checkpoint.IGNORED_KEYS | {"optim.epochs"})


def test_checkpoint_path_objects_and_strings(tmp_path):
    checkpoint.save_atomic(make_state(), str(tmp_path / "a" / "b.pt"))
    assert checkpoint.load(Path(tmp_path / "a" / "b.pt"))["epoch"] == 1


def test_module_state_dict_metadata_survives_and_is_checksummed(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3))
    path = tmp_path / "ck.pt"
    checkpoint.save_atomic({"model": model.state_dict()}, path)
    loaded = checkpoint.load(path)["model"]
    assert loaded._metadata == model.state_dict()._metadata
    torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3)).load_state_dict(loaded)
    state = {"model": model.state_dict()}
    before = payload_digest(state)
    state["model"]._metadata["1"]["version"] = 99
    assert payload_digest(state) != before


def test_rng_state_round_trip():
    rng = capture_rng_state()
    a = (torch.rand(3), np.random.rand(3), random.random())
    restore_rng_state(rng)
    b = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(a[0], b[0]) and (a[1] == b[1]).all() and a[2] == b[2]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")
def test_device_tensors_are_stored_on_the_cpu(tmp_path):
    checkpoint.save_atomic({"w": torch.ones(3, device="cuda")}, tmp_path / "ck.pt")
    assert torch.load(tmp_path / "ck.pt", weights_only=False)["w"].device.type == "cpu"


def test_a_foreign_file_copied_over_checkpoint_pt_is_named_and_kept(tmp_path):
    logs = []
    manager = CheckpointManager(tmp_path, keep_last=2, log=logs.append)
    for step in (5, 10):
        manager.save(make_state(epoch=1, step=step, seed=step))
    (tmp_path / "checkpoint.pt").unlink()
    foreign = tmp_path / "elsewhere.pt"
    checkpoint.save_atomic(make_state(epoch=0, step=3, seed=99), foreign)
    (tmp_path / "checkpoint.pt").write_bytes(foreign.read_bytes())     # another run's file copied in
    original = foreign.read_bytes()
    path, state = manager.latest_valid()
    assert path.name == "checkpoint-e0001-s000010.pt"
    assert any("checkpoint.pt is not used" in line and "epoch 0 step 3" in line for line in logs), logs
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("checkpoint.pt.not-used-")]
    assert len(kept) == 1 and kept[0].read_bytes() == original
    manager.save(make_state(epoch=1, step=15, seed=1))                  # the next save loses nothing
    assert kept[0].read_bytes() == original


def test_a_copy_of_the_newest_file_is_not_reported(tmp_path):
    logs = []
    manager = CheckpointManager(tmp_path, keep_last=2, log=logs.append)
    manager.save(make_state(epoch=1, step=5, seed=5))
    newest = tmp_path / "checkpoint-e0001-s000005.pt"
    (tmp_path / "checkpoint.pt").unlink()
    (tmp_path / "checkpoint.pt").write_bytes(newest.read_bytes())        # a copy, as without hard links
    assert manager.latest_valid()[0] in (newest, tmp_path / "checkpoint.pt")
    assert logs == [] and (tmp_path / "checkpoint.pt").exists()
