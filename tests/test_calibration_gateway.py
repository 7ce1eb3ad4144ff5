"""Model type ``calibration`` on the gateway: the shipped PM2.5 calibration applied to a stream of raw readings.

The calibrated readings must be the exported model's predictions on the same rows (numpy
backend, terms by ``compute_terms``), published for the model's virtual sensor, and
``suspect`` while the drift detector's ``recalibration_needed`` alert is open.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge.air.calibration_features import compute_terms
from edge.contracts import AlertState, Quality, Reading
from edge.detectors import CalibrationDriftDetector
from edge.detectors.base import ModelSwapError
from edge.detectors.calibration import CalibrationApplier
from edge.runtime import load
from edge.runtime.manifest import ModelManifest
from training.air.calibration_shipped import INPUTS, REFERENCE, co_location_table

MODEL = Path(__file__).resolve().parents[1] / "models" / "air-pm25-calibration"
SENSORS = {"pm25": "PM25-sds", "humidity": "RH-node", "temperature": "T-node"}
QUANTITY = {"pm25": ("pm25", "ug/m3"), "humidity": ("humidity", "%"), "temperature": ("temperature", "degC")}


def stream(table, rows):
    """The table's raw inputs as the gateway receives them: one Reading per sensor per step, a few seconds apart."""
    for i in rows:
        for k, name in enumerate(INPUTS):
            value = float(table.columns[name][i])
            quantity, unit = QUANTITY[name]
            yield Reading(int(table.time_ms[i]) + 1000 * k, "air", "gw", SENSORS[name], quantity, value, unit)


def applier(**kw):
    return CalibrationApplier("air", "gw", SENSORS, MODEL, "pm25-cal", "pm25_calibrated", backend="numpy", **kw)


@pytest.fixture(scope="module")
def table():
    return co_location_table(days=4, seed=5)  # another seed than the one trained on


def test_calibrated_readings_are_the_exported_models_predictions_on_the_same_rows(table):
    det = applier()
    rows = range(len(table.time_ms))
    out = [o for r in stream(table, rows) for o in det.update(r)]
    assert all(isinstance(o, Reading) and o.sensor == "pm25-cal" and o.quantity == "pm25_calibrated" for o in out)
    assert len(out) == len(table.time_ms)  # one per step: the step completes with its last input
    recipe = json.loads((MODEL / "manifest.json").read_text())["calibration"]
    raw = np.stack([table.columns[c] for c in recipe["inputs"]], axis=1)
    expected = load(ModelManifest.read(MODEL).files["numpy"], "numpy").predict(
        compute_terms(raw, recipe).astype(np.float32)
    )[:, 0]
    got = np.array([o.value for o in out])
    assert np.allclose(got, expected, atol=1e-4)
    assert [o.time_ms for o in out] == [int(t) + 2000 for t in table.time_ms]
    truth = table.columns[REFERENCE]
    r2 = 1 - np.sum((got - truth) ** 2) / np.sum((truth - truth.mean()) ** 2)
    raw_r2 = 1 - np.sum((raw[:, 0] - truth) ** 2) / np.sum((truth - truth.mean()) ** 2)
    assert r2 > raw_r2 + 1.0, (r2, raw_r2)  # far closer to the truth than the raw optical sensor
    for o in out:
        o.validate()


def test_a_step_waits_for_every_input_and_a_stale_one_stops_it(table):
    det = applier(window_ms=60_000)
    first = list(stream(table, [0]))
    assert det.update(first[0]) == [] and det.update(first[1]) == []
    assert len(det.update(first[2])) == 1
    assert det.update(first[2]) == []  # the same step is not decided twice
    later = list(stream(table, [3]))  # 30 min later: the humidity node went silent
    assert det.update(later[0]) == [] and det.update(later[2]) == []  # pm25 and temperature fresh, humidity 30 min old
    bad = Reading(later[1].time_ms, "air", "gw", "RH-node", "humidity", None, "%", Quality.UNKNOWN)
    assert det.update(bad) == []  # an unknown input makes no calibrated value


def test_state_survives_a_restart(table):
    det = applier()
    readings = list(stream(table, [0, 1]))
    for r in readings[:4]:
        det.update(r)
    again = applier()
    again.restore(json.loads(json.dumps(det.state(), allow_nan=False)))
    assert [o.value for o in again.update(readings[4])] == [o.value for o in det.update(readings[4])] == []
    assert [o.value for o in again.update(readings[5])] == [o.value for o in det.update(readings[5])]
    with pytest.raises(ValueError):
        again.restore({"latest": {"wind": [0, 1.0, "ok"]}, "last_step_ms": None, "drift": None})


