"""The frugality benchmark: every figure of docs/benchmarks.md, each next to what it is compared with, in one run.

Comparisons are measured side by side in the same run: repetitions of the two sides
are interleaved (A, B, A, B, ...) and the medians compared, so a change in the
machine's load hits both. Writes ``benchmarks.json`` (machine, versions, date; per
figure: name, median, min, max, unit, target, met, comparison, ratio) and
``benchmarks.md`` into ``--out`` (default ``docs/``). Needs Mosquitto, InfluxDB and
``mosquitto_pub`` (``make setup`` installs them); starts its own on free ports.

    .venv/bin/python scripts/bench.py [--quick] [--out docs]
"""

from __future__ import annotations

import os

# One BLAS thread: a gateway shares its core with other services (see bench_inference.py).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import json  # noqa: E402
import multiprocessing as mp  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import bench_bridge_scale  # noqa: E402
import bench_inference  # noqa: E402
import bench_pipeline  # noqa: E402

# name -> (target, unit, higher_is_better) ; targets of issue 6
FIGURE_KEYS = ("name", "median", "min", "max", "unit", "target", "met", "comparison", "ratio")


def figure(
    name: str,
    values,
    unit: str,
    *,
    target: str | None = None,
    met: bool | None = None,
    comparison: dict | None = None,
    ratio: float | None = None,
    note: str | None = None,
) -> dict:
    values = [float(v) for v in (values if isinstance(values, (list, tuple)) else [values])]
    out = {
        "name": name,
        "median": _round(statistics.median(values)),
        "min": _round(min(values)),
        "max": _round(max(values)),
        "unit": unit,
        "target": target,
        "met": met,
        "comparison": comparison,
        "ratio": None if ratio is None else _round(ratio),
        "runs": len(values),
    }
    if note:
        out["note"] = note
    return out


def _round(x: float) -> float:
    return float(f"{x:.4g}")


def side(name: str, values, unit: str) -> dict:
    """The other side of a comparison, with its own spread."""
    values = [float(v) for v in values]
    return {
        "name": name,
        "median": _round(statistics.median(values)),
        "min": _round(min(values)),
        "max": _round(max(values)),
        "unit": unit,
    }


# ---- machine ---------------------------------------------------------------------------


def machine() -> dict:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem_kb = next(
        int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal:")
    )
    versions = {"python": platform.python_version(), "numpy": np.__version__}
    for mod, key in (("onnxruntime", "onnxruntime"), ("sklearn", "scikit-learn"), ("paho.mqtt", "paho-mqtt")):
        try:
            versions[key] = __import__(mod, fromlist=["__version__"]).__version__
        except ImportError:
            versions[key] = None
    try:
        from importlib.metadata import version

        versions["ai-edge-litert"] = version("ai-edge-litert")
    except Exception:
        versions["ai-edge-litert"] = None
    for exe, key in (("mosquitto", "mosquitto"), ("influxd", "influxdb")):
        try:
            r = subprocess.run(
                [exe, "-h" if exe == "mosquitto" else "version"], capture_output=True, text=True, timeout=10
            )
            versions[key] = (r.stdout + r.stderr).strip().splitlines()[0]
        except (OSError, subprocess.SubprocessError, IndexError):
            versions[key] = None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(mem_kb / 1024**2, 1),
        "platform": platform.platform(),
        "versions": versions,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
        "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
    }


# ---- 1. inference -----------------------------------------------------------------------


def interleaved(calls: dict, reps: int, inner: int) -> dict[str, list[float]]:
    """Per call, in microseconds: ``reps`` rounds, each timing ``inner`` calls of every candidate in turn."""
    for fn in calls.values():
        fn()  # warm-up
    out: dict[str, list[float]] = {k: [] for k in calls}
    for _ in range(reps):
        for name, fn in calls.items():
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            out[name].append((time.perf_counter() - t0) / inner * 1e6)
    return out


