"""Chaos scenarios for the whole chain, all real: `frugalsense run` -> Mosquitto -> `frugalsense bridge` -> InfluxDB.

Each scenario streams a synthetic two-zone water dataset through a gateway process
and a bridge process on a private topic prefix and database, breaks something
mid-stream (broker, database, gateway, bridge, outbox size, garbage), lets the chain
recover, and then counts what landed in InfluxDB against what the gateway made.

Definitions (the same in docs/chaos.md, which ``write_report`` generates):

- ``sent``: readings + detections + alerts the gateway produced (computed by running
  the same replay and detectors in the test process: deterministic);
- ``landed``: those found in InfluxDB with the value sent;
- ``lost``: sent - landed; ``dropped_by_bound`` is the part the outbox dropped by its
  stated policy (oldest readings first when full) and counted in its status;
- ``duplicated``: points in InfluxDB beyond one per logical item sent, whatever
  their tags or timestamp (a reading is sensor + data time, a detection model +
  night window, an alert alert_id + state), plus points that match nothing sent.
  InfluxDB overwrites the same series + time, so a re-sent message cannot show as
  two points; a re-sent item under another timestamp or tag set would, and is counted;
- ``redelivered``: items the broker delivered more than once (seen by a subscriber,
  broker retransmissions excluded): the cost of at-least-once, not a defect.

The outage length comes from FRUGALSENSE_CHAOS_OUTAGE_S (default 5 s; `make chaos`
uses 60 s and writes docs/chaos.json and docs/chaos.md).
"""

from __future__ import annotations

import json
import os
import platform
import random
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from edge.contracts import Alert
from edge.datasets import ZoneDataset
from edge.sources.replay import ReplaySource
from gateway.config import load_config
from gateway.device.outbox import Outbox, outbox_path
from gateway.device.runner import build_detectors
from gateway.local_services.services import INFLUXDB, MOSQUITTO, LocalServices, ServiceError, free_port
from gateway.protocol import payloads
from gateway.protocol import topics as T
from tests.mqtt_clients import Collector, Publisher

ROOT = Path(__file__).resolve().parents[1]
OUTAGE_ENV = "FRUGALSENSE_CHAOS_OUTAGE_S"
REPORT_ENV = "FRUGALSENSE_CHAOS_REPORT"  # folder for chaos.json / chaos.md (default .run/chaos)
DEFAULT_OUTAGE_S = 5.0

T0 = 1_772_409_600_000  # 2026-03-02T00:00Z
STEP_MS = 600_000  # 10 min
STREAM_DAYS = 20
BOUND_DAYS = 60  # enough readings to overflow a 1 MB outbox
# Streaming before the fault and after it ends: a quarter of the outage each, at least
# 2 s and 3 s (the gateway process needs ~1 s to start), so the fault is mid-stream.
LEAD_MIN_S, TAIL_MIN_S = 2.0, 3.0


def lead_s(outage: float) -> float:
    return max(LEAD_MIN_S, outage / 4)


def tail_s(outage: float) -> float:
    return max(TAIL_MIN_S, outage / 4)


MALFORMED = 10_000
# Mosquitto drops QoS 1 messages for a client once max_queued_messages (1000 by default)
# wait behind its in-flight window, and logs "Outgoing messages are being dropped for
# client ...": not only for an offline session, for a connected one that reads slower
# than messages come too. The malformed flood (10,000 messages in a few seconds, and as
# many dead letters) outruns a Python subscriber on a small, busy machine: the bridge
# never received some of the flood (so could not dead-letter it) and the spy missed
# dead letters the bridge did publish. A fleet broker raises the limit (docs/chaos.md,
# "Limits"); so does the lab's, well above what any scenario sends.
BROKER_QUEUE_CONFIG = ("max_queued_messages 200000",)
# At-least-once may re-send what was in flight when a link broke: at most the
# publisher's window of unacknowledged messages (100) of 50 readings each, per fault.
REDELIVERY_BOUND = 100 * 50
FLOWS = {"mnf-a": ("F-a1", "F-a2"), "mnf-b": ("F-b1", "F-b2")}
PRESSURES = ("P-a", "P-b", "P-c", "P-d")
SITE, GATEWAY = "chaos", "gw-c1"


def outage_s() -> float:
    raw = os.environ.get(OUTAGE_ENV, "")
    try:
        value = float(raw) if raw else DEFAULT_OUTAGE_S
    except ValueError:
        raise ValueError(f"{OUTAGE_ENV} must be a number of seconds, got {raw!r}") from None
    if not 0 < value <= 3600:
        raise ValueError(f"{OUTAGE_ENV} must be between 0 and 3600 seconds, got {raw!r}")
    return value


# ---- the data --------------------------------------------------------------------------


