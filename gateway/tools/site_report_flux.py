"""The site report's data from InfluxDB 2.x/3.x/Cloud (or 1.8+ with Flux on), read with Flux: the v2 twin of
``site_report.fetch_site``.

The same three questions as the InfluxQL path, asked in Flux over the schema the bridge
writes (docs/contracts.md): each sensor's readings averaged per interval (windows start
at the epoch, as InfluxQL's ``GROUP BY time``), the alerts, and the leak detector's night
decisions, fields pivoted into one row per point. ``fetch_site_flux(flux, bucket, ...)``
takes ``flux``: Flux text -> the rows of every table (``InfluxV2Writer.flux``).

Not run against a real Flux engine in the tests: no InfluxDB 2 server is on the build
machine, and VictoriaMetrics does not speak Flux (docs/operations.md says what is covered).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime

import numpy as np

from gateway.tools.site_report import Series, SiteData, check_period, interval_for, no_data_error

FluxQuery = Callable[[str], list[dict]]  # Flux -> every record's values (influxdb-client FluxRecord.values)
ALERT_FIELDS = ("severity", "message", "x_excess_lps")
NIGHT_FIELDS = ("label", "x_mnf_lps", "x_baseline_lps", "x_excess_lps")


def _string(text: str) -> str:
    """A Flux string literal (JSON's escapes are Flux's for quotes and backslashes).

    >>> _string('net3 "north"')
    '"net3 \\\\"north\\\\""'
    """
    return json.dumps(text)


def _rfc3339(time_ms: int) -> str:
    return datetime.fromtimestamp(time_ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _source(bucket: str, site: str, start_ms: int, end_ms: int, measurement: str) -> str:
    # range() stops before `stop`; InfluxQL's `time <= end` includes it: stop 1 ms later.
    return (
        f"from(bucket: {_string(bucket)})\n"
        f"  |> range(start: {_rfc3339(start_ms)}, stop: {_rfc3339(end_ms + 1)})\n"
        f"  |> filter(fn: (r) => r._measurement == {_string(measurement)} and r.site == {_string(site)})\n"
    )


def _fields(names: tuple[str, ...]) -> str:
    return " or ".join(f"r._field == {_string(n)}" for n in names)


def readings_flux(bucket: str, site: str, start_ms: int, end_ms: int, interval: str) -> str:
    """Each sensor's mean ``value`` per ``interval``, windows labelled by their start.

    >>> print(readings_flux("fleet", "net3", 0, 60_000, "1m"))  # doctest: +NORMALIZE_WHITESPACE
    from(bucket: "fleet")
      |> range(start: 1970-01-01T00:00:00.000Z, stop: 1970-01-01T00:01:00.001Z)
      |> filter(fn: (r) => r._measurement == "reading" and r.site == "net3")
      |> filter(fn: (r) => r._field == "value")
      |> group(columns: ["sensor", "quantity", "unit"])
      |> aggregateWindow(every: 1m, fn: mean, createEmpty: false, timeSrc: "_start")
      |> keep(columns: ["_time", "_value", "sensor", "quantity", "unit"])
    """
    return (
        _source(bucket, site, start_ms, end_ms, "reading")
        + '  |> filter(fn: (r) => r._field == "value")\n'
        + '  |> group(columns: ["sensor", "quantity", "unit"])\n'
        + f'  |> aggregateWindow(every: {interval}, fn: mean, createEmpty: false, timeSrc: "_start")\n'
        + '  |> keep(columns: ["_time", "_value", "sensor", "quantity", "unit"])'
    )


def points_flux(bucket: str, site: str, start_ms: int, end_ms: int, measurement: str, fields, where: str = "") -> str:
    """One row per point of ``measurement`` with ``fields`` as columns, in time order."""
    return (
        _source(bucket, site, start_ms, end_ms, measurement)
        + (f"  |> filter(fn: (r) => {where})\n" if where else "")
        + f"  |> filter(fn: (r) => {_fields(fields)})\n"
        + '  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")\n'
        + "  |> group()\n"
        + '  |> sort(columns: ["_time"])'
    )


def sites_flux(bucket: str) -> str:
    """The sites that have readings in ``bucket`` (for the "no data" message)."""
    return (
        'import "influxdata/influxdb/schema"\n'
        f'schema.tagValues(bucket: {_string(bucket)}, tag: "site", '
        'predicate: (r) => r._measurement == "reading", start: -100y)'
    )


def _ms(value) -> int:
    """A record's ``_time`` (a datetime from influxdb-client) as epoch milliseconds."""
    return round(value.timestamp() * 1000)


def _row(record: dict, columns: tuple[str, ...]) -> dict:
    return {"time": _ms(record["_time"])} | {c: record.get(c) for c in columns}


def fetch_site_flux(flux: FluxQuery, bucket: str, site: str, start_ms: int, end_ms: int) -> SiteData:
    """What ``site_report.fetch_site`` reads, from a Flux server; ReportError when there is nothing."""
    check_period(start_ms, end_ms)
    data = SiteData(site, start_ms, end_ms, interval_for(start_ms, end_ms))
    by_series: dict[tuple[str, str, str], list[tuple[int, float]]] = {}
    for record in flux(readings_flux(bucket, site, start_ms, end_ms, data.interval)):
        key = (record["sensor"], record["quantity"], record["unit"])
        by_series.setdefault(key, []).append((_ms(record["_time"]), float(record["_value"])))
    for (sensor, quantity, unit), rows in by_series.items():
        rows.sort()
        data.series.append(
            Series(
                sensor,
                quantity,
                unit,
                np.array([t for t, _ in rows], dtype=np.int64),
                np.array([v for _, v in rows], dtype=float),
            )
        )
    data.series.sort(key=lambda s: (s.quantity, s.sensor))
    data.alerts = [
        _row(r, ("alert_id", "state", *ALERT_FIELDS))
        for r in flux(points_flux(bucket, site, start_ms, end_ms, "alert", ALERT_FIELDS))
    ]
    data.nights = [
        _row(r, NIGHT_FIELDS)
        for r in flux(points_flux(bucket, site, start_ms, end_ms, "detection", NIGHT_FIELDS, 'r.kind == "leak"'))
    ]
    if not data.series and not data.alerts and not data.nights:
        raise no_data_error(site, start_ms, end_ms, sorted({str(r["_value"]) for r in flux(sites_flux(bucket))}))
    return data
