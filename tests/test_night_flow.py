"""Minimum Night Flow features and the streaming MNF leak detector, on hand-made data."""

from __future__ import annotations

import random
from datetime import date

import numpy as np
import pytest

from edge.contracts import Alert, AlertState, Detection, Quality, Reading, Severity
from edge.detectors import MinimumNightFlowDetector
from edge.features import minimum_night_flow, night_mnf, night_window, zone_inflow

START_MS = 1_772_409_600_000  # 2026-03-02T00:00Z
STEP_MS = 900_000
DAY_MS = 86_400_000
SENSORS = [("F-a", 1), ("F-b", 1), ("F-tank", -1)]


def day_series(night_flows: list[float], day_flow: float = 100.0) -> tuple[np.ndarray, np.ndarray]:
    """Whole days at 15 min: ``day_flow`` except 02:00-04:00, where night n is ``night_flows[n]``."""
    t = START_MS + np.arange(len(night_flows) * 96, dtype=np.int64) * STEP_MS
    flow = np.full(t.shape, day_flow)
    for n, night in enumerate(night_flows):
        flow[n * 96 + 8 : n * 96 + 16] = night
    return t, flow


def night_readings(
    night_flows: list[float | None],
    sensors=SENSORS,
    shuffle: random.Random | None = None,
    drop: set[tuple[int, int, str]] = frozenset(),
) -> list[Reading]:
    """Readings of every night 02:00-03:45 plus the 04:00 step that closes it.

    The zone inflow ``night_flows[n]`` is split over the meters (tank sign -1);
    None makes the first meter UNKNOWN at 03:00; ``drop`` removes (night, step, sensor).
    """
    readings = []
    for n, night in enumerate(night_flows):
        for k in range(9):
            t = START_MS + n * DAY_MS + (8 + k) * STEP_MS
            flow = 60.0 if night is None else night
            parts = {"F-a": 0.5 * flow + 10.0, "F-b": 0.5 * flow, "F-tank": 10.0}
            step = []
            for sensor, _ in sensors:
                if (n, k, sensor) in drop:
                    continue
                if night is None and k == 4 and sensor == "F-a":
                    step.append(Reading(t, "net3", "gw-01", sensor, "flow", None, "L/s", Quality.UNKNOWN))
                else:
                    step.append(Reading(t, "net3", "gw-01", sensor, "flow", parts[sensor], "L/s"))
            if shuffle is not None:
                shuffle.shuffle(step)
            readings += step
    return readings


def run(detector: MinimumNightFlowDetector, readings: list[Reading]) -> list[Detection | Alert]:
    return [out for reading in readings for out in detector.update(reading)]


def detector(**kwargs) -> MinimumNightFlowDetector:
    return MinimumNightFlowDetector("net3", "gw-01", SENSORS, **kwargs)


# -- features ---------------------------------------------------------------------


def test_zone_inflow_signs_and_gaps():
    values = np.array([[5.0, 3.0, 2.0], [5.0, np.nan, 2.0]])
    assert zone_inflow(values, [1, 1, -1]).tolist()[0] == 6.0
    assert np.isnan(zone_inflow(values, [1, 1, -1])[1])
    with pytest.raises(ValueError, match="shape"):
        zone_inflow(values, [1, 1])
    with pytest.raises(ValueError, match=r"\+1 or -1"):
        zone_inflow(values, [1, 2, 1])


def test_mnf_is_the_lowest_hourly_mean_of_each_night():
    t, flow = day_series([40.0, 50.0, 45.0])
    flow[96 + 8 : 96 + 16] = [50, 50, 20, 80, 50, 50, 50, 50]  # a 15-min dip does not make the night
    dates, mnf = minimum_night_flow(t, flow)
    assert dates.tolist() == [date(2026, 3, 2), date(2026, 3, 3), date(2026, 3, 4)]
    assert mnf.tolist() == [40.0, 50.0, 45.0]