def _drifting_stream():
    """10-minute raw PM next to a reference PM: true for 6 days, then reading 3x high; with humidity and temperature."""
    start = 1_767_225_600_000  # 2026-01-01
    rng = np.random.default_rng(3)
    for k in range(144 * 14):
        t = start + k * 600_000
        ref = 10 + 5 * np.sin(k / 144 * 2 * np.pi) + rng.normal(0, 1)
        raw = ref * (3.0 if k >= 144 * 6 else 1.0)
        yield Reading(t, "air", "gw", "PM-ref", "pm25", float(ref), "ug/m3")
        yield Reading(t + 1000, "air", "gw", "PM25-sds", "pm25", float(raw), "ug/m3")
        yield Reading(t + 2000, "air", "gw", "RH-node", "humidity", 60.0, "%")
        yield Reading(t + 3000, "air", "gw", "T-node", "temperature", 12.0, "degC")


def test_readings_are_suspect_while_the_drift_alert_is_open():
    def drift():
        return CalibrationDriftDetector(
            "air",
            "gw",
            "PM25-sds",
            reference="PM-ref",
            calibration_days=3,
            smoothing_days=1,
            threshold=3.0,
            min_sigma=0.5,
            model="pm25-drift",
        )

    watcher, det = drift(), applier(drift=drift())
    raised_at, quality_at_raise = None, []
    for r in _drifting_stream():
        alerts = [a for a in watcher.update(r) if getattr(a, "state", None) is AlertState.RAISED]
        out = det.update(r)
        if alerts and raised_at is None:
            raised_at = alerts[0].time_ms
        if out:
            quality_at_raise.append((out[0].time_ms, out[0].quality))
    assert raised_at is not None, "the drift detector never raised recalibration_needed"
    before = {q for t, q in quality_at_raise if t < raised_at}
    after = {q for t, q in quality_at_raise if t > raised_at}
    assert before == {Quality.OK} and after == {Quality.SUSPECT}


def test_a_new_version_reading_other_inputs_is_refused(tmp_path):
    det = applier()
    manifest = ModelManifest.read(MODEL)
    other = json.loads((MODEL / "manifest.json").read_text())
    other["calibration"]["inputs"] = ["pm25", "humidity", "pressure"]
    new = ModelManifest.from_dict(other, MODEL)

    class Backend:  # only the manifest is read by check_model
        pass

    b = Backend()
    b.manifest = new  # type: ignore[attr-defined]
    with pytest.raises(ModelSwapError, match="reads pm25, humidity, pressure"):
        det.check_model(b)
    b.manifest = manifest  # type: ignore[attr-defined]
    assert det.check_model(b) is None


def test_a_line_node_may_print_a_raw_resistance_or_voltage_for_a_calibration():
    from gateway.config import load_config_text

    NODE = "/dev/serial/by-id/usb-mox-node"
    cfg = load_config_text(
        "site: s\ngateway: g\nmqtt: {host: 127.0.0.1}\nsensors:\n"
        f"  - {{id: CO-mox, quantity: resistance, driver: line, port: {NODE}, key: rs, node_unit: kohm}}\n"
        f"  - {{id: CO-v, quantity: voltage, driver: line, port: {NODE}, key: v, node_unit: mV}}\n",
        "mox.yaml",
    )
    assert [(s.quantity, s.unit) for s in cfg.sensors] == [("resistance", "ohm"), ("voltage", "V")]


def test_drift_model_must_name_a_calibration_drift_model_and_its_copy_runs_in_the_applier(tmp_path, capsys):
    from gateway.cli import main
    from gateway.config import load_config

    text = (
        "site: s\ngateway: g\nmqtt: {host: 127.0.0.1}\nsources: {replay: {file: none.npz}}\nsensors:\n"
        + "".join(
            f"  - {{id: {sid}, quantity: {QUANTITY[name][0]}, driver: replay}}\n" for name, sid in SENSORS.items()
        )
        + "  - {id: PM-ref, quantity: pm25, driver: replay}\n"
        "models:\n  - {name: drift, type: calibration_drift, sensor: PM25-sds, reference: PM-ref}\n"
        f"  - name: pm25-cal\n    type: calibration\n    model_dir: {MODEL}\n"
        "    inputs: {pm25: PM25-sds, humidity: RH-node, temperature: T-node}\n    drift_model: drift\n"
    )
    good = tmp_path / "good.yaml"
    good.write_text(text)
    [_, cal] = [m.build_detector(cfg) for cfg in [load_config(good)] for m in cfg.models]
    assert isinstance(cal.drift, CalibrationDriftDetector) and cal.drift.reference == "PM-ref"
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("drift_model: drift", "drift_model: drfit"))
    assert main(["config", "validate", str(bad)]) == 1
    err = capsys.readouterr().err
    line = next(n for n, x in enumerate(text.splitlines(), 1) if "drift_model" in x)
    assert f"{bad}:{line}: models[1].drift_model: no model of type calibration_drift named 'drfit'" in err, err
