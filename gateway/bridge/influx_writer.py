"""Writes line protocol to InfluxDB 1.x over its ``/write`` HTTP API; picks the v1 or v2 writer.

Debian's and Raspberry Pi OS's ``influxdb`` is 1.6: it has no ``/api/v2/write``
(field notes), so the v1 endpoint is the one every gateway owner can count on; the
v2 writer (``gateway.bridge.influx_v2``) serves InfluxDB 1.8+, 2.x, 3.x and Cloud.
``make_influx_writer`` is the one switch between them.
Errors are sorted into *retryable* (server down, 5xx, timeouts: keep the batch and
try again) and *rejected* (4xx: the data itself is wrong; retrying cannot help).
"""

from __future__ import annotations

import http.client
import json
import threading
import urllib.error
import urllib.parse
import urllib.request

from gateway.bridge.writer_base import PRECISION, InfluxWriter, WriteError, is_retryable_status


def make_influx_writer(
    api: str,
    url: str,
    *,
    database: str = "frugalsense",
    bucket: str | None = None,
    org: str | None = None,
    token: str | None = None,
    username: str | None = None,
    password: str | None = None,
    timeout_s: float = 10.0,
) -> InfluxWriter:
    """The writer for ``api`` ("v1": ``/write?db=database``; "v2": ``/api/v2/write`` to ``bucket``).

    ``bucket`` defaults to ``database``, so switching API keeps the data in the same place on
    InfluxDB 1.8 (whose v2 endpoint maps a bucket to ``database/retention_policy``).

    >>> make_influx_writer("v1", "http://127.0.0.1:8086", database="water").database
    'water'
    >>> make_influx_writer("v3", "http://127.0.0.1:8086")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: unknown InfluxDB API 'v3': use v1 (InfluxDB 1.x /write) or v2 (/api/v2/write: ...)
    """
    if api == "v1":
        return InfluxV1Writer(url, database, username=username, password=password, timeout_s=timeout_s)
    if api == "v2":
        from gateway.bridge.influx_v2 import ANY_ORG, InfluxV2Writer  # influxdb-client only when asked for

        return InfluxV2Writer(url, bucket or database, org=org or ANY_ORG, token=token, timeout_s=timeout_s)
    raise ValueError(
        f"unknown InfluxDB API {api!r}: use v1 (InfluxDB 1.x /write) or "
        "v2 (/api/v2/write: InfluxDB 1.8+, 2.x, 3.x, Cloud)"
    )


class InfluxV1Writer:
    """``write(lines)`` posts one batch on a kept-alive connection; raises WriteError on failure.

    The connection is reused between writes (a new TCP connection per batch cost the bridge
    about a tenth of its time) and opened again when the server closed it. A write that
    fails on a reused connection is sent once more on a fresh one: writes are idempotent
    (same series, same time: the same point), so a repeat cannot duplicate data.
    """

    api = "v1"

    def __init__(
        self,
        url: str,
        database: str,
        *,
        username: str | None = None,
        password: str | None = None,
        timeout_s: float = 10.0,
        retention_policy: str | None = None,
    ):
        self.url = url.rstrip("/")
        self.database = database
        self.timeout_s = timeout_s
        params = {"db": database, "precision": PRECISION}
        if retention_policy:
            params["rp"] = retention_policy
        if username:
            params["u"], params["p"] = username, password or ""
        self._auth = {k: params[k] for k in ("u", "p") if k in params}
        parsed = urllib.parse.urlsplit(self.url)
        self._scheme, self._netloc = parsed.scheme, parsed.netloc
        self._write_path = f"{parsed.path.rstrip('/')}/write?{urllib.parse.urlencode(params)}"
        self._conn: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()

    def ensure_database(self) -> None:
        """CREATE DATABASE is idempotent in InfluxDB 1.x; run it once at start-up."""
        self._query(f'CREATE DATABASE "{self.database}"', method="POST")

    def write(self, lines: list[str]) -> None:
        if not lines:
            return
        body = "\n".join(lines).encode()
        with self._lock:
            # A kept-alive connection the server has closed fails once: then once more on a new one.
            for last_try in (self._conn is None, True):
                try:
                    status, detail = self._post(body)
                    break
                except (http.client.HTTPException, OSError) as exc:
                    self._drop_connection()
                    if last_try:
                        raise WriteError(f"InfluxDB {self.url} unreachable: {exc}", retryable=True) from None
        if status >= 300:
            raise WriteError(
                f"InfluxDB {self.url} answered {status}: {detail}", retryable=is_retryable_status(status), status=status
            )

    def _post(self, body: bytes) -> tuple[int, str]:
        if self._conn is None:
            cls = http.client.HTTPSConnection if self._scheme == "https" else http.client.HTTPConnection
            self._conn = cls(self._netloc, timeout=self.timeout_s)
        self._conn.request("POST", self._write_path, body=body, headers={"Content-Type": "text/plain; charset=utf-8"})
        response = self._conn.getresponse()
        detail = response.read().decode(errors="replace")[:300]
        if response.will_close:
            self._drop_connection()
        return response.status, detail

    def _drop_connection(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def close(self) -> None:
        """Close the kept-alive connection (a later write opens a new one)."""
        with self._lock:
            self._drop_connection()

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
            raise WriteError(
                f"InfluxDB {self.url} answered {exc.code} to a query: {exc.read().decode(errors='replace')[:300]}",
                retryable=exc.code >= 500,
                status=exc.code,
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            raise WriteError(
                f"InfluxDB {self.url} unreachable: {getattr(exc, 'reason', exc)}", retryable=True
            ) from None
