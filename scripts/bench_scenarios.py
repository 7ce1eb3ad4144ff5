"""Measure the leak scenario generator: scenarios per second, and its leak flow against WNTRSimulator.

Writes docs/leak-scenario-bench.json (and prints it). Not a test: timings depend on the
machine and its load, which is recorded next to them.

    .venv/bin/python scripts/bench_scenarios.py [--scenarios 100] [--out docs/leak-scenario-bench.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from training.water.epanet_leaks import REQUIRED_PRESSURE_M, EpanetRun, emitter_coefficient, load_network, prepare_inp
from training.water.scenarios import ScenarioConfig, generate, plan_zone

DAY = 86_400


def generation_rate(network: str, n: int, workers: int, days: int = 30, step_s: int = 900) -> dict:
    """Scenarios per second the generator makes for ``n`` leaks on ``network`` with ``workers`` workers."""
    plan = plan_zone(network, ScenarioConfig(days=days, step_s=step_s))
    started = time.perf_counter()
    s = generate(plan, n, seed=123, workers=workers, progress=False)
    seconds = time.perf_counter() - started
    return {
        "network": network,
        "scenarios": s.n_scenarios,
        "days": days,
        "step_min": step_s // 60,
        "workers": workers,
        "seconds": round(seconds, 2),
        "scenarios_per_s": round(s.n_scenarios / seconds, 2),
        "simulated_days_per_s": round(s.n_scenarios * days / seconds, 1),
        "failed": len(s.meta["failed"]),
    }


def wntr_agreement(
    network: str = "Net3",
    node: str = "163",
    diameter_m: float = 0.10,
    days: int = 3,
    step_s: int = 900,
    start_s: int = DAY + 13 * 3600,
) -> dict:
    """The same network and leak run by WNTRSimulator (add_leak, PDD) and by EPANET with an emitter."""
    from wntr.sim import WNTRSimulator

    wn, _ = load_network(network)
    wn.options.time.duration = days * DAY - step_s
    wn.options.time.hydraulic_timestep = wn.options.time.report_timestep = step_s
    wn.options.hydraulic.demand_model = "PDD"
    wn.options.hydraulic.required_pressure = REQUIRED_PRESSURE_M
    wn.get_node(node).add_leak(wn, area=math.pi * diameter_m**2 / 4, discharge_coeff=0.75, start_time=start_s)
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = WNTRSimulator(wn).run_sim()
    wntr_s = time.perf_counter() - started
    reference = results.node["leak_demand"][node].to_numpy() * 1000
    steps = days * DAY // step_s
    wn2, _ = load_network(network)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "net.inp"
        path.write_text(prepare_inp(wn2, days, step_s))
        started = time.perf_counter()
        with EpanetRun(path, steps, step_s) as run:
            coeff = np.where(np.arange(steps) * step_s >= start_s, emitter_coefficient(diameter_m), 0.0)
            _, _, leak = run.run([], [], run.node_index(node), coeff)
        epanet_s = time.perf_counter() - started
    n = min(len(reference), len(leak))
    on = reference[:n] > 0
    rel = np.abs(leak[:n][on] / reference[:n][on] - 1)
    return {
        "network": network,
        "node": node,
        "diameter_m": diameter_m,
        "days": days,
        "step_min": step_s // 60,
        "steps_with_leak": int(on.sum()),
        "same_steps_leaking": bool(np.array_equal(on, leak[:n] > 0)),
        "wntr_mean_leak_lps": round(float(reference[:n][on].mean()), 3),
        "epanet_emitter_mean_leak_lps": round(float(leak[:n][on].mean()), 3),
        "mean_relative_difference": float(f"{rel.mean():.3g}"),
        "max_relative_difference": float(f"{rel.max():.3g}"),
        "max_abs_difference_lps": float(f"{np.abs(leak[:n][on] - reference[:n][on]).max():.3g}"),
        "wntr_seconds": round(wntr_s, 3),
        "epanet_emitter_seconds": round(epanet_s, 3),
        "speedup": round(wntr_s / epanet_s, 1),
    }


def main() -> int:
    """Measure the generation rate and the emitter leak flow against WNTRSimulator; write the JSON result."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenarios", type=int, default=100)
    parser.add_argument("--out", type=Path, default=Path("docs/leak-scenario-bench.json"))
    args = parser.parse_args()
    report = {
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        },
        "wntr_agreement": wntr_agreement(),
        "generation": [],
    }
    for network, n, workers in (
        ("Net3", args.scenarios, 1),
        ("Net3", args.scenarios, 2),
        ("Net1", args.scenarios, 2),
        ("ky10", max(2, args.scenarios // 25), 2),
    ):
        report["generation"].append(generation_rate(network, n, workers))
        print(json.dumps(report["generation"][-1]))
    report["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["wntr_agreement"], indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
