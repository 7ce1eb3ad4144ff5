"""Poll Modbus RTU transmitters on one serial line and turn every poll into a Reading.

One ``ModbusSource`` per serial port (an RS-485 line carries several transmitters,
each with its own device id). Every ``poll_s`` seconds each sensor is read once;
a transmitter that does not answer within ``timeout_s``, answers with a Modbus
exception, or reports a non-finite value gives a reading of quality UNKNOWN with no
value: never the last good value as if it were fresh.

    source = ModbusSource("north", "gw-01", "/dev/serial/by-id/usb-FTDI...", [
        ModbusSensor("P-inlet", point_of_inlet),
        ModbusSensor("F-inlet", point_of_meter)], timeout_s=1.0, poll_s=10)
    for reading in source: ...
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from edge.contracts import QUANTITY_UNITS, Quality, Reading, check_id
from edge.drivers.base import SerialBus
from edge.drivers.modbus_rtu import BUS, FUNCTIONS, HOLDING, RegisterMapError, RegisterPoint
from edge.sources.batched import BatchedSource

log = logging.getLogger(__name__)

# Modbus exception codes a transmitter sends back, in words a technician can act on.
EXCEPTION_CODES = {
    1: "illegal function (the device does not support this function code: try function 3 or 4)",
    2: "illegal data address (no such register on this device: check address against the datasheet)",
    3: "illegal data value (wrong register count for this data_type?)",
    4: "device failure",
    6: "device busy",
    11: "gateway target did not respond",
}


class PollError(Exception):
    """One read failed; ``reason`` is a short counter name, the message says what to check."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ModbusSensor:
    """One configured sensor: its id and where its value is."""

    sensor: str
    point: RegisterPoint

    @property
    def quantity(self) -> str:
        return self.point.quantity


class ModbusLine:
    """One serial port driven by pymodbus' RTU client; ``read`` returns registers or raises PollError."""

    def __init__(self, port: str, bus: SerialBus = BUS, timeout_s: float = 1.0):
        from pymodbus import FramerType
        from pymodbus.client import ModbusSerialClient

        self.port = port
        self.bus = bus
        self.timeout_s = timeout_s
        # retries=0: one request per poll; the next poll is the retry, so a dead
        # transmitter costs one timeout per cycle, not four.
        self.client = ModbusSerialClient(
            port,
            framer=FramerType.RTU,
            baudrate=bus.baudrate,
            bytesize=bus.bytesize,
            parity=bus.parity,
            stopbits=int(bus.stopbits),
            timeout=timeout_s,
            retries=0,
        )

    def read(self, point: RegisterPoint) -> list[int]:
        from pymodbus.exceptions import ModbusException

        if not self.client.connected and not self.client.connect():
            raise PollError(
                "port_unavailable",
                f"cannot open serial port {self.port} ({self.bus.describe()}): "
                "is the USB-RS485 adapter plugged in and the path right?",
            )
        method = self.client.read_holding_registers if point.function == HOLDING else self.client.read_input_registers
        try:
            answer = method(point.address, count=point.count, device_id=point.device_id)
        except ModbusException as exc:
            raise PollError(
                "no_answer",
                f"no valid answer from {point.describe()} on {self.port} within {self.timeout_s:g} s ({exc})",
            ) from None
        except OSError as exc:
            self.client.close()  # reopened on the next poll (adapter unplugged and back)
            raise PollError("port_error", f"serial port {self.port} failed: {exc}") from None
        if answer.isError():
            code = getattr(answer, "exception_code", None)
            words = (
                EXCEPTION_CODES.get(code, f"exception code {code}")
                if isinstance(code, int)
                else f"exception code {code}"
            )
            raise PollError(f"modbus_exception_{code}", f"{point.describe()} answered: {words}")
        registers = list(getattr(answer, "registers", []))
        if len(registers) != point.count:
            raise PollError(
                "short_answer", f"{point.describe()} sent {len(registers)} registers, {point.count} were asked for"
            )
        return registers

    def close(self) -> None:
        self.client.close()


