"""Writes line protocol through InfluxDB's v2 API (``/api/v2/write``) with influxdb-client, and reads Flux.

For InfluxDB 1.8+ (bucket ``db/rp``, token ``user:password``), 2.x, 3.x, Cloud, and
servers that speak the same endpoint (VictoriaMetrics). The client's ``WriteApi`` is
used in SYNCHRONOUS mode on purpose: its batching mode retries in the background and
then drops the batch (field notes), while here every failure raises ``WriteError`` so
the bridge keeps the MQTT messages unacknowledged and tries again itself.
"""

from __future__ import annotations

import urllib3
from influxdb_client import InfluxDBClient, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.rest import ApiException

from gateway.bridge.writer_base import WriteError, is_retryable_status

# InfluxDB 1.8 ignores the organisation; influxdb-client's docs use "-" for it.
ANY_ORG = "-"


class InfluxV2Writer:
    """``write(lines)`` posts one batch to ``bucket``; raises WriteError on failure."""

    api = "v2"

    def __init__(
        self,
        url: str,
        bucket: str,
        *,
        org: str = ANY_ORG,
        token: str | None = None,
        ca_file: str | None = None,
        timeout_s: float = 10.0,
    ):
        self.url = url.rstrip("/")
        self.bucket = bucket
        self.org = org
        # retries=False is the client's default for synchronous writes: say it, since
        # a hidden retry loop here would hold the writer thread without the bridge knowing.
        self._client = InfluxDBClient(
            url=self.url,
            token=token or "",
            org=org,
            timeout=int(timeout_s * 1000),
            retries=False,
            ssl_ca_cert=ca_file,
        )
        self._write_api = self._client.write_api(write_options=SYNCHRONOUS)

    def write(self, lines: list[str]) -> None:
        if not lines:
            return
        try:
            self._write_api.write(bucket=self.bucket, org=self.org, record=lines, write_precision=WritePrecision.MS)
        except ApiException as exc:
            status = exc.status or 0
            detail = (exc.body or b"")[:300]
            detail = detail.decode(errors="replace") if isinstance(detail, bytes) else str(detail)
            raise WriteError(
                f"InfluxDB {self.url} answered {status} for bucket {self.bucket!r}: {detail}",
                retryable=is_retryable_status(status),
                status=status,
                detail=detail,
            ) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise WriteError(f"InfluxDB {self.url} unreachable: {exc}", retryable=True) from None

    def ensure_database(self) -> None:
        """Create the bucket if the server has a buckets API and it is missing.

        Servers without one (InfluxDB 1.8, VictoriaMetrics) answer 400/404 to it: then
        there is nothing to create here and writes say for themselves what is wrong.
        """
        buckets = self._client.buckets_api()
        try:
            if buckets.find_bucket_by_name(self.bucket) is None:
                buckets.create_bucket(bucket_name=self.bucket, org=self.org)
        except ApiException as exc:
            if exc.status in (400, 404, 405):
                return
            raise WriteError(
                f"InfluxDB {self.url} refused to create bucket {self.bucket!r} ({exc.status}): "
                "create it by hand or give the token the right to",
                retryable=False,
                status=exc.status,
            ) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise WriteError(f"InfluxDB {self.url} unreachable: {exc}", retryable=True) from None

    def flux(self, query: str) -> list[dict]:
        """Run a Flux query (``/api/v2/query``); the values of every record of every table it returns."""
        try:
            tables = self._client.query_api().query(query, org=self.org)
        except ApiException as exc:
            detail = exc.body.decode(errors="replace") if isinstance(exc.body, bytes) else str(exc.body or "")
            raise WriteError(
                f"InfluxDB {self.url} answered {exc.status} to a Flux query on bucket {self.bucket!r}: "
                f"{detail[:300].strip()}",
                retryable=is_retryable_status(exc.status or 0),
                status=exc.status,
            ) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise WriteError(f"InfluxDB {self.url} unreachable: {exc}", retryable=True) from None
        return [record.values for table in tables for record in table.records]

    def ping(self) -> bool:
        """``/ping`` answers without a token when the server is up (InfluxDB 1.8+, 2.x, VictoriaMetrics)."""
        try:
            return bool(self._client.ping())
        except (urllib3.exceptions.HTTPError, OSError):
            return False

    def close(self) -> None:
        self._client.close()
