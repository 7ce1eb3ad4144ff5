"""On-site checks of a gateway (or of a bundle before it goes on one): one result per check, a fix for each failure.

Each check returns ``Check(status, name, detail, fix)``; ``status`` is OK, FAIL or SKIP
(the check cannot run here, and the detail says why). The command prints one line
per check and exits non-zero if any failed.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from gateway.config import ConfigError, GatewayConfig, load_config
from gateway.tools import bundle as B

OK, FAIL, SKIP = "OK", "FAIL", "SKIP"
BY_ID = Path("/dev/serial/by-id")
EARLIEST_YEAR = 2025  # a clock before this was never set (no RTC on a Pi)


@dataclass(frozen=True)
class Check:
    """The result of one check: OK, FAIL or SKIP, what was found, and for a failure what to do."""

    status: str
    name: str
    detail: str
    fix: str | None = None

    def line(self) -> str:
        fix = f" -> fix: {self.fix}" if self.status == FAIL and self.fix else ""
        return f"{self.status:<4} {self.name:<20} {self.detail}{fix}"


# ---- config, bundle, models --------------------------------------------------------------


def check_config(path: Path) -> tuple[Check, GatewayConfig | None]:
    """Whether the config loads and validates; the config too when it does."""
    try:
        config = load_config(path)
    except ConfigError as exc:
        problems = "; ".join(str(p) for p in exc.problems)
        return Check(FAIL, "config", problems, f"correct the config, then `frugalsense config validate {path}`"), None
    models = f", {len(config.models)} model{'s' * (len(config.models) != 1)}"
    return Check(OK, "config", f"{path}: {len(config.sensors)} sensors{models}"), config


def check_bundle(root: Path) -> Check:
    """Whether every file of the bundle is there with the sha256 it was flashed with."""
    try:
        problems = B.verify_bundle(root)
        count = len(B.read_checksums(root))
    except B.BundleError as exc:
        return Check(FAIL, "bundle", str(exc), "flash the bundle again with `frugalsense flash CONFIG --to DIR`")
    if problems:
        return Check(
            FAIL,
            "bundle",
            "; ".join(str(p) for p in problems),
            "the card or the copy is damaged: flash the bundle again (and try another SD card if it recurs)",
        )
    return Check(OK, "bundle", f"{count} files match {B.CHECKSUMS_NAME}")


def model_dirs(config: GatewayConfig) -> list[Path]:
    """Model folders the config names, and those under ``models/`` next to it (a bundle's or /etc/frugalsense's)."""
    found: list[Path] = []
    for _key, written in B.config_paths(config):
        path = config.resolve_path(written)
        if path.is_dir() and (path / B.MANIFEST_FILE).is_file():
            found.append(path)
    if config.path is not None:
        shelf = config.path.parent / B.MODELS_DIR
        if shelf.is_dir():
            found += sorted(p for p in shelf.iterdir() if (p / B.MANIFEST_FILE).is_file())
    unique: list[Path] = []
    for path in found:
        if path.resolve() not in [u.resolve() for u in unique]:
            unique.append(path)
    return unique


def check_models(config: GatewayConfig) -> list[Check]:
    """One check per model directory the config names: manifest readable, files matching their sha256."""
    dirs = model_dirs(config)
    if not dirs:
        kinds = ", ".join(m.type for m in config.models) or "none"
        return [Check(OK, "models", f"no model files to verify (models: {kinds}; rule-based detectors have none)")]
    checks = []
    for directory in dirs:
        try:
            manifest = B.checked_model(directory)
        except B.BundleError as exc:
            checks.append(
                Check(
                    FAIL,
                    f"model {directory.name}",
                    str(exc),
                    f"copy {directory.name} again from the bundle, or flash the bundle again",
                )
            )
            continue
        checks.append(
            Check(
                OK,
                f"model {manifest.name}",
                f"version {manifest.version}: {len(manifest.files)} files match their sha256",
            )
        )
    return checks


# ---- serial ports and sensors ----------------------------------------------------------


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


# ---- broker, clock, disk ---------------------------------------------------------------


def check_broker(config: GatewayConfig, timeout_s: float = 5.0) -> Check:
    """Whether the MQTT broker accepts a connection with the config's host, port, TLS files and credentials."""
    from gateway.protocol.mqtt_client import make_client, settings_from_config

    tls = config.mqtt.tls
    for key in ("ca_file", "cert_file", "key_file"):
        path = getattr(tls, key, None) if tls else None
        if path is not None and not config.resolve_path(path).is_file():
            return Check(
                FAIL,
                "broker",
                f"mqtt.tls.{key} {config.resolve_path(path)} not found",
                f"copy the file there (see docs/operations.md, TLS) or fix mqtt.tls.{key}",
            )
    try:
        settings = settings_from_config(config)
    except (RuntimeError, OSError) as exc:
        return Check(FAIL, "broker", str(exc), "set the password as the config's mqtt section says")
    where = f"{settings.host}:{settings.port}{' (TLS)' if settings.ca_file else ''}"
    # Its own client id: the running service's connection must not be kicked off the broker.
    client = make_client(dataclasses.replace(settings, client_id=f"{settings.client_id}-doctor"))
    answered = threading.Event()
    result = {}

    def on_connect(_client, _userdata, _flags, reason_code, _properties):
        result["reason"] = reason_code
        answered.set()

    client.on_connect = on_connect
    client.connect_timeout = timeout_s
    try:
        client.connect(settings.host, settings.port, keepalive=30)
    except ssl.SSLError as exc:
        return Check(
            FAIL,
            "broker",
            f"TLS handshake with {where} failed: {exc}",
            "check mqtt.tls.ca_file is the CA that signed the broker's certificate and that mqtt.host "
            "matches the name in it",
        )
    except (OSError, ValueError) as exc:
        return Check(
            FAIL,
            "broker",
            f"cannot reach {where}: {exc}",
            "check the broker runs, mqtt.host and mqtt.port, and that the network lets the port through",
        )
    client.loop_start()
    try:
        if not answered.wait(timeout_s):
            return Check(
                FAIL,
                "broker",
                f"{where} accepted the connection but sent no CONNACK within {timeout_s:g} s",
                "check that the port is MQTT (1883 plain, 8883 TLS) and that TLS is set as the broker expects",
            )
        reason = result["reason"]
        if reason.is_failure:
            return Check(
                FAIL,
                "broker",
                f"{where} refused the connection: {reason}",
                "check mqtt.username and the password, and that the broker's ACL lists this gateway",
            )
    finally:
        client.disconnect()
        client.loop_stop()
    return Check(OK, "broker", f"{where} accepted {settings.username or 'an anonymous client'}")


