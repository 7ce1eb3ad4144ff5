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
    p = subparsers.add_parser("demo", help="run a simulated water zone end to end on local services",
                              description=__doc__.split("\n\n", 1)[1])
    p.add_argument("--config", default=DEFAULT_CONFIG, help=f"gateway config (default {DEFAULT_CONFIG})")
    p.add_argument("--dir", default=DEFAULT_DIR, help=f"where services keep their data (default {DEFAULT_DIR})")
    p.add_argument("--fresh", action="store_true", help="simulate again even if the dataset exists")
    p.add_argument("--keep", action="store_true",
                   help="keep Mosquitto and InfluxDB running at the end (Ctrl-C stops them) to look with their CLIs")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
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

    from gateway.localservices import LocalServices

    say(f"[2/5] Starting a private Mosquitto and InfluxDB in {root}")
    with LocalServices(root / "services") as services:
        say(f"      mqtt://127.0.0.1:{services.mqtt_port}   {services.influx_url}")
        services.create_influx_database(DATABASE)
        summary, bridge = _stream(config, services, steps * len(config.sensors))
        say("[5/5] What InfluxDB holds now")
        ok = _report(services, summary, bridge, meta)
        if args.keep:
            _keep_running(services)
    return 0 if ok else 1


def say(text: str) -> None:
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
    from training.water_zone import simulate_zone

    dataset = simulate_zone(progress=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    dataset.save(path)
    return dataset


def _stream(config, services, expected_readings: int):
    from tqdm import tqdm

    from gateway.bridge import Bridge
    from gateway.influx_writer import InfluxV1Writer
    from gateway.publisher import MqttSettings
    from gateway.runner import GatewayRunner

    say("[3/5] Starting the bridge (MQTT -> InfluxDB, acknowledged after each write)")
    writer = InfluxV1Writer(services.influx_url, DATABASE)
    bridge = Bridge(MqttSettings(services.mqtt_host, services.mqtt_port, client_id="frugalsense-demo-bridge"),
                    writer, prefix=config.mqtt.topic_prefix).start()
    try:
        say(f"[4/5] Gateway {config.gateway} replays {expected_readings} readings through the detector and MQTT")
        runner = GatewayRunner.from_config(config, mqtt_host=services.mqtt_host, mqtt_port=services.mqtt_port)
        with tqdm(total=expected_readings, unit="reading", file=sys.stdout, leave=True) as bar:
            counter = {"n": 0}

            def tick(_reading):
                counter["n"] += 1
                if counter["n"] % 500 == 0:
                    bar.update(500)

            summary = runner.run(on_reading=tick)
            bar.update(counter["n"] % 500)
        for alert in summary.alerts:
            say(f"      gateway: alert {alert.alert_id} {alert.state}")
        if not bridge.wait_idle(quiet_s=1.0, timeout_s=120):
            say("      the bridge was still busy after 120 s; counts below may be short")
    finally:
        bridge.stop()
    return summary, bridge


def _report(services, summary, bridge, meta) -> bool:
    from edge.contracts import ms_to_datetime
    from gateway import influx_points as P

    counts = {}
    field_of = {P.READING: "quality", P.DETECTION: "label", P.ALERT: "message", P.GATEWAY_STATUS: "state"}
    for measurement, field in field_of.items():
        answer = services.influx_query(f'SELECT count("{field}") FROM "{measurement}"', db=DATABASE)
        series = answer["results"][0].get("series", [])
        counts[measurement] = series[0]["values"][0][1] if series else 0
    for measurement, n in counts.items():
        say(f"      {measurement:<15} {n:>7} points")
    landed_ok = counts[P.READING] == summary.readings and summary.all_acknowledged
    say(f"      readings published {summary.readings}, in InfluxDB {counts[P.READING]}"
        f" -> {'all landed' if landed_ok else 'MISSING SOME'}; dead letters {sum(bridge.deadletters.values())}")

    leak_start = meta.get("leak_start_ms")
    if leak_start is not None:
        say(f"      injected leak: node {meta['leak_node']}, {meta['leak_diameter_m'] * 100:.0f} cm hole, "
            f"~{meta['leak_mean_flow_lps']:.0f} L/s, from {ms_to_datetime(leak_start):%Y-%m-%d %H:%M} UTC")
    answer = services.influx_query('SELECT alert_id, message, x_excess_lps FROM "alert" WHERE "state" = \'raised\'',
                                   db=DATABASE)
    rows = answer["results"][0].get("series", [{}])[0].get("values", [])
    if not rows:
        say("      no leak alert in InfluxDB")
    for time_ms, alert_id, message, _excess in rows:
        delay = f", {(time_ms - leak_start) / 3_600_000:.1f} h after the leak began" if leak_start else ""
        say(f"      ALERT {alert_id} at {ms_to_datetime(time_ms):%Y-%m-%d %H:%M} UTC{delay}")
        say(f"            {message}")
    return landed_ok and bool(rows) == (leak_start is not None)


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
