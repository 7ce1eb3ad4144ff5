"""Writes line protocol to InfluxDB 1.x over its ``/write`` HTTP API.

Debian's and Raspberry Pi OS's ``influxdb`` is 1.6: it has no ``/api/v2/write``
(field notes), so the v1 endpoint is the one every gateway owner can count on.
Errors are sorted into *retryable* (server down, 5xx, timeouts: keep the batch and
try again) and *rejected* (4xx: the data itself is wrong; retrying cannot help).
"""
from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request

PRECISION = "ms"


class WriteError(RuntimeError):
    def __init__(self, message: str, *, retryable: bool, status: int | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.status = status


class InfluxV1Writer:
    """``write(lines)`` posts one batch; raises WriteError on failure."""

    def __init__(self, url: str, database: str, *, username: str | None = None, password: str | None = None,
                 timeout_s: float = 10.0, retention_policy: str | None = None):
        self.url = url.rstrip("/")
        self.database = database
        self.timeout_s = timeout_s
        params = {"db": database, "precision": PRECISION}
        if retention_policy:
            params["rp"] = retention_policy
        if username:
            params["u"], params["p"] = username, password or ""
        self._write_url = f"{self.url}/write?{urllib.parse.urlencode(params)}"
        self._auth = {k: params[k] for k in ("u", "p") if k in params}

    def ensure_database(self) -> None:
        """CREATE DATABASE is idempotent in InfluxDB 1.x; run it once at start-up."""
        self._query(f'CREATE DATABASE "{self.database}"', method="POST")

    def write(self, lines: list[str]) -> None:
        if not lines:
            return
        body = "\n".join(lines).encode()
        request = urllib.request.Request(self._write_url, data=body, method="POST",
                                         headers={"Content-Type": "text/plain; charset=utf-8"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:300]
            retryable = exc.code >= 500 or exc.code in (404, 408, 429)  # 404: database not (yet) there
            raise WriteError(f"InfluxDB {self.url} answered {exc.code}: {detail}", retryable=retryable,
                             status=exc.code) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise WriteError(f"InfluxDB {self.url} unreachable: {reason}", retryable=True) from None

    def query(self, q: str) -> list[dict]:
        """Run an InfluxQL query; return the list of series of the first statement."""
        result = self._query(q)
        statement = result.get("results", [{}])[0]
        if "error" in statement:
            raise WriteError(f"InfluxQL error: {statement['error']}", retryable=False)
        return statement.get("series", [])

    def _query(self, q: str, method: str = "GET") -> dict:
        params = {"q": q, "db": self.database, "epoch": PRECISION, **self._auth}
        data = None
        url = f"{self.url}/query"
        if method == "POST":
            data = urllib.parse.urlencode(params).encode()
        else:
            url = f"{url}?{urllib.parse.urlencode(params)}"
        request = urllib.request.Request(url, data=data, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise WriteError(f"InfluxDB {self.url} answered {exc.code} to a query: "
                             f"{exc.read().decode(errors='replace')[:300]}", retryable=exc.code >= 500,
                             status=exc.code) from None
        except (urllib.error.URLError, OSError) as exc:
            raise WriteError(f"InfluxDB {self.url} unreachable: {getattr(exc, 'reason', exc)}",
                             retryable=True) from None