def check_clock(now: float | None = None) -> Check:
    """Whether the gateway's clock has been set (readings carry its time)."""
    now = time.time() if now is None else now
    if time.gmtime(now).tm_year < EARLIEST_YEAR:
        return Check(
            FAIL,
            "clock",
            f"the clock says {time.strftime('%Y-%m-%d', time.gmtime(now))}: it was never set",
            "connect the gateway to a network with NTP (UDP 123) or fit an RTC; readings need the time",
        )
    tool = shutil.which("timedatectl")
    if tool is None:
        return Check(SKIP, "clock", "cannot tell if the clock is synchronised here (no timedatectl)")
    try:
        answer = subprocess.run(
            [tool, "show", "--property=NTPSynchronized", "--value"], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Check(SKIP, "clock", f"cannot tell if the clock is synchronised: timedatectl failed ({exc})")
    value = answer.stdout.strip()
    if answer.returncode != 0 or value not in ("yes", "no"):
        why = (answer.stderr.strip().splitlines() or ["no answer"])[0]
        return Check(SKIP, "clock", f"cannot tell if the clock is synchronised: timedatectl says {why!r}")
    if value == "no":
        return Check(
            FAIL,
            "clock",
            "not synchronised (timedatectl: NTPSynchronized=no)",
            "sudo timedatectl set-ntp true, and check the gateway reaches an NTP server (UDP 123)",
        )
    return Check(OK, "clock", "synchronised (timedatectl: NTPSynchronized=yes)")


def check_disk(config: GatewayConfig) -> Check:
    """Whether the data directory is writable and its disk has room for the outbox."""
    data_dir = config.resolve_path(config.storage.data_dir)
    existing = data_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    free_mb = shutil.disk_usage(existing).free / 1e6
    needed_mb = config.storage.outbox_max_mb
    if data_dir.exists() and not os.access(data_dir, os.W_OK):
        return Check(
            FAIL,
            "disk",
            f"{data_dir} is not writable by this user",
            f"sudo chown frugalsense {data_dir} (the service runs as user frugalsense)",
        )
    where = f"{data_dir}{'' if data_dir.exists() else f' (not created yet; on {existing})'}"
    if free_mb < needed_mb:
        return Check(
            FAIL,
            "disk",
            f"{free_mb:.0f} MB free for {where}, the outbox may take {needed_mb} MB",
            "free space on that file system or lower storage.outbox_max_mb",
        )
    return Check(OK, "disk", f"{free_mb:.0f} MB free for {where} (outbox up to {needed_mb} MB)")


# ---- all of it -------------------------------------------------------------------------


def _not_here(name: str) -> Check:
    return Check(SKIP, name, "checking a bundle: run `frugalsense doctor` on the gateway for this")


def run_checks(
    *,
    config_path: Path | None = None,
    bundle: Path | None = None,
    sensor_timeout_s: float | None = None,
    broker_timeout_s: float = 5.0,
) -> list[Check]:
    """Every check, in the order a technician fixes things: files, then the line, then the network."""
    checks: list[Check] = []
    if bundle is not None:
        checks.append(check_bundle(bundle))
        config_path = bundle / B.CONFIG_NAME
    config_check, config = check_config(config_path)
    checks.append(config_check)
    if config is None:
        return checks
    checks += check_models(config)
    if bundle is not None:
        return checks + [_not_here(n) for n in ("serial ports", "sensors", "broker", "clock", "disk")]
    checks += check_ports(config)
    checks += check_sensors(config, sensor_timeout_s)
    checks.append(check_broker(config, broker_timeout_s))
    checks.append(check_clock())
    checks.append(check_disk(config))
    return checks
