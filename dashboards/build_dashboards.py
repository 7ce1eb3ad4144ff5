"""Writes the ops dashboards: Grafana (InfluxQL, InfluxDB 1.x) and an InfluxDB 2.x template (Flux), same panels.

Run it after changing a panel: ``python dashboards/build_dashboards.py``; tests/test_dashboards.py
checks the committed files are what this writes, then runs every InfluxQL query on real data.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent

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
# Gateway health (issue 17 part 4): float fields "health:<name>" of gateway_status, one series per gateway.
HEALTH = [  # field, title, unit, what a technician reads in it
    ("cpu_percent", "CPU", "percent", "CPU use of the gateway process (%)."),
    ("rss_mb", "Memory (RSS)", "decmbytes", "Resident memory of the gateway process (MB)."),
    ("disk_free_mb", "Free disk on the data dir", "decmbytes", "Free space where the outbox and logs live (MB)."),
    ("soc_temp_c", "SoC temperature", "celsius", "System-on-chip temperature where the board exposes it (°C)."),
    ("outbox_backlog", "Outbox backlog (health)", "short", "Messages waiting in the outbox for the broker."),
    ("outbox_oldest_age_s", "Oldest outbox message age", "s", "Age of the oldest message still waiting (s)."),
]
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


# ---- InfluxDB 2.x template (Flux) ----

RANGE = "from(bucket: v.bucket)\n  |> range(start: v.timeRangeStart, stop: v.timeRangeStop)\n"


def flux_filter(measure, fields, extra=""):
    """The Flux lines that read ``fields`` of one measurement over the dashboard's time range."""
    cond = " or ".join(f'r._field == "{x}"' for x in fields)
    if len(fields) > 1:
        cond = f"({cond})"
    return RANGE + f'  |> filter(fn: (r) => r._measurement == "{measure}" and {cond}{extra})\n'


FLUX_SITE = " and r.site == v.site"
LINE_COLORS = [
    {"id": "base", "name": "laser", "type": "scale", "hex": "#00C9FF"},
    {"id": "c2", "name": "pool", "type": "scale", "hex": "#8F8AF4"},
    {"id": "c3", "name": "comet", "type": "scale", "hex": "#A51414"},
]
flux_charts = []


def chart(kind, name, note, query, x, y, w, h, **extra):
    """Add an InfluxDB 2.x chart (``Xy`` line or ``Table``) with one Flux query."""
    c = {
        "kind": kind,
        "name": name,
        "note": note,
        "noteOnEmpty": True,
        "xPos": x,
        "yPos": y,
        "width": w,
        "height": h,
        "queries": [{"query": query}],
    }
    if kind == "Xy":
        c.update(
            {
                "geom": "line",
                "xCol": "_time",
                "yCol": "_value",
                "position": "overlaid",
                "colors": LINE_COLORS,
                "axes": [
                    {"name": "x", "base": "10", "scale": "linear"},
                    {"name": "y", "base": "10", "scale": "linear", "label": extra.pop("ylabel", "")},
                ],
            }
        )
    if kind == "Table":
        c.update(
            {
                "decimalPlaces": 2,
                "tableOptions": {"verticalTimeAxis": True},
                "colors": [{"id": "base", "name": "laser", "type": "text", "hex": "#00C9FF"}],
            }
        )
    c.update(extra)
    flux_charts.append(c)


chart(
    "Table",
    "Gateways: online now (time = last seen)",
    "Last status of each gateway: online 1 / offline 0, and when it was received.",
    flux_filter("gateway_status", ["online", "state"]) + "  |> last()\n"
    '  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")\n'
    "  |> group()\n"
    '  |> keep(columns: ["_time", "site", "gateway", "online", "state"])',
    0,
    0,
    6,
    4,
)
chart(
    "Xy",
    "Outbox backlog",
    "Messages waiting on each gateway for the broker; growing = uplink or broker down.",
    flux_filter("gateway_status", ["outbox_backlog"])
    + "  |> aggregateWindow(every: v.windowPeriod, fn: max, createEmpty: false)",
    6,
    0,
    6,
    4,
    ylabel="messages",
)
chart(
    "Table",
    "Leak alerts by zone",
    "Every leak alert raised or cleared, with the leak flow the night-flow detector estimated (L/s).",
    flux_filter("alert", ["message", "x_excess_lps"], ' and r.kind == "leak"' + FLUX_SITE)
    + '  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")\n'
    '  |> group(columns: ["site"])\n'
    '  |> keep(columns: ["_time", "site", "state", "alert_id", "x_excess_lps", "message"])',
    0,
    4,
    12,
    4,
)
chart(
    "Xy",
    "Estimated leak flow by zone",
    "Night flow above the zone's baseline (L/s), one point per night.",
    flux_filter("detection", ["x_excess_lps"], ' and r.kind == "leak"' + FLUX_SITE)
    + '  |> group(columns: ["site"])\n  |> aggregateWindow(every: v.windowPeriod, fn: max, createEmpty: false)',
    0,
    8,
    6,
    4,
    ylabel="L/s",
)
chart(
    "Xy",
    "Minimum night flow vs baseline",
    "The zone's minimum night flow each night and its baseline (L/s).",
    flux_filter("detection", ["x_mnf_lps", "x_baseline_lps"], ' and r.kind == "leak"' + FLUX_SITE)
    + '  |> group(columns: ["site", "_field"])\n  |> aggregateWindow(every: 1d, fn: mean, createEmpty: false)',
    6,
    8,
    6,
    4,
    ylabel="L/s",
)
bands = {"pm25": "10/20/25/50/75", "pm10": "20/40/50/100/150", "no2": "40/90/120/230/340"}
for i, (q, label) in enumerate([("pm25", "PM2.5"), ("pm10", "PM10"), ("no2", "NO2")]):
    chart(
        "Xy",
        f"{label} by site (EAQI bands)",
        f"Mean {label} in ug/m3 per site. EAQI bands (upper bounds of good/fair/moderate/poor/very poor): {bands[q]}.",
        flux_filter("reading", ["value"], f' and r.quantity == "{q}"' + FLUX_SITE)
        + '  |> group(columns: ["site"])\n  |> aggregateWindow(every: v.windowPeriod, fn: mean, createEmpty: false)',
        4 * i,
        12,
        4,
        4,
        ylabel="ug/m3",
    )