def zone_dataset(days: int, seed: int = 7) -> ZoneDataset:
    """Two metered zones, two inflow meters each, four pressure points; leaks come and go.

    Zone a leaks on days 4-6, 14-16, 24-26...; zone b on days 8-9, 18-19...: on some nights
    one zone's alert clears as the other's is raised, at the same millisecond.
    """
    rng = np.random.default_rng(seed)
    steps = days * 86_400_000 // STEP_MS
    t = T0 + np.arange(steps, dtype=np.int64) * STEP_MS
    day = (t - T0) // 86_400_000
    hour = (t % 86_400_000) / 3_600_000
    demand = 12.0 + 10.0 * np.clip(np.sin((hour - 5) / 24 * 2 * np.pi), 0, None)
    leak_a = np.where((day % 10 >= 4) & (day % 10 <= 6) & (day >= 4), 9.0, 0.0)
    leak_b = np.where((day % 10 >= 8) & (day >= 8), 9.0, 0.0)
    columns, values = [], []
    for zone, leak in (("mnf-a", leak_a), ("mnf-b", leak_b)):
        first, second = FLOWS[zone]
        columns += [first, second]
        values += [demand * 0.6 + leak + rng.normal(0, 0.15, steps), demand * 0.4 + rng.normal(0, 0.15, steps)]
    for i, name in enumerate(PRESSURES):
        columns.append(name)
        values.append(48.0 + i - 0.3 * (leak_a + leak_b) / 9 + rng.normal(0, 0.05, steps))
    quantities = ["flow"] * 4 + ["pressure"] * 4
    units = ["L/s"] * 4 + ["m"] * 4
    # Rounded to 3 decimals as a meter would report: the values compare exactly after the trip.
    return ZoneDataset(
        t,
        np.round(np.stack(values, axis=1), 3),
        columns,
        quantities,
        units,
        leak_a + leak_b,
        meta={"what": "chaos two-zone synthetic", "days": days, "seed": seed},
    )


def config_text(dataset: Path, *, prefix: str, port: int, speed: float, data_dir: Path, outbox_mb: int = 64) -> str:
    sensors = "\n".join(f"  - {{id: {s}, quantity: flow, driver: replay}}" for pair in FLOWS.values() for s in pair)
    sensors += "\n" + "\n".join(f"  - {{id: {s}, quantity: pressure, driver: replay}}" for s in PRESSURES)
    models = "\n".join(
        f"  - {{name: {name}, type: mnf, zone_inflow: [{{sensor: {a}}}, {{sensor: {b}}}], "
        f"history_days: 5, raise_after: 1, clear_after: 2}}"
        for name, (a, b) in FLOWS.items()
    )
    return f"""# chaos scenario gateway (generated by tests/chaos.py)
site: {SITE}
gateway: {GATEWAY}
sensors:
{sensors}
sources:
  replay: {{file: {dataset}, speed: {speed:.3f}}}
models:
{models}
mqtt: {{host: 127.0.0.1, port: {port}, topic_prefix: {prefix}, readings_batch: 50}}
storage: {{data_dir: {data_dir}, outbox_max_mb: {outbox_mb}}}
"""


@dataclass
class Expected:
    """What the gateway makes from a dataset: logical keys -> what must land."""

    readings: dict[tuple[str, int], float]  # (sensor, time) -> value
    detections: set[tuple[str, int]]  # (model, window end)
    alerts: dict[tuple[str, str], int]  # (alert_id, state) -> time

    @property
    def total(self) -> int:
        return len(self.readings) + len(self.detections) + len(self.alerts)


def expected_from(config_path: Path) -> Expected:
    """Run the gateway's own replay and detectors in this process, without MQTT."""
    config = load_config(config_path)
    replay = config.sources.replay
    source = ReplaySource(
        config.resolve_path(replay.file),
        config.site,
        config.gateway,
        [(s.id, s.column, s.quantity) for s in config.sensors],
    )
    detectors = build_detectors(config)
    readings, detections, alerts = {}, set(), {}

    def keep(outputs) -> None:
        for out in outputs:
            if isinstance(out, Alert):
                alerts[(out.alert_id, str(out.state))] = out.time_ms
            else:
                detections.add((out.model, out.window_end_ms))

    for reading in source:
        readings[(reading.sensor, reading.time_ms)] = reading.value
        for detector in detectors:
            keep(detector.update(reading))
    for detector in detectors:  # as the runner does when a finite source ends
        keep(getattr(detector, "flush", lambda: [])())
    return Expected(readings, detections, alerts)


# ---- processes -------------------------------------------------------------------------


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "gateway.cli", *args]


