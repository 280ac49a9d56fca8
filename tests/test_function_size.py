"""Small pieces: no function or method in the package is longer than 60 lines (docstring
included), so each one can be read whole."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "pada_fast"
LIMIT = 60


def long_functions(root: Path = PACKAGE) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > LIMIT:
                    found.append(f"{path.relative_to(root.parent)}:{node.lineno} {node.name} ({lines} lines)")
    return found


def test_no_function_is_longer_than_60_lines():
    assert long_functions() == []


def test_the_check_sees_a_long_function(tmp_path):
    (tmp_path / "m.py").write_text("def f():\n" + "    x = 1\n" * 61)
    assert long_functions(tmp_path) == [f"{tmp_path.name}/m.py:1 f (62 lines)"]
