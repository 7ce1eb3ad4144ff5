"""One bridge, two InfluxDB APIs: v1 against real InfluxDB 1.6, v2 (influxdb-client) against real VictoriaMetrics."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge.contracts import Reading
from gateway.bridge.influx_v2 import InfluxV2Writer
from gateway.bridge.influx_writer import InfluxV1Writer, WriteError, make_influx_writer
from gateway.bridge.service import Bridge
from gateway.cli import main
from gateway.device.publisher import GatewayPublisher
from gateway.local_services.services import free_port
from gateway.protocol import topics as T
from gateway.protocol.mqtt_client import MqttSettings
from tests.test_contracts import T0, alert, detection

ROOT = Path(__file__).resolve().parent.parent
_n = itertools.count()
SENSORS = ("F-lake", "P-15")


def sent_readings(site: str, n: int = 240) -> list[Reading]:
    # Values with many decimals: a float mangled on the way (v1 text, v2 client) would show.
    return [
        Reading(
            T0 + i * 60_000,
            site,
            "gw-01",
            SENSORS[i % 2],
            "flow" if i % 2 == 0 else "pressure",
            100.0 + i / 7,
            "L/s" if i % 2 == 0 else "m",
        )
        for i in range(n)
    ]


def publish(mqtt_port: int, prefix: str, site: str, readings: list[Reading]) -> None:
    settings = MqttSettings("127.0.0.1", mqtt_port, client_id=f"{prefix}-gw")
    pub = GatewayPublisher(T.Topics(prefix, site, "gw-01"), settings, readings_batch=25).connect()
    for r in readings:
        pub.add_reading(r)
    pub.publish_detection(detection(site=site))
    pub.publish_alert(alert(site=site))
    assert pub.close(timeout_s=30)


# ---- reading back, one function per API ------------------------------------------------


def landed_v1(writer: InfluxV1Writer, site: str) -> dict:
    out = {}
    for sensor in SENSORS:
        series = writer.query(f"SELECT value FROM reading WHERE site = '{site}' AND sensor = '{sensor}'")
        out[("reading_value", sensor)] = [tuple(v) for v in series[0]["values"]] if series else []
    for measurement, field in (("detection", "score"), ("alert", "score")):
        series = writer.query(f"SELECT {field} FROM {measurement} WHERE site = '{site}'")
        out[(f"{measurement}_{field}", None)] = [tuple(v) for v in series[0]["values"]] if series else []
    return out


def landed_v2(vm, site: str) -> dict:
    """VictoriaMetrics names a series ``measurement_field``; export returns every stored sample."""
    out = {}
    for name, by_sensor in (("reading_value", True), ("detection_score", False), ("alert_score", False)):
        for series in vm.vm_export(f'{{__name__="{name}", site="{site}"}}'):
            key = (name, series["metric"]["sensor"] if by_sensor else None)
            out.setdefault(key, []).extend(zip(series["timestamps"], series["values"], strict=True))
    return {key: sorted(rows) for key, rows in out.items()}


def same_points(got: dict, want: dict, api: str) -> bool:
    """Same series, same timestamps (so nothing missing or duplicated) and the same values.

    VictoriaMetrics stores about 12 significant decimal digits (100.14285714285714 comes
    back as 100.1428571428), so v2-on-VictoriaMetrics values are compared to 1e-11.
    """
    if api == "v1":
        return got == want
    return (
        got.keys() == want.keys()
        and all([t for t, _ in got[k]] == [t for t, _ in want[k]] for k in want)
        and all([v for _, v in got[k]] == pytest.approx([v for _, v in want[k]], rel=1e-11) for k in want)
    )


def expected(readings: list[Reading], site: str) -> dict:
    want = {("reading_value", s): [(r.time_ms, r.value) for r in readings if r.sensor == s] for s in SENSORS}
    want[("detection_score", None)] = [(detection(site=site).time_ms, 0.31)]
    want[("alert_score", None)] = [(alert(site=site).time_ms, 0.31)]
    return want


@pytest.fixture
def lane(services, vm_services, request):
    """A bridge whose writer speaks ``request.param`` ("v1" or "v2"), with its own prefix and site."""
    api = request.param
    i = next(_n)
    prefix, site = f"fsv2test{i}", f"site-{api}-{i}"
    if api == "v1":
        writer = make_influx_writer("v1", services.influx_url, database=f"v2test_{i}")
    else:
        writer = make_influx_writer("v2", vm_services.vm_url, bucket=f"v2test_{i}", org="frugalsense", token="t")
    settings = MqttSettings(services.mqtt_host, services.mqtt_port, client_id=f"bridge-v2test-{i}")
    bridge = Bridge(settings, writer, prefix=prefix).start()
    read_back = (lambda: landed_v1(writer, site)) if api == "v1" else (lambda: landed_v2(vm_services, site))
    yield api, prefix, site, writer, bridge, read_back
    bridge.stop()
    writer.close()


@pytest.mark.parametrize("lane", ["v1", "v2"], indirect=True)
def test_same_bridge_lands_every_point_once_with_its_value(services, lane):
    api, prefix, site, writer, bridge, read_back = lane
    assert writer.api == api
    readings = sent_readings(site)
    publish(services.mqtt_port, prefix, site, readings)
    assert bridge.wait_idle(quiet_s=0.5, timeout_s=30)
    # Exact equality: a missing point, a duplicate (VictoriaMetrics keeps both) or a changed value fails.
    got, want = read_back(), expected(readings, site)
    assert same_points(got, want, api), (got, want)
    assert bridge.counters["points_written"] == len(readings) + 2 + 2  # + detection, alert, online, offline


@pytest.mark.parametrize("lane", ["v2"], indirect=True)
def test_v2_keeps_messages_while_the_server_is_down(services, vm_services, lane):
    """SYNCHRONOUS writes raise, so nothing is acknowledged (or lost) while the server is away."""
    api, prefix, site, writer, bridge, read_back = lane
    vm_services.stop_service("victoriametrics")
    try:
        readings = sent_readings(site, 60)
        publish(services.mqtt_port, prefix, site, readings)
        assert not bridge.wait_idle(quiet_s=0.2, timeout_s=2)  # holding them, not dropping them
        assert bridge.counters["write_failures"] >= 1
        assert bridge.counters["points_written"] == 0
    finally:
        vm_services.start_service("victoriametrics")
    assert bridge.wait_idle(quiet_s=0.5, timeout_s=60)
    assert same_points(read_back(), expected(readings, site), api)


# ---- the writers alone ---------------------------------------------------------------


def test_v2_writer_sorts_errors_from_real_servers(services):
    # Debian's InfluxDB 1.6 has no /api/v2/write: a 404, retryable (like a bucket not created yet).
    with pytest.raises(WriteError) as caught:
        InfluxV2Writer(services.influx_url, "b").write(["m v=1 1"])
    assert caught.value.status == 404 and caught.value.retryable
    # Nobody listening: retryable, with the address in the message.
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(WriteError, match=f"{url} unreachable") as caught:
        InfluxV2Writer(url, "b").write(["m v=1 1"])
    assert caught.value.retryable and caught.value.status is None


def test_v2_ensure_database_is_harmless_without_a_buckets_api(vm_services):
    InfluxV2Writer(vm_services.vm_url, "b").ensure_database()  # VictoriaMetrics: nothing to create


def test_factory_refuses_unknown_api():
    with pytest.raises(ValueError, match="unknown InfluxDB API 'v9'"):
        make_influx_writer("v9", "http://127.0.0.1:1")
    assert make_influx_writer("v2", "http://127.0.0.1:1", database="water").bucket == "water"


# ---- the command -----------------------------------------------------------------------


def test_bridge_command_refuses_v2_options_with_v1(capsys):
    assert main(["bridge", "--influx-api", "v1", "--bucket", "b"]) == 2
    assert "--bucket, --org and --token-env are for --influx-api v2" in capsys.readouterr().err


def test_bridge_command_refuses_a_missing_token_variable(capsys):
    assert main(["bridge", "--influx-api", "v2", "--token-env", "FRUGALSENSE_NO_SUCH_VAR"]) == 2
    assert "environment variable FRUGALSENSE_NO_SUCH_VAR (the InfluxDB token) is not set" in capsys.readouterr().err


def test_bridge_command_with_v2_switch_writes_to_victoriametrics(services, vm_services):
    i = next(_n)
    prefix, site = f"fsv2cmd{i}", f"site-cmd-{i}"
    env = {**os.environ, "FS_TEST_TOKEN": "token-from-env"}
    argv = [
        sys.executable,
        "-m",
        "gateway.cli",
        "bridge",
        "--mqtt-port",
        str(services.mqtt_port),
        "--client-id",
        f"bridge-v2cmd-{i}",
        "--prefix",
        prefix,
        "--influx-api",
        "v2",
        "--influx-url",
        vm_services.vm_url,
        "--bucket",
        "fleet",
        "--org",
        "frugalsense",
        "--token-env",
        "FS_TEST_TOKEN",
        "--stats-every",
        "0.2",
    ]
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = []
    try:
        # Publish only once it has subscribed: before that the broker has no queue for it.
        for line in proc.stdout:
            out.append(line)
            if "running" in line:
                break
        readings = sent_readings(site, 40)
        publish(services.mqtt_port, prefix, site, readings)
        want = expected(readings, site)
        # Poll the database, not the clock: the bridge acknowledges only after the write.
        deadline = 200
        while not same_points(landed_v2(vm_services, site), want, "v2") and deadline:
            deadline -= 1
            if proc.poll() is not None:
                break
            time.sleep(0.1)
        assert same_points(landed_v2(vm_services, site), want, "v2")
    finally:
        proc.send_signal(signal.SIGTERM)
        out.append(proc.communicate(timeout=20)[0])
    assert proc.returncode == 0, "".join(out)
    assert "(influx v2)" in "".join(out)
