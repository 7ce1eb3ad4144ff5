"""Simulate two weeks of a metered water zone (EPANET Net3) with one leak, as a ZoneDataset.

The zone is all of Net3 except its sources. Its district meters are on the links
feeding it: pump ``10`` (from Lake), pipe ``60`` (from River) and the pipes of the
three tanks (``40``, ``50``, ``20``), each signed so that water entering the zone is
positive; their sum is then the zone's consumption plus its leak. A few pressure
sensors are spread over the network.

Uncertainty, all seeded: each junction's daily pattern is unrolled to 15 minutes over
the whole period and multiplied by a per-day factor shared by the zone (weather, day of
week) and a per-step, per-junction noise; sensor noise is added after simulation. The
leak-free run with the same seed has exactly the same demands and sensor noise.

Leaks need ``WNTRSimulator`` with pressure-driven demand: ``EpanetSimulator``
silently ignores ``Junction.add_leak``.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import wntr
from scipy.optimize import OptimizeWarning
from tqdm import tqdm
from wntr.network.controls import Control, SimTimeCondition

from edge.contracts import datetime_to_ms
from edge.datasets import ZoneDataset

NETWORK = "Net3"
START = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday: day-of-week effects line up
START_MS = datetime_to_ms(START)
DAY_S = 86_400
WEEK_S = 7 * DAY_S

# District meters: link -> the zone's source at its other end.
INFLOW_LINKS = {"10": "Lake", "60": "River", "40": "1", "50": "2", "20": "3"}
# Spread over the network (west, north, east, centre, south-east), away from the
# pump suction nodes where pressure is near zero or negative.
PRESSURE_NODES = ("101", "123", "141", "173", "247")

DEMAND_DAY_FACTOR = 0.05  # uniform +-5 % per day, shared by every junction
DEMAND_STEP_NOISE = 0.03  # uniform +-3 % per step and junction
FLOW_NOISE_REL = 0.005  # meter noise: 0.5 % of reading ...
FLOW_NOISE_ABS_LPS = 0.1  # ... plus 0.1 L/s (standard deviations)
PRESSURE_NOISE_M = 0.1  # transducer noise, standard deviation
DISCHARGE_COEFF = 0.75  # orifice coefficient of the leak, Q = Cd * A * sqrt(2 g h)


class SimulationError(RuntimeError):
    """The hydraulic simulation could not produce the dataset."""


@dataclass(frozen=True)
class LeakSpec:
    """A round hole at a junction, open from ``start_s`` to ``end_s`` (seconds after start; None = never closes)."""

    node: str
    diameter_m: float
    start_s: int
    end_s: int | None = None

    @property
    def area_m2(self) -> float:
        return math.pi * self.diameter_m**2 / 4


# Tuesday of the second week, 13:00 UTC: the first leaky night is 13 h later, after
# 9 leak-free nights of history.
# Net3's minimum night flow is ~670-740 L/s, over half of it large constant users
# (nodes 203, 35, 15). Against +-5 % day-to-day demand, a leak must pass ~25 % of
# that to clear the 20 % MNF threshold every time: a 10 cm hole gives ~174 L/s
# (measured, seeds 1-7). A 5 cm hole (~44 L/s, ~6 %) stays invisible to MNF here.
DEFAULT_LEAK = LeakSpec(node="163", diameter_m=0.10, start_s=8 * DAY_S + 13 * 3600)


def simulate_zone(
    seed: int = 7,
    days: int = 14,
    step_s: int = 900,
    leak: LeakSpec | None = DEFAULT_LEAK,
    progress: bool = True,
) -> ZoneDataset:
    """Run the Net3 zone for ``days`` at ``step_s`` and return the noisy sensor data and the true leak flow."""
    steps = days * DAY_S // step_s
    wn, signs, noise_rng = _build_network(seed, days, step_s, leak)

    started = time.perf_counter()
    results = _run_by_day(wn, days, progress)
    sim_seconds = time.perf_counter() - started

    t_s = np.arange(steps) * step_s
    flows = results["flowrate"].reindex(index=t_s)[list(INFLOW_LINKS)].to_numpy() * 1000.0
    flows *= np.array([signs[link] for link in INFLOW_LINKS])
    pressures = results["pressure"].reindex(index=t_s)[list(PRESSURE_NODES)].to_numpy()
    if leak is None:
        leak_flow = np.zeros(steps)
    else:
        leak_flow = results["leak_demand"].reindex(index=t_s)[leak.node].to_numpy() * 1000.0
    clean = np.hstack([flows, pressures])
    if not np.all(np.isfinite(clean)) or not np.all(np.isfinite(leak_flow)):
        raise SimulationError("the simulation returned missing values (time steps lost between daily runs?)")

    noise_sd = np.hstack(
        [FLOW_NOISE_REL * np.abs(flows) + FLOW_NOISE_ABS_LPS, np.full_like(pressures, PRESSURE_NOISE_M)]
    )
    values = clean + noise_rng.normal(0.0, 1.0, clean.shape) * noise_sd

    time_ms = START_MS + t_s.astype(np.int64) * 1000
    active = leak_flow > 0
    meta = {
        "network": NETWORK,
        "seed": seed,
        "days": days,
        "step_s": step_s,
        "start_ms": int(time_ms[0]),
        "end_ms": int(time_ms[-1] + step_s * 1000),
        "inflow_signs": {link: 1 for link in INFLOW_LINKS},  # values are stored already signed
        "demand_day_factor": DEMAND_DAY_FACTOR,
        "demand_step_noise": DEMAND_STEP_NOISE,
        "leak_node": None if leak is None else leak.node,
        "leak_diameter_m": None if leak is None else leak.diameter_m,
        "leak_start_ms": None if leak is None else START_MS + leak.start_s * 1000,
        "leak_end_ms": None if leak is None or leak.end_s is None else START_MS + leak.end_s * 1000,
        "leak_mean_flow_lps": float(leak_flow[active].mean()) if active.any() else 0.0,
        "simulation_s": round(sim_seconds, 2),
    }
    return ZoneDataset(
        time_ms=time_ms,
        values=values.astype(np.float32),
        columns=list(INFLOW_LINKS) + list(PRESSURE_NODES),
        quantities=["flow"] * len(INFLOW_LINKS) + ["pressure"] * len(PRESSURE_NODES),
        units=["L/s"] * len(INFLOW_LINKS) + ["m"] * len(PRESSURE_NODES),
        leak_flow_lps=leak_flow.astype(np.float32),
        meta=meta,
    )


def true_zone_demand(seed: int = 7, days: int = 14, step_s: int = 900, leak: LeakSpec | None = DEFAULT_LEAK):
    """Noise-free inflow sum and junction demand + leak (L/s), for checking the meter signs."""
    wn, signs, _ = _build_network(seed, days, step_s, leak)
    results = _run_by_day(wn, days, progress=False)
    inflow = sum(results["flowrate"][link] * signs[link] for link in INFLOW_LINKS) * 1000.0
    consumption = results["demand"][wn.junction_name_list].sum(axis=1) * 1000.0
    leaks = results["leak_demand"][wn.junction_name_list].sum(axis=1) * 1000.0
    return inflow.to_numpy(), (consumption + leaks).to_numpy()


def _build_network(seed: int, days: int, step_s: int, leak: LeakSpec | None):
    """Net3 with unrolled demands, repeated pump schedule and the leak; returns (wn, meter signs, noise rng)."""
    if days < 1 or step_s < 60 or DAY_S % step_s:
        raise ValueError(f"need days >= 1 and a step dividing one day (>= 60 s), got days={days}, step_s={step_s}")
    steps = days * DAY_S // step_s
    # Two streams: demands do not depend on whether a leak is simulated, nor on sensor noise.
    demand_rng, noise_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    wn = wntr.network.WaterNetworkModel(wntr.library.model_library.get_filepath(NETWORK))
    wn.options.time.duration = (steps - 1) * step_s
    wn.options.time.hydraulic_timestep = step_s
    wn.options.time.report_timestep = step_s
    wn.options.hydraulic.demand_model = "PDD"
    _unroll_demand_patterns(wn, days, step_s, demand_rng)
    _repeat_weekly_controls(wn, days)
    if leak is not None:
        _add_leak(wn, leak, steps * step_s)
    return wn, _inflow_signs(wn), noise_rng


def _unroll_demand_patterns(wn, days: int, step_s: int, rng: np.random.Generator) -> None:
    """Give each junction its own pattern at ``step_s`` over the whole period."""
    pattern_step = wn.options.time.pattern_timestep
    steps_per_day = DAY_S // step_s
    clock_s = np.arange(steps_per_day) * step_s
    day_factor = 1.0 + rng.uniform(-DEMAND_DAY_FACTOR, DEMAND_DAY_FACTOR, days)
    default_pattern = wn.options.hydraulic.pattern
    for name in wn.junction_name_list:
        junction = wn.get_node(name)
        for i, demand in enumerate(junction.demand_timeseries_list):
            pattern = demand.pattern or (wn.get_pattern(default_pattern) if default_pattern else None)
            if pattern is None:
                daily = np.ones(steps_per_day)
            else:
                # EPANET holds each multiplier for a whole pattern step (no interpolation).
                multipliers = np.asarray(pattern.multipliers, dtype=float)
                daily = multipliers[(clock_s // pattern_step).astype(int) % len(multipliers)]
            noise = 1.0 + rng.uniform(-DEMAND_STEP_NOISE, DEMAND_STEP_NOISE, days * steps_per_day)
            series = np.tile(daily, days) * np.repeat(day_factor, steps_per_day) * noise
            new_name = f"zone_{name}_{i}"
            wn.add_pattern(new_name, series.tolist())
            demand.pattern_name = new_name
    wn.options.time.pattern_timestep = step_s


def _repeat_weekly_controls(wn, days: int) -> None:
    """Net3 schedules pump 10 by simulation time for one week only: repeat that week."""
    timed = []
    for name in wn.control_name_list:
        control = wn.get_control(name)
        if isinstance(control, Control) and isinstance(control.condition, SimTimeCondition):
            timed.append((name, control))
    for name, control in timed:
        first = control.condition._threshold  # wntr exposes no public getter
        if first >= WEEK_S:
            continue
        for week in range(1, math.ceil(days / 7)):
            at = first + week * WEEK_S
            if at >= days * DAY_S:
                break
            for action in control.actions():
                repeat = Control(SimTimeCondition(wn, "=", at), action, priority=control.priority)
                wn.add_control(f"{name} week {week + 1}", repeat)


def _inflow_signs(wn) -> dict[str, int]:
    """+1 where wntr's positive flow leaves the source (link starts there), -1 where it enters it."""
    signs = {}
    for link_name, source in INFLOW_LINKS.items():
        link = wn.get_link(link_name)
        if link.start_node_name == source:
            signs[link_name] = 1
        elif link.end_node_name == source:
            signs[link_name] = -1
        else:
            raise SimulationError(f"meter link {link_name} does not touch source {source}")
    return signs


