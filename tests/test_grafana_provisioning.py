"""Grafana provisioning (dashboards/provisioning/): its files against Grafana's schema, its alert rules on real data.

Grafana itself is not installed here, so the files are checked against the JSON Schemas in
dashboards/provisioning/schema/ (each says which Grafana source file it follows), then
cross-checked (data source uids, rule uids, the provider's folder). Each rule's InfluxQL runs on
the real InfluxDB of the ``services`` fixture with points written for it, and its reduce and
threshold expressions are applied as Grafana's server-side expressions do, to see which
series fire.
"""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path

import jsonschema
import pytest
import yaml

from gateway.bridge.influx_writer import InfluxV1Writer

DASHBOARDS = Path(__file__).resolve().parents[1] / "dashboards"
PROVISIONING = DASHBOARDS / "provisioning"
# Where Grafana's packages and Docker image read provisioning; dashboards/provisioning/ is installed there.
GRAFANA_PROVISIONING = "/etc/grafana/provisioning"
SCHEMA_OF = {"datasources": "datasources.json", "dashboards": "dashboards.json", "alerting": "alerting.json"}
EXPRESSIONS_UID = "__expr__"  # Grafana's server-side expressions, not a data source


def provisioning_files() -> list[Path]:
    return sorted(p for kind in SCHEMA_OF for p in (PROVISIONING / kind).glob("*.y*ml"))


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def alert_rules() -> dict[str, dict]:
    """uid -> rule, over every alerting file (a duplicate uid fails the uniqueness test, not this)."""
    return {
        r["uid"]: r
        for p in (PROVISIONING / "alerting").glob("*.y*ml")
        for g in load(p).get("groups", [])
        for r in g["rules"]
    }


def test_every_kind_of_provisioning_has_a_file():
    assert {p.parent.name for p in provisioning_files()} == set(SCHEMA_OF)


