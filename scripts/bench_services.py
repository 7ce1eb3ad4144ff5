"""The benchmark's figures measured against real Mosquitto and InfluxDB: pipeline, bridge, footprint, fleet.

Sections ``pipeline``, ``bridge``, ``footprint`` and ``fleet`` of ``python -m scripts.bench``.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from scripts import bench_bridge_scale, bench_pipeline
from scripts.bench_record import figure, round_sig, side

ROOT = Path(__file__).resolve().parent.parent

# ---- 2. pipeline ------------------------------------------------------------------------

REPEAT = 10  # how many times over the publishers alone send the gateway's messages


def pipeline_figures(services, quick: bool) -> list[dict]:
    """The gateway pipeline (pty bytes to Mosquitto) against mosquitto_pub and the publisher alone."""
    lines, reps = (3000, 2) if quick else (15000, 3)
    g_rates, c_rates, cpu_rates, alone_rates = [], [], [], []
    last = None
    for _ in range(reps):
        g = bench_pipeline.gateway_rate(services.mqtt_port, lines)
        messages = g.pop("payloads")
        # The publishers alone get the gateway's messages REPEAT times over: 2,400 messages take
        # mosquitto_pub about 0.1-0.2 s, and its start and its wait for the last PUBACK (which
        # made its rate jump between 570k and 1.1M readings/s) would otherwise be most of it.
        c = bench_pipeline.c_client_rate(services.mqtt_port, messages * REPEAT, g["readings"] * REPEAT)
        alone = bench_pipeline.publisher_alone_rate(services.mqtt_port, messages * REPEAT, g["readings"] * REPEAT)
        g_rates.append(g["readings_per_s"])
        cpu_rates.append(g["readings"] / g["cpu_s"])
        c_rates.append(c["readings_per_s"])
        alone_rates.append(alone["readings_per_s"])
        last = (g, c)
        print(
            f"pipeline: gateway {g['readings_per_s']:.0f}/s, C client {c['readings_per_s']:.0f}/s, "
            f"outbox + MQTT alone {alone['readings_per_s']:.0f}/s",
            file=sys.stderr,
            flush=True,
        )
    g, c = last
    ratio = statistics.median(g_rates) / statistics.median(c_rates)
    stages = {k: round_sig(v) for k, v in bench_pipeline.stage_costs().items()}
    return [
        figure(
            "gateway pipeline: pty bytes -> parse -> windows -> features -> inference -> outbox -> Mosquitto",
            g_rates,
            "readings/s",
            target=">= 50,000 readings/s on one core and >= 50% of the C client",
            met=statistics.median(g_rates) >= 50_000 and ratio >= 0.5,
            comparison={
                "c_client": side(
                    f"mosquitto_pub -l -q 1, the same {c['messages'] // REPEAT} payloads "
                    f"{REPEAT} times over, same broker",
                    c_rates,
                    "readings/s",
                ),
                "publisher_alone": side(
                    "the gateway's outbox (SQLite, fsync) and MQTT sender alone, "
                    f"the same messages {REPEAT} times over, same core",
                    alone_rates,
                    "readings/s",
                ),
                "gateway_cpu_readings_per_cpu_s": round_sig(statistics.median(cpu_rates)),
                "readings_per_message": round(g["readings"] * REPEAT / c["messages"], 1),
                "stage_cpu_us_per_reading": stages,
                "detections": g["detections"],
                "all_acknowledged": g["all_acknowledged"],
            },
            ratio=ratio,
            note=f"{g['readings']} readings ({lines} lines of 8 values) per run; the publishers "
            f"alone send them {REPEAT} times over; "
            "ratio = gateway / C client",
        ),
    ]


# ---- 3. bridge --------------------------------------------------------------------------


def _raw_post(url: str, db: str, lines: list[str], chunk: int = 5000) -> float:
    t0 = time.perf_counter()
    for i in range(0, len(lines), chunk):
        body = "\n".join(lines[i : i + chunk]).encode()
        req = urllib.request.Request(f"{url}/write?db={db}&precision=ms", data=body, method="POST")
        with urllib.request.urlopen(req, timeout=60) as r:
            if r.status != 204:
                raise RuntimeError(f"InfluxDB answered {r.status} to a bulk write")
    return time.perf_counter() - t0


def bridge_figures(services, quick: bool) -> list[dict]:
    """The bridge draining Mosquitto into InfluxDB against a raw bulk line-protocol POST."""
    from influxdb_client import WritePrecision

    from edge.contracts import Reading
    from gateway.bridge.influx_points import reading_point
    from gateway.config.schema.sections import MqttConfig

    # Messages as gateways send them: readings_batch readings of one sensor (the config default).
    batch = MqttConfig.model_fields["readings_batch"].default
    gateways, per_sensor, reps = (5, 4, 2) if quick else (20, 40, 5)
    ctx = mp.get_context("spawn")
    bridge, raw = [], []
    bridge_cpu, influx_cpu, raw_influx_cpu = [], [], []
    points = gateways * bench_bridge_scale.SENSORS_PER_GATEWAY * per_sensor * batch

    def drain(tag: str) -> None:
        d = bench_bridge_scale.run_drain(ctx, services, 1, gateways, per_sensor, batch, tag)
        if d["lost"] or d["duplicated"] or d["points"] != points:  # a rate over points that did not land is no rate
            raise RuntimeError(
                f"bridge drain lost {d['lost']} and duplicated {d['duplicated']} of {d['points']} "
                "points: the figure would be wrong"
            )
        bridge.append(d["points_per_s"])
        bridge_cpu.append(d["cpu_s"]["bridge_workers_working"] / points * 1e6)
        influx_cpu.append(d["cpu_s"]["influxdb"] / points * 1e6)

    def post(tag: str) -> None:
        # The same points (same series, same count) as the bridge writes, in one bulk POST per 5,000 lines.
        t = int(time.time() * 1000) - points
        lines = [
            reading_point(
                Reading(
                    t + i,
                    bench_bridge_scale.SITE,
                    f"gw-{i % gateways:03d}",
                    f"F-{(i // gateways) % bench_bridge_scale.SENSORS_PER_GATEWAY}",
                    "flow",
                    float(i % batch),
                    "L/s",
                )
            ).to_line_protocol(WritePrecision.MS)
            for i in range(points)
        ]
        db = f"raw{tag}"
        services.create_influx_database(db)
        before = bench_bridge_scale.service_cpu_s(services)
        raw.append(points / _raw_post(services.influx_url, db, lines))
        raw_influx_cpu.append(
            (bench_bridge_scale.service_cpu_s(services)["influxdb"] - before["influxdb"]) / points * 1e6
        )

    for rep in range(reps):
        # Back to back, alternating which goes first: InfluxDB's background work (cache snapshots,
        # compactions) lands in either side's window, and each pair shares the machine's state.
        tag = f"{os.getpid()}r{rep}"
        for step in (drain, post) if rep % 2 == 0 else (post, drain):
            step(tag)
        print(f"bridge: {bridge[-1]:.0f} points/s, raw POST {raw[-1]:.0f} points/s", file=sys.stderr, flush=True)
    ratio = statistics.median(b / r for b, r in zip(bridge, raw, strict=True))
    return [
        figure(
            "bridge: Mosquitto -> InfluxDB 1.6 (one worker, backlog drain)",
            bridge,
            "points/s",
            target=">= 70% of a raw bulk line-protocol POST",
            met=ratio >= 0.7,
            comparison={
                "raw_bulk_post": side("raw line-protocol POST, 5,000 lines each, same points", raw, "points/s"),
                "pair_ratios": [round_sig(b / r) for b, r in zip(bridge, raw, strict=True)],
                "bridge_cpu_us_per_point": round_sig(statistics.median(bridge_cpu)),
                "influxdb_cpu_us_per_point": round_sig(statistics.median(influx_cpu)),
                "influxdb_cpu_us_per_point_raw_post": round_sig(statistics.median(raw_influx_cpu)),
            },
            ratio=ratio,
            note=f"{points} points per run, {batch} readings per message (the gateway's "
            f"default readings_batch); ratio = median over {reps} back-to-back pairs of "
            "bridge / raw (the pairs alternate which runs first)",
        )
    ]


# ---- 4. footprint -----------------------------------------------------------------------


def footprint_figures(services, quick: bool) -> list[dict]:
    """Peak RSS, CPU-seconds per site-hour and cold start of the gateway, per inference backend."""
    from edge.runtime import available_backends

    hours, reps = (1, 1) if quick else (3, 3)
    backends = [b for b in ("litert", "onnxruntime", "numpy") if b in available_backends()]
    runs: dict[str, list[dict]] = {b: [] for b in backends}
    for _ in range(reps):
        for b in backends:  # interleaved
            spawned = time.time()
            r = subprocess.run(
                [
                    sys.executable,
                    str(ROOT / "scripts" / "bench_footprint.py"),
                    "--mqtt-port",
                    str(services.mqtt_port),
                    "--backend",
                    b,
                    "--hours",
                    str(hours),
                    "--spawned-at",
                    repr(spawned),
                ],
                capture_output=True,
                text=True,
                timeout=600,
            )
            if r.returncode != 0:
                raise RuntimeError(f"footprint run ({b}) failed: {r.stderr[-800:]}")
            runs[b].append(json.loads(r.stdout.strip().splitlines()[-1]))
            print(f"footprint {b}: {runs[b][-1]}", file=sys.stderr, flush=True)
    figs = []
    for b, rs in runs.items():
        rss = [r["rss_mb"] for r in rs]
        figs.append(
            figure(
                f"footprint: gateway peak RSS, {b} backend",
                rss,
                "MB",
                target="<= 80 MB" if b == "litert" else None,
                met=(statistics.median(rss) <= 80) if b == "litert" else None,
                comparison={b2: side(f"{b2} backend", [r["rss_mb"] for r in runs[b2]], "MB") for b2 in runs if b2 != b},
            )
        )
        cpu = [r["cpu_s_per_site_hour"] for r in rs]
        figs.append(
            figure(
                f"footprint: CPU-seconds per simulated site-hour, {b} backend",
                cpu,
                "CPU-s/site-hour",
                target="<= 2",
                met=statistics.median(cpu) <= 2,
                comparison={
                    "readings_per_site_hour": rs[0]["readings"] / (hours + 1),
                    "real_seconds_per_site_hour": 3600,
                },
                ratio=statistics.median(cpu) / 3600,
                note="water zone 8 sensors at 1/min, air site 3 sensors at 1 Hz, 4 cell counts every "
                "10 min; ratio = share of one core",
            )
        )
        cold = [r["cold_start_s"] for r in rs if r["cold_start_s"] is not None]
        figs.append(
            figure(
                f"footprint: cold start to first detection, {b} backend",
                cold or [float("nan")],
                "s",
                target="<= 2 s",
                met=bool(cold) and statistics.median(cold) <= 2,
                note="process start (interpreter, imports, model load, broker connect) to the first detection stored",
            )
        )
    return figs


# ---- 6. fleet ---------------------------------------------------------------------------


def fleet_figures(tmp: Path, quick: bool) -> list[dict]:
    """Bridge throughput and end-to-end lag for a fleet, from a run of bench_bridge_scale.py."""
    gateways, sensors, per_sensor = (10, 20, 2) if quick else (50, 20, 8)
    out = tmp / "scaling.json"
    cmd = [
        sys.executable,
        str(ROOT / "scripts" / "bench_bridge_scale.py"),
        "--out",
        str(out),
        "--gateways",
        str(gateways),
        "--sensors",
        str(sensors),
        "--drain-per-sensor",
        str(per_sensor),
    ]
    if quick:
        cmd.append("--quick")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        raise RuntimeError(f"fleet benchmark failed: {r.stderr[-800:]}")
    result = json.loads(out.read_text())
    figs = []
    for run in result["runs"]:
        common = {
            "gateways": gateways,
            "sensors_per_gateway": sensors,
            "lost": run["lost"],
            "duplicated": run["duplicated"],
            "cpu_s": run["cpu_s"],
        }
        if run["phase"] == "drain":
            figs.append(
                figure(
                    f"fleet: sustained bridge rate, {run['workers']} worker(s) (backlog drain)",
                    [run["points_per_s"]],
                    "points/s",
                    comparison=common,
                )
            )
        else:
            figs.append(
                figure(
                    f"fleet: end-to-end lag p50, {run['workers']} worker(s) at "
                    f"{run['offered_msgs_per_s']} msgs/s offered",
                    [run["lag_ms_p50"]],
                    "ms",
                    comparison={**common, "lag_ms_p99": run["lag_ms_p99"], "points_per_s": run["points_per_s"]},
                )
            )
            figs.append(
                figure(
                    f"fleet: end-to-end lag p99, {run['workers']} worker(s)",
                    [run["lag_ms_p99"]],
                    "ms",
                    comparison=common,
                )
            )
    return figs
