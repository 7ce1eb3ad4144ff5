"""What a model update does to the detectors that run it: all or none, same precision, state kept or reset.

The receiver the runner starts (``ModelUpdateReceiver`` with a ``DetectorHandOver``), fed
signed updates directly (the MQTT side is in tests/test_ota_models.py): a detector that
says it took the model but still scores with the old one makes the update roll back for
all; an update loads on the format and runtime of the version it replaces, or not at
all; a leak model that reads other sensors resets the learned leak detector's baseline
with the reason logged; an air model on other features is refused.
"""

from __future__ import annotations

import json
import logging
import shutil

import pytest

from edge.detectors.air_models import No2VirtualSensor
from edge.detectors.base import ModelSwapError
from edge.runtime import load_model
from edge.runtime.manifest import ModelManifest
from gateway.device.runner import build_detectors
from gateway.model_updates.handover import DetectorHandOver
from gateway.model_updates.listener import hand_to_detectors
from gateway.model_updates.receiver import ModelUpdateReceiver
from gateway.model_updates.signing import build_update, sign_model
from gateway.model_updates.store import ModelStore
from tests.test_ota_models import (
    DAY,
    GATEWAY,
    REPO,
    SENSORS,
    SITE,
    T0,
    config,
    make_fleet,
    reversion,
    run,
    running,
    split,
    water_stream,
)

NO2 = "air-no2-virtual"
LEAK = "leak-mlp-net3"
HOUR = 3_600_000


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    return make_fleet(tmp_path_factory.mktemp("ota-swaps-fleet"))


def receiver_for(fleet, tmp_path, detectors) -> ModelUpdateReceiver:
    """A gateway's receiver as start_for_config builds it (numpy as its default: not what the detectors run)."""
    users = DetectorHandOver(detectors)
    receiver = ModelUpdateReceiver(ModelStore(tmp_path / "store"), fleet["key"], backend="numpy", detectors=users)
    for runtime in users.runtimes():
        receiver.adopt(runtime)
    return receiver


def signed(fleet, folder) -> bytes:
    sign_model(folder, fleet["private"])
    return build_update(folder, fleet["key"])[1]


def edit_manifest(folder, change) -> None:
    path = folder / "manifest.json"
    raw = json.loads(path.read_text())
    change(raw)
    path.write_text(json.dumps(raw, indent=1))


class StaleNo2(No2VirtualSensor):
    """Says it took the new model and keeps scoring with the one it had: the fault issue 12 found."""

    def use_model(self, backend):
        self.check_model(backend)


def test_a_detector_still_scoring_the_old_model_rolls_the_update_back_for_all(fleet, tmp_path):
    good = build_detectors(config("no2_virtual", REPO / "models"))[0]
    stale = StaleNo2(SITE, GATEWAY, dict(good.sensors), REPO / "models" / NO2, backend="onnxruntime", model="stale")
    receiver = receiver_for(fleet, tmp_path, [good, stale])

    report = receiver.apply(build_update(fleet["models"][NO2]["v2"], fleet["key"])[1])

    assert (report.outcome, report.reason) == ("rolled_back", "handover_failed")
    assert "stale took air-no2-virtual v2 but still scores with v1" in report.detail
    assert running(good).manifest.version == running(stale).manifest.version == "1"  # all or none
    assert good.model_version == "1" and receiver.state()[NO2]["version"] == "1"
    assert receiver.store.pointer(NO2) is None and not (receiver.store.root / NO2 / "2").exists()


def test_an_update_keeps_the_precision_and_runtime_in_service(fleet, tmp_path):
    cfg = config("no2_virtual", REPO / "models")
    cfg.models[0].precision, cfg.models[0].backend = "int8", "litert"  # the int8 TFLite file
    detector = build_detectors(cfg)[0]
    assert (running(detector).format, running(detector).name) == ("tflite_int8", "litert")
    receiver = receiver_for(fleet, tmp_path, [detector])

    assert receiver.apply(build_update(fleet["models"][NO2]["v2"], fleet["key"])[1]).outcome == "applied"
    assert running(detector).manifest.version == "2"
    assert (running(detector).format, running(detector).name) == ("tflite_int8", "litert")
    assert receiver.state()[NO2]["runtime"] == "tflite_int8/litert"

    # v4 comes without its int8 TFLite file: it is not put in service on another precision.
    v4 = reversion(fleet["models"][NO2]["v2"], tmp_path / "v4", "4")
    edit_manifest(v4, lambda raw: raw["files"].pop("tflite_int8"))
    report = receiver.apply(signed(fleet, v4))
    assert (report.outcome, report.reason) == ("rolled_back", "smoke_test_failed")
    assert "none of the formats ['tflite_int8']" in report.detail and "v2 stays in service" in report.detail
    assert (running(detector).manifest.version, running(detector).format) == ("2", "tflite_int8")


def presence_as_leak_v2(fleet, tmp_path):
    """The shipped presence model (11 sensors, 17 features) released as leak-mlp-net3 v2."""
    v2 = tmp_path / "leak-v2"
    shutil.copytree(REPO / "models" / f"{LEAK}-presence", v2)
    edit_manifest(v2, lambda raw: raw.update(name=LEAK, version="2"))
    return signed(fleet, v2)


