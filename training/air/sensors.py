"""The low-cost sensors of a simulated air site: what they read of the true air, and the faults injected into them.

* **humidity artefact** of optical PM: kappa-Koehler growth 1 + (kappa/1.65)/(1/aw - 1),
  steep above ~70 % RH (Crilley et al. 2018, AMT 11, 709-720);
* **metal-oxide NO2 drift**: offset and sensitivity that wander over weeks (Spinelle
  et al. 2015, Sens. Actuators B 215, 249-257);
* **faults** injected per sensor: stuck, spike, drift, dropout, fan failure (999.9 /
  1999.9, field notes).

>>> FaultRates().scaled(2.0).spike, FAULT_CODE["fan_failure"]
(4.0, 5)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.features.air_features import HOUR_SLOTS, hygroscopic_growth

DAY_SLOTS = 144
FAULTS = ("ok", "stuck", "spike", "drift", "dropout", "fan_failure")
FAULT_CODE = {name: i for i, name in enumerate(FAULTS)}
FAULTY_SENSORS = ("pm25", "pm10", "no2", "temperature", "humidity")
FAN_VALUES = {"pm25": 999.9, "pm10": 1999.9}  # what an SDS011 reads with a dead fan
RESOLUTION = {"pm25": 0.1, "pm10": 0.1, "no2": 0.1, "temperature": 0.1, "humidity": 0.1, "wind_speed": 0.1}


@dataclass(frozen=True)
class FaultRates:
    """Expected fault events per sensor per week; durations in slots (min, max)."""

    stuck: float = 0.5
    spike: float = 2.0
    drift: float = 0.1
    dropout: float = 1.0
    fan_failure: float = 0.3  # per PM device (pm25 and pm10 fail together)

    def scaled(self, factor: float) -> FaultRates:
        return FaultRates(
            *(round(factor * getattr(self, k), 6) for k in ("stuck", "spike", "drift", "dropout", "fan_failure"))
        )


NO_FAULTS = FaultRates(0, 0, 0, 0, 0)
FAULT_SLOTS = {"stuck": (6, 72), "dropout": (1, 36), "fan_failure": (12, 432), "drift": (288, 1440)}


def _quantise(x: np.ndarray, step: float) -> np.ndarray:
    return np.round(x / step) * step


def sensor_readings(rng, clock, weather, truth, params, mox_drift: bool) -> dict[str, np.ndarray]:
    """What the site's sensors read of the true air and weather, at their resolution (before any fault)."""
    n = truth["pm25"].shape[0]
    rh = weather["humidity_true"]
    growth = hygroscopic_growth(rh, params.kappa)
    pm25 = params.pm_gain * truth["pm25"] * growth
    pm25 = pm25 + rng.normal(size=n) * (0.8 + 0.05 * pm25)
    # Optical sensors undercount coarse dust: only half of it is seen.
    coarse = truth["pm10"] - truth["pm25"]
    pm10 = params.pm_gain * (truth["pm25"] * growth + 0.5 * coarse)
    pm10 = pm10 + rng.normal(size=n) * (1.0 + 0.06 * pm10)
    days = clock["day"] + clock["hour"] / 24.0
    offset = params.mox_offset_per_day * days if mox_drift else 0.0
    gain = 1.0 + (params.mox_gain_per_day * days if mox_drift else 0.0)
    no2 = gain * truth["no2"] + offset + 0.15 * (weather["temperature_true"] - 15.0) + rng.normal(size=n) * 2.5
    out = {
        "pm25": np.clip(pm25, 0, 999.8),
        "pm10": np.clip(pm10, 0, 1999.8),
        "no2": np.clip(no2, 0, None),
        "temperature": weather["temperature_true"] + rng.normal(size=n) * 0.08,
        "humidity": np.clip(rh + rng.normal(size=n) * 0.7, 0, 100),
        "wind_speed": np.clip(weather["wind_true"] + rng.normal(size=n) * 0.2, 0, None),
    }
    truth["mox_offset"] = np.broadcast_to(offset, (n,)).astype(float)
    return {k: _quantise(v, RESOLUTION[k]) for k, v in out.items()}


def inject_faults(rng, sensors, rates: FaultRates, n: int) -> dict[str, np.ndarray]:
    """Overwrite sensor values with faults; return the fault code per slot and sensor."""
    codes = {s: np.zeros(n, dtype=np.int8) for s in FAULTY_SENSORS}
    weeks = n / (7 * DAY_SLOTS)
    spans = []  # (sensors, kind, start, end)
    for kind in ("fan_failure", "stuck", "dropout", "drift", "spike"):
        targets = [("pm25", "pm10")] if kind == "fan_failure" else [(s,) for s in FAULTY_SENSORS]
        if kind == "drift":
            targets = [(s,) for s in ("pm25", "temperature", "humidity")]  # MOx NO2 drifts on its own
        for group in targets:
            for _ in range(rng.poisson(getattr(rates, kind) * weeks)):
                lo, hi = FAULT_SLOTS.get(kind, (1, 1))
                length = int(rng.integers(lo, hi + 1))
                start = int(rng.integers(1, max(2, n - length)))
                end = min(n, start + length)
                # One fault at a time per sensor, with a clean hour around it.
                if any(np.any(codes[s][max(0, start - HOUR_SLOTS) : end + HOUR_SLOTS]) for s in group):
                    continue
                for s in group:
                    codes[s][start:end] = FAULT_CODE[kind]
                spans.append((group, kind, start, end))
    for group, kind, start, end in spans:
        for s in group:
            x = sensors[s]
            if kind == "stuck":
                x[start:end] = x[start - 1] if not np.isnan(x[start - 1]) else np.nanmedian(x)
            elif kind == "dropout":
                x[start:end] = np.nan
            elif kind == "fan_failure":
                x[start:end] = FAN_VALUES[s]
            elif kind == "drift":
                x[start:end] += np.linspace(0, rng.choice([-1, 1]) * _drift_size(s, rng), end - start)
            elif kind == "spike":
                x[start:end] = _spike(s, x[start], rng)
            _limits(s, x)
    return codes


def _drift_size(sensor: str, rng) -> float:
    return {"pm25": rng.uniform(10, 25), "temperature": rng.uniform(2, 5), "humidity": rng.uniform(8, 20)}[sensor]


def _spike(sensor: str, value: float, rng) -> float:
    base = 0.0 if np.isnan(value) else value
    sign = rng.choice([-1.0, 1.0])
    if sensor in ("pm25", "pm10"):
        return base * rng.uniform(3, 8) + rng.uniform(30, 150)  # a puff through the inlet: upward only
    if sensor == "no2":
        return base + rng.uniform(60, 200)
    if sensor == "temperature":
        return base + sign * rng.uniform(8, 20)
    return base + sign * rng.uniform(20, 40)  # humidity


def _limits(sensor: str, x: np.ndarray) -> None:
    if sensor == "humidity":
        np.clip(x, 0, 100, out=x)
    elif sensor in ("pm25", "pm10", "no2"):
        np.clip(x, 0, None, out=x)
