"""How contract objects become InfluxDB points (the schema in docs/contracts.md).

One Reading is one point of measurement ``reading``; tags are the low-cardinality
identity (site, gateway, sensor, quantity, unit), fields the value and its quality.
Points are keyed by series + millisecond time, so writing the same message twice
overwrites the same points: writes are idempotent.

>>> from edge.contracts import Reading
>>> r = Reading(1_772_409_600_000, "net3", "gw-01", "P-15", "pressure", 42.5, "m")
>>> to_line_protocol(r)
['reading,gateway=gw-01,quantity=pressure,sensor=P-15,site=net3,unit=m quality="ok",value=42.5 1772409600000']
"""

from __future__ import annotations

import math
from functools import lru_cache

from influxdb_client import Point, WritePrecision

from edge.contracts import Alert, Detection, Quality, Reading
from gateway.protocol.alert_commands import AlertCommand
from gateway.protocol.payloads import GatewayStatus, ReadingBatch

PRECISION = "ms"

READING = "reading"
DETECTION = "detection"
ALERT = "alert"
GATEWAY_STATUS = "gateway_status"
ALERT_STATE = "alert_state"
MEASUREMENTS = (READING, DETECTION, ALERT, GATEWAY_STATUS, ALERT_STATE)


def reading_point(r: Reading) -> Point:
    """The ``reading`` point of one reading: its identity as tags, value and quality as fields."""
    p = (
        Point(READING)
        .tag("site", r.site)
        .tag("gateway", r.gateway)
        .tag("sensor", r.sensor)
        .tag("quantity", r.quantity)
        .tag("unit", r.unit)
        .field("quality", str(r.quality))
        .time(r.time_ms, WritePrecision.MS)
    )
    if r.quality != Quality.UNKNOWN:
        p.field("value", float(r.value))
    return p


def detection_point(d: Detection) -> Point:
    """The ``detection`` point of one detector decision."""
    p = (
        Point(DETECTION)
        .tag("site", d.site)
        .tag("gateway", d.gateway)
        .tag("kind", d.kind)
        .tag("model", d.model)
        .tag("model_version", d.model_version)
        .field("label", d.label)
        .field("score", float(d.score))
        .field("severity", str(d.severity))
        .field("window_start_ms", int(d.window_start_ms))
        .field("window_end_ms", int(d.window_end_ms))
        .time(d.time_ms, WritePrecision.MS)
    )
    _explanation_fields(p, d.explanation)
    return p


def alert_point(a: Alert) -> Point:
    """The ``alert`` point of one alert being raised or cleared."""
    p = (
        Point(ALERT)
        .tag("site", a.site)
        .tag("gateway", a.gateway)
        .tag("kind", a.kind)
        # A tag, not a field: two alerts of one kind changing state in the same
        # millisecond (two sensors, two zones) must be two points, not one overwriting the other.
        .tag("alert_id", a.alert_id)
        .tag("state", str(a.state))
        .field("label", a.label)
        .field("severity", str(a.severity))
        .field("score", float(a.score))
        .field("message", a.message)
        .field("model", a.model)
        .field("model_version", a.model_version)
        .field("since_ms", int(a.since_ms))
        .time(a.time_ms, WritePrecision.MS)
    )
    _explanation_fields(p, a.explanation)
    return p


def status_point(s: GatewayStatus, received_ms: int) -> Point:
    """The ``gateway_status`` point of one status message (at ``received_ms`` when it carries no time).

    One float field per counter, one per source counter named ``<source>:<counter>``, a string
    field ``<source>:state`` per source state, and one float field per health number named
    ``health:<name>``:

    >>> st = GatewayStatus("net3", "gw-01", "online", 1_772_409_600_000, {"alerts": 1}, {"replay": {"restarts": 2}})
    >>> status_point(st, 0).to_line_protocol()
    'gateway_status,gateway=gw-01,site=net3 alerts=1,online=1i,replay:restarts=2,state="online" 1772409600000'
    >>> st = GatewayStatus("net3", "gw-01", "online", 1_772_409_600_000, source_states={"replay": "restarting"},
    ...                    health={"rss_mb": 41.5, "outbox_backlog": 3})
    >>> status_point(st, 0).to_line_protocol().split(" ")[1]  # the fields
    'health:outbox_backlog=3,health:rss_mb=41.5,online=1i,replay:state="restarting",state="online"'
    """
    p = (
        Point(GATEWAY_STATUS)
        .tag("site", s.site)
        .tag("gateway", s.gateway)
        .field("state", s.state)
        .field("online", 1 if s.state == "online" else 0)
        # The will carries no time: the broker publishes it when the gateway is gone.
        .time(s.time_ms if s.time_ms is not None else received_ms, WritePrecision.MS)
    )
    for name, value in s.counters.items():
        p.field(name, float(value))
    for source, counters in s.sources.items():
        for name, value in counters.items():
            p.field(f"{source}:{name}", float(value))
    for source, state in s.source_states.items():
        p.field(f"{source}:state", state)
    for name, value in s.health.items():
        p.field(f"health:{name}", float(value))
    return p


