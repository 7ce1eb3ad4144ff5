"""A source that raises is restarted with backoff, and every source's counters reach the status message and doctor.

The replay cases use a replay that really raises part-way (an OSError from inside its
loop, as a failing SD card gives); the counter cases use real drivers on real ptys
(a line node, pymodbus' RTU server behind a null modem) and the real broker.
"""

from __future__ import annotations

import json
import os
import threading
import time
import tty
from pathlib import Path

import numpy as np
import pytest

from edge.datasets import ZoneDataset
from edge.sources.replay import ReplaySource
from gateway.config import load_config
from gateway.device.runner import GatewayRunner
from gateway.device.source_supervisor import Backoff, SupervisedSource
from gateway.device.status_file import read_status
from gateway.tools.doctor import FAIL, OK, check_last_status
from tests.mqtt_clients import Collector

T0 = 1_772_409_600_000
SENSORS = [("F-in", "10", "flow"), ("P-1", "11", "pressure")]


def zone(steps: int = 200) -> ZoneDataset:
    t = T0 + np.arange(steps, dtype=np.int64) * 900_000
    values = np.stack([40 + np.arange(steps) % 7, 52 - np.arange(steps) % 3], axis=1).astype(float)
    return ZoneDataset(t, values, ["10", "11"], ["flow", "pressure"], ["L/s", "m"], np.zeros(steps))


class FailingReplay(ReplaySource):
    """A replay whose loop raises at step ``at`` of its first ``times`` runs (a read error, then it works)."""

    def __init__(self, *args, at: int, times: int = 1, **kwargs):
        super().__init__(*args, **kwargs)
        self.at, self.times, self.starts = at, times, []

    def batches(self, after=None):
        self.starts.append(after)
        failing = len(self.starts) <= self.times
        for step, batch in enumerate(super().batches(after)):
            if failing and step == self.at:
                raise OSError(5, "Input/output error", "/media/sd/zone.npz")
            yield batch


def test_a_replay_that_fails_resumes_just_after_its_last_delivered_reading():
    expected = list(ReplaySource(zone(), "net3", "gw-01", SENSORS))
    source = FailingReplay(zone(), "net3", "gw-01", SENSORS, at=37, times=2)
    waits: list[float] = []
    supervised = SupervisedSource(source, backoff=Backoff(first_s=0.5, max_s=4), sleep=waits.append)
    got = list(supervised)
    assert got == expected  # nothing twice, nothing skipped
    assert source.starts == [None, (int(T0 + 36 * 900_000), 2), (int(T0 + 73 * 900_000), 2)]
    assert waits == [0.5, 0.5]  # it delivered between the two failures: the wait starts over
    assert supervised.counters() == {"replay": {"readings": 400, "failures": 2, "restarts": 2, "gave_up": 0}}


def test_waits_double_up_to_the_cap_and_a_source_that_never_delivers_is_given_up(caplog):
    def broken():
        raise FileNotFoundError(2, "No such file or directory", "/var/lib/cells/today.csv")
        yield  # a generator

    class Broken:
        def __iter__(self):
            return broken()

    waits: list[float] = []
    supervised = SupervisedSource(Broken(), "cells", Backoff(first_s=1, max_s=8, give_up_after=6), sleep=waits.append)
    assert list(supervised) == []
    assert waits == [1, 2, 4, 8, 8, 8]
    assert supervised.counters()["cells"] == {"readings": 0, "failures": 7, "restarts": 6, "gave_up": 1}
    assert "source cells failed 7 times in a row without a reading" in caplog.text
    assert "today.csv" in caplog.text


def test_seeded_jitter_gives_the_same_waits_every_time():
    def waits() -> list[float]:
        backoff, out = Backoff(first_s=2, max_s=30, jitter=0.5, seed=11, give_up_after=4), []

        class Broken:
            def __iter__(self):
                raise OSError("gone")

        list(SupervisedSource(Broken(), "x", backoff, sleep=out.append))
        return out

    first = waits()
    assert first == waits() and len(first) == 4
    assert all(w * 2 >= cap >= w for w, cap in zip(first, [2, 4, 8, 16], strict=True))
    assert first != [2, 4, 8, 16]  # jittered


GATEWAY = """
site: net3
gateway: gw-src
sensors:
  - {{id: F-in, quantity: flow, driver: replay, column: "10"}}
  - {{id: P-1, quantity: pressure, driver: replay, column: "11"}}
sources:
  replay: {{file: zone.npz}}
models:
  - {{name: mnf, type: mnf, zone_inflow: [{{sensor: F-in}}], history_days: 2}}
mqtt: {{host: 127.0.0.1, port: {port}, topic_prefix: src1, readings_batch: 20}}
storage: {{data_dir: gw}}
"""


def test_the_runner_restarts_a_failed_replay_publishes_every_reading_once_and_says_so_in_status(services, tmp_path):
    zone().save(tmp_path / "zone.npz")
    (tmp_path / "gw.yaml").write_text(GATEWAY.format(port=services.mqtt_port))
    config = load_config(tmp_path / "gw.yaml")
    runner = GatewayRunner.from_config(config)
    runner.source_backoff = Backoff(first_s=0.05)
    runner.sources = [FailingReplay(zone(), "net3", "gw-src", SENSORS, at=120)]
    with Collector(services.mqtt_port, "src1/#", client_id="src1-spy") as spy:
        summary = runner.run(drain_timeout_s=20)
        assert summary.all_acknowledged and summary.readings == 400
        assert spy.wait_for(lambda ms: any(m.topic.endswith("/status") and b"sources" in m.payload for m in ms))
    per_sensor: dict[str, list[int]] = {}
    for m in spy.messages:
        if "/readings/" in m.topic:
            per_sensor.setdefault(m.topic.rsplit("/", 1)[1], []).extend(
                row[0] for row in json.loads(m.payload)["readings"]
            )
    assert per_sensor == {s: [int(t) for t in zone().time_ms] for s in ("F-in", "P-1")}
    assert summary.source_failures == {"replay": 1}
    status = next(json.loads(m.payload) for m in reversed(spy.messages) if b'"sources"' in m.payload)
    assert status["sources"]["replay"] == {"readings": 400, "failures": 1, "restarts": 1, "gave_up": 0}
    stored = read_status(tmp_path / "gw")  # what doctor reads
    assert stored["sources"] == status["sources"] and stored["counters"]["readings_published"] == 400
    (replay,) = [c for c in check_last_status(config) if c.name == "source replay"]
    assert replay.status == OK and "readings 400, failures 1, restarts 1" in replay.detail


