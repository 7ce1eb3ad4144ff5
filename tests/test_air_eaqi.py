"""EAQI bands and the streaming AQI detector: bounds, coverage, persistence without flapping, and the wire contracts."""

from __future__ import annotations

import numpy as np
import pytest

from edge.air.eaqi import BANDS, UPPER_BOUNDS, band, band_indices, window_mean
from edge.contracts import Alert, AlertState, Detection, Quality, Reading, Severity
from edge.detectors.aqi import AqiDetector
from gateway.bridge.influx_points import to_line_protocol
from gateway.protocol import payloads
from gateway.protocol import topics as T

T0 = 1_772_409_600_000  # 2026-03-02T00:00Z
HOUR = 3_600_000


@pytest.mark.parametrize("pollutant", sorted(UPPER_BOUNDS))
def test_a_value_on_a_bound_is_in_the_lower_band(pollutant):
    bounds = UPPER_BOUNDS[pollutant]
    for i, upper in enumerate(bounds):
        assert band(pollutant, upper) == BANDS[i]
        assert band(pollutant, upper + 0.1) == BANDS[i + 1]
    assert band(pollutant, 0.0) == "good"
    assert band_indices(pollutant, [0.0, *bounds, bounds[-1] + 1]).tolist() == [0, 0, 1, 2, 3, 4, 5]


def test_24_hour_mean_needs_18_hours():
    end = T0 + 24 * HOUR
    times = T0 + np.arange(24) * HOUR
    values = np.arange(24, dtype=float)
    assert window_mean(times[:18], values[:18], end, 24) == (8.5, 0.75)
    assert window_mean(times[:17], values[:17], end, 24)[1] < 0.75
    # Many samples in one hour weigh as much as one sample in another.
    t = np.concatenate([T0 + np.arange(60) * 60_000, [T0 + HOUR]])
    v = np.concatenate([np.full(60, 10.0), [40.0]])
    assert window_mean(t, v, end, 24)[0] == 25.0


def hourly(sensor: str, quantity: str, values, start_ms: int = T0, step_ms: int = HOUR):
    return [
        Reading(
            start_ms + k * step_ms,
            "centre",
            "gw-1",
            sensor,
            quantity,
            None if v is None else float(v),
            "ug/m3",
            Quality.UNKNOWN if v is None else Quality.OK,
        )
        for k, v in enumerate(values)
    ]


def run(detector: AqiDetector, readings) -> tuple[list[Detection], list[Alert]]:
    out = [o.validate() for r in sorted(readings, key=lambda r: r.time_ms) for o in detector.update(r)]
    return [o for o in out if isinstance(o, Detection)], [o for o in out if isinstance(o, Alert)]


def test_pm25_band_on_its_24_hour_mean_after_18_hours_of_data():
    det = AqiDetector("centre", "gw-1", [("PM25c-roof", "pm25_corrected")])
    detections, alerts = run(det, hourly("PM25c-roof", "pm25_corrected", [30.0] * 30))
    own = [d for d in detections if d.model == "eaqi.PM25c-roof"]
    assert [d.label for d in own[:17]] == ["insufficient_data"] * 17
    assert {d.label for d in own[17:]} == {"poor"}
    assert own[17].explanation["mean_ugm3"] == 30.0 and own[17].explanation["averaging_h"] == 24
    assert own[17].window_end_ms - own[17].window_start_ms == 24 * HOUR
    assert own[17].severity is Severity.WARNING and own[17].score == 4.0
    assert [(a.state, a.label) for a in alerts] == [(AlertState.RAISED, "poor")]
    assert alerts[0].since_ms == T0 + 17 * HOUR  # the first hour of the two that confirmed it


def test_a_value_hovering_on_a_bound_does_not_flap():
    det = AqiDetector("centre", "gw-1", [("NO2-kerb", "no2")], raise_after=2, clear_after=3)
    values = [100] * 3 + [115, 125] * 12 + [125, 125] + [115, 125] * 6 + [60] * 3  # moderate/poor bound: 120
    detections, alerts = run(det, hourly("NO2-kerb", "no2", values + [60], step_ms=HOUR))
    labels = [d.label for d in detections if d.model == "eaqi"]
    assert labels.count("poor") >= 18 and labels.count("moderate") >= 18  # the band itself flips every hour...
    assert [(a.state.value, a.label) for a in alerts] == [("raised", "poor"), ("cleared", "fair")]  # ...alerts do not
    raised, cleared = alerts
    assert raised.alert_id == cleared.alert_id
    assert raised.time_ms == T0 + 28 * HOUR  # 125 in the hours from 26 h and 27 h: two poor hours in a row


