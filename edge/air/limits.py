"""Physically possible ranges per quantity: a value outside is a sensor or wiring fault, never a measurement.

>>> impossible("pm25", -3.0)
'pm25 -3 ug/m3 is below 0 (physically impossible)'
>>> impossible("humidity", 100.0) is None, impossible("humidity", 100.4)
(True, 'humidity 100.4 % is above 100 (physically impossible)')
"""

from __future__ import annotations

import math

from edge.contracts import QUANTITY_UNITS

# quantity -> (lowest, highest) possible value in its canonical unit; None = no bound.
PHYSICAL_RANGE: dict[str, tuple[float | None, float | None]] = {
    "pm1": (0.0, None),
    "pm25": (0.0, None),
    "pm10": (0.0, None),
    "pm25_corrected": (0.0, None),
    "no2": (0.0, None),
    "o3": (0.0, None),
    "humidity": (0.0, 100.0),
    # Air temperatures ever recorded span -89 .. +57 degC; a sun-heated box adds some.
    "temperature": (-90.0, 90.0),
    "cell_count": (0.0, None),
    "wind_speed": (0.0, None),
    # A calibration's estimate, like the reference it was fitted to, may dip below zero at low
    # concentrations (instrument noise); clipping it would bias the clean hours upwards.
    "pm25_calibrated": (None, None),
    "no2_calibrated": (None, None),
    "resistance": (0.0, None),  # a metal-oxide sensor's resistance, ohm
    "voltage": (None, None),  # a sensor's output voltage may be differential
    "flow": (None, None),  # signed: a meter may see flow out of the zone
    "pressure": (None, None),  # head may be negative above a pump suction
}


def impossible(quantity: str, value: float) -> str | None:
    """Why ``value`` cannot be a real ``quantity``, or None if it can."""
    low, high = PHYSICAL_RANGE.get(quantity, (None, None))
    if -math.inf < value < math.inf and (low is None or value >= low) and (high is None or value <= high):
        return None  # the common case, checked once per reading
    unit = QUANTITY_UNITS.get(quantity, "")
    if not math.isfinite(value):
        return f"{quantity} {value} is not a finite number"
    if low is not None and value < low:
        return f"{quantity} {value:g} {unit} is below {low:g} (physically impossible)"
    if high is not None and value > high:
        return f"{quantity} {value:g} {unit} is above {high:g} (physically impossible)"
    return None
