"""Several bridge workers on one shared subscription: the load is split, nothing lost, nothing doubled.

The points go to VictoriaMetrics through the v2 writer because it keeps every sample
it is sent: a message written twice shows as two samples, where InfluxDB would
silently overwrite it. So "every point once" here is a check that can fail.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from edge.contracts import Reading
from gateway.bridge.influx_writer import make_influx_writer
from gateway.bridge.service import Bridge
from gateway.device.publisher import GatewayPublisher
from gateway.local_services.services import free_port
from gateway.protocol import topics as T
from gateway.protocol.mqtt_client import MqttSettings
from tests.mqtt_clients import Collector, Publisher
from tests.test_contracts import T0

ROOT = Path(__file__).resolve().parent.parent
_n = itertools.count()


def publish(mqtt_port: int, prefix: str, site: str, gateway: str, first: int, count: int, batch: int) -> None:
    """``count`` readings of sensor F at minutes first..first+count, in messages of ``batch``."""
    settings = MqttSettings("127.0.0.1", mqtt_port, client_id=f"{prefix}-{gateway}")
    pub = GatewayPublisher(T.Topics(prefix, site, gateway), settings, readings_batch=batch).connect()
    for i in range(first, first + count):
        pub.add_reading(Reading(T0 + i * 60_000, site, gateway, "F", "flow", float(i), "L/s"))
    assert pub.close(timeout_s=30)


def samples(vm, site: str) -> list[tuple[str, int]]:
    """(gateway, time) of every stored reading sample of ``site``, duplicates included."""
    rows = []
    for series in vm.vm_export(f'{{__name__="reading_value", site="{site}"}}'):
        rows += [(series["metric"]["gateway"], t) for t in series["timestamps"]]
    return sorted(rows)


def wait_for(predicate, timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def test_three_workers_split_the_load_and_every_point_lands_once(services, vm_services):
    i = next(_n)
    prefix, site, group = f"fsscale{i}", f"scale-{i}", f"bridges{i}"
    workers = [
        Bridge(
            MqttSettings(services.mqtt_host, services.mqtt_port, client_id=f"bridge-{i}-w{w}"),
            make_influx_writer("v2", vm_services.vm_url, bucket="fleet"),
            prefix=prefix,
            share_group=group,
        ).start()
        for w in range(3)
    ]
    # A plain (unshared) subscriber: it gets every message, so it says how many the group should share.
    tally = Collector(services.mqtt_port, f"{prefix}/+/+/#", client_id=f"tally-{prefix}").start()
    try:
        gateways = [f"gw-{g:02d}" for g in range(5)]
        for gw in gateways:
            publish(services.mqtt_port, prefix, site, gw, 0, 300, batch=10)
        for worker in workers:
            assert worker.wait_idle(quiet_s=0.5, timeout_s=60)
    finally:
        tally.close()
        for worker in workers:
            worker.stop()
    taken = [worker.counters["messages_written"] for worker in workers]
    assert all(n > 0 for n in taken), taken  # each worker got part of the load
    assert sum(taken) == len(tally.messages) >= 150  # ...and no message went to two of them
    assert samples(vm_services, site) == sorted((gw, T0 + m * 60_000) for gw in gateways for m in range(300))


def _spawn_worker(services, prefix, group, client_id, influx_url):
    argv = [
        sys.executable,
        "-m",
        "gateway.cli",
        "bridge",
        "--mqtt-port",
        str(services.mqtt_port),
        "--client-id",
        client_id,
        "--prefix",
        prefix,
        "--share-group",
        group,
        "--influx-api",
        "v2",
        "--influx-url",
        influx_url,
        "--bucket",
        "fleet",
    ]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:  # subscribed once this is printed
        if "running" in line:
            return proc
    raise AssertionError(f"worker {client_id} did not start: exit {proc.wait()}")


def test_a_dead_workers_share_waits_in_its_session_until_it_returns(services, vm_services):
    """Mosquitto 2.0, persistent sessions + $share: what a killed worker held is not handed to the others.

    Its unacknowledged messages, and its turn of the round robin for new ones, stay in
    its session until a worker with the same client id connects again; then they all
    land, once. Nothing is lost, but that share is late: restart dead workers.
    """
    i = next(_n)
    prefix, site, group = f"fsdead{i}", f"dead-{i}", f"bridges{i}"
    healthy = Bridge(
        MqttSettings(services.mqtt_host, services.mqtt_port, client_id=f"bridge-{i}-a"),
        make_influx_writer("v2", vm_services.vm_url, bucket="fleet"),
        prefix=prefix,
        share_group=group,
    ).start()
    # Worker B writes to a database that is not there: it holds every message it gets, unacknowledged.
    dead_url = f"http://127.0.0.1:{free_port()}"
    worker_b = _spawn_worker(services, prefix, group, f"bridge-{i}-b", dead_url)
    try:
        publish(services.mqtt_port, prefix, site, "gw-01", 0, 100, batch=1)
        sent = 100
        assert healthy.wait_idle(quiet_s=1.0, timeout_s=30)
        first_share = healthy.counters["messages_written"]
        assert 0 < first_share < sent  # B took some of them

        os.kill(worker_b.pid, signal.SIGKILL)
        worker_b.wait(timeout=10)
        publish(services.mqtt_port, prefix, site, "gw-01", 100, 100, batch=1)
        sent += 100
        assert healthy.wait_idle(quiet_s=1.0, timeout_s=30)
        # B's held messages did not move to A, and B's session kept getting its turn while B was dead.
        second_share = healthy.counters["messages_written"] - first_share
        assert 0 < second_share < sent - first_share
        assert len(samples(vm_services, site)) < 200

        worker_b = _spawn_worker(services, prefix, group, f"bridge-{i}-b", vm_services.vm_url)
        assert wait_for(lambda: len(samples(vm_services, site)) >= 200)
        assert healthy.wait_idle(quiet_s=1.0, timeout_s=30)
        assert samples(vm_services, site) == [("gw-01", T0 + m * 60_000) for m in range(200)]
        assert healthy.counters["messages_written"] == first_share + second_share  # A got nothing of B's
    finally:
        healthy.stop()
        worker_b.send_signal(signal.SIGTERM)
        worker_b.communicate(timeout=20)


def test_mosquitto_sends_retained_messages_to_a_new_shared_subscriber(services):
    """Broker fact docs/scaling.md relies on: each worker start re-delivers every retained status."""
    i = next(_n)
    topic = f"fsretained{i}/net3/gw-01/status"
    with Publisher(services.mqtt_port, client_id=f"retained-pub-{i}") as pub:
        pub.publish(topic, b"offline", retain=True, wait_s=5)
    with Collector(services.mqtt_port, f"$share/g{i}/fsretained{i}/+/+/#", client_id=f"retained-sub-{i}") as sub:
        assert sub.retained() == {topic: b"offline"}
