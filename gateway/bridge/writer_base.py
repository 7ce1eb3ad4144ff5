"""What every InfluxDB writer of the bridge is: the ``InfluxWriter`` interface and its ``WriteError``.

Both writers (``influx_writer`` for v1, ``influx_v2``) build on this module, so neither
imports the other.
"""

from __future__ import annotations

from typing import Protocol

PRECISION = "ms"
INFLUX_APIS = ("v1", "v2")


class WriteError(RuntimeError):
    """A write InfluxDB refused or never answered; ``retryable`` says whether trying again later can help."""

    def __init__(self, message: str, *, retryable: bool, status: int | None = None, detail: str = ""):
        super().__init__(message)
        self.retryable = retryable
        self.status = status
        self.detail = detail  # what the server said, if it answered


def is_retryable_status(status: int) -> bool:
    """5xx and a few 4xx mean "not now" rather than "never".

    404: the database or bucket is not there yet. 401/403: the login or its rights are
    wrong, which is no fault of the data: dead-lettering every message until someone fixes
    the password would lose them all, so the bridge keeps them and retries.

    >>> [is_retryable_status(s) for s in (204, 400, 401, 403, 404, 413, 429, 503)]
    [False, False, True, True, True, False, True, True]
    """
    return status >= 500 or status in (401, 403, 404, 408, 429)


class InfluxWriter(Protocol):
    """What the bridge needs from a database writer, whichever API it speaks."""

    api: str
    url: str

    def write(self, lines: list[str]) -> None: ...

    def ensure_database(self) -> None: ...

    def ping(self) -> bool:
        """True if the server answers at all (no login needed): the metrics' "reachable" when no write is due."""
        ...

    def close(self) -> None: ...
