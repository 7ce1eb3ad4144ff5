"""The layout rules the style guide promises, checked: edge/ stands alone, the imports flow one way with no
cycle, the gateway service stays apart from the bridge and the tools, and every module is small and says what
it is for."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("edge", "gateway", "training")
MAX_MODULE_LINES = 400
MAX_GATEWAY_TOP_MODULES = 6


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _ids(path: Path) -> str:
    return str(path.relative_to(ROOT))


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


# ---- the module import graph --------------------------------------------------------------


def module_name(path: Path) -> str:
    """``gateway/device/runner.py`` -> ``gateway.device.runner``; a package's ``__init__.py`` is the package."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def module_paths() -> dict[str, Path]:
    """Every module of edge/, gateway/ and training/ by dotted name."""
    return {module_name(p): p for pkg in PACKAGES for p in modules(pkg)}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST, *, type_checking: bool) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement, at module level or inside a function; ``if TYPE_CHECKING:`` bodies only when asked
    (they never run, so they make no cycle)."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        if isinstance(node, ast.If) and _is_type_checking(node.test) and not type_checking:
            for child in node.orelse:
                visit(child)
            return
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def imports_of(path: Path, *, type_checking: bool = False) -> set[str]:
    """The modules of edge/, gateway/ and training/ that ``path`` imports, as dotted names.

    ``from pkg import name`` counts as ``pkg.name`` when that is a module, else as ``pkg``; relative imports are
    resolved against the importing module's package.
    """
    known = module_paths()
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in _import_nodes(ast.parse(path.read_text(), filename=str(path)), type_checking=type_checking):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        for target in targets:
            while target and target not in known:  # `import gateway.device.runner.x` is no module: its parent is
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


@cache
def import_graph() -> dict[str, frozenset[str]]:
    return {name: frozenset(imports_of(path)) for name, path in module_paths().items()}


def import_cycles(graph: dict[str, frozenset[str]]) -> list[list[str]]:
    """One cycle (``[a, b, ..., a]``) per strongly connected group of modules (Tarjan's algorithm).

    >>> import_cycles({"a": frozenset({"b"}), "b": frozenset({"a"}), "c": frozenset({"a"})})
    [['a', 'b', 'a']]
    >>> import_cycles({"a": frozenset({"b"}), "b": frozenset()})
    []
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
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

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return sorted(_cycle_in(graph, group) for group in groups)


def _cycle_in(graph: dict[str, frozenset[str]], group: set[str]) -> list[str]:
    """The shortest cycle through the group's first module, found breadth-first inside the group."""
    start = min(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for v in frontier:
            for w in sorted(graph[v] & group):
                if w == start:
                    return [*paths[v], start]
                if w not in paths:
                    paths[w] = [*paths[v], w]
                    following.append(w)
        frontier = following
    raise AssertionError(f"no cycle through {start} in {sorted(group)}")  # a strongly connected group has one


def test_the_import_graph_sees_what_runs_and_only_that():
    graph = import_graph()
    assert "gateway.protocol.mqtt_client" in graph["gateway.bridge.service"]  # at module level
    assert "training.water.zone" in graph["gateway.commands.demo_cmd"]  # inside a function
    assert "gateway.config.schema.air_sensors" in graph["gateway.config.schema.gateway"]  # from pkg import module
    mqtt_client = module_paths()["gateway.protocol.mqtt_client"]  # imports the config only for the type checker
    assert "gateway.config" not in graph["gateway.protocol.mqtt_client"]
    assert "gateway.config" in imports_of(mqtt_client, type_checking=True)
    assert all(set(targets) <= set(graph) for targets in graph.values())


def test_no_import_cycle():
    cycles = import_cycles(import_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


# ---- which package may import which ------------------------------------------------------


def _layer_imports(path: Path) -> set[str]:
    """Imports for the layering rules: every import, ``if TYPE_CHECKING:`` ones too (a type is a dependency)."""
    return imports_of(path, type_checking=True)


@pytest.mark.parametrize("path", modules("edge"), ids=_ids)
def test_edge_imports_neither_gateway_nor_training(path):
    assert not imported_roots(path) & {"gateway", "training"}
    assert not {m for m in _layer_imports(path) if m.split(".")[0] in {"gateway", "training"}}


@pytest.mark.parametrize("path", modules("training"), ids=_ids)
def test_training_does_not_import_gateway(path):
    assert "gateway" not in imported_roots(path)
    assert not {m for m in _layer_imports(path) if m.split(".")[0] == "gateway"}


@pytest.mark.parametrize("path", sorted((ROOT / "gateway" / "device").rglob("*.py")), ids=_ids)
def test_the_gateway_service_imports_neither_the_bridge_nor_the_tools(path):
    forbidden = ("gateway.bridge", "gateway.tools")
    assert not {m for m in _layer_imports(path) if m in forbidden or m.startswith(tuple(f + "." for f in forbidden))}


# ---- size and shape ----------------------------------------------------------------------


@pytest.mark.parametrize("path", [p for pkg in PACKAGES for p in modules(pkg)], ids=_ids)
def test_no_module_over_400_lines(path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, f"{_ids(path)} has {lines} lines (at most {MAX_MODULE_LINES})"


def test_at_most_six_modules_directly_in_gateway():
    top = sorted(p.name for p in (ROOT / "gateway").glob("*.py"))
    assert len(top) <= MAX_GATEWAY_TOP_MODULES, f"gateway/ holds {len(top)} modules directly: {top}"


@pytest.mark.parametrize("path", [p for pkg in PACKAGES for p in modules(pkg)], ids=_ids)
def test_every_module_starts_with_what_it_is_for(path):
    tree = ast.parse(path.read_text())
    if path.name == "__init__.py" and not tree.body:
        return  # an empty package marker
    docstring = ast.get_docstring(tree)
    assert docstring and docstring.strip(), f"{path.relative_to(ROOT)} has no module docstring"
