"""Simulated air-quality site: weather, traffic, phones per antenna, pollutants, low-cost sensors, faults, labels.

One seeded, numpy-vectorised simulation of a street-side site at 10-minute slots (the
slot of mobile-network aggregates). Every relation is a published one, simplified;
``docs/air-models.md`` lists the sources and what was left out:

* **traffic**: weekday double rush-hour and weekend single broad peak, as in the
  hourly/weekly road-transport profiles of emission inventories (Denier van der Gon
  et al. 2011, TNO/MACC report; CAMS-TEMPO, Guevara et al. 2021, ESSD 13, 367-404),
  with a random factor per day, holidays, road works and evening events.
* **phones per antenna** per slot = residents present + occupants of passing
  vehicles, Poisson-counted, then the privacy guard (counts below 11 suppressed).
* **weather**: seasonal and diurnal temperature, synoptic anomalies (AR(1)); relative
  humidity from a dew point by the Magnus formula (Alduchov & Eskridge 1996); wind
  speed Weibull(k=2) through a Gaussian copula; a mixing-height cycle (low and
  wind-driven at night, convective by day: Seibert et al. 2000, Atmos. Env. 34, 1001).
* **dilution**: box-model concentration ~ emission / (wind x mixing height) (Hanna,
  Briggs & Hosker 1982), with the traffic-produced turbulence floor of street models
  (OSPM, Berkowicz 2000), so a calm night does not divide by zero.
* **regional PM2.5 episodes**: multi-day (2-5 d) secondary-aerosol episodes under
  slack anticyclonic wind, fine-mode (PM2.5/PM10 high) and unrelated to local traffic.
* **evening local sources**: residential wood burning on cold days (daily mean below
  12 degC), evening peak 18-23 h (Fuller et al. 2014, Atmos. Env. 87, 87-94).
* **sensors** (``training.air.sensors``): the optical PM humidity artefact, the
  metal-oxide NO2 drift, and the injected faults (stuck, spike, drift, dropout, fan
  failure).

>>> site = simulate_air_site(days=2, seed=3)
>>> site.time_ms.shape, sorted(site.sensors)[:3], site.pattern.shape
((288,), ['cell_count', 'humidity', 'no2'], (48,))
>>> bool(np.all(site.sensors["cell_count"][~np.isnan(site.sensors["cell_count"])] >= PRIVACY_K))
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
from scipy.signal import lfilter

from edge.air.correction import correct_pm25
from edge.contracts import QUANTITY_UNITS
from edge.datasets import ZoneDataset
from edge.features.air_features import HOUR_SLOTS, SLOT_MS
from edge.sources.cell_counts import DEFAULT_K
from training.air.sensors import DAY_SLOTS, FAN_VALUES, FaultRates, inject_faults, sensor_readings

PRIVACY_K = DEFAULT_K  # the gateway's privacy guard default: statistical offices' minimum per cell
PATTERNS = ("normal", "traffic_peak", "regional_episode", "local_source")
# The sensors of a site, as (column, quantity): also their ids in the replay dataset.
SENSOR_QUANTITIES = {
    "pm25": "pm25",
    "pm10": "pm10",
    "no2": "no2",
    "temperature": "temperature",
    "humidity": "humidity",
    "wind_speed": "wind_speed",
    "cell_count": "cell_count",
}

# Label thresholds on the true source contributions, hourly means (ug/m3).
EPISODE_EXCESS = 12.0  # regional PM2.5 above its non-episode level
LOCAL_SOURCE_PM = 8.0  # wood-burning PM2.5 at the sensor
TRAFFIC_PEAK_NO2 = 25.0  # traffic NO2 increment at the sensor

# Reference ventilation: 4 m/s wind and a 400 m mixed layer give dilution 1.
WIND_REF, MIX_REF, WIND_FLOOR = 4.0, 400.0, 1.0


@dataclass(frozen=True)
class SiteParams:
    """What differs between sites; drawn from the seed unless given."""

    vehicles_peak: float  # vehicles per 10-min slot at the weekday peak
    residents: float  # phones present at night in the zone
    no2_per_vehicle: float  # NO2 increment per vehicle per slot at reference dilution (street geometry, fleet)
    kappa: float  # hygroscopicity of the local aerosol
    pm_gain: float  # optical sensor over-reading at CF=1
    wood_burning: float  # 0..1 propensity of the neighbourhood to light stoves
    antenna_shares: tuple[float, ...]
    mox_offset_per_day: float  # ug/m3 per day of metal-oxide baseline drift
    mox_gain_per_day: float  # relative sensitivity change per day
    episodes_per_week: float

    @classmethod
    def draw(cls, rng: np.random.Generator) -> SiteParams:
        shares = rng.dirichlet([4.0, 2.0, 0.6])
        return cls(
            vehicles_peak=float(rng.uniform(120, 400)),
            residents=float(rng.uniform(60, 300)),
            no2_per_vehicle=float(rng.uniform(0.08, 0.14)),
            kappa=float(rng.uniform(0.1, 0.3)),
            pm_gain=float(rng.uniform(1.0, 1.5)),
            wood_burning=float(rng.uniform(0.3, 1.0)),
            antenna_shares=tuple(float(s) for s in shares),
            mox_offset_per_day=float(rng.choice([-1, 1]) * rng.uniform(0.1, 0.4)),
            mox_gain_per_day=float(rng.uniform(-0.002, 0.002)),
            episodes_per_week=float(rng.uniform(0.15, 0.4)),
        )


@dataclass
class AirSite:
    """A simulated site: measured series, hidden truth, and labels."""

    time_ms: np.ndarray  # int64 [T], slot starts, UTC
    sensors: dict[str, np.ndarray]  # measured, NaN = missing or suppressed
    antenna_counts: np.ndarray  # [T, antennas] after the privacy guard (NaN = suppressed)
    truth: dict[str, np.ndarray]  # true concentrations and drivers [T]
    faults: dict[str, np.ndarray]  # int8 [T] per sensor, codes of training.air.sensors.FAULTS
    pattern: np.ndarray  # int8 [T // 6], codes of PATTERNS per hour
    params: SiteParams
    meta: dict = field(default_factory=dict)

    @property
    def hour_ms(self) -> np.ndarray:
        return self.time_ms[::HOUR_SLOTS][: self.pattern.shape[0]]

    def to_dataset(self) -> ZoneDataset:
        """The measured series as a replayable dataset (columns named after the sensors).

        Adds ``pm25_corrected``, the US EPA humidity correction of the optical PM2.5 as a
        gateway computes it (none for a fan-failure code: that is no measurement).
        """
        names = list(SENSOR_QUANTITIES)
        values = [self.sensors[n] for n in names]
        pm25 = np.where(self.sensors["pm25"] >= FAN_VALUES["pm25"], np.nan, self.sensors["pm25"])
        values.append(correct_pm25(pm25, self.sensors["humidity"]))
        quantities = [SENSOR_QUANTITIES[n] for n in names] + ["pm25_corrected"]
        return ZoneDataset(
            time_ms=self.time_ms,
            values=np.stack(values, axis=1),
            columns=names + ["pm25_corrected"],
            quantities=quantities,
            units=[QUANTITY_UNITS[q] for q in quantities],
            leak_flow_lps=np.zeros(self.time_ms.shape[0]),
            meta={"kind": "air-site", **self.meta},
        )


# ---- building blocks -----------------------------------------------------------------


def ar1(rng: np.random.Generator, n: int, tau_slots: float, sigma: float) -> np.ndarray:
    """Stationary AR(1) noise with correlation time ``tau_slots`` and standard deviation ``sigma``."""
    a = math.exp(-1.0 / tau_slots)
    burn = int(5 * tau_slots)
    white = rng.normal(size=n + burn) * sigma * math.sqrt(1 - a * a)
    return lfilter([1.0], [1.0, -a], white)[burn:]


def _bump(hour: np.ndarray, centre: float, width: float) -> np.ndarray:
    d = (hour - centre + 12.0) % 24.0 - 12.0  # circular distance in hours
    return np.exp(-0.5 * (d / width) ** 2)


def traffic_profile(hour: np.ndarray, weekend: np.ndarray) -> np.ndarray:
    """Relative traffic 0..1: two weekday rush hours, one broad weekend midday peak (TNO/CAMS-TEMPO shapes).

    >>> traffic_profile(np.array([3.0, 8.0, 13.0]), np.array([False, False, True])).round(2).tolist()
    [0.06, 1.01, 0.63]
    """
    weekday = 0.06 + 0.86 * _bump(hour, 8.0, 1.0) + 0.78 * _bump(hour, 17.5, 1.5) + 0.42 * _bump(hour, 12.5, 2.6)
    weekend_p = 0.07 + 0.56 * _bump(hour, 13.0, 3.2) + 0.18 * _bump(hour, 19.5, 2.0)
    return np.where(weekend, weekend_p, weekday)


def magnus_rh(temperature: np.ndarray, dew_point: np.ndarray) -> np.ndarray:
    """Relative humidity (%) from temperature and dew point (Magnus, Alduchov & Eskridge 1996).

    >>> float(magnus_rh(np.array(20.0), np.array(20.0))), round(float(magnus_rh(np.array(20.0), np.array(10.0))), 1)
    (100.0, 52.5)
    """

    def es(t):
        return np.exp(17.625 * t / (243.04 + t))

    return np.clip(100.0 * es(np.minimum(dew_point, temperature)) / es(temperature), 0.0, 100.0)


# ---- the simulation ------------------------------------------------------------------


def simulate_air_site(
    days: int = 14,
    seed: int = 0,
    start: str = "2025-11-03",
    faults: FaultRates | None = None,
    params: SiteParams | None = None,
    mox_drift: bool = True,
    progress: bool = False,
) -> AirSite:
    """Simulate ``days`` days of one site from ``start`` (a date, UTC midnight); seeded.

    ``faults`` None gives the default rates (:class:`FaultRates`), ``training.air.sensors.NO_FAULTS`` none.
    ``mox_drift`` False keeps the NO2 sensor's calibration true (for drift tests).
    """
    if not isinstance(days, int) or days < 2:
        raise ValueError(f"days must be a whole number >= 2, got {days!r}")
    rng = np.random.default_rng([seed, 0])
    params = params or SiteParams.draw(rng)
    faults = FaultRates() if faults is None else faults
    t0 = datetime.fromisoformat(start).replace(tzinfo=UTC)
    n = days * DAY_SLOTS
    time_ms = int(t0.timestamp() * 1000) + np.arange(n, dtype=np.int64) * SLOT_MS
    from tqdm import tqdm

    bar = tqdm(total=7, desc=f"air site {seed}", unit="stage", leave=False, disable=not progress)

    clock = _clock(time_ms)
    weather = _weather(np.random.default_rng([seed, 1]), clock, params)
    bar.update()
    traffic = _traffic(np.random.default_rng([seed, 2]), clock, params)
    bar.update()
    counts = _phones(np.random.default_rng([seed, 3]), clock, traffic, params)
    bar.update()
    truth = _air(np.random.default_rng([seed, 4]), clock, weather, traffic, params)
    bar.update()
    sensors = sensor_readings(np.random.default_rng([seed, 5]), clock, weather, truth, params, mox_drift)
    sensors["cell_count"] = np.nansum(counts, axis=1)
    sensors["cell_count"][np.all(np.isnan(counts), axis=1)] = np.nan
    bar.update()
    fault_codes = inject_faults(np.random.default_rng([seed, 6]), sensors, faults, n)
    bar.update()
    pattern = pattern_labels(truth)
    bar.update()
    bar.close()
    truth.update(weather)
    truth["vehicles"] = traffic
    meta = {"seed": seed, "days": days, "start": start, "mox_drift": mox_drift}
    return AirSite(time_ms, sensors, counts, truth, fault_codes, pattern, params, meta)


def _clock(time_ms: np.ndarray) -> dict[str, np.ndarray]:
    seconds = time_ms // 1000
    day_index = (seconds - seconds[0]) // 86400
    hour = (seconds % 86400) / 3600.0
    weekday = ((seconds // 86400) + 3) % 7  # 1970-01-01 was a Thursday (3)
    doy = np.array([datetime.fromtimestamp(int(s), tz=UTC).timetuple().tm_yday for s in seconds[::DAY_SLOTS]])[
        day_index
    ]
    return {"hour": hour, "weekend": weekday >= 5, "day": day_index, "doy": doy}


def _weather(rng, clock, params) -> dict[str, np.ndarray]:
    n = clock["hour"].shape[0]
    hour, doy = clock["hour"], clock["doy"]
    season = -np.cos(2 * np.pi * (doy - 20) / 365.0)  # -1 mid-January, +1 mid-July
    synoptic = ar1(rng, n, 3 * DAY_SLOTS, 3.5)
    wind_z = ar1(rng, n, 1.5 * DAY_SLOTS, 1.0) + 0.25 * ar1(rng, n, 6, 1.0)
    # Weibull(k=2, scale 4.5 m/s) margins through a Gaussian copula.
    from scipy.stats import norm

    u = np.clip(norm.cdf(wind_z / math.sqrt(1.0625)), 1e-6, 1 - 1e-6)
    wind = 4.5 * np.sqrt(-np.log(1 - u)) * (1 + 0.2 * _bump(hour, 14.0, 3.0))
    # Calm days have larger diurnal swings (clear skies, weak mixing).
    amplitude = 3.0 + 2.0 * season + 2.0 * np.exp(-wind / 3.0)
    temperature = 10.5 + 8.5 * season + synoptic + amplitude * np.cos(2 * np.pi * (hour - 15.0) / 24.0)
    daily_mean = 10.5 + 8.5 * season + synoptic
    depression = 2.0 + 1.5 * season + 1.0 * ar1(rng, n, DAY_SLOTS, 1.0) + 0.3 * wind
    rh = magnus_rh(temperature, daily_mean - np.maximum(depression, 0.2) - 0.3 * amplitude)
    daylength = 12.0 + 3.8 * season
    sunrise = 12.0 - daylength / 2
    daytime = np.clip(np.sin(np.pi * (hour - sunrise - 1.0) / (daylength - 1.0)), 0.0, None)
    night_h = 60.0 + 45.0 * wind
    day_h = 500.0 + 450.0 * (season + 1)  # convective boundary layer, deeper in summer
    mixing = night_h + np.maximum(day_h - night_h, 0) * daytime**1.5
    return {
        "temperature_true": temperature,
        "humidity_true": rh,
        "wind_true": wind,
        "mixing_height": mixing,
        "daily_temperature": daily_mean,
    }


def _traffic(rng, clock, params) -> np.ndarray:
    day, hour = clock["day"], clock["hour"]
    n_days = int(day[-1]) + 1
    weekend_day = clock["weekend"][::DAY_SLOTS][:n_days].copy()
    holiday = (~weekend_day) & (rng.random(n_days) < 0.04)
    factor = rng.lognormal(0.0, 0.15, n_days)
    works = np.ones(n_days)
    for _ in range(rng.poisson(n_days / 21)):  # road works: a lane closed for days
        s = rng.integers(0, n_days)
        works[s : s + rng.integers(2, 6)] = rng.uniform(0.45, 0.7)
    event = rng.random(n_days) < 0.06  # concerts, matches: an evening surge
    weekend = (weekend_day | holiday)[day]
    profile = traffic_profile(hour, weekend) + event[day] * 0.5 * _bump(hour, 22.0, 1.2)
    slot_noise = np.exp(ar1(rng, hour.shape[0], 3, 0.12))
    return params.vehicles_peak * profile * factor[day] * works[day] * slot_noise


def _phones(rng, clock, vehicles, params) -> np.ndarray:
    hour, weekend = clock["hour"], clock["weekend"]
    away = (~weekend) * np.clip(np.sin(np.pi * (hour - 7.5) / 10.0), 0, None)  # at work by day
    n_days = int(clock["day"][-1]) + 1
    present = params.residents * (1 - 0.35 * away) * rng.lognormal(0, 0.05, n_days)[clock["day"]]
    expected = present + 1.25 * vehicles  # occupants with a phone, seen once per slot
    shares = np.asarray(params.antenna_shares)
    counts = rng.poisson(expected[:, None] * shares[None, :]).astype(float)
    counts[counts < PRIVACY_K] = np.nan  # the privacy guard: never kept, never summed
    return counts


def dilution(wind: np.ndarray, mixing: np.ndarray) -> np.ndarray:
    """Box-model dilution relative to 4 m/s and 400 m, with a street-turbulence floor on the wind."""
    return (WIND_REF + WIND_FLOOR) / (wind + WIND_FLOOR) * (MIX_REF / mixing) ** 0.3


def _episodes(rng, n: int, per_week: float) -> np.ndarray:
    """Multi-day regional PM2.5 excess (ug/m3): smooth rise, plateau, fall."""
    excess = np.zeros(n)
    for _ in range(rng.poisson(per_week * n / (7 * DAY_SLOTS))):
        length = int(rng.uniform(2, 5) * DAY_SLOTS)
        start = int(rng.integers(-length // 2, n))
        k = np.arange(length)
        ramp = np.minimum(1.0, np.minimum(k, length - 1 - k) / (0.6 * DAY_SLOTS))
        shape = np.sin(0.5 * np.pi * ramp) ** 2
        amp = rng.uniform(20, 55)
        lo, hi = max(start, 0), min(start + length, n)
        if hi > lo:
            excess[lo:hi] = np.maximum(excess[lo:hi], amp * shape[lo - start : hi - start])
    return excess


def _air(rng, clock, weather, vehicles, params) -> dict[str, np.ndarray]:
    n = vehicles.shape[0]
    hour = clock["hour"]
    winter = np.clip(-np.cos(2 * np.pi * (clock["doy"] - 20) / 365.0), 0, None)  # 0 summer .. 1 January
    episode = _episodes(rng, n, params.episodes_per_week)
    stagnant = episode / 55.0
    wind = weather["wind_true"] * (1 - 0.5 * stagnant)  # episodes come with slack winds
    weather["wind_true"] = wind
    dil = dilution(wind, weather["mixing_height"])
    no2_traffic = params.no2_per_vehicle * vehicles * dil
    no2_background = np.maximum(
        8.0 + 8.0 * winter + ar1(rng, n, 2 * DAY_SLOTS, 3.0) + 0.25 * episode + 4.0 * (dil - 1.0), 2.0
    )
    pm_base = (6.0 + 5.0 * winter) * np.exp(ar1(rng, n, 1.5 * DAY_SLOTS, 0.25))
    # Wood burning: a cold day's evening, 17:30 to ~00:30, peak ~20:30, lingering in the stable night.
    n_days = int(clock["day"][-1]) + 1
    daily_t = weather["daily_temperature"][::DAY_SLOTS][:n_days]
    p_burn = params.wood_burning * np.clip((12.0 - daily_t) / 10.0, 0, 1)
    burning = rng.random(n_days) < p_burn
    strength = rng.lognormal(math.log(22.0), 0.45, n_days) * burning
    since = (hour - 17.5) % 24.0  # hours since 17:30 (past midnight belongs to the previous evening)
    evening_day = np.where(hour < 17.5, clock["day"] - 1, clock["day"])
    shape = np.where(since < 7.0, np.sin(np.pi * since / 7.0) ** 2, 0.0)
    wood = strength[np.clip(evening_day, 0, None)] * (evening_day >= 0) * shape * dil**0.8
    pm25 = pm_base + episode + wood + 0.1 * no2_traffic
    coarse = 5.0 + 3.0 * np.exp(ar1(rng, n, DAY_SLOTS, 0.3)) + 0.15 * no2_traffic
    return {
        "no2": no2_background + no2_traffic,
        "no2_traffic": no2_traffic,
        "no2_background": no2_background,
        "pm25": pm25,
        "pm10": pm25 + coarse,
        "episode_pm25": episode,
        "wood_pm25": wood,
        "pm25_base": pm_base,
    }


def pattern_labels(truth: dict[str, np.ndarray]) -> np.ndarray:
    """Pattern code per hour from the true contributions: episode > local source > traffic peak > normal."""

    def hourly(x):
        h = x.shape[0] // HOUR_SLOTS
        return x[: h * HOUR_SLOTS].reshape(h, HOUR_SLOTS).mean(axis=1)

    episode, wood, traffic = hourly(truth["episode_pm25"]), hourly(truth["wood_pm25"]), hourly(truth["no2_traffic"])
    label = np.zeros(episode.shape[0], dtype=np.int8)
    label[traffic >= TRAFFIC_PEAK_NO2] = PATTERNS.index("traffic_peak")
    label[wood >= LOCAL_SOURCE_PM] = PATTERNS.index("local_source")
    label[episode >= EPISODE_EXCESS] = PATTERNS.index("regional_episode")
    return label


__all__ = [
    "AirSite",
    "SiteParams",
    "PATTERNS",
    "simulate_air_site",
    "pattern_labels",
    "traffic_profile",
    "magnus_rh",
    "dilution",
]
