"""The import layering of repr_sim: no import cycle, no upward import, every module placed.

The floors below are the house sketched in the project's layout notes (LAYOUT.md): each
floor imports only its own floor and the floors below it, and nothing imports in a circle.
Every import counts, at module level or inside a function (a lazy import is still a
dependency, and a lazy cycle still means two modules that cannot be understood apart),
relative or absolute, and `importlib.import_module("repr_sim...")` with a literal name.

A new module fails `test_every_module_has_a_floor` until it is added to FLOORS: placing it
is a decision, not a default.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

# ---- the floor map (lowest first) ---------------------------------------------------------------
# Names are relative to the package: "errors" is repr_sim.errors, "repr_sim" the package's
# __init__, "data.*" every module under repr_sim/data/. A module may import its own floor and
# the floors below it.
FLOORS = {
    "ground": ("repr_sim", "errors", "paths", "atomic", "results", "splits", "metrics",
               "metrics.*", "analysis", "features",
               "data", "data.*", "models", "models.*"),
    "shared": ("experiments", "runs", "pair", "scoring", "pool", "plots", "consequences"),
    "kinds": ("kinds", "kinds.*"),
    "flows": ("train", "sweep", "measure", "attack", "summary", "demo"),
    "face": ("cli", "__main__"),
}
MAY_APPEAR: set[str] = set()  # names placed ahead of their module's arrival

PACKAGE = "repr_sim"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE
ORDER = list(FLOORS)


# ---- the module graph ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Edge:
    source: str  # importing module, e.g. repr_sim.data.betons
    target: str  # imported module
    where: str  # file:line, and the function it sits in if any

    def __str__(self) -> str:
        return f"{short(self.source)} -> {short(self.target)}  ({self.where})"


def short(module: str) -> str:
    return module[len(PACKAGE) + 1:] if module.startswith(PACKAGE + ".") else module


def module_files() -> dict[str, Path]:
    """repr_sim's modules by dotted name (a package by its own name, from its __init__)."""
    modules = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _package_of(module: str, path: Path) -> str:
    """The package a relative import starts from."""
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def _existing(name: str, modules) -> str | None:
    """`name` if it is a module of ours, else its longest prefix that is (None: not ours)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def _import_module_literal(node: ast.Call) -> str | None:
    """The literal name of `importlib.import_module("...")` / `import_module("...")`."""
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    if name != "import_module" or not node.args:
        return None
    arg = node.args[0]
    return arg.value if isinstance(arg, ast.Constant) and isinstance(arg.value, str) else None


class _Imports(ast.NodeVisitor):
    """Collects the repr_sim modules one file imports, with where each import sits."""

    def __init__(self, module: str, path: Path, modules):
        self.module, self.path, self.modules = module, path, modules
        self.package = _package_of(module, path)
        self.scope: list[str] = []  # enclosing classes and functions
        self.edges: list[Edge] = []

    def _add(self, name: str | None, node: ast.AST) -> None:
        target = _existing(name, self.modules) if name else None
        if target is None or target == self.module:
            return
        where = f"{self.path.relative_to(ROOT.parent)}:{node.lineno}"
        if self.scope:  # the enclosing class and function names, e.g. Loader.__iter__
            where += f", inside {'.'.join(self.scope)}"
        edge = Edge(self.module, target, where)
        if edge not in self.edges:  # `from x import a, b` is one import
            self.edges.append(edge)

    def _scoped(self, node) -> None:
        self.scope.append(node.name)
        self.generic_visit(node)
        self.scope.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _scoped

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = self.package.split(".")
            base = base[: len(base) - (node.level - 1)]
            origin = ".".join(base + ([node.module] if node.module else []))
        else:
            origin = node.module or ""
        for alias in node.names:
            # `from pkg import sub` imports the submodule; `from mod import name` the module.
            child = f"{origin}.{alias.name}"
            self._add(child if child in self.modules else origin, node)

    def visit_Call(self, node: ast.Call) -> None:
        name = _import_module_literal(node)
        if name and name.startswith("."):
            package = next((kw.value.value for kw in node.keywords if kw.arg == "package"
                            and isinstance(kw.value, ast.Constant)), None)
            name = package + name if package else None
        self._add(name, node)
        self.generic_visit(node)


def import_graph() -> tuple[dict[str, Path], list[Edge]]:
    modules = module_files()
    edges = []
    for module, path in modules.items():
        visitor = _Imports(module, path, modules)
        visitor.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
        edges += visitor.edges
    return modules, edges


# ---- floors --------------------------------------------------------------------------------------
def _matches(pattern: str, name: str) -> bool:
    if pattern.endswith(".*"):
        return name.startswith(pattern[:-1])
    return name == pattern


def floors_of(module: str) -> list[str]:
    """The floors whose patterns match `module` (one, when the map is right)."""
    name = "repr_sim" if module == PACKAGE else short(module)
    return [floor for floor, patterns in FLOORS.items() if any(_matches(p, name) for p in patterns)]


def floor_of(module: str) -> str:
    return floors_of(module)[0]


# ---- cycles --------------------------------------------------------------------------------------
def find_cycles(edges: list[Edge]) -> list[list[Edge]]:
    """One cycle (as its edges) per strongly connected group of modules (Tarjan)."""
    out: dict[str, list[Edge]] = {}
    for e in edges:
        out.setdefault(e.source, []).append(e)
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(v: str) -> None:  # recursion depth is bounded by the number of modules
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for e in out.get(v, []):
            if e.target not in index:
                visit(e.target)
                low[v] = min(low[v], low[e.target])
            elif e.target in on_stack:
                low[v] = min(low[v], index[e.target])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in sorted(out):
        if v not in index:
            visit(v)
    return [_cycle_in(group, out) for group in groups]


def _cycle_in(group: set[str], out: dict[str, list[Edge]]) -> list[Edge]:
    """A shortest path from the group's first module back to itself, within the group."""
    start = min(group)
    paths = {start: []}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for e in out.get(v, []):
                if e.target == start:
                    return paths[v] + [e]
                if e.target in group and e.target not in paths:
                    paths[e.target] = paths[v] + [e]
                    nxt.append(e.target)
        frontier = nxt
    raise AssertionError(f"no cycle through {start}")


