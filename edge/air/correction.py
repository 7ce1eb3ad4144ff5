"""Humidity correction of low-cost optical PM2.5 (US EPA): one code path for the gateway and for training.

Optical sensors count water-swollen particles as dust, so they read high in humid
air and their scale differs from reference monitors. The US EPA fits (field notes):

* **nationwide** (Barkjohn et al. 2021), PM = PM2.5 at CF=1 in ug/m3, RH in %::

      PM2.5 = 0.524 PM - 0.0862 RH + 5.75

* **piecewise** (AirNow 2021, for smoke-level concentrations)::

      PM < 30          the nationwide fit
      30 <= PM < 50    blend of the nationwide and the 50-210 fits, x = PM/20 - 1.5
      50 <= PM < 210   0.786 PM - 0.0862 RH + 5.75
      210 <= PM < 260  blend of the 50-210 fit and the >= 260 fit, x = PM/50 - 4.2
      PM >= 260        2.966 + 0.69 PM + 8.84e-4 PM^2

  where a blend is ``(1 - x) * lower fit + x * upper fit``, so the curve has no jumps.

Results below 0 are clipped to 0. Both take floats or numpy arrays; NaN (missing)
stays NaN, so training code can pass whole columns.

Hand-computed values at RH 50 % (RH term 0.0862 * 50 = 4.31):
0 -> 5.75 - 4.31 = 1.44; 30 -> 15.72 + 1.44 = 17.16; 40 (x = 0.5, slope 0.655) ->
26.2 + 1.44 = 27.64; 50 -> 39.3 + 1.44 = 40.74; 210 -> 165.06 + 1.44 = 166.5;
235 (x = 0.5) -> 0.5 * (184.71 + 1.44) + 0.5 * (2.966 + 162.15 + 48.819) = 200.04;
260 -> 2.966 + 179.4 + 59.758 = 242.12; 300 -> 2.966 + 207 + 79.56 = 289.53.

>>> [round(epa_piecewise(pm, 50.0), 2) for pm in (0, 30, 40, 50, 210, 235, 260, 300)]
[1.44, 17.16, 27.64, 40.74, 166.5, 200.04, 242.12, 289.53]
>>> round(epa_nationwide(100.0, 50.0), 2), epa_nationwide(0.0, 100.0)
(53.84, 0.0)
>>> import numpy as np
>>> epa_piecewise(np.array([10.0, np.nan]), np.array([50.0, 50.0])).round(2).tolist()
[6.68, nan]
>>> epa_nationwide(12.0, 104.0)
Traceback (most recent call last):
...
ValueError: relative humidity 104 % is outside 0..100
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

RH_COEF, OFFSET = 0.0862, 5.75
LOW_SLOPE, MID_SLOPE = 0.524, 0.786
HIGH = (2.966, 0.69, 8.84e-4)  # constant, linear, quadratic terms of the >= 260 fit


def _inputs(pm25_cf1, rh) -> tuple[np.ndarray, np.ndarray]:
    pm = np.asarray(pm25_cf1, dtype=float)
    h = np.asarray(rh, dtype=float)
    if np.any(pm < 0):
        bad = pm[pm < 0].flat[0]
        raise ValueError(f"PM2.5 {bad:g} ug/m3 is negative: correct only values that passed the physical check")
    if np.any((h < 0) | (h > 100)):
        bad = h[(h < 0) | (h > 100)].flat[0]
        raise ValueError(f"relative humidity {bad:g} % is outside 0..100")
    return pm, h


def _result(value: np.ndarray, scalar: bool):
    value = np.maximum(value, 0.0)  # NaN stays NaN
    return float(value) if scalar else value


def _fit(slope: float, pm: np.ndarray, rh: np.ndarray) -> np.ndarray:
    return slope * pm - RH_COEF * rh + OFFSET


def epa_nationwide(pm25_cf1, rh):
    """US EPA nationwide correction (Barkjohn et al. 2021), clipped at 0."""
    pm, h = _inputs(pm25_cf1, rh)
    return _result(_fit(LOW_SLOPE, pm, h), np.ndim(pm25_cf1) == 0 and np.ndim(rh) == 0)


def epa_piecewise(pm25_cf1, rh):
    """US EPA correction extended to high concentrations (AirNow 2021), clipped at 0."""
    pm, h = _inputs(pm25_cf1, rh)
    low, mid = _fit(LOW_SLOPE, pm, h), _fit(MID_SLOPE, pm, h)
    high = HIGH[0] + HIGH[1] * pm + HIGH[2] * pm**2
    x1, x2 = pm / 20 - 1.5, pm / 50 - 4.2
    value = np.select(
        [pm < 30, pm < 50, pm < 210, pm < 260, pm >= 260],
        [low, (1 - x1) * low + x1 * mid, mid, (1 - x2) * mid + x2 * high, high],
        default=np.nan,
    )  # only NaN input reaches the default
    return _result(value, np.ndim(pm25_cf1) == 0 and np.ndim(rh) == 0)


# Config name -> correction. The piecewise fit equals the nationwide one below 30 ug/m3.
CORRECTIONS: dict[str, Callable] = {"nationwide": epa_nationwide, "piecewise": epa_piecewise}
DEFAULT_CORRECTION = "piecewise"


def correct_pm25(pm25_cf1, rh, method: str = DEFAULT_CORRECTION):
    """Corrected PM2.5 by the named method (``nationwide`` or ``piecewise``)."""
    try:
        correction = CORRECTIONS[method]
    except KeyError:
        raise ValueError(f"unknown PM2.5 correction {method!r} (known: {', '.join(CORRECTIONS)})") from None
    return correction(pm25_cf1, rh)
