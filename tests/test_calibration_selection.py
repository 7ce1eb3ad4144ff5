"""The calibration selection never exports a loser, picks a better candidate when there is one, and ships its terms."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge.air.calibration_features import compute_terms
from training.air.calibration import split_rows, train_calibration
from training.air.calibration_csv import CalibrationTable
from training.air.calibration_fit import fit_candidates
from training.air.calibration_select import BASELINES, choose

HOUR_MS = 3_600_000


def site(days: int, seed: int, response):
    """Hourly co-location: a signal, T and RH, and a reference ``response(signal, rng)``."""
    rng = np.random.default_rng(seed)
    n = days * 24
    hour = np.arange(n) % 24
    signal = np.clip(20 + 15 * np.sin(2 * np.pi * hour / 24) + rng.gamma(2, 6, n), 0, None)
    t = 12 + 5 * np.sin(2 * np.pi * (hour - 9) / 24) + rng.normal(0, 1, n)
    rh = np.clip(60 - 2 * (t - 12) + rng.normal(0, 5, n), 10, 95)
    columns = {"ref": response(signal, rng), "raw": signal, "temp": t, "rh": rh}
    return CalibrationTable(np.arange(n, dtype=np.int64) * HOUR_MS + 1_700_000_000_000, columns, "test site")


def fitted(table, features, days=20):
    train, test = split_rows(table, "ref", features, days)
    return fit_candidates(table, "ref", features, train, test, seed=0)


def noise_columns(table, k: int, seed: int):
    """Irrelevant inputs that wander (random walks): an MLP fits them, and they do not hold later."""
    rng = np.random.default_rng(seed)
    n = len(table.time_ms)
    for i in range(k):
        table.columns[f"other{i}"] = np.cumsum(rng.normal(0, 1, n))
    return [f"other{i}" for i in range(k)]


def test_an_overfitting_mlp_is_not_exported_and_the_export_beats_every_baseline_on_validation():
    # a plain linear sensor under heavy noise, with six wandering irrelevant inputs
    table = site(28, seed=1, response=lambda s, rng: 0.8 * s + 3 + rng.normal(0, 8, len(s)))
    features = ["raw", "temp", "rh", *noise_columns(table, 6, seed=2)]
    f = fitted(table, features)
    by_name = {r["name"]: r for r in f.rows}
    assert by_name["mlp"]["validation"]["r2"] < by_name["linear"]["validation"]["r2"]  # it did overfit
    chosen = choose(f.rows)
    assert chosen["name"] != "mlp" and chosen["exportable"]
    for name in BASELINES:
        assert chosen["validation"]["r2"] >= by_name[name]["validation"]["r2"]
    assert chosen["name"] in ("scale_offset", "linear", "linear_physical", "ridge_physical", "huber_physical")


def test_when_the_raw_sensor_is_already_right_it_is_exported():
    # the sensor reads the reference's unit with small noise; extra inputs only add noise
    table = site(28, seed=4, response=lambda s, rng: s + rng.normal(0, 0.5, len(s)))
    f = fitted(table, ["raw", "temp", "rh", *noise_columns(table, 3, seed=5)])
    assert choose(f.rows)["name"] in ("raw_sensor", "scale_offset")  # the two are within noise of each other


def test_a_really_better_nonlinear_candidate_is_chosen():
    # a saturating response no linear term reproduces: the MLP wins on validation and is exported
    table = site(28, seed=6, response=lambda s, rng: 60 * np.tanh((s - 35) / 8) + rng.normal(0, 1, len(s)))
    f = fitted(table, ["raw", "temp", "rh"])
    by_name = {r["name"]: r for r in f.rows}
    chosen = choose(f.rows)
    assert chosen["name"] == "mlp", f.rows
    assert chosen["validation"]["r2"] > by_name["linear"]["validation"]["r2"] + 0.05
    assert chosen["test"]["r2"] > by_name["linear"]["test"]["r2"]


def test_the_choice_is_deterministic():
    table = site(24, seed=8, response=lambda s, rng: 0.5 * s + rng.normal(0, 4, len(s)))
    a, b = fitted(table, ["raw", "temp", "rh"]), fitted(table, ["raw", "temp", "rh"])
    assert choose(a.rows)["name"] == choose(b.rows)["name"]
    assert json.dumps(a.rows, sort_keys=True) == json.dumps(b.rows, sort_keys=True)


@pytest.fixture(scope="module")
def pm_run(tmp_path_factory):
    """A PM co-location with a humid excess: exported, with metrics.json and the manifest's recipe."""
    out = tmp_path_factory.mktemp("pm-cal")

    def response(s, rng):
        return s * 0.6 + 2 + rng.normal(0, 1.5, len(s))

    table = site(30, seed=9, response=response)
    table.columns["pm25_raw"] = table.columns.pop("raw") * (1 + 0.3 * table.columns["rh"] / (100 - table.columns["rh"]))
    return train_calibration(table, "ref", out, ["pm25_raw", "rh", "temp"], train_days=20, unit="ug/m3"), table


