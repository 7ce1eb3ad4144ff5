"""Calibration drift on the gateway: Page-Hinkley, and the detector on simulated metal-oxide NO2 drift (and none)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from edge.contracts import Alert, Detection, Quality, Reading
from edge.detectors.air_models import No2VirtualSensor
from edge.detectors.drift import RECALIBRATION_NEEDED, CalibrationDriftDetector, PageHinkley
from training.air.sensors import NO_FAULTS
from training.air.simulation import SiteParams, simulate_air_site

MODEL = Path(__file__).resolve().parents[1] / "models" / "air-no2-virtual"
WEATHER = ("cell_count", "wind_speed", "temperature", "humidity")
DAY_MS = 86_400_000


def site_with(seed: int, drift_per_day: float | None, days: int = 63):
    params = SiteParams.draw(np.random.default_rng([seed, 0]))
    if drift_per_day is not None:
        params = dataclasses.replace(params, mox_offset_per_day=drift_per_day, mox_gain_per_day=0.0)
    return simulate_air_site(days, seed, "2025-11-03", NO_FAULTS, params, mox_drift=drift_per_day is not None)


def readings(site, columns: dict[str, np.ndarray]):
    """Readings step by step; NaN becomes an UNKNOWN reading, as the replay source does."""
    for i, t in enumerate(site.time_ms.tolist()):
        for sensor, (quantity, values) in columns.items():
            v = float(values[i])
            yield Reading(
                t,
                "air-test",
                "gw-air",
                sensor,
                quantity,
                None if np.isnan(v) else v,
                {"no2": "ug/m3", "cell_count": "count", "wind_speed": "m/s", "temperature": "degC", "humidity": "%"}[
                    quantity
                ],
                Quality.UNKNOWN if np.isnan(v) else Quality.OK,
            )


def site_columns(site, extra=None):
    columns = {k: (k, site.sensors[k]) for k in ("no2",) + WEATHER}
    return {**columns, **(extra or {})}


def run(detector, site, extra=None):
    out = [o for r in readings(site, site_columns(site, extra)) for o in detector.update(r)]
    alerts = [a for a in out if isinstance(a, Alert)]
    first = next((int((a.time_ms - site.time_ms[0]) // DAY_MS) for a in alerts if a.state == "raised"), None)
    return out, alerts, first


def with_estimator(**kw):
    estimator = No2VirtualSensor("air-test", "gw-air", {k: k for k in WEATHER}, MODEL, backend="numpy")
    return CalibrationDriftDetector("air-test", "gw-air", "no2", estimator=estimator, **kw)


def test_page_hinkley_sees_a_lasting_shift_either_way_not_noise():
    rng = np.random.default_rng(0)
    quiet = PageHinkley(delta=1.0, threshold=6.0)
    assert not any(quiet.update(z) for z in rng.normal(size=500))
    for sign, direction in ((1, "up"), (-1, "down")):
        ph = PageHinkley(delta=1.0, threshold=6.0)
        alarms = [ph.update(z) for z in np.r_[rng.normal(size=50), sign * (2.0 + rng.normal(size=50))]]
        assert not any(alarms[:50]) and any(alarms[50:70]) and ph.direction == direction
        ph.reset()
        assert ph.statistic == 0
    with pytest.raises(ValueError, match="threshold > 0"):
        PageHinkley(threshold=0)


@pytest.mark.parametrize("seed", [7001, 7002, 7003])
def test_quiet_without_drift_against_the_virtual_sensor(seed):
    out, alerts, _ = run(with_estimator(), site_with(seed, None))
    labels = [d.label for d in out if isinstance(d, Detection)]
    assert labels[1:22] == ["calibrating"] * 21  # day 0 has no estimate yet (24 h of context)
    assert not alerts and "drifting" not in labels


@pytest.mark.parametrize("seed, drift", [(7001, 0.6), (7002, -0.6), (7003, 0.6)])
def test_detects_metal_oxide_drift_against_the_virtual_sensor(seed, drift):
    out, alerts, first = run(with_estimator(), site_with(seed, drift))
    assert first is not None and 22 < first < 63
    alert = alerts[0]
    assert alert.validate() and alert.kind == "calibration" and alert.label == RECALIBRATION_NEEDED
    assert alert.message.startswith("Sensor no2: its daily median residual to the estimate has moved from")
    assert alert.message.endswith("recalibration needed")
    assert alert.explanation["direction"] == ("up" if drift > 0 else "down")


def test_a_colocated_reference_catches_a_slow_drift_sooner():
    """Against a reference instrument the residual is quiet, so 0.3 ug/m3 a day shows within weeks."""
    reference = {"no2-ref": ("no2", None)}
    for drift, expect_alarm in ((None, False), (0.3, True)):
        site = site_with(7004, drift, days=56)
        reference["no2-ref"] = ("no2", site.truth["no2"])
        detector = CalibrationDriftDetector("air-test", "gw-air", "no2", reference="no2-ref", min_sigma=0.5)
        _, alerts, first = run(detector, site, reference)
        assert (first is not None) == expect_alarm
        if expect_alarm:
            assert first <= 45
            assert "median residual to the reference" in alerts[0].message


def test_recalibration_clears_the_alert():
    site = site_with(7005, None, days=70)
    stale = site.sensors["no2"].copy()
    day = (site.time_ms - site.time_ms[0]) // DAY_MS
    stale[(day >= 28) & (day < 49)] += 25.0  # the zero jumps by 25 ug/m3 for three weeks, then is recalibrated
    # A reference residual is quiet: a lower threshold than the default (set for the virtual sensor) is enough.
    detector = CalibrationDriftDetector("air-test", "gw-air", "no2", reference="no2-ref", min_sigma=0.5, threshold=4)
    columns = {"no2": ("no2", stale), "no2-ref": ("no2", site.truth["no2"])}
    out = [o for r in readings(site, columns) for o in detector.update(r)]
    states = [(a.state.value, int((a.time_ms - site.time_ms[0]) // DAY_MS)) for a in out if isinstance(a, Alert)]
    assert [s for s, _ in states] == ["raised", "cleared"]
    assert 28 < states[0][1] <= 38 and 49 < states[1][1] <= 58
    assert out[-1].label == "stable"


def test_daily_floor_without_any_reference_catches_a_large_shift():
    site = site_with(7006, None, days=56)
    shifted = site.sensors["no2"].copy()
    shifted[(site.time_ms - site.time_ms[0]) // DAY_MS >= 30] += 40.0
    detector = CalibrationDriftDetector("air-test", "gw-air", "no2")
    out = [o for r in readings(site, {"no2": ("no2", shifted)}) for o in detector.update(r)]
    raised = [a for a in out if isinstance(a, Alert)]
    assert raised and "daily floor" in raised[0].message
    assert (raised[0].time_ms - site.time_ms[0]) // DAY_MS >= 30


def test_a_silent_day_is_insufficient_data_and_never_counts():
    site = site_with(7007, None, days=5)
    no2 = site.sensors["no2"].copy()
    no2[2 * 144 : 3 * 144 - 10] = np.nan  # day 2: the node was unplugged
    detector = CalibrationDriftDetector("air-test", "gw-air", "no2", calibration_days=3)
    out = [o for r in readings(site, {"no2": ("no2", no2)}) for o in detector.update(r)]
    assert [d.label for d in out] == ["calibrating", "calibrating", "insufficient_data", "calibrating"]
    assert out[2].explanation["reason"].startswith("fewer than 75%")


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(reference="no2"), "another sensor"),
        (dict(reference="ref", estimator=object()), "not both"),
        (dict(estimator=object()), "update\\(reading\\)"),
        (dict(calibration_days=2), "calibration_days must be a whole number of days >= 3"),
        (dict(min_sigma=0), "min_sigma must be > 0"),
    ],
)
def test_bad_parameters_are_refused(kw, message):
    with pytest.raises(ValueError, match=message):
        CalibrationDriftDetector("air-test", "gw-air", "no2", **kw)
