"""The benchmark's figure record (median, spread, target, comparison) and the machine it was measured on.

Every section of ``python -m scripts.bench`` builds its figures with :func:`figure` and :func:`side`.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np

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
    """One figure of the report: median, min and max of ``values``, its target, whether met, and comparisons."""
    values = [float(v) for v in (values if isinstance(values, (list, tuple)) else [values])]
    out = {
        "name": name,
        "median": round_sig(statistics.median(values)),
        "min": round_sig(min(values)),
        "max": round_sig(max(values)),
        "unit": unit,
        "target": target,
        "met": met,
        "comparison": comparison,
        "ratio": None if ratio is None else round_sig(ratio),
        "runs": len(values),
    }
    if note:
        out["note"] = note
    return out


def round_sig(x: float) -> float:
    """Four significant digits: what the report keeps of a measurement."""
    return float(f"{x:.4g}")


def side(name: str, values, unit: str) -> dict:
    """The other side of a comparison, with its own spread."""
    values = [float(v) for v in values]
    return {
        "name": name,
        "median": round_sig(statistics.median(values)),
        "min": round_sig(min(values)),
        "max": round_sig(max(values)),
        "unit": unit,
    }


# ---- machine ---------------------------------------------------------------------------


def machine() -> dict:
    """The machine and software a run measured on: CPU, cores, memory, versions, date, load."""
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
