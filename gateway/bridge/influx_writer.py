"""Writes line protocol to InfluxDB 1.x over its ``/write`` HTTP API; picks the v1 or v2 writer.

Debian's and Raspberry Pi OS's ``influxdb`` is 1.6: it has no ``/api/v2/write``
(field notes), so the v1 endpoint is the one every gateway owner can count on; the
v2 writer (``gateway.bridge.influx_v2``) serves InfluxDB 1.8+, 2.x, 3.x and Cloud.
``make_influx_writer`` is the one switch between them.
Errors are sorted into *retryable* (server down, 5xx, timeouts, a refused login: keep
the batch and try again) and *rejected* (other 4xx: the data itself is wrong; retrying
cannot help).

With authentication on, the user and password go in an ``Authorization: Basic`` header
(InfluxDB 1.x reads it as it reads ``u=``/``p=``), never in a URL that a proxy or a log
could keep. ``ca_file`` is the CA that signed an ``https://`` server's certificate.
"""

from __future__ import annotations

import base64
import http.client
import json
import ssl
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
    ca_file: str | None = None,
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
        return InfluxV1Writer(url, database, username=username, password=password, ca_file=ca_file, timeout_s=timeout_s)
    if api == "v2":
        from gateway.bridge.influx_v2 import ANY_ORG, InfluxV2Writer  # influxdb-client only when asked for

        return InfluxV2Writer(
            url, bucket or database, org=org or ANY_ORG, token=token, ca_file=ca_file, timeout_s=timeout_s
        )
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
        ca_file: str | None = None,
        timeout_s: float = 10.0,
        retention_policy: str | None = None,
    ):
        self.url = url.rstrip("/")
        self.database = database
        self.username = username
        self.timeout_s = timeout_s
        params = {"db": database, "precision": PRECISION}
        if retention_policy:
            params["rp"] = retention_policy
        self._headers = {"Content-Type": "text/plain; charset=utf-8"}
        if username:
            login = base64.b64encode(f"{username}:{password or ''}".encode()).decode()
            self._headers["Authorization"] = f"Basic {login}"
        parsed = urllib.parse.urlsplit(self.url)
        self._scheme, self._netloc = parsed.scheme, parsed.netloc
        # None: the system's CAs for https (and nothing for http).
        self._tls = ssl.create_default_context(cafile=ca_file) if ca_file else None
        self._write_path = f"{parsed.path.rstrip('/')}/write?{urllib.parse.urlencode(params)}"
        self._conn: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()

    def ensure_database(self) -> None:
        """CREATE DATABASE is idempotent in InfluxDB 1.x; run it once at start-up."""
        self.execute(f'CREATE DATABASE "{self.database}"')

    def execute(self, statements: str) -> None:
        """Run InfluxQL that changes something (CREATE, ALTER, DROP, SELECT INTO; several with ``;``) by POST."""
        for statement in self._query(statements, method="POST").get("results", []):
            if "error" in statement:
                raise WriteError(f"InfluxQL error: {statement['error']}", retryable=False)

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
                f"InfluxDB {self.url} answered {status}: {detail}",
                retryable=is_retryable_status(status),
                status=status,
                detail=detail,
            )

    def _post(self, body: bytes) -> tuple[int, str]:
        if self._conn is None:
            if self._scheme == "https":
                self._conn = http.client.HTTPSConnection(self._netloc, timeout=self.timeout_s, context=self._tls)
            else:
                self._conn = http.client.HTTPConnection(self._netloc, timeout=self.timeout_s)
        self._conn.request("POST", self._write_path, body=body, headers=self._headers)
        response = self._conn.getresponse()
        detail = response.read().decode(errors="replace")[:300].strip()
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

    def ping(self) -> bool:
        """``/ping`` answers 204 without a login when the server is up."""
        try:
            request = urllib.request.Request(f"{self.url}/ping", method="GET")
            with urllib.request.urlopen(request, timeout=min(self.timeout_s, 2.0), context=self._tls) as response:
                return response.status == 204
        except (urllib.error.URLError, OSError, http.client.HTTPException):
            return False

    def check_login(self) -> None:
        """Ask something only a valid login may ask (SHOW DATABASES); WriteError with status 401 if refused."""
        self._query("SHOW DATABASES")

    def query(self, q: str) -> list[dict]:
        """Run an InfluxQL query; return the list of series of the first statement."""
        result = self._query(q)
        statement = result.get("results", [{}])[0]
        if "error" in statement:
            raise WriteError(f"InfluxQL error: {statement['error']}", retryable=False)
        return statement.get("series", [])

    def _query(self, q: str, method: str = "GET") -> dict:
        params = {"q": q, "db": self.database, "epoch": PRECISION}
        data = None
        url = f"{self.url}/query"
        if method == "POST":
            data = urllib.parse.urlencode(params).encode()
        else:
            url = f"{url}?{urllib.parse.urlencode(params)}"
        headers = {k: v for k, v in self._headers.items() if k == "Authorization"}
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s, context=self._tls) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:300].strip()
            raise WriteError(
                f"InfluxDB {self.url} answered {exc.code} to a query: {detail}",
                retryable=is_retryable_status(exc.code),
                status=exc.code,
                detail=detail,
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            if isinstance(reason, ssl.SSLCertVerificationError):
                raise WriteError(
                    f"InfluxDB {self.url}: its certificate is not trusted ({reason.verify_message}): "
                    "give the CA that signed it with --influx-ca FILE",
                    retryable=False,
                ) from None
            raise WriteError(f"InfluxDB {self.url} unreachable: {reason}", retryable=True) from None