def test_metrics_json_has_every_candidate_on_validation_and_test_by_month(pm_run):
    result, _ = pm_run
    m = json.loads((result.out_dir / "metrics.json").read_text())
    names = [r["name"] for r in m["candidates"]]
    assert names[:4] == ["raw_sensor", "scale_offset", "linear", "humidity_growth"]
    assert {"mlp", "gbm_monotone", "ridge_physical", "huber_physical", "constant", "epa_correction"} <= set(names)
    for r in m["candidates"]:
        for split in ("validation", "test"):
            assert {"r2", "mae", "rmse", "n", "by_month"} <= set(r[split])
            assert all({"r2", "mae", "n"} <= set(v) for v in r[split]["by_month"].values())
    assert m["chosen"] in names and m["why"] and m["selection"]["validation_period"][0] > m["train_period"][0]
    assert m["selection"]["validation_period"][1] < m["test_period"][0]  # validation lies inside training
    assert m["roles"] == {
        "signal": "pm25_raw",
        "temperature": "temp",
        "humidity": "rh",
        "signal_is_resistance": False,
        "pm_humidity_growth": True,
    }
    assert m["data_quality"]["negative_reference"] == int(np.sum(pm_run[1].columns["ref"] < 0))
    assert m["r2"] >= m["linear_baseline"]["r2"] - 0.02 and m["r2"] > m["raw_sensor"]["r2"]
    report = (result.out_dir / "report.md").read_text()
    assert "| epa_correction |" in report and f"**Exported: `{m['chosen']}`**" in report


def test_the_exported_file_computes_the_calibration_from_raw_readings(pm_run):
    """The manifest's recipe + the numpy runtime reproduce the scikit-learn model's outputs from raw inputs."""
    from edge.runtime import load
    from edge.runtime.manifest import ModelManifest

    result, table = pm_run
    manifest_json = json.loads((result.out_dir / "manifest.json").read_text())
    recipe = manifest_json["calibration"]
    assert recipe["inputs"] == ["pm25_raw", "rh", "temp"] and recipe["unit"] == "ug/m3"
    manifest = ModelManifest.read(result.out_dir)
    raw = np.stack([table.columns[c] for c in recipe["inputs"]], axis=1)[-200:]
    terms = compute_terms(raw, recipe)
    assert manifest.features == [t["name"] for t in recipe["terms"]]
    got = load(manifest.files["numpy"], "numpy").predict(terms.astype(np.float32))
    with np.load(manifest.files["parity"].path) as z:
        reference = load(manifest.files["numpy"], "numpy").predict(z["X"])
        assert np.allclose(reference, z["outputs"], atol=1e-3) and z["outputs"].shape[1] == 1
        span = max(1.0, float(np.ptp(z["outputs"])))
    for fmt in ("onnx_float", "onnx_int8", "tflite_int8", "numpy"):  # every gateway format, on its runtime
        check = manifest_json["export_check"][fmt]
        assert check["runtime"] is None or check["mean_abs_error"] <= 0.02 * span, (fmt, check)
    expected = result.fitted.test_predictions[result.metrics["chosen"]][-200:]
    assert np.allclose(got[:, 0], expected, atol=1e-3 * max(1.0, float(np.ptp(expected))))


def test_a_mistyped_role_column_is_refused_with_a_suggestion(tmp_path):
    from training.air.calibration_csv import CalibrationCsvError

    table = site(24, seed=10, response=lambda s, rng: s + rng.normal(0, 1, len(s)))
    with pytest.raises(CalibrationCsvError, match="no numeric humidity column 'rhh'.*did you mean 'rh'"):
        train_calibration(table, "ref", tmp_path, ["raw", "temp", "rh"], train_days=16, humidity="rhh")
    with pytest.raises(CalibrationCsvError, match="'temp' is not one of the --features"):
        train_calibration(table, "ref", tmp_path, ["raw", "rh"], train_days=16, temperature="temp")
