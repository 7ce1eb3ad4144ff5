"""Uncertain water demand for simulated scenarios, and the mobile-network presence that can drive it.

Each junction's demand at step t is, as in LeakDB (base x weekly x yearly x noise):

    base_j * (1 + U(-b, b))                     static, per junction (b = 25 %)
    * pattern_j(t)                              the network's own daily pattern
    * weekday(t) * season(t) * day(d)           shared by the zone
    * (1 + s * population_change(t))            s = share of demand that follows people
    * (1 + N(0, step_noise))                    per junction and step

``weekday`` gives Saturday and Sunday their own factor; ``season`` is a yearly sine
with random amplitude and phase (over a month, a slow drift); ``day`` is an
independent uniform factor per day (weather, events: +-5 %, as in
``training.water.zone``; it is what hides small leaks from Minimum Night Flow).
A population change (holidays, an event, tourists) scales
the people-driven share of demand and the zone's presence count, the aggregate a
mobile operator publishes (counts per cell and time slot; counts under
``MIN_PUBLISHED_COUNT`` are suppressed, as statistical offices do).

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> f = zone_factor(96 * 7, 900, DemandUncertainty(), rng)
>>> f.shape, bool(0.8 < f.min() and f.max() < 1.2)
((672,), True)
>>> change = PopulationChange(start_s=86_400, end_s=2 * 86_400, change=-0.3)
>>> change.series(96 * 3, 900)[[0, 96, 191, 192]].tolist()
[0.0, -0.3, -0.3, 0.0]
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

DAY_S = 86_400
MIN_PUBLISHED_COUNT = 11


@dataclass(frozen=True)
class DemandUncertainty:
    """How uncertain the demand of a simulated zone is: per junction, per step, per day, by season."""

    base_demand: float = 0.25  # +- fraction on each junction's base demand (static per scenario)
    step_noise: float = 0.05  # standard deviation of the per-junction, per-step multiplier
    weekend: tuple[float, float] = (0.92, 1.04)  # range of the Saturday / Sunday factors
    season_amplitude: float = 0.08  # at most, of the yearly sine
    day_factor: float = 0.05  # +- fraction, uniform, independent per day, shared by the zone
    population_share: float = 0.8  # of demand that follows the number of people present

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class PopulationChange:
    """From ``start_s`` to ``end_s`` the zone holds ``1 + change`` times its usual population."""

    start_s: int
    end_s: int
    change: float

    def series(self, steps: int, step_s: int) -> np.ndarray:
        t = np.arange(steps) * step_s
        return np.where((t >= self.start_s) & (t < self.end_s), self.change, 0.0)

    def to_dict(self) -> dict:
        return asdict(self)


def zone_factor(
    steps: int,
    step_s: int,
    u: DemandUncertainty,
    rng: np.random.Generator,
    start_weekday: int = 0,
    start_day_of_year: float | None = None,
    population: PopulationChange | None = None,
) -> np.ndarray:
    """The zone-wide demand multiplier per step (weekday x season x day x population)."""
    t_days = np.arange(steps) * step_s / DAY_S
    day = t_days.astype(int)
    n_days = int(day[-1]) + 1
    weekday = np.ones(7)
    weekday[5:] = rng.uniform(*u.weekend, 2)
    phase = rng.uniform(0, 365) if start_day_of_year is None else start_day_of_year
    amplitude = rng.uniform(0, u.season_amplitude)
    season = 1 + amplitude * np.sin(2 * math.pi * (t_days + phase) / 365.0)
    per_day = 1 + rng.uniform(-u.day_factor, u.day_factor, n_days)
    factor = weekday[(day + start_weekday) % 7] * season * per_day[day]
    if population is not None:
        factor = factor * (1 + u.population_share * population.series(steps, step_s))
    return factor


def junction_multipliers(
    pattern: np.ndarray, zone: np.ndarray, u: DemandUncertainty, rng: np.random.Generator
) -> np.ndarray:
    """One junction's pattern x zone factor x its own noise, never negative."""
    noise = 1 + rng.normal(0, u.step_noise, pattern.shape[0])
    return np.clip(pattern * zone * noise, 0.0, None)


def presence_counts(
    steps: int, step_s: int, rng: np.random.Generator, population: PopulationChange | None = None
) -> np.ndarray:
    """People present in the zone's cells per step (float counts; NaN = suppressed small count).

    Residents are mostly present at night and partly away by day (commuting); counts
    carry Poisson noise.
    """
    people = rng.uniform(2_000, 20_000)
    hours = (np.arange(steps) * step_s % DAY_S) / 3600
    away_by_day = rng.uniform(0.1, 0.3)
    diurnal = 1 - away_by_day * np.clip(np.sin(math.pi * (hours - 7) / 12), 0, None)
    change = population.series(steps, step_s) if population is not None else 0.0
    counts = rng.poisson(people * diurnal * (1 + change)).astype(np.float64)
    counts[counts < MIN_PUBLISHED_COUNT] = np.nan
    return counts