class Proc:
    """A child process of ours, with its log file; killed by its own pid only."""

    def __init__(self, argv: list[str], log_path: Path):
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.popen = subprocess.Popen(
            argv, stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT, stdin=subprocess.DEVNULL
        )

    def kill9(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
        self.popen.wait()

    def terminate(self, timeout_s: float = 20.0) -> int | None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill9()
        self._log.close()
        return self.popen.returncode

    def wait(self, timeout_s: float) -> int | None:
        try:
            return self.popen.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class Spy:
    """A persistent MQTT subscriber on the lane's prefix: counts deliveries per item, and dead letters."""

    def __init__(self, port: int, prefix: str, client_id: str):
        self.prefix = prefix
        self.items: Counter = Counter()  # logical item -> deliveries (broker retransmissions excluded)
        self.deadletters: Counter = Counter()  # reason -> count
        self.lock = threading.Lock()
        self._subscriber = Collector(
            port,
            f"{prefix}/#",
            client_id=client_id,
            session_expiry_s=3600,  # with broker persistence, nothing is missed across a restart
            reconnect_delay_s=(1, 2),
            on_message=self._on_message,
        )

    def start(self) -> Spy:
        self._subscriber.start()
        return self

    def stop(self) -> None:
        self._subscriber.close()

    def _on_message(self, message) -> None:
        if message.dup:  # the broker resending to us: not the chain delivering twice
            return
        if message.topic == T.deadletter_topic(self.prefix):
            reason = json.loads(message.payload).get("reason", "?")
            with self.lock:
                self.deadletters[reason] += 1
            return
        try:
            decoded = payloads.decode(self.prefix, message.topic, message.payload)
        except payloads.PayloadError:
            return  # the malformed flood; the bridge dead-letters it
        with self.lock:
            if isinstance(decoded, list):
                for r in decoded:
                    self.items[("reading", r.sensor, r.time_ms)] += 1
            elif isinstance(decoded, Alert):
                self.items[("alert", decoded.alert_id, str(decoded.state))] += 1
            elif hasattr(decoded, "window_end_ms"):
                self.items[("detection", decoded.model, decoded.window_end_ms)] += 1

    def redelivered(self) -> int:
        with self.lock:
            return sum(n - 1 for n in self.items.values() if n > 1)


# ---- one scenario's lane ---------------------------------------------------------------


@dataclass
class Row:
    scenario: str
    what: str
    outage_s: float
    sent: int = 0
    landed: int = 0
    lost: int = 0
    duplicated: int = 0
    dropped_by_bound: int = 0
    detections_sent: int = 0
    detections_landed: int = 0
    alerts_sent: int = 0
    alerts_landed: int = 0
    readings_sent: int = 0
    readings_landed: int = 0
    wrong_values: int = 0
    redelivered: int = 0
    malformed_sent: int = 0
    deadlettered: int = 0
    outbox_left: int = 0
    notes: dict = field(default_factory=dict)
    seconds: float = 0.0

    def problems(self) -> list[str]:
        """What breaks the promise: empty when the scenario passed."""
        out = []
        if self.detections_landed != self.detections_sent:
            out.append(f"{self.detections_sent - self.detections_landed} detections lost")
        if self.alerts_landed != self.alerts_sent:
            out.append(f"{self.alerts_sent - self.alerts_landed} alerts lost")
        readings_lost = self.readings_sent - self.readings_landed
        if readings_lost != self.dropped_by_bound:
            out.append(f"{readings_lost - self.dropped_by_bound} readings lost beyond what the outbox bound dropped")
        if self.duplicated:
            out.append(f"{self.duplicated} duplicated points")
        if self.wrong_values:
            out.append(f"{self.wrong_values} points with a value other than the one sent")
        if self.malformed_sent and self.deadlettered != self.malformed_sent:
            out.append(f"{self.malformed_sent} malformed sent, {self.deadlettered} dead-lettered")
        if self.outbox_left:
            out.append(f"{self.outbox_left} messages left in the gateway's outbox")
        if self.redelivered > REDELIVERY_BOUND:
            out.append(f"{self.redelivered} items delivered twice: more than one in-flight window re-sent")
        return out


class Lane:
    """A scenario's private prefix, database, folder, gateway and bridge."""

    def __init__(self, lab: Lab, name: str):
        self.lab, self.name = lab, name
        self.prefix = f"chaos-{name.replace('_', '-')}"
        self.db = f"chaos_{name}"
        self.dir = lab.root / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.dir / "gateway"
        self.config_path = self.dir / "gateway.yaml"
        self.gateway: Proc | None = None
        self.bridge: Proc | None = None
        self.spy: Spy | None = None
        self._gateway_runs = 0

    def write_config(self, dataset: Path, *, speed: float, outbox_mb: int = 64) -> None:
        self.config_path.write_text(
            config_text(
                dataset,
                prefix=self.prefix,
                port=self.lab.services.mqtt_port,
                speed=speed,
                data_dir=self.data_dir,
                outbox_mb=outbox_mb,
            )
        )

    def start_gateway(self, *, port: int | None = None, drain_s: float | None = None) -> Proc:
        self._gateway_runs += 1
        drain = drain_s if drain_s is not None else self.lab.outage_s + 90
        self.gateway = Proc(
            _cli(
                "run",
                str(self.config_path),
                "--mqtt-port",
                str(port or self.lab.services.mqtt_port),
                "--drain-timeout",
                str(drain),
            ),
            self.dir / f"gateway-{self._gateway_runs}.log",
        )
        return self.gateway

    def start_bridge(self) -> Proc:
        s = self.lab.services
        self.bridge = Proc(
            _cli(
                "bridge",
                "--mqtt-port",
                str(s.mqtt_port),
                "--influx-url",
                s.influx_url,
                "--database",
                self.db,
                "--prefix",
                self.prefix,
                "--client-id",
                f"{self.prefix}-bridge",
                "--stats-every",
                "5",
            ),
            self.dir / "bridge.log",
        )
        # The bridge logs "running" once its subscription is acknowledged. Before that, a
        # gateway's first messages would reach no session at all (a fleet's bridge has had
        # its persistent session for long; a test's has not).
        if (
            not _wait_for(
                lambda: (
                    " running: " in self.bridge.log_path.read_text(errors="replace")
                    or self.bridge.popen.poll() is not None
                ),
                30,
            )
            or self.bridge.popen.poll() is not None
        ):
            raise AssertionError(f"{self.name}: the bridge did not start:\n{self.bridge.tail()}")
        return self.bridge

    def start_spy(self) -> Spy:
        self.spy = Spy(self.lab.services.mqtt_port, self.prefix, f"{self.prefix}-spy").start()
        return self.spy

    def wait_gateway(self, timeout_s: float) -> None:
        if self.gateway.wait(timeout_s) is None:
            raise AssertionError(
                f"{self.name}: the gateway did not finish within {timeout_s:.0f} s:\n{self.gateway.tail()}"
            )

    def outbox_stats(self) -> dict:
        with Outbox(outbox_path(self.data_dir)) as box:
            return box.stats()

    def readings_stored(self) -> int:
        """Reading streams the running gateway has stored something on (its outbox's resume marks).

        Read from the SQLite file directly, read-only: the gateway holds the outbox's lock,
        and a missing file must not be created here.
        """
        path = outbox_path(self.data_dir)
        try:
            db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=5)
            try:
                (count,) = db.execute(
                    "SELECT count(*) FROM streams WHERE mark_ms IS NOT NULL AND stream LIKE '%/readings/%'"
                ).fetchone()
            finally:
                db.close()
        except sqlite3.Error:  # no file or no table yet: the gateway is still starting
            return 0
        return count

    def wait_streaming(self, timeout_s: float) -> None:
        """Until the gateway has stored its first readings: it takes a few seconds to start on a busy machine.

        A fault due "mid-stream" must not come before the stream began: a gateway killed
        before it stored anything has nothing to resume from, and proves nothing.
        """
        if not _wait_for(lambda: self.readings_stored() > 0 or self.gateway.popen.poll() is not None, timeout_s):
            raise AssertionError(
                f"{self.name}: the gateway stored no reading within {timeout_s:.0f} s:\n{self.gateway.tail()}"
            )
        if self.gateway.popen.poll() is not None and not self.readings_stored():
            raise AssertionError(f"{self.name}: the gateway ended before storing a reading:\n{self.gateway.tail()}")

    def finish(self) -> None:
        for proc in (self.gateway, self.bridge):
            if proc is not None:
                proc.terminate()
        if self.spy is not None:
            self.spy.stop()

    # Counting in InfluxDB.
    def _series(self, q: str) -> list[dict]:
        answer = self.lab.services.influx_query(q, db=self.db)
        result = answer["results"][0]
        if result.get("partial"):
            raise AssertionError(f"InfluxDB truncated the answer to {q!r}")
        return result.get("series", [])

    def count_points(self) -> int:
        total = 0
        for measurement, fld in (("reading", "quality"), ("detection", "label"), ("alert", "score")):
            try:
                for series in self._series(f'SELECT count("{fld}") FROM "{measurement}"'):
                    total += series["values"][0][1]
            except (ServiceError, OSError, KeyError, IndexError):  # no database yet, or InfluxDB restarting
                return -1
        return total

    def wait_landed(self, want: int, timeout_s: float) -> None:
        """Until ``want`` points are there (or the timeout), then a quiet second for stragglers."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.count_points() < want:
            time.sleep(0.5)
        time.sleep(1.0)

    def measure(self, expected: Expected, row: Row) -> Row:
        readings = Counter()
        for sensor in sorted({s for s, _ in expected.readings}):
            for series in self._series(f"SELECT value FROM reading WHERE sensor = '{sensor}' GROUP BY *"):
                for t, value in series["values"]:
                    key = (series["tags"]["sensor"], t)
                    readings[key] += 1
                    if key in expected.readings and value != expected.readings[key]:
                        row.wrong_values += 1
        others = self._series(
            "SELECT count(value) FROM reading WHERE "
            + " AND ".join(f"sensor != '{s}'" for s in sorted({s for s, _ in expected.readings}))
        )
        stray_readings = sum(s["values"][0][1] for s in others)
        detections = Counter()
        for series in self._series("SELECT window_end_ms FROM detection GROUP BY *"):
            for _, window_end in series["values"]:
                detections[(series["tags"]["model"], window_end)] += 1
        alerts = Counter()
        for series in self._series("SELECT * FROM alert GROUP BY *"):
            # alert_id is a tag since the schema change of f3e932d; a field before it.
            column = series["columns"].index("alert_id") if "alert_id" in series["columns"] else None
            for values in series["values"]:
                alert_id = series["tags"].get("alert_id") if column is None else values[column]
                alerts[(alert_id, series["tags"]["state"])] += 1

        def tally(found: Counter, wanted) -> tuple[int, int]:
            landed = sum(1 for key in wanted if key in found)
            duplicated = sum(n - 1 for n in found.values() if n > 1) + sum(
                n for k, n in found.items() if k not in wanted
            )
            return landed, duplicated

        row.readings_sent = len(expected.readings)
        row.readings_landed, dup_r = tally(readings, expected.readings)
        row.detections_sent = len(expected.detections)
        row.detections_landed, dup_d = tally(detections, expected.detections)
        row.alerts_sent = len(expected.alerts)
        row.alerts_landed, dup_a = tally(alerts, expected.alerts)
        row.sent = expected.total
        row.landed = row.readings_landed + row.detections_landed + row.alerts_landed
        row.lost = row.sent - row.landed
        row.notes["missing"] = sorted(
            str(k)
            for k in list(set(expected.detections) - set(detections)) + [k for k in expected.alerts if k not in alerts]
        )[:20]
        if self.spy is not None:  # lost after the broker took it, or before?
            row.notes["missing_seen_by_spy"] = (
                sum(1 for m, t in set(expected.detections) - set(detections) if ("detection", m, t) in self.spy.items)
                + sum(1 for (a, st) in set(expected.alerts) - set(alerts) if ("alert", a, st) in self.spy.items)
                + sum(
                    1
                    for (sensor, t) in expected.readings
                    if (sensor, t) not in readings and ("reading", sensor, t) in self.spy.items
                )
            )
        row.duplicated = dup_r + dup_d + dup_a + stray_readings
        if self.spy is not None:
            row.redelivered = self.spy.redelivered()
            row.deadlettered = sum(self.spy.deadletters.values())
            if self.spy.deadletters:
                row.notes["deadletter_reasons"] = dict(sorted(self.spy.deadletters.items()))
        row.outbox_left = self.outbox_stats()["outbox_backlog"]
        row.notes.update(self.gateway_restarts())
        return row

    def gateway_restarts(self) -> dict[str, int]:
        """From the gateway logs: messages a restarted gateway found in its outbox, readings it resumed after."""
        replayed = resumed = 0
        for log_path in sorted(self.dir.glob("gateway-*.log")):
            text = log_path.read_text(errors="replace")
            replayed += sum(int(m) for m in re.findall(r"outbox: (\d+) messages from a previous run", text))
            resumed += sum(int(m) for m in re.findall(r"\((\d+) readings already stored by a previous run\)", text))
        return {"gateway_runs": self._gateway_runs, "outbox_replayed": replayed, "resumed_readings": resumed}


class SharedData:
    """Datasets and what the gateway makes of them, built once for every lab (thread-safe)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._datasets: dict[int, Path] = {}
        self._expected: dict[int, Expected] = {}

    def dataset(self, days: int) -> Path:
        with self._lock:
            if days not in self._datasets:
                self._datasets[days] = zone_dataset(days).save(self.folder / f"zone-{days}d.npz")
            return self._datasets[days]

    def expected(self, config_path: Path, days: int) -> Expected:
        """Site, gateway and models are the same in every lane: one answer per dataset."""
        with self._lock:
            if days not in self._expected:
                self._expected[days] = expected_from(config_path)
            return self._expected[days]


