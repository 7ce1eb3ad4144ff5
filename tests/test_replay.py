"""Replaying a zone dataset as Readings: order, gaps, mapping errors, pacing."""

from __future__ import annotations

import numpy as np
import pytest

from edge.contracts import Quality
from edge.datasets import DatasetError, ZoneDataset
from edge.sources import ReplaySource

START_MS = 1_772_409_600_000  # 2026-03-02T00:00Z
STEP_MS = 900_000
MAPPING = [("F-10", "10", "flow"), ("P-10", "10", "pressure"), ("F-60", "60", "flow")]


def small_dataset(steps: int = 4) -> ZoneDataset:
    values = np.arange(steps * 3, dtype=np.float32).reshape(steps, 3) + 1.0
    values[2, 2] = np.nan
    return ZoneDataset(
        time_ms=START_MS + np.arange(steps, dtype=np.int64) * STEP_MS,
        values=values,
        columns=["10", "10", "60"],
        quantities=["flow", "pressure", "flow"],
        units=["L/s", "m", "L/s"],
        leak_flow_lps=np.zeros(steps, dtype=np.float32),
        meta={"network": "test"},
    )


class FakeClock:
    """Time that moves only when the replay sleeps, so pacing is checked without waiting."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_all_sensors_of_a_step_come_before_the_next_step():
    readings = list(ReplaySource(small_dataset(), "net3", "gw-01", MAPPING))
    assert len(readings) == 12
    assert [r.time_ms for r in readings] == [START_MS + (i // 3) * STEP_MS for i in range(12)]
    assert [r.sensor for r in readings[:3]] == ["F-10", "P-10", "F-60"]
    assert [r.value for r in readings[:3]] == [1.0, 2.0, 3.0]
    assert all(r.validate() for r in readings)
    assert readings[1].unit == "m" and readings[0].unit == "L/s"


def test_a_gap_becomes_an_unknown_reading_without_value():
    readings = list(ReplaySource(small_dataset(), "net3", "gw-01", MAPPING))
    gap = readings[8]
    assert (gap.sensor, gap.time_ms) == ("F-60", START_MS + 2 * STEP_MS)
    assert gap.quality is Quality.UNKNOWN and gap.value is None
    assert sum(r.quality is Quality.UNKNOWN for r in readings) == 1


def test_a_missing_column_is_named_with_the_available_ones():
    with pytest.raises(DatasetError) as error:
        ReplaySource(small_dataset(), "net3", "gw-01", [("P-60", "60", "pressure")])
    assert "'60' with quantity 'pressure'" in str(error.value)
    assert "available: 10/flow, 10/pressure, 60/flow" in str(error.value)


def test_replay_reads_a_dataset_file(tmp_path):
    path = small_dataset().save(tmp_path / "zone.npz")
    readings = list(ReplaySource(path, "net3", "gw-01", MAPPING[:1]))
    assert [r.value for r in readings] == [1.0, 4.0, 7.0, 10.0]
    with pytest.raises(DatasetError, match="no such dataset file"):
        ReplaySource(tmp_path / "other.npz", "net3", "gw-01", MAPPING)


def test_speed_paces_steps_against_the_start():
    clock = FakeClock()
    source = ReplaySource(small_dataset(), "net3", "gw-01", MAPPING, speed=60, sleep=clock.sleep, clock=clock)
    times = [(r.time_ms, clock.now) for r in source]
    assert clock.sleeps == [15.0, 15.0, 15.0]  # 15 min of data at 60x
    assert times[-1] == (START_MS + 3 * STEP_MS, 145.0)


def test_speed_zero_never_sleeps():
    clock = FakeClock()
    list(ReplaySource(small_dataset(), "net3", "gw-01", MAPPING, sleep=clock.sleep, clock=clock))
    assert clock.sleeps == []


def test_bad_replay_settings_are_refused():
    with pytest.raises(ValueError, match="speed"):
        ReplaySource(small_dataset(), "net3", "gw-01", MAPPING, speed=-1)
    with pytest.raises(ValueError, match="sensor"):
        ReplaySource(small_dataset(), "net3", "gw-01", [("F 10", "10", "flow")])
    with pytest.raises(ValueError, match="same sensor id twice"):
        ReplaySource(small_dataset(), "net3", "gw-01", [("F-10", "10", "flow"), ("F-10", "60", "flow")])
    with pytest.raises(ValueError, match=r"\(sensor_id, column, quantity\)"):
        ReplaySource(small_dataset(), "net3", "gw-01", [("F-10", "10")])


def test_a_malformed_dataset_is_refused_when_built():
    with pytest.raises(DatasetError, match="unit 'bar'"):
        ZoneDataset([START_MS], [[1.0]], ["10"], ["pressure"], ["bar"], [0.0])
    with pytest.raises(DatasetError, match="strictly increasing"):
        ZoneDataset([START_MS, START_MS], [[1.0], [2.0]], ["10"], ["flow"], ["L/s"], [0.0, 0.0])
    with pytest.raises(DatasetError, match="same \\(column, quantity\\) twice"):
        ZoneDataset([START_MS], [[1.0, 2.0]], ["10", "10"], ["flow", "flow"], ["L/s", "L/s"], [0.0])
