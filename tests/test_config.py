"""Config loading: defaults < YAML < --set, with errors that name the key."""
import pytest
import yaml

from pada_fast.config import Config, ConfigError, check_paths, config_from_dict, load_config


def test_precedence_and_types(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({"optim": {"lr": 0.1, "epochs": 7}, "method": {"name": "spos"}}))
    cfg = load_config(path, ["optim.lr=0.2", "data.train_subset=100", "rank.archs=all"])
    assert cfg.optim.lr == 0.2 and cfg.optim.epochs == 7 and cfg.method.name == "spos"
    assert cfg.data.train_subset == 100 and cfg.rank.archs == "all"
    assert isinstance(load_config(None, ["optim.lr=1"]).optim.lr, float)  # ints widen to floats


@pytest.mark.parametrize("override, message", [
    ("optim.lrr=0.1", "unknown config key 'optim.lrr'"),
    ("optimizer.lr=0.1", "unknown config section 'optimizer'"),
    ("optim.epochs=ten", "'optim.epochs' must be int"),
    ("optim.epochs=2.5", "'optim.epochs' must be int"),
    ("optim.epochs=0", r"'optim.epochs' must lie in \[1, inf\]"),
    ("optim.momentum=1.5", r"'optim.momentum' must lie in \[0.0, 1.0\]"),
    ("method.name=darts-pt", "'method.name' must be one of spos, pa, da, pada"),
    ("method.unbiased=maybe", "'method.unbiased' must be bool"),
    ("lr=0.1", "section.key=value"),
])
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: {lr: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("optim:\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match="optim.learning_rate"):
        load_config(bad)


def test_missing_data_paths_are_reported_before_work(tmp_path):
    cfg = load_config(None, ["data.dataset=cifar10_folder", f"data.root={tmp_path / 'nowhere'}"])
    with pytest.raises(ConfigError, match="data.root .* does not exist"):
        check_paths(cfg)
    cfg = load_config(None, [f"rank.ground_truth={tmp_path / 'gt.csv'}"])
    with pytest.raises(ConfigError, match="rank.ground_truth"):
        check_paths(cfg)


def test_saved_config_round_trips(tmp_path):
    cfg = load_config(None, ["optim.lr=0.3", "method.name=da", "space.C=4"])
    cfg.save(tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again == cfg
    assert config_from_dict(cfg.to_dict()) == cfg
    assert Config() == load_config(None)


def test_shipped_configs_load():
    from pathlib import Path
    for path in sorted((Path(__file__).parents[1] / "configs").glob("*.yaml")):
        load_config(path)


@pytest.mark.parametrize("text,value", [("1e-3", 1e-3), ("5E-4", 5e-4), ("2.5e+2", 250.0), (".5", 0.5),
                                        ("1_000.5", 1000.5), ("3", 3.0)])
def test_float_fields_accept_every_float_literal(tmp_path, text, value):
    assert load_config(None, [f"optim.lr={text}"]).optim.lr == value
    path = tmp_path / "c.yaml"
    path.write_text(f"optim:\n  lr: {text}\n  weight_decay: {text}\n")
    cfg = load_config(path)
    assert cfg.optim.lr == value and cfg.optim.weight_decay == value


def test_int_fields_stay_strict_and_bad_floats_are_named():
    with pytest.raises(ConfigError, match="'optim.epochs' must be int"):
        load_config(None, ["optim.epochs=1e3"])
    with pytest.raises(ConfigError, match="'optim.lr' must be float"):
        load_config(None, ["optim.lr=fast"])
    with pytest.raises(ConfigError, match="finite"):
        load_config(None, ["optim.lr=nan"])


def test_a_key_given_twice_in_a_yaml_file_is_an_error_naming_it(tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text("optim:\n  lr: 0.1\n  lr: 0.2\n")
    with pytest.raises(ConfigError, match="'lr' appears twice \\(lines 2 and 3\\)"):
        load_config(path)
    path.write_text("optim:\n  lr: 0.1\noptim:\n  epochs: 3\n")
    with pytest.raises(ConfigError, match="'optim' appears twice"):
        load_config(path)


def test_an_empty_yaml_file_says_it_uses_every_default(tmp_path, caplog):
    path = tmp_path / "empty.yaml"
    path.write_text("")
    with caplog.at_level("WARNING"):
        cfg = load_config(path)
    assert cfg.optim.lr == load_config(None).optim.lr
    assert "is empty: every setting is its default" in caplog.text
