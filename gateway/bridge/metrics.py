"""The bridge's Prometheus metrics and ``/healthz``, served by one small HTTP thread (``--metrics-port``).

Everything is on a registry of its own (not prometheus_client's global one), so only
the bridge's series are exposed:

========================================================  =========  ===================================
metric                                                    type       what
========================================================  =========  ===================================
``frugalsense_bridge_points_written_total{measurement}``  counter    points InfluxDB accepted
``frugalsense_bridge_write_duration_seconds``             histogram  one write (a batch) to InfluxDB
``frugalsense_bridge_write_failures_total{reason}``       counter    writes that failed (``unreachable``
                                                                     or the HTTP status, e.g. ``401``)
``frugalsense_bridge_messages_received_total``            counter    MQTT messages taken from the broker
``frugalsense_bridge_dead_letters_total{reason}``         counter    messages set aside, by reason
``frugalsense_bridge_backlog_messages``                   gauge      received, not yet acknowledged
``frugalsense_bridge_mqtt_connected``                     gauge      1 while the broker link is up
``frugalsense_bridge_influxdb_reachable``                 gauge      1 if InfluxDB answered lately
========================================================  =========  ===================================

``/healthz`` answers 200 ``ok`` only when the broker link is up and InfluxDB is fine
(the last write succeeded, or was refused for its data alone, which the bridge dead-letters;
with no write for ``PROBE_AFTER_S``, ``/ping`` answers), else
503 with the reasons, one line for a technician, e.g.
``mqtt: not connected to 10.0.0.5:8883; influxdb: last write failed: ... answered 401``.

The write figures come from :class:`MeteredWriter`, which wraps the bridge's writer, so
they count what the database accepted; the MQTT figures are read from the bridge at
scrape time.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Histogram, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.bridge.writer_base import InfluxWriter, WriteError

if TYPE_CHECKING:
    from gateway.bridge.service import Bridge

NAMESPACE = "frugalsense_bridge"
# With no write for this long, the health check asks InfluxDB itself (a quiet fleet writes little).
PROBE_AFTER_S = 15.0
# Batches take from a few ms (a status message) to seconds (5000 points to a busy server).
WRITE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
DEFAULT_METRICS_HOST = "127.0.0.1"


def measurement_of(line: str) -> str:
    """The measurement of one line of line protocol: up to the first unescaped comma or space.

    >>> measurement_of("reading,sensor=F-1 value=1 1700000000000")
    'reading'
    >>> measurement_of(r"odd\\ name\\,x value=1")
    'odd name,x'
    """
    out, escaped = [], False
    for ch in line:
        if escaped:
            out.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch in ", ":
            break
        else:
            out.append(ch)
    return "".join(out)


def count_measurements(lines: list[str]) -> collections.Counter[str]:
    """Points per measurement in a batch: up to the first comma (C speed), unless a name needs unescaping.

    Every point the bridge writes has tags, so the text before the first comma is its measurement;
    a head with a space or a backslash (no tags, or an escaped name) sends the batch the slow way.

    >>> dict(count_measurements(["reading,s=a v=1 1", "reading,s=b v=2 1", "alert,s=a v=1 1"]))
    {'reading': 2, 'alert': 1}
    >>> dict(count_measurements(["bare v=1 1", "bare v=2 2"]))
    {'bare': 2}
    """
    heads = collections.Counter(line.split(",", 1)[0] for line in lines)
    if any(" " in head or "\\" in head for head in heads):
        return collections.Counter(map(measurement_of, lines))
    return heads


class BridgeMetrics:
    """The bridge's metrics registry, the state ``/healthz`` decides on, and the server that shows both."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.points_written = Counter(
            f"{NAMESPACE}_points_written",
            "Points InfluxDB accepted, by measurement",
            ["measurement"],
            registry=self.registry,
        )
        self.write_duration = Histogram(
            f"{NAMESPACE}_write_duration_seconds",
            "Time of one write (a batch of points) to InfluxDB, failed ones included",
            buckets=WRITE_BUCKETS,
            registry=self.registry,
        )
        self.write_failures = Counter(
            f"{NAMESPACE}_write_failures",
            "Writes to InfluxDB that failed: 'unreachable', or the HTTP status it answered",
            ["reason"],
            registry=self.registry,
        )
        self.bridge: Bridge | None = None
        self.writer: InfluxWriter | None = None
        self._lock = threading.Lock()
        self._last_ok_at: float | None = None  # time.monotonic() of the last write that succeeded
        self._last_failure: WriteError | None = None  # the last write's error, None once one succeeds
        self.registry.register(_BridgeCollector(self))

    # --- fed by the writer --------------------------------------------------

    def watch(self, writer: InfluxWriter) -> MeteredWriter:
        """Wrap the bridge's writer so every write is timed and counted here."""
        self.writer = writer
        return MeteredWriter(writer, self)

    def attach(self, bridge: Bridge) -> None:
        """The running bridge whose MQTT link and backlog are reported."""
        self.bridge = bridge

    def wrote(self, lines: list[str], seconds: float) -> None:
        self.write_duration.observe(seconds)
        for name, n in count_measurements(lines).items():
            self.points_written.labels(measurement=name).inc(n)
        with self._lock:
            self._last_ok_at, self._last_failure = time.monotonic(), None

    def failed(self, exc: WriteError, seconds: float) -> None:
        self.write_duration.observe(seconds)
        self.write_failures.labels(reason="unreachable" if exc.status is None else str(exc.status)).inc()
        with self._lock:
            if exc.retryable:  # the server is away or refuses the login: not healthy until a write succeeds
                self._last_failure = exc
            else:  # it answered and refused the data itself, which the bridge dead-letters: the server is fine
                self._last_ok_at, self._last_failure = time.monotonic(), None

    # --- read at scrape time and by /healthz --------------------------------

    def influxdb_state(self) -> tuple[bool, bool, str]:
        """(reachable, fine, why not): the last write decides; with none lately, ``/ping`` does."""
        with self._lock:
            failure, last_ok_at = self._last_failure, self._last_ok_at
        if failure is not None:
            return failure.status is not None, False, f"last write failed: {failure}"
        if last_ok_at is not None and time.monotonic() - last_ok_at < PROBE_AFTER_S:
            return True, True, ""
        if self.writer is not None and self.writer.ping():
            return True, True, ""
        url = self.writer.url if self.writer is not None else "InfluxDB"
        return False, False, f"{url} does not answer /ping"

    def health(self) -> tuple[bool, str]:
        """(healthy, reasons): the broker link is up and InfluxDB is fine."""
        problems = []
        bridge = self.bridge
        if bridge is None or not bridge.connected:
            where = f"{bridge.settings.host}:{bridge.settings.port}" if bridge else "the broker"
            problems.append(f"mqtt: not connected to {where}")
        _, fine, why = self.influxdb_state()
        if not fine:
            problems.append(f"influxdb: {why}")
        return not problems, "; ".join(problems) or "ok"

    def serve(self, host: str = DEFAULT_METRICS_HOST, port: int = 0) -> MetricsServer:
        """Start the HTTP thread: ``/metrics`` (Prometheus text) and ``/healthz``; port 0 picks a free one."""
        return MetricsServer(self, host, port)


