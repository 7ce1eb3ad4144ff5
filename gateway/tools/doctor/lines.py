"""Doctor checks of the sensor lines: the serial ports the config names, and one valid answer from each sensor."""

from __future__ import annotations

import os
import time
from pathlib import Path

from gateway.config import GatewayConfig
from gateway.tools.doctor.check import FAIL, OK, SKIP, Check

BY_ID = Path("/dev/serial/by-id")


def _ports(config: GatewayConfig) -> dict[str, list]:
    ports: dict[str, list] = {}
    for sensor in config.sensors:
        port = getattr(sensor, "port", None)
        if port is not None:
            ports.setdefault(str(port), []).append(sensor)
    return ports


def check_ports(config: GatewayConfig) -> list[Check]:
    """One check per serial port the config's sensors use: present, and a stable /dev/serial/by-id path."""
    ports = _ports(config)
    if not ports:
        return [Check(SKIP, "serial ports", "no sensor on a serial port in this config")]
    checks = []
    for port, sensors in ports.items():
        ids = ", ".join(s.id for s in sensors)
        if os.path.exists(port):
            stable = "" if port.startswith(str(BY_ID)) else " (not a /dev/serial/by-id path: it may change at reboot)"
            checks.append(Check(OK, "serial port", f"{port} present for {ids}{stable}"))
        else:
            present = sorted(p.name for p in BY_ID.iterdir()) if BY_ID.is_dir() else []
            seen = f"; present now: {', '.join(present)}" if present else "; no adapter is plugged in at all"
            checks.append(
                Check(
                    FAIL,
                    "serial port",
                    f"{port} not found (used by {ids}){seen}",
                    f"plug in the USB adapter, run `ls -l {BY_ID}/` and put that path in the sensors' port",
                )
            )
    return checks


def check_sensors(config: GatewayConfig, timeout_s: float | None = None) -> list[Check]:
    """One check per sensor on a line: does it answer (Modbus) or send frames (serial stream) in time."""
    checks = []
    for sensor in config.sensors:
        port = getattr(sensor, "port", None)
        if port is None:
            checks.append(Check(SKIP, f"sensor {sensor.id}", f"driver {sensor.driver} has no line to test"))
        elif not os.path.exists(str(port)):
            checks.append(
                Check(
                    FAIL,
                    f"sensor {sensor.id}",
                    f"its port {port} is missing",
                    "fix the serial port first (see the serial port line)",
                )
            )
        elif sensor.driver == "modbus_rtu":
            checks.append(_check_modbus(sensor, timeout_s))
        else:
            checks.append(_check_stream_sensor(sensor, timeout_s))
    return checks


_MODBUS_FIXES = {
    "no_answer": "check the transmitter's power, the RS-485 A/B wires (swap them if unsure), that its address is "
    "device_id {device_id} and its line settings are {bus}",
    "modbus_exception_1": "the transmitter does not support function {function}: try function 3 or 4",
    "modbus_exception_2": "no register {address} on this transmitter: check address on its datasheet "
    "(register 40001 or 30001 is address 0)",
    "modbus_exception_3": "check data_type against the datasheet (float32 and 32-bit integers use two registers)",
    "port_unavailable": "check the adapter is plugged in and that the gateway user is in the dialout group",
    "port_error": "unplug and replug the USB adapter; check `dmesg | tail` for USB errors",
    "device_fault": "the transmitter reports its own fault: check its display or its sensing element",
}