class Lab:
    """Mosquitto (with persistence) and InfluxDB for chaos scenarios run one after the other."""

    def __init__(self, root: Path, outage: float | None = None, shared: SharedData | None = None):
        self.root = Path(root)
        self.outage_s = outage if outage is not None else outage_s()
        self.shared = shared or SharedData(self.root / "data")
        self.services = LocalServices(
            self.root / "services", mosquitto_persistence=True, mosquitto_extra_config=BROKER_QUEUE_CONFIG
        )

    def __enter__(self) -> Lab:
        self.services.start()
        return self

    def __exit__(self, *exc) -> None:
        self.services.stop()

    def dataset(self, days: int) -> Path:
        return self.shared.dataset(days)

    def stream_speed(self) -> float:
        """Replay speed so the stream lasts the outage plus a lead before and a tail after it."""
        return STREAM_DAYS * 86_400 / (lead_s(self.outage_s) + self.outage_s + tail_s(self.outage_s))

    def expected(self, lane: Lane, days: int) -> Expected:
        return self.shared.expected(lane.config_path, days)


# ---- the scenarios ---------------------------------------------------------------------


def _stream(lab: Lab, name: str, what: str, fault, *, flood: int = 0, gateway_port: int | None = None) -> Row:
    """The common shape: spy, bridge, paced gateway; ``fault(lane)`` after the lead; recover; count."""
    started = time.monotonic()
    lane = Lane(lab, name)
    lane.write_config(lab.dataset(STREAM_DAYS), speed=lab.stream_speed())
    expected = lab.expected(lane, STREAM_DAYS)
    row = Row(name, what, lab.outage_s)
    try:
        lane.start_spy()
        lane.start_bridge()
        lane.start_gateway(port=gateway_port)
        lane.wait_streaming(60)  # the lead before the fault counts from the stream's start
        flood_thread = None
        if flood:
            row.malformed_sent = flood
            flood_thread = threading.Thread(
                target=_flood, args=(lab, lane, flood, lead_s(lab.outage_s) + lab.outage_s), daemon=True
            )
            flood_thread.start()
        time.sleep(lead_s(lab.outage_s))
        fault(lane)
        if flood_thread is not None:
            flood_thread.join(lab.outage_s + 120)
        lane.wait_gateway(lab.outage_s * 2 + 180)
        lane.wait_landed(expected.total, lab.outage_s + 120)
        if flood:
            _wait_for(lambda: sum(lane.spy.deadletters.values()) >= flood, 60)
        lane.measure(expected, row)
    finally:
        lane.finish()
    row.seconds = round(time.monotonic() - started, 1)
    return row