# ---- the tests -----------------------------------------------------------------------------------
def test_the_floor_map_is_the_layout():
    """The map keeps the layout's order and places its named modules where it puts them
    (results.py sits on the ground floor: the analysis, a ground module, reads its schemas)."""
    assert ORDER == ["ground", "shared", "kinds", "flows", "face"]
    expected = {
        "ground": ["splits", "metrics", "analysis", "results", "data.registry", "models.gpt"],
        "shared": ["experiments", "runs", "pair", "plots"],
        "kinds": ["kinds", "kinds.image.train"],
        "flows": ["demo", "sweep", "measure", "summary"],
        "face": ["cli"],
    }
    for floor, names in expected.items():
        for name in names:
            assert floors_of(f"{PACKAGE}.{name}") == [floor], name
    patterns = [p for ps in FLOORS.values() for p in ps]
    assert len(patterns) == len(set(patterns)), "a name is on two floors"


def test_the_graph_sees_lazy_and_relative_imports():
    """The check itself: a function-level relative import is an edge, with its place."""
    _, edges = import_graph()
    lazy = [e for e in edges if e.source == f"{PACKAGE}.data.cli"
            and e.target == f"{PACKAGE}.data.registry"]
    assert lazy and "inside cli_write_data" in lazy[0].where


def test_the_cycle_finder_reports_each_circle():
    edges = [Edge(a, b, "here") for a, b in
             [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d"), ("d", "e"), ("e", "d"), ("e", "f")]]
    cycles = sorted([e.source for e in cycle] for cycle in find_cycles(edges))
    assert cycles == [["a", "b", "c"], ["d", "e"]]


def test_every_module_has_a_floor():
    modules, _ = import_graph()
    unplaced = [short(m) for m in modules if not floors_of(m)]
    twice = [f"{short(m)}: {', '.join(floors_of(m))}" for m in modules if len(floors_of(m)) > 1]
    if unplaced:
        pytest.fail("modules on no floor (add them to the floor map in tests/test_layering.py): "
                    + ", ".join(unplaced), pytrace=False)
    assert not twice, f"modules on two floors: {'; '.join(twice)}"
    named = {p for ps in FLOORS.values() for p in ps if not p.endswith(".*")} - MAY_APPEAR
    missing = [n for n in named if f"{PACKAGE}.{n}" not in modules and n != PACKAGE]
    assert not missing, f"the floor map names modules that do not exist: {', '.join(missing)}"


def test_no_import_cycles():
    _, edges = import_graph()
    cycles = find_cycles(edges)
    text = "\n\n".join("\n".join(f"  {e}" for e in cycle) for cycle in cycles)
    if cycles:
        pytest.fail(f"{len(cycles)} import cycle(s), each shown as its imports:\n{text}",
                    pytrace=False)


def test_no_upward_imports():
    modules, edges = import_graph()
    placed = {m for m in modules if floors_of(m)}
    upward = [e for e in edges if e.source in placed and e.target in placed
              and ORDER.index(floor_of(e.target)) > ORDER.index(floor_of(e.source))]
    text = "\n".join(f"  {e}   [{floor_of(e.source)} imports {floor_of(e.target)}]"
                     for e in upward)
    if upward:
        pytest.fail(f"{len(upward)} upward import(s) (a floor imports only itself and the "
                    f"floors below: {' < '.join(ORDER)}):\n{text}", pytrace=False)
