"""European Air Quality Index (EEA): bands per pollutant and the averaging they rest on, for gateway and training.

Bands, from the upper bounds in ug/m3 (field notes); a value on a bound belongs to
the lower band (10.0 PM2.5 is still ``good``)::

    pollutant  averaging  good  fair  moderate  poor  very_poor  | extremely_poor
    pm25       24 h        10    20    25        50    75         | above
    pm10       24 h        20    40    50       100   150         | above
    no2         1 h        40    90   120       230   340         | above
    o3          1 h        50   100   130       240   380         | above

A mean needs 75 % of its window covered (the EU data-capture rule: 18 of 24 hourly
values, 45 of 60 minutes): the mean is taken over sub-interval means (hourly for a
24 h window, 5-minute for 1 h, or the sensor's reporting interval if longer), so an
hour with many samples does not outweigh one with few.

>>> band("pm25", 10.0), band("pm25", 10.1), band("no2", 400.0)
('good', 'fair', 'extremely_poor')
>>> level("poor")
4
>>> import numpy as np
>>> t = 1_772_409_600_000 + np.arange(0, 3_600_000, 60_000)  # one value a minute for an hour
>>> mean, coverage = window_mean(t, np.full(60, 42.0), end_ms=1_772_413_200_000, hours=1)
>>> float(mean), float(coverage)
(42.0, 1.0)
>>> float(window_mean(t[:40], np.full(40, 42.0), end_ms=1_772_413_200_000, hours=1)[1])  # 40 min
0.6666666666666666
"""

from __future__ import annotations

import math

import numpy as np

BANDS = ("good", "fair", "moderate", "poor", "very_poor", "extremely_poor")
UPPER_BOUNDS: dict[str, tuple[float, ...]] = {
    "pm25": (10, 20, 25, 50, 75),
    "pm10": (20, 40, 50, 100, 150),
    "no2": (40, 90, 120, 230, 340),
    "o3": (50, 100, 130, 240, 380),
}
AVERAGING_HOURS = {"pm25": 24, "pm10": 24, "no2": 1, "o3": 1}
# Sub-intervals a window is covered by: hourly means for 24 h, 5-minute means for 1 h.
BINS_PER_WINDOW = {24: 24, 1: 12}
MIN_COVERAGE = 0.75
HOUR_MS = 3_600_000

# A sensor's quantity -> the pollutant whose scale applies. Corrected or calibrated PM2.5 is PM2.5 (a gateway
# calibration's virtual sensor, model type calibration), calibrated NO2 is NO2.
POLLUTANT_OF_QUANTITY = {
    "pm25": "pm25",
    "pm25_corrected": "pm25",
    "pm25_calibrated": "pm25",
    "pm10": "pm10",
    "no2": "no2",
    "no2_calibrated": "no2",
    "o3": "o3",
}


def pollutant_of(quantity: str) -> str:
    """The pollutant whose EAQI scale applies to a sensor's quantity (corrected or calibrated PM2.5 is PM2.5)."""
    try:
        return POLLUTANT_OF_QUANTITY[quantity]
    except KeyError:
        raise ValueError(
            f"the EAQI has no band for {quantity} (it covers {', '.join(POLLUTANT_OF_QUANTITY)})"
        ) from None


def band_index(pollutant: str, concentration: float) -> int:
    """0 (good) .. 5 (extremely poor)."""
    if not math.isfinite(concentration):
        raise ValueError(f"{pollutant} concentration {concentration} is not a number")
    for index, upper in enumerate(UPPER_BOUNDS[pollutant]):
        if concentration <= upper:
            return index
    return len(BANDS) - 1


def band(pollutant: str, concentration: float) -> str:
    """The EAQI band name ("good" .. "extremely poor") of one concentration."""
    return BANDS[band_index(pollutant, concentration)]


def level(band_name: str) -> int:
    """The EAQI level shown to people: 1 (good) .. 6 (extremely poor)."""
    return BANDS.index(band_name) + 1


def band_indices(pollutant: str, concentrations) -> np.ndarray:
    """Vectorised ``band_index`` for training; -1 where the concentration is NaN.

    >>> band_indices("pm10", [5.0, 40.0, 40.5, float("nan"), 151.0]).tolist()
    [0, 1, 2, -1, 5]
    """
    c = np.asarray(concentrations, dtype=float)
    index = np.searchsorted(np.asarray(UPPER_BOUNDS[pollutant], dtype=float), c, side="left")
    return np.where(np.isnan(c), -1, index).astype(np.int8)


def window_mean(time_ms, values, end_ms: int, hours: int, step_ms: int | None = None) -> tuple[float, float]:
    """Mean over ``[end_ms - hours, end_ms)`` of sub-interval means, and the share of sub-intervals covered.

    Sub-intervals are hourly for a 24 h window and 5-minute for 1 h, or ``step_ms`` (the
    sensor's reporting interval) if that is longer, so a sensor reporting every 10
    minutes or every hour can still cover its window. NaN values are ignored; the mean
    is NaN when nothing falls in the window.

    >>> t = 1_772_409_600_000 + np.arange(0, 3_600_000, 600_000)  # every 10 minutes
    >>> window_mean(t[:5], np.full(5, 30.0), 1_772_413_200_000, 1, step_ms=600_000)[1]  # 50 of 60 min
    0.8333333333333334
    """
    t = np.asarray(time_ms, dtype=np.int64)
    v = np.asarray(values, dtype=float)
    window_ms = hours * HOUR_MS
    bins = BINS_PER_WINDOW.get(hours, hours)
    if step_ms is not None and step_ms > window_ms // bins:
        bins = max(1, window_ms // step_ms)
    start_ms = end_ms - window_ms
    keep = (t >= start_ms) & (t < end_ms) & ~np.isnan(v)
    if not keep.any():
        return float("nan"), 0.0
    slot = (t[keep] - start_ms) * bins // window_ms
    sums = np.bincount(slot, weights=v[keep], minlength=bins)
    counts = np.bincount(slot, minlength=bins)
    covered = counts > 0
    return float(np.mean(sums[covered] / counts[covered])), float(covered.sum() / bins)
