"""Fuzz tests (hypothesis) of what reads untrusted input or meets extreme numbers: the config
loader, the ground-truth readers and the fused loss op.

Contracts: the config loader either loads or raises ConfigError; a ground-truth reader either
returns a sane table or raises ValueError naming the file (and the record/row where one is at
fault); the loss op never crashes, is finite and matches the float64 reference where the input
row is finite, and NaN where the row holds a NaN. Inputs the fuzzing once found to break a contract have their own tests at the
end of each part (each names the finding).
"""
import csv
import dataclasses
import io
import json
import math
import re
import string
import typing

import pytest
import torch
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pada_fast import ops
from pada_fast.config import Config, ConfigError, allowed_choices, apply_dict, load_config
from pada_fast.evaluate.ground_truth import load_ground_truth, read_nats_csv, read_table
from pada_fast.ops import reference

FUZZ = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                      HealthCheck.too_slow])

# -- config loader --------------------------------------------------------------------------------
FIELDS = {f.name: [g.name for g in dataclasses.fields(getattr(Config(), f.name))]
          for f in dataclasses.fields(Config)}
SECTIONS = list(FIELDS)

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                    st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
                    st.text(max_size=12), st.sampled_from(["auto", "pada", "spos", "nb201", "digits", "cpu",
                                                           "shared", "off", "torch", "yes", "on", "1e3"]))
values = st.recursive(
    scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                     st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=6)
keys = st.one_of(st.sampled_from([k for ks in FIELDS.values() for k in ks]), st.text(max_size=8))
sections = st.one_of(st.sampled_from(SECTIONS), st.text(max_size=8))
section_bodies = st.one_of(st.dictionaries(keys, values, max_size=4), values)
config_dicts = st.one_of(st.dictionaries(sections, section_bodies, max_size=4), values)


def assert_config_sane(cfg: Config) -> None:
    """A loaded config holds only values of the declared type, inside the declared bounds and
    choices."""
    for section in SECTIONS:
        obj = getattr(cfg, section)
        hints = typing.get_type_hints(type(obj))
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            allowed = allowed_choices(f)
            if allowed:
                assert value in allowed, (section, f.name, value)
            low, high = f.metadata.get("low"), f.metadata.get("high")
            if value is not None and low is not None:
                assert value >= low, (section, f.name, value)
            if value is not None and high is not None:
                assert value <= high, (section, f.name, value)
            if hints[f.name] is float:
                assert isinstance(value, float)


@FUZZ
@given(config_dicts)
@example({"optim": {"lr": 1}})
@example({"data": {"batch_size": True}})
@example({"run": {"progress": "bar", "unknown": 1}})
def test_config_dicts_load_or_raise_config_error(values):
    try:
        cfg = apply_dict(Config(), values)
    except ConfigError as exc:      # names the key or section and what is allowed
        assert re.search(r"config (key|section) '|must be a mapping of sections", str(exc)), str(exc)
        return
    assert_config_sane(cfg)


@FUZZ
@given(config_dicts)
def test_config_files_load_or_raise_config_error(tmp_path, values):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(values))
    try:
        cfg = load_config(path)
    except ConfigError:
        return
    assert_config_sane(cfg)
    # and what loads, saves and loads back the same
    cfg.save(tmp_path / "saved.yaml")
    assert load_config(tmp_path / "saved.yaml").to_dict() == cfg.to_dict()