def test_a_silent_sensor_cannot_clear_an_alert_and_escalation_keeps_the_id():
    det = AqiDetector("centre", "gw-1", [("NO2-kerb", "no2"), ("O3-roof", "o3")], raise_after=2, clear_after=2)
    no2 = [250, 250, 350, 350] + [None] * 4 + [20, 20, 20]
    o3 = [30] * 11
    detections, alerts = run(det, hourly("NO2-kerb", "no2", no2 + [20]) + hourly("O3-roof", "o3", o3 + [30]))
    assert [(a.state.value, a.label) for a in alerts] == [
        ("raised", "very_poor"),
        ("raised", "extremely_poor"),
        ("cleared", "good"),
    ]
    assert len({a.alert_id for a in alerts}) == 1
    assert alerts[1].message.startswith("Air quality rose to extremely poor (EAQI 6)")
    assert alerts[1].severity is Severity.CRITICAL and alerts[2].severity is Severity.INFO
    # The hours where NO2 was unknown: O3 alone says 'good', but nothing was cleared then.
    assert alerts[2].time_ms == T0 + 10 * HOUR
    station = [d for d in detections if d.model == "eaqi"]
    assert station[5].label == "good" and station[5].explanation["sensors_with_data"] == 1


def test_bad_and_unknown_readings_never_count_and_a_long_gap_does_not_flood():
    det = AqiDetector("centre", "gw-1", [("NO2-kerb", "no2")])
    bad = [
        Reading(T0 + k * 300_000, "centre", "gw-1", "NO2-kerb", "no2", 500.0, "ug/m3", Quality.BAD) for k in range(12)
    ]
    detections, _ = run(det, bad + hourly("NO2-kerb", "no2", [10.0], start_ms=T0 + HOUR + 1))
    assert [d.label for d in detections] == ["insufficient_data"] * 2
    ten_days_later = hourly("NO2-kerb", "no2", [10.0], start_ms=T0 + 240 * HOUR + 1)
    detections, _ = run(det, ten_days_later)
    assert len(detections) <= 2 * 26 and det.skipped_hours_ > 200  # bounded by the window, not the gap


def test_detections_and_alerts_go_through_the_wire_contracts():
    det = AqiDetector(
        "centre", "gw-1", [("PM10-roof", "pm10"), ("NO2-kerb", "no2")], model="eaqi-centre", raise_after=1
    )
    readings = hourly("PM10-roof", "pm10", [120.0] * 20) + hourly("NO2-kerb", "no2", [50.0] * 20)
    detections, alerts = run(det, readings)
    topics = T.Topics("frugalsense", "centre", "gw-1")
    assert alerts and detections
    for d in detections:
        assert payloads.decode("frugalsense", topics.detections(d.kind), payloads.encode_detection(d)) == d
    for a in alerts:
        assert payloads.decode("frugalsense", topics.alerts, payloads.encode_alert(a)) == a
    # One InfluxDB series per sensor and one for the station: no point overwrites another.
    hour = [d for d in detections if d.time_ms == T0 + 19 * HOUR]
    keys = {line.split(" ")[0] for d in hour for line in to_line_protocol(d)}
    assert len(keys) == len(hour) == 3


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"sensors": [("P-1", "pressure")]}, "no band for pressure"),
        ({"sensors": [("NO2-kerb", "no2")], "alert_from": "bad"}, "alert_from must be one of"),
        ({"sensors": [("NO2-kerb", "no2")], "raise_after": 0}, "raise_after must be a whole number"),
        ({"sensors": [("NO2-kerb", "no2"), ("NO2-kerb", "no2")]}, "lists a sensor twice"),
    ],
)
def test_parameters_are_checked(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AqiDetector("centre", "gw-1", **kwargs)
