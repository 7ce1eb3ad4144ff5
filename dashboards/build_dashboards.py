"""Writes the ops dashboards: Grafana (InfluxQL, InfluxDB 1.x) and an InfluxDB 2.x template (Flux), same panels.

Run it after changing a panel: ``python dashboards/build_dashboards.py``; tests/test_dashboards.py
checks the committed files are what this writes, then runs every InfluxQL query on real data.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # dashboards/ is a folder of scripts, not a package: its modules import by name

from health_fields import HEALTH  # noqa: E402
from influxdb2_template import FLUX_TEXT  # noqa: E402

# The uid dashboards/provisioning/datasources/frugalsense.yaml gives the data source: a provisioned dashboard
# is not passed through the import dialog, so an ${DS_...} input would stay unresolved there.
DS_UID = "frugalsense-influxdb"
DS = {"type": "influxdb", "uid": DS_UID}
SITE = '"site" =~ /^$site$/'
EAQI = {  # Good/Fair/Moderate/Poor/Very poor/Extremely poor upper bounds (field notes)
    "pm25": [10, 20, 25, 50, 75],
    "pm10": [20, 40, 50, 100, 150],
    "no2": [40, 90, 120, 230, 340],
}
COLORS = ["#50F0E6", "#50CCAA", "#F0E641", "#FF5050", "#960032", "#7D2181"]


def thresholds(bounds):
    """Grafana threshold steps coloured by EAQI band, from a pollutant's five upper bounds."""
    # strict: six colours, one below the first bound and one above each of the five.
    steps = [{"color": COLORS[0], "value": None}] + [
        {"color": c, "value": v} for c, v in zip(COLORS[1:], bounds, strict=True)
    ]
    return {"mode": "absolute", "steps": steps}


panels = []
Y_SHIFT = [0]  # rows inserted above a section push its hard-coded y down by this much


def panel(title, kind, query, fmt, x, y, w, h, description, unit=None, thr=None, extra=None):
    """Add a Grafana panel with one raw InfluxQL query at grid position (x, y), w by h."""
    p = {
        "id": len(panels) + 1,
        "title": title,
        "type": kind,
        "description": description,
        "datasource": DS,
        "gridPos": {"x": x, "y": y + Y_SHIFT[0], "w": w, "h": h},
        "targets": [{"refId": "A", "datasource": DS, "rawQuery": True, "query": query, "resultFormat": fmt}],
        "fieldConfig": {"defaults": {}, "overrides": []},
        "options": {},
    }
    if unit:
        p["fieldConfig"]["defaults"]["unit"] = unit
    if thr:
        p["fieldConfig"]["defaults"]["thresholds"] = thr
        p["fieldConfig"]["defaults"]["color"] = {"mode": "thresholds"}
        if kind == "timeseries":
            p["fieldConfig"]["defaults"]["custom"] = {"thresholdsStyle": {"mode": "area"}}
    if extra:
        p.update(extra)
    panels.append(p)


def row(title, y):
    """Add a Grafana row header spanning the dashboard's width at height y."""
    panels.append(
        {
            "id": len(panels) + 1,
            "type": "row",
            "title": title,
            "collapsed": False,
            "gridPos": {"x": 0, "y": y + Y_SHIFT[0], "w": 24, "h": 1},
            "panels": [],
        }
    )