def _wait_for(condition, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


def broker_outage(lab: Lab) -> Row:
    def fault(lane: Lane) -> None:
        lab.services.stop_service(MOSQUITTO)
        time.sleep(lab.outage_s)
        lab.services.start_service(MOSQUITTO)

    return _stream(lab, "broker_outage", f"Mosquitto stopped {lab.outage_s:g} s mid-stream", fault)


def influxdb_outage(lab: Lab) -> Row:
    def fault(lane: Lane) -> None:
        lab.services.stop_service(INFLUXDB)
        time.sleep(lab.outage_s)
        lab.services.start_service(INFLUXDB)

    return _stream(lab, "influxdb_outage", f"InfluxDB stopped {lab.outage_s:g} s mid-stream", fault)


def gateway_kill(lab: Lab) -> Row:
    def fault(lane: Lane) -> None:
        lane.gateway.kill9()
        time.sleep(lab.outage_s)
        lane.start_gateway()

    return _stream(lab, "gateway_kill9", f"gateway kill -9 mid-stream, restarted {lab.outage_s:g} s later", fault)


def gateway_kill_offline(lab: Lab) -> Row:
    """The outbox's own kill -9 test in the full chain: killed while it holds everything made so far."""

    def fault(lane: Lane) -> None:
        lane.gateway.kill9()
        lane.start_gateway()  # right away, and this time the broker is reachable

    return _stream(
        lab,
        "gateway_kill9_offline",
        "gateway kill -9 mid-stream while the broker is unreachable to it, restarted at once with the broker reachable",
        fault,
        gateway_port=free_port(),
    )


def bridge_kill(lab: Lab) -> Row:
    def fault(lane: Lane) -> None:
        lane.bridge.kill9()
        time.sleep(lab.outage_s)
        lane.start_bridge()

    return _stream(lab, "bridge_kill9", f"bridge kill -9 mid-stream, restarted {lab.outage_s:g} s later", fault)


def broker_restart(lab: Lab) -> Row:
    def fault(lane: Lane) -> None:
        lab.services.restart_service(MOSQUITTO)

    return _stream(lab, "broker_restart", "Mosquitto restarted mid-stream (persistence on)", fault)


def malformed_flood(lab: Lab) -> Row:
    return _stream(
        lab,
        "malformed_10k",
        f"{MALFORMED:,} malformed payloads mixed into the stream",
        lambda lane: None,
        flood=MALFORMED,
    )


def outbox_bound(lab: Lab) -> Row:
    """Gateway offline for a whole 60-day replay with a 1 MB outbox, then the broker is reachable."""
    started = time.monotonic()
    lane = Lane(lab, "outbox_bound")
    lane.write_config(lab.dataset(BOUND_DAYS), speed=0, outbox_mb=1)
    expected = lab.expected(lane, BOUND_DAYS)
    row = Row(
        "outbox_bound", f"gateway offline for a {BOUND_DAYS}-day replay with a 1 MB outbox, then online", lab.outage_s
    )
    try:
        lane.start_spy()
        lane.start_bridge()
        lane.start_gateway(port=free_port(), drain_s=0)  # nothing listens there: the broker is "down"
        lane.wait_gateway(300)
        full = lane.outbox_stats()
        files = sum(p.stat().st_size for p in lane.data_dir.glob("outbox.sqlite3*"))
        row.dropped_by_bound = full["outbox_dropped_readings"]
        row.notes.update(
            outbox_max_mb=1,
            outbox_messages_when_full=full["outbox_backlog"],
            outbox_bytes_when_full=full["outbox_bytes"],
            outbox_file_bytes_when_full=files,
            dropped_reading_messages=full["outbox_dropped_reading_messages"],
        )
        lane.start_gateway(drain_s=120)  # broker reachable now: the outbox drains, nothing new is made
        lane.wait_gateway(300)
        lane.wait_landed(expected.total - row.dropped_by_bound, 120)
        lane.measure(expected, row)
        row.notes["status_says_dropped"] = _status_counter(lane, "outbox_dropped_readings")
    finally:
        lane.finish()
    row.seconds = round(time.monotonic() - started, 1)
    return row


def _status_counter(lane: Lane, name: str) -> float | None:
    """The last value of a counter in the gateway's status messages, as landed in InfluxDB."""
    series = lane._series(f'SELECT last("{name}") FROM gateway_status')
    return series[0]["values"][0][1] if series else None


SCENARIOS = {
    "broker_outage": broker_outage,
    "influxdb_outage": influxdb_outage,
    "gateway_kill9": gateway_kill,
    "gateway_kill9_offline": gateway_kill_offline,
    "bridge_kill9": bridge_kill,
    "broker_restart": broker_restart,
    "outbox_bound": outbox_bound,
    "malformed_10k": malformed_flood,
}
# Scenarios that stop or restart a service run in one lab, the others in a second lab
# with its own Mosquitto and InfluxDB, at the same time: a broker outage in one never
# touches a scenario of the other, and the suite takes half the time.
SERVICE_FAULTS = ("broker_outage", "influxdb_outage", "broker_restart")


def run_suite(root: Path, names: list[str] | None = None, outage: float | None = None) -> dict[str, Row | Exception]:
    """Run the scenarios in two labs side by side; each name maps to its Row, or to what it raised."""
    names = list(names or SCENARIOS)
    unknown = set(names) - set(SCENARIOS)
    if unknown:
        raise ValueError(f"unknown chaos scenarios {sorted(unknown)}; known: {', '.join(SCENARIOS)}")
    shared = SharedData(Path(root) / "data")
    groups = [[n for n in names if n in SERVICE_FAULTS], [n for n in names if n not in SERVICE_FAULTS]]
    results: dict[str, Row | Exception] = {}

    def run_group(index: int, group: list[str]) -> None:
        if not group:
            return
        try:
            with Lab(Path(root) / f"lab{index}", outage, shared) as lab:
                for name in group:
                    try:
                        results[name] = SCENARIOS[name](lab)
                    except Exception as exc:  # reported by that scenario's test, the others go on
                        results[name] = exc
        except Exception as exc:  # the lab itself did not start
            for name in group:
                results.setdefault(name, exc)

    threads = [threading.Thread(target=run_group, args=(i, g), name=f"chaos-lab{i}") for i, g in enumerate(groups)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {name: results[name] for name in names}


# ---- the malformed flood ---------------------------------------------------------------


def malformed_payloads(prefix: str, count: int, seed: int = 11) -> list[tuple[str, bytes]]:
    """``count`` (topic, payload) pairs the bridge must refuse, of every kind it guards against."""
    topics = T.Topics(prefix, SITE, GATEWAY)
    far_future, far_past = 7_258_118_400_000, 631_152_000_000  # 2200-01-01, 1990-01-01

    def readings(rows, quantity="flow", unit="L/s", v=1) -> bytes:
        return json.dumps({"v": v, "quantity": quantity, "unit": unit, "readings": rows}).encode()

    kinds = [
        lambda i: (topics.readings("F-a1"), bytes([0xFF, 0xFE, 0xFD, i % 256])),  # not UTF-8
        lambda i: (topics.readings("F-a1"), b'{"v":1,"quantity":'),  # not JSON
        lambda i: (topics.readings("F-a2"), readings([[T0 + i, 1.0]], v=2)),  # schema version
        lambda i: (topics.readings("F-b1"), b"[1, 2, 3]"),  # not an object
        lambda i: (topics.readings("F-b1"), readings([[far_future + i, 1.0]])),  # far future
        lambda i: (topics.readings("F-b2"), readings([[far_past + i, 1.0]])),  # far past
        lambda i: (topics.readings("F-b2"), readings([[T0 + i, 1e999]]).replace(b"Infinity", b"1e999")),  # infinite
        lambda i: (topics.readings("P-a"), readings([[T0 + i, 1.0]], quantity="flux")),  # unknown quantity
        lambda i: (topics.readings("P-a"), readings([[T0 + i, 1.0]], quantity="pressure", unit="bar")),  # unit
        lambda i: (topics.readings("P-b"), readings([])),  # empty batch
        # A topic the bridge subscribes to (readings/+) whose sensor level is no identifier.
        lambda i: (f"{prefix}/{SITE}/{GATEWAY}/readings/P=1", readings([[T0 + i, 1.0]])),
        lambda i: (topics.detections("leak"), b'{"v":1,"label":"leak"}'),  # detection missing fields
        lambda i: (topics.alerts, json.dumps({"v": 1, "state": "maybe"}).encode()),  # alert, bad state
        lambda i: (topics.status, b'{"v":1,"state":"online","counters":{"x":"lots"}}'),  # status, bad counter
    ]
    rng = random.Random(seed)
    out = []
    for i in range(count):
        if i % 1000 == 999:  # a few oversized ones (300 KB), not 10,000 of them
            out.append((topics.readings("P-c"), b'{"v":1,"pad":"' + b"x" * 300_000 + b'"}'))
        else:
            out.append(rng.choice(kinds)(i))
    return out


def _flood(lab: Lab, lane: Lane, count: int, over_s: float) -> None:
    """Publish the malformed payloads at QoS 1, spread evenly over ``over_s`` seconds."""
    with Publisher(lab.services.mqtt_port, client_id=f"{lane.prefix}-flood") as client:
        started = time.monotonic()
        for i, (topic, payload) in enumerate(malformed_payloads(lane.prefix, count)):
            due = started + over_s * i / count
            if (left := due - time.monotonic()) > 0:
                time.sleep(left)
            info = client.publish(topic, payload, wait_s=30 if i % 200 == 199 else None)
        info.wait_for_publish(30)


# ---- the report ------------------------------------------------------------------------

COLUMNS = (
    "scenario",
    "sent",
    "landed",
    "lost",
    "dropped_by_bound",
    "duplicated",
    "detections_sent",
    "detections_landed",
    "alerts_sent",
    "alerts_landed",
    "redelivered",
    "deadlettered",
)


def table(rows: list[Row]) -> str:
    header = "| " + " | ".join(COLUMNS) + " | result |"
    lines = [header, "|" + "---|" * (len(COLUMNS) + 1)]
    for row in rows:
        cells = [str(getattr(row, c)) for c in COLUMNS]
        lines.append("| " + " | ".join(cells) + f" | {'ok' if not row.problems() else '; '.join(row.problems())} |")
    return "\n".join(lines)


def report_dir() -> Path:
    return Path(os.environ.get(REPORT_ENV) or ROOT / ".run" / "chaos")


def write_report(rows: list[Row], folder: Path) -> tuple[Path, Path]:
    """chaos.json (a list of rows) and chaos.md (the table, the definitions, how it was run)."""
    folder.mkdir(parents=True, exist_ok=True)
    outage = rows[0].outage_s if rows else outage_s()
    json_path, md_path = folder / "chaos.json", folder / "chaos.md"
    json_path.write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n")
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    md_path.write_text(
        f"""# Chaos suite: what lands in InfluxDB when things break

Generated by `tests/test_chaos.py` (helpers in `tests/chaos.py`) on {when}, on
{platform.platform()} ({os.cpu_count()} CPUs), with **outages of {outage:g} s**
(`{OUTAGE_ENV}={outage:g}`). Do not edit by hand: `make chaos` runs the suite with 60 s
outages and rewrites this file and `chaos.json`; `make test` runs the same scenarios
with {DEFAULT_OUTAGE_S:g} s outages and writes its report under `.run/chaos/`.

Everything is real: Mosquitto 2 with persistence and InfluxDB 1.6 started by
`LocalServices`, a gateway process (`frugalsense run`, durable outbox with
`synchronous=FULL`) replaying a synthetic two-zone water dataset ({STREAM_DAYS} days at
10 min, 8 sensors, two Minimum Night Flow detectors) paced so the stream lasts
{lead_s(outage):g} s + the outage + {tail_s(outage):g} s, and a bridge process (`frugalsense bridge`,
acknowledge after write, persistent session). Each scenario has its own topic prefix,
database and outbox. The notifier's own rows (kill -9, SMTP down) are in
[chaos-notify.md](chaos-notify.md).

{table(rows)}

## What the columns mean

- **sent**: readings + detections + alerts the gateway produced (the same replay and
  detectors run in the test process say what they are; the run is deterministic).
- **landed**: of those, the ones in InfluxDB with the value sent.
- **lost** = sent - landed. **dropped_by_bound**: readings the outbox dropped by its
  stated policy when full (oldest readings first; alerts and detections never), as
  counted by the outbox and reported in the gateway's status messages. A scenario
  passes when lost = dropped_by_bound and no detection or alert is lost.
- **duplicated**: points in InfluxDB beyond one per logical item sent (a reading is
  sensor + data time, a detection model + night window, an alert alert_id + state),
  whatever their tags or timestamp, plus points that match nothing sent (e.g. a
  malformed payload written). InfluxDB overwrites the same series + time, so a
  message delivered twice cannot make two points; the same item under another
  timestamp or tag set would, and would be counted here.
- **redelivered**: items the broker delivered more than once (seen by a subscriber
  with a persistent session; the broker's own retransmissions to it excluded). This
  is at-least-once at work (a message in flight when the link broke is sent again);
  it costs bandwidth, not correctness.
- **deadlettered**: malformed payloads the bridge refused, as seen on
  `<prefix>/deadletter` (reasons in `chaos.json`).

## Scenarios

"""
        + "\n".join(f"- **{r.scenario}**: {r.what} ({r.seconds:g} s)." for r in rows)
        + """

## Limits seen while building this

- Mosquitto keeps at most `max_queued_messages` (1000 by default) QoS 1 messages per
  offline or slow client. The bridge's persistent session is such a client: a bridge
  or database outage longer than ~1000 messages of traffic loses messages at the
  broker, before the bridge can acknowledge-after-write. A connected client that reads
  slower than messages arrive is one too: on a busy 2-core machine the malformed flood
  overflowed the bridge's queue (it never saw part of the flood) and the spy's (it
  missed dead letters), with "Outgoing messages are being dropped" in the broker log.
  The suite's broker runs with `max_queued_messages 200000`; a fleet broker needs it
  raised too (or `max_queued_bytes` set instead).
- A broker killed with `kill -9` (not tested here) loses what it acknowledged since its
  last autosave (`autosave_interval`, 1800 s by default); a stop or restart saves first.
- A message published before the bridge's first subscription reaches no session and is
  gone (seen here as the first night's detections missing, until the suite waited for
  the bridge to be subscribed before starting the gateway). A fleet's bridge session
  outlives any gateway start; a new deployment must start its bridge first.
"""
    )
    return json_path, md_path
