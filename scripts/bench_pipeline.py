"""Gateway pipeline throughput: serial bytes on a real pty to MQTT, against the C client publishing the same messages.

The gateway side is the real code path, in one process pinned to one core: a line node
prints ``pm1=.. pm25=.. pm10=.. no2=.. o3=.. t=.. rh=.. ws=..`` (8 readings a line) into
a pty; ``SerialSource`` (pyserial on the pty's slave side) frames and decodes the lines;
``GatewayRunner`` checks each reading's contract, feeds the sensor-fault model (10-minute
slot windows, hourly features, inference on the chosen backend) and the EAQI detector,
batches readings per sensor into the outbox (SQLite, ``sync="full"`` as ``frugalsense
run``) and the sender publishes them at QoS 1 to Mosquitto. The node's clock advances
1 s per line, so the models see one simulated hour every 3,600 lines. The rate counts
from the first byte written to the broker's last PUBACK.

The comparison is ``mosquitto_pub -l -q 1`` (the C client), pinned to the same core,
publishing the same payloads (the gateway's reading batches, one per line on stdin, several
times over so that its start and last acknowledgement do not dominate) to the same broker.
The byte writer (``cat`` into the pty master) and Mosquitto run on the other core.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

KEYS = (
    ("pm1", "pm1"),
    ("pm25", "pm25"),
    ("pm10", "pm10"),
    ("no2", "no2"),
    ("o3", "o3"),
    ("t", "temperature"),
    ("rh", "humidity"),
    ("ws", "wind_speed"),
)
START_MS = 1_750_000_000_000 // 3_600_000 * 3_600_000  # an hour boundary
SITE, GATEWAY = "bench", "gw-pipe"


def node_bytes(lines: int, seed: int = 0) -> bytes:
    """What a line node prints: ``lines`` lines of 8 key=value pairs, plausible and varying."""
    import numpy as np

    rng = np.random.default_rng(seed)
    base = np.array([6.0, 9.0, 15.0, 30.0, 40.0, 15.0, 60.0, 3.0])
    values = np.abs(base + rng.normal(0, 1, (lines, len(base))) * base * 0.1)
    keys = [k for k, _ in KEYS]
    return "".join(" ".join(f"{k}={v:.1f}" for k, v in zip(keys, row, strict=True)) + "\n" for row in values).encode()


def _config(port: str, data_dir: Path, mqtt_port: int, backend: str):
    from gateway.config import load_config_text

    sensors = [
        {"id": f"S-{q}", "quantity": q, "driver": "line", "port": port, "key": k, "interval_s": 86400} for k, q in KEYS
    ]
    doc = {
        "site": SITE,
        "gateway": GATEWAY,
        "timezone": "UTC",
        "sensors": sensors,
        "models": [
            {
                "name": "air-fault",
                "type": "sensor_fault",
                "model_dir": str(ROOT / "models" / "air-fault"),
                "backend": backend,
                "sensors": {
                    "pm25": "S-pm25",
                    "pm10": "S-pm10",
                    "no2": "S-no2",
                    "temperature": "S-temperature",
                    "humidity": "S-humidity",
                },
            },
            {"name": "eaqi", "type": "eaqi", "sensors": ["S-pm25", "S-pm10", "S-no2", "S-o3"]},
        ],
        "mqtt": {"host": "127.0.0.1", "port": mqtt_port, "topic_prefix": "benchpipe"},
        "storage": {"data_dir": str(data_dir)},
    }
    return load_config_text(json.dumps(doc), name="bench-pipeline")


def _gateway(mqtt_port: int, lines: int, backend: str, cpu: int | None, data_file: str, results) -> None:
    """One gateway process: pty, serial source, runner, outbox, MQTT; reports rate and its payloads."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    from edge.sources.serial_source import SerialSource
    from gateway.device.publisher import GatewayPublisher
    from gateway.device.runner import GatewayRunner, build_detectors, open_outbox
    from gateway.protocol import topics as T
    from gateway.protocol.mqtt_client import MqttSettings

    master, slave = os.openpty()
    port = os.ttyname(slave)
    with tempfile.TemporaryDirectory(prefix="bench-pipe-") as tmp:
        config = _config(port, Path(tmp), mqtt_port, backend)
        clock = iter(range(START_MS, START_MS + 10**12, 1000))
        stop = threading.Event()
        source = SerialSource.from_config_entries(
            SITE, GATEWAY, [s.model_dump() for s in config.sensors], wall_ms=lambda: next(clock), stop=stop
        )
        topics = T.Topics(config.mqtt.topic_prefix, SITE, GATEWAY)
        publisher = GatewayPublisher(
            topics,
            MqttSettings("127.0.0.1", mqtt_port, client_id=f"pipe-{os.getpid()}"),
            readings_batch=config.mqtt.readings_batch,
            outbox=open_outbox(config),
        )
        payloads: list[tuple[str, bytes, int]] = []
        store = publisher.outbox.put

        def keep(stream, payload, kind, **kw):  # the same messages for the C client and the publisher alone
            if kind == "reading":
                payloads.append((stream, payload, kw.get("items", 1)))
            return store(stream, payload, kind, **kw)

        publisher.outbox.put = keep
        runner = GatewayRunner(config, publisher, [source], build_detectors(config))
        expected = lines * len(KEYS)
        seen = [0]
        writer: list[subprocess.Popen] = []
        started = [0.0]

        def on_reading(_r):
            seen[0] += 1
            if seen[0] == 1:
                pass
            if seen[0] >= expected:
                stop.set()

        # The first poll opens the port (raw mode); the writer starts once it is open.
        def start_writer():
            while not source.counters[port].get("opens"):
                time.sleep(0.01)
            started[0] = time.perf_counter()
            cpu_args = ["taskset", "-c", str(1 - cpu)] if cpu is not None and shutil.which("taskset") else []
            writer.append(subprocess.Popen(cpu_args + ["cat", data_file], stdout=master))

        threading.Thread(target=start_writer, daemon=True).start()
        cpu0 = time.process_time()
        summary = runner.run(stop=stop, on_reading=on_reading, drain_timeout_s=120)
        seconds = time.perf_counter() - started[0]
        cpu_s = time.process_time() - cpu0
        for w in writer:
            w.wait(10)
        os.close(master)
        os.close(slave)
    results.put(
        {
            "readings": seen[0],
            "published": summary.readings,
            "seconds": seconds,
            "cpu_s": cpu_s,
            "detections": summary.detections,
            "all_acknowledged": summary.all_acknowledged,
            "rejected": sum(summary.rejected.values()),
            "payloads": payloads,
        }
    )