row("Fleet", 0)
panel(
    "Gateways: online now (time = last seen)",
    "table",
    # One selector (last) and a plain field: the row's time is then that status's (two selectors give time 0).
    'SELECT last("online") AS "online", "state" FROM "gateway_status" '
    f'WHERE {SITE} AND $timeFilter GROUP BY "site", "gateway"',
    "table",
    0,
    1,
    12,
    7,
    "One row per gateway: its last retained status (online 1 / offline 0) and when the bridge last heard from it.",
    extra={"transformations": [{"id": "merge", "options": {}}]},
)
panel(
    "Outbox backlog",
    "timeseries",
    f'SELECT max("outbox_backlog") FROM "gateway_status" WHERE {SITE} AND $timeFilter '
    'GROUP BY time($__interval), "site", "gateway" fill(none)',
    "time_series",
    12,
    1,
    12,
    7,
    "Messages waiting on each gateway for the broker. A backlog that grows means the uplink or the broker is down.",
    unit="short",
)
row("Fleet: gateway health", 8)
panel(
    "Gateway health now (last values)",
    "table",
    "SELECT "
    + ", ".join(f'last("health:{field}") AS "{title}"' for field, title, _, _ in HEALTH)
    + f' FROM "gateway_status" WHERE {SITE} AND $timeFilter GROUP BY "site", "gateway"',
    "table",
    0,
    9,
    24,
    6,
    "One row per gateway: the last health it reported. When it was last heard from is in the "
    "'Gateways: online now' table above.",
    extra={"transformations": [{"id": "merge", "options": {}}]},
)
for i, (field, title, unit, note) in enumerate(HEALTH):
    panel(
        title,
        "timeseries",
        f'SELECT max("health:{field}") FROM "gateway_status" WHERE {SITE} AND $timeFilter '
        'GROUP BY time($__interval), "site", "gateway" fill(none)',
        "time_series",
        8 * (i % 3),
        15 + 7 * (i // 3),
        8,
        7,
        note + " One line per gateway.",
        unit=unit,
    )
Y_SHIFT[0] = 21
row("Water: leaks", 8)
panel(
    "Leak alerts by zone",
    "table",
    'SELECT "alert_id", "state", "severity", "x_excess_lps" AS "estimated flow (L/s)", "message" FROM "alert" '
    f'WHERE "kind" = \'leak\' AND {SITE} AND $timeFilter GROUP BY "site"',
    "table",
    0,
    9,
    12,
    7,
    "Every leak alert raised or cleared, with the leak flow the night-flow detector estimated.",
)
panel(
    "Alert lifecycle: recent actions",
    "table",
    'SELECT "site", "alert_id", "action", "by", "assignee", "text" AS "comment" FROM "alert_state" '
    f"WHERE {SITE} AND $timeFilter ORDER BY time DESC",
    "table",
    12,
    9,
    12,
    7,
    "What people did to alerts, newest first: acknowledged, assigned, commented or resolved, by whom, "
    "to which assignee, with the comment. The first row of an alert is its last action.",
)
panel(
    "Estimated leak flow by zone",
    "timeseries",
    f'SELECT max("x_excess_lps") FROM "detection" WHERE "kind" = \'leak\' AND {SITE} AND $timeFilter '
    'GROUP BY time($__interval), "site" fill(none)',
    "time_series",
    0,
    16,
    12,
    8,
    "Night flow above the zone's baseline (L/s), one point per night.",
)
panel(
    "Minimum night flow vs baseline",
    "timeseries",
    'SELECT mean("x_mnf_lps") AS "night flow", mean("x_baseline_lps") AS "baseline" FROM "detection" '
    f'WHERE "kind" = \'leak\' AND {SITE} AND $timeFilter GROUP BY time(1d), "site" fill(none)',
    "time_series",
    12,
    16,
    12,
    8,
    "The zone's minimum night flow each night and the baseline it is compared with (L/s).",
)
row("Air quality", 24)
for i, (q, label) in enumerate([("pm25", "PM2.5"), ("pm10", "PM10"), ("no2", "NO2")]):
    panel(
        f"{label} by site (EAQI bands)",
        "timeseries",
        f'SELECT mean("value") FROM "reading" WHERE "quantity" = \'{q}\' AND {SITE} AND $timeFilter '
        'GROUP BY time($__interval), "site" fill(none)',
        "time_series",
        8 * i,
        25,
        8,
        8,
        f"Mean {label} (ug/m3) per site; the background bands are the European Air Quality Index: "
        "good, fair, moderate, poor, very poor, extremely poor.",
        unit="conμgm3",
        thr=thresholds(EAQI[q]),
    )
row("Detectors", 33)
panel(
    "Detections over time",
    "timeseries",
    f'SELECT count("score") AS "decisions" FROM "detection" WHERE {SITE} AND $timeFilter '
    'GROUP BY time($__interval), "kind" fill(none)',
    "time_series",
    0,
    34,
    12,
    8,
    "Decisions each kind of detector took, and how many of them flagged a leak "
    "(label is a field, so flagged decisions are a second query).",
    extra={"fieldConfig": {"defaults": {"custom": {"drawStyle": "bars"}}, "overrides": []}},
)
panels[-1]["targets"].append(
    {
        "refId": "B",
        "datasource": DS,
        "rawQuery": True,
        "resultFormat": "time_series",
        "query": 'SELECT count("score") AS "flagged leak" FROM "detection" '
        f'WHERE "label" = \'leak\' AND {SITE} AND $timeFilter GROUP BY time($__interval), "kind" fill(none)',
    }
)
panel(
    "Model versions deployed",
    "table",
    f'SELECT last("score") AS "last score" FROM "detection" WHERE {SITE} AND $timeFilter '
    'GROUP BY "site", "gateway", "model", "model_version"',
    "table",
    12,
    34,
    12,
    8,
    "Which model and version each gateway ran last (time = its latest decision).",
    extra={"transformations": [{"id": "merge", "options": {}}]},
)

row("Alerts: every kind", 42)
panel(
    "Alerts of every kind",
    "table",
    'SELECT "kind", "alert_id", "state", "severity", "message" FROM "alert" '
    f"WHERE {SITE} AND $timeFilter ORDER BY time DESC",
    "table",
    0,
    43,
    24,
    7,
    "Every alert raised or cleared, newest first, whatever its kind: leak, sensor_silent (a sensor that "
    "stopped sending), air quality...",
)

dashboard = {
    "__requires": [
        {"type": "grafana", "id": "grafana", "name": "Grafana", "version": "10.0.0"},
        {"type": "datasource", "id": "influxdb", "name": "InfluxDB", "version": "1.0.0"},
    ],
    "title": "frugalsense operations",
    "uid": "frugalsense-ops",
    "tags": ["frugalsense"],
    "timezone": "browser",
    "schemaVersion": 38,
    "version": 1,
    "editable": True,
    "refresh": "1m",
    "time": {"from": "now-7d", "to": "now"},
    "description": "Fleet status, leak alerts, air quality and detectors of frugalsense gateways "
    "(schema: docs/contracts.md).",
    "templating": {
        "list": [
            {
                "name": "site",
                "label": "Site",
                "type": "query",
                "datasource": DS,
                "query": 'SHOW TAG VALUES FROM "reading" WITH KEY = "site"',
                "definition": 'SHOW TAG VALUES FROM "reading" WITH KEY = "site"',
                "multi": True,
                "includeAll": True,
                "allValue": ".*",
                "refresh": 2,
                "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
                "sort": 1,
            }
        ]
    },
    "annotations": {
        "list": [
            {
                "name": "Leak alerts",
                "datasource": DS,
                "enable": True,
                "iconColor": "red",
                "query": f'SELECT "message" FROM "alert" WHERE "state" = \'raised\' AND {SITE} AND $timeFilter',
                "textColumn": "message",
                "tagsColumn": "site",
            }
        ]
    },
    "panels": panels,
}
GRAFANA_TEXT = json.dumps(dashboard, indent=2, ensure_ascii=False) + "\n"


# The copy Grafana's dashboard provider loads (provisioning/dashboards/frugalsense.yaml): the whole
# provisioning/ folder installs as /etc/grafana/provisioning, so the dashboard has to be inside it.
PROVISIONED = HERE / "provisioning" / "dashboards" / "frugalsense" / "frugalsense-operations.json"


def main() -> None:
    """Write both dashboard files next to this script, and the Grafana one where provisioning loads it."""
    (HERE / "grafana-frugalsense.json").write_text(GRAFANA_TEXT)
    PROVISIONED.parent.mkdir(parents=True, exist_ok=True)
    PROVISIONED.write_text(GRAFANA_TEXT)
    (HERE / "influxdb2-template.yml").write_text(FLUX_TEXT)


if __name__ == "__main__":
    main()