def alert_state_point(c: AlertCommand) -> Point:
    """The ``alert_state`` point of one operator's change to an alert (schema fixed: dashboards read it).

    Tags site, gateway, alert_id, action; fields ``by`` always, ``text`` and ``assignee`` when given.
    The action is a tag, so an ack and a comment sent in the same millisecond are two points:

    >>> from gateway.protocol.alert_commands import AlertCommand
    >>> c = AlertCommand("net3", "gw-01", "leak-07", "assign", "m.dupont", 1_772_870_000_000, assignee="crew 2")
    >>> alert_state_point(c).to_line_protocol()
    'alert_state,action=assign,alert_id=leak-07,gateway=gw-01,site=net3 assignee="crew 2",by="m.dupont" 1772870000000'
    """
    p = (
        Point(ALERT_STATE)
        .tag("site", c.site)
        .tag("gateway", c.gateway)
        .tag("alert_id", c.alert_id)
        .tag("action", c.action)
        .field("by", c.by)
        .time(c.time_ms, WritePrecision.MS)
    )
    if c.text:
        p.field("text", c.text)
    if c.assignee:
        p.field("assignee", c.assignee)
    return p


def _explanation_fields(p: Point, explanation: dict) -> None:
    # Prefixed so an explanation key can never overwrite a contract field.
    for key, value in explanation.items():
        p.field(f"x_{key}", ",".join(value) if isinstance(value, list) else value)


def to_points(obj, received_ms: int = 0) -> list[Point]:
    """Points for one decoded payload (a list of readings, a detection, an alert, a status, an alert command)."""
    if isinstance(obj, Reading):
        return [reading_point(obj)]
    if isinstance(obj, list):
        return [reading_point(r) for r in obj]
    if isinstance(obj, Detection):
        return [detection_point(obj)]
    if isinstance(obj, Alert):
        return [alert_point(obj)]
    if isinstance(obj, GatewayStatus):
        return [status_point(obj, received_ms)]
    if isinstance(obj, AlertCommand):
        return [alert_state_point(obj)]
    raise TypeError(f"no InfluxDB mapping for {type(obj).__name__}")


# The escapes of influxdb_client's Point for tag keys and values: reading_line() must write what it writes.
_ESCAPE_TAG = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", "\n": r"\n", "\t": r"\t", "\r": r"\r"})


@lru_cache(maxsize=4096)
def _reading_series(site: str, gateway: str, sensor: str, quantity: str, unit: str) -> str:
    tags = []
    for key, value in (
        ("gateway", gateway),
        ("quantity", quantity),
        ("sensor", sensor),
        ("site", site),
        ("unit", unit),
    ):  # Point sorts tags by key
        value = value.translate(_ESCAPE_TAG)
        if value.endswith("\\"):
            value += " "
        if value:
            tags.append(f"{key}={value}")
    return f"{READING},{','.join(tags)} "


def _float_text(v: float) -> str:
    """A float as Point writes a field: ``repr``, without a trailing ``.0``."""
    text = repr(v)
    return text[:-2] if text.endswith(".0") else text


def reading_line(r: Reading) -> str:
    """The line ``reading_point(r).to_line_protocol()`` gives, without building a Point (the bridge's hot path:
    about 10x faster; tests/test_bench.py checks they agree).

    >>> reading_line(Reading(1_772_409_600_000, "net3", "gw-01", "P-15", "pressure", 42.0, "m"))
    'reading,gateway=gw-01,quantity=pressure,sensor=P-15,site=net3,unit=m quality="ok",value=42 1772409600000'
    """
    series = _reading_series(r.site, r.gateway, r.sensor, r.quantity, r.unit)
    value = ""
    if r.quality != Quality.UNKNOWN:
        v = float(r.value)
        if math.isfinite(v):
            value = f",value={_float_text(v)}"
    return f'{series}quality="{str(r.quality)}"{value} {int(r.time_ms)}'


def batch_lines(batch: ReadingBatch) -> list[str]:
    """The lines of every reading of a batch: ``reading_line`` per row, with the series formatted once.

    >>> from edge.contracts import Reading
    >>> rs = [Reading(1_772_409_600_000, "net3", "gw-01", "F-1", "flow", 2.0, "L/s"),
    ...       Reading(1_772_409_660_000, "net3", "gw-01", "F-1", "flow", None, "L/s", Quality.UNKNOWN)]
    >>> b = ReadingBatch("net3", "gw-01", "F-1", "flow", "L/s", [(r.time_ms, r.value, str(r.quality)) for r in rs])
    >>> batch_lines(b) == [reading_line(r) for r in rs]
    True
    """
    series = _reading_series(batch.site, batch.gateway, batch.sensor, batch.quantity, batch.unit)
    ok_prefix = f'{series}quality="ok",value='
    lines = []
    append = lines.append
    for t, value, quality in batch.rows:
        if quality == "ok":  # _float_text inlined: nearly every point the bridge writes passes here
            text = repr(value)
            append(f"{ok_prefix}{text[:-2] if text.endswith('.0') else text} {t}")
        elif value is None:
            append(f'{series}quality="{quality}" {t}')
        else:
            append(f'{series}quality="{quality}",value={_float_text(value)} {t}')
    return lines


def to_line_protocol(obj, received_ms: int = 0) -> list[str]:
    """Line-protocol lines of whatever a decoded message is (readings, batch, detection, alert, status, command)."""
    if isinstance(obj, ReadingBatch):
        return batch_lines(obj)
    if isinstance(obj, list):
        return [reading_line(r) for r in obj]
    if isinstance(obj, Reading):
        return [reading_line(obj)]
    return [p.to_line_protocol() for p in to_points(obj, received_ms)]
