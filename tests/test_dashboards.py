"""Every dashboard query runs against a real InfluxDB 1.6 filled by the real gateway -> MQTT -> bridge path.

The Grafana dashboard's InfluxQL is run with Grafana's macros substituted ($timeFilter,
$__interval, $site as the "All" value) and each panel must return the series it is
meant to show. The InfluxDB 2.x template (Flux) is only checked structurally: there is
no InfluxDB 2 server on this machine (Debian ships InfluxDB 1.6; VictoriaMetrics does
not run Flux).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from gateway.bridge.influx_points import MEASUREMENTS

DASHBOARDS = Path(__file__).resolve().parents[1] / "dashboards"
GRAFANA = DASHBOARDS / "grafana-frugalsense.json"
FLUX = DASHBOARDS / "influxdb2-template.yml"


def grafana_queries() -> dict[str, str]:
    """Title -> InfluxQL of every panel target, annotation and template variable."""
    board = json.loads(GRAFANA.read_text())
    queries = {}
    for panel in board["panels"]:
        targets = panel.get("targets", [])
        for target in targets:
            queries[panel["title"] + (f" [{target['refId']}]" if len(targets) > 1 else "")] = target["query"]
    for annotation in board["annotations"]["list"]:
        queries[f"annotation: {annotation['name']}"] = annotation["query"]
    for variable in board["templating"]["list"]:
        queries[f"variable: {variable['name']}"] = variable["query"]
    return queries


def substitute(query: str, start_ms: int, end_ms: int) -> str:
    """What Grafana sends for a time range, a 1 h interval and site = All."""
    query = query.replace("$timeFilter", f"time >= {start_ms}ms and time <= {end_ms}ms")
    query = query.replace("$__interval", "1h").replace("$site", ".*")
    assert not re.search(r"\$(\w|\{)", query), f"unsubstituted macro in {query}"  # /^...$/ is a regex anchor
    return query


def _rows(series: dict) -> list[dict]:
    return [dict(zip(series["columns"], values, strict=True)) for values in series["values"]]


def _tags(result: list[dict]) -> list[dict]:
    return sorted((s.get("tags") or {} for s in result), key=lambda t: sorted(t.items()))


def _expect_fleet(r, d):
    assert _tags(r) == [
        {"gateway": d.air_gateway, "site": d.air_site},
        {"gateway": d.water_gateway, "site": d.water_site},
    ]
    for series in r:  # both stopped cleanly: their last status is 'offline' (the will's state)
        (row,) = _rows(series)
        assert row["state"] == "offline" and row["online"] == 0


def _expect_backlog(r, d):
    assert {t["gateway"] for t in _tags(r)} == {d.air_gateway, d.water_gateway}
    assert all(isinstance(row["max"], (int, float)) for s in r for row in _rows(s))


def _expect_leak_alerts(r, d):
    assert _tags(r) == [{"site": d.water_site}]
    rows = _rows(r[0])
    raised = [row for row in rows if row["state"] == "raised"]
    assert [row["alert_id"] for row in raised] == [a.alert_id for a in d.alerts if a.state == "raised"]
    assert all(row["estimated flow (L/s)"] > 0 for row in raised)


def _expect_leak_flow(r, d):
    assert _tags(r) == [{"site": d.water_site}]
    values = [row["max"] for row in _rows(r[0])]
    assert max(values) > 0 and len(values) >= 3  # one per night with a baseline


def _expect_night_flow(r, d):
    assert _tags(r) == [{"site": d.water_site}]
    rows = _rows(r[0])
    assert {"night flow", "baseline"} <= set(rows[0])
    assert any(row["baseline"] is not None and row["night flow"] > row["baseline"] for row in rows)


def _air(quantity_floor):
    def check(r, d):
        assert _tags(r) == [{"site": d.air_site}]  # the water site has no air readings
        values = [row["mean"] for row in _rows(r[0])]
        assert len(values) >= 14 * 24 - 1 and max(values) > quantity_floor

    return check


def _count(r, column):
    return sum(row[column] for s in r for row in _rows(s))


def _expect_decisions(r, d):
    assert _tags(r) == [{"kind": "leak"}]
    assert _count(r, "decisions") == len(d.detections)  # MNF one per night, the learned model one per step


def _expect_flagged(r, d):
    assert _tags(r) == [{"kind": "leak"}]
    assert _count(r, "flagged leak") == sum(x.label == "leak" for x in d.detections) >= 1


def _expect_models(r, d):
    deployed = sorted({(x.model, x.model_version) for x in d.detections})
    assert _tags(r) == [
        {"gateway": d.water_gateway, "model": model, "model_version": version, "site": d.water_site}
        for model, version in deployed
    ]
    assert {"mnf-leak", "leak-ml"} <= {model for model, _ in deployed}


def _expect_annotation(r, d):
    rows = _rows(r[0])
    assert len(rows) == sum(a.state == "raised" for a in d.alerts)
    assert all("possible leak" in row["message"].lower() for row in rows)


def _expect_sites(r, d):
    assert {row["value"] for row in _rows(r[0])} == {d.air_site, d.water_site}


EXPECTED = {
    "Gateways: online now (time = last seen)": _expect_fleet,
    "Outbox backlog": _expect_backlog,
    "Leak alerts by zone": _expect_leak_alerts,
    "Estimated leak flow by zone": _expect_leak_flow,
    "Minimum night flow vs baseline": _expect_night_flow,
    "PM2.5 by site (EAQI bands)": _air(50),  # the episode reaches 'poor'
    "PM10 by site (EAQI bands)": _air(80),
    "NO2 by site (EAQI bands)": _air(60),
    "Detections over time [A]": _expect_decisions,
    "Detections over time [B]": _expect_flagged,
    "Model versions deployed": _expect_models,
    "annotation: Leak alerts": _expect_annotation,
    "variable: site": _expect_sites,
}


# ---- panels of measurements the demo does not write yet: points written here, in line protocol ----------
# Issue 17's fixed schemas: alert_state (the alert lifecycle), gateway_status "health:*" fields, the
# sensor_silent alert kind. Their own database, so the demo's counts above stay exact.

HEALTH_FIELDS = ("cpu_percent", "rss_mb", "disk_free_mb", "soc_temp_c", "outbox_backlog", "outbox_oldest_age_s")


@pytest.fixture(scope="module")
def written_influx(services):
    from gateway.bridge.influx_writer import InfluxV1Writer

    writer = InfluxV1Writer(services.influx_url, "dashboard_written")
    writer.execute('DROP DATABASE "dashboard_written"')
    writer.ensure_database()
    start = int(time.time() * 1000) - 3_600_000
    lines = []
    for gateway, base in (("gw-net3-01", 10.0), ("gw-lyon-02", 50.0)):
        for minute in range(0, 60, 5):
            health = ",".join(f"health:{f}={base + i + minute / 100}" for i, f in enumerate(HEALTH_FIELDS))
            lines.append(
                f'gateway_status,site=net3,gateway={gateway} online=1i,state="online",{health} '
                f"{start + minute * 60_000}"
            )
    lines += [
        f'alert,site=net3,gateway=gw-net3-01,kind=leak,alert_id=net3-leak-1,state=raised severity="high",'
        f'message="Possible leak in zone net3" {start + 60_000}',
        f"alert,site=net3,gateway=gw-net3-01,kind=sensor_silent,alert_id=net3-silent-J12,state=raised "
        f'severity="warning",message="Sensor J12 silent for 30 min" {start + 120_000}',
        f'alert_state,site=net3,gateway=gw-net3-01,alert_id=net3-leak-1,action=ack by="claire" {start + 180_000}',
        f'alert_state,site=net3,gateway=gw-net3-01,alert_id=net3-leak-1,action=assign by="claire",'
        f'assignee="marc" {start + 240_000}',
        f'alert_state,site=net3,gateway=gw-net3-01,alert_id=net3-leak-1,action=comment by="marc",'
        f'text="vanne fermée rue Pasteur" {start + 300_000}',
    ]
    writer.write(lines)
    return SimpleNamespace(writer=writer, start_ms=start - 60_000, gateways={"gw-net3-01", "gw-lyon-02"})


def _expect_lifecycle(r, d):
    rows = _rows(r[0])
    assert [row["action"] for row in rows] == ["comment", "assign", "ack"]  # newest first: the last action on top
    assert rows[0]["comment"] == "vanne fermée rue Pasteur" and rows[0]["by"] == "marc"
    assert rows[1]["assignee"] == "marc" and rows[2]["by"] == "claire" and rows[2]["assignee"] is None


def _expect_health_now(r, d):
    assert {t["gateway"] for t in _tags(r)} == d.gateways
    for series in r:
        (row,) = _rows(series)
        assert all(isinstance(row[title], float) for title in ("CPU", "Memory (RSS)", "SoC temperature")), row


def _health(index):
    def check(r, d):
        assert {t["gateway"] for t in _tags(r)} == d.gateways
        values = [row["max"] for s in r for row in _rows(s)]
        assert len(values) >= 2 and min(values) >= 10 + index  # one max per hour ($__interval) and gateway
        assert max(values) == pytest.approx(50 + index + 0.55)  # gw-lyon-02's last point, 55 minutes in

    return check


def _expect_every_kind(r, d):
    rows = _rows(r[0])
    assert [row["kind"] for row in rows] == ["sensor_silent", "leak"]  # the silent sensor shows, newest first
    assert rows[0]["message"].startswith("Sensor J12 silent")


EXPECTED_WRITTEN = {
    "Alert lifecycle: recent actions": _expect_lifecycle,
    "Gateway health now (last values)": _expect_health_now,
    "CPU": _health(0),
    "Memory (RSS)": _health(1),
    "Free disk on the data dir": _health(2),
    "SoC temperature": _health(3),
    "Outbox backlog (health)": _health(4),
    "Oldest outbox message age": _health(5),
    "Alerts of every kind": _expect_every_kind,
}


@pytest.mark.parametrize("title", sorted(EXPECTED_WRITTEN))
def test_grafana_query_returns_the_written_series(written_influx, title):
    end_ms = int(time.time() * 1000) + 60_000
    query = substitute(grafana_queries()[title], written_influx.start_ms, end_ms)
    result = written_influx.writer.query(query)
    assert result, f"no series for {title!r}: {query}"
    EXPECTED_WRITTEN[title](result, written_influx)


def test_the_fleet_table_time_is_when_each_gateway_was_last_seen(written_influx):
    end_ms = int(time.time() * 1000) + 60_000
    query = substitute(grafana_queries()["Gateways: online now (time = last seen)"], written_influx.start_ms, end_ms)
    last_status_ms = written_influx.start_ms + 60_000 + 55 * 60_000
    assert {_rows(s)[0]["time"] for s in written_influx.writer.query(query)} == {last_status_ms}


def test_every_grafana_query_has_an_expectation():
    assert set(grafana_queries()) == set(EXPECTED) | set(EXPECTED_WRITTEN)


@pytest.mark.parametrize("title", sorted(EXPECTED))
def test_grafana_query_returns_its_series(demo_influx, title):
    end_ms = int(time.time() * 1000) + 60_000  # status points carry the wall-clock time
    query = substitute(grafana_queries()[title], demo_influx.start_ms, end_ms)
    result = demo_influx.writer.query(query)
    assert result, f"no series for {title!r}: {query}"
    EXPECTED[title](result, demo_influx)


def test_a_site_filter_narrows_every_site_panel(demo_influx):
    end_ms = int(time.time() * 1000) + 60_000
    for title, query in grafana_queries().items():
        if "$site" not in query:
            continue
        only_air = substitute(query, demo_influx.start_ms, end_ms).replace("/^.*$/", f"/^{demo_influx.air_site}$/")
        for series in demo_influx.writer.query(only_air):
            assert (series.get("tags") or {}).get("site", demo_influx.air_site) == demo_influx.air_site, title


# ---- InfluxDB 2.x template (Flux): structure only --------------------------------------


def flux_template() -> list[dict]:
    return [doc for doc in yaml.safe_load_all(FLUX.read_text()) if doc]


def test_the_flux_template_is_a_dashboard_whose_queries_use_the_contract_schema():
    docs = flux_template()
    kinds = {doc["kind"] for doc in docs}
    assert {"Dashboard", "Variable"} <= kinds
    assert all(doc["apiVersion"] == "influxdata.com/v2alpha1" and doc["metadata"]["name"] for doc in docs)
    (board,) = [doc for doc in docs if doc["kind"] == "Dashboard"]
    charts = board["spec"]["charts"]
    fields = {
        "reading": {"value", "quality"},
        "detection": {"score", "label", "x_excess_lps", "x_mnf_lps", "x_baseline_lps"},
        "alert": {"alert_id", "message", "x_excess_lps", "severity"},
        "gateway_status": {"online", "state", "outbox_backlog"} | {f"health:{f}" for f in HEALTH_FIELDS},
        "alert_state": {"by", "assignee", "text"},  # issue 17's alert lifecycle
    }
    dashboard_measurements = set(MEASUREMENTS) | {"alert_state"}
    seen_measurements = set()
    for chart in charts:
        assert chart["name"] and chart["queries"], chart
        for q in chart["queries"]:
            flux = q["query"]
            assert flux.lstrip().startswith("from(bucket: v.bucket)"), chart["name"]
            assert "|> range(start: v.timeRangeStart, stop: v.timeRangeStop)" in flux, chart["name"]
            measurements = set(re.findall(r'r\._measurement == "([a-z_]+)"', flux))
            assert len(measurements) == 1 and measurements <= dashboard_measurements, chart["name"]
            measurement = measurements.pop()
            seen_measurements.add(measurement)
            used = set(re.findall(r'r\._field == "([a-z0-9_:]+)"', flux))
            assert used and used <= fields[measurement], (chart["name"], used)
            assert flux.count("(") == flux.count(")"), chart["name"]
    assert seen_measurements == dashboard_measurements
    grafana_titles = {t.split(" [")[0] for t in grafana_queries() if not t.startswith(("annotation", "variable"))}
    assert {c["name"] for c in charts} == grafana_titles  # the two dashboards show the same things


def test_the_committed_dashboards_are_what_the_builder_writes():
    import runpy

    built = runpy.run_path(str(DASHBOARDS / "build_dashboards.py"))  # defines the texts, writes nothing
    assert GRAFANA.read_text() == built["GRAFANA_TEXT"], "run python dashboards/build_dashboards.py"
    assert FLUX.read_text() == built["FLUX_TEXT"], "run python dashboards/build_dashboards.py"
