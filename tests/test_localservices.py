"""Real Mosquitto, InfluxDB and VictoriaMetrics started by gateway.local_services answer as promised."""

from __future__ import annotations

import json
import os
import queue
import socket
import urllib.parse

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.local_services import process
from gateway.local_services.services import InfluxQueryError, LocalServices, ServiceError, http_request, mqtt_answers

WAIT_S = 10.0
# 2020-01-01T00:00:00Z: far older than VictoriaMetrics' default one-month retention.
OLD_TIME_MS = 1_577_836_800_000


def _client(services: LocalServices, client_id: str, *, clean_start: bool = True) -> tuple[mqtt.Client, queue.Queue]:
    """A connected MQTT v5 client whose received messages land in the returned queue."""
    inbox: queue.Queue = queue.Queue()
    connected: queue.Queue = queue.Queue()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.on_message = lambda c, u, msg: inbox.put((msg.topic, msg.payload))
    client.on_connect = lambda c, u, flags, reason, props: connected.put(reason)
    client.on_subscribe = lambda c, u, mid, reasons, props: connected.put("subscribed")
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 300
    client.connect(services.mqtt_host, services.mqtt_port, clean_start=clean_start, properties=props)
    client.loop_start()
    assert not connected.get(timeout=WAIT_S).is_failure
    client._subscribed = connected  # where SUBACKs are signalled
    return client, inbox


def _subscribe(client: mqtt.Client, topic: str) -> None:
    client.subscribe(topic, qos=1)
    assert client._subscribed.get(timeout=WAIT_S) == "subscribed"


def _close(client: mqtt.Client) -> None:
    client.disconnect()
    client.loop_stop()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A stopped child we have not reaped yet is a zombie, not a running service.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(")")[-1].split()[0] != "Z"


def test_mqtt_message_goes_through_the_broker(services):
    subscriber, inbox = _client(services, "test-sub")
    publisher, _ = _client(services, "test-pub")
    try:
        _subscribe(subscriber, "frugalsense/test/roundtrip")
        publisher.publish("frugalsense/test/roundtrip", b'{"pm25": 12.5}', qos=1).wait_for_publish(WAIT_S)
        assert inbox.get(timeout=WAIT_S) == ("frugalsense/test/roundtrip", b'{"pm25": 12.5}')
    finally:
        _close(subscriber)
        _close(publisher)


def test_services_listen_on_loopback_only_and_never_on_standard_ports(services):
    assert services.mqtt_host == "127.0.0.1"
    assert services.info("mosquitto").url == f"mqtt://127.0.0.1:{services.mqtt_port}"
    assert services.influx_url.startswith("http://127.0.0.1:")
    assert services.mqtt_port != 1883 and services.info("influxdb").port != 8086
    config = (services.root / "mosquitto" / "mosquitto.conf").read_text()
    assert f"listener {services.mqtt_port} 127.0.0.1" in config


def test_influxdb_write_then_query_back(services):
    services.create_influx_database("frugalsense_test")
    services.influx_write(
        "frugalsense_test",
        [
            f"water,node=J-10,quantity=pressure value=3.25 {OLD_TIME_MS}",
            f"water,node=J-10,quantity=pressure value=3.5 {OLD_TIME_MS + 60_000}",
        ],
    )
    answer = services.influx_query("SELECT value FROM water WHERE node = 'J-10' ORDER BY time", db="frugalsense_test")
    series = answer["results"][0]["series"][0]
    assert series["columns"] == ["time", "value"]
    assert series["values"] == [[OLD_TIME_MS, 3.25], [OLD_TIME_MS + 60_000, 3.5]]


def test_influxdb_raw_http_write_endpoint(services):
    services.create_influx_database("frugalsense_raw")
    status, body = http_request(
        "POST",
        f"{services.influx_url}/write?db=frugalsense_raw&precision=ms",
        data=f"air pm25=7.5 {OLD_TIME_MS}".encode(),
    )
    assert status == 204, body
    values = services.influx_query("SELECT pm25 FROM air", db="frugalsense_raw")["results"][0]["series"][0]["values"]
    assert values == [[OLD_TIME_MS, 7.5]]


def test_influxdb_errors_raise(services):
    with pytest.raises(InfluxQueryError, match="not found|does not exist"):
        services.influx_query("SELECT * FROM water", db="no_such_database")
    with pytest.raises(InfluxQueryError, match="error parsing query"):
        services.influx_query("SELEKT nonsense")
    with pytest.raises(InfluxQueryError, match="400|unable to parse"):
        services.create_influx_database("frugalsense_bad")
        services.influx_write("frugalsense_bad", "this is not line protocol")


def test_victoriametrics_keeps_old_points_written_as_line_protocol(vm_services):
    line = f"water,node=J-10 pressure_bar=3.25 {OLD_TIME_MS}"
    status, body = http_request(
        "POST", f"{vm_services.vm_url}/api/v2/write?db=frugalsense&precision=ms", data=line.encode()
    )
    assert status == 204, body
    vm_services.flush_victoriametrics()
    match = urllib.parse.urlencode({"match[]": '{__name__="water_pressure_bar"}'})
    status, body = http_request("GET", f"{vm_services.vm_url}/api/v1/export?{match}")
    assert status == 200, body
    series = [json.loads(row) for row in body.splitlines()]
    assert series == [
        {
            "metric": {"__name__": "water_pressure_bar", "db": "frugalsense", "node": "J-10"},
            "values": [3.25],
            "timestamps": [OLD_TIME_MS],
        }
    ]


