"""The package's floors (docs/architecture.md), checked on every import statement, lazy ones included.

``ORDER`` lists every top-level part of the package from the bottom floor up: a part may import
itself and the parts before it, never a part after it. So the middle floor is ordered too
(evaluate < search < deploy < train: search judges with evaluate's tools, deploy builds what
search found, train may use all three; none of them imports the trainer), and a circle between
two parts is an arrow against the order. A circle between two modules inside one part fails
``test_no_module_imports_itself_through_others``."""
import ast
import collections
from pathlib import Path


PACKAGE = Path(__file__).resolve().parents[1] / "pada_fast"

ORDER = [
    # the foundation: no part here imports a component
    "__version__", "log", "errors", "files", "registry", "config", "reproduce", "rng", "devices", "checkpoint",
    # components
    "_C", "ops", "spaces", "architecture", "sampling", "data",
    # the experiment layer
    "experiment",
    # the middle floor, ordered
    "evaluate", "search", "deploy", "train",
    # commands
    "quickstart", "cli", "__main__",
]
RANK = {part: i for i, part in enumerate(ORDER)}


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
            unknown = [p for p in (here, there) if p not in RANK]
            if unknown:
                found.append(f"{where} ({', '.join(unknown)} not in ORDER: place it on its floor)")
            elif RANK[there] > RANK[here]:
                found.append(f"{where} ({here} must not import {there}, which comes after it)")
    return found


def module_cycles(root: Path = PACKAGE) -> list[list[str]]:
    """Groups of modules that import each other in a circle (Tarjan's strongly connected
    components over every import, lazy ones included)."""
    modules = {}
    for path in root.rglob("*.py"):
        name = ".".join(path.relative_to(root.parent).with_suffix("").parts)
        modules[name.removesuffix(".__init__")] = path
    graph = collections.defaultdict(set)
    for name, path in modules.items():
        for _, target in imports_of(path, root):
            while target not in modules and "." in target:
                target = target.rsplit(".", 1)[0]
            package_of = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
            # a package importing its own submodules (its __init__) is how packages work
            if target in modules and target != name and not (path.name == "__init__.py"
                                                                and target.startswith(package_of + ".")):
                graph[name].add(target)
    index, low, stack, on, groups = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))
    for v in sorted(modules):
        if v not in index:
            visit(v)
    return groups


def test_every_part_has_its_floor():
    parts = {part_of(".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts)) for p in PACKAGE.rglob("*.py")}
    assert parts - set(RANK) - {"__init__"} == set()


def test_no_module_imports_itself_through_others():
    assert module_cycles() == []


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
    assert any("spaces must not import experiment" in f for f in found)


def test_the_check_sees_a_circle(tmp_path):
    fake = tmp_path / "pada_fast"
    (fake / "search").mkdir(parents=True)
    (fake / "search" / "__init__.py").write_text("")
    (fake / "search" / "a.py").write_text("from .b import x\n")
    (fake / "search" / "b.py").write_text("def f():\n    from pada_fast.search.a import y\n")
    (fake / "evaluate").mkdir()
    (fake / "evaluate" / "__init__.py").write_text("")
    (fake / "evaluate" / "c.py").write_text("def g():\n    from pada_fast.search import a\n")
    assert module_cycles(fake) == [["pada_fast.search.a", "pada_fast.search.b"]]
    assert any("evaluate must not import search" in f for f in violations(fake))
