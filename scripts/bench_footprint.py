"""Gateway footprint per simulated site-hour: RSS, CPU-seconds, and cold start to the first detection.

Run as its own process (one per backend) so that RSS and start-up are the gateway's
alone. The site: one water zone with 8 sensors (5 inflow meters, 3 pressures) read
once a minute, under the Minimum Night Flow detector; one air site with 3 sensors
(PM2.5, PM10, NO2) read every second, under the sensor-fault model (on ``--backend``)
and the EAQI detector; cell counts of 4 antennas every 10 minutes. Readings go through
``GatewayRunner`` (contract check, detectors, outbox with ``sync="full"``, MQTT at
QoS 1 to the broker on ``--mqtt-port``) as fast as the gateway takes them, so the CPU
per simulated hour is what the gateway would spend in one real hour.

Prints one JSON object: ``cold_start_s`` (from ``--spawned-at``, the parent's
``time.time()`` before it started this process, to the first detection stored),
``rss_mb`` (peak resident set, VmHWM), ``cpu_s_per_site_hour`` (process CPU, all
threads, for the simulated hours after the first, divided by their number).

    .venv/bin/python scripts/bench_footprint.py --mqtt-port P --backend litert --hours 4
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SITE, GATEWAY = "bench", "gw-footprint"
START_MS = 1_750_000_000_000 // 86_400_000 * 86_400_000  # a UTC midnight
WATER = [(f"F-{i}", "flow") for i in range(5)] + [(f"P-{i}", "pressure") for i in range(3)]
AIR = [("PM25", "pm25"), ("PM10", "pm10"), ("NO2", "no2")]
CELLS = [f"C-{i}" for i in range(4)]
HOUR_S = 3600


def config_text(data_dir: Path, mqtt_port: int, backend: str, dummy_file: Path) -> str:
    """The gateway config of the simulated site: water zone, air site and cell counts, replayed."""
    sensors = [{"id": s, "quantity": q, "driver": "replay", "column": s} for s, q in WATER + AIR] + [
        {"id": c, "quantity": "cell_count", "driver": "replay", "column": c} for c in CELLS
    ]
    doc = {
        "site": SITE,
        "gateway": GATEWAY,
        "timezone": "UTC",
        "sensors": sensors,
        "sources": {"replay": {"file": str(dummy_file)}},
        "models": [
            {"name": "mnf", "type": "mnf", "zone_inflow": [{"sensor": s, "sign": 1} for s, q in WATER if q == "flow"]},
            {
                "name": "air-fault",
                "type": "sensor_fault",
                "model_dir": str(ROOT / "models" / "air-fault"),
                # litert runs only the int8 file; onnxruntime and numpy the float one (as before precision existed)
                "precision": "int8" if backend == "litert" else "float",
                "backend": backend,
                "sensors": {"pm25": "PM25", "pm10": "PM10", "no2": "NO2"},
            },
            {"name": "eaqi", "type": "eaqi", "sensors": ["PM25", "PM10", "NO2"]},
        ],
        "mqtt": {"host": "127.0.0.1", "port": mqtt_port, "topic_prefix": "benchfoot"},
        "storage": {"data_dir": str(data_dir)},
    }
    return json.dumps(doc)


def site_hours(hours: int, seed: int = 0, marks: list | None = None):
    """The site's readings, hour by hour; appends (hour, process CPU) to ``marks`` at each hour's start."""
    import numpy as np

    from edge.contracts import QUANTITY_UNITS, Reading

    rng = np.random.default_rng(seed)
    for h in range(hours):
        if marks is not None:
            marks.append((h, time.process_time()))
        t0 = START_MS + h * HOUR_S * 1000
        air = np.abs(rng.normal([12.0, 20.0, 35.0], [2.0, 3.0, 5.0], (HOUR_S, 3)))
        water = np.abs(rng.normal([8.0] * 5 + [45.0] * 3, 0.5, (60, 8)))
        for s in range(HOUR_S):
            t = t0 + s * 1000
            for (sid, q), v in zip(AIR, air[s].tolist(), strict=True):
                yield Reading(t, SITE, GATEWAY, sid, q, round(v, 1), QUANTITY_UNITS[q])
            if s % 60 == 0:
                for (sid, q), v in zip(WATER, water[s // 60].tolist(), strict=True):
                    yield Reading(t, SITE, GATEWAY, sid, q, round(v, 3), QUANTITY_UNITS[q])
            if s % 600 == 0:
                for c in CELLS:
                    yield Reading(t, SITE, GATEWAY, c, "cell_count", float(rng.integers(50, 500)), "count")


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    """Run the gateway over ``--hours`` simulated site-hours; print RSS, CPU and cold start as one JSON line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mqtt-port", type=int, required=True)
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--hours", type=int, default=4)
    ap.add_argument("--spawned-at", type=float, default=None)
    args = ap.parse_args()
    spawned = args.spawned_at or time.time()
    from gateway.config import load_config_text
    from gateway.device.publisher import GatewayPublisher
    from gateway.device.runner import GatewayRunner, build_detectors, open_outbox
    from gateway.protocol import topics as T
    from gateway.protocol.mqtt_client import MqttSettings

    first_detection = []
    marks: list = []
    with tempfile.TemporaryDirectory(prefix="bench-foot-") as tmp:
        dummy = Path(tmp) / "unused.npz"
        dummy.write_bytes(b"")
        config = load_config_text(
            config_text(Path(tmp) / "data", args.mqtt_port, args.backend, dummy), name="bench-footprint"
        )
        detectors = build_detectors(config)
        publisher = GatewayPublisher(
            T.Topics(config.mqtt.topic_prefix, SITE, GATEWAY),
            MqttSettings("127.0.0.1", args.mqtt_port, client_id=f"foot-{args.backend}"),
            readings_batch=config.mqtt.readings_batch,
            outbox=open_outbox(config),
        )
        publish_detection = publisher.publish_detection

        def noted(detection):
            if not first_detection:
                first_detection.append(time.time())
            publish_detection(detection)

        publisher.publish_detection = noted
        runner = GatewayRunner(config, publisher, [site_hours(args.hours + 1, marks=marks)], detectors)
        summary = runner.run(drain_timeout_s=60)
        marks.append((args.hours + 1, time.process_time()))
    steady = marks[-1][1] - marks[1][1]  # hours 2..N+1: models loaded, windows full
    print(
        json.dumps(
            {
                "backend": args.backend,
                "hours": args.hours,
                "readings": summary.readings,
                "detections": summary.detections,
                "alerts": summary.alerts,
                "all_acknowledged": summary.all_acknowledged,
                "cold_start_s": (first_detection[0] - spawned) if first_detection else None,
                "first_hour_cpu_s": marks[1][1] - marks[0][1],
                "cpu_s_per_site_hour": steady / args.hours,
                "rss_mb": peak_rss_mb(),
                "runtimes_loaded": sorted({type(d.runtime_).__name__ for d in detectors if hasattr(d, "runtime_")}),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