@FUZZ
@given(st.text(alphabet=string.printable, max_size=60))
@example("a: [1, 2")
@example("!!python/object/apply:os.system ['true']")
@example("data:\n  batch_size: 1e3\n")
@example("- 1\n- 2\n")
def test_config_text_loads_or_raises_config_error(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    try:
        assert_config_sane(load_config(path))
    except ConfigError:
        pass


@FUZZ
@given(st.one_of(st.text(max_size=40),
                 st.builds(lambda s, k, v: f"{s}.{k}={v}", sections, keys,
                           st.text(alphabet=string.printable, max_size=12))))
@example("optim.lr=abc")
@example("optim.lr")
@example("=1")
@example("optim.lr=[1")
@example(".x=1")
def test_config_overrides_load_or_raise_config_error(text):
    try:
        assert_config_sane(load_config(None, [text]))
    except ConfigError:
        pass


def test_config_error_names_key_and_allowed_values():
    with pytest.raises(ConfigError, match=r"'method\.name' must be one of spos, pa, da, pada, fairnas; got 'sposs'"):
        load_config(None, ["method.name=sposs"])
    with pytest.raises(ConfigError, match=r"unknown config key 'run\.sed'.*seed"):
        load_config(None, ["run.sed=1"])
    with pytest.raises(ConfigError, match=r"'run\.checkpoint_every_steps' must lie in \[0, inf\]"):
        load_config(None, ["run.checkpoint_every_steps=-1"])
    with pytest.raises(ConfigError, match=r"'run\.nonfinite_max_total' must be int \| None"):
        load_config(None, ["run.nonfinite_max_total=1.5"])


CONFIG_FINDINGS = [
    ("optim.lr=.nan", "a NaN float passes every bound check (NaN < low is False)"),
    ("optim.lr=.inf", "an infinite learning rate is accepted"),
    ("optim.grad_clip=-1", "optim.grad_clip has no bound: a negative value flips the clipped gradient"),
    ("data.train_subset=-3", "data.train_subset has no lower bound"),
    ("run.threads=-2", "run.threads has no lower bound (torch.set_num_threads fails later)"),
    ("run.device=tpu", "run.device is not checked until the trainer starts"),
]


def finding(value, why, id=None):
    return pytest.param(value, id=id or value)


@pytest.mark.parametrize("override", [finding(o, why) for o, why in CONFIG_FINDINGS])
def test_config_findings_out_of_range_values_are_refused(override):
    with pytest.raises(ConfigError):
        load_config(None, [override])


def test_config_finding_non_utf8_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_bytes(b"\xff\xfe optim: 1")
    with pytest.raises(ConfigError, match="c.yaml"):
        load_config(path)


# -- ground-truth readers -------------------------------------------------------------------------
ARCH = "|nor_conv_3x3~0|+|skip_connect~0|avg_pool_3x3~1|+|none~0|nor_conv_1x1~1|skip_connect~2|"
arch_names = st.one_of(st.sampled_from([ARCH, "a", "b", "arch-1"]),
                       st.text(alphabet=string.ascii_letters + string.digits + "|~_+", min_size=1,
                               max_size=10))
accuracy_values = st.one_of(st.floats(0, 100, allow_nan=False), st.integers(0, 100),
                            st.sampled_from([float("nan"), float("inf"), "95.5", "x", "", None, True, [1]]))
index_values = st.one_of(st.integers(-2**40, 2**40), st.sampled_from([None, "", "7", "x", 1.5, [1]]))
records = st.lists(st.fixed_dictionaries(
    {}, optional={"arch": st.one_of(arch_names, st.sampled_from(["", "  "])),
                  "accuracy": accuracy_values, "index": index_values,
                  "extra": st.integers()}), max_size=8)
json_tables = st.one_of(records, st.dictionaries(arch_names, accuracy_values, max_size=8),
                        st.sampled_from([None, 3, "text", [1, 2], [[ARCH, 90.0]]]))


def assert_table_sane(gt) -> None:
    assert len(gt) >= 1
    assert len(set(gt.arch_strs)) == len(gt)
    assert all(math.isfinite(a) for a in gt.accuracies)
    assert len(set(gt.indices.tolist())) == len(gt)


def check_reader(path, read):
    try:
        gt = read(path)
    except ValueError as exc:
        # the file is always named, so a user with many tables knows which one is wrong
        assert path.name in str(exc), str(exc)
        return str(exc)
    assert_table_sane(gt)
    return None


@FUZZ
@given(json_tables)
@example([{"arch": ARCH, "accuracy": 90.0}, {"arch": ARCH, "accuracy": 91.0}])
@example({ARCH: float("nan")})
@example([{"arch": ARCH}])
def test_json_tables_load_or_raise_value_error(tmp_path, table):
    path = tmp_path / "table.json"
    path.write_text(json.dumps(table))
    message = check_reader(path, load_ground_truth)
    if message and isinstance(table, list):
        # a record at fault is named by its number (or its architecture)
        assert "record" in message or "index" in message or "holds no architectures" in message \
            or "appears twice" in message or "must hold" in message, message


def write_csv(path, header, rows):
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    path.write_text(buffer.getvalue())


cells = st.one_of(arch_names, st.sampled_from(["", "95.5", "nan", "inf", "-1", "1e3", "x", "7"]),
                  st.floats(0, 100, allow_nan=False).map(str), st.integers(-2**40, 2**40).map(str))
csv_headers = st.lists(st.sampled_from(["arch", "accuracy", "index", "other"]), min_size=1, max_size=4)


@FUZZ
@given(csv_headers, st.lists(st.lists(cells, min_size=0, max_size=5), max_size=8))
@example(["arch", "accuracy"], [[ARCH, "90"], [ARCH, "91"]])
@example(["arch", "accuracy", "index"], [["a", "90", "1"], ["b", "91", "1"]])
@example(["arch", "accuracy"], [["a"]])
def test_csv_tables_load_or_raise_value_error(tmp_path, header, rows):
    path = tmp_path / "table.csv"
    write_csv(path, header, rows)
    check_reader(path, load_ground_truth)


@FUZZ
@given(st.lists(st.tuples(arch_names, cells, cells, cells), max_size=8), st.booleans())
def test_nats_csv_loads_or_raises_value_error(tmp_path, rows, full_header):
    path = tmp_path / "nats.csv"
    header = ["CIFAR10TestAccuracy200Epochs", "CIFAR100TestAccuracy200Epochs",
              "ImageNetTestAccuracy200Epochs", "ArchitectureString"]
    if not full_header:
        header = header[1:]
    write_csv(path, header, [list(r[1:]) + [r[0]] for r in rows])
    message = check_reader(path, lambda p: read_nats_csv(p, "cifar10"))
    if message and full_header and rows:
        assert "row" in message or "twice" in message, message


def test_ground_truth_errors_name_the_row_or_architecture(tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps([{"arch": "a", "accuracy": 1.0}, {"arch": "a", "accuracy": 2.0}]))
    with pytest.raises(ValueError, match="architecture a appears twice"):
        read_table(path)
    path.write_text(json.dumps([{"arch": "a", "accuracy": 1.0}, {"arch": "b"}]))
    with pytest.raises(ValueError, match="record 1"):
        read_table(path)
    path.write_text(json.dumps({"a": 1.0, "b": "high"}))
    with pytest.raises(ValueError, match="entry 'b'"):
        read_table(path)


def test_ranking_an_architecture_the_table_lacks_names_it(tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"a": 1.0, "b": 2.0}))
    gt = read_table(path)
    with pytest.raises(KeyError, match="'c' is not in the ground truth"):
        gt.accuracies_of(["a", "c"])
    with pytest.raises(KeyError, match="'c' is not in the ground truth"):
        gt.select(["c"])


