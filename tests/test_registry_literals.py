"""Registries hold everything: a registered name (a search space, a method, a dataset, an
optimiser) appears as a string literal only in the package that registers it, so no command
branches on it. Excepted: ``config.py`` (the default of each choice) and ``quickstart.py`` (the
quickstart's experiment, a config in code); configs and docs are not code. ``cifar10`` and
``cifar100`` also name NAS-Bench-201's ground-truth columns, which are not datasets."""
import ast
from pathlib import Path

from pada_fast.evaluate.ground_truth import NATS_COLUMNS
from pada_fast.registry import registered

PACKAGE = Path(__file__).resolve().parents[1] / "pada_fast"
OWNERS = {"spaces": "spaces/", "methods": "sampling/", "datasets": "data/datasets.py", "optimizers": "experiment.py"}
EXCEPTED = {"config.py", "quickstart.py"}


def literal_uses(root: Path = PACKAGE) -> list[str]:
    names = {table: set(registered(table)) for table in OWNERS}
    names["datasets"] -= set(NATS_COLUMNS)
    found = []
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root).as_posix()
        if relative in EXCEPTED:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
                continue
            for table, owner in OWNERS.items():
                if node.value in names[table] and not relative.startswith(owner):
                    found.append(f"pada_fast/{relative}:{node.lineno} names the {table} entry {node.value!r}")
    return found


def test_registered_names_appear_only_where_they_are_registered():
    assert literal_uses() == []


def test_the_check_sees_a_branch_on_a_space(tmp_path):
    (tmp_path / "search").mkdir()
    (tmp_path / "search" / "bad.py").write_text('def f(name):\n    return name == "darts"\n')
    (tmp_path / "spaces").mkdir()
    (tmp_path / "spaces" / "fine.py").write_text('NAME = "darts"\n')
    assert literal_uses(tmp_path) == ["pada_fast/search/bad.py:2 names the spaces entry 'darts'"]
