"""Live Readings from serial air sensors (SDS011, PMS5003, key=value line nodes): one loop for every port.

Each port has one device and one driver (``edge/drivers``). Fan-driven PM sensors are
put in query mode and asked for a value every ``interval_s`` while awake; with
``sleep_s`` > 0 the fan runs ``work_s`` seconds (the first ``warmup_s`` of them
discarded), then sleeps ``sleep_s``. Line nodes report on their own every
``interval_s``.

What never happens: a stale value published as fresh. A query left unanswered, a
node silent for 2.5 intervals, or a port unplugged gives readings of quality
UNKNOWN (no value) for that device's sensors, and a lost port is reopened with
backoff (1 s doubling to 60 s). A physically impossible value (negative PM, RH above
100 %) is counted and published as UNKNOWN; a fan-failure code as BAD.

Raw and corrected PM2.5 are separate sensors: ``pm25`` is what the sensor says,
``pm25_corrected`` the US EPA humidity correction of its CF=1 PM2.5 with the latest
humidity reading (at most 10 minutes old) of the configured humidity sensor.

    source = SerialSource("city-centre", "gw-air-01", [SerialDevice(
        port="/dev/serial/by-id/usb-1a86_USB_Serial-if00-port0", driver="sds011",
        sensors=(SerialSensor("PM25-roof", "pm25"), SerialSensor("PM10-roof", "pm10")))])
    for reading in source: ...

The devices, their checks and their run-time port state are ``edge.sources.serial_devices``;
this module is the loop: schedule, reconnect, bytes to frames to samples to Readings.
"""

from __future__ import annotations

import logging
import select
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping

from edge.air.correction import correct_pm25
from edge.air.limits import impossible
from edge.contracts import QUANTITY_UNITS, Quality, Reading, check_id
from edge.drivers.base import DecodeError, Reply, Sample, SerialBus
from edge.drivers.framing import Rejection
from edge.drivers.line_node import to_canonical
from edge.drivers.schedule import FOREVER, REOPEN_AFTER_MISSED, QuerySchedule, SilenceWatch
from edge.sources.batched import BatchedSource
from edge.sources.serial_devices import (
    BACKOFF_S,
    PortState,
    SerialDevice,
    SerialHandle,
    SerialSensor,
    devices_from_config_entries,
    open_serial,
    prepare,
)

log = logging.getLogger(__name__)

HUMIDITY_MAX_AGE_S = 600.0
READ_CHUNK = 4096
LOGGED_PER_REASON = 5  # then only counted


