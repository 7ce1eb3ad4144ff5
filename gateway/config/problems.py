"""What a config check reports: one ``Problem`` per thing wrong (``FILE:LINE: key: what``), all in a ``ConfigError``.

>>> print(Problem("gw.yaml", 12, "models[0].name", "is required"))
gw.yaml:12: models[0].name: is required
>>> print(ConfigError([Problem("gw.yaml", 9, "b", "y"), Problem("gw.yaml", 3, "a", "x", suggestion="aa")]))
gw.yaml:3: a: x, did you mean 'aa'?
gw.yaml:9: b: y
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a config file, where it is, and the likely intended name."""

    file: str
    line: int | None
    key: str
    message: str
    suggestion: str | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:" if self.line else f"{self.file}:"
        key = f" {self.key}:" if self.key else ""
        hint = f", did you mean {self.suggestion!r}?" if self.suggestion else ""
        return f"{where}{key} {self.message}{hint}"


class ConfigError(Exception):
    """A config file is not usable; ``problems`` lists everything found, by line."""

    def __init__(self, problems: list[Problem]):
        self.problems = sorted(problems, key=lambda p: (p.file, p.line or 0))
        super().__init__("\n".join(str(p) for p in self.problems))


class ConfigUnreadable(ConfigError):
    """The file could not be read at all (missing, a folder, no permission)."""
