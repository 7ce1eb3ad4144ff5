"""Measure how bridge workers sharing one subscription scale: throughput and end-to-end lag.

Runs a private Mosquitto and InfluxDB 1.6 (LocalServices), then for 1 and 2 workers
(separate processes, one shared subscription ``$share/<group>/...``):

* drain: the broker holds a backlog of messages for the workers' persistent sessions;
  the workers connect and write it all. Messages/s and points/s = backlog / time from
  the first message taken to the last point written: the bridge's capacity.
* live: a publisher sends at a fixed rate (below the one-worker capacity) while the
  workers run. Lag = time a point is written minus the reading's timestamp, which the
  publisher sets to the moment it publishes (the readings of one message are 1 ms
  apart, so a lag includes up to ``batch - 1`` ms of that spacing).

Every run checks that InfluxDB holds every point (``lost``) and that no reading was
written twice (``duplicated``: reading points the workers wrote minus points sent; InfluxDB
itself would hide a duplicate by overwriting it). ``per_worker_messages`` also counts the
gateways' status messages, retained ones included. ``cpu_s`` says where the CPU went
(broker, database, bridge workers; the publisher is the rest), since all share the cores here.
Writes ``docs/scaling.json`` and the measured table in ``docs/scaling.md`` (between the
``bench:start``/``bench:end`` markers); ``--quick`` runs a smaller workload.

    .venv/bin/python scripts/bench_bridge_scale.py [--quick] [--out docs/scaling.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing as mp
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from edge.contracts import Reading
from gateway.bridge.influx_writer import InfluxV1Writer
from gateway.bridge.service import Bridge
from gateway.device.publisher import GatewayPublisher
from gateway.local_services.services import LocalServices
from gateway.protocol import topics as T
from gateway.protocol.mqtt_client import MqttSettings

ROOT = Path(__file__).resolve().parent.parent

SITE = "bench"
SENSORS_PER_GATEWAY = 10
# The backlog must fit in the workers' sessions: Mosquitto keeps 1000 queued messages per
# offline client by default and silently drops the rest (docs/scaling.md).
BROKER_CONFIG = ["max_queued_messages 0", "max_inflight_messages 100"]


class TimedWriter:
    """Wraps the real writer; notes when each point was written and how old its reading was."""

    def __init__(self, inner: InfluxV1Writer, lags: bool = True):
        self.inner, self.api, self.lags = inner, inner.api, lags
        self.lags_ms: list[int] = []
        self.reading_points = 0
        self.first_write_ms = self.last_write_ms = 0

    def write(self, lines: list[str]) -> None:
        self.inner.write(lines)
        now = int(time.time() * 1000)
        self.first_write_ms = self.first_write_ms or now
        self.last_write_ms = now
        # Counted in C (map), so the worker's rate pays as little as possible for the bookkeeping.
        self.reading_points += sum(map(str.startswith, lines, itertools.repeat("reading,")))
        if self.lags:  # the live phase; a drain has no use for lags, so its rate does not pay for them
            self.lags_ms += [now - int(line.rsplit(" ", 1)[1]) for line in lines if line.startswith("reading,")]

    def ensure_database(self) -> None:
        self.inner.ensure_database()

    def close(self) -> None:
        self.inner.close()


def worker(
    mqtt_port: int,
    influx_url: str,
    db: str,
    prefix: str,
    group: str,
    client_id: str,
    ready,
    stop,
    results,
    lags: bool = True,
) -> None:
    """One bridge worker process: run until ``stop`` is set, then report what it did."""
    writer = TimedWriter(InfluxV1Writer(influx_url, db), lags)
    connect_ms = int(time.time() * 1000)
    bridge = Bridge(MqttSettings("127.0.0.1", mqtt_port, client_id=client_id), writer, prefix=prefix, share_group=group)
    first_message_ms, first_message_cpu_s = [], []
    on_message = bridge.client.on_message

    def noting_first(client, userdata, message):  # the drain rate counts from the first message in
        if not first_message_ms:
            first_message_ms.append(int(time.time() * 1000))
            first_message_cpu_s.append(time.process_time())
        on_message(client, userdata, message)

    bridge.client.on_message = noting_first
    bridge.start(timeout_s=30)
    ready.put(client_id)
    stop.wait()
    bridge.wait_idle(quiet_s=0.5, timeout_s=120)
    bridge.stop()
    cpu_s = time.process_time()
    results.put(
        {
            "client_id": client_id,
            "cpu_s": cpu_s,
            "working_cpu_s": cpu_s - first_message_cpu_s[0] if first_message_cpu_s else 0.0,
            "connect_ms": connect_ms,
            "first_message_ms": first_message_ms[0] if first_message_ms else None,
            "messages": bridge.counters["messages_written"],
            "reading_points": writer.reading_points,
            "first_write_ms": writer.first_write_ms,
            "last_write_ms": writer.last_write_ms,
            "lags_ms": writer.lags_ms,
        }
    )


class Workers:
    """N worker processes with fixed client ids on one share group."""

    def __init__(self, ctx, services: LocalServices, db: str, prefix: str, count: int, lags: bool = True):
        self.ready, self.results, self.stop_event = ctx.Queue(), ctx.Queue(), ctx.Event()
        self.processes = [
            ctx.Process(
                target=worker,
                args=(
                    services.mqtt_port,
                    services.influx_url,
                    db,
                    prefix,
                    f"{prefix}-group",
                    f"{prefix}-w{w}",
                    self.ready,
                    self.stop_event,
                    self.results,
                    lags,
                ),
            )
            for w in range(count)
        ]

    def start(self) -> Workers:
        for p in self.processes:
            p.start()
        for _ in self.processes:
            self.ready.get(timeout=60)
        return self

    def finish(self) -> list[dict]:
        self.stop_event.set()
        reports = [self.results.get(timeout=180) for _ in self.processes]
        for p in self.processes:
            p.join(30)
        return reports


def publish(
    services: LocalServices, prefix: str, gateways: int, messages_per_sensor: int, batch: int, rate_msgs_s: float | None
) -> int:
    """Publish readings of ``gateways`` x 10 sensors, round robin, at ``rate_msgs_s`` (None: as fast as acked)."""
    pubs = [
        GatewayPublisher(
            T.Topics(prefix, SITE, f"gw-{g:03d}"),
            MqttSettings("127.0.0.1", services.mqtt_port, client_id=f"{prefix}-gw-{g:03d}"),
            readings_batch=batch,
            max_inflight=200,
        ).connect()
        for g in range(gateways)
    ]
    last_ms: dict[tuple[int, int], int] = {}
    sent, started = 0, time.monotonic()
    for _ in range(messages_per_sensor):
        for s in range(SENSORS_PER_GATEWAY):
            for g, pub in enumerate(pubs):
                if rate_msgs_s:
                    delay = started + sent / rate_msgs_s - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                now = int(time.time() * 1000)
                # Newest reading at the publish moment; never overlapping the previous batch.
                end = max(now, last_ms.get((g, s), 0) + batch)
                last_ms[(g, s)] = end
                for j in range(batch):
                    pub.add_reading(
                        Reading(end - (batch - 1 - j), SITE, f"gw-{g:03d}", f"F-{s}", "flow", float(j), "L/s")
                    )
                sent += 1
    for pub in pubs:
        assert pub.close(timeout_s=120), "the broker did not acknowledge every message"
    return sent


def service_cpu_s(services: LocalServices) -> dict[str, float]:
    """CPU seconds used so far by the broker and the database (from /proc: Linux only)."""
    ticks = os.sysconf("SC_CLK_TCK")
    out = {}
    for name in ("mosquitto", "influxdb"):
        fields = Path(f"/proc/{services.info(name).pid}/stat").read_text().rsplit(")", 1)[1].split()
        out[name] = (int(fields[11]) + int(fields[12])) / ticks  # utime + stime
    return out


def cpu_split(before: dict[str, float], after: dict[str, float], reports: list[dict]) -> dict[str, float]:
    """CPU-seconds per process over a run: each service, the bridge workers, and the workers once working."""
    split = {name: round(after[name] - before[name], 2) for name in before}
    split["bridge_workers"] = round(sum(r["cpu_s"] for r in reports), 2)
    # from each worker's first message on: without interpreter start-up and imports
    split["bridge_workers_working"] = round(sum(r["working_cpu_s"] for r in reports), 3)
    return split


def points_in_db(services: LocalServices, db: str) -> int:
    """How many reading points database ``db`` holds."""
    answer = services.influx_query("SELECT count(value) FROM reading", db=db)
    series = answer["results"][0].get("series", [])
    return series[0]["values"][0][1] if series else 0


def percentile(values: list[int], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values``; the one value when there is only one."""
    return (
        float(statistics.quantiles(values, n=1000, method="inclusive")[int(q * 10) - 1])
        if len(values) > 1
        else float(values[0])
    )


