"""The serial source through a real pty pair: the test plays the sensor on the master side, pyserial opens the slave.

The slave is reached through a symlink, as a udev ``/dev/serial/by-id/...`` link is:
unplugging closes the master and removes the link, replugging makes a new pty and
points the link at it. Schedules run on a fake clock the test advances; bytes cross
a real pty, so the only waiting is for the kernel to pass them on (bounded, never
asserted).
"""

from __future__ import annotations

import os
import select
import threading
import time
from pathlib import Path

import pytest

from edge.air.correction import epa_piecewise
from edge.contracts import Quality
from edge.drivers import pms5003, sds011
from edge.drivers.schedule import RECOVER_AFTER_MISSED, REOPEN_AFTER_MISSED
from edge.sources.serial_source import SerialDevice, SerialSensor, SerialSource

BASE_MS = 1_772_409_600_000
WAIT_S = 5.0  # upper bound for bytes to cross the pty; a test fails rather than hangs


class FakeDevice:
    """The sensor's end of the line."""

    def __init__(self, link: Path):
        self.link = link
        self.master = self.slave = None
        self.plug()

    def plug(self) -> None:
        self.master, self.slave = os.openpty()
        if self.link.is_symlink():
            self.link.unlink()
        self.link.symlink_to(os.ttyname(self.slave))

    def unplug(self) -> None:
        os.close(self.master)
        os.close(self.slave)
        self.master = self.slave = None
        self.link.unlink()

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def receive(self, n: int) -> bytes:
        """Exactly ``n`` bytes the gateway wrote."""
        data, deadline = b"", time.monotonic() + WAIT_S
        while len(data) < n and time.monotonic() < deadline:
            ready, _, _ = select.select([self.master], [], [], 0.1)
            if ready:
                data += os.read(self.master, n - len(data))
        assert len(data) == n, f"expected {n} bytes from the gateway, got {data.hex(' ')}"
        return data

    def nothing_written(self) -> bool:
        return not select.select([self.master], [], [], 0.05)[0]

    def close(self) -> None:
        if self.master is not None:
            self.unplug()


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    def wall_ms(self) -> int:
        return BASE_MS + int(self.t * 1000)


@pytest.fixture
def by_id(tmp_path):
    path = tmp_path / "dev" / "serial" / "by-id"
    path.mkdir(parents=True)
    return path


@pytest.fixture
def devices(by_id):
    made = []

    def make(name: str) -> FakeDevice:
        made.append(FakeDevice(by_id / name))
        return made[-1]

    yield make
    for device in made:
        device.close()


def make_source(clock: FakeClock, *devices: SerialDevice) -> SerialSource:
    return SerialSource("city-centre", "gw-air-01", list(devices), clock=clock, wall_ms=clock.wall_ms)


def poll_until(source: SerialSource, want, polls: int = 50) -> list:
    out = []
    for _ in range(polls):
        out += source.poll(timeout_s=0.1)
        if want(out):
            return out
    raise AssertionError(f"condition not met; got {out}")


def values(readings) -> dict:
    return {r.sensor: (r.value, r.quality) for r in readings}


SDS_SENSORS = (SerialSensor("PM25-roof", "pm25"), SerialSensor("PM10-roof", "pm10"))


def sds_device(link: Path, **kw) -> SerialDevice:
    return SerialDevice(port=str(link), driver="sds011", sensors=SDS_SENSORS, interval_s=10, **kw)


# ---- SDS011 -------------------------------------------------------------------------


