"""A calibration drift detector's state over a restart: plain JSON data in, checked attributes out.

``drift_state(det)`` is what ``CalibrationDriftDetector.state()`` returns;
``restored_drift(det, state)`` checks every field and returns the attributes to set,
raising ValueError (naming the field) before anything changes.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from edge.detectors import state_json as sj
from edge.detectors.base import Detector
from edge.detectors.page_hinkley import PageHinkley


@dataclass
class Calibration:
    """The calibration period's mean and spread of the daily statistic, and its first and last day."""

    mean: float
    sigma: float
    first_day: str
    last_day: str


def drift_state(det: Any) -> dict:
    """What ``det`` keeps over a restart: the day so far, the calibration, the Page-Hinkley sums, the alert."""
    cal = det.calibration_
    return {
        "day": det.day_,
        "slots": [[k, [[s, total, n] for s, (total, n) in acc.items()]] for k, acc in det.slots_.items()],
        "estimates": [[h, v] for h, v in det.estimates_.items()],
        "unit": det.unit_,
        "calibration_values": [[d, v] for d, v in det.calibration_values_],
        "calibration": None if cal is None else [cal.mean, cal.sigma, cal.first_day, cal.last_day],
        "recent": list(det.recent_),
        "calm_days": det.calm_days_,
        "alert": sj.alert_pair(det.alert_),
        "page_hinkley": det.test_.state(),
        "estimator": det.estimator.state() if isinstance(det.estimator, Detector) else None,
    }


def restored_drift(det: Any, state: dict) -> dict:
    """The attributes ``state`` restores on ``det``; ValueError if it is malformed (``det`` unchanged)."""
    owner = f"calibration drift detector {det.model!r}"
    watched = {det.sensor, det.reference} - {None}

    def get(key, within=state):
        return sj.field(within, key, owner)

    slots: dict[int, dict[str, list[float]]] = {}
    for item in sj.listing(get("slots"), "slots"):
        k, values = sj.listing(item, "a slot", 2)
        acc = slots.setdefault(sj.integer(k, "slot"), {})
        for triple in sj.listing(values, "a slot's values"):
            sensor, total, n = sj.listing(triple, "a slot value", 3)
            if sensor not in watched:
                raise ValueError(f"{owner}: a saved slot holds sensor {sensor!r}, not one it watches")
            acc[sensor] = [sj.real(total, "slot sum"), sj.integer(n, "slot count")]
    estimates = {
        sj.integer(h, "estimate hour"): sj.real(v, "estimate")
        for h, v in (sj.listing(p, "an estimate", 2) for p in sj.listing(get("estimates"), "estimates"))
    }
    calibration_values = [
        (sj.text(d, "calibration day"), sj.real(v, "calibration statistic"))
        for d, v in (sj.listing(p, "a calibration day", 2) for p in sj.listing(get("calibration_values"), "days"))
    ]
    cal = get("calibration")
    if cal is not None:
        mean, sigma, first, last = sj.listing(cal, "calibration", 4)
        cal = Calibration(
            sj.real(mean, "mean"), sj.real(sigma, "sigma"), sj.text(first, "first"), sj.text(last, "last")
        )
    recent = [sj.real(v, "a recent day") for v in sj.listing(get("recent"), "recent")]
    if len(recent) > det.smoothing_days:
        raise ValueError(f"{owner}: {len(recent)} recent days saved, smoothing_days is {det.smoothing_days}")
    test = PageHinkley(det.test_.delta, det.test_.threshold)
    test.restore(get("page_hinkley"))
    restored = {
        "day_": sj.optional(get("day"), sj.integer, "day"),
        "slots_": slots,
        "estimates_": estimates,
        "unit_": sj.text(get("unit"), "unit"),
        "calibration_values_": calibration_values,
        "calibration_": cal,
        "recent_": deque(recent, maxlen=det.smoothing_days),
        "calm_days_": sj.integer(get("calm_days"), "calm_days"),
        "alert_": sj.alert(get("alert"), "alert"),
    }
    estimator = get("estimator")
    if isinstance(det.estimator, Detector):
        if estimator is None:
            raise ValueError(f"{owner}: the saved state has no state of its estimator")
        det.estimator.restore(estimator)
    elif estimator is not None:
        raise ValueError(f"{owner}: the saved state has an estimator's state, this detector has no estimator")
    return {**restored, "test_": test}