def run_drain(ctx, services, workers: int, gateways: int, per_sensor: int, batch: int, tag: str) -> dict:
    """Publish a backlog, then let ``workers`` bridge workers drain it: the sustained rate, losses, CPU."""
    prefix = db = f"drain{workers}{tag}"
    services.create_influx_database(db)
    Workers(ctx, services, db, prefix, workers).start().finish()  # sessions now exist, workers gone
    sent = publish(services, prefix, gateways, per_sensor, batch, None)
    cpu_before = service_cpu_s(services)
    reports = Workers(ctx, services, db, prefix, workers, lags=False).start().finish()
    cpu = cpu_split(cpu_before, service_cpu_s(services), reports)
    # From the first message taken (connecting and subscribing are start-up, not throughput)
    # to the last point written.
    start = min(r["first_message_ms"] or r["connect_ms"] for r in reports)
    end = max(r["last_write_ms"] for r in reports)
    seconds = (end - start) / 1000
    return {
        "phase": "drain",
        "workers": workers,
        "messages": sent,
        "points": sent * batch,
        "seconds": round(seconds, 2),
        "msgs_per_s": round(sent / seconds),
        "points_per_s": round(sent * batch / seconds),
        "per_worker_messages": [r["messages"] for r in reports],
        "cpu_s": cpu,
        "lost": sent * batch - points_in_db(services, db),
        "duplicated": sum(r["reading_points"] for r in reports) - sent * batch,
    }


