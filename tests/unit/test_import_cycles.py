"""No import circle in ``spear_sdk`` or ``spearlet``: the layers point one way.

The imports are read statically (``ast`` over the source files, nothing is imported), and every import
statement counts wherever it stands: at module level, inside a function (a lazy import still makes the two
modules depend on each other, it only moves the moment the circle bites from import time to call time), and
under ``if TYPE_CHECKING:`` (a type-only import is still a dependency of the design: two modules that name
each other's types cannot be understood or changed apart). An import of a name from a package counts as an
import of that package's submodule when one exists by that name, else of the package's ``__init__``; the
parent packages a dotted import also runs are not counted, since every submodule would otherwise close a
circle with its own package's ``__init__``.
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = {"spear_sdk": REPO / "spear_sdk", "spearlet": REPO / "server" / "spearlet"}


@dataclass(frozen=True)
class Edge:
    target: str
    line: int


def module_files(packages: Mapping[str, Path]) -> dict[str, Path]:
    """Every module of the packages by dotted name (a package by its own name, for its ``__init__``)."""
    found: dict[str, Path] = {}
    for package, root in packages.items():
        for path in sorted(root.rglob("*.py")):
            parts = [package, *path.relative_to(root).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _known(name: str, modules: Mapping[str, Path]) -> str | None:
    """``name`` or its nearest enclosing package among ``modules``; ``None`` outside them."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def imports_of(module: str, path: Path, modules: Mapping[str, Path]) -> Iterator[Edge]:
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = module.split(".")
                # ``from . import x`` in a package's __init__ is relative to the package itself.
                drop = node.level - 1 if is_package else node.level
                anchor = anchor[: len(anchor) - drop]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            target = _known(name, modules)
            if target is not None and target != module:
                yield Edge(target, node.lineno)


def import_graph(packages: Mapping[str, Path]) -> dict[str, dict[str, int]]:
    """module -> {imported module -> line of the first such import}."""
    modules = module_files(packages)
    graph: dict[str, dict[str, int]] = {}
    for module, path in modules.items():
        edges: dict[str, int] = {}
        for edge in imports_of(module, path, modules):
            edges.setdefault(edge.target, edge.line)
        graph[module] = edges
    return graph


def cycles(graph: Mapping[str, Mapping[str, int]]) -> list[list[str]]:
    """One circle (as a closed path) for each group of modules that import each other round (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, {}):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_circle(group, graph) for group in sorted(groups)]


def _circle(group: list[str], graph: Mapping[str, Mapping[str, int]]) -> list[str]:
    """A closed path through the group, from its first member back to it (breadth-first: the shortest)."""
    start, members = group[0], set(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for target in sorted(graph[node]):
                if target == start:
                    return [*paths[node], start]
                if target in members and target not in paths:
                    paths[target] = [*paths[node], target]
                    following.append(target)
        frontier = following
    raise AssertionError(f"no circle through {group}")  # a strongly connected group always has one


def describe(circle: list[str], graph: Mapping[str, Mapping[str, int]]) -> str:
    steps = [f"{a} (line {graph[a][b]}) -> {b}" for a, b in itertools.pairwise(circle)]
    return "; ".join(steps)


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_no_import_cycle(package: str) -> None:
    graph = import_graph(PACKAGES)
    found = [c for c in cycles(graph) if any(m.split(".")[0] == package for m in c)]
    assert not found, f"import circles in {package}:\n" + "\n".join(describe(c, graph) for c in found)


def test_the_walk_sees_every_kind_of_import(tmp_path: Path) -> None:
    """The detector itself: circles closed by a lazy import and by a type-only import are both found."""
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("from .low import VALUE\n")
    (package / "sub" / "low.py").write_text("VALUE = 1\n\ndef later():\n    from ..top import run\n")
    (package / "top.py").write_text("from .sub import low\n\ndef run(): ...\n")
    (package / "a.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.b import B\n"
    )
    (package / "b.py").write_text("import pkg.a\nclass B: ...\n")
    (package / "c.py").write_text("from . import a, top\n")
    graph = import_graph({"pkg": package})
    assert graph["pkg.c"] == {"pkg.a": 1, "pkg.top": 1}
    assert graph["pkg.sub"] == {"pkg.sub.low": 1}
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.a"], ["pkg.sub.low", "pkg.top", "pkg.sub.low"]]
    assert describe(["pkg.a", "pkg.b", "pkg.a"], graph) == "pkg.a (line 3) -> pkg.b; pkg.b (line 1) -> pkg.a"