def test_sds011_query_mode_readings_garbage_bad_checksum_and_fan_failure(devices):
    sensor, clock = devices("usb-1a86_USB2.0-Serial-if00-port0"), FakeClock()
    source = make_source(clock, sds_device(sensor.link))
    assert source.poll() == []
    assert sensor.receive(38) == sds011.WAKE + sds011.PASSIVE_MODE
    sensor.send(sds011.reply_frame(sds011.CMD_SLEEP_WORK, b"\x01\x01") + sds011.measurement_frame(99.0, 99.0))
    poll_until(source, lambda out: source.counters[str(sensor.link)].get("warmup_frames") == 1)
    assert source.counters[str(sensor.link)]["replies"] == 1

    clock.t = 30.0  # warm-up over: the first query
    assert source.poll() == []
    assert sensor.receive(19) == sds011.QUERY
    frame = sds011.measurement_frame(12.3, 20.1)
    sensor.send(b"\x00\xaa\x17" + frame[:4])  # garbage, then half a frame...
    assert source.poll(timeout_s=0.2) == []
    sensor.send(frame[4:])  # ...and the rest
    out = poll_until(source, lambda out: len(out) == 2)
    assert values(out) == {"PM25-roof": (12.3, Quality.OK), "PM10-roof": (20.1, Quality.OK)}
    assert {r.time_ms for r in out} == {BASE_MS + 30_000}

    clock.t = 40.0  # the answer to this query is corrupt: nothing now, 'unknown' when the next is due
    source.poll()
    sensor.receive(19)
    spoiled = bytearray(sds011.measurement_frame(15.0, 22.0))
    spoiled[2] ^= 0x01
    sensor.send(bytes(spoiled))
    poll_until(source, lambda out: source.counters[str(sensor.link)].get("bad_checksum") == 1)
    clock.t = 50.0
    out = source.poll()
    assert values(out) == {"PM25-roof": (None, Quality.UNKNOWN), "PM10-roof": (None, Quality.UNKNOWN)}
    assert source.counters[str(sensor.link)]["missed_samples"] == 1

    sensor.receive(19)  # the query sent at 50 s is answered by a stopped fan
    sensor.send(sds011.measurement_frame(999.9, 1999.9))
    out = poll_until(source, lambda out: len(out) == 2)
    assert values(out) == {"PM25-roof": (999.9, Quality.BAD), "PM10-roof": (1999.9, Quality.BAD)}
    assert source.counters[str(sensor.link)]["fan_failure"] == 1
    source.close()


def test_sds011_duty_cycle_sends_sleep_and_wake_on_schedule(devices):
    sensor, clock = devices("usb-Nova_SDS011-if00-port0"), FakeClock()
    source = make_source(clock, sds_device(sensor.link, work_s=50, sleep_s=250))
    source.poll()
    assert sensor.receive(38) == sds011.WAKE + sds011.PASSIVE_MODE
    readings = []
    for t in (30.0, 40.0):  # two samples in the 20 s after warm-up
        clock.t = t
        source.poll()
        assert sensor.receive(19) == sds011.QUERY
        sensor.send(sds011.measurement_frame(8.0 + t / 10, 11.0))
        readings += poll_until(source, lambda out: len(out) == 2)
    assert [r.value for r in readings if r.sensor == "PM25-roof"] == [11.0, 12.0]
    clock.t = 50.0
    assert source.poll() == []
    assert sensor.receive(19) == sds011.SLEEP
    clock.t = 200.0
    assert source.poll() == [] and sensor.nothing_written()  # asleep: no query, no 'unknown'
    clock.t = 300.0
    source.poll()
    assert sensor.receive(38) == sds011.WAKE + sds011.PASSIVE_MODE
    clock.t = 330.0
    source.poll()
    assert sensor.receive(19) == sds011.QUERY
    source.close()