def test_leak_model_reading_other_sensors_resets_the_baseline_with_the_reason(fleet, tmp_path, caplog):
    presence = SENSORS + "  - {id: PRES, quantity: cell_count, driver: replay, column: presence}\n"
    detector = build_detectors(config("learned_leak", REPO / "models", sensors=presence))[0]
    first, rest = split(list(water_stream(days=4)), T0 + 3 * DAY + 18 * HOUR)
    before = [o for o in run([detector], first) if o.kind == "leak" and o.label != "insufficient_data"]
    assert before, "v1 scored on its baseline"
    receiver = receiver_for(fleet, tmp_path, [detector])

    with caplog.at_level(logging.WARNING, logger="edge.detectors.base"):
        report = receiver.apply(presence_as_leak_v2(fleet, tmp_path))

    assert report.outcome == "applied", report
    assert "leak-ml (state reset: it reads other features (17 from 11 sensors, was 15 from 10)" in report.detail
    assert "state reset" in caplog.text and "the baseline is rebuilt" in caplog.text
    assert (running(detector).format, running(detector).name) == ("onnx_float", "onnxruntime")
    after = run([detector], rest)
    assert after and {o.model_version for o in after} == {"2"}
    assert {o.label for o in after} == {"insufficient_data"}  # a new baseline, three days before it scores
    assert "baseline has 0 of 3 days" in after[0].explanation["reason"]


def test_leak_model_reading_a_sensor_this_gateway_lacks_is_refused(fleet, tmp_path):
    detector = build_detectors(config("learned_leak", REPO / "models"))[0]
    receiver = receiver_for(fleet, tmp_path, [detector])

    report = receiver.apply(presence_as_leak_v2(fleet, tmp_path))

    assert (report.outcome, report.reason) == ("refused", "features_changed")
    assert "reads sensor(s) presence (cell_count), which this gateway's config does not map" in report.detail
    assert running(detector).manifest.version == "1" and not (receiver.store.root / LEAK).exists()


def test_air_model_on_other_features_is_refused(fleet, tmp_path):
    detector = build_detectors(config("air_pattern", REPO / "models"))[0]
    receiver = receiver_for(fleet, tmp_path, [detector])
    v2 = reversion(REPO / "models" / "air-pattern", tmp_path / "pattern-v2", "2")
    edit_manifest(v2, lambda raw: raw["input"]["features"].__setitem__(0, "pm25_wet_1h"))

    report = receiver.apply(signed(fleet, v2))

    assert (report.outcome, report.reason) == ("refused", "features_changed")
    assert "takes features pm25_wet_1h" in report.detail and "this gateway's software computes" in report.detail
    assert running(detector).manifest.version == "1" and not (receiver.store.root / "air-pattern").exists()


def test_hand_to_detectors_reaches_the_drift_detectors_estimator(fleet):
    no2v, drift = build_detectors(config("calibration_drift", REPO / "models"))
    assert drift.model_name == NO2 and drift.estimator is not no2v
    v2 = load_model(ModelManifest.read(fleet["models"][NO2]["v2"]), "numpy")
    assert hand_to_detectors([no2v, drift], NO2, v2) == 0
    assert drift.estimator.runtime_ is v2 and no2v.runtime_ is v2
    assert drift.model_version == "1"  # the drift test's own version; its estimator's is in its detections


@pytest.mark.parametrize("model_type", ["air_pattern", "sensor_fault", "no2_virtual", "learned_leak"])
def test_same_features_keep_the_state(model_type, fleet, tmp_path):
    detector = build_detectors(config(model_type, REPO / "models"))[0]
    name = running(detector).manifest.name
    v2 = load_model(ModelManifest.read(fleet["models"][name]["v2"]), "numpy")
    assert detector.check_model(v2) is None
    state = {k: v for k, v in vars(detector).items() if k.endswith("_") and k != "runtime_"}
    detector.use_model(v2)
    assert {k: v for k, v in vars(detector).items() if k.endswith("_") and k != "runtime_"}.keys() == state.keys()
    assert all(getattr(detector, k) is v for k, v in state.items() if k not in ("alarm_",))


def renamed_classes(src, dst, rename: dict):
    """``src`` as v2 with some class names changed (the same network: the labels are what changed)."""
    v2 = reversion(src, dst, "2")
    edit_manifest(v2, lambda raw: raw["output"].update(names=[rename.get(n, n) for n in raw["output"]["names"]]))
    return load_model(ModelManifest.read(v2), "numpy")


def test_sensor_fault_with_other_classes_restarts_its_label_runs_and_keeps_open_alerts(tmp_path):
    detector = build_detectors(config("sensor_fault", REPO / "models"))[0]
    for sensor in detector.runs_:
        detector.runs_[sensor].extend(["stuck", "stuck"])
    detector.alerts_["PM25"] = ("fault-PM25-20260302T0100", T0, "stuck")
    v2 = renamed_classes(REPO / "models" / "air-fault", tmp_path / "fault-v2", {"spike": "spike_short"})

    assert "label runs restart" in detector.check_model(v2)
    detector.use_model(v2)
    assert running(detector) is v2 and all(len(runs) == 0 for runs in detector.runs_.values())
    assert detector.alerts_ == {"PM25": ("fault-PM25-20260302T0100", T0, "stuck")}  # it still clears after ok hours

    no_ok = renamed_classes(REPO / "models" / "air-fault", tmp_path / "fault-v3", {"ok": "healthy"})
    with pytest.raises(ModelSwapError) as refused:
        detector.use_model(no_ok)
    assert refused.value.reason == "outputs_changed" and running(detector) is v2


def test_air_pattern_with_other_classes_keeps_its_state(tmp_path):
    detector = build_detectors(config("air_pattern", REPO / "models"))[0]
    buffer = detector.buffer_
    v2 = renamed_classes(REPO / "models" / "air-pattern", tmp_path / "pattern-v2", {"local_source": "local_fire"})
    assert detector.check_model(v2) is None
    detector.use_model(v2)
    assert running(detector) is v2 and detector.buffer_ is buffer
