"""Many seeded leak scenarios for any EPANET network, simulated in parallel: the training and test data.

A scenario is one run of ``days`` at ``step_s`` (5-30 min) with its own demands
(``training.water.demand_model``), pipe parameters (each pipe's diameter, length and
roughness scaled by a uniform factor), sensor noise and resolution, and either no
leak or one leak at a random junction: a round hole of diameter drawn uniformly in
``diameter_m`` (2-20 cm), abrupt or incipient (hole area growing linearly over
``ramp_days``), starting after ``warmup_days`` (detectors need a baseline) and either
repaired after ``duration_days`` or still open at the end. Optionally a population
change drives demand, and the zone's mobile-network presence count is a sensor.

Every random draw comes from the dataset seed, scenario by scenario, so a set is the
same whatever the number of worker processes.

>>> leak = LeakEvent(node="15", diameter_m=0.1, start_s=3600, end_s=4 * 3600, ramp_s=2 * 3600)
>>> leak.coefficients(6, 3600).round(2).tolist()
[0.0, 0.0, 13.05, 26.09, 0.0, 0.0]
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from edge.contracts import QUANTITY_UNITS
from training.water import demand_model as dm
from training.water.epanet_leaks import (
    DAY_S,
    EpanetRun,
    SimulationError,
    emitter_coefficient,
    load_network,
    prepare_inp,
)
from training.water.scenario_set import ScenarioSet
from training.water.sensor_placement import (
    DEFAULT_PRESSURE_SENSORS,
    MIN_SENSOR_PRESSURE_M,
    boundary_links,
    check_nodes,
    flow_signs,
    place_pressure_sensors,
)
from training.water.zone import START_MS

MIN_LEAK_PRESSURE_M = 5.0  # a junction with less in a leak-free run is never a leak site
PRESENCE_COLUMN = "presence"


@dataclass(frozen=True)
class LeakEvent:
    """One leak of a scenario: where, how big, when it opens and how it grows."""

    node: str
    diameter_m: float
    start_s: int
    end_s: int | None  # None: still leaking when the scenario ends
    ramp_s: int = 0  # 0: abrupt; else the hole area grows linearly over ramp_s

    def coefficients(self, steps: int, step_s: int) -> np.ndarray:
        """Emitter coefficient (L/s per sqrt(m)) during each step."""
        t = np.arange(steps) * step_s
        full = emitter_coefficient(self.diameter_m)
        growth = np.ones(steps) if self.ramp_s <= 0 else np.clip((t - self.start_s) / self.ramp_s, 0, 1)
        open_ = (t >= self.start_s) & (True if self.end_s is None else t < self.end_s)
        return np.where(open_, full * growth, 0.0)


@dataclass(frozen=True)
class SensorNoise:
    """Measurement noise of the simulated flow and pressure sensors."""

    flow_rel: float = 0.005  # standard deviation, fraction of the reading ...
    flow_abs_lps: float = 0.1  # ... plus this
    flow_resolution_lps: float = 0.1
    pressure_sd_m: float = 0.1
    pressure_resolution_m: float = 0.1


@dataclass(frozen=True)
class PipeUncertainty:
    """How far the simulated pipes may differ from the network file (diameter, length, roughness)."""

    diameter: float = 0.05  # +- fraction, uniform, per pipe
    length: float = 0.10
    roughness: float = 0.25


@dataclass(frozen=True)
class ScenarioConfig:
    """What every scenario of a set shares: duration, step, leak mix, uncertainties."""

    days: int = 30
    step_s: int = 900
    diameter_m: tuple[float, float] = (0.02, 0.20)
    leak_share: float = 0.75  # the rest of the scenarios have no leak
    incipient_share: float = 0.5
    ramp_days: tuple[float, float] = (1.0, 5.0)
    warmup_days: float = 10.0
    repair_share: float = 0.5  # leaks that end before the scenario does
    duration_days: tuple[float, float] = (2.0, 12.0)
    population_change_share: float = 0.0
    population_change: tuple[float, float] = (0.1, 0.4)  # size range; up (event) or down (holiday)
    population_days: tuple[float, float] = (2.0, 7.0)
    presence: bool = False  # add the presence count as a sensor column
    demand: dm.DemandUncertainty = field(default_factory=dm.DemandUncertainty)
    pipes: PipeUncertainty = field(default_factory=PipeUncertainty)
    noise: SensorNoise = field(default_factory=SensorNoise)

    def __post_init__(self) -> None:
        if not 300 <= self.step_s <= 1800 or DAY_S % self.step_s:
            raise ValueError(f"time step must be 5 to 30 min and divide a day, got {self.step_s} s")
        if self.days < self.warmup_days + 2:
            raise ValueError(f"{self.days} days leave no room for a leak after a {self.warmup_days}-day warm-up")
        lo, hi = self.diameter_m
        if not 0 < lo <= hi < 1:
            raise ValueError(f"leak diameters are in metres (0.02-0.20), got {self.diameter_m}")


@dataclass(frozen=True)
class Scenario:
    """One seeded scenario: its leak (None: leak-free) and its population change."""

    seed: int
    leak: LeakEvent | None
    population: dm.PopulationChange | None = None


@dataclass(frozen=True)
class ZonePlan:
    """Everything a worker needs to simulate scenarios of one network (picklable)."""

    network: str
    inp_text: str
    config: ScenarioConfig
    flows: tuple[tuple[str, int], ...]  # (link, sign into the zone)
    pressures: tuple[str, ...]
    leak_nodes: tuple[str, ...]

    @property
    def steps(self) -> int:
        return self.config.days * DAY_S // self.config.step_s


def plan_zone(
    network: str | os.PathLike,
    config: ScenarioConfig = ScenarioConfig(),
    flows: list[tuple[str, int]] | None = None,
    pressures: list[str] | None = None,
    n_pressure: int = DEFAULT_PRESSURE_SENSORS,
) -> ZonePlan:
    """Prepare a network: sensors (given or placed, see ``sensor_placement``) and leak sites."""
    wn, name = load_network(network)
    inp_text = prepare_inp(wn, config.days, config.step_s)
    flows = flows if flows is not None else [(link, 1) for link in boundary_links(wn)]
    if not flows:
        raise ValueError(f"{name} has no reservoir or tank link to meter: name the flow sensors")
    signs = flow_signs(wn, flows)
    min_pressure = _nominal_min_pressure(inp_text, wn.junction_name_list, config.step_s, min(7, config.days))
    if pressures is None:
        candidates = [j for j, p in min_pressure.items() if p >= MIN_SENSOR_PRESSURE_M]
        pressures = place_pressure_sensors(wn, candidates, n_pressure)
    check_nodes(wn, pressures)
    leak_nodes = tuple(sorted(j for j, p in min_pressure.items() if p >= MIN_LEAK_PRESSURE_M))
    if not leak_nodes:
        raise ValueError(f"no junction of {name} keeps {MIN_LEAK_PRESSURE_M} m of pressure: nowhere to leak")
    return ZonePlan(
        name,
        inp_text,
        config,
        tuple((f, s) for (f, _), s in zip(flows, signs, strict=True)),
        tuple(pressures),
        leak_nodes,
    )


def _nominal_min_pressure(inp_text: str, junctions: list[str], step_s: int, days: int) -> dict[str, float]:
    """Lowest pressure of every junction over a leak-free run of ``days`` (a week at most)."""
    steps = days * DAY_S // step_s
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "network.inp"
        path.write_text(inp_text)
        with EpanetRun(path, steps, step_s) as run:
            _, pressures, _ = run.run([], [run.node_index(j) for j in junctions])
    return dict(zip(junctions, pressures.min(axis=0).tolist(), strict=True))


def sample_scenarios(plan: ZonePlan, n: int, seed: int) -> list[Scenario]:
    """``n`` scenario descriptions drawn from ``seed`` (leak sites, sizes, times, population changes)."""
    c = plan.config
    rng = np.random.default_rng(seed)
    seeds = np.random.SeedSequence(seed).generate_state(n, dtype=np.uint32)
    period = c.days * DAY_S
    out = []
    for i in range(n):
        leak = None
        if rng.random() < c.leak_share:
            start = _on_step(rng.uniform(c.warmup_days * DAY_S, period - 2 * DAY_S), c.step_s)
            end = None
            if rng.random() < c.repair_share:
                end = _on_step(start + rng.uniform(*c.duration_days) * DAY_S, c.step_s)
                end = None if end >= period else end
            span = (end or period) - start
            ramp = 0
            if rng.random() < c.incipient_share:
                ramp = min(_on_step(rng.uniform(*c.ramp_days) * DAY_S, c.step_s), span)
            leak = LeakEvent(
                node=str(rng.choice(plan.leak_nodes)),
                diameter_m=round(float(rng.uniform(*c.diameter_m)), 4),
                start_s=start,
                end_s=end,
                ramp_s=ramp,
            )
        population = None
        if rng.random() < c.population_change_share:
            size = rng.uniform(*c.population_change) * (1 if rng.random() < 0.5 else -1)
            start = _on_step(rng.uniform(7 * DAY_S, period - DAY_S), c.step_s)
            end = min(period, _on_step(start + rng.uniform(*c.population_days) * DAY_S, c.step_s))
            population = dm.PopulationChange(start, end, round(float(size), 3))
        out.append(Scenario(int(seeds[i]), leak, population))
    return out


def _on_step(seconds: float, step_s: int) -> int:
    return int(seconds // step_s) * step_s


def simulate_scenario(plan: ZonePlan, scenario: Scenario, inp_path: str | os.PathLike):
    """One run: (noisy sensor values [T, S] float32, leak flow [T], hydraulic warnings)."""
    c, steps = plan.config, plan.steps
    demand_rng, pipe_rng, noise_rng, presence_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(scenario.seed).spawn(4)
    )
    with EpanetRun(inp_path, steps, c.step_s) as run:
        pipes = run.pipe_indices()
        spread = np.array([c.pipes.diameter, c.pipes.length, c.pipes.roughness])
        run.scale_pipes(1 + pipe_rng.uniform(-1, 1, (len(pipes), 3)) * spread)
        zone = dm.zone_factor(steps, c.step_s, c.demand, demand_rng, population=scenario.population)
        for demand in run.demands():
            base = demand.base_lps * (1 + demand_rng.uniform(-c.demand.base_demand, c.demand.base_demand))
            run.set_demand(demand, base, dm.junction_multipliers(demand.multipliers, zone, c.demand, demand_rng))
        run.use_step_patterns()
        leak = scenario.leak
        flows, pressures, leak_flow = run.run(
            [run.link_index(link) for link, _ in plan.flows],
            [run.node_index(n) for n in plan.pressures],
            None if leak is None else run.node_index(leak.node),
            None if leak is None else leak.coefficients(steps, c.step_s),
        )
        warnings = run.warnings
    flows = flows * np.array([sign for _, sign in plan.flows])
    n = c.noise
    flows = _quantise(
        flows + noise_rng.normal(0, 1, flows.shape) * (n.flow_rel * np.abs(flows) + n.flow_abs_lps),
        n.flow_resolution_lps,
    )
    pressures = _quantise(pressures + noise_rng.normal(0, n.pressure_sd_m, pressures.shape), n.pressure_resolution_m)
    columns = [flows, pressures]
    if c.presence:
        columns.append(dm.presence_counts(steps, c.step_s, presence_rng, scenario.population)[:, None])
    return np.hstack(columns).astype(np.float32), leak_flow.astype(np.float32), warnings


def _quantise(values: np.ndarray, resolution: float) -> np.ndarray:
    return np.round(values / resolution) * resolution if resolution > 0 else values


# ---- parallel generation -------------------------------------------------------------

_worker: dict = {}


def _init_worker(plan: ZonePlan) -> None:
    tmp = tempfile.mkdtemp(prefix="frugalsense-epanet-")
    path = Path(tmp) / "network.inp"
    path.write_text(plan.inp_text)
    _worker.update(plan=plan, inp=path)


def _run_one(args):
    index, scenario = args
    try:
        return index, simulate_scenario(_worker["plan"], scenario, _worker["inp"]), None
    except SimulationError as exc:
        return index, None, str(exc)


def generate(
    plan: ZonePlan, n: int, seed: int, workers: int = 2, progress: bool = True, scenarios: list[Scenario] | None = None
) -> ScenarioSet:
    """Simulate ``n`` scenarios of ``plan`` (or the given ``scenarios``) on ``workers`` processes.

    A scenario whose hydraulics fail is left out and listed in ``meta['failed']``.
    """
    scenarios = scenarios if scenarios is not None else sample_scenarios(plan, n, seed)
    jobs = list(enumerate(scenarios))
    results = {}
    desc = f"simulating {plan.network}"
    if workers <= 1:
        _init_worker(plan)
        for job in tqdm(jobs, desc=desc, unit="scenario", disable=not progress):
            index, out, error = _run_one(job)
            results[index] = (out, error)
    else:
        # spawn: the parent may hold threads (MQTT, progress bar) that fork would copy mid-lock
        with multiprocessing.get_context("spawn").Pool(workers, _init_worker, (plan,)) as pool:
            for index, out, error in tqdm(
                pool.imap_unordered(_run_one, jobs, chunksize=4),
                total=len(jobs),
                desc=desc,
                unit="scenario",
                disable=not progress,
            ):
                results[index] = (out, error)
    return _assemble(plan, scenarios, seed, results)


def _assemble(plan: ZonePlan, scenarios: list[Scenario], seed: int, results: dict) -> ScenarioSet:
    c, steps = plan.config, plan.steps
    kept = [i for i in range(len(scenarios)) if results[i][0] is not None]
    if not kept:
        first = next(iter(results.values()))[1]
        raise SimulationError(f"every scenario of {plan.network} failed; the first: {first}")
    time_ms = START_MS + np.arange(steps, dtype=np.int64) * c.step_s * 1000
    values = np.stack([results[i][0][0] for i in kept])
    leak_flow = np.stack([results[i][0][1] for i in kept])
    flags = np.zeros_like(leak_flow, dtype=bool)
    described = []
    for row, i in enumerate(kept):
        s = scenarios[i]
        entry = {"seed": s.seed, "leak": None, "population_change": None, "hydraulic_warnings": results[i][0][2]}
        if s.leak is not None:
            end_s = s.leak.end_s if s.leak.end_s is not None else steps * c.step_s
            flags[row, s.leak.start_s // c.step_s : end_s // c.step_s] = True
            entry["leak"] = {
                **asdict(s.leak),
                "start_ms": int(START_MS + s.leak.start_s * 1000),
                "end_ms": None if s.leak.end_s is None else int(START_MS + s.leak.end_s * 1000),
                "kind": "incipient" if s.leak.ramp_s else "abrupt",
                "mean_flow_lps": round(float(leak_flow[row][flags[row]].mean()), 3),
            }
        if s.population is not None:
            entry["population_change"] = s.population.to_dict()
        described.append(entry)
    columns = [f for f, _ in plan.flows] + list(plan.pressures)
    quantities = ["flow"] * len(plan.flows) + ["pressure"] * len(plan.pressures)
    if c.presence:
        columns.append(PRESENCE_COLUMN)
        quantities.append("cell_count")
    meta = {
        "network": plan.network,
        "seed": seed,
        "step_s": c.step_s,
        "days": c.days,
        "flow_signs": {f: s for f, s in plan.flows},
        "leak_nodes": list(plan.leak_nodes),
        "generator": jsonable(asdict(c)),
        "failed": [{"index": i, "error": results[i][1]} for i in range(len(scenarios)) if results[i][0] is None],
    }
    return ScenarioSet(
        time_ms, values, columns, quantities, [QUANTITY_UNITS[q] for q in quantities], leak_flow, flags, described, meta
    )


def jsonable(value):
    """Dicts and lists of plain values, tuples made lists: as the value reads back from JSON."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value