def run_live(ctx, services, workers: int, gateways: int, per_sensor: int, batch: int, rate: float, tag: str) -> dict:
    """Offer ``rate`` messages/s while ``workers`` bridge workers run: end-to-end lag, losses, CPU."""
    prefix = db = f"live{workers}{tag}"
    services.create_influx_database(db)
    pool = Workers(ctx, services, db, prefix, workers).start()
    cpu_before = service_cpu_s(services)
    started = time.monotonic()
    sent = publish(services, prefix, gateways, per_sensor, batch, rate)
    seconds = time.monotonic() - started
    reports = pool.finish()
    cpu = cpu_split(cpu_before, service_cpu_s(services), reports)
    lags = [lag for r in reports for lag in r["lags_ms"]]
    return {
        "phase": "live",
        "workers": workers,
        "offered_msgs_per_s": rate,
        "messages": sent,
        "points": sent * batch,
        "seconds": round(seconds, 2),
        "msgs_per_s": round(sent / seconds),
        "points_per_s": round(sent * batch / seconds),
        "lag_ms_p50": percentile(lags, 50),
        "lag_ms_p99": percentile(lags, 99),
        "lag_ms_max": max(lags),
        "per_worker_messages": [r["messages"] for r in reports],
        "cpu_s": cpu,
        "lost": sent * batch - points_in_db(services, db),
        "duplicated": sum(r["reading_points"] for r in reports) - sent * batch,
    }


# A reference field gateway: 10 sensors read every 10 s is 1 point/s.
REFERENCE_GATEWAY_POINTS_S = 1.0
# Plan a worker at half its measured capacity, to catch up after an outage.
HEADROOM = 0.5
MARK_START, MARK_END = "<!-- bench:start -->", "<!-- bench:end -->"


def fleet_sizing(runs: list[dict]) -> dict:
    """What the runs say about sizing: gateways one worker carries, and the gain of each added worker."""
    one = next(r for r in runs if r["phase"] == "drain" and r["workers"] == 1)
    return {
        "reference_gateway_points_per_s": REFERENCE_GATEWAY_POINTS_S,
        "headroom": HEADROOM,
        "gateways_per_worker": int(one["points_per_s"] * HEADROOM / REFERENCE_GATEWAY_POINTS_S),
    }