GT_FINDINGS = [
    ("huge-index.json", json.dumps([{"arch": "a", "accuracy": 1, "index": 2**70}]),
     "an index beyond int64 raises OverflowError, not ValueError"),
    ("inf-index.json", json.dumps([{"arch": "a", "accuracy": 1, "index": float("inf")}]),
     "an infinite index raises OverflowError, not ValueError"),
    ("huge-index.csv", "arch,accuracy,index\na,1,99999999999999999999999\n",
     "an index beyond int64 in a CSV raises OverflowError, not ValueError"),
    ("long-field.csv", "arch,accuracy\n" + "a" * 200_000 + ",1\n",
     "a CSV field over 131072 characters raises csv.Error, not ValueError"),
    ("not-utf8.json", b"\xff\xfe{}",
     "a file that is not UTF-8 raises UnicodeDecodeError without the file's name"),
    ("null-arch.json", json.dumps([{"arch": None, "accuracy": 1}]),
     "a null architecture is accepted as the string 'None'"),
    ("empty-key.json", json.dumps({"": 1.0}), "an empty architecture key is accepted in the mapping form"),
    ("fractional-index.json", json.dumps([{"arch": "a", "accuracy": 1, "index": 1.5}]),
     "a fractional index is truncated silently"),
]


@pytest.mark.parametrize("case", [finding((n, c), why, id=n) for n, c, why in GT_FINDINGS])
def test_ground_truth_findings_raise_value_error_naming_the_file(tmp_path, case):
    name, content = case
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(ValueError, match=name):
        load_ground_truth(path)


# -- the fused loss op ---------------------------------------------------------------------------
NAN, INF = float("nan"), float("inf")
# fp16/bf16 inputs are computed in float32, so their error floor is float32's
EPS = {torch.float64: 2.0 ** -52, torch.float32: 2.0 ** -23, torch.float16: 2.0 ** -23,
       torch.bfloat16: 2.0 ** -23}


