"""The shipped air models (pattern, sensor fault, NO2 virtual sensor): cards, detectors on new sites, config."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edge.contracts import Alert, Detection
from edge.detectors.air_models import AirPatternDetector, No2VirtualSensor, SensorFaultDetector, load_air_model
from edge.features.air_features import PATTERN_FEATURES
from edge.runtime.registry import ModelIntegrityError
from edge.sources.replay import ReplaySource
from training.air.sensors import FAULT_CODE, NO_FAULTS, FaultRates
from training.air.simulation import PATTERNS, simulate_air_site

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "models"
NAMES = ("air-pattern", "air-fault", "air-no2-virtual")
PATTERN_INPUTS = ("pm25", "pm10", "no2", "temperature", "humidity", "cell_count")
FAULT_INPUTS = ("pm25", "pm10", "no2", "temperature", "humidity")
NO2_INPUTS = ("cell_count", "wind_speed", "temperature", "humidity")


def replay(site):
    ds = site.to_dataset()
    return ReplaySource(ds, "air-test", "gw-air", list(zip(ds.columns, ds.columns, ds.quantities, strict=True)))


def run(detector, site) -> list[Detection | Alert]:
    return [out for reading in replay(site) for out in detector.update(reading)]


@pytest.fixture(scope="module")
def clean_site():
    # Seed and start used by no training or evaluation set.
    return simulate_air_site(days=12, seed=90210, start="2026-01-12", faults=NO_FAULTS)


@pytest.mark.parametrize("name", NAMES)
def test_shipped_card_states_targets_and_every_format_meets_them(name):
    card = json.loads((MODELS / name / "card.json").read_text())
    by_format = card["metrics"]["by_format"]
    assert card["targets"] and set(by_format) == {"onnx_float", "onnx_int8", "tflite_int8", "numpy"}
    for target in card["targets"]:
        op, threshold = target["target"].split()
        for fmt, measured in by_format.items():
            value = measured[target["name"]]
            assert value >= float(threshold) if op == ">=" else value <= float(threshold), (fmt, target)
    assert all(t["met"] for t in card["targets"])
    assert (MODELS / name / "card.md").read_text().startswith(f"# {name} v")


def test_brief_targets_are_the_ones_measured():
    targets = {
        t["name"]: tuple(t["target"].split())
        for n in NAMES
        for t in json.loads((MODELS / n / "card.json").read_text())["targets"]
    }
    assert targets["macro_f1"] == (">=", "0.9")
    assert targets["recall_stuck"] == targets["recall_spike"] == targets["recall_fan_failure"] == (">=", "0.95")
    assert targets["false_faults_per_sensor_week"] == ("<=", "1.0")
    assert targets["r2_heldout_weeks"] == (">=", "0.75") and targets["r2_gain_over_weather"] == (">=", "0.2")


def test_pattern_detector_streams_the_patterns_of_a_fresh_site(clean_site):
    detector = AirPatternDetector(
        "air-test",
        "gw-air",
        {k: k for k in PATTERN_INPUTS},
        MODELS / "air-pattern",
        backend="numpy",
        model="air-pattern",
    )
    out = run(detector, clean_site)
    assert all(isinstance(d, Detection) and d.kind == "air_pattern" for d in out)
    labelled = [d for d in out if d.label != "insufficient_data"]
    first_hours = [d for d in out if d.window_end_ms < int(clean_site.time_ms[0]) + 12 * 3_600_000]
    assert {d.label for d in first_hours} == {"insufficient_data"}  # half of the 24 h context first
    truth = {int(t): PATTERNS[c] for t, c in zip(clean_site.hour_ms, clean_site.pattern, strict=True)}
    agree = np.mean([truth[d.window_start_ms] == d.label for d in labelled])
    assert len(labelled) >= 10 * 24 and agree >= 0.85, agree
    assert {d.label for d in labelled} >= {"normal", "traffic_peak"}
    d = labelled[0]
    assert d.window_end_ms - d.window_start_ms == 3_600_000 and d.validate()
    assert abs(sum(v for k, v in d.explanation.items() if k.startswith("p_")) - 1) < 1e-3


def test_no2_virtual_sensor_tracks_the_true_no2_of_a_fresh_zone(clean_site):
    detector = No2VirtualSensor(
        "air-test",
        "gw-air",
        {k: k for k in NO2_INPUTS},
        MODELS / "air-no2-virtual",
        backend="onnxruntime",
        model="air-no2",
    )
    out = [d for d in run(detector, clean_site) if d.label != "insufficient_data"]
    hourly = clean_site.truth["no2"].reshape(-1, 6).mean(axis=1)
    index = {int(t): i for i, t in enumerate(clean_site.hour_ms)}
    y = np.array([hourly[index[d.window_start_ms]] for d in out])
    p = np.array([d.score for d in out])
    r2 = 1 - np.sum((y - p) ** 2) / np.sum((y - y.mean()) ** 2)
    assert r2 >= 0.7, r2
    assert {d.label for d in out} <= {"good", "fair", "moderate", "poor", "very_poor", "extremely_poor"}
    assert all(d.explanation["no2_ugm3"] == round(d.score, 1) for d in out)


def test_fault_detector_flags_injected_faults_and_alerts_on_lasting_ones():
    site = simulate_air_site(days=14, seed=4242, start="2026-02-02", faults=FaultRates().scaled(3.0))
    detector = SensorFaultDetector(
        "air-test",
        "gw-air",
        {k: k for k in FAULT_INPUTS},
        MODELS / "air-fault",
        backend="litert",
        model="air-fault",
        precision="int8",
    )
    out = run(detector, site)
    detections = [d for d in out if isinstance(d, Detection) and d.label != "insufficient_data"]
    alerts = [a for a in out if isinstance(a, Alert)]
    t0 = int(site.time_ms[0])
    truth = {"ok": [], "stuck": [], "fan_failure": []}
    for d in detections:  # the injected fault codes of the slots each detection judged
        first = (d.window_start_ms - t0) // 600_000
        codes = site.faults[d.explanation["sensor"]][first : first + 6]
        if not codes.any():
            truth["ok"].append(d.label)
        elif np.all(codes == FAULT_CODE["fan_failure"]):
            truth["fan_failure"].append(d.label)
        elif np.sum(codes == FAULT_CODE["stuck"]) >= 3:
            truth["stuck"].append(d.label)
    assert min(len(v) for v in truth.values()) >= 5, {k: len(v) for k, v in truth.items()}
    assert np.mean(np.array(truth["ok"]) == "ok") >= 0.98
    assert np.mean(np.array(truth["fan_failure"]) == "fan_failure") >= 0.95
    assert np.mean(np.array(truth["stuck"]) == "stuck") >= 0.85
    assert any(a.label == "fan_failure" and a.state == "raised" for a in alerts)
    assert {d.model for d in detections} == {f"air-fault.{k}" for k in FAULT_INPUTS}
    for a in alerts:
        a.validate()
    raised = [a for a in alerts if a.state == "raised"]
    cleared = {a.alert_id for a in alerts if a.state == "cleared"}
    assert raised and all(a.label in ("stuck", "dropout", "fan_failure") for a in raised)
    assert len(cleared) >= len(raised) - len(FAULT_INPUTS)  # every alert clears unless the run ends in it


def test_fault_detector_stays_quiet_on_a_healthy_site(clean_site):
    detector = SensorFaultDetector(
        "air-test", "gw-air", {k: k for k in FAULT_INPUTS}, MODELS / "air-fault", backend="numpy", model="air-fault"
    )
    out = run(detector, clean_site)
    assert not [a for a in out if isinstance(a, Alert)]
    hours = [d for d in out if d.label != "insufficient_data"]
    false = sum(d.label != "ok" for d in hours)
    sensor_weeks = len(hours) / (7 * 24)
    assert false / sensor_weeks <= 1.0, (false, sensor_weeks)


def test_streaming_decisions_equal_the_batch_ones(clean_site):
    """The device path (slot buffer, one window) and the training path (whole series) decide the same."""
    from edge.features.air_features import hour_ends, pattern_features

    model = load_air_model(MODELS / "air-pattern", PATTERN_FEATURES, backend="numpy")
    ends = hour_ends(len(clean_site.time_ms), int(clean_site.time_ms[0]))
    batch = np.asarray(model.manifest.classes)[
        model.decide(pattern_features(clean_site.sensors, clean_site.time_ms, ends))
    ]
    batch_by_end = dict(zip((clean_site.time_ms[0] + ends * 600_000).tolist(), batch, strict=True))
    detector = AirPatternDetector(
        "air-test", "gw-air", {k: k for k in PATTERN_INPUTS}, MODELS / "air-pattern", backend="numpy"
    )
    streamed = {d.window_end_ms: d.label for d in run(detector, clean_site) if d.window_end_ms in batch_by_end}
    assert streamed and all(streamed[t] == batch_by_end[t] for t in streamed)


def test_a_silent_sensor_gives_insufficient_data_never_a_guess(clean_site):
    site = simulate_air_site(days=3, seed=7, faults=NO_FAULTS)
    site.sensors["no2"][-36:] = np.nan  # the NO2 node unplugged for the last 6 hours
    detector = AirPatternDetector(
        "air-test", "gw-air", {k: k for k in PATTERN_INPUTS}, MODELS / "air-pattern", backend="numpy"
    )
    last = run(detector, site)[-3:]
    assert [d.label for d in last] == ["insufficient_data"] * 3
    assert last[-1].explanation["lacking"] == ["no2"]


def test_model_problems_are_refused_with_a_clear_message(tmp_path):
    with pytest.raises(ValueError, match="no exported model here .*make train-air"):
        AirPatternDetector("s", "g", {k: k for k in PATTERN_INPUTS}, tmp_path / "nothing")
    with pytest.raises(ValueError, match="expects features .* retrain"):
        No2VirtualSensor("s", "g", {k: k for k in NO2_INPUTS}, MODELS / "air-pattern")
    with pytest.raises(ValueError, match="air_pattern needs a sensor for cell_count"):
        AirPatternDetector("s", "g", {k: k for k in PATTERN_INPUTS[:-1]}, MODELS / "air-pattern")
    copy = tmp_path / "air-fault"
    shutil.copytree(MODELS / "air-fault", copy)
    (copy / "air-fault.npz").write_bytes(b"not the exported file")
    with pytest.raises(ModelIntegrityError, match="does not match its manifest"):
        SensorFaultDetector("s", "g", {"no2": "no2"}, copy)


AIR_CONFIG = {
    "site": "air-test",
    "gateway": "gw-air",
    "mqtt": {"host": "127.0.0.1"},
    "sensors": [
        {"id": k, "quantity": k, "driver": "replay"}
        for k in ("pm25", "pm10", "no2", "temperature", "humidity", "wind_speed", "cell_count")
    ],
    "sources": {"replay": {"file": "air.npz"}},
    "models": [
        {
            "name": "pattern",
            "type": "air_pattern",
            "model_dir": str(MODELS / "air-pattern"),
            "sensors": {k: k for k in PATTERN_INPUTS},
        },
        {
            "name": "faults",
            "type": "sensor_fault",
            "model_dir": str(MODELS / "air-fault"),
            "backend": "numpy",
            "sensors": {k: k for k in FAULT_INPUTS},
        },
        {
            "name": "no2-virtual",
            "type": "no2_virtual",
            "model_dir": str(MODELS / "air-no2-virtual"),
            "sensors": {k: k for k in NO2_INPUTS},
        },
        {"name": "no2-drift", "type": "calibration_drift", "sensor": "no2", "estimate_from": "no2-virtual"},
    ],
}


def _config(change=None):
    from gateway.config import GatewayConfig

    data = json.loads(json.dumps(AIR_CONFIG))
    if change:
        change(data)
    return GatewayConfig.model_validate(data)


def test_config_builds_every_air_detector():
    from edge.detectors.drift import CalibrationDriftDetector
    from gateway.device.runner import build_detectors

    detectors = build_detectors(_config())
    assert [type(d).__name__ for d in detectors] == [
        "AirPatternDetector",
        "SensorFaultDetector",
        "No2VirtualSensor",
        "CalibrationDriftDetector",
    ]
    drift = detectors[-1]
    assert isinstance(drift, CalibrationDriftDetector) and isinstance(drift.estimator, No2VirtualSensor)


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda d: d["models"][0]["sensors"].update(no2="humidity"),
            "sensor 'humidity' measures humidity; this input needs no2",
        ),
        (lambda d: d["models"][0]["sensors"].pop("pm10"), "missing: pm10"),
        (lambda d: d["models"][1]["sensors"].update(wind_speed="wind_speed"), "does not judge wind_speed"),
        (lambda d: d["models"][2].update(backend="tensorflow"), "must be one of auto, onnxruntime, litert, numpy"),
        (
            lambda d: d["models"][3].update(estimate_from="no2-virtul"),
            "no model of type no2_virtual named 'no2-virtul'",
        ),
        (lambda d: d["models"][3].update(sensor="no2x"), "no sensor with id 'no2x'"),
        (lambda d: d["models"][3].update(reference="pm25"), "give reference or estimate_from, not both"),
    ],
)
def test_config_mistakes_are_named(change, message):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=message):
        _config(change)


def test_quick_training_exports_every_format_and_writes_cards(tmp_path):
    """The whole training path on a few small sites: a smoke test of the pipeline, not of the figures."""
    from training.air.data import QUICK
    from training.air.evaluate import evaluate_all
    from training.air.train import train_all
    from training.cards import check_card

    dirs = train_all(tmp_path, QUICK, progress=False)
    assert set(dirs) == {"pattern", "fault", "no2"}
    evaluate_all(tmp_path, QUICK, progress=False, drift_sites=0)
    for name in NAMES:
        card = json.loads((tmp_path / name / "card.json").read_text())
        assert set(card["metrics"]["by_format"]) == {"onnx_float", "onnx_int8", "tflite_int8", "numpy"}
        assert check_card(card) == []


def test_demo_air_site_goes_through_mqtt_and_influxdb(services, tmp_path, capsys):
    """The air site of `make demo`, on the real broker and database: every reading lands, the models speak."""
    from gateway.commands.config_cmd import load_gateway_config
    from gateway.commands.demo_cmd import DATABASE, _air_site

    services.create_influx_database(DATABASE)
    water = load_gateway_config(str(REPO / "firmware_configs" / "net3-demo.yaml"))
    assert _air_site(water, services, tmp_path)
    out = capsys.readouterr().out
    assert "readings published 18107 (16128 measured + 1979 calibrated), in InfluxDB 18107 -> all landed" in out
    agree = int(out.split("agrees with the simulation on ")[1].split("%")[0])
    assert agree >= 85
    assert "fault-PM25-sds-20260119T1750 fan_failure" in out  # the injected fan failure, raised as an alert
    assert "NO2 virtual sensor (phones per antenna + weather): R2 0." in out
    assert "PM2.5 calibration (pm25-cal, model type calibration): 1979 readings in InfluxDB, R2 0.9" in out


def test_the_documented_config_validates_and_builds(tmp_path):
    """The YAML example of docs/air-models.md, with sensors for its inputs, is a working config."""
    import re

    import yaml

    from gateway.config import GatewayConfig
    from gateway.device.runner import build_detectors

    text = (REPO / "docs" / "air-models.md").read_text()
    models = yaml.safe_load(re.search(r"```yaml\n(.*?)```", text, flags=re.S).group(1))["models"]
    sensors = {
        "PM25-sds": "pm25",
        "PM10-sds": "pm10",
        "NO2-node": "no2",
        "T-node": "temperature",
        "RH-node": "humidity",
        "CC-centre": "cell_count",
        "WIND-met": "wind_speed",
    }
    data = {
        "site": "s",
        "gateway": "g",
        "mqtt": {"host": "127.0.0.1"},
        "models": models,
        "sensors": [{"id": k, "quantity": q, "driver": "replay"} for k, q in sensors.items()],
        "sources": {"replay": {"file": "air.npz"}},
    }
    config = GatewayConfig.model_validate(data, context={"path": str(REPO / "firmware_configs" / "example.yaml")})
    assert [type(d).__name__ for d in build_detectors(config)] == [
        "AirPatternDetector",
        "SensorFaultDetector",
        "No2VirtualSensor",
        "CalibrationDriftDetector",
    ]
