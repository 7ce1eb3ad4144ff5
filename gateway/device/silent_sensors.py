"""Silent-sensor alerts: no reading for ``silent_after_min`` raises ``sensor_silent``, cleared when readings are back.

A window with a missing sensor makes a detector say ``insufficient_data``; that is a
decision about data, not a call to a technician. When a sensor stops entirely no data
time moves for it and no detector is ever asked, so this is the gateway's own watch,
not a detector: it judges silence on the gateway's clock (gateway/device/gateway_clock.py:
the wall clock for live sources, the data's for a replay), which the runner gives it at
every reading and at every tick of its loop; durations are measured on the clock's steady time
(a Pi without a battery clock sets its wall clock after boot: that jump is not silence). An
``unknown`` reading (what a serial source says for a device that stopped answering) is not a
reading here: the sensor is silent.

One alert per silence: ``raised`` once the sensor has been silent for more than its
time, ``cleared`` (same ``alert_id``) at its first reading back. The id names the sensor
and the start of the silence (its last reading, or the gateway's start if it never sent
one), so it is the same after a restart. The watch keeps its state in
``<data_dir>/silent_sensors.json`` (written atomically when an alert changes and with
every status message): a sensor still silent after a restart keeps its open alert, and
no new one is raised. A saved state newer than the clock at the first reading (a replay
started again from its beginning) is not used: the replay rebuilds it, and the outbox's
resume marks drop the alerts already sent (gateway/device/runner.py).

>>> from edge.contracts import Quality, Reading
>>> watch = SilentSensors("net3", "gw-01", [Watched("F-in", "flow", 15 * 60_000, "Modbus RTU on /dev/ttyUSB0")])
>>> t0 = 1_772_409_600_000
>>> watch.update(Reading(t0, "net3", "gw-01", "F-in", "flow", 12.5, "L/s"), t0)
[]
>>> watch.tick(t0 + 15 * 60_000)  # silent for 15 min: not more than 15 yet
[]
>>> (raised,) = watch.tick(t0 + 16 * 60_000)
>>> raised.alert_id, str(raised.state), raised.since_ms == t0
('silent-F-in-20260302T000000', 'raised', True)
>>> print(raised.message.replace(": check", ":" + chr(10) + "check"))
Sensor F-in (flow, Modbus RTU on /dev/ttyUSB0) has sent no reading since 2026-03-02 00:00 UTC (16 min):
check its power, cable and connector
>>> watch.tick(t0 + 60 * 60_000)  # still silent: still the one alert
[]
>>> t = t0 + 61 * 60_000
>>> watch.update(Reading(t, "net3", "gw-01", "F-in", "flow", None, "L/s", Quality.UNKNOWN), t)  # not a reading here
[]
>>> t = t0 + 70 * 60_000
>>> (cleared,) = watch.update(Reading(t, "net3", "gw-01", "F-in", "flow", 12.0, "L/s"), t)
>>> cleared.alert_id == raised.alert_id, str(cleared.state)
(True, 'cleared')
"""

from __future__ import annotations

import json
import logging
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.contracts import Alert, AlertState, Quality, Reading, Severity
from gateway.device.checkpoint_files import write_atomic

log = logging.getLogger(__name__)

KIND = "sensor_silent"
LABEL = "silent"
MODEL = "sensor_watch"  # the Alert's model: the gateway's own watch, not an exported model
MODEL_VERSION = "1"
FILE_NAME = "silent_sensors.json"
FORMAT = 1


@dataclass(frozen=True)
class Watched:
    """One sensor the gateway expects readings from: after how long it is silent, and where it is connected."""

    sensor: str
    quantity: str
    after_ms: int
    where: str  # for the technician: "line node on /dev/ttyUSB0", "replay zone.npz column 10"


@dataclass
class _Sensor:
    watched: Watched
    heard_ms: int | None = None  # steady clock at its last reading (or at the start, if none since)
    reading_ms: int | None = None  # the last reading's own time
    alert_id: str | None = None  # the open alert, if silent
    since_ms: int = 0


