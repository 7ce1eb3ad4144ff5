"""The simulated Net3 zone: water balance, leak label, dataset file, and the MNF detector end to end."""

from __future__ import annotations

import numpy as np
import pytest

from edge.contracts import Alert, AlertState, Detection
from edge.datasets import DatasetError, ZoneDataset
from edge.detectors import MinimumNightFlowDetector
from edge.features import minimum_night_flow, zone_inflow
from edge.sources import ReplaySource
from training.water.zone import (
    DAY_S,
    DEFAULT_LEAK,
    INFLOW_LINKS,
    PRESSURE_NODES,
    START_MS,
    LeakSpec,
    simulate_zone,
    true_zone_demand,
)

HOUR_MS = 3_600_000
INFLOW_SENSORS = [(f"F-{link}", 1) for link in INFLOW_LINKS]
MAPPING = [(f"F-{c}", c, "flow") for c in INFLOW_LINKS] + [(f"P-{c}", c, "pressure") for c in PRESSURE_NODES]


def run_detector(dataset: ZoneDataset) -> list[Detection | Alert]:
    detector = MinimumNightFlowDetector("net3", "gw-01", INFLOW_SENSORS)
    return [out for reading in ReplaySource(dataset, "net3", "gw-01", MAPPING) for out in detector.update(reading)]


def test_inflow_meters_sum_to_demand_plus_leak():
    leak = LeakSpec("163", 0.10, start_s=DAY_S + 3 * 3600)
    inflow, demand_and_leak = true_zone_demand(seed=7, days=2, leak=leak)
    assert inflow.shape == demand_and_leak.shape == (2 * 96,)
    assert np.abs(inflow - demand_and_leak).max() < 1e-6
    # The balance must hold while tanks fill (negative meter flow) and while the leak runs.
    assert inflow.min() > 400.0


def test_leak_label_is_zero_before_the_start_and_positive_after(leak_run):
    start_ms = leak_run.meta["leak_start_ms"]
    assert start_ms == START_MS + DEFAULT_LEAK.start_s * 1000
    before = leak_run.time_ms < start_ms
    assert np.all(leak_run.leak_flow_lps[before] == 0.0)
    assert np.all(leak_run.leak_flow_lps[~before] > 100.0)
    assert 150.0 < leak_run.meta["leak_mean_flow_lps"] < 200.0


def test_dataset_shape_and_timestamps(leak_run):
    assert leak_run.values.shape == (14 * 96, len(INFLOW_LINKS) + len(PRESSURE_NODES))
    assert leak_run.time_ms[0] == START_MS and np.all(np.diff(leak_run.time_ms) == 900_000)
    assert ("10", "flow") in leak_run.sensors and ("101", "pressure") in leak_run.sensors
    pressures = leak_run.values[:, len(INFLOW_LINKS) :]
    assert 10.0 < pressures.min() and pressures.max() < 80.0


def test_leak_free_run_shares_demands_and_noise(leak_run, leak_free_run):
    assert np.all(leak_free_run.leak_flow_lps == 0.0)
    assert leak_free_run.meta["leak_node"] is None
    before = leak_run.time_ms < leak_run.meta["leak_start_ms"]
    np.testing.assert_allclose(leak_run.values[before], leak_free_run.values[before], atol=1e-3)
    assert not np.allclose(leak_run.values[~before], leak_free_run.values[~before], atol=1.0)


def test_night_flow_rises_by_about_the_leak(leak_run, leak_free_run):
    signs = [1] * len(INFLOW_LINKS)
    _, with_leak = minimum_night_flow(leak_run.time_ms, zone_inflow(leak_run.values[:, :5], signs))
    _, without = minimum_night_flow(leak_free_run.time_ms, zone_inflow(leak_free_run.values[:, :5], signs))
    assert with_leak.shape == without.shape == (14,)
    assert np.abs(with_leak[:9] - without[:9]).max() < 1e-3
    excess = with_leak[9:] - without[9:]
    assert np.all(np.abs(excess - leak_run.meta["leak_mean_flow_lps"]) < 25.0)