class ModbusSource(BatchedSource):
    """Readings from the transmitters on one serial line, one poll of every sensor per ``poll_s``.

    ``polls`` limits the number of cycles (None: until ``stop`` is set). Times are the
    gateway clock's (``clock`` returns seconds since 1970).
    """

    def __init__(
        self,
        site: str,
        gateway: str,
        port: str,
        sensors: Iterable[ModbusSensor],
        *,
        bus: SerialBus = BUS,
        timeout_s: float = 1.0,
        poll_s: float = 10.0,
        polls: int | None = None,
        stop: threading.Event | None = None,
        clock: Callable[[], float] = time.time,
        line: ModbusLine | None = None,
    ):
        self.site = check_id("site", site)
        self.gateway = check_id("gateway", gateway)
        self.port = port
        self.sensors = list(sensors)
        if not self.sensors:
            raise ValueError(f"no Modbus sensor on {port}")
        for s in self.sensors:
            check_id("sensor", s.sensor)
        if poll_s <= 0 or timeout_s <= 0:
            raise ValueError("poll_s and timeout_s must be positive")
        self.poll_s = poll_s
        self.polls = polls
        self.stop = stop or threading.Event()
        self.clock = clock
        self.line = line or ModbusLine(port, bus, timeout_s)
        self.counters: Counter[str] = Counter()
        self._failing: dict[str, str] = {}

    def poll_once(self) -> list[Reading]:
        """Read every sensor once; a failed read is an UNKNOWN reading, logged when the failure starts."""
        return [self._read(s) for s in self.sensors]

    def _read(self, sensor: ModbusSensor) -> Reading:
        unit = QUANTITY_UNITS[sensor.quantity]
        try:
            registers = self.line.read(sensor.point)
            value = sensor.point.value(registers)
            if not math.isfinite(value):
                raise PollError(
                    "device_fault",
                    f"{sensor.point.describe()} holds a non-finite value (the transmitter's own fault flag)",
                )
        except (PollError, RegisterMapError) as exc:
            reason = getattr(exc, "reason", "bad_register_map")
            self.counters[reason] += 1
            if self._failing.get(sensor.sensor) != reason:
                log.warning("sensor %s: %s; publishing 'unknown' until it answers", sensor.sensor, exc)
                self._failing[sensor.sensor] = reason
            return Reading(
                self._now_ms(), self.site, self.gateway, sensor.sensor, sensor.quantity, None, unit, Quality.UNKNOWN
            )
        self.counters["ok"] += 1
        if self._failing.pop(sensor.sensor, None) is not None:
            log.info("sensor %s answers again", sensor.sensor)
        return Reading(self._now_ms(), self.site, self.gateway, sensor.sensor, sensor.quantity, value, unit)

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def batches(self) -> Iterator[list[Reading]]:
        """One list per poll cycle."""
        cycle = 0
        next_at = time.monotonic()
        try:
            while not self.stop.is_set() and (self.polls is None or cycle < self.polls):
                yield self.poll_once()
                cycle += 1
                next_at += self.poll_s
                # A slow cycle (many timeouts) is not made up for with a burst of polls.
                next_at = max(next_at, time.monotonic())
                if self.polls is None or cycle < self.polls:
                    self.stop.wait(max(0.0, next_at - time.monotonic()))
        finally:
            self.line.close()


def point_of(sensor_config) -> RegisterPoint:
    """The register point of a ``modbus_rtu`` sensor config (any object with the config's attribute names)."""
    c = sensor_config
    return RegisterPoint(
        device_id=c.device_id,
        function=c.function,
        address=c.address,
        data_type=c.data_type,
        word_order=c.word_order,
        scale=c.scale,
        offset=c.offset,
        quantity=c.quantity,
        register_unit=c.register_unit or QUANTITY_UNITS[c.quantity],
    )


def sources_from_config(
    site: str, gateway: str, sensor_configs: Iterable, *, stop: threading.Event | None = None, polls: int | None = None
) -> list[ModbusSource]:
    """One source per serial port for the ``modbus_rtu`` sensors of a gateway config.

    Sensors on one port share its line settings and poll period: the first sensor's
    count (the config validator refuses sensors on one port that disagree).
    """
    by_port: dict[str, list] = {}
    for c in sensor_configs:
        if getattr(c, "driver", None) == "modbus_rtu":
            by_port.setdefault(str(c.port), []).append(c)
    sources = []
    for port, configs in by_port.items():
        first = configs[0]
        bus = SerialBus(first.baudrate, first.bytesize, first.parity, first.stopbits)
        sources.append(
            ModbusSource(
                site,
                gateway,
                port,
                [ModbusSensor(c.id, point_of(c)) for c in configs],
                bus=bus,
                timeout_s=first.timeout_s,
                poll_s=first.poll_s,
                polls=polls,
                stop=stop,
            )
        )
    return sources


__all__ = [
    "EXCEPTION_CODES",
    "FUNCTIONS",
    "ModbusLine",
    "ModbusSensor",
    "ModbusSource",
    "PollError",
    "point_of",
    "sources_from_config",
]