class SilentSensors:
    """The gateway's watch over its sensors' silences; ``update`` at each reading, ``tick`` in between."""

    def __init__(self, site: str, gateway: str, watched: list[Watched], path: Path | None = None):
        self.site, self.gateway, self.path = site, gateway, path
        self._sensors = {w.sensor: _Sensor(w) for w in watched}
        self._next_due: int | None = None  # no silence can be due before this steady clock time
        self._started_ms = 0  # the clock when the watch started
        self._saved: dict | None = None  # read by begin(), used at the first clock time
        self._follows_data = False  # the clock is a replay's: a saved state from later is not this run's past
        self.changed = False  # an alert changed since the last save
        self.raised = self.cleared = self.save_errors = 0

    @property
    def watched(self) -> list[Watched]:
        return [s.watched for s in self._sensors.values()]

    # ---- the stream --------------------------------------------------------------------------------------------
    def update(self, reading: Reading, now_ms: int, steady_ms: int | None = None) -> list[Alert]:
        """A reading arrived at ``now_ms``: clear its sensor's silence, then raise what is due.

        Silence is measured on ``steady_ms`` (the clock's steady time, ``now_ms`` if not given): a wall
        clock set at boot (a Pi has no battery clock) must not make every sensor silent at once.
        """
        steady = now_ms if steady_ms is None else steady_ms
        out = self._start(now_ms, steady)
        sensor = self._sensors.get(reading.sensor)
        if sensor is not None and reading.quality is not Quality.UNKNOWN:
            if sensor.alert_id is not None:
                out.append(self._clear(sensor, reading, now_ms))
            sensor.heard_ms, sensor.reading_ms = steady, reading.time_ms
        if self._next_due is not None and steady > self._next_due:
            out += self._due(now_ms, steady)
        return out

    def tick(self, now_ms: int, steady_ms: int | None = None) -> list[Alert]:
        """The clock moved without a reading: raise the silences now due."""
        steady = now_ms if steady_ms is None else steady_ms
        out = self._start(now_ms, steady)
        if self._next_due is not None and steady > self._next_due:
            out += self._due(now_ms, steady)
        return out

    def _start(self, now_ms: int, steady: int) -> list[Alert]:
        if self._next_due is not None or now_ms <= 0:
            return []  # started already, or a replay clock before its first reading
        out = self._restore(now_ms) if self._saved is not None else []
        for sensor in self._sensors.values():
            sensor.heard_ms = steady  # the gateway was not listening before: each sensor gets its full time
        self._next_due, self._started_ms = steady, now_ms
        return out

    def _due(self, now_ms: int, steady: int) -> list[Alert]:
        out, next_due = [], None
        for sensor in self._sensors.values():
            if sensor.alert_id is not None or sensor.heard_ms is None:
                continue
            due = sensor.heard_ms + sensor.watched.after_ms
            if steady > due:
                out.append(self._raise(sensor, now_ms))
            elif next_due is None or due < next_due:
                next_due = due
        self._next_due = steady if next_due is None else next_due  # None: every sensor silent already
        return out

    # ---- the alerts --------------------------------------------------------------------------------------------
    def _raise(self, sensor: _Sensor, now_ms: int) -> Alert:
        w = sensor.watched
        since = sensor.reading_ms if sensor.reading_ms is not None else self._started_ms
        sensor.alert_id, sensor.since_ms = alert_id(w.sensor, since), since
        silent_min = (now_ms - since) / 60_000
        last = (
            f"since {_utc(since)}" if sensor.reading_ms is not None else f"since the gateway started at {_utc(since)}"
        )
        message = (
            f"Sensor {w.sensor} ({w.quantity}, {w.where}) has sent no reading {last} ({_minutes(silent_min)}): "
            "check its power, cable and connector"
        )
        self.raised += 1
        self.changed = True
        return self._alert(sensor, now_ms, AlertState.RAISED, message, silent_min)

    def _clear(self, sensor: _Sensor, reading: Reading, now_ms: int) -> Alert:
        w = sensor.watched
        silent_min = (reading.time_ms - sensor.since_ms) / 60_000
        message = (
            f"Sensor {w.sensor} ({w.quantity}, {w.where}) sends readings again since {_utc(reading.time_ms)}, "
            f"after {_minutes(silent_min)} of silence"
        )
        alert = self._alert(sensor, now_ms, AlertState.CLEARED, message, silent_min)
        sensor.alert_id = None
        self.cleared += 1
        self.changed = True
        return alert

    def _alert(self, sensor: _Sensor, now_ms: int, state: AlertState, message: str, silent_min: float) -> Alert:
        w = sensor.watched
        explanation: dict[str, Any] = {
            "sensors": [w.sensor],
            "source": w.where,
            "silent_min": round(max(0.0, silent_min), 1),
            "silent_after_min": round(w.after_ms / 60_000, 1),
        }
        if sensor.reading_ms is not None:
            explanation["last_reading_ms"] = sensor.reading_ms
        return Alert(
            time_ms=now_ms,
            site=self.site,
            gateway=self.gateway,
            kind=KIND,
            alert_id=sensor.alert_id or "",
            state=state,
            label=LABEL,
            severity=Severity.WARNING,
            score=round(max(0.0, silent_min) / (w.after_ms / 60_000), 3),  # > 1: silent for longer than allowed
            message=message,
            model=MODEL,
            model_version=MODEL_VERSION,
            since_ms=sensor.since_ms,
            explanation=explanation,
        )

    # ---- across restarts ---------------------------------------------------------------------------------------
    def begin(self, resume: bool, *, follows_data: bool = False) -> None:
        """Read the saved state (when the run resumes, as ``frugalsense run`` does); used at the first clock time.

        ``follows_data``: the clock is a replay's, so a state saved later than its first time is not used.
        """
        self._follows_data = follows_data
        if not resume or self.path is None or not self.path.exists():
            return
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
            if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("sensors"), dict):
                raise ValueError("not a silent-sensor state of this version")
            self._saved = doc
        except (OSError, ValueError) as exc:
            log.warning("%s ignored (%s): every sensor is watched afresh", self.path, exc)

    def _restore(self, now_ms: int) -> list[Alert]:
        saved, self._saved = self._saved or {}, None
        if not isinstance(saved.get("clock_ms"), int) or (self._follows_data and saved["clock_ms"] > now_ms):
            log.info("%s is from later than this run's first reading (a replay started again): not used", self.path)
            return []
        out = []
        for name, entry in saved["sensors"].items():
            sensor = self._sensors.get(name)
            try:
                reading_ms, open_id, since = entry.get("reading_ms"), entry.get("alert_id"), entry.get("since_ms")
                if sensor is None:  # no longer watched (config changed): close what it left open
                    if isinstance(open_id, str) and isinstance(since, int):
                        out.append(self._unwatched(name, open_id, since, now_ms))
                    continue
                if isinstance(reading_ms, int):
                    sensor.reading_ms = reading_ms
                if isinstance(open_id, str) and isinstance(since, int):
                    sensor.alert_id, sensor.since_ms = open_id, since
            except AttributeError:  # an entry that is not an object: that sensor starts afresh
                continue
        opened = [s.watched.sensor for s in self._sensors.values() if s.alert_id]
        log.info(
            "silent sensors restored from %s%s", self.path, f": still silent {', '.join(opened)}" if opened else ""
        )
        return out

    def _unwatched(self, name: str, open_id: str, since_ms: int, now_ms: int) -> Alert:
        gone = _Sensor(Watched(name, "?", 60_000, "no longer watched"), alert_id=open_id, since_ms=since_ms)
        message = f"Sensor {name} is no longer watched for silence (the config changed): its alert is closed"
        self.changed = True
        return self._alert(gone, now_ms, AlertState.CLEARED, message, 0.0)

    def state(self, now_ms: int) -> dict:
        sensors = {}
        for name, s in self._sensors.items():
            entry: dict[str, Any] = {"reading_ms": s.reading_ms}
            if s.alert_id is not None:
                entry |= {"alert_id": s.alert_id, "since_ms": s.since_ms}
            sensors[name] = entry
        return {"format": FORMAT, "clock_ms": now_ms, "sensors": sensors}

    def save(self, now_ms: int) -> None:
        """Write the state now (an error is logged and counted, never raised: the watch goes on)."""
        self.changed = False
        if self.path is None or self._next_due is None:
            return  # no clock time yet: nothing the saved state could add
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self.path, json.dumps(self.state(now_ms), separators=(",", ":")))
        except OSError as exc:
            self.save_errors += 1
            log.error("cannot keep the silent sensors' state in %s: %s", self.path, exc)

    def counters(self) -> dict[str, int]:
        """For the status message."""
        silent = sum(1 for s in self._sensors.values() if s.alert_id is not None)
        return {"sensors_silent": silent, "silent_raised": self.raised, "silent_cleared": self.cleared}