chart(
    "Xy",
    "Detections over time",
    "Decisions per detector kind, and how many flagged a leak.",
    flux_filter("detection", ["score"]) + "  |> filter(fn: (r) => r.site == v.site)\n"
    '  |> group(columns: ["kind"])\n'
    "  |> aggregateWindow(every: v.windowPeriod, fn: count, createEmpty: false)",
    0,
    16,
    6,
    4,
    ylabel="decisions",
)
flux_charts[-1]["queries"].append(
    {
        "query": flux_filter("detection", ["label"])
        + '  |> filter(fn: (r) => r.site == v.site and r._value == "leak")\n'
        '  |> group(columns: ["kind"])\n'
        "  |> aggregateWindow(every: v.windowPeriod, fn: count, createEmpty: false)"
    }
)
chart(
    "Table",
    "Model versions deployed",
    "Which model and version each gateway ran last (time = its latest decision).",
    flux_filter("detection", ["score"]) + '  |> group(columns: ["site", "gateway", "model", "model_version"])\n'
    "  |> last()\n"
    "  |> group()\n"
    '  |> keep(columns: ["_time", "site", "gateway", "model", "model_version", "_value"])',
    6,
    16,
    6,
    4,
)

# Gateway health, the alert lifecycle and alerts of every kind (same panels as the Grafana dashboard).
chart(
    "Table",
    "Gateway health now (last values)",
    "The last health each gateway reported.",
    flux_filter("gateway_status", [f"health:{field}" for field, *_ in HEALTH], FLUX_SITE) + "  |> last()\n"
    '  |> pivot(rowKey: ["site", "gateway"], columnKey: ["_field"], valueColumn: "_value")\n'
    "  |> group()",
    0,
    20,
    12,
    4,
)
for i, (field, title, unit, note) in enumerate(HEALTH):
    chart(
        "Xy",
        title,
        note,
        flux_filter("gateway_status", [f"health:{field}"], FLUX_SITE)
        + "  |> aggregateWindow(every: v.windowPeriod, fn: max, createEmpty: false)",
        4 * (i % 3),
        24 + 4 * (i // 3),
        4,
        4,
        ylabel=unit,
    )
chart(
    "Table",
    "Alert lifecycle: recent actions",
    "What people did to alerts (ack, assign, comment, resolve), by whom, newest first.",
    flux_filter("alert_state", ["by", "assignee", "text"], FLUX_SITE)
    + '  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")\n'
    "  |> group()\n"
    '  |> sort(columns: ["_time"], desc: true)',
    0,
    32,
    12,
    4,
)
chart(
    "Table",
    "Alerts of every kind",
    "Every alert raised or cleared, whatever its kind (leak, sensor_silent, ...), newest first.",
    flux_filter("alert", ["severity", "message"], FLUX_SITE)
    + '  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")\n'
    "  |> group()\n"
    '  |> sort(columns: ["_time"], desc: true)',
    0,
    36,
    12,
    4,
)

docs = [
    {
        "apiVersion": "influxdata.com/v2alpha1",
        "kind": "Variable",
        "metadata": {"name": "frugalsense-bucket"},
        "spec": {
            "name": "bucket",
            "description": "bucket the frugalsense bridge writes to (frugalsense bridge --influx-api v2 --bucket)",
            "type": "constant",
            "values": ["frugalsense"],
        },
    },
    {
        "apiVersion": "influxdata.com/v2alpha1",
        "kind": "Variable",
        "metadata": {"name": "frugalsense-site"},
        "spec": {
            "name": "site",
            "description": "site shown in the water and air panels",
            "type": "query",
            "language": "flux",
            "query": 'import "influxdata/influxdb/schema"\n\nschema.tagValues(bucket: "frugalsense", tag: "site")',
        },
    },
    {
        "apiVersion": "influxdata.com/v2alpha1",
        "kind": "Dashboard",
        "metadata": {"name": "frugalsense-operations"},
        "spec": {
            "name": "frugalsense operations",
            "description": "Fleet status, leak alerts, air quality and detectors of frugalsense gateways "
            "(schema: docs/contracts.md). Same panels as dashboards/grafana-frugalsense.json.",
            "charts": flux_charts,
        },
    },
]


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the Flux queries) as readable | blocks."""


_Dumper.add_representer(
    str, lambda d, v: d.represent_scalar("tag:yaml.org,2002:str", v, style="|" if "\n" in v else None)
)
text = (
    "# InfluxDB 2.x template (Flux): influx apply -f dashboards/influxdb2-template.yml --org <org>\n"
    "# Checked for structure in tests/test_dashboards.py; no InfluxDB 2 server was available to run the queries.\n"
)
text += yaml.dump_all(docs, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=120, explicit_start=True)
FLUX_TEXT = text


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