@pytest.fixture
def node_line():
    """A pty: the test writes as the node on the master side, the gateway opens the slave."""
    master, slave = os.openpty()
    tty.setraw(slave)
    yield master, os.ttyname(slave)
    os.close(slave)
    os.close(master)


def test_a_line_node_s_parser_counters_reach_the_status_message_and_doctor(node_line, services, tmp_path):
    master, port = node_line
    (tmp_path / "gw.yaml").write_text(f"""\
site: city-centre
gateway: gw-node
sensors:
  - {{id: NO2-node, quantity: no2, driver: line, port: {port}, key: no2, node_unit: ppb, interval_s: 60}}
mqtt: {{host: {services.mqtt_host}, port: {services.mqtt_port}, topic_prefix: src2}}
storage: {{data_dir: {tmp_path / "gw"}}}
""")
    config = load_config(tmp_path / "gw.yaml")
    stop, seen = threading.Event(), []

    def count(reading):
        seen.append(reading)
        if len(seen) == 1:  # the port is open and read: now the garbage, then two good lines
            os.write(master, b"\x00\x17\xff\xfe\x01\r\nno2=abc\r\n" + b"x" * 300 + b"\r\nno2=21\r\nno2=22\r\n")
        if len(seen) == 3:
            stop.set()

    def node():
        while not seen and not stop.is_set():
            os.write(master, b"no2=20\r\n")
            time.sleep(0.2)

    threading.Thread(target=node, daemon=True).start()
    with Collector(services.mqtt_port, "src2/city-centre/gw-node/status", client_id="src2-spy") as spy:
        runner = GatewayRunner.from_config(config)
        summary = runner.run(stop=stop, on_reading=count, drain_timeout_s=10)
        assert summary.all_acknowledged
        assert spy.wait_for(lambda ms: any(b'"sources"' in m.payload for m in ms))
    status = next(json.loads(m.payload) for m in reversed(spy.messages) if b'"sources"' in m.payload)
    line = status["sources"][f"serial {port}"]
    assert line["lines_ok"] >= 3 and line["not_text"] == 1 and line["bad_line"] == 1 and line["too_long"] == 1
    assert status["sources"]["serial"]["failures"] == 0
    checks = {c.name: c for c in check_last_status(config)}
    port_check = checks[f"source serial {port}"]
    assert port_check.status == OK and "bad_line 1" in port_check.detail and "not_text 1" in port_check.detail
    assert checks["outbox"].status == OK


def test_modbus_counters_reach_the_status_message(null_modem, modbus_device, services, tmp_path):
    from tests.test_modbus_pty import CONFIG, encode_value, load_config_text

    modbus_device({1: ({0: encode_value(4.0, "float32", "little")}, {})})  # transmitter 2 is silent
    text = CONFIG.format(port=null_modem.gateway).replace(
        "{host: 127.0.0.1}", f"{{host: {services.mqtt_host}, port: {services.mqtt_port}, topic_prefix: src3}}"
    )
    config = load_config_text(text + f"storage: {{data_dir: {tmp_path / 'data'}}}\n")
    stop, seen = threading.Event(), []

    def count(reading):
        seen.append(reading)
        if len(seen) >= 4:  # two polls of two transmitters
            stop.set()

    GatewayRunner.from_config(config).run(stop=stop, on_reading=count, drain_timeout_s=10)
    counters = read_status(tmp_path / "data")["sources"][f"modbus {null_modem.gateway}"]
    assert counters["ok"] >= 2 and counters["failures"] == 0
    assert sum(v for k, v in counters.items() if k.startswith("modbus_exception") or k == "no_answer") >= 2
    assert not [c for c in check_last_status(config) if c.status == FAIL]


def test_doctor_fails_a_given_up_source_and_held_messages_with_fixes(tmp_path):
    from gateway.device.status_file import write_status

    (tmp_path / "gw.yaml").write_text(GATEWAY.format(port=1883))
    zone().save(tmp_path / "zone.npz")
    config = load_config(tmp_path / "gw.yaml")
    now = time.time()
    write_status(
        Path(tmp_path / "gw"),
        {
            "time": int(now * 1000) - 300_000,
            "counters": {"outbox_backlog": 3, "outbox_held": 2, "outbox_held_oldest_s": 1800, "outbox_refused": 9},
            "sources": {"replay": {"readings": 10, "failures": 11, "restarts": 10, "gave_up": 1}},
        },
    )
    checks = {c.name: c for c in check_last_status(config, now=now)}
    assert checks["source replay"].status == FAIL and "gave_up 1" in checks["source replay"].detail
    assert "5 min ago" in checks["source replay"].detail and "restart the service" in checks["source replay"].fix
    assert checks["outbox"].status == FAIL and "2 refused by the broker and held" in checks["outbox"].detail
    assert "oldest held for 30 min" in checks["outbox"].detail and "src1/net3/gw-src/#" in checks["outbox"].fix