def markdown_table(result: dict) -> str:
    """The runs as the markdown table docs/scaling.md shows."""
    rows = [
        "| phase | workers | messages | points | msgs/s | points/s | lag p50 ms | lag p99 ms | per worker "
        "| CPU s (broker / InfluxDB / workers) | lost | duplicated |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["runs"]:
        cpu = r["cpu_s"]
        rows.append(
            f"| {r['phase']} | {r['workers']} | {r['messages']} | {r['points']} | {r['msgs_per_s']} "
            f"| {r['points_per_s']} | {r.get('lag_ms_p50', '-')} | {r.get('lag_ms_p99', '-')} "
            f"| {' / '.join(map(str, r['per_worker_messages']))} "
            f"| {cpu['mosquitto']} / {cpu['influxdb']} / {cpu['bridge_workers']} | {r['lost']} "
            f"| {r['duplicated']} |"
        )
    sizing = result["fleet"]
    rows += [
        "",
        f"Machine: {result['machine']['cpus']} CPUs, Python {result['machine']['python']}; "
        f"{result['services']}. Workload: {result['workload']}. "
        f"Live phase offered {result['runs'][-1]['offered_msgs_per_s']} messages/s.",
        "",
        f"Sizing from these figures: one worker at {int(sizing['headroom'] * 100)}% of its drain rate "
        f"carries **{sizing['gateways_per_worker']} reference gateways** "
        f"({sizing['reference_gateway_points_per_s']:g} point/s each).",
    ]
    return "\n".join(rows)


def update_markdown(path: Path, table: str) -> None:
    """Replace the generated table in ``path`` (between its markers), if the file exists."""
    if not path.exists():
        return
    text = path.read_text()
    if MARK_START not in text or MARK_END not in text:
        print(f"{path}: no {MARK_START} ... {MARK_END} markers; table not written", file=sys.stderr)
        return
    head, rest = text.split(MARK_START, 1)
    tail = rest.split(MARK_END, 1)[1]
    path.write_text(f"{head}{MARK_START}\n{table}\n{MARK_END}{tail}")


def main() -> int:
    """Measure the drain and live phases for each worker count; write the JSON result (and the docs table)."""
    global SENSORS_PER_GATEWAY  # --sensors sets it for publish()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small workload (about a minute)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "scaling.json")
    parser.add_argument("--gateways", type=int, default=20)
    parser.add_argument("--sensors", type=int, default=SENSORS_PER_GATEWAY, help="sensors per gateway")
    parser.add_argument("--drain-per-sensor", type=int, default=None, help="backlog messages per sensor")
    args = parser.parse_args()
    SENSORS_PER_GATEWAY = args.sensors
    gateways, batch = args.gateways, 20
    drain_per_sensor = args.drain_per_sensor or (10 if args.quick else 40)
    live_seconds = 5 if args.quick else 15
    ctx = mp.get_context("spawn")
    runs = []
    with (
        tempfile.TemporaryDirectory(prefix="bench-bridge-") as tmp,
        LocalServices(Path(tmp), mosquitto_extra_config=BROKER_CONFIG) as services,
    ):
        tag = str(os.getpid())
        for workers in (1, 2):
            runs.append(run_drain(ctx, services, workers, gateways, drain_per_sensor, batch, tag))
            print(json.dumps({k: v for k, v in runs[-1].items()}), flush=True)
        # Offered load: half of what one worker drained, so lag shows the pipeline, not a queue.
        rate = round(runs[0]["msgs_per_s"] * 0.5)
        per_sensor = max(1, round(rate * live_seconds / (gateways * SENSORS_PER_GATEWAY)))
        for workers in (1, 2):
            runs.append(run_live(ctx, services, workers, gateways, per_sensor, batch, rate, tag))
            print(json.dumps(runs[-1]), flush=True)
    result = {
        "what": "bridge workers on one shared MQTT subscription, InfluxDB 1.6 v1 writes; see docs/scaling.md",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "services": "Mosquitto 2.0 and InfluxDB 1.6 on the same machine as the workers and the publisher",
        "workload": {
            "gateways": gateways,
            "sensors_per_gateway": SENSORS_PER_GATEWAY,
            "readings_per_message": batch,
            "quick": args.quick,
        },
        "runs": runs,
    }
    result["fleet"] = fleet_sizing(runs)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    update_markdown(args.out.with_suffix(".md"), markdown_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
