"""Serial air-sensor devices as a gateway configures them: sensors, devices, checks, the port and its run-time state.

A :class:`SerialDevice` is one sensor device on one port with one driver
(``edge/drivers``); its :class:`SerialSensor` entries say which decoded field becomes
which quantity. :func:`prepare` checks a device against its driver and gives the
:class:`PortState` the loop in ``edge.sources.serial_source`` runs it with.

>>> state = prepare(SerialDevice("/dev/ttyUSB0", "sds011", (SerialSensor("PM25-roof", "pm25"),)))
>>> state.name, state.repeat_s, state.handle is None
('sds011 at /dev/ttyUSB0', 10.0, True)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from edge.air.correction import DEFAULT_CORRECTION
from edge.contracts import QUANTITY_UNITS, check_id
from edge.drivers import DRIVERS
from edge.drivers.base import Driver, Parser, SerialBus
from edge.drivers.line_node import to_canonical
from edge.drivers.schedule import FOREVER, QuerySchedule, SilenceWatch

BACKOFF_S = (1.0, 60.0)  # a lost port is reopened after 1 s, doubling to 60 s


@dataclass(frozen=True, slots=True)
class SerialSensor:
    """One configured sensor of a device: which decoded field (or line key) becomes which quantity."""

    id: str
    quantity: str
    field: str | None = None  # driver field or line key; default: the quantity's name
    node_unit: str | None = None  # line nodes: the unit the node prints, if not the canonical one
    humidity_sensor: str | None = None  # pm25_corrected: the id of the humidity sensor to correct with
    correction: str = DEFAULT_CORRECTION

    @property
    def key(self) -> str:
        return self.field or self.quantity


@dataclass(frozen=True, slots=True)
class SerialDevice:
    """One sensor device on one serial port, read with one driver, on one schedule."""

    port: str  # a stable path: /dev/serial/by-id/...
    driver: str
    sensors: tuple[SerialSensor, ...]
    baudrate: int | None = None  # None: the driver's declared rate
    interval_s: float = 10.0
    work_s: float = 0.0
    sleep_s: float = 0.0  # 0: the fan never sleeps
    warmup_s: float | None = None  # None: the driver's declared warm-up

    def bus(self) -> SerialBus:
        bus = DRIVERS[self.driver].bus
        return bus if self.baudrate is None else SerialBus(self.baudrate, bus.bytesize, bus.parity, bus.stopbits)


class SerialHandle(Protocol):
    """What the loop uses of an open port: a pyserial ``Serial``, or a test's stand-in for one."""

    @property
    def in_waiting(self) -> int: ...

    def fileno(self) -> int: ...

    def read(self, size: int = 1) -> bytes: ...

    def write(self, data: bytes, /) -> int | None: ...

    def reset_input_buffer(self) -> None: ...

    def close(self) -> None: ...


def open_serial(port: str, bus: SerialBus) -> SerialHandle:
    """A pyserial port, non-blocking, locked so no other program reads the same sensor."""
    import serial  # only a gateway with serial sensors needs pyserial

    return serial.Serial(
        port,
        baudrate=bus.baudrate,
        bytesize=bus.bytesize,
        parity=bus.parity,
        stopbits=bus.stopbits,
        timeout=0,
        write_timeout=1.0,
        exclusive=True,
    )


@dataclass
class PortState:
    """Run-time state of one device: its line, its parser, and its schedule."""

    device: SerialDevice
    driver: Driver
    schedule: QuerySchedule | SilenceWatch
    handle: SerialHandle | None = None
    parser: Parser | None = None
    next_open: float = 0.0
    backoff: float = BACKOFF_S[0]
    next_unknown: float = FOREVER  # while the port is closed: when to say 'unknown' again
    counters: Counter = field(default_factory=Counter)

    @property
    def name(self) -> str:
        return f"{self.driver.name} at {self.device.port}"

    @property
    def repeat_s(self) -> float:
        return self.schedule.repeat_s if isinstance(self.schedule, QuerySchedule) else self.device.interval_s


def prepare(device: SerialDevice) -> PortState:
    """Check ``device`` against its driver (ValueError says what is wrong) and give its run-time state."""
    driver = DRIVERS.get(device.driver)
    if driver is None:
        raise ValueError(f"unknown serial driver {device.driver!r} (known: {', '.join(DRIVERS)})")
    if not device.sensors:
        raise ValueError(f"device at {device.port} has no sensors")
    if not device.interval_s > 0:
        raise ValueError(f"device at {device.port}: interval_s must be positive")
    schedule: QuerySchedule | SilenceWatch
    if driver.commands is not None:
        warmup = driver.warmup_s if device.warmup_s is None else device.warmup_s
        try:
            schedule = QuerySchedule(driver.commands, device.interval_s, device.work_s, device.sleep_s, warmup)
        except ValueError as exc:
            raise ValueError(f"device at {device.port}: {exc}") from None
    else:
        schedule = SilenceWatch([s.id for s in device.sensors], device.interval_s)
    for s in device.sensors:
        check_id("sensor", s.id)
        if s.quantity not in QUANTITY_UNITS:
            raise ValueError(f"sensor {s.id}: unknown quantity {s.quantity!r}")
        if driver.fields and s.quantity != "pm25_corrected" and s.key not in driver.fields:
            raise ValueError(
                f"sensor {s.id}: the {driver.name} gives no {s.key!r} (it gives {', '.join(driver.fields)})"
            )
        if s.quantity == "pm25_corrected" and driver.correction_input is None:
            raise ValueError(f"sensor {s.id}: pm25_corrected needs a PM sensor driver, not {driver.name}")
        if s.node_unit is not None:
            to_canonical(s.quantity, s.node_unit, 0.0)  # raises for an unknown conversion
    return PortState(device, driver, schedule)


def devices_from_config_entries(entries: Iterable[Mapping]) -> list[SerialDevice]:
    """Devices from the gateway config's serial sensor entries (``sds011``, ``pms5003``, ``line``) as plain
    mappings; entries on one port form one device."""
    devices: dict[str, list[Mapping]] = {}
    for entry in entries:
        devices.setdefault(entry["port"], []).append(entry)
    built = []
    for port, group in devices.items():
        first = group[0]
        sensors = tuple(
            SerialSensor(
                e["id"],
                e["quantity"],
                field=e.get("key"),
                node_unit=e.get("node_unit"),
                humidity_sensor=e.get("humidity_sensor"),
                correction=e.get("correction") or DEFAULT_CORRECTION,
            )
            for e in group
        )
        built.append(
            SerialDevice(
                port=port,
                driver=first["driver"],
                sensors=sensors,
                baudrate=first.get("baudrate"),
                interval_s=first.get("interval_s", 10.0),
                work_s=first.get("work_s", 0.0),
                sleep_s=first.get("sleep_s", 0.0),
                warmup_s=first.get("warmup_s"),
            )
        )
    return built
