"""What every doctor check returns: ``Check(status, name, detail, fix)``, status OK, FAIL or SKIP."""

from __future__ import annotations

from dataclasses import dataclass

OK, FAIL, SKIP = "OK", "FAIL", "SKIP"


@dataclass(frozen=True)
class Check:
    """The result of one check: OK, FAIL or SKIP, what was found, and for a failure what to do."""

    status: str
    name: str
    detail: str
    fix: str | None = None

    def line(self) -> str:
        fix = f" -> fix: {self.fix}" if self.status == FAIL and self.fix else ""
        return f"{self.status:<4} {self.name:<20} {self.detail}{fix}"
