"""The InfluxDB 2.x template (Flux): the Grafana dashboard's panels as charts, ``FLUX_TEXT``.

build_dashboards.py writes it (tests/test_dashboards.py checks the committed file is this text).
"""

from __future__ import annotations

import yaml
from health_fields import HEALTH

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