def gateway_rate(mqtt_port: int, lines: int, backend: str = "auto", cpu: int | None = 0) -> dict:
    """Run one gateway process on ``lines`` node lines; returns readings/s and the payloads it published."""
    with tempfile.NamedTemporaryFile(prefix="node-", suffix=".txt", delete=False) as f:
        f.write(node_bytes(lines))
    try:
        ctx = mp.get_context("spawn")
        results = ctx.Queue()
        p = ctx.Process(target=_gateway, args=(mqtt_port, lines, backend, cpu, f.name, results))
        p.start()
        out = results.get(timeout=600)
        p.join(30)
    finally:
        os.unlink(f.name)
    out["readings_per_s"] = out["readings"] / out["seconds"]
    return out


def stage_costs(lines: int = 3000) -> dict[str, float]:
    """CPU-µs per reading of single stages, in this thread, without I/O: what a reading costs at the least.

    ``parse``: node bytes -> frames -> decoded lines -> one Reading per value (what the serial
    source does per line, without its schedule and limits); ``validate``: the contract check
    the loop makes; ``encode``: the reading's share of its batch's JSON payload.
    """
    from edge.contracts import QUANTITY_UNITS, Reading
    from edge.drivers import line_node
    from gateway.protocol import payloads

    data = node_bytes(lines)

    def parse():
        out, t = [], START_MS
        for frame in line_node.LineParser().feed(data):
            sample = line_node.decode(frame.data)
            t += 1000
            out += [Reading(t, SITE, GATEWAY, f"S-{q}", q, sample.values[k], QUANTITY_UNITS[q]) for k, q in KEYS]
        return out

    def timed(fn) -> float:
        best = float("inf")
        for _ in range(3):
            t0 = time.process_time()
            fn()
            best = min(best, time.process_time() - t0)
        return best / (lines * len(KEYS)) * 1e6

    readings = parse()
    per_sensor: dict[str, list] = {}
    for r in readings:
        per_sensor.setdefault(r.sensor, []).append(r)
    batches = [rs[i : i + 50] for rs in per_sensor.values() for i in range(0, len(rs), 50)]
    return {
        "parse": timed(parse),
        "validate": timed(lambda: [r.validate() for r in readings]),
        "encode": timed(lambda: [payloads.encode_readings(b) for b in batches]),
    }


