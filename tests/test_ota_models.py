"""Signed model updates of every model type, over the session's real Mosquitto: push, applied, the next decision.

For each model type the gateway's detectors are built from a config as ``frugalsense run``
builds them, fed the first part of a stream, then sent a new version of the shipped model
(``models/``, re-versioned in tmp: the input scaling moved, the parity rows re-scored, as a
re-export gives them) signed with a fresh fleet key. The gateway must say ``applied``
only once the detectors score with it; the next Detection must carry the new version and
be the one a gateway that ran the new version from the start gives on the same readings
(the state was kept), and not the old one's. A version that fails the smoke test is
rolled back: the store's pointer stays, the old model keeps deciding, the report says why.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edge.contracts import Detection, Reading
from edge.runtime import load_model
from edge.runtime.manifest import ModelManifest
from gateway.config import load_config_text
from gateway.device.runner import build_detectors
from gateway.model_updates.envelope import load_public_key
from gateway.model_updates.listener import start_for_config, status_topic, update_topic
from gateway.model_updates.signing import build_update, generate_signing_key, push_update, sign_model
from gateway.model_updates.store import ModelStore
from gateway.protocol import topics as T
from gateway.protocol.mqtt_client import MqttSettings
from tests.test_detector_contract import AIR, DAY, GATEWAY, HOUR, MINUTE, SENSORS, SITE, T0, air_stream, water_stream

REPO = Path(__file__).resolve().parents[1]
WAIT_S = 20.0  # upper bound only: every wait returns as soon as the gateway has answered
INSUFFICIENT = "insufficient_data"

# model type -> (shipped model, its models section, the stream, when the update is pushed (data time)).
# The air models run on onnxruntime: the receiver's own default (numpy) must not be what they get.
NO2V = (
    "  - {{name: no2v, type: no2_virtual, backend: onnxruntime, model_dir: {models}/air-no2-virtual,\n"
    "      sensors: {{cell_count: CC, wind_speed: WS, temperature: T, humidity: RH}}}}\n"
)
CASES = {
    "learned_leak": (
        "leak-mlp-net3",
        "  - {{name: leak-ml, type: learned_leak, model_dir: {models}/leak-mlp-net3, backend: onnxruntime}}\n",
        lambda: water_stream(days=4),
        T0 + 3 * DAY + 2 * HOUR,
    ),
    "air_pattern": (
        "air-pattern",
        "  - {{name: pattern, type: air_pattern, backend: onnxruntime, model_dir: {models}/air-pattern,\n"
        "      sensors: {{pm25: PM25, pm10: PM10, no2: NO2, temperature: T, humidity: RH, cell_count: CC}}}}\n",
        lambda: air_stream(days=2),
        T0 + 30 * HOUR,
    ),
    "sensor_fault": (
        "air-fault",
        "  - {{name: fault, type: sensor_fault, backend: onnxruntime, model_dir: {models}/air-fault,\n"
        "      sensors: {{pm25: PM25, no2: NO2}}}}\n",
        lambda: air_stream(days=2),
        T0 + 30 * HOUR,
    ),
    "no2_virtual": ("air-no2-virtual", NO2V, lambda: air_stream(days=2), T0 + 30 * HOUR),
    "calibration": (  # its outputs are calibrated Readings of its virtual sensor, not Detections
        "air-pm25-calibration",
        "  - {{name: pm25-cal, type: calibration, backend: onnxruntime, model_dir: {models}/air-pm25-calibration,\n"
        "      inputs: {{pm25: PM25, humidity: RH, temperature: T}}}}\n",
        lambda: air_stream(days=1),
        T0 + 12 * HOUR,
    ),
    "calibration_drift": (  # the NO2 virtual sensor, and the drift detector's own copy of it as its reference
        "air-no2-virtual",
        NO2V + "  - {{name: drift, type: calibration_drift, sensor: NO2, estimate_from: no2v,\n"
        "      calibration_days: 3, smoothing_days: 1}}\n",
        lambda: drift_air_stream(days=6),
        T0 + 3 * DAY + 10 * MINUTE,
    ),
}


def drift_air_stream(days: int) -> Iterator[Reading]:
    """10-minute NO2 and what the NO2 virtual sensor reads (phones, wind, weather), with daily cycles."""
    rng = np.random.default_rng(13)
    units = {"temperature": "degC", "humidity": "%", "wind_speed": "m/s", "cell_count": "count"}
    for k in range(days * 144):
        t = T0 + k * 10 * MINUTE
        traffic = 1.0 + 0.5 * math.sin(((t - T0) % DAY) / DAY * 2 * math.pi)
        for quantity in ("no2", "temperature", "humidity", "wind_speed", "cell_count"):
            sensor, level = AIR[quantity]
            value = level * (traffic if quantity in ("no2", "cell_count") else 1.0) * rng.uniform(0.95, 1.05)
            yield Reading(t, SITE, GATEWAY, sensor, quantity, round(float(value), 3), units.get(quantity, "ug/m3"))


# ---- models: re-versioned copies of the shipped ones, signed ---------------------------------


def reversion(src: Path, dst: Path, version: str, *, shift: float = 0.0, rescore: bool = True, slip: bool = False):
    """``src`` as version ``version`` in ``dst``: input means moved by ``shift`` spreads, parity re-scored.

    ``rescore=False`` keeps the old reference outputs (the new version then disagrees with its
    own parity rows: a failed smoke test for a classifier); ``slip`` stores the first feature's
    spread as 1e-40 (a unit slip: every window scales to infinity, which no model can score).
    """
    shutil.copytree(src, dst)
    path = dst / "manifest.json"
    raw = json.loads(path.read_text())
    raw["version"] = version
    scaling = raw["input"]["scaling"]
    scaling["mean"] = [m + shift * s for m, s in zip(scaling["mean"], scaling["scale"], strict=True)]
    if slip:
        scaling["scale"][0] = 1e-40
    path.write_text(json.dumps(raw, indent=1))
    if rescore:
        manifest = ModelManifest.read(dst)
        parity = manifest.files["parity"]
        with np.load(parity.path) as z:
            X = z["X"]
        buf = io.BytesIO()
        np.savez(buf, X=X, outputs=load_model(manifest, "numpy").predict(X))
        parity.path.write_bytes(buf.getvalue())
        raw["files"]["parity"].update(sha256=hashlib.sha256(buf.getvalue()).hexdigest(), bytes=len(buf.getvalue()))
        path.write_text(json.dumps(raw, indent=1))
    return dst


def make_fleet(root: Path) -> dict:
    """The fleet's signing key pair and, per shipped model, v2 (new weights in effect) and a v3 that fails."""
    private, public = generate_signing_key(root / "keys")
    models = {}
    for name in {case[0] for case in CASES.values()}:
        src = REPO / "models" / name
        v2 = reversion(src, root / name / "v2", "2", shift=0.3)
        # A classifier's v3 misses its own reference decisions; the regression one cannot score at all.
        if ModelManifest.read(src).task == "classification":
            v3 = reversion(src, root / name / "v3", "3", shift=3.0, rescore=False)
        else:
            v3 = reversion(src, root / name / "v3", "3", rescore=False, slip=True)
        for folder in (v2, v3):
            sign_model(folder, private)
        models[name] = {"v1": src, "v2": v2, "v3": v3}
    return {"root": root, "private": private, "public": public, "key": load_public_key(public), "models": models}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    return make_fleet(tmp_path_factory.mktemp("ota-fleet"))