def test_detector_raises_one_alert_within_48_hours_of_the_leak(leak_run):
    outputs = run_detector(leak_run)
    alerts = [o for o in outputs if isinstance(o, Alert)]
    start_ms = leak_run.meta["leak_start_ms"]
    assert len(alerts) == 1
    alert = alerts[0].validate()
    assert alert.state is AlertState.RAISED and alert.alert_id == "leak-2026-03-11"
    assert start_ms < alert.since_ms and alert.time_ms - start_ms <= 48 * HOUR_MS
    assert "possible leak of about" in alert.message
    detections = [o.validate() for o in outputs if isinstance(o, Detection)]
    assert len(detections) == 14
    assert all(d.label != "leak" for d in detections if d.window_end_ms <= start_ms)
    assert all(d.label == "leak" for d in detections if d.window_start_ms > start_ms)
    excess = [d.explanation["excess_lps"] for d in detections if d.label == "leak"]
    assert all(0.8 < e / leak_run.meta["leak_mean_flow_lps"] < 1.5 for e in excess)


def test_detector_stays_quiet_without_a_leak(leak_free_run):
    outputs = run_detector(leak_free_run)
    assert [o for o in outputs if isinstance(o, Alert)] == []
    labels = [o.label for o in outputs]
    assert labels == ["insufficient_data"] * 2 + ["normal"] * 12


def test_a_meter_dropout_makes_that_night_insufficient(leak_free_run):
    values = leak_free_run.values.copy()
    night_5 = (leak_free_run.time_ms >= START_MS + 5 * DAY_S * 1000 + 2 * HOUR_MS) & (
        leak_free_run.time_ms < START_MS + 5 * DAY_S * 1000 + 4 * HOUR_MS
    )
    values[np.flatnonzero(night_5)[3], leak_free_run.column_index("60", "flow")] = np.nan
    broken = ZoneDataset(
        leak_free_run.time_ms,
        values,
        leak_free_run.columns,
        leak_free_run.quantities,
        leak_free_run.units,
        leak_free_run.leak_flow_lps,
        leak_free_run.meta,
    )
    labels = [o.label for o in run_detector(broken)]
    assert labels[5] == "insufficient_data"
    assert labels[2:5] + labels[6:] == ["normal"] * 11


def test_dataset_round_trip(tmp_path, leak_run):
    path = leak_run.save(tmp_path / "zone")
    assert path.name == "zone.npz"
    loaded = ZoneDataset.load(path)
    np.testing.assert_array_equal(loaded.time_ms, leak_run.time_ms)
    np.testing.assert_array_equal(loaded.values, leak_run.values)
    np.testing.assert_array_equal(loaded.leak_flow_lps, leak_run.leak_flow_lps)
    assert loaded.values.dtype == np.float32 and loaded.time_ms.dtype == np.int64
    assert (loaded.columns, loaded.quantities, loaded.units) == (leak_run.columns, leak_run.quantities, leak_run.units)
    assert loaded.meta == leak_run.meta


def test_csv_has_a_row_per_step_and_empty_cells_for_gaps(tmp_path, leak_run):
    values = leak_run.values[:3].copy()
    values[1, 0] = np.nan
    small = ZoneDataset(
        leak_run.time_ms[:3],
        values,
        leak_run.columns,
        leak_run.quantities,
        leak_run.units,
        leak_run.leak_flow_lps[:3],
        {},
    )
    lines = small.to_csv(tmp_path / "zone.csv").read_text().splitlines()
    assert lines[0].startswith("timestamp,flow_10 [L/s],flow_60 [L/s]")
    assert lines[0].endswith("pressure_247 [m],leak_flow_label [L/s]")
    assert len(lines) == 4
    assert lines[1].startswith("2026-03-02T00:00:00Z,")
    assert lines[2].split(",")[1] == ""


def test_truncated_or_foreign_files_are_refused(tmp_path, leak_run):
    good = leak_run.save(tmp_path / "good.npz").read_bytes()
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(DatasetError, match="truncated"):
        ZoneDataset.load(truncated)
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, x=np.arange(3))
    with pytest.raises(DatasetError, match="not a frugalsense zone dataset"):
        ZoneDataset.load(foreign)
    text = tmp_path / "notes.npz"
    text.write_text("hello")
    with pytest.raises(DatasetError):
        ZoneDataset.load(text)
    with pytest.raises(DatasetError, match="no such dataset file"):
        ZoneDataset.load(tmp_path / "missing.npz")


def test_bad_leak_specs_are_refused():
    with pytest.raises(ValueError, match="not a junction"):
        simulate_zone(days=1, leak=LeakSpec("Lake", 0.05, 3600), progress=False)
    with pytest.raises(ValueError, match="metres"):
        simulate_zone(days=1, leak=LeakSpec("163", 5.0, 3600), progress=False)
    with pytest.raises(ValueError, match="do not fit"):
        simulate_zone(days=1, leak=LeakSpec("163", 0.05, 2 * DAY_S), progress=False)