@pytest.mark.parametrize("path", provisioning_files(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_a_provisioning_file_follows_grafanas_schema(path):
    schema = json.loads((PROVISIONING / "schema" / SCHEMA_OF[path.parent.name]).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    errors = [
        f"{path.name}: {'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in jsonschema.Draft202012Validator(schema).iter_errors(load(path))
    ]
    assert not errors, "\n".join(errors)


def test_the_schema_refuses_a_misspelt_key():
    schema = json.loads((PROVISIONING / "schema" / "alerting.json").read_text())
    rules = load(PROVISIONING / "alerting" / "frugalsense-rules.yaml")
    rules["groups"][0]["rules"][0]["noDataStat"] = "OK"
    with pytest.raises(jsonschema.ValidationError, match="noDataStat"):
        jsonschema.validate(rules, schema, cls=jsonschema.Draft202012Validator)


def datasource_uids() -> set[str]:
    return {ds["uid"] for p in (PROVISIONING / "datasources").glob("*.y*ml") for ds in load(p)["datasources"]}


def test_the_datasource_is_influxql_from_the_environment():
    (ds,) = load(PROVISIONING / "datasources" / "frugalsense.yaml")["datasources"]
    assert ds["type"] == "influxdb" and "version" not in ds.get("jsonData", {})  # no version = InfluxQL
    for value in (ds["url"], ds["user"], ds["jsonData"]["dbName"], ds["secureJsonData"]["password"]):
        assert re.fullmatch(r"\$\{FRUGALSENSE_INFLUX_[A-Z]+\}", value), value


def test_every_rule_query_uses_a_provisioned_datasource():
    uids = datasource_uids()
    for uid, rule in alert_rules().items():
        for query in rule["data"]:
            assert query["datasourceUid"] in uids | {EXPRESSIONS_UID}, uid
            model_uid = query["model"].get("datasource", {}).get("uid", query["datasourceUid"])
            assert model_uid == query["datasourceUid"], uid
        assert rule["condition"] in {q["refId"] for q in rule["data"]}, uid


def test_rule_uids_are_unique():
    uids = [
        r["uid"]
        for p in (PROVISIONING / "alerting").glob("*.y*ml")
        for g in load(p).get("groups", [])
        for r in g["rules"]
    ]
    assert len(uids) == len(set(uids)) and {"frugalsense-leak-raised", "frugalsense-gateway-silent"} <= set(uids)


def _datasources_in(node) -> list[str]:
    if isinstance(node, dict):
        found = [node["datasource"]["uid"]] if isinstance(node.get("datasource"), dict) else []
        return found + [uid for value in node.values() for uid in _datasources_in(value)]
    if isinstance(node, list):
        return [uid for value in node for uid in _datasources_in(value)]
    return []


def provided_dashboards() -> list[Path]:
    """The dashboards the provider's folder holds, with its Grafana path mapped to this repository."""
    (provider,) = load(PROVISIONING / "dashboards" / "frugalsense.yaml")["providers"]
    path = provider["options"]["path"]
    assert path.startswith(GRAFANA_PROVISIONING + "/"), path
    return sorted((PROVISIONING / path.removeprefix(GRAFANA_PROVISIONING + "/")).glob("*.json"))


def test_the_provider_folder_holds_the_dashboard_and_its_datasources_exist():
    (board,) = provided_dashboards()
    assert board.read_text() == (DASHBOARDS / "grafana-frugalsense.json").read_text(), (
        "run dashboards/build_dashboards.py"
    )
    dashboard = json.loads(board.read_text())
    used = set(_datasources_in(dashboard))
    assert used and used <= datasource_uids(), used
    assert "${" not in board.read_text()  # Grafana expands no variables in a provisioned dashboard
    assert {r.get("dashboardUid") for r in alert_rules().values()} == {dashboard["uid"]}
    titles = {p["id"]: p["title"] for p in dashboard["panels"]}
    linked = {uid: titles.get(r["panelId"]) for uid, r in alert_rules().items()}  # Grafana links the alert there
    assert linked == {
        "frugalsense-leak-raised": "Leak alerts by zone",
        "frugalsense-gateway-silent": "Gateways: online now (time = last seen)",
    }


def test_the_policy_sends_to_a_provisioned_contact_point():
    contact = load(PROVISIONING / "alerting" / "frugalsense-contact.yaml")
    names = {c["name"] for c in contact["contactPoints"]}
    assert {p["receiver"] for p in contact["policies"]} <= names


# ---- the rules' InfluxQL on a real InfluxDB --------------------------------------------------


def evaluate(rule: dict, writer: InfluxV1Writer, now_ms: int) -> dict[tuple, float]:
    """Labels -> value of each alert instance that fires, as Grafana evaluates query A, reduce B, threshold C."""
    by_ref = {q["refId"]: q for q in rule["data"]}
    a, b, c = by_ref["A"], by_ref["B"]["model"], by_ref["C"]["model"]
    assert b["type"] == "reduce" and b["expression"] == "A" and c["type"] == "threshold" and c["expression"] == "B"
    span = a["relativeTimeRange"]
    start, end = now_ms - 1000 * span["from"], now_ms - 1000 * span["to"]
    query = a["model"]["query"].replace("$timeFilter", f"time >= {start}ms and time <= {end}ms")
    assert "$" not in query, query
    firing = {}
    for series in writer.query(query):
        values = [v for row in series["values"] for v in row[1:] if v is not None]  # dropNN
        reduced = {"sum": sum, "last": lambda v: v[-1] if v else math.nan}[b["reducer"]](values)
        (condition,) = c["conditions"]
        kind, (limit,) = condition["evaluator"]["type"], condition["evaluator"]["params"]
        if {"gt": reduced > limit, "lt": reduced < limit}[kind]:
            firing[tuple(sorted((series.get("tags") or {}).items()))] = reduced
    return firing


@pytest.fixture
def influx(services, request):
    writer = InfluxV1Writer(
        services.influx_url, f"grafana_{request.node.name[5:40]}".replace("[", "_").replace("]", "")
    )
    writer.execute(f'DROP DATABASE "{writer.database}"')
    writer.ensure_database()
    return writer


def _alert(kind: str, alert_id: str, state: str, at_ms: int, site: str = "net3") -> str:
    return (
        f"alert,site={site},gateway=gw-{site},kind={kind},alert_id={alert_id},state={state} "
        f'severity="high",message="{kind} {state}",score=0.9 {at_ms}'
    )


def _statuses(gateway: str, online: int, minutes: range, now_ms: int) -> list[str]:
    """One status a minute, ``minutes`` ago, as the gateway runner sends them (STATUS_EVERY_S = 60)."""
    return [
        f'gateway_status,site=net3,gateway={gateway} online={online}i,state="{"online" if online else "offline"}" '
        f"{now_ms - 60_000 * m}"
        for m in minutes
    ]


MINUTE = 60_000


def test_the_leak_rule_fires_on_a_raised_leak_alert(influx):
    now = int(time.time() * 1000)
    influx.write(
        [
            _alert("leak", "net3-leak-7", "raised", now - 5 * MINUTE),
            _alert("air_pattern", "a-1", "raised", now - MINUTE),
        ]
    )
    firing = evaluate(alert_rules()["frugalsense-leak-raised"], influx, now)
    assert firing == {(("alert_id", "net3-leak-7"), ("site", "net3")): 1}


def test_the_leak_rule_is_quiet_without_a_recent_raised_leak(influx):
    now = int(time.time() * 1000)
    influx.write(
        [
            _alert("leak", "net3-leak-1", "raised", now - 45 * MINUTE),  # older than the rule's 30 minutes
            _alert("leak", "net3-leak-1", "cleared", now - 5 * MINUTE),
            _alert("sensor_silent", "s-1", "raised", now - 2 * MINUTE),
            *_statuses("gw-a", 1, range(0, 10), now),
        ]
    )
    rule = alert_rules()["frugalsense-leak-raised"]
    assert evaluate(rule, influx, now) == {} and rule["noDataState"] == "OK"  # no series: NoData, which is OK


def test_the_silent_rule_fires_on_a_silent_or_offline_gateway(influx):
    now = int(time.time() * 1000)
    influx.write(
        [
            *_statuses("gw-alive", 1, range(0, 40), now),
            *_statuses("gw-silent", 1, range(20, 60), now),  # last heard 20 minutes ago
            *_statuses("gw-offline", 1, range(20, 60), now),
            *_statuses("gw-offline", 0, range(1, 20), now),  # still sending, but offline
        ]
    )
    firing = evaluate(alert_rules()["frugalsense-gateway-silent"], influx, now)
    assert firing == {(("gateway", "gw-offline"), ("site", "net3")): 0, (("gateway", "gw-silent"), ("site", "net3")): 0}


def test_the_silent_rule_is_quiet_on_a_healthy_fleet(influx):
    now = int(time.time() * 1000)
    influx.write([*_statuses("gw-a", 1, range(0, 30), now), *_statuses("gw-b", 1, range(3, 30), now)])
    assert evaluate(alert_rules()["frugalsense-gateway-silent"], influx, now) == {}