def watched_from_config(config: Any) -> list[Watched]:
    """The sensors of a gateway config to watch: each one's ``silent_after_min``, else ``alerts.silent_after_min``.

    >>> from gateway.config.schema import GatewayConfig
    >>> cfg = GatewayConfig.model_validate({"site": "s", "gateway": "g", "mqtt": {"host": "h"},
    ...     "alerts": {"silent_after_min": 15}, "sources": {"replay": {"file": "zone.npz"}},
    ...     "sensors": [{"id": "F", "quantity": "flow", "driver": "replay", "column": "10"},
    ...                 {"id": "P", "quantity": "pressure", "driver": "replay", "silent_after_min": 0}]})
    >>> watched_from_config(cfg)
    [Watched(sensor='F', quantity='flow', after_ms=900000, where='replay of zone.npz, column 10')]
    """
    default = config.alerts.silent_after_min
    out = []
    for sensor in config.sensors:
        minutes = sensor.silent_after_min if sensor.silent_after_min is not None else default
        if minutes:
            out.append(Watched(sensor.id, sensor.quantity, int(minutes * 60_000), _where(config, sensor)))
    return out


def _where(config: Any, sensor: Any) -> str:
    """Where a sensor is connected, as a technician finds it on site."""
    entry = sensor.model_dump()
    driver = entry["driver"]
    if driver == "replay":
        replay = config.sources.replay
        return f"replay of {Path(replay.file).name if replay else '?'}, column {entry.get('column') or sensor.id}"
    if driver == "modbus_rtu":
        return f"Modbus RTU on {entry['port']}, address {entry['device_id']}"
    if driver == "cell_counts":
        return f"cell counts from {entry['file']}"
    names = {"line": "line node", "sds011": "SDS011", "pms5003": "PMS5003"}
    return f"{names.get(driver, driver)} on {entry['port']}" if "port" in entry else driver


def alert_id(sensor: str, since_ms: int) -> str:
    """The id of ``sensor``'s silence that began at ``since_ms``; a long sensor id is shortened with a checksum.

    >>> alert_id("PM25-roof", 1_772_409_600_000)
    'silent-PM25-roof-20260302T000000'
    >>> len(alert_id("x" * 64, 1_772_409_600_000))
    64
    """
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(since_ms / 1000))
    if len(sensor) > 64 - len("silent--") - len(stamp):
        sensor = f"{sensor[:32]}.{zlib.crc32(sensor.encode()):08x}"
    return f"silent-{sensor}-{stamp}"


def _utc(time_ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(time_ms / 1000))


def _minutes(minutes: float) -> str:
    return f"{minutes:.0f} min" if minutes < 120 else f"{minutes / 60:.1f} h"