@st.composite
def logit_rows(draw, classes):
    kind = draw(st.sampled_from(["random", "equal", "extreme", "nan", "inf"]))
    finite = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False)
    if kind == "random":
        return draw(st.lists(finite, min_size=classes, max_size=classes))
    if kind == "equal":
        return [draw(st.one_of(finite, st.sampled_from([1e4, -1e4, 0.0])))] * classes
    if kind == "extreme":
        return draw(st.lists(st.sampled_from([1e4, -1e4, 0.0, 1.0]), min_size=classes, max_size=classes))
    row = draw(st.lists(finite, min_size=classes, max_size=classes))
    bad = NAN if kind == "nan" else draw(st.sampled_from([INF, -INF]))
    for position in draw(st.lists(st.integers(0, classes - 1), min_size=1, max_size=classes)):
        row[position] = bad
    return row


@st.composite
def loss_inputs(draw):
    classes = draw(st.integers(1, 12))
    batch = draw(st.integers(1, 6))
    rows = [draw(logit_rows(classes)) for _ in range(batch)]
    target = draw(st.lists(st.integers(0, classes - 1), min_size=batch, max_size=batch))
    dtype = draw(st.sampled_from([torch.float32, torch.float64, torch.bfloat16, torch.float16]))
    smoothing = draw(st.one_of(st.sampled_from([0.0, 0.1, 1.0]), st.floats(0, 1)))
    return torch.tensor(rows, dtype=torch.float64).to(dtype), torch.tensor(target), smoothing


@settings(max_examples=300, deadline=None)
@given(loss_inputs())
def test_loss_op_with_extreme_logits(inputs):
    logits, target, smoothing = inputs
    logits = logits.clone().requires_grad_(True)
    loss, importance = ops.cross_entropy_with_importance(logits, target, smoothing)
    exact = logits.detach().double()        # the reference sees exactly the rounded inputs
    ref_loss, ref_imp, ref_lse = reference.cross_entropy_with_importance(exact, target, smoothing)
    loss.sum().backward()
    loss, importance = loss.detach(), importance.detach()
    ref_grad = reference.cross_entropy_with_importance_backward(torch.ones_like(ref_loss), exact, target,
                                                                ref_lse, smoothing)
    eps = EPS[logits.dtype]
    for i in range(logits.shape[0]):
        row = exact[i]
        scale = float(row[torch.isfinite(row)].abs().max()) + 1.0 if torch.isfinite(row).any() else 1.0
        tol = 16 * eps * scale * max(1, row.numel())
        if torch.isnan(row).any():
            assert torch.isnan(loss[i]) and torch.isnan(importance[i]), (row, loss[i], importance[i])
            continue
        if not torch.isfinite(row).all():
            # ±inf logits: the loss is not finite either (the guard skips such a step) ...
            assert not torch.isfinite(loss[i]), (row, loss[i])
            # ... and the importance matches the reference where that is finite
            if torch.isfinite(ref_imp[i]):
                assert abs(float(importance[i]) - float(ref_imp[i])) <= tol, (row, importance[i], ref_imp[i])
            continue
        assert torch.isfinite(loss[i]) and torch.isfinite(importance[i]), (row, loss[i], importance[i])
        assert abs(float(loss[i]) - float(ref_loss[i])) <= tol, (row, target[i], smoothing, loss[i],
                                                                  ref_loss[i])
        assert abs(float(importance[i]) - float(ref_imp[i])) <= tol, (row, importance[i], ref_imp[i])
        assert 0.0 <= float(importance[i]) <= math.sqrt(2) + tol
        assert torch.isfinite(logits.grad[i]).all()
        gtol = tol if logits.dtype in (torch.float32, torch.float64) else 1e-2 + tol
        assert (logits.grad[i].double() - ref_grad[i]).abs().max() <= gtol, (row, logits.grad[i], ref_grad[i])


def test_loss_op_targets_out_of_range_are_refused_on_the_cpu():
    with pytest.raises((IndexError, RuntimeError), match="class|target"):
        ops.cross_entropy_with_importance(torch.zeros(2, 3), torch.tensor([0, 3]))
    with pytest.raises((IndexError, RuntimeError), match="class|target"):
        ops.cross_entropy_with_importance(torch.zeros(2, 3), torch.tensor([-1, 0]))