def test_unplugged_sensor_gives_unknown_then_reopens_with_backoff(devices):
    sensor, clock = devices("usb-1a86_USB2.0-Serial-if00-port0"), FakeClock()
    source = make_source(clock, sds_device(sensor.link, warmup_s=0))
    source.poll()
    sensor.receive(38)
    clock.t = 1.0
    source.poll()
    sensor.receive(19)
    sensor.send(sds011.measurement_frame(5.0, 9.0))
    assert values(poll_until(source, lambda out: len(out) == 2))["PM25-roof"] == (5.0, Quality.OK)

    sensor.unplug()
    clock.t = 2.0
    out = poll_until(source, lambda out: len(out) >= 2)
    assert values(out) == {"PM25-roof": (None, Quality.UNKNOWN), "PM10-roof": (None, Quality.UNKNOWN)}
    counters = source.counters[str(sensor.link)]
    assert counters["port_lost"] == 1
    for t in (3.0, 5.0):  # backoff 1 s then 2 s: each attempt finds no device
        clock.t = t
        source.poll()
    assert source.counters[str(sensor.link)]["open_failures"] == 2
    clock.t = 12.0  # one interval after the loss: still unknown, never the old 5.0; the attempt fails again
    assert values(source.poll()) == {"PM25-roof": (None, Quality.UNKNOWN), "PM10-roof": (None, Quality.UNKNOWN)}
    assert source.counters[str(sensor.link)]["open_failures"] == 3

    sensor.plug()
    clock.t = 20.0  # the next attempt, 8 s later, opens the new device
    poll_until(source, lambda out: source.counters[str(sensor.link)]["opens"] == 2)
    assert sensor.receive(38) == sds011.WAKE + sds011.PASSIVE_MODE
    clock.t = 21.0
    source.poll()
    assert sensor.receive(19) == sds011.QUERY
    sensor.send(sds011.measurement_frame(6.0, 9.5))
    assert values(poll_until(source, lambda out: len(out) == 2))["PM25-roof"] == (6.0, Quality.OK)
    source.close()


def test_silent_sensor_gives_unknown_every_interval_then_recovery_and_reopen(devices):
    sensor, clock = devices("usb-silent-if00-port0"), FakeClock()
    source = make_source(clock, sds_device(sensor.link, warmup_s=0))
    source.poll()
    sensor.receive(38)
    unknown = 0
    for step in range(1, REOPEN_AFTER_MISSED + 2):
        clock.t = 10.0 * step
        out = source.poll()
        unknown += sum(r.quality is Quality.UNKNOWN and r.value is None for r in out)
        assert all(r.quality is Quality.UNKNOWN for r in out)
    counters = source.counters[str(sensor.link)]
    assert unknown == 2 * REOPEN_AFTER_MISSED
    assert counters["missed_samples"] == REOPEN_AFTER_MISSED
    assert counters["recoveries"] == REOPEN_AFTER_MISSED - RECOVER_AFTER_MISSED
    assert counters["port_lost"] == 1 and counters["opens"] == 1
    clock.t += 1.0  # after the backoff the port is reopened and the sensor woken again
    source.poll()
    assert source.counters[str(sensor.link)]["opens"] == 2
    source.close()


# ---- PMS5003 and a line node together --------------------------------------------------


def test_pms5003_raw_and_humidity_corrected_pm25_with_rh_from_a_line_node(devices):
    pms, node, clock = devices("usb-Plantower_PMS5003-if00-port0"), devices("usb-Arduino_Nano-if00"), FakeClock()
    source = make_source(
        clock,
        SerialDevice(
            port=str(pms.link),
            driver="pms5003",
            interval_s=10,
            warmup_s=0,
            sensors=(
                SerialSensor("PM25-pms", "pm25"),
                SerialSensor("PM25c-pms", "pm25_corrected", humidity_sensor="RH-node"),
            ),
        ),
        SerialDevice(
            port=str(node.link),
            driver="line",
            interval_s=60,
            sensors=(SerialSensor("RH-node", "humidity", field="rh"), SerialSensor("NO2-node", "no2", node_unit="ppb")),
        ),
    )
    source.poll()
    assert pms.receive(14) == pms5003.WAKE + pms5003.PASSIVE_MODE
    pms.send(pms5003.reply_frame(pms5003.CMD_MODE, 0))

    clock.t = 1.0  # no humidity yet: the corrected value is unknown, the raw one is not
    source.poll()
    assert pms.receive(7) == pms5003.QUERY
    pms.send(pms5003.measurement_frame(pm25_cf1=40, pm25_atm=31))
    out = poll_until(source, lambda out: len(out) == 2)
    assert values(out) == {"PM25-pms": (31.0, Quality.OK), "PM25c-pms": (None, Quality.UNKNOWN)}

    node.send(b"# node v1.2 booting\r\nno2=20 rh=64.5\r\n")
    out = poll_until(source, lambda out: len(out) == 2)
    assert values(out) == {"RH-node": (64.5, Quality.OK), "NO2-node": (pytest.approx(38.25, abs=0.01), Quality.OK)}

    clock.t = 11.0
    source.poll()
    pms.receive(7)
    pms.send(pms5003.measurement_frame(pm25_cf1=40, pm25_atm=31))
    out = values(poll_until(source, lambda out: len(out) == 2))
    assert out["PM25c-pms"] == (pytest.approx(epa_piecewise(40.0, 64.5)), Quality.OK)
    assert out["PM25c-pms"][0] < 31.0  # humid air: the optical sensor read high
    c = source.counters[str(pms.link)]
    assert c["no_humidity"] == 1 and c["replies"] == 1
    source.close()