def gemm_roofline(quick: bool) -> tuple[dict, float]:
    n = 1024 if quick else 2048
    rng = np.random.default_rng(0)
    a, b = rng.random((n, n), dtype=np.float32), rng.random((n, n), dtype=np.float32)
    a @ b
    rates = []
    for _ in range(3 if quick else 5):
        t0 = time.perf_counter()
        a @ b
        rates.append(2 * n**3 / (time.perf_counter() - t0) / 1e9)
    f = figure(
        f"roofline: numpy float32 GEMM {n}x{n}, one thread",
        rates,
        "GFLOP/s",
        note="the core's measured matrix-multiply rate; batched inference is expressed as a fraction of it",
    )
    return f, statistics.median(rates)


def macs_of(layers) -> int:
    return int(sum(n_in * n_out for n_in, n_out, *_ in layers or []))


def inference_figures(quick: bool, roofline: float) -> list[dict]:
    from edge.runtime import available_backends, load
    from edge.runtime.manifest import FORMAT_RUNTIMES, ModelManifest
    from edge.runtime.numpy_backend import forward, load_network

    figs = []
    reps, inner1, inner_big = (5, 20, 2) if quick else (15, 200, 10)
    with tempfile.TemporaryDirectory() as tmp:
        refs = bench_inference.reference_models(Path(tmp))
        shipped = [
            (m.name, None, None, {"qdq": m})
            for m in (ModelManifest.read(p.parent) for p in sorted((ROOT / "models").glob("*/manifest.json")))
        ]
        for name, model, X, manifests in refs + shipped:
            m = manifests["qdq"]
            if X is None:
                with np.load(m.files["parity"].path, allow_pickle=False) as z:
                    X = z["X"]
            big = np.resize(X, (1024, X.shape[1])).astype(np.float32)
            one = big[:1]
            macs = macs_of((m.raw.get("network") or {}).get("layers"))
            cands: dict[str, dict] = {}
            for fmt in m.formats:
                runtime = next((r for r in FORMAT_RUNTIMES.get(fmt, ()) if r in available_backends()), None)
                if runtime is None:
                    continue
                backend = load(m.files[fmt], runtime)
                cands[f"{fmt} on {runtime}"] = {
                    1: (lambda b=backend: b.predict(one)),
                    1024: (lambda b=backend: b.predict(big)),
                }
            W, b, acts = load_network(m.files["numpy"].path)
            s1, sb = m.prepare(one), m.prepare(big)
            cands["numpy forward"] = {1: lambda: forward(W, b, acts, s1), 1024: lambda: forward(W, b, acts, sb)}
            if model is not None:
                cands["sklearn predict"] = {1: lambda: model.predict(one), 1024: lambda: model.predict(big)}
            for batch, inner in ((1, inner1), (1024, inner_big)):
                t = interleaved({k: v[batch] for k, v in cands.items()}, reps, inner)
                ref = statistics.median(t["numpy forward"])
                skl = statistics.median(t["sklearn predict"]) if "sklearn predict" in t else None
                if batch > 1:  # figures per window
                    t = {k: [x / batch for x in v] for k, v in t.items()}
                    ref, skl = ref / batch, None if skl is None else skl / batch
                for label, times in t.items():
                    if label in ("numpy forward", "sklearn predict"):
                        continue
                    med = statistics.median(times)
                    comp = {"numpy_forward": side("numpy forward (plain, no checks)", t["numpy forward"], "us")}
                    if skl is not None:
                        comp["sklearn_predict"] = side("scikit-learn predict", t["sklearn predict"], "us")
                    if batch == 1:
                        ratio = med / ref
                        ok = ratio <= 1.5 and (skl is None or skl / med >= 10)
                        target = "<= 1.5x numpy forward" + (" and >= 10x faster than sklearn predict" if skl else "")
                        if skl is not None:
                            comp["sklearn_over_this"] = _round(skl / med)
                        figs.append(
                            figure(
                                f"inference batch 1: {name}, {label}",
                                times,
                                "us/window",
                                target=target,
                                met=ok,
                                comparison=comp,
                                ratio=ratio,
                            )
                        )
                    else:
                        gflops = 2 * macs / (med * 1e-6) / 1e9 if macs else None
                        frac = gflops / roofline if gflops else None
                        comp["roofline_gflops"] = _round(roofline)
                        comp["achieved_gflops"] = None if gflops is None else _round(gflops)
                        comp["numpy_forward_fraction_of_roofline"] = (
                            _round(2 * macs / (ref * 1e-6) / 1e9 / roofline) if macs else None
                        )
                        if skl is not None:
                            comp["sklearn_over_this"] = _round(skl / med)
                        figs.append(
                            figure(
                                f"inference batch 1024: {name}, {label}",
                                times,
                                "us/window",
                                target=">= 20% of the GEMM roofline",
                                met=None if frac is None else frac >= 0.2,
                                comparison=comp,
                                ratio=frac,
                                note=f"{macs} MACs/window; ratio = fraction of roofline",
                            )
                        )
            print(f"inference: {name}", file=sys.stderr, flush=True)
    return figs