class SerialSource(BatchedSource):
    """Readings from every serial device of a gateway; iterate it, or call ``poll`` from your own loop."""

    def __init__(
        self,
        site: str,
        gateway: str,
        devices: Iterable[SerialDevice],
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        open_port: Callable[[str, SerialBus], SerialHandle] = open_serial,
        stop: threading.Event | None = None,
        humidity_max_age_s: float = HUMIDITY_MAX_AGE_S,
    ):
        self.site = check_id("site", site)
        self.gateway = check_id("gateway", gateway)
        self._clock, self._wall_ms, self._open_port = clock, wall_ms, open_port
        self.stop = stop if stop is not None else threading.Event()
        self.humidity_max_age_s = humidity_max_age_s
        self._ports = [prepare(d) for d in devices]
        if not self._ports:
            raise ValueError("a serial source needs at least one device")
        ports = [p.device.port for p in self._ports]
        if len(set(ports)) != len(ports):
            raise ValueError("two devices on one serial port: a port carries one sensor device")
        ids = [s.id for p in self._ports for s in p.device.sensors]
        if len(set(ids)) != len(ids):
            raise ValueError("a sensor id is used twice")
        humidity_ids = {s.id for p in self._ports for s in p.device.sensors if s.quantity == "humidity"}
        for p in self._ports:
            for s in p.device.sensors:
                if s.quantity == "pm25_corrected" and s.humidity_sensor not in humidity_ids:
                    raise ValueError(
                        f"sensor {s.id}: humidity_sensor {s.humidity_sensor!r} is not a humidity "
                        "sensor of this serial source"
                    )
        self._humidity: dict[str, tuple[float, float]] = {}  # sensor -> (clock time, RH %)

    # ---- the loop ------------------------------------------------------------------

    def batches(self) -> Iterator[list[Reading]]:
        """What each read gives, as one list (the gateway hands lists between threads, not readings)."""
        try:
            while not self.stop.is_set():
                batch = self.poll(timeout_s=1.0)
                if batch:
                    yield batch
        finally:
            self.close()

    def poll(self, timeout_s: float = 0.0) -> list[Reading]:
        """Do what is due, wait up to ``timeout_s`` for bytes (less if something falls due), read and decode."""
        out: list[Reading] = []
        now = self._clock()
        for port in self._ports:
            out += self._due(port, now)
        open_ports = [(p, p.handle) for p in self._ports if p.handle is not None]
        wait = max(0.0, min([timeout_s] + [self._next_event(p) - now for p in self._ports]))
        readable: list[PortState] = []
        if open_ports:
            try:
                ready, _, _ = select.select([h.fileno() for _, h in open_ports], [], [], wait)
            except (OSError, ValueError):  # a handle closed under us: read each port to find which
                ready = [h.fileno() for _, h in open_ports]
            readable = [p for p, h in open_ports if h.fileno() in ready]
        elif wait > 0:
            self.stop.wait(wait)
        now = self._clock()
        for port in readable:
            out += self._read(port, now)
        return out

    def close(self) -> None:
        """Close every port (iterating closes them at the end too)."""
        for port in self._ports:
            self._close(port)

    @property
    def counters(self) -> dict[str, dict[str, int]]:
        """Per port: the parser's counters (bytes, frames, rejections) and the source's (misses, faults...)."""
        out = {}
        for p in self._ports:
            out[p.device.port] = {
                **(p.parser.counters if p.parser is not None else {}),
                **p.counters,
                "recoveries": p.schedule.recoveries,
            }
        return out

    def _next_event(self, port: PortState) -> float:
        if port.handle is None:
            return min(port.next_open, port.next_unknown)
        return port.schedule.next_event()

    # ---- schedule ------------------------------------------------------------------

    def _due(self, port: PortState, now: float) -> list[Reading]:
        if port.handle is None:
            if now >= port.next_open:
                self._open(port, now)
            if port.handle is None and now >= port.next_unknown:
                port.next_unknown = now + port.repeat_s
                return self._unknown(port, port.device.sensors)
            return []
        if isinstance(port.schedule, SilenceWatch):
            silent = set(port.schedule.due(now))
            if not silent:
                return []
            port.counters["silent_intervals"] += 1
            out = self._unknown(port, [s for s in port.device.sensors if s.id in silent])
            if port.schedule.missed_run >= REOPEN_AFTER_MISSED:
                self._lost(port, now, f"silent for {port.schedule.missed_run} intervals", unknown_now=False)
            return out
        commands, missed = port.schedule.due(now)
        out = []
        if missed:  # the last query got no usable answer in time
            port.counters["missed_samples"] += 1
            out = self._unknown(port, port.device.sensors)
            if port.schedule.missed_run >= REOPEN_AFTER_MISSED:
                self._lost(port, now, f"no answer to {port.schedule.missed_run} queries in a row", unknown_now=False)
                return out
        for command in commands:
            self._write(port, command, now)
        return out

    def _open(self, port: PortState, now: float) -> None:
        try:
            port.handle = self._open_port(port.device.port, port.device.bus())
            port.handle.reset_input_buffer()
        except (OSError, ValueError) as exc:
            port.counters["open_failures"] += 1
            if port.counters["open_failures"] == 1 or port.backoff >= BACKOFF_S[1]:
                log.warning(
                    "%s: cannot open the port (%s): is it plugged in? retrying in %.0f s",
                    port.name,
                    getattr(exc, "strerror", None) or exc,
                    port.backoff,
                )
            self._close(port)
            port.next_open = now + port.backoff
            port.backoff = min(port.backoff * 2, BACKOFF_S[1])
            if port.next_unknown == FOREVER:  # never opened: a sensor that cannot be reached is unknown
                port.next_unknown = now
            return
        port.counters["opens"] += 1
        port.next_unknown = FOREVER
        # A fresh parser for a fresh byte stream (a half frame from before must not glue to new bytes).
        parser = port.driver.new_parser()
        if port.parser is not None:
            parser.counters.update(port.parser.counters)
        port.parser = parser
        log.info("%s: port open (%s)", port.name, port.device.bus().describe())
        for command in port.schedule.start(now):
            self._write(port, command, now)

    def _write(self, port: PortState, command: bytes, now: float) -> None:
        if port.handle is None:
            return
        try:
            port.handle.write(command)
            port.counters["commands_sent"] += 1
        except (OSError, ValueError) as exc:
            self._lost(port, now, f"write failed ({exc})")

    def _lost(self, port: PortState, now: float, why: str, unknown_now: bool = True) -> None:
        port.counters["port_lost"] += 1
        log.warning(
            "%s: %s: readings are 'unknown' until it is back; reopening in %.0f s", port.name, why, port.backoff
        )
        self._close(port)
        port.next_open = now + port.backoff
        port.backoff = min(port.backoff * 2, BACKOFF_S[1])
        # Say 'unknown' at once, unless the caller just did.
        port.next_unknown = now if unknown_now else now + port.repeat_s

    def _close(self, port: PortState) -> None:
        if port.handle is not None:
            try:
                port.handle.close()
            except (OSError, ValueError):
                pass
        port.handle = None
        port.schedule.stop()

    # ---- bytes to readings ---------------------------------------------------------

    def _read(self, port: PortState, now: float) -> list[Reading]:
        handle, parser = port.handle, port.parser
        if handle is None or parser is None:  # only open ports are read, and opening gives the parser
            return []
        try:
            waiting = handle.in_waiting
            data = handle.read(min(max(waiting, 1), READ_CHUNK))
        except (OSError, ValueError) as exc:
            self._lost(port, now, f"port lost ({exc})")
            return self._due(port, now)
        out: list[Reading] = []
        for item in parser.feed(data):
            if isinstance(item, Rejection):
                self._note(port, item.reason, f"rejected a frame ({item.reason}): {item.data[:40].hex(' ')}")
                continue
            try:
                decoded = port.driver.decode(item.data)
            except DecodeError as exc:
                self._note(port, exc.reason, str(exc))
                continue
            if isinstance(decoded, Reply):
                port.counters["replies"] += 1
            else:
                out += self._sample(port, decoded, now)
        return out

    def _sample(self, port: PortState, sample: Sample, now: float) -> list[Reading]:
        if isinstance(port.schedule, QuerySchedule):
            verdict = port.schedule.on_sample()
            if verdict != "sample":
                port.counters[verdict] += 1
                return []
            sensors = list(port.device.sensors)
        else:
            sensors = [s for s in port.device.sensors if s.key in sample.values]
            if not sensors:
                port.counters["lines_without_configured_key"] += 1
                return []
            for s in sensors:
                port.schedule.seen(s.id, now)
        port.backoff = BACKOFF_S[0]
        port.counters["samples"] += 1
        if sample.fault:
            self._note(port, sample.fault, f"device reports {sample.fault.replace('_', ' ')}: {sample.values}")
        t = self._wall_ms()
        return [self._reading(port, s, sample, t, now) for s in sensors]

    def _reading(self, port: PortState, sensor: SerialSensor, sample: Sample, t: int, now: float) -> Reading:
        quantity = sensor.quantity
        if quantity == "pm25_corrected":
            if sample.fault:
                return self._unknown_reading(
                    port, sensor, t, "corrected_of_faulty", "no corrected value from a faulty sample"
                )
            rh = self._fresh_humidity(sensor.humidity_sensor, now)
            if rh is None:
                return self._unknown_reading(
                    port,
                    sensor,
                    t,
                    "no_humidity",
                    f"no humidity from {sensor.humidity_sensor} in the last "
                    f"{self.humidity_max_age_s:.0f} s to correct PM2.5 with",
                )
            assert port.driver.correction_input is not None  # prepare() refuses pm25_corrected without it
            raw = sample.values[port.driver.correction_input]
            if (why := impossible("pm25", raw)) is not None:
                return self._unknown_reading(port, sensor, t, "impossible_values", why)
            value = correct_pm25(raw, rh, sensor.correction)
        else:
            value = sample.values[sensor.key]
            if sensor.node_unit is not None:
                value = to_canonical(quantity, sensor.node_unit, value)
        if (why := impossible(quantity, value)) is not None:
            return self._unknown_reading(port, sensor, t, "impossible_values", why)
        quality = Quality.BAD if sample.fault else Quality.OK
        if quantity == "humidity" and quality is Quality.OK:
            self._humidity[sensor.id] = (now, value)
        return Reading(t, self.site, self.gateway, sensor.id, quantity, float(value), QUANTITY_UNITS[quantity], quality)

    def _unknown_reading(self, port: PortState, sensor: SerialSensor, t: int, reason: str, message: str) -> Reading:
        self._note(port, reason, f"{sensor.id}: {message}")
        if sensor.quantity == "humidity":
            self._humidity.pop(sensor.id, None)
        return Reading(
            t,
            self.site,
            self.gateway,
            sensor.id,
            sensor.quantity,
            None,
            QUANTITY_UNITS[sensor.quantity],
            Quality.UNKNOWN,
        )

    def _fresh_humidity(self, sensor_id: str | None, now: float) -> float | None:
        entry = self._humidity.get(sensor_id) if sensor_id else None
        if entry is None or now - entry[0] > self.humidity_max_age_s:
            return None
        return entry[1]

    def _unknown(self, port: PortState, sensors: Iterable[SerialSensor]) -> list[Reading]:
        t = self._wall_ms()
        out = []
        for s in sensors:
            if s.quantity == "humidity":
                self._humidity.pop(s.id, None)
            port.counters["unknown_published"] += 1
            out.append(
                Reading(t, self.site, self.gateway, s.id, s.quantity, None, QUANTITY_UNITS[s.quantity], Quality.UNKNOWN)
            )
        return out

    def _note(self, port: PortState, reason: str, message: str) -> None:
        port.counters[reason] += 1
        if port.counters[reason] <= LOGGED_PER_REASON:
            log.warning("%s: %s", port.name, message)

    # ---- from a gateway config -----------------------------------------------------

    @classmethod
    def from_config_entries(cls, site: str, gateway: str, entries: Iterable[Mapping], **kwargs) -> SerialSource:
        """Build from the gateway config's serial sensor entries (``sds011``, ``pms5003``, ``line``) as plain
        mappings; entries on one port form one device."""
        return cls(site, gateway, devices_from_config_entries(entries), **kwargs)


__all__ = ["SerialDevice", "SerialSensor", "SerialSource", "open_serial"]