class MeteredWriter:
    """The bridge's writer, timed and counted: what it is asked to write and what it landed."""

    def __init__(self, writer: InfluxWriter, metrics: BridgeMetrics):
        self.inner = writer
        self.api, self.url = writer.api, writer.url
        self._metrics = metrics

    def write(self, lines: list[str]) -> None:
        if not lines:
            return
        started = time.perf_counter()
        try:
            self.inner.write(lines)
        except WriteError as exc:
            self._metrics.failed(exc, time.perf_counter() - started)
            raise
        self._metrics.wrote(lines, time.perf_counter() - started)

    def ensure_database(self) -> None:
        self.inner.ensure_database()

    def ping(self) -> bool:
        return self.inner.ping()

    def close(self) -> None:
        self.inner.close()


class _BridgeCollector(Collector):
    """The figures the bridge keeps itself, read when Prometheus scrapes."""

    def __init__(self, metrics: BridgeMetrics):
        self._metrics = metrics

    def describe(self) -> Iterable[Metric]:
        return []  # nothing to check at registration: the names are not shared with the counters above

    def collect(self) -> Iterable[Metric]:
        bridge = self._metrics.bridge
        reachable, _, _ = self._metrics.influxdb_state()
        yield GaugeMetricFamily(
            f"{NAMESPACE}_influxdb_reachable", "1 if InfluxDB answered the last write or ping", value=int(reachable)
        )
        yield GaugeMetricFamily(
            f"{NAMESPACE}_mqtt_connected",
            "1 while the bridge is connected to the broker",
            value=int(bridge is not None and bridge.connected),
        )
        if bridge is None:
            return
        yield CounterMetricFamily(
            f"{NAMESPACE}_messages_received", "MQTT messages received", value=bridge.counters["messages"]
        )
        yield GaugeMetricFamily(
            f"{NAMESPACE}_backlog_messages",
            "Messages received and not yet acknowledged to the broker",
            value=bridge.backlog,
        )
        dead = CounterMetricFamily(
            f"{NAMESPACE}_dead_letters", "Messages republished on <prefix>/deadletter, by reason", labels=["reason"]
        )
        for reason, n in sorted(dict(bridge.deadletters).items()):
            dead.add_metric([reason], n)
        yield dead


class _QuietHandler(WSGIRequestHandler):
    """No access log line per scrape; a client that stalls is dropped after 5 s."""

    timeout = 5

    def log_message(self, format, *args):  # noqa: A002 - the signature of BaseHTTPRequestHandler
        pass


class MetricsServer:
    """One thread serving ``/metrics`` and ``/healthz`` until ``close()``."""

    def __init__(self, metrics: BridgeMetrics, host: str, port: int):
        self.metrics = metrics
        prometheus_app = make_wsgi_app(metrics.registry)

        def app(environ, start_response):
            if environ.get("PATH_INFO") == "/healthz":
                healthy, why = metrics.health()
                status = "200 OK" if healthy else "503 Service Unavailable"
                start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
                return [f"{why}\n".encode()]
            return prometheus_app(environ, start_response)

        self._server: WSGIServer = make_server(host, port, app, handler_class=_QuietHandler)
        self.host, self.port = host, self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever, name="bridge-metrics", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
