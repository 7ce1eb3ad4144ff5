"""`frugalsense demo`: a simulated water zone, end to end, on real local services.

Simulates (once, then cached) two weeks of the EPANET Net3 zone with a leak in the
second week, starts a private Mosquitto and InfluxDB, runs the bridge and the
gateway (replaying the simulation as fast as it can), then asks InfluxDB what
landed and prints each alert next to the injected leak.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

DEFAULT_CONFIG = "firmware_configs/net3-demo.yaml"
DEFAULT_DIR = ".run/demo"
DATABASE = "frugalsense"


def register(subparsers) -> None:
    """Add `frugalsense demo` and its options."""
    p = subparsers.add_parser(
        "demo", help="run a simulated water zone end to end on local services", description=__doc__.split("\n\n", 1)[1]
    )
    p.add_argument("--config", default=DEFAULT_CONFIG, help=f"gateway config (default {DEFAULT_CONFIG})")
    p.add_argument("--dir", default=DEFAULT_DIR, help=f"where services keep their data (default {DEFAULT_DIR})")
    p.add_argument("--fresh", action="store_true", help="simulate again even if the dataset exists")
    p.add_argument(
        "--keep",
        action="store_true",
        help="keep Mosquitto and InfluxDB running at the end (Ctrl-C stops them) to look with their CLIs",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo end to end on local services and report what landed in InfluxDB."""
    from gateway.commands.config_cmd import load_gateway_config

    config = load_gateway_config(args.config)  # validate first, as every command does
    root = Path(args.dir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    if not args.verbose:
        # The demo tells its own story; library chatter goes to the log file.
        _log_to_file(root / "demo.log")

    dataset_path = config.resolve_path(config.sources.replay.file)
    dataset = _dataset(dataset_path, fresh=args.fresh)
    meta = dataset.meta
    steps, sensors = dataset.values.shape

    from gateway.local_services.services import LocalServices

    say(f"[2/5] Starting a private Mosquitto and InfluxDB in {root}")
    with LocalServices(root / "services") as services:
        say(f"      mqtt://127.0.0.1:{services.mqtt_port}   {services.influx_url}")
        # A fresh database each run: the counts below are this run's, not the sum of every demo so far.
        services.influx_query(f'DROP DATABASE "{DATABASE}"')
        services.create_influx_database(DATABASE)
        summary, bridge = _stream(config, services, steps * len(config.sensors))
        say("[5/5] What InfluxDB holds now")
        ok = _report(services, summary, bridge, meta)
        ok = _air_site(config, services, root) and ok
        if args.keep:
            _keep_running(services)
    return 0 if ok else 1


def say(text: str) -> None:
    """Print one line of the demo's story at once (the log goes to a file)."""
    print(text, flush=True)


def _log_to_file(path: Path) -> None:
    root = logging.getLogger()
    for handler in root.handlers:
        if type(handler) is logging.StreamHandler:  # the console; other handlers (files, pytest) stay as they are
            handler.setLevel(logging.WARNING)
    handler = logging.FileHandler(path, mode="w")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def _dataset(path: Path, *, fresh: bool):
    from edge.datasets import DatasetError, ZoneDataset

    if path.exists() and not fresh:
        try:
            dataset = ZoneDataset.load(path)
            say(f"[1/5] Using the simulated zone in {path} (--fresh to simulate again)")
            return dataset
        except DatasetError as exc:
            say(f"[1/5] {path} is unusable ({exc}); simulating again")
    else:
        say("[1/5] Simulating two weeks of the EPANET Net3 zone with wntr (seeded; once, then cached)")
    from training.water.zone import simulate_zone

    dataset = simulate_zone(progress=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    dataset.save(path)
    return dataset


def _stream(config, services, expected_readings: int):
    from tqdm import tqdm

    from gateway.bridge.influx_writer import InfluxV1Writer
    from gateway.bridge.service import Bridge
    from gateway.device.runner import GatewayRunner
    from gateway.protocol.mqtt_client import MqttSettings

    say("[3/5] Starting the bridge (MQTT -> InfluxDB, acknowledged after each write)")
    writer = InfluxV1Writer(services.influx_url, DATABASE)
    bridge = Bridge(
        MqttSettings(services.mqtt_host, services.mqtt_port, client_id="frugalsense-demo-bridge"),
        writer,
        prefix=config.mqtt.topic_prefix,
    ).start()
    try:
        say(
            f"[4/5] Gateway {config.gateway} replays {expected_readings} readings"
            " through its detectors (MNF and learned) and MQTT"
        )
        runner = GatewayRunner.from_config(config, mqtt_host=services.mqtt_host, mqtt_port=services.mqtt_port)
        with tqdm(total=expected_readings, unit="reading", file=sys.stdout, leave=True) as bar:
            counter = {"n": 0}

            def tick(_reading):
                counter["n"] += 1
                if counter["n"] % 500 == 0:
                    bar.update(500)

            summary = runner.run(on_reading=tick)
            bar.update(counter["n"] % 500)
        for alert in summary.recent_alerts:
            say(f"      gateway: alert {alert.alert_id} {alert.state}")
        if not bridge.wait_idle(quiet_s=1.0, timeout_s=120):
            say("      the bridge was still busy after 120 s; counts below may be short")
    finally:
        bridge.stop()
    return summary, bridge


def _report(services, summary, bridge, meta) -> bool:
    from edge.contracts import ms_to_datetime
    from gateway.bridge import influx_points as P

    counts = {}
    field_of = {P.READING: "quality", P.DETECTION: "label", P.ALERT: "message", P.GATEWAY_STATUS: "state"}
    for measurement, field in field_of.items():
        answer = services.influx_query(f'SELECT count("{field}") FROM "{measurement}"', db=DATABASE)
        series = answer["results"][0].get("series", [])
        counts[measurement] = series[0]["values"][0][1] if series else 0
    for measurement, n in counts.items():
        say(f"      {measurement:<15} {n:>7} points")
    landed_ok = counts[P.READING] == summary.readings and summary.all_acknowledged
    say(
        f"      readings published {summary.readings}, in InfluxDB {counts[P.READING]}"
        f" -> {'all landed' if landed_ok else 'MISSING SOME'}; dead letters {sum(bridge.deadletters.values())}"
    )

    leak_start = meta.get("leak_start_ms")
    if leak_start is not None:
        say(
            f"      injected leak: node {meta['leak_node']}, {meta['leak_diameter_m'] * 100:.0f} cm hole, "
            f"~{meta['leak_mean_flow_lps']:.0f} L/s, from {ms_to_datetime(leak_start):%Y-%m-%d %H:%M} UTC"
        )
    answer = services.influx_query(
        'SELECT alert_id, message, x_excess_lps FROM "alert" WHERE "state" = \'raised\'', db=DATABASE
    )
    rows = answer["results"][0].get("series", [{}])[0].get("values", [])
    if not rows:
        say("      no leak alert in InfluxDB")
    for time_ms, alert_id, message, _excess in rows:
        delay = f", {(time_ms - leak_start) / 3_600_000:.1f} h after the leak began" if leak_start else ""
        say(f"      ALERT {alert_id} at {ms_to_datetime(time_ms):%Y-%m-%d %H:%M} UTC{delay}")
        say(f"            {message}")
    return landed_ok and bool(rows) == (leak_start is not None)


# ---- an air-quality site next to the water zone (docs/air-models.md) ---------------------

AIR_SITE, AIR_GATEWAY = "city-centre", "gw-air-demo"
AIR_SEED, AIR_DAYS, AIR_START = 21, 14, "2026-01-12"  # a seed with all four patterns and a few faults
AIR_SENSORS = {
    "PM25-sds": "pm25",
    "PM10-sds": "pm10",
    "PM25c-sds": "pm25_corrected",
    "NO2-node": "no2",
    "T-node": "temperature",
    "RH-node": "humidity",
    "WIND-met": "wind_speed",
    "CC-centre": "cell_count",
}
CALIBRATED_SENSOR = "pm25-cal"  # the virtual sensor of the calibration model, next to PM25-sds


def _air_config(water_config, services, dataset_path: Path, root: Path) -> dict:
    models = Path(__file__).resolve().parents[2] / "models"
    by_input = {q: sid for sid, q in AIR_SENSORS.items()}
    inputs = lambda names: {k: by_input[k] for k in names}  # noqa: E731
    return {
        "site": AIR_SITE,
        "gateway": AIR_GATEWAY,
        "timezone": "UTC",
        "sensors": [{"id": sid, "quantity": q, "driver": "replay", "column": q} for sid, q in AIR_SENSORS.items()],
        "sources": {"replay": {"file": str(dataset_path)}},
        "models": [
            {"name": "eaqi-centre", "type": "eaqi", "sensors": ["PM25c-sds", "NO2-node"]},
            # backend numpy: it runs everywhere (a 32-bit Pi too) and prints no runtime banner into the story.
            {
                "name": "air-pattern",
                "type": "air_pattern",
                "model_dir": str(models / "air-pattern"),
                "backend": "numpy",
                "sensors": inputs(("pm25", "pm10", "no2", "temperature", "humidity", "cell_count")),
            },
            {
                "name": "air-fault",
                "type": "sensor_fault",
                "model_dir": str(models / "air-fault"),
                "backend": "numpy",
                "sensors": inputs(("pm25", "pm10", "no2", "temperature", "humidity")),
            },
            {
                "name": "no2-virtual",
                "type": "no2_virtual",
                "model_dir": str(models / "air-no2-virtual"),
                "backend": "numpy",
                "sensors": inputs(("cell_count", "wind_speed", "temperature", "humidity")),
            },
            # the shipped co-location calibration (make train-air-calibration) applied to the raw SDS011
            {
                "name": CALIBRATED_SENSOR,
                "type": "calibration",
                "model_dir": str(models / "air-pm25-calibration"),
                "backend": "numpy",
                "inputs": inputs(("pm25", "humidity", "temperature")),
                "quantity": "pm25_calibrated",
            },
        ],
        "mqtt": {
            "host": services.mqtt_host,
            "port": services.mqtt_port,
            "topic_prefix": water_config.mqtt.topic_prefix,
        },
        "storage": {"data_dir": str(root / AIR_GATEWAY)},
    }


def _air_site(water_config, services, root: Path) -> bool:
    """Simulate an air site, replay it through the same runner, MQTT and bridge, and say what the models saw."""
    import numpy as np

    from edge.contracts import ms_to_datetime
    from gateway.bridge.influx_writer import InfluxV1Writer
    from gateway.bridge.service import Bridge
    from gateway.config import GatewayConfig
    from gateway.device.runner import GatewayRunner
    from gateway.protocol.mqtt_client import MqttSettings
    from training.air.sensors import FAULTS
    from training.air.simulation import PATTERNS, simulate_air_site

    site = simulate_air_site(days=AIR_DAYS, seed=AIR_SEED, start=AIR_START)
    path = site.to_dataset().save(root / "air-site.npz")
    config = GatewayConfig.model_validate(_air_config(water_config, services, path, root))
    expected = len(site.time_ms) * len(AIR_SENSORS)
    say(
        f"[+]   Air-quality site {AIR_SITE} next to the zone: {AIR_DAYS} simulated days (seed {AIR_SEED}), "
        f"{expected} readings through the same runner, MQTT and bridge"
    )
    bridge = Bridge(
        MqttSettings(services.mqtt_host, services.mqtt_port, client_id="frugalsense-demo-air-bridge"),
        InfluxV1Writer(services.influx_url, DATABASE),
        prefix=config.mqtt.topic_prefix,
    ).start()
    try:
        summary = GatewayRunner.from_config(config, mqtt_host=services.mqtt_host, mqtt_port=services.mqtt_port).run()
        bridge.wait_idle(quiet_s=1.0, timeout_s=120)
    finally:
        bridge.stop()

    def rows(query):
        answer = services.influx_query(query, db=DATABASE)
        return answer["results"][0].get("series", [{}])[0].get("values", [])

    where = f"\"site\" = '{AIR_SITE}' AND \"gateway\" = '{AIR_GATEWAY}'"
    landed = rows(f'SELECT count("quality") FROM "reading" WHERE {where}')
    landed = landed[0][1] if landed else 0
    landed_ok = landed == summary.readings and summary.all_acknowledged
    derived = summary.readings - expected  # the calibration model's readings, published next to the sensors'
    say(
        f"      readings published {summary.readings} ({expected} measured + {derived} calibrated),"
        f" in InfluxDB {landed} -> {'all landed' if landed_ok else 'MISSING SOME'}"
    )

    truth = {
        int(t): PATTERNS[c] for t, c in zip(site.hour_ms, site.pattern, strict=True)
    }  # hour_ms: one per pattern hour
    hours = rows(f'SELECT label, window_start_ms FROM "detection" WHERE {where} AND "kind" = \'air_pattern\'')
    judged = [(label, truth.get(int(start))) for _, label, start in hours if label != "insufficient_data"]
    counts = {p: sum(label == p for label, _ in judged) for p in PATTERNS}
    agree = np.mean([label == true for label, true in judged]) if judged else 0.0
    say(
        "      air pattern per hour: "
        + ", ".join(f"{p} {n}" for p, n in counts.items())
        + f"; agrees with the simulation on {agree:.0%} of {len(judged)} hours"
    )

    hourly = site.truth["no2"].reshape(-1, 6).mean(axis=1)
    index = {int(t): i for i, t in enumerate(site.hour_ms)}
    virtual = [
        (score, hourly[index[int(start)]])
        for _, score, start in rows(
            f'SELECT score, window_start_ms FROM "detection" WHERE {where} AND "kind" = \'no2_virtual\' '
            "AND \"label\" != 'insufficient_data'"
        )
        if int(start) in index
    ]
    if virtual:
        est, true = np.array(virtual).T
        r2 = 1 - np.sum((true - est) ** 2) / np.sum((true - true.mean()) ** 2)
        say(
            f"      NO2 virtual sensor (phones per antenna + weather): R2 {r2:.2f} against the true hourly NO2 "
            f"over {len(est)} hours, mean {est.mean():.0f} ug/m3"
        )

    _say_calibration(site, rows(f'SELECT value FROM "reading" WHERE {where} AND "sensor" = \'{CALIBRATED_SENSOR}\''))

    injected = []
    for column, codes in site.faults.items():
        sensor = next(s for s, q in AIR_SENSORS.items() if q == column)
        starts = np.flatnonzero((codes > 0) & np.r_[True, codes[1:] != codes[:-1]])
        for start in starts:
            length = int(np.argmax(codes[start:] != codes[start])) or len(codes) - start
            if FAULTS[codes[start]] in ("stuck", "fan_failure") and length >= 6:
                injected.append(
                    f"{sensor} {FAULTS[codes[start]]} {ms_to_datetime(int(site.time_ms[start])):%m-%d %H:%M}"
                )
    alerts = rows(
        f'SELECT alert_id, label FROM "alert" WHERE {where} AND "state" = \'raised\' AND "kind" = \'sensor_fault\''
    )
    say(f"      injected stuck or fan faults of 1 h or more: {', '.join(injected) or 'none'}")
    say(
        f"      sensor-fault alerts raised: {len(alerts)} "
        f"({', '.join(sorted({f'{a} {label}' for _, a, label in alerts if label != 'dropout'})) or 'no stuck or fan'}"
        f"{'; and dropouts' if any(label == 'dropout' for *_, label in alerts) else ''})"
    )
    eaqi = rows(f'SELECT label FROM "alert" WHERE {where} AND "state" = \'raised\' AND "kind" = \'aqi\'')
    say(
        f"      EAQI station index (corrected PM2.5, NO2): {len(eaqi)} alerts raised"
        + (f" ({', '.join(sorted({label for _, label in eaqi}))})" if eaqi else "")
    )
    return landed_ok


def _say_calibration(site, landed: list) -> None:
    """One line: R2 of the calibrated PM2.5 found in InfluxDB against the true PM2.5, next to the raw sensor's."""
    import numpy as np

    index = {int(t): i for i, t in enumerate(site.time_ms)}
    pairs = [(value, index[int(t)]) for t, value in landed if int(t) in index and value is not None]
    if not pairs:
        say(f"      PM2.5 calibration ({CALIBRATED_SENSOR}): NO CALIBRATED READING IN InfluxDB")
        return
    value, i = np.array(pairs).T
    i = i.astype(int)
    clean = site.faults["pm25"][i] == 0  # scored where the SDS011 measured (no injected fault): what it can fix
    true, raw, value = site.truth["pm25"][i][clean], site.sensors["pm25"][i][clean], value[clean]

    def r2(est):
        ok = np.isfinite(est)
        return 1 - np.sum((true[ok] - est[ok]) ** 2) / np.sum((true[ok] - true[ok].mean()) ** 2)

    say(
        f"      PM2.5 calibration ({CALIBRATED_SENSOR}, model type calibration): {len(pairs)} readings in InfluxDB, "
        f"R2 {r2(value):.2f} against the true PM2.5 where the SDS011 had no fault (raw SDS011 R2 {r2(raw):.2f})"
    )


def _keep_running(services) -> None:
    say("")
    say("Services keep running; look with their own clients, then Ctrl-C:")
    say(f"  mosquitto_sub -h 127.0.0.1 -p {services.mqtt_port} -v -t 'frugalsense/#'")
    host, port = services.influx_url.rsplit("//", 1)[1].split(":")
    say(f"  influx -host {host} -port {port} -database {DATABASE} -execute 'SHOW MEASUREMENTS'")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    say("stopping services")