def test_a_missing_or_nan_sample_voids_only_that_night():
    t, flow = day_series([40.0, 50.0, 45.0])
    flow[96 + 10] = np.nan
    keep = np.ones(t.shape, dtype=bool)
    keep[2 * 96 + 12] = False  # a sample absent altogether
    dates, mnf = minimum_night_flow(t[keep], flow[keep])
    assert len(dates) == 3 and mnf[0] == 40.0
    assert np.isnan(mnf[1]) and np.isnan(mnf[2])


def test_nights_cut_by_the_data_edges_are_left_out():
    t, flow = day_series([40.0, 50.0])
    dates, mnf = minimum_night_flow(t[12:], flow[12:])  # starts 03:00 on day one
    assert dates.tolist() == [date(2026, 3, 3)] and mnf.tolist() == [50.0]


def test_time_zone_and_rolling_width():
    # 02:00 in Paris (UTC+1 in March) is 01:00 UTC: the window moves with the zone.
    assert night_window(date(2026, 3, 2), tz="Europe/Paris")[0] == START_MS + 1 * 3_600_000
    t, flow = day_series([40.0])
    flow[4:8] = 10.0  # 01:00-02:00 UTC = 02:00-03:00 Paris
    assert minimum_night_flow(t, flow, tz="Europe/Paris")[1].tolist() == [10.0]
    assert minimum_night_flow(t, flow)[1].tolist() == [40.0]
    flow[8:16] = [50, 50, 30, 30, 50, 50, 50, 50]
    assert minimum_night_flow(t, flow, rolling="30min")[1].tolist() == [30.0]
    assert minimum_night_flow(t, flow, rolling="1h")[1].tolist() == [40.0]


def test_bad_feature_parameters_are_explained():
    t, flow = day_series([40.0])
    with pytest.raises(ValueError, match="HH:MM"):
        minimum_night_flow(t, flow, night_start="2am")
    with pytest.raises(ValueError, match="unknown time zone"):
        minimum_night_flow(t, flow, tz="Mars/Olympus")
    with pytest.raises(ValueError, match="positive number"):
        minimum_night_flow(t, flow, rolling="1 week")
    with pytest.raises(ValueError, match="longer than the night"):
        minimum_night_flow(t, flow, rolling="3h")
    with pytest.raises(ValueError, match="whole numbers"):
        night_mnf(t, flow, 0, 7_200_000, 700_000)


# -- detector ---------------------------------------------------------------------


def test_detector_flags_a_leak_night_and_explains_it():
    outputs = run(detector(), night_readings([100.0, 104.0, 102.0, 130.0]))
    detections = [o.validate() for o in outputs if isinstance(o, Detection)]
    assert [d.label for d in detections] == ["insufficient_data", "insufficient_data", "normal", "leak"]
    leak = detections[-1]
    assert leak.score == pytest.approx(0.30)
    assert leak.explanation["mnf_lps"] == 130.0 and leak.explanation["baseline_lps"] == 100.0
    assert leak.explanation["excess_lps"] == 30.0 and leak.explanation["sensors"] == ["F-a", "F-b", "F-tank"]
    assert leak.window_start_ms == START_MS + 3 * DAY_MS + 2 * 3_600_000
    assert leak.window_end_ms == leak.time_ms == leak.window_start_ms + 2 * 3_600_000
    alert = outputs[-1].validate()
    assert isinstance(alert, Alert) and alert.state is AlertState.RAISED
    assert alert.alert_id == "leak-2026-03-05" and alert.severity is Severity.WARNING
    assert alert.message == (
        "Night flow 130.0 L/s is 30% above the 3-night baseline 100.0 L/s: possible leak of about 30.0 L/s"
    )


def test_a_large_excess_is_critical():
    outputs = run(detector(), night_readings([100.0, 100.0, 100.0, 150.0]))
    assert outputs[-1].severity is Severity.CRITICAL


