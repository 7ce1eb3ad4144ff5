"""The layout rules the style guide promises, checked: edge/ stands alone; every module says what it is for."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("edge", "gateway", "training")


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("path", modules("edge"), ids=lambda p: str(p.relative_to(ROOT)))
def test_edge_imports_neither_gateway_nor_training(path):
    assert not imported_roots(path) & {"gateway", "training"}


@pytest.mark.parametrize("path", [p for pkg in PACKAGES for p in modules(pkg)], ids=lambda p: str(p.relative_to(ROOT)))
def test_every_module_starts_with_what_it_is_for(path):
    tree = ast.parse(path.read_text())
    if path.name == "__init__.py" and not tree.body:
        return  # an empty package marker
    docstring = ast.get_docstring(tree)
    assert docstring and docstring.strip(), f"{path.relative_to(ROOT)} has no module docstring"
