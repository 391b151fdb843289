"""SegQCLib's packages follow the data flow: no import cycle between modules or packages, no Slicer/Qt/VTK."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

LIB = Path(__file__).resolve().parents[1] / "SegQCLib"
GUI_MODULES = {"slicer", "qt", "ctk", "vtk", "mrml"}
# Not dependencies of SegQCLib: plots (training, screenshots) only; scikit-image was never needed.
NOT_DEPENDENCIES = {"matplotlib", "skimage"}


def module_name(path: Path) -> str:
    parts = path.relative_to(LIB.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(LIB.rglob("*.py"))}


def imported_modules(path: Path, known: set[str]) -> tuple[set[str], set[str]]:
    """(SegQCLib modules, other top-level modules) that ``path`` imports anywhere, function bodies included."""
    own, other = set(), set()
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            stem = ".".join(base + ([node.module] if node.module else []))
            targets = [f"{stem}.{alias.name}" for alias in node.names] + [stem]
        else:
            continue
        for target in targets:
            if target.split(".")[0] != "SegQCLib":
                other.add(target.split(".")[0])
                continue
            while target and target not in known:  # ``from .x import name``: the module is x
                target = target.rpartition(".")[0]
            if target:
                own.add(target)
    return own, other


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One cycle of ``graph`` as a list of nodes (first repeated at the end), or [] when it has none."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for successor in sorted(graph.get(node, ())):
            if state.get(successor) == 1:
                return path[path.index(successor):] + [successor]
            if successor not in state:
                found = visit(successor)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return []


@pytest.fixture(scope="module")
def import_graph() -> dict[str, tuple[set[str], set[str]]]:
    known = set(modules())
    return {name: imported_modules(path, known) for name, path in modules().items()}


def test_no_module_imports_itself_back_even_lazily(import_graph):
    graph = {name: {m for m in own if m != name and not name.startswith(m + ".") and m != "SegQCLib"}
             for name, (own, _other) in import_graph.items()}
    assert find_cycle(graph) == []


def unit(module: str) -> str:
    """The layer a module belongs to: its subpackage (SegQCLib.io, ...) or, for a top-level module, itself."""
    parts = module.split(".")
    return ".".join(parts[:2])


def test_packages_depend_on_each_other_one_way(import_graph):
    graph: dict[str, set[str]] = {}
    for name, (own, _other) in import_graph.items():
        graph.setdefault(unit(name), set()).update(unit(m) for m in own if unit(m) not in (unit(name), "SegQCLib"))
    assert find_cycle(graph) == []


def test_inputs_come_before_the_network_and_the_quality_estimates(import_graph):
    io_imports = set().union(*(own for name, (own, _) in import_graph.items() if unit(name) == "SegQCLib.io"))
    assert not {unit(m) for m in io_imports} & {"SegQCLib.network", "SegQCLib.quality", "SegQCLib.engine",
                                               "SegQCLib.corrections", "SegQCLib.batch", "SegQCLib.commands"}


def test_library_imports_no_slicer_qt_or_vtk(import_graph):
    used = {name: other & GUI_MODULES for name, (_own, other) in import_graph.items()}
    assert {name: found for name, found in used.items() if found} == {}


def test_library_needs_neither_matplotlib_nor_scikit_image(import_graph):
    used = {name: other & NOT_DEPENDENCIES for name, (_own, other) in import_graph.items()}
    assert {name: found for name, found in used.items() if found} == {}


def test_the_cycle_finder_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) == []
