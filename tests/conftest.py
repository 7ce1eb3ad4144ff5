"""Shared pytest fixtures: real local services (no mocks of broker or database)."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from gateway.local_services.services import LocalServices

# ---- the `services` marker: `pytest -m "not services"` is the fast part -------------------

# Session fixtures that run Mosquitto, InfluxDB or VictoriaMetrics; a test that uses one, directly or through
# another fixture (``item.fixturenames`` is the whole closure), is marked.
SERVICE_FIXTURES = frozenset({"services", "vm_services", "demo_influx"})
# What, in the source of a test or of any fixture it uses, starts services without those fixtures: its own
# LocalServices, the demo command (which starts a private set), the chaos suite, the quick benchmark run.
STARTS_SERVICES = ("LocalServices(", 'main(["demo"', "chaos.run_suite(", "scripts.bench")


def _starts_services(function) -> bool:
    try:
        source = inspect.getsource(function)
    except (OSError, TypeError):  # a builtin or generated function: no source to read
        return False
    return any(call in source for call in STARTS_SERVICES)


def pytest_collection_modifyitems(config, items):
    """Mark ``services`` every test that needs a real service (see ``SERVICE_FIXTURES`` and ``STARTS_SERVICES``)."""
    for item in items:
        function = getattr(item, "function", None)
        if function is None:  # doctests: none of them starts a service
            continue
        fixtures = [
            fixturedef.func
            for name in item.fixturenames
            # pytest has no public way to an item's fixture functions; pseudo-fixtures ('request') have none
            for fixturedef in item._fixtureinfo.name2fixturedefs.get(name, ())
        ]
        if SERVICE_FIXTURES & set(item.fixturenames) or any(map(_starts_services, [function, *fixtures])):
            item.add_marker(pytest.mark.services)


@pytest.fixture(scope="session")
def services(tmp_path_factory):
    """Mosquitto + InfluxDB on free loopback ports, shared by the whole session.

    Tests that stop or restart a service must start it again before they end.
    """
    with LocalServices(tmp_path_factory.mktemp("services")) as running:
        yield running


@pytest.fixture(scope="session")
def vm_services(tmp_path_factory):
    """VictoriaMetrics alone (tests that also need MQTT or InfluxDB take ``services`` too)."""
    with LocalServices(
        tmp_path_factory.mktemp("vm_services"), mosquitto=False, influxdb=False, victoriametrics=True
    ) as running:
        yield running


@pytest.fixture(scope="session")
def leak_run():
    """The demo's two simulated weeks of Net3 with the default leak (seed 7); simulated once per session."""
    from training.water.zone import simulate_zone

    return simulate_zone(seed=7, progress=False)


@pytest.fixture(scope="session")
def leak_free_run():
    """The same two weeks and demands without the leak."""
    from training.water.zone import simulate_zone

    return simulate_zone(seed=7, leak=None, progress=False)


# ---- serial lines: pty pairs stand in for the cable, real device software on the far end ----


class NullModem:
    """Two ptys whose master sides are cross-connected: a serial cable with two ends (``device``, ``gateway``).

    Linux ptys refuse even/odd parity (tcsetattr EINVAL), so devices on it are set to 8N1.
    """

    def __init__(self):
        import os
        import threading
        import tty

        self._fds = []
        ends = []
        for _ in range(2):
            master, slave = os.openpty()
            tty.setraw(slave)
            self._fds += [master, slave]  # the slave stays open: reads on the master never see EIO
            ends.append((master, os.ttyname(slave)))
        (self._a, self.device), (self._b, self.gateway) = ends
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._relay, name="null-modem", daemon=True)
        self._thread.start()

    def _relay(self) -> None:
        import os
        import select

        while not self._stop.is_set():
            ready, _, _ = select.select([self._a, self._b], [], [], 0.05)
            for fd in ready:
                try:
                    data = os.read(fd, 4096)
                    os.write(self._b if fd == self._a else self._a, data)
                except OSError:
                    continue

    def close(self) -> None:
        import os

        self._stop.set()
        self._thread.join(2)
        for fd in self._fds:
            os.close(fd)


class ModbusDevice:
    """pymodbus' own RTU server on one end of a line: ``registers`` maps device id -> (holding, input) blocks.

    A block is ``{first_address: [register, ...]}``. pymodbus answers ids not listed with exception 4
    (device failure), where a real bus stays silent: ``close()`` is the silent transmitter.
    """

    def __init__(
        self, port: str, registers: dict[int, tuple[dict[int, list[int]], dict[int, list[int]]]], baudrate: int = 9600
    ):
        import asyncio
        import threading

        from pymodbus import FramerType
        from pymodbus.server import ModbusSerialServer
        from pymodbus.simulator import DataType, SimData, SimDevice

        def blocks(spec):
            return [
                SimData(address, values=list(values), datatype=DataType.REGISTERS) for address, values in spec.items()
            ] or [SimData(60000, values=[0], datatype=DataType.REGISTERS)]

        bits = [SimData(0, values=[0], datatype=DataType.BITS)]
        devices = [
            SimDevice(id=i, simdata=(bits, bits, blocks(holding), blocks(inputs)))
            for i, (holding, inputs) in registers.items()
        ]
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve():
            asyncio.set_event_loop(self._loop)

            async def listen():  # pymodbus builds its transport on the running loop
                self._server = ModbusSerialServer(
                    devices,
                    framer=FramerType.RTU,
                    port=port,
                    baudrate=baudrate,
                    parity="N",
                    ignore_missing_devices=True,
                )
                await self._server.serve_forever(background=True)

            try:
                self._loop.run_until_complete(listen())
            except BaseException as exc:  # reported to the test below, not lost in the thread
                failure.append(exc)
                ready.set()
                return
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, name="modbus-device", daemon=True)
        self._thread.start()
        if not ready.wait(10) or failure:
            raise RuntimeError(f"pymodbus server did not start on {port}: {failure}")

    def close(self) -> None:
        import asyncio

        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self._server.shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@pytest.fixture
