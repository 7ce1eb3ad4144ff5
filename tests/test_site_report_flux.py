"""`frugalsense report --influx-api v2`: what can be checked here without a Flux server.

No InfluxDB 2.x/3.x is on the build machine and neither real server here speaks Flux, so:
- against real VictoriaMetrics and real InfluxDB 1.6, the command says plainly that the server does not
  answer Flux (their real answers to /api/v2/query);
- the rows influxdb-client's own CSV parser makes of a Flux answer (annotated CSV in the documented format,
  written here) become the same SiteData the InfluxQL path builds.
A real Flux engine running these queries is NOT covered (docs/operations.md).
"""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pytest
from influxdb_client.client.flux_csv_parser import FluxCsvParser, FluxSerializationMode

from gateway.cli import main
from gateway.tools.site_report import ReportError
from gateway.tools.site_report_flux import fetch_site_flux, readings_flux

T0 = 1_772_409_600_000  # 2026-03-02T00:00Z


def report_v2(url: str, out) -> list[str]:
    return [
        "report",
        "--influx-api",
        "v2",
        "--influx-url",
        url,
        "--bucket",
        "frugalsense",
        "--org",
        "water",
        "--site",
        "net3",
        "--from",
        "2026-03-01",
        "--to",
        "2026-03-02",
        "--out",
        str(out),
    ]


def test_a_server_without_flux_is_named_as_such(services, vm_services, tmp_path, capsys):
    assert main(report_v2(vm_services.vm_url, tmp_path)) == 2
    err = capsys.readouterr().err
    assert (
        "answered 400 to a Flux query on bucket 'frugalsense'" in err
        and 'unsupported path requested: "/api/v2/query"' in err
    )
    assert "this server does not answer Flux on /api/v2/query" in err
    assert main(report_v2(services.influx_url, tmp_path)) == 2  # Debian's InfluxDB 1.6: no Flux at all
    assert "answered 404 to a Flux query" in capsys.readouterr().err


def annotated_csv(*tables: tuple[list[str], list[str], list[list[str]]]) -> str:
    """Flux's annotated CSV: per table #datatype, #group, #default and the header, then its rows."""
    out = []
    for i, (datatypes, columns, rows) in enumerate(tables):
        group = ["false"] * len(columns)
        out += [
            "#datatype," + ",".join(["string", "long", *datatypes]),
            "#group," + ",".join(["false", "false", *group]),
            "#default," + ",".join(["_result", ""] + [""] * len(columns)),
            ",result,table," + ",".join(columns),
        ]
        out += [",," + ",".join([str(i), *row]) for row in rows]
        out.append("")
    return "\r\n".join(out)


def parsed(csv_text: str) -> list[dict]:
    """What InfluxV2Writer.flux returns for this answer: influxdb-client's own parser, record values."""
    parser = FluxCsvParser(response=io.BytesIO(csv_text.encode()), serialization_mode=FluxSerializationMode.tables)
    for _ in parser.generator():  # in tables mode the parser collects the tables as it goes (as QueryApi.query)
        pass
    return [record.values for table in parser.table_list() for record in table.records]


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def test_flux_rows_become_the_report_data(tmp_path):
    readings = annotated_csv(
        (
            ["dateTime:RFC3339", "double", "string", "string", "string"],
            ["_time", "_value", "sensor", "quantity", "unit"],
            [[iso(T0 + k * 60_000), str(100 + k), "F-lake", "flow", "L/s"] for k in (2, 0, 1)],
        ),
        (
            ["dateTime:RFC3339", "double", "string", "string", "string"],
            ["_time", "_value", "sensor", "quantity", "unit"],
            [[iso(T0), "41.5", "P-15", "pressure", "m"]],
        ),
    )
    alerts = annotated_csv(
        (
            ["dateTime:RFC3339", "string", "string", "string", "string", "double"],
            ["_time", "alert_id", "state", "severity", "message", "x_excess_lps"],
            [[iso(T0 + 90_000), "leak-1", "raised", "high", "Possible leak", "141.9"]],
        )
    )
    nights = annotated_csv(
        (
            ["dateTime:RFC3339", "string", "double", "double", "double"],
            ["_time", "label", "x_mnf_lps", "x_baseline_lps", "x_excess_lps"],
            [[iso(T0 + 60_000), "leak", "875.4", "680.9", "194.5"]],
        )
    )
    answers = {'"reading"': readings, '"alert"': alerts, '"detection"': nights}

    def flux(query: str) -> list[dict]:
        return next(parsed(csv) for key, csv in answers.items() if f"r._measurement == {key}" in query)

    data = fetch_site_flux(flux, "frugalsense", "net3", T0, T0 + 3_600_000)
    assert [(s.sensor, s.quantity, s.unit) for s in data.series] == [
        ("F-lake", "flow", "L/s"),
        ("P-15", "pressure", "m"),
    ]
    assert list(data.series[0].time_ms) == [T0, T0 + 60_000, T0 + 120_000]  # sorted by time
    assert list(data.series[0].value) == [100.0, 101.0, 102.0]
    assert data.alerts == [
        {
            "time": T0 + 90_000,
            "alert_id": "leak-1",
            "state": "raised",
            "severity": "high",
            "message": "Possible leak",
            "x_excess_lps": 141.9,
        }
    ]
    assert data.nights == [
        {"time": T0 + 60_000, "label": "leak", "x_mnf_lps": 875.4, "x_baseline_lps": 680.9, "x_excess_lps": 194.5}
    ]
    assert data.interval == "1m"


def test_no_rows_names_the_sites_the_bucket_has():
    sites = annotated_csv((["string"], ["_value"], [["net3-north"], ["city-centre"]]))

    def flux(query: str) -> list[dict]:
        return parsed(sites) if "schema.tagValues" in query else []

    with pytest.raises(
        ReportError, match=r"no data for site 'net9' .* \(sites in this database: city-centre, net3-north\)"
    ):
        fetch_site_flux(flux, "frugalsense", "net9", T0, T0 + 3_600_000)


def test_the_readings_window_matches_influxql_group_by_time():
    """InfluxQL's GROUP BY time(14m) labels each bucket by its start; so does aggregateWindow(timeSrc: "_start")."""
    text = readings_flux("b", "s", T0, T0 + 14 * 86_400_000, "14m")
    assert 'aggregateWindow(every: 14m, fn: mean, createEmpty: false, timeSrc: "_start")' in text
    assert "stop: 2026-03-16T00:00:00.001Z" in text  # InfluxQL's time <= end includes the end