# ---- 2. pipeline ------------------------------------------------------------------------

REPEAT = 10  # how many times over the publishers alone send the gateway's messages


def pipeline_figures(services, quick: bool) -> list[dict]:
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
    stages = {k: _round(v) for k, v in bench_pipeline.stage_costs().items()}
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
                "gateway_cpu_readings_per_cpu_s": _round(statistics.median(cpu_rates)),
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
    ratio = statistics.median(b / r for b, r in zip(bridge, raw))
    return [
        figure(
            "bridge: Mosquitto -> InfluxDB 1.6 (one worker, backlog drain)",
            bridge,
            "points/s",
            target=">= 70% of a raw bulk line-protocol POST",
            met=ratio >= 0.7,
            comparison={
                "raw_bulk_post": side("raw line-protocol POST, 5,000 lines each, same points", raw, "points/s"),
                "pair_ratios": [_round(b / r) for b, r in zip(bridge, raw)],
                "bridge_cpu_us_per_point": _round(statistics.median(bridge_cpu)),
                "influxdb_cpu_us_per_point": _round(statistics.median(influx_cpu)),
                "influxdb_cpu_us_per_point_raw_post": _round(statistics.median(raw_influx_cpu)),
            },
            ratio=ratio,
            note=f"{points} points per run, {batch} readings per message (the gateway's "
            f"default readings_batch); ratio = median over {reps} back-to-back pairs of "
            "bridge / raw (the pairs alternate which runs first)",
        )
    ]


# ---- 4. footprint -----------------------------------------------------------------------


def footprint_figures(services, quick: bool) -> list[dict]:
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


# ---- 5. models --------------------------------------------------------------------------


def model_figures(quick: bool) -> list[dict]:
    from edge.runtime.manifest import ModelManifest

    figs = []
    for p in sorted((ROOT / "models").glob("*/manifest.json")):
        m = ModelManifest.read(p.parent)
        net = m.raw.get("network") or {}
        card = json.loads((p.parent / "card.json").read_text()) if (p.parent / "card.json").exists() else {}
        sizes = {fmt: m.files[fmt].bytes for fmt in m.formats}
        build = _find_key(card, "build_seconds")
        figs.append(
            figure(
                f"model: {m.name}",
                [min(sizes.values())],
                "bytes (smallest file)",
                comparison={
                    "file_bytes": sizes,
                    "parameters": net.get("parameters"),
                    "macs_per_window": macs_of(net.get("layers")),
                    "training_seconds": build,
                    "training_seconds_source": "card.json build_seconds (simulate+train+export)"
                    if build is not None
                    else "not recorded in the card",
                },
            )
        )
    from bench_scenarios import generation_rate

    n = 4 if quick else 20
    rates = []
    for _ in range(1 if quick else 2):
        r = generation_rate("Net1", n, workers=1, days=14 if quick else 30)
        rates.append(r["scenarios_per_s"])
    figs.append(
        figure(
            "leak scenario generation rate (Net1, EPANET emitters, one worker)",
            rates,
            "scenarios/s",
            comparison={"days_per_scenario": r["days"], "step_min": r["step_min"], "scenarios": n},
        )
    )
    return figs


def _find_key(obj, key):
    if isinstance(obj, dict):
        if key in obj:
            return obj[key]
        for v in obj.values():
            if (found := _find_key(v, key)) is not None:
                return found
    return None