def null_modem():
    line = NullModem()
    yield line
    line.close()


@pytest.fixture
def modbus_device(null_modem):
    """Start pymodbus' RTU server on ``null_modem.device``: ``modbus_device(registers)``; the gateway uses
    ``null_modem.gateway``."""
    started = []

    def start(registers, baudrate: int = 9600) -> ModbusDevice:
        device = ModbusDevice(null_modem.device, registers, baudrate)
        started.append(device)
        return device

    yield start
    for device in started:
        device.close()


@pytest.fixture
def silent_port():
    """A pty nobody writes to: a sensor that is plugged in but says nothing (dead, wrong baud rate)."""
    import os
    import tty

    master, slave = os.openpty()
    tty.setraw(slave)
    yield os.ttyname(slave)
    os.close(slave)
    os.close(master)


# ---- an InfluxDB filled the way production fills it, for dashboards and reports ----------


@pytest.fixture(scope="session")
def demo_influx(services, leak_run, tmp_path_factory):
    """Database ``demo_ops``: the Net3 zone with its leak (runner -> MQTT -> bridge) and an air site (publisher ->
    MQTT -> bridge), one session-wide load shared by the dashboard and report tests."""
    import math
    from types import SimpleNamespace

    import numpy as np

    from edge.contracts import Alert, Detection, Quality, Reading
    from gateway.bridge.influx_writer import InfluxV1Writer
    from gateway.bridge.service import Bridge
    from gateway.config import load_config
    from gateway.device.publisher import GatewayPublisher
    from gateway.device.runner import GatewayRunner
    from gateway.protocol import topics as T
    from gateway.protocol.mqtt_client import MqttSettings

    root = tmp_path_factory.mktemp("demo_influx")
    database, prefix = "demo_ops", "demo-ops"
    config_text = (Path(__file__).resolve().parents[1] / "firmware_configs" / "net3-demo.yaml").read_text()
    config_text = (
        config_text.replace("../.run/demo/net3-leak.npz", str(leak_run.save(root / "zone.npz")))
        .replace("../.run/demo/gw-net3-01", str(root / "gw-net3"))
        .replace("../models/", f"{Path(__file__).resolve().parents[1]}/models/")
        .replace("topic_prefix: frugalsense", f"topic_prefix: {prefix}")
    )
    (root / "gateway.yaml").write_text(config_text)
    config = load_config(root / "gateway.yaml")

    writer = InfluxV1Writer(services.influx_url, database)
    bridge = Bridge(
        MqttSettings(services.mqtt_host, services.mqtt_port, client_id="demo-ops-bridge"), writer, prefix=prefix
    ).start()
    try:
        outputs: list = []  # the summary only counts: keep the objects the tests compare with
        summary = GatewayRunner.from_config(config, mqtt_host=services.mqtt_host, mqtt_port=services.mqtt_port).run(
            drain_timeout_s=60, on_output=outputs.append
        )
        assert summary.all_acknowledged and summary.alerts

        # An air-quality site over the same two weeks: hourly PM2.5, PM10 and NO2 with a pollution
        # episode (EAQI 'poor') on days 9-10 and one hour where the PM sensor link was down.
        air = GatewayPublisher(
            T.Topics(prefix, "city-centre", "gw-air-01"),
            MqttSettings(services.mqtt_host, services.mqtt_port, client_id="demo-ops-air"),
        )
        air.start()
        rng = np.random.default_rng(11)
        start = int(leak_run.time_ms[0])
        for hour in range(14 * 24):
            t = start + hour * 3_600_000
            day, hod = hour // 24, hour % 24
            pm25 = 8 + 4 * math.sin(hod / 24 * 2 * math.pi) + rng.normal(0, 1) + (50 if day in (9, 10) else 0)
            no2 = 25 + (40 if hod in (8, 9, 18, 19) else 0) + rng.normal(0, 3)
            if hour == 100:
                air.add_reading(
                    Reading(t, "city-centre", "gw-air-01", "PM-1-pm25", "pm25", None, "ug/m3", Quality.UNKNOWN)
                )
            else:
                air.add_reading(Reading(t, "city-centre", "gw-air-01", "PM-1-pm25", "pm25", round(pm25, 2), "ug/m3"))
            air.add_reading(Reading(t, "city-centre", "gw-air-01", "PM-1-pm10", "pm10", round(1.6 * pm25, 2), "ug/m3"))
            air.add_reading(Reading(t, "city-centre", "gw-air-01", "NO2-1", "no2", round(no2, 2), "ug/m3"))
        air.publish_status()
        assert air.close(30)
        assert bridge.wait_idle(quiet_s=1.0, timeout_s=60)
    finally:
        bridge.stop()
    return SimpleNamespace(
        url=services.influx_url,
        database=database,
        writer=writer,
        start_ms=int(leak_run.time_ms[0]),
        end_ms=int(leak_run.time_ms[-1]),
        water_site=config.site,
        water_gateway=config.gateway,
        air_site="city-centre",
        air_gateway="gw-air-01",
        alerts=[o for o in outputs if isinstance(o, Alert)],
        leak_start_ms=leak_run.meta["leak_start_ms"],
        detections=[o for o in outputs if isinstance(o, Detection) and o.kind == "leak"],
    )