def _check_modbus(sensor, timeout_s: float | None) -> Check:
    from edge.drivers.base import SerialBus
    from edge.sources.modbus_source import ModbusLine, PollError, point_of

    bus = SerialBus(sensor.baudrate, sensor.bytesize, sensor.parity, sensor.stopbits)
    point = point_of(sensor)
    line = ModbusLine(str(sensor.port), bus, timeout_s or sensor.timeout_s)
    try:
        value = point.value(line.read(point))
        if value != value:  # NaN: the device's fault flag
            raise PollError("device_fault", f"{point.describe()} holds a non-finite value")
    except PollError as exc:
        fix = _MODBUS_FIXES.get(exc.reason, "check the register map against the datasheet")
        return Check(
            FAIL,
            f"sensor {sensor.id}",
            str(exc),
            fix.format(
                device_id=sensor.device_id, bus=bus.describe(), function=sensor.function, address=sensor.address
            ),
        )
    finally:
        line.close()
    return Check(OK, f"sensor {sensor.id}", f"{point.describe()} on {sensor.port}: {value:.3g} {sensor.unit}")


def _check_stream_sensor(sensor, timeout_s: float | None) -> Check:
    """A sensor that sends frames on its own (or when queried): read until one valid frame or the timeout."""
    from edge.drivers import DRIVERS

    driver = DRIVERS.get(sensor.driver)
    if driver is None:
        return Check(SKIP, f"sensor {sensor.id}", f"doctor has no frame check for driver {sensor.driver}")
    baudrate = getattr(sensor, "baudrate", None) or driver.bus.baudrate
    return check_frame_stream(
        str(sensor.port),
        driver,
        sensor_id=sensor.id,
        baudrate=baudrate,
        timeout_s=timeout_s or max(5.0, getattr(sensor, "timeout_s", 0) or 0),
    )


def check_frame_stream(
    port: str, driver, *, sensor_id: str, baudrate: int | None = None, timeout_s: float = 5.0
) -> Check:
    """Open ``port`` with the driver's line settings, ask for a measurement if the driver can, and wait for a
    frame that passes the driver's frame check and decodes."""
    import serial

    from edge.drivers.base import DecodeError, Reply
    from edge.drivers.framing import Frame

    bus = driver.bus
    baudrate = baudrate or bus.baudrate
    name = f"sensor {sensor_id}"
    try:
        line = serial.Serial(
            port, baudrate=baudrate, bytesize=bus.bytesize, parity=bus.parity, stopbits=bus.stopbits, timeout=0.2
        )
    except (serial.SerialException, OSError) as exc:
        return Check(
            FAIL,
            name,
            f"cannot open {port}: {exc}",
            "check the adapter is plugged in and that the gateway user is in the dialout group",
        )
    parser = driver.new_parser()
    received = 0
    try:
        if driver.commands is not None:  # a sensor left in query mode says nothing until asked
            line.write(driver.commands.wake + driver.commands.query)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            data = line.read(256)
            received += len(data)
            for item in parser.feed(data):
                if not isinstance(item, Frame):
                    continue
                try:
                    sample = driver.decode(item.data)
                except DecodeError:
                    continue
                if isinstance(sample, Reply):
                    continue
                values = ", ".join(f"{k}={v:g}" for k, v in sample.values.items())
                fault = f" (fault: {sample.fault})" if sample.fault else ""
                return Check(
                    FAIL if sample.fault else OK,
                    name,
                    f"{driver.name} frame on {port}: {values}{fault}",
                    "the sensor reports a fault: check its fan and inlet" if sample.fault else None,
                )
    finally:
        line.close()
    settings = f"{baudrate} {bus.bytesize}{bus.parity}{int(bus.stopbits)}"
    if received == 0:
        return Check(
            FAIL,
            name,
            f"no bytes from {port} within {timeout_s:g} s",
            "the sensor sends nothing: check its power (5 V), that its TX goes to the adapter's RX, "
            "and that this port is the sensor's",
        )
    rejected = {k: v for k, v in parser.counters.items() if k not in ("bytes_in", "frames_ok", "resync_bytes")}
    return Check(
        FAIL,
        name,
        f"{received} bytes from {port} within {timeout_s:g} s but no valid {driver.name} frame "
        f"(rejected: {rejected or 'none'})",
        f"check the line settings ({settings}) and that the sensor is a {driver.name}",
    )
