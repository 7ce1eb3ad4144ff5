"""A simulated air site whose metal-oxide NO2 sensor drifts, and what recalibrating it buys (issue 13's third target).

The site is ``training.air.simulation``'s street-side site with no injected faults and
a drift at the top of the simulator's range (Spinelle et al. 2015): the baseline
moves ``offset_per_day`` ug/m3 a day and the sensitivity ``gain_per_day`` a day. The
story a water/air service lives through:

1. a 30-day co-location next to a reference trains the first calibration
   (``train air-calibration``, its selection; inputs the sensor's NO2, temperature,
   humidity);
2. the sensor keeps drifting; the gateway's drift detector says when
   (``recalibration_needed``, docs/air-models.md);
3. a 7-day co-location from then recalibrates it (``train air-calibration --update``).

``recalibration_scores`` measures, on the days after each co-location, the first
calibration fresh, the same calibration later (stale), the update, and a calibration
trained from scratch on the same 7 days: the target is the update within 0.05 R2 of
that fresh one.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from training.air.calibration_csv import CalibrationTable
from training.air.simulation import AirSite, SiteParams, simulate_air_site

DAY_MS = 86_400_000
INPUTS = ("no2", "temperature", "humidity")  # the model's raw inputs: the site's sensor columns
REFERENCE = "ref_no2"
SEED = 21
START = "2025-09-01"
OFFSET_PER_DAY = 0.4  # ug/m3 per day (the simulator draws 0.1-0.4, either sign)
GAIN_PER_DAY = 0.003  # sensitivity change per day (the simulator draws up to +-0.002)


def drifting_site(days: int = 120, seed: int = SEED) -> AirSite:
    """The site, seeded: its own draw of everything but the NO2 sensor's drift, fixed at the top of the range."""
    params = SiteParams.draw(np.random.default_rng([seed, 0]))
    params = replace(params, mox_offset_per_day=OFFSET_PER_DAY, mox_gain_per_day=GAIN_PER_DAY)
    from training.air.sensors import NO_FAULTS

    return simulate_air_site(days=days, seed=seed, start=START, faults=NO_FAULTS, params=params)


def co_location(site: AirSite, first_day: float, days: float) -> CalibrationTable:
    """The site's NO2, temperature and humidity next to the true NO2 from ``first_day`` for ``days`` days."""
    start = int(site.time_ms[0]) + int(first_day * DAY_MS)
    rows = (site.time_ms >= start) & (site.time_ms < start + int(days * DAY_MS))
    columns = {name: np.asarray(site.sensors[name], dtype=np.float64)[rows] for name in INPUTS}
    columns[REFERENCE] = np.asarray(site.truth["no2"], dtype=np.float64)[rows]
    return CalibrationTable(
        site.time_ms[rows].astype(np.int64),
        columns,
        source=f"simulated drifting NO2 site (seed {site.meta['seed']}), days {first_day:g}-{first_day + days:g}",
    )


def r2(reference: np.ndarray, predicted: np.ndarray) -> float:
    """R2 of ``predicted`` against ``reference``, rounded to 4 decimals."""
    ss = float(np.sum((reference - reference.mean()) ** 2))
    return round(1.0 - float(np.sum((reference - predicted) ** 2)) / ss, 4)


def scored(model_dir, table: CalibrationTable) -> float:
    """R2 of the exported calibration in ``model_dir`` on ``table``, computed as the gateway computes it."""
    from training.air.calibration_previous import load_previous

    previous = load_previous(model_dir)
    X = np.stack([table.columns[name] for name in previous.spec["inputs"]], axis=1)
    y = table.columns[REFERENCE]
    ok = np.isfinite(y) & np.all(np.isfinite(X), axis=1)
    return r2(y[ok], previous.predict(X[ok]))


def recalibration_scores(site: AirSite, v1_dir, v2_dir, fresh_dir, alarm_day: float, after_days: float = 14) -> dict:
    """R2 of each calibration on the ``after_days`` days after its co-location (see the module doc)."""
    recal_end = alarm_day + 7
    first_after = co_location(site, 30, after_days)
    later = co_location(site, recal_end, after_days)
    return {
        "v1_fresh": scored(v1_dir, first_after),  # days 30-44: right after its own co-location
        "v1_stale": scored(v1_dir, later),  # the same model, after the 7-day co-location
        "v2_updated": scored(v2_dir, later),
        "fresh_from_7_days": scored(fresh_dir, later),
        "after_period_days": [recal_end, recal_end + after_days],
    }


__all__ = ["INPUTS", "REFERENCE", "co_location", "drifting_site", "r2", "recalibration_scores", "scored"]