def _publisher_alone(mqtt_port: int, messages: list[tuple[str, bytes, int]], cpu: int | None, results) -> None:
    from gateway.device.outbox import READING, Outbox, Outgoing
    from gateway.device.publisher import GatewayPublisher
    from gateway.protocol import topics as T
    from gateway.protocol.mqtt_client import MqttSettings

    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    with tempfile.TemporaryDirectory(prefix="bench-pub-") as tmp:
        publisher = GatewayPublisher(
            T.Topics("benchpub", SITE, GATEWAY),
            MqttSettings("127.0.0.1", mqtt_port, client_id=f"pub-{os.getpid()}"),
            outbox=Outbox(Path(tmp) / "outbox.sqlite", sync="full"),
        ).connect()
        cpu0, started = time.process_time(), time.perf_counter()
        step = len(KEYS)  # the gateway stores one time step's full batches (one per sensor) together
        for i in range(0, len(messages), step):
            # GatewayPublisher._store is the one place messages enter the outbox and wake the sender.
            publisher._store(
                *[Outgoing(stream, payload, READING, items) for stream, payload, items in messages[i : i + step]]
            )
        acked = publisher.close(timeout_s=120)
        results.put(
            {"seconds": time.perf_counter() - started, "cpu_s": time.process_time() - cpu0, "all_acknowledged": acked}
        )


def publisher_alone_rate(
    mqtt_port: int, messages: list[tuple[str, bytes, int]], readings: int, cpu: int | None = 0
) -> dict:
    """The gateway's outbox and MQTT sender alone (no parsing, no detectors), publishing the same messages."""
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    p = ctx.Process(target=_publisher_alone, args=(mqtt_port, messages, cpu, results))
    p.start()
    out = results.get(timeout=300)
    p.join(30)
    out.update(messages=len(messages), readings=readings, readings_per_s=readings / out["seconds"])
    return out


def c_client_rate(mqtt_port: int, messages: list[tuple[str, bytes, int]], readings: int, cpu: int | None = 0) -> dict:
    """``mosquitto_pub -l -q 1``: the same payloads, one per stdin line, to the same broker."""
    exe = shutil.which("mosquitto_pub")
    if exe is None:
        raise RuntimeError("mosquitto_pub not found: install the mosquitto-clients package")
    payloads = [payload for _, payload, _ in messages]
    data = b"\n".join(payloads) + b"\n"
    cmd = [
        exe,
        "-h",
        "127.0.0.1",
        "-p",
        str(mqtt_port),
        "-q",
        "1",
        "-t",
        f"benchpipe/{SITE}/c-client/readings",
        "-l",
        "-i",
        f"c-client-{os.getpid()}",
    ]
    if cpu is not None and shutil.which("taskset"):
        cmd = ["taskset", "-c", str(cpu)] + cmd
    started = time.perf_counter()
    r = subprocess.run(cmd, input=data, capture_output=True, timeout=600)
    seconds = time.perf_counter() - started
    if r.returncode != 0:
        raise RuntimeError(f"mosquitto_pub failed: {r.stderr.decode(errors='replace')[:300]}")
    return {
        "messages": len(payloads),
        "readings": readings,
        "seconds": seconds,
        "readings_per_s": readings / seconds,
        "messages_per_s": len(payloads) / seconds,
    }


if __name__ == "__main__":
    from gateway.local_services.services import LocalServices

    lines = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    with tempfile.TemporaryDirectory() as tmp, LocalServices(Path(tmp), influxdb=False) as services:
        g = gateway_rate(services.mqtt_port, lines)
        messages = g.pop("payloads")
        c = c_client_rate(services.mqtt_port, messages, g["readings"])
        alone = publisher_alone_rate(services.mqtt_port, messages, g["readings"])
        print(json.dumps({"gateway": g, "c_client": c, "publisher_alone": alone}, indent=1))