def test_stopped_service_restarts_on_the_same_port_with_its_data(services):
    services.create_influx_database("frugalsense_restart")
    services.influx_write("frugalsense_restart", f"water value=1.0 {OLD_TIME_MS}")
    before = services.info("influxdb")

    services.stop_service("influxdb")
    services.stop_service("influxdb")  # idempotent
    assert not services.is_running("influxdb")
    assert not _pid_alive(before.pid)
    with pytest.raises(ServiceError, match="no answer"):
        services.influx_query("SHOW DATABASES")

    after = services.start_service("influxdb")
    assert after.port == before.port and after.pid != before.pid
    values = services.influx_query("SELECT value FROM water", db="frugalsense_restart")["results"][0]["series"][0]
    assert values["values"] == [[OLD_TIME_MS, 1.0]]

    mqtt_before = services.info("mosquitto")
    mqtt_after = services.restart_service("mosquitto")
    assert mqtt_after.port == mqtt_before.port and mqtt_after.pid != mqtt_before.pid
    assert mqtt_answers(services.mqtt_host, services.mqtt_port)


def test_persistent_broker_keeps_queued_message_across_restart(tmp_path):
    with LocalServices(tmp_path, influxdb=False, mosquitto_persistence=True) as broker:
        subscriber, _ = _client(broker, "test-persistent-sub", clean_start=False)
        _subscribe(subscriber, "frugalsense/test/queued")
        _close(subscriber)
        publisher, _ = _client(broker, "test-persistent-pub")
        publisher.publish("frugalsense/test/queued", b"kept", qos=1).wait_for_publish(WAIT_S)
        _close(publisher)

        broker.restart_service("mosquitto")

        subscriber, inbox = _client(broker, "test-persistent-sub", clean_start=False)
        try:
            assert inbox.get(timeout=WAIT_S) == ("frugalsense/test/queued", b"kept")
        finally:
            _close(subscriber)
        assert (tmp_path / "mosquitto" / "data" / "mosquitto.db").exists()


def test_second_instance_in_parallel_gets_other_ports(services, tmp_path):
    with LocalServices(tmp_path) as second:
        assert second.mqtt_port != services.mqtt_port
        assert second.influx_url != services.influx_url
        assert mqtt_answers(second.mqtt_host, second.mqtt_port)
        assert mqtt_answers(services.mqtt_host, services.mqtt_port)
        pids = [second.info(name).pid for name in second.names]
    assert not any(_pid_alive(pid) for pid in pids)


def test_missing_binary_names_the_apt_package(tmp_path, monkeypatch):
    bogus = str(tmp_path / "no-such-mosquitto")
    with pytest.raises(ServiceError, match=r"mosquitto: program .*no-such-mosquitto.*apt-get install mosquitto"):
        LocalServices(tmp_path, influxdb=False, binaries={"mosquitto": bogus}).start()

    monkeypatch.setenv("FRUGALSENSE_INFLUXD_BIN", str(tmp_path / "no-such-influxd"))
    with pytest.raises(ServiceError, match=r"apt-get install influxdb.*FRUGALSENSE_INFLUXD_BIN"):
        LocalServices(tmp_path, mosquitto=False).start()


def test_service_that_exits_at_startup_shows_its_log(tmp_path):
    services = LocalServices(tmp_path, influxdb=False, mosquitto_extra_config=["no_such_option true"])
    with pytest.raises(ServiceError, match=r"(?s)mosquitto .*exited.*Unknown configuration variable"):
        services.start()
    assert not services.is_running("mosquitto")


def test_a_port_taken_before_the_service_binds_is_retried(tmp_path, monkeypatch):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    offered = [[taken.getsockname()[1]]]
    real_free_ports = process.free_ports
    # The race, made certain: the first port offered is taken by someone else.
    monkeypatch.setattr(process, "free_ports", lambda n: offered.pop() if offered else real_free_ports(n))
    try:
        with LocalServices(tmp_path, influxdb=False) as services:
            assert services.mqtt_port != taken.getsockname()[1]
            assert mqtt_answers(services.mqtt_host, services.mqtt_port)
        assert "Address already in use" in (tmp_path / "mosquitto" / "mosquitto.log").read_text()
    finally:
        taken.close()


def test_unknown_service_names_are_refused(tmp_path, services):
    with pytest.raises(ValueError, match="unknown service"):
        LocalServices(tmp_path, binaries={"mosquito": "/usr/sbin/mosquitto"})
    with pytest.raises(ServiceError, match="not managed here"):
        _ = services.vm_url  # the property raises: that is the check


def test_service_deaf_to_sigterm_is_killed_with_its_process_group(tmp_path):
    # A wrapper that ignores SIGTERM and keeps the real broker as its child, as packaging scripts do.
    wrapper = tmp_path / "mosquitto-wrapper"
    real = process.find_binary("mosquitto", None)
    wrapper.write_text(f"#!/bin/sh\ntrap '' TERM\n{real} \"$@\" &\nwait\n")
    wrapper.chmod(0o755)
    services = LocalServices(tmp_path, influxdb=False, binaries={"mosquitto": str(wrapper)}, stop_timeout_s=0.5)
    services.start()
    port = services.mqtt_port
    services.stop()
    assert not mqtt_answers("127.0.0.1", port)
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past TIME_WAIT, not past a listener
        probe.bind(("127.0.0.1", port))  # the broker child is gone too: its port is free again