def test_line_node_impossible_values_bad_lines_and_silence(devices):
    node, clock = devices("usb-Espressif_ESP32-if00"), FakeClock()
    source = make_source(
        clock,
        SerialDevice(
            port=str(node.link),
            driver="line",
            interval_s=60,
            sensors=(SerialSensor("RH-node", "humidity", field="rh"), SerialSensor("PM25-node", "pm25")),
        ),
    )
    source.poll()
    node.send(b"rh=101.5 pm25=-2\nrh=55 pm25=abc\nrh=55 pm25=7.5\n")
    out = poll_until(source, lambda out: len(out) == 4)
    assert [(r.sensor, r.value, r.quality) for r in out] == [
        ("RH-node", None, Quality.UNKNOWN),
        ("PM25-node", None, Quality.UNKNOWN),
        ("RH-node", 55.0, Quality.OK),
        ("PM25-node", 7.5, Quality.OK),
    ]
    c = source.counters[str(node.link)]
    assert c["impossible_values"] == 2 and c["bad_line"] == 1 and c["lines_ok"] == 3

    clock.t = 149.0  # under 2.5 intervals: still fine
    assert source.poll() == []
    clock.t = 150.0
    assert values(source.poll()) == {"RH-node": (None, Quality.UNKNOWN), "PM25-node": (None, Quality.UNKNOWN)}
    clock.t = 180.0  # unknown again only after another interval
    assert source.poll() == []
    clock.t = 210.0
    assert len(source.poll()) == 2
    source.close()


def test_iterating_the_source_in_real_time_until_stopped(devices):
    node = devices("usb-Arduino_Uno-if00")
    stop = threading.Event()
    source = SerialSource(
        "city-centre",
        "gw-air-01",
        [SerialDevice(port=str(node.link), driver="line", interval_s=60, sensors=(SerialSensor("NO2-node", "no2"),))],
        stop=stop,
    )

    def node_prints():
        for value in (21.0, 22.5, 24.0):
            node.send(b"no2=%.1f\n" % value)
            time.sleep(0.05)

    readings = []

    def node_prints_once_open():
        while source.counters[str(node.link)].get("opens", 0) == 0 and not stop.is_set():
            time.sleep(0.01)
        node_prints()

    writer = threading.Thread(target=node_prints_once_open)
    watchdog = threading.Timer(WAIT_S * 2, stop.set)  # a broken source fails the test instead of hanging it
    writer.start()
    watchdog.start()
    for reading in source:
        readings.append(reading.validate())
        if len(readings) == 3:
            stop.set()
    watchdog.cancel()
    writer.join()
    assert [r.value for r in readings] == [21.0, 22.5, 24.0]
    assert source.counters[str(node.link)]["opens"] == 1