# ---- 6. fleet ---------------------------------------------------------------------------


def fleet_figures(tmp: Path, quick: bool) -> list[dict]:
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


# ---- report -----------------------------------------------------------------------------


def markdown(report: dict) -> str:
    m = report["machine"]
    v = m["versions"]
    rows = [
        "# Benchmarks",
        "",
        "Written by `scripts/bench.py` (`make bench`); do not edit by hand. Each comparison was measured side by "
        "side in the same run (interleaved repetitions, medians). `met` is empty where no target applies.",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB; Python {v['python']}, numpy {v['numpy']}, "
        f"onnxruntime {v.get('onnxruntime')}, ai-edge-litert {v.get('ai-edge-litert')}; {m['date']}; "
        f"load at start {m['load_average_at_start']}. Mode: {'quick (smoke)' if report['quick'] else 'full'}; "
        f"took {report['seconds']:.0f} s.",
        "",
        "| figure | median | min | max | unit | compared with (median) | ratio | target | met |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for f in report["figures"]:
        comp = f.get("comparison") or {}
        other = "; ".join(
            f"{c['name']}: {c['median']:g} {c['unit']}" for c in comp.values() if isinstance(c, dict) and "median" in c
        )
        met = "" if f["met"] is None else ("yes" if f["met"] else "**no**")
        rows.append(
            f"| {f['name']} | {f['median']:g} | {f['min']:g} | {f['max']:g} | {f['unit']} | {other} "
            f"| {'' if f['ratio'] is None else format(f['ratio'], 'g')} | {f['target'] or ''} | {met} |"
        )
    rows += ["", "Notes per figure (workload, what the ratio means) are in `benchmarks.json` (`note`, `comparison`)."]
    rows += shortfalls(report["figures"])
    rows += history_table(report.get("history", []))
    return "\n".join(rows) + "\n"


def _pair_list(figures: list[dict], spec: str = ".2f") -> str:
    """'model, backend ratio; ...' for inference figures."""
    return "; ".join(f"{f['name'].split(': ', 1)[1]} {format(f['ratio'], spec)}" for f in figures) or "none"


def _sklearn_speedups(figures: list[dict]) -> str:
    """How much faster than scikit-learn's predict each batch-1 backend was, where that was measured."""
    over = [
        f["comparison"]["sklearn_over_this"]
        for f in figures
        if f["name"].startswith("inference batch 1:") and "sklearn_over_this" in (f["comparison"] or {})
    ]
    if not over:
        return ""
    return (
        f"Against scikit-learn's `predict` (reference models) every backend is {min(over):.0f}-"
        f"{max(over):.0f}x faster ({'all' if min(over) >= 10 else 'not all'} above the 10x target)."
    )


def shortfalls(figures: list[dict]) -> list[str]:
    """The targets this run missed: by how much (from this run's figures) and why."""
    missed = [f for f in figures if f["met"] is False]
    if not missed:
        return ["", "## Targets not met", "", "None: every target was met in this run."]
    out = ["", "## Targets not met: by how much, and why", ""]
    for f in (f for f in missed if f["name"].startswith("gateway pipeline")):
        comp = f["comparison"]
        cpu_us = 1e6 / comp["gateway_cpu_readings_per_cpu_s"]
        c_us = 1e6 / comp["c_client"]["median"]
        out.append(
            f"- **Gateway pipeline vs the C client: {f['ratio']:.2f} of its rate (target 0.50).** The gateway "
            f"spends {cpu_us:.1f} CPU-µs per reading end to end (serial bytes, frame parsing, contract check, "
            f"two detectors, batching, JSON, SQLite outbox with fsync, MQTT); `mosquitto_pub` spends "
            f"{c_us:.2f} µs per reading only publishing ready-made messages of "
            f"{comp['readings_per_message']:g} readings. Half its rate leaves {2 * c_us:.1f} µs per reading for "
            "everything; measured alone in this run, parsing a line into Reading objects costs "
            f"{comp['stage_cpu_us_per_reading']['parse']:.2f} µs per reading, the contract check "
            f"{comp['stage_cpu_us_per_reading']['validate']:.2f} and the JSON payload "
            f"{comp['stage_cpu_us_per_reading']['encode']:.2f}, before detectors, outbox and MQTT. And the "
            "gateway's outbox and MQTT sender alone, given the same ready-made messages, reach "
            f"{comp['publisher_alone']['median']:,.0f} readings/s, "
            f"{comp['publisher_alone']['median'] / comp['c_client']['median']:.2f} of the C client: with parsing, "
            "detection and encoding free, durable storage (SQLite, fsync) plus paho would still be "
            f"{'above' if comp['publisher_alone']['median'] >= comp['c_client']['median'] / 2 else 'below'} "
            "the target. The 50,000 readings/s floor is met. What more would take: a columnar path from "
            "parser to outbox (a frame's readings as arrays, never one Python object per reading), which "
            "changes every source, detector and the publisher; not done here."
        )
    for f in (f for f in missed if f["name"].startswith("bridge:")):
        comp = f["comparison"]
        out.append(
            f"- **Bridge vs raw POST: {f['ratio']:.3f} (target 0.70; the back-to-back pairs gave "
            f"{', '.join(format(r, '.2f') for r in comp['pair_ratios'])}).** Both share these 2 cores with InfluxDB. "
            f"The bridge process spends {comp['bridge_cpu_us_per_point']:.2f} CPU-µs per point and InfluxDB "
            f"{comp['influxdb_cpu_us_per_point']:.2f}; during the raw POST the client spends almost nothing and "
            f"InfluxDB ({comp['influxdb_cpu_us_per_point_raw_post']:.2f} µs per point) has both cores to itself. "
            "In profiles taken while optimising, paho's MQTT v5 packet handling (about 57 µs per 50-reading "
            "message) was the largest single part of the bridge's time. "
            "On separate hosts, or with a second worker on a third core, the bridge is not the limit "
            "(docs/scaling.md)."
        )
    pairs = _pair_list
    batch1 = [f for f in missed if f["name"].startswith("inference batch 1:")]
    if batch1:
        met = [f for f in figures if f["name"].startswith("inference batch 1:") and f["met"]]
        out.append(
            f"- **Inference, batch 1: {len(batch1)} of {len(batch1) + len(met)} model x backend pairs above 1.5x "
            f"the numpy forward** (ratio after each): {pairs(batch1)}. Met by: {pairs(met)}. The shipped models "
            "have under 1,000 multiply-accumulates, so the numpy forward of one window is a few µs of numpy "
            "calls, and each runtime adds a fixed cost per call of the same size: onnxruntime's `run`, LiteRT's "
            "`set_tensor`/`invoke`/`get_tensor`, int8 quantise and dequantise, and the input checks every "
            f"backend makes (shape, finiteness, standardisation). {_sklearn_speedups(figures)} `backend: auto` "
            "times the candidates on the gateway and picks the fastest."
        )
    roof = [f for f in missed if f["name"].startswith("inference batch 1024:")]
    if roof:
        met = [f for f in figures if f["name"].startswith("inference batch 1024:") and f["met"]]
        out.append(
            f"- **Batched inference below 20% of the GEMM roofline: {len(roof)} pairs** (fraction after each): "
            f"{pairs(roof, '.0%')}. Met by: {pairs(met, '.0%')}. Layers of 8-32 units make matrix products with K <= 32: "
            "each pass moves more bytes than it computes, so the time goes to memory traffic and per-layer "
            "calls, not to the multiply units the 2048x2048 roofline measures; the wider reference model "
            "(12k multiply-accumulates) is where the roofline target can be judged."
        )
    return out


# Figures followed from run to run, so the report says what each change bought.
TRACKED = (
    "gateway pipeline",
    "bridge:",
    "footprint: CPU-seconds per simulated site-hour, litert",
    "footprint: gateway peak RSS, litert",
    "footprint: cold start to first detection, litert",
)


def history_entry(report: dict, label: str) -> dict:
    try:
        commit = (
            report.get("commit")
            or subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
            ).stdout.strip()
        )
    except (OSError, subprocess.SubprocessError):
        commit = ""
    tracked = {
        f["name"]: {"median": f["median"], "unit": f["unit"], "ratio": f["ratio"]}
        for f in report["figures"]
        if f["name"].startswith(TRACKED)
    }
    return {"date": report["machine"]["date"], "commit": commit, "label": label, "figures": tracked}