def config(
    model_type: str,
    models: Path | str,
    *,
    prefix: str = "ota",
    data_dir: Path | None = None,
    public=None,
    sensors: str = SENSORS,
):
    """The gateway config of one model type, its model folders under ``models`` (one folder per model name)."""
    section = CASES[model_type][1].format(models=models)
    updates = ""
    if public is not None:
        updates = f"storage: {{data_dir: {data_dir}}}\nmodel_updates: {{enabled: true, public_key_file: {public}}}\n"
    text = (
        f"site: {SITE}\ngateway: {GATEWAY}\nmqtt: {{host: 127.0.0.1, topic_prefix: {prefix}}}\n"
        f"sources: {{replay: {{file: none.npz}}}}\n{updates}sensors:\n{sensors}models:\n{section}"
    )
    return load_config_text(text, "ota.yaml", path=REPO / "firmware_configs" / "ota.yaml")


def version_folder(fleet, model_type: str, version: str, tmp_path: Path) -> Path:
    """A models folder holding ``version`` of this type's model under its shipped name (for a reference gateway)."""
    name = CASES[model_type][0]
    folder = tmp_path / f"models-{version}"
    if not folder.exists():
        folder.mkdir()
        shutil.copytree(fleet["models"][name][version], folder / name)
    return folder


def running(detector):
    """The loaded model a detector's next decision scores with (the drift detector's: its estimator's)."""
    estimator = getattr(detector, "estimator", None)
    return (estimator if estimator is not None else detector).runtime_


def run(detectors, readings, *, flush: bool = False) -> list:
    out = [o for r in readings for d in detectors for o in d.update(r)]
    return out + ([o for d in detectors for o in d.flush()] if flush else [])


def push(services, topics, folder: Path, model: str, version: str) -> dict:
    """Send one signed model folder to the gateway and wait for its report."""
    settings = MqttSettings(services.mqtt_host, services.mqtt_port, client_id=f"{topics.prefix}-push")
    body = build_update(folder)[1]
    reports = push_update(
        settings, {update_topic(topics, model): status_topic(topics)}, body, model=model, version=version, wait_s=WAIT_S
    )
    report = reports[update_topic(topics, model)]
    assert report is not None, "the gateway did not answer"
    return report