def test_an_unknown_or_missing_meter_gives_insufficient_data_not_a_leak():
    # Night 3 has an UNKNOWN meter, night 4 lacks one meter at one step; both would be "low".
    readings = night_readings([100.0, 100.0, 100.0, None, 20.0, 100.0], drop={(4, 3, "F-b")})
    outputs = run(detector(), readings)
    labels = [o.label for o in outputs]
    assert labels == ["insufficient_data"] * 2 + ["normal", "insufficient_data", "insufficient_data", "normal"]
    assert outputs[3].explanation["reason"].startswith("a zone inflow meter was missing")


def test_bad_quality_readings_are_not_used():
    readings = night_readings([100.0, 100.0, 100.0, 130.0])
    readings = [
        Reading(r.time_ms, r.site, r.gateway, r.sensor, r.quantity, r.value, r.unit, Quality.BAD)
        if r.sensor == "F-b" and r.time_ms > START_MS + 3 * DAY_MS
        else r
        for r in readings
    ]
    assert [o.label for o in run(detector(), readings)][-1] == "insufficient_data"


def test_meters_may_arrive_in_any_order_within_a_step():
    nights = [100.0, 103.0, 101.0, 99.0, 125.0, 126.0, 100.0, 101.0]
    ordered = run(detector(), night_readings(nights))
    shuffled = run(detector(), night_readings(nights, shuffle=random.Random(3)))
    assert ordered == shuffled
    assert [o.label for o in ordered if isinstance(o, Detection)][4:6] == ["leak", "leak"]


def test_other_sensors_are_ignored():
    det = detector()
    pressure = Reading(START_MS, "net3", "gw-01", "P-101", "pressure", 40.0, "m")
    assert det.update(pressure) == [] and det.night_ is None


def test_no_flapping_around_the_threshold():
    # Baseline 100; nights alternate just above and just below the 20 % threshold.
    hovering = [100.0, 100.0, 100.0] + [121.0, 119.0] * 5 + [100.0, 100.0, 100.0]
    outputs = run(detector(raise_after=1, clear_after=2), night_readings(hovering))
    alerts = [o for o in outputs if isinstance(o, Alert)]
    assert [(a.state, a.alert_id) for a in alerts] == [
        (AlertState.RAISED, "leak-2026-03-05"),
        (AlertState.CLEARED, "leak-2026-03-05"),
    ]
    assert alerts[1].time_ms == START_MS + 13 * DAY_MS + 4 * 3_600_000  # second calm night in a row
    assert alerts[1].severity is Severity.INFO and "cleared" in alerts[1].message
    # Asking for two flagged nights in a row, the same series never raises.
    outputs = run(detector(raise_after=2, clear_after=2), night_readings(hovering))
    assert [o for o in outputs if isinstance(o, Alert)] == []


def test_flagged_nights_stay_out_of_the_baseline():
    nights = [100.0, 100.0] + [130.0] * 12
    detections = [o for o in run(detector(history_days=3), night_readings(nights)) if isinstance(o, Detection)]
    assert all(d.label == "leak" and d.explanation["baseline_lps"] == 100.0 for d in detections[2:])


def test_nights_without_any_reading_are_reported():
    readings = night_readings([100.0, 100.0, 100.0])
    late = night_readings([100.0] * 6)[5 * 9 * len(SENSORS) :]  # night 5 only: nights 3 and 4 had no data at all
    labels = [o.label for o in run(detector(), readings + late)]
    assert labels == [
        "insufficient_data",
        "insufficient_data",
        "normal",
        "insufficient_data",
        "insufficient_data",
        "normal",
    ]


def test_detector_parameters_are_checked():
    with pytest.raises(ValueError, match=r"must be \(sensor, \+1 or -1\)"):
        MinimumNightFlowDetector("net3", "gw-01", [("F-a", 2)])
    with pytest.raises(ValueError, match="at least one"):
        MinimumNightFlowDetector("net3", "gw-01", [])
    with pytest.raises(ValueError, match="HH:MM"):
        detector(night_end="25:00")
    with pytest.raises(ValueError, match="raise_after"):
        detector(raise_after=0)
    with pytest.raises(ValueError, match="fraction"):
        detector(threshold=20)
