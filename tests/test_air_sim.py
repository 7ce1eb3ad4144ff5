"""The air-site simulator: seeded, physically sensible, its faults and labels where they should be; the air features."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from edge.datasets import ZoneDataset
from edge.features.air_features import (
    FAULT_FEATURES,
    HISTORY_SLOTS,
    NO2_FEATURES,
    PATTERN_FEATURES,
    fault_features,
    hour_ends,
    hygroscopic_growth,
    no2_features,
    pattern_features,
)
from edge.sources.cell_counts import DEFAULT_K
from training.air.sensors import DAY_SLOTS, FAN_VALUES, FAULT_CODE, NO_FAULTS, FaultRates
from training.air.simulation import PATTERNS, SiteParams, dilution, simulate_air_site, traffic_profile


@pytest.fixture(scope="module")
def site():
    params = dataclasses.replace(SiteParams.draw(np.random.default_rng([11, 0])), episodes_per_week=1.0)
    return simulate_air_site(days=28, seed=11, start="2025-12-01", faults=FaultRates().scaled(2.0), params=params)


def test_same_seed_same_site_other_seed_other_site():
    a, b = simulate_air_site(days=3, seed=5), simulate_air_site(days=3, seed=5)
    c = simulate_air_site(days=3, seed=6)
    for name in a.sensors:
        np.testing.assert_array_equal(a.sensors[name], b.sensors[name])
    assert not np.allclose(np.nan_to_num(a.sensors["no2"]), np.nan_to_num(c.sensors["no2"]))


def test_refuses_a_simulation_too_short_to_have_a_day_of_context():
    with pytest.raises(ValueError, match="days must be a whole number >= 2"):
        simulate_air_site(days=1)


def test_published_relations_hold():
    hours = np.arange(24.0)
    weekday, weekend = traffic_profile(hours, np.zeros(24, bool)), traffic_profile(hours, np.ones(24, bool))
    assert {int(np.argmax(weekday[:12])), int(12 + np.argmax(weekday[12:]))} == {8, 17}  # two rush hours
    assert weekend.max() < weekday.max() and 11 <= int(np.argmax(weekend)) <= 15  # one lower midday peak
    # Dilution ~ 1/wind (with the street-turbulence floor) and ~ mixing height^-0.3.
    assert dilution(np.array(1.0), np.array(400.0)) == pytest.approx(2 * dilution(np.array(3.0), np.array(400.0)))
    assert dilution(np.array(4.0), np.array(100.0)) > dilution(np.array(4.0), np.array(1000.0))
    growth = hygroscopic_growth(np.array([40.0, 70.0, 90.0]), 0.3)
    assert growth[1] - growth[0] < growth[2] - growth[1]  # steeper above ~70 % RH


def test_sensors_are_physical_and_cells_privacy_guarded(site):
    s = site.sensors
    clean = {k: v[~np.isnan(v)] for k, v in s.items()}
    assert clean["humidity"].min() >= 0 and clean["humidity"].max() <= 100
    for k in ("pm25", "pm10", "no2", "wind_speed"):
        assert clean[k].min() >= 0
    kept = site.antenna_counts[~np.isnan(site.antenna_counts)]
    assert kept.min() >= DEFAULT_K  # no count below k anywhere
    assert np.isnan(site.antenna_counts).any()  # and some were indeed suppressed


def test_traffic_drives_both_phones_and_no2(site):
    hour = (site.time_ms // 3_600_000) % 24
    weekday = ((site.time_ms // 86_400_000) + 3) % 7 < 5
    rush, night = weekday & np.isin(hour, [7, 8, 17]), np.isin(hour, [2, 3])
    assert np.nanmean(site.sensors["cell_count"][rush]) > 1.3 * np.nanmean(site.sensors["cell_count"][night])
    assert np.mean(site.truth["no2_traffic"][rush]) > 3 * np.mean(site.truth["no2_traffic"][night])
    # Episodes are fine-mode: PM2.5/PM10 rises.
    episode = site.truth["episode_pm25"] > 20
    if episode.any():
        ratio = site.truth["pm25"] / site.truth["pm10"]
        assert ratio[episode].mean() > ratio[~episode].mean()


def test_faults_are_written_into_the_sensor_values(site):
    for sensor, codes in site.faults.items():
        x = site.sensors[sensor]
        assert np.all(np.isnan(x[codes == FAULT_CODE["dropout"]]))
        if sensor in FAN_VALUES:
            assert np.all(x[codes == FAULT_CODE["fan_failure"]] == FAN_VALUES[sensor])
        stuck = codes == FAULT_CODE["stuck"]
        starts = np.flatnonzero(stuck & ~np.r_[False, stuck[:-1]])
        for start in starts:  # each stuck run repeats the last value before it
            end = start + np.argmin(stuck[start:]) if not stuck[start:].all() else len(x)
            assert np.all(x[start:end] == x[start - 1])
    seen = {k for codes in site.faults.values() for k in np.unique(codes).tolist()}
    assert {FAULT_CODE[k] for k in ("stuck", "spike", "dropout", "fan_failure")} <= seen


def test_no_faults_means_none_and_no_drift_means_a_true_calibration():
    params = dataclasses.replace(SiteParams.draw(np.random.default_rng([3, 0])), mox_offset_per_day=2.0)
    site = simulate_air_site(days=4, seed=3, faults=NO_FAULTS, params=params, mox_drift=False)
    assert all(not codes.any() for codes in site.faults.values())
    assert not np.isnan(site.sensors["pm25"]).any()
    assert np.all(site.truth["mox_offset"] == 0)
    drifting = simulate_air_site(days=4, seed=3, faults=NO_FAULTS, params=params)
    assert drifting.truth["mox_offset"][-1] == pytest.approx(2.0 * 4, abs=0.1)


def test_pattern_labels_follow_their_sources(site):
    hourly = {
        k: site.truth[k][: len(site.pattern) * 6].reshape(-1, 6).mean(axis=1)
        for k in ("episode_pm25", "wood_pm25", "no2_traffic")
    }
    label = np.asarray(PATTERNS)[site.pattern]
    assert np.all(hourly["episode_pm25"][label == "regional_episode"] >= 12)
    assert np.all(hourly["wood_pm25"][label == "local_source"] >= 8)
    assert np.all(hourly["no2_traffic"][label == "traffic_peak"] >= 25)
    assert set(label) == set(PATTERNS)


def test_replay_dataset_round_trip(site, tmp_path):
    path = site.to_dataset().save(tmp_path / "air.npz")
    ds = ZoneDataset.load(path)
    assert ds.columns[:3] == ["pm25", "pm10", "no2"] and "wind_speed" in ds.quantities
    np.testing.assert_allclose(ds.series("no2", "no2"), site.sensors["no2"].astype(np.float32))


def test_features_are_the_same_in_one_window_as_in_many(site):
    """The gateway computes one window from its 24 h buffer; training computes all at once: same numbers."""
    ends = hour_ends(len(site.time_ms), int(site.time_ms[0]))
    e = int(ends[40])
    buffer = {k: v[e - HISTORY_SLOTS : e] for k, v in site.sensors.items()}
    times = site.time_ms[e - HISTORY_SLOTS : e]
    one = np.array([HISTORY_SLOTS])
    np.testing.assert_allclose(
        pattern_features(buffer, times, one)[0], pattern_features(site.sensors, site.time_ms, ends)[40]
    )
    np.testing.assert_allclose(no2_features(buffer, times, one)[0], no2_features(site.sensors, site.time_ms, ends)[40])
    np.testing.assert_allclose(
        fault_features(buffer["no2"], "no2", one)[0], fault_features(site.sensors["no2"], "no2", ends)[40]
    )
    assert len(PATTERN_FEATURES) == 16 and len(NO2_FEATURES) == 11 and len(FAULT_FEATURES) == 14


def test_features_say_insufficient_data_with_nan_not_a_made_up_value():
    s = simulate_air_site(days=2, seed=1, faults=NO_FAULTS)
    series = dict(s.sensors)
    series["no2"] = series["no2"].copy()
    series["no2"][-DAY_SLOTS:] = np.nan
    row = pattern_features(series, s.time_ms, np.array([len(s.time_ms)]))[0]
    assert np.isnan(row[PATTERN_FEATURES.index("no2_1h")])
    with pytest.raises(ValueError, match="window ends must lie in"):
        pattern_features(series, s.time_ms, np.array([10]))
    with pytest.raises(ValueError, match="need series cell_count"):
        no2_features({k: v for k, v in series.items() if k != "cell_count"}, s.time_ms, np.array([200]))