@pytest.fixture
def gateway(services, fleet, tmp_path, request):
    """Start a gateway of one model type on the session's broker: its detectors, listener, topics and store."""
    started = []

    def start(model_type: str):
        prefix = "ota-" + re.sub(r"[^A-Za-z0-9]", "", request.node.name)[-40:]
        cfg = config(model_type, REPO / "models", prefix=prefix, data_dir=tmp_path / "data", public=fleet["public"])
        detectors = build_detectors(cfg)
        settings = MqttSettings(services.mqtt_host, services.mqtt_port, client_id=f"{prefix}-gw")
        listener = start_for_config(cfg, settings, detectors, backend="numpy")  # numpy: not what the detectors run
        assert listener is not None and listener.wait_subscribed(WAIT_S)
        started.append(listener)
        return detectors, listener, T.Topics(prefix, SITE, GATEWAY), ModelStore(tmp_path / "data" / "models")

    yield start
    for listener in started:
        listener.stop()


def decisions(outputs, after_ms: int = 0) -> dict:
    """(kind, model, window end) -> the Detection, for the detections that scored (not insufficient data);
    a calibration's Readings by (sensor, time)."""
    derived = {(o.sensor, o.time_ms): o for o in outputs if isinstance(o, Reading) and o.time_ms >= after_ms}
    return derived | {
        (o.kind, o.model, o.window_end_ms): o
        for o in outputs
        if isinstance(o, Detection) and o.label != INSUFFICIENT and o.time_ms >= after_ms
    }


def reference(cfg, readings, after_ms: int) -> dict:
    """The decisions of a gateway that ran ``cfg``'s models on ``readings`` from the start, no update."""
    return decisions(run(build_detectors(cfg), readings, flush=True), after_ms)


def split(readings: list[Reading], at_ms: int) -> tuple[list[Reading], list[Reading]]:
    cut = next(i for i, r in enumerate(readings) if r.time_ms >= at_ms)
    return readings[:cut], readings[cut:]


def compared(d: Detection | Reading):
    """What must match between gateways: the drift detector's daily statistic (its label also depends on the
    calibration days, estimated by the old version here), a calibrated value, else the label and score."""
    if isinstance(d, Reading):
        return round(float(d.value or 0.0), 4)
    return d.explanation["statistic"] if d.kind == "calibration" else (d.label, round(d.score, 5))


# ---- per model type: applied, and the next decision is the new version's -----------------------


@pytest.mark.parametrize("model_type", sorted(CASES))
def test_update_is_applied_and_the_next_decision_comes_from_the_new_version(
    model_type, services, fleet, gateway, tmp_path
):
    name, _, stream, at_ms = CASES[model_type]
    detectors, listener, topics, store = gateway(model_type)
    runtimes = {d.model: f"{running(d).format}/{running(d).name}" for d in detectors}
    first, rest = split(list(stream()), at_ms)
    run(detectors, first)

    report = push(services, topics, fleet["models"][name]["v2"], name, "2")

    assert report["outcome"] == "applied", report
    for detector in detectors:  # every detector that runs the model took it, on the runtime it had
        assert running(detector).manifest.version == "2", detector.model
        # Same precision and runtime as before the update, though the receiver's default is numpy.
        assert f"{running(detector).format}/{running(detector).name}" == runtimes[detector.model]
        assert f"{detector.model} (state kept)" in report["detail"]  # and the report says it scored with it
    assert listener.receiver.state()[name]["version"] == "2" and store.pointer(name).current == "2"

    after = run(detectors, rest, flush=True)
    assert after and all(
        o.model_version == "2" for o in after if not isinstance(o, Reading) and o.kind != "calibration"
    )
    new = reference(config(model_type, version_folder(fleet, model_type, "v2", tmp_path)), first + rest, at_ms)
    old = reference(config(model_type, REPO / "models"), first + rest, at_ms)
    got = decisions(after)
    assert got and set(got) == set(new)
    assert [compared(d) for d in got.values()] == [compared(new[k]) for k in got]
    assert [compared(d) for d in got.values()] != [compared(old[k]) for k in got]  # not the old model's
    if model_type == "calibration_drift":
        assert {d.explanation["estimator_version"] for d in got.values() if d.kind == "calibration"} == {"2"}


@pytest.mark.parametrize("model_type", sorted(CASES))
def test_version_failing_the_smoke_test_is_rolled_back_and_the_old_one_keeps_deciding(
    model_type, services, fleet, gateway
):
    name, _, stream, at_ms = CASES[model_type]
    detectors, listener, topics, store = gateway(model_type)
    first, rest = split(list(stream()), at_ms)
    run(detectors, first)

    report = push(services, topics, fleet["models"][name]["v3"], name, "3")

    assert (report["outcome"], report["reason"]) == ("rolled_back", "smoke_test_failed"), report
    says = (
        "reference decision" if ModelManifest.read(REPO / "models" / name).task == "classification" else "cannot score"
    )
    assert says in report["detail"] and "v1 stays in service" in report["detail"]
    assert store.pointer(name) is None and not (store.root / name / "3").exists()
    assert all(running(d).manifest.version == "1" for d in detectors)
    after = run(detectors, rest, flush=True)
    old = reference(config(model_type, REPO / "models"), first + rest, at_ms)
    got = decisions(after)
    assert got and all(o.model_version == "1" for o in after if not isinstance(o, Reading))
    assert [compared(d) for d in got.values()] == [compared(old[k]) for k in got]
