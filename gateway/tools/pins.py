"""The gateway's Python packages pinned to the versions installed here: the bundle's ``requirements.txt``."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

GATEWAY_EXTRAS = ("edge", "gateway")  # what runs on the gateway; never training or dev


class PinError(Exception):
    """A package the gateway needs is not installed here, so its version cannot be pinned."""


def pinned_requirements(extras: tuple[str, ...] = GATEWAY_EXTRAS) -> list[str]:
    """``name==version`` lines for the gateway's packages and everything they pull in, as installed here.

    Platform markers are kept (onnxruntime has no 32-bit ARM wheel: pip skips it there).
    """
    top = _declared_requirements(extras)
    from packaging.requirements import Requirement

    pins: dict[str, tuple[str, str | None]] = {}
    todo: list[tuple[str, str | None]] = [(name, marker) for name, marker in top]
    while todo:
        name, marker = todo.pop()
        key = _canonical(name)
        if key in pins and (pins[key][1] is None or pins[key][1] == marker):
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise PinError(
                f"package {name} is needed on the gateway but not installed here: "
                f"pip install -e '.[{','.join(extras)}]' first, so its version can be pinned"
            ) from None
        pins[key] = (f"{dist.metadata['Name']}=={dist.version}", marker if key not in pins else None)
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue  # an optional extra of that package, or another platform's dependency
            todo.append((req.name, marker))
    return sorted(f"{pin}; {marker}" if marker else pin for pin, marker in pins.values())


def own_version() -> str:
    """The installed frugalsense version, for INSTALL.txt."""
    try:
        return metadata.version("frugalsense")
    except metadata.PackageNotFoundError:
        return "(version unknown)"


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared_requirements(extras: tuple[str, ...]) -> list[tuple[str, str | None]]:
    """(name, platform marker or None) of frugalsense's base and ``extras`` dependencies."""
    from packaging.requirements import Requirement

    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    if pyproject.is_file():  # a checkout: its pyproject is newer than any installed metadata
        project = tomllib.loads(pyproject.read_text())["project"]
        texts = list(project.get("dependencies", []))
        for extra in extras:
            texts += project.get("optional-dependencies", {}).get(extra, [])
    else:
        texts = []
        for text in metadata.requires("frugalsense") or []:
            req = Requirement(text)
            if (
                req.marker is None
                or any(req.marker.evaluate({"extra": e}) for e in extras)
                or "extra ==" not in str(req.marker)
            ):
                texts.append(re.sub(r"\s*and extra == \"[^\"]+\"|extra == \"[^\"]+\"", "", text).rstrip("; "))
    out = []
    for text in texts:
        req = Requirement(text)
        out.append((req.name, str(req.marker) if req.marker else None))
    return out
