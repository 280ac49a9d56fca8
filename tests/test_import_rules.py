"""The package's layers (docs/architecture.md), checked on every import statement, lazy ones included:
cli → search / evaluate / train / deploy → experiment → sampling / spaces / data / ops / config and the
small shared modules. Nothing in evaluate/, search/ or deploy/ imports train/; spaces and samplers never
import train/; nothing below the experiment layer imports a layer above it."""
import ast
from pathlib import Path


PACKAGE = Path(__file__).resolve().parents[1] / "pada_fast"

# top-level part of pada_fast -> layer (higher layers may import lower ones and their own)
LAYERS = {"cli": 4, "quickstart": 4, "__main__": 4,
          "train": 3, "evaluate": 3, "search": 3, "deploy": 3,
          "experiment": 2}
BASE = 1    # sampling, spaces, data, ops, config, checkpoint, rng, devices, files, reproduce, ...
FORBIDDEN = {("evaluate", "train"), ("search", "train"), ("deploy", "train"), ("spaces", "train"), ("sampling", "train")}


def part_of(module: str) -> str | None:
    """``pada_fast.<part>....`` -> ``part``; None for modules outside the package."""
    pieces = module.split(".")
    if pieces[0] != "pada_fast":
        return None
    return pieces[1] if len(pieces) > 1 else "__init__"


def imports_of(path: Path, root: Path):
    """(line, imported pada_fast module) for every import in ``path``, relative ones resolved."""
    package = list(path.relative_to(root.parent).with_suffix("").parts[:-1])
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
                if node.module is None:        # from . import x: each name may be a module
                    for alias in node.names:
                        yield node.lineno, f"{target}.{alias.name}"
                    continue
            else:
                target = node.module
                if target == "pada_fast":
                    for alias in node.names:
                        yield node.lineno, f"pada_fast.{alias.name}"
                    continue
            yield node.lineno, target


def violations(root: Path = PACKAGE) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        here = part_of(".".join(path.relative_to(root.parent).with_suffix("").parts))
        for line, module in imports_of(path, root):
            there = part_of(module)
            if there is None or there == here or there == "__init__" or here == "__init__":
                continue
            where = f"{path.relative_to(root.parent)}:{line} imports {module}"
            if (here, there) in FORBIDDEN:
                found.append(f"{where} ({here} must not import {there})")
            elif LAYERS.get(there, BASE) > LAYERS.get(here, BASE):
                found.append(f"{where} (layer {LAYERS.get(here, BASE)} imports layer {LAYERS.get(there, BASE)})")
    return found


def test_the_package_keeps_its_layers():
    assert violations() == []


def test_the_check_sees_a_forbidden_arrow(tmp_path):
    fake = tmp_path / "pada_fast"
    for folder, text in {"evaluate": "from pada_fast.train.trainer import Trainer\n",
                         "sampling": "def f():\n    from ..train import faults\n",
                         "spaces": "from pada_fast.experiment import build_model\n"}.items():
        (fake / folder).mkdir(parents=True)
        (fake / folder / "__init__.py").write_text("")
        (fake / folder / "bad.py").write_text(text)
    found = violations(fake)
    assert len(found) == 3, found
    assert any("evaluate must not import train" in f for f in found)
    assert any("sampling must not import train" in f and "imports pada_fast.train " in f for f in found)
    assert any("layer 1 imports layer 2" in f for f in found)
