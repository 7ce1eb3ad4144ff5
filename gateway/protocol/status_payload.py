"""The gateway status payload (retained on ``<prefix>/<site>/<gateway>/status``): encoding and strict decoding.

Besides ``state`` and ``time``, a status may carry, all optional within schema version 1
(a v1 reader ignores keys it does not know; docs/contracts.md):

- ``counters``: name -> number (the publisher's, the outbox's, the detectors' checkpoints...);
- ``sources``: per source (``replay``, ``serial``, ``serial <port>``, ``modbus <port>``...) its
  counters, name -> number;
- ``source_states``: per supervised source, one of ``SOURCE_STATES``;
- ``health``: name -> number, the names of ``HEALTH_FIELDS`` (gateway/device/health.py; a later
  gateway may add names, read like counters).

A value of another type in those is refused (``invalid``: the bridge counts and dead-letters it).

>>> body = encode_status("online", 1_772_409_600_000, {"alerts": 1}, health={"rss_mb": 41.5},
...                      source_states={"replay": "online"})
>>> body
b'{"v":1,"state":"online","time":1772409600000,"counters":{"alerts":1},"source_states":{"replay":"online"},"health":{"rss_mb":41.5}}'
>>> import json
>>> decode_status_body("net3", "gw-01", json.loads(body)).health
{'rss_mb': 41.5}
>>> decode_status_body("net3", "gw-01", {"v": 1, "state": "online", "health": {"rss_mb": "41"}})
Traceback (most recent call last):
...
ValueError: status health must map names to finite numbers
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from edge.contracts import SCHEMA_VERSION, check_time

#: What a supervised source is doing (gateway/device/source_supervisor.py).
SOURCE_STATES = ("online", "restarting", "failed", "ended")
#: The numbers of the ``health`` object, as the bridge writes them (``health:<name>``).
HEALTH_FIELDS = ("cpu_percent", "rss_mb", "disk_free_mb", "soc_temp_c", "outbox_backlog", "outbox_oldest_age_s")

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


@dataclass(frozen=True, slots=True)
class GatewayStatus:
    """Availability and health of one gateway, retained on its status topic."""

    site: str
    gateway: str
    state: str  # "online" | "offline"
    time_ms: int | None = None  # absent in the will: the broker sends it, not the gateway
    counters: dict[str, int | float] = field(default_factory=dict)
    # Per source (replay, serial, serial <port>, modbus <port>...): failures, restarts, the drivers' counters.
    sources: dict[str, dict[str, int | float]] = field(default_factory=dict)
    source_states: dict[str, str] = field(default_factory=dict)  # per supervised source: SOURCE_STATES
    health: dict[str, float] = field(default_factory=dict)  # HEALTH_FIELDS (soc_temp_c only where readable)


def encode_status(
    state: str,
    time_ms: int | None = None,
    counters: dict | None = None,
    sources: dict | None = None,
    *,
    source_states: dict | None = None,
    health: dict | None = None,
) -> bytes:
    """A gateway status message: ``online``/``offline``, with its time, counters, sources and health when given.

    >>> encode_status("online", 1_772_409_600_000, {"alerts": 1}, {"serial ttyS0": {"frames_ok": 12}})
    b'{"v":1,"state":"online","time":1772409600000,"counters":{"alerts":1},"sources":{"serial ttyS0":{"frames_ok":12}}}'
    """
    body: dict = {"v": SCHEMA_VERSION, "state": state}
    if time_ms is not None:
        body["time"] = time_ms
    if counters:
        body["counters"] = counters
    if sources:
        body["sources"] = sources
    if source_states:
        body["source_states"] = source_states
    if health:
        body["health"] = health
    return _dumps(body).encode()


def decode_status_body(site: str, gateway: str, body: dict) -> GatewayStatus:
    """The status in ``body`` (a decoded JSON object of version 1); ValueError says what is wrong."""
    state = body["state"]
    if state not in ("online", "offline"):
        raise ValueError(f"status state must be online or offline, got {state!r}")
    time_ms = body.get("time")
    if time_ms is not None:
        check_time("status", time_ms)
    counters = body.get("counters", {})
    if not _numbers_by_name(counters):
        raise ValueError("status counters must map names to finite numbers")
    sources = body.get("sources", {})
    if not isinstance(sources, dict) or not all(
        isinstance(name, str) and name and _numbers_by_name(c) for name, c in sources.items()
    ):
        raise ValueError("status sources must map source names to counters (names to finite numbers)")
    states = body.get("source_states", {})
    if not isinstance(states, dict) or not all(
        isinstance(n, str) and n and s in SOURCE_STATES for n, s in states.items()
    ):
        raise ValueError(f"status source_states must map source names to one of {', '.join(SOURCE_STATES)}")
    health = body.get("health", {})
    if not _numbers_by_name(health):
        raise ValueError("status health must map names to finite numbers")
    return GatewayStatus(
        site, gateway, state, time_ms, counters, sources, states, {k: float(v) for k, v in health.items()}
    )


def _numbers_by_name(counters) -> bool:
    return isinstance(counters, dict) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in counters.values()
    )
