"""docs/architecture.md stays true: every module, package and folder it names exists in the tree."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"
TOP = r"(?:edge|gateway|training|scripts|tests)"

# `gateway/device/runner.py`; a folder `gateway/device/`; a dotted module `training.leak.train`.
FILE_PATH = re.compile(rf"(?<![\w/.-])({TOP}/(?:[\w-]+/)*[\w-]+\.py)\b")
FOLDER_PATH = re.compile(rf"(?<![\w/.-])({TOP}/(?:[\w-]+/)*)(?![\w.-])")
DOTTED = re.compile(rf"(?<![\w/.-])({TOP}(?:\.[a-z_]\w*)+)\b(?!\.py|/)")


def named(pattern: re.Pattern) -> list[str]:
    return sorted(set(pattern.findall(DOC.read_text())))


def dotted_exists(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def test_the_doc_names_modules_at_all():
    assert len(named(FILE_PATH)) >= 20 and named(FOLDER_PATH) and named(DOTTED)


@pytest.mark.parametrize("path", named(FILE_PATH))
def test_every_module_path_it_names_exists(path):
    assert (ROOT / path).is_file(), f"docs/architecture.md names {path}, which does not exist"


@pytest.mark.parametrize("path", named(FOLDER_PATH))
def test_every_package_it_names_exists(path):
    assert (ROOT / path).is_dir(), f"docs/architecture.md names {path}, which does not exist"


@pytest.mark.parametrize("name", named(DOTTED))
def test_every_dotted_module_it_names_exists(name):
    assert dotted_exists(name), f"docs/architecture.md names {name}, which is no module"