def history_table(history: list[dict]) -> list[str]:
    if not history:
        return []
    names = sorted(
        {n for h in history for n in h["figures"]}, key=lambda n: [n.startswith(t) for t in TRACKED], reverse=True
    )
    short = [n.split(":")[0] if n.startswith("gateway pipeline") else n for n in names]
    rows = [
        "",
        "## What each change bought",
        "",
        "Each row is one run of this script (`--label` says what changed since the row above; the commit is "
        "the one the run started from). Medians; the ratio in brackets where the figure has one.",
        "",
        "| run | commit | change | " + " | ".join(short) + " |",
        "|---|---|---|" + "---|" * len(names),
    ]
    for i, h in enumerate(history, 1):
        cells = []
        for n in names:
            f = h["figures"].get(n)
            cells.append(
                ""
                if f is None
                else f"{f['median']:g} {f['unit']}" + ("" if f["ratio"] is None else f" ({f['ratio']:g})")
            )
        rows.append(f"| {i} | {h['commit']} | {h['label']} | " + " | ".join(cells) + " |")
    return rows


SECTIONS = ("inference", "pipeline", "bridge", "footprint", "models", "fleet")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small workloads: a smoke run of the whole suite")
    ap.add_argument("--out", type=Path, default=ROOT / "docs")
    ap.add_argument("--only", nargs="*", choices=SECTIONS, help="run only these sections")
    ap.add_argument(
        "--label",
        default=None,
        help="what changed since the last recorded run: adds this run to --out/benchmarks-history.json",
    )
    ap.add_argument(
        "--label-previous",
        default=None,
        help="record the run already in --out/benchmarks.json in the history first, under this label",
    )
    ap.add_argument(
        "--render-only",
        action="store_true",
        help="measure nothing: rewrite --out/benchmarks.md from --out/benchmarks.json (after a change "
        "to the report's wording)",
    )
    args = ap.parse_args(argv)
    if args.render_only:
        (args.out / "benchmarks.md").write_text(markdown(json.loads((args.out / "benchmarks.json").read_text())))
        return 0
    from gateway.local_services.services import LocalServices

    previous = args.out / "benchmarks.json"
    previous = json.loads(previous.read_text()) if args.label_previous and previous.exists() else None

    started = time.perf_counter()
    sections = args.only or SECTIONS
    report = {"what": "frugalsense benchmarks (issue 6)", "quick": args.quick, "machine": machine(), "figures": []}
    report["commit"] = history_entry({"machine": {"date": None}, "figures": []}, "")["commit"]
    figs = report["figures"]
    if "inference" in sections:
        roof_fig, roof = gemm_roofline(args.quick)
        figs.append(roof_fig)
        figs += inference_figures(args.quick, roof)
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        with LocalServices(Path(tmp) / "services", mosquitto_extra_config=bench_bridge_scale.BROKER_CONFIG) as services:
            if "pipeline" in sections:
                figs += pipeline_figures(services, args.quick)
            if "bridge" in sections:
                figs += bridge_figures(services, args.quick)
            if "footprint" in sections:
                figs += footprint_figures(services, args.quick)
        if "models" in sections:
            figs += model_figures(args.quick)
        if "fleet" in sections:
            figs += fleet_figures(Path(tmp), args.quick)
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["machine"]["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    args.out.mkdir(parents=True, exist_ok=True)
    history_path = args.out / "benchmarks-history.json"
    history = json.loads(history_path.read_text()) if history_path.exists() else []
    if previous is not None:
        history.append(history_entry(previous, args.label_previous))
    if args.label:
        history.append(history_entry(report, args.label))
        history_path.write_text(json.dumps(history, indent=2) + "\n")
    report["history"] = history
    (args.out / "benchmarks.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "benchmarks.md").write_text(markdown(report))
    print(f"wrote {args.out / 'benchmarks.json'} and benchmarks.md in {report['seconds']:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
