"""`train air-calibration` on the real London Mile End co-location (SPS30 vs a reference BAM), hourly and at 15 min.

Reads ``../shared/data/london-mile-end-colocation-2025.csv`` (never copied into the
repository); skipped, saying why, where that directory is absent. The assertions are
the targets this selection reaches there; docs/air-models.md lists the figures and the
ones it misses (test R2 >= 0.2, above the raw SPS30).
"""

from __future__ import annotations

import csv
import json

import pytest

from gateway.cli import main
from scripts.gen_calibration_doc import LONDON, shared_data

PATH = shared_data(LONDON)
pytestmark = pytest.mark.skipif(
    PATH is None,
    reason=f"the real co-location ../shared/data/{LONDON} is not next to this checkout (set FRUGALSENSE_SHARED_DATA)",
)
ARGS = ["--target", "ref_pm25", "--features", "sps30_pm25,sht45_rh,sht45_temp", "--train-days", "30"]


def run(out, args):
    assert main(["train", "air-calibration", "--csv", str(PATH), *args, "--unit", "ug/m3", "--out", str(out)]) == 0
    return json.loads((out / "metrics.json").read_text())


@pytest.fixture(scope="module", params=["hourly", "15min"])
def london(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"london-{request.param}")
    extra = ["--resample", "60"] if request.param == "hourly" else []
    return request.param, run(out, [*ARGS, *extra]), out


def reference_rows():
    with open(PATH, newline="") as f:
        return [float(r["ref_pm25"]) for r in csv.DictReader(f) if r["ref_pm25"].strip()]


def test_the_export_is_never_below_the_linear_baseline(london):
    _, m, _ = london
    rows = {r["name"]: r for r in m["candidates"]}
    chosen = rows[m["chosen"]]
    for name in ("raw_sensor", "scale_offset", "linear"):  # the rule, on validation
        assert chosen["validation"]["r2"] >= rows[name]["validation"]["r2"]
    assert m["r2"] >= m["linear_baseline"]["r2"]  # and the target on test
    assert m["selection"]["validation_period"][1] < m["test_period"][0]
    assert {"epa_correction", "constant", "raw_sensor", "gbm_monotone", "mlp"} <= set(rows)


def test_negative_reference_values_and_gaps_are_counted_and_kept(london):
    kind, m, _ = london
    q = m["data_quality"]
    if kind == "15min":
        assert q["negative_reference"] == sum(v < 0 for v in reference_rows()) > 0  # kept, not clipped
        assert q["step_minutes"] == 15 and q["missing_periods"] > 0
    else:
        assert q["step_minutes"] == 60 and q["negative_reference"] > 0 and q["resampled_periods_dropped"]
    assert q["negative_reference_train"] + q["negative_reference_test"] <= q["negative_reference"]
    assert q["gaps_over_one_hour"] > 0 and "kept" in q["negative_reference_policy"]


def test_without_the_enclosure_temperature_hourly_reaches_the_target(tmp_path):
    """RH only (docs/air.md: over one month temperature tracks the season): R2 >= 0.2, above raw and constant."""
    m = run(tmp_path / "no-t", [a.replace(",sht45_temp", "") for a in ARGS] + ["--resample", "60"])
    rows = {r["name"]: r for r in m["candidates"]}
    assert m["features"] == ["sps30_pm25", "sht45_rh"]
    assert m["r2"] >= 0.2 and m["r2"] >= m["linear_baseline"]["r2"]
    assert m["r2"] > m["raw_sensor"]["r2"] and m["r2"] > rows["constant"]["test"]["r2"]
    assert m["r2"] > rows["epa_correction"]["test"]["r2"]


def test_the_manifest_says_how_to_compute_the_inputs(london):
    _, m, out = london
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["calibration"]["inputs"] == ["sps30_pm25", "sht45_rh", "sht45_temp"]
    assert manifest["calibration"]["target"] == "ref_pm25" and manifest["calibration"]["unit"] == "ug/m3"
    assert manifest["calibration"]["candidate"] == m["chosen"]


def test_the_recalibration_schedule_replays_deterministically_and_never_uses_the_scored_days(london, tmp_path):
    """7 days every 30 days (training/air/recalibration_schedule.py): what docs/air-models.md reports."""
    from training.air.calibration_csv import read_calibration_csv
    from training.air.calibration_data import resample
    from training.air.recalibration_schedule import replay_schedule

    kind, _, first = london
    if kind != "hourly":
        pytest.skip("the schedule is reported for the hourly set")
    table, _ = resample(read_calibration_csv(PATH), 60)
    runs = [replay_schedule(table, first, tmp_path / f"run{n}") for n in range(2)]
    assert runs[0] == runs[1]
    r = runs[0]
    assert [p["co_location_days"] for p in r["periods"]] == [[30, 37], [60, 67]]
    for p in r["periods"]:
        update = json.loads((tmp_path / "run0" / f"update{r['periods'].index(p) + 1}" / "update.json").read_text())
        assert update["co_location_period"][1] < update["test_period"][0]  # chosen on the co-location alone
        assert p["each_update_after"][p["update"]] == p["scheduled"]["r2"]  # the one in use is the one chosen
        if p["update"] == "keep":
            assert p["scheduled"] == p["first_only"]