def _add_leak(wn, leak: LeakSpec, period_s: int) -> None:
    if leak.node not in wn.junction_name_list:
        raise ValueError(f"leak node {leak.node!r} is not a junction of {NETWORK}")
    if not 0 < leak.diameter_m < 1:
        raise ValueError(f"leak diameter must be in metres, between 0 and 1, got {leak.diameter_m}")
    if not 0 <= leak.start_s < period_s or (leak.end_s is not None and leak.end_s <= leak.start_s):
        raise ValueError(f"leak start {leak.start_s} s / end {leak.end_s} s do not fit a {period_s} s simulation")
    wn.get_node(leak.node).add_leak(
        wn, area=leak.area_m2, discharge_coeff=DISCHARGE_COEFF, start_time=leak.start_s, end_time=leak.end_s
    )


def _run_by_day(wn, days: int, progress: bool) -> dict[str, pd.DataFrame]:
    """Run one day at a time (wntr resumes where it stopped) so the progress bar means something."""
    total = wn.options.time.duration
    sim = wntr.sim.WNTRSimulator(wn)
    parts = []
    # wntr logs every time step at INFO: under the CLI's INFO logging that floods the terminal.
    wntr_logger = logging.getLogger("wntr")
    level = wntr_logger.level
    wntr_logger.setLevel(max(level, logging.WARNING))
    try:
        with warnings.catch_warnings():
            # Net3's multi-point pump curve makes scipy warn; wntr means to silence it but
            # only does so at import, which test runners undo.
            warnings.simplefilter("ignore", OptimizeWarning)
            for day in tqdm(range(1, days + 1), desc=f"simulating {NETWORK}", unit="day", disable=not progress):
                wn.options.time.duration = min(day * DAY_S, total)
                try:
                    parts.append(sim.run_sim(convergence_error=True))
                except Exception as exc:  # wntr raises bare RuntimeError and others on divergence
                    raise SimulationError(f"hydraulics did not converge on day {day}: {exc}") from exc
    finally:
        wntr_logger.setLevel(level)
    merged = {}
    for key in ("flowrate",):
        merged[key] = _concat([p.link[key] for p in parts])
    for key in ("pressure", "demand", "leak_demand"):
        merged[key] = _concat([p.node[key] for p in parts])
    return merged


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    frame = pd.concat(frames)
    return frame[~frame.index.duplicated(keep="last")]
