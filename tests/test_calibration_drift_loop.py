"""The calibration loop on the gateway: calibrated readings feed the drift test and the EAQI; the alert says what to do.

A PM2.5 calibration (the shipped model) publishes its virtual sensor ``pm25-cal``; a
calibration_drift model watches that sensor against a reference, an eaqi takes it as its
PM2.5. The raw optical sensor reads 3x high from day 6: the calibrated output goes stale,
the drift model raises ``recalibration_needed`` naming the calibration, the version in
service and the commands, the calibrated readings turn ``suspect``, and a new version that
corrects the sensor lets the alert clear (readings ``ok`` again). Across a restart every
derived reading reaches each detector once.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from edge.contracts import Alert, AlertState, Detection, Quality, Reading
from edge.datasets import ZoneDataset
from edge.detectors import AqiDetector, CalibrationDriftDetector, Detector
from edge.runtime import load_model
from edge.runtime.manifest import ModelManifest
from gateway.cli import main
from gateway.config import load_config_text
from gateway.device.checkpoint_files import config_hash
from gateway.device.checkpoints import FOLDER, CheckpointStore, _NoMarks
from gateway.device.runner import GatewayRunner, build_detectors
from gateway.local_services.services import free_port
from gateway.model_updates.listener import hand_to_detectors
from tests.test_checkpoints import key, outbox_items

REPO = Path(__file__).resolve().parents[1]
NAME = "air-pm25-calibration"
START = 1_767_225_600_000  # 2026-01-01T00:00Z
DAY = 86_400_000
DRIFT_FROM = 6  # the optical sensor reads 3x high from this day on
SENSORS = [("PM-ref", "pm25", "ug/m3"), ("PM25-sds", "pm25", "ug/m3"), ("RH-node", "humidity", "%")]
SENSORS += [("T-node", "temperature", "degC")]


def stream(days: int = 16) -> list[Reading]:
    """10-minute readings: a reference PM, the raw optical one next to it (true, then 3x high), RH, temperature."""
    rng = np.random.default_rng(3)
    out = []
    for k in range(144 * days):
        t = START + k * 600_000
        ref = 10 + 5 * np.sin(k / 144 * 2 * np.pi) + rng.normal(0, 1)
        raw = ref * (3.0 if k >= 144 * DRIFT_FROM else 1.0)
        for lag, (sensor, quantity, unit), value in zip(range(4), SENSORS, (ref, raw, 60.0, 12.0), strict=True):
            out.append(Reading(t + 1000 * lag, "air", "gw", sensor, quantity, float(value), unit))
    return out


def text(drift: str = "sensor: pm25-cal, reference: PM-ref", more: str = "", head: str = "") -> str:
    sensors = "".join(f"  - {{id: {s}, quantity: {q}, driver: replay}}\n" for s, q, _ in SENSORS)
    head = head or "sources: {replay: {file: none.npz}}\n"
    return (
        f"site: air\ngateway: gw\nmqtt: {{host: 127.0.0.1}}\n{head}sensors:\n{sensors}models:\n"
        f"  - {{name: pm25-drift, type: calibration_drift, {drift},\n"
        "      calibration_days: 3, smoothing_days: 1, threshold: 3.0, min_sigma: 0.5}\n"
        "  - name: pm25-cal\n    type: calibration\n    backend: numpy\n"
        f"    model_dir: ../models/{NAME}\n"
        "    inputs: {pm25: PM25-sds, humidity: RH-node, temperature: T-node}\n    drift_model: pm25-drift\n"
        "  - {name: aq, type: eaqi, sensors: [pm25-cal, PM-ref]}\n" + more
    )


def load(config_text: str):
    # model_dir is written relative to the config file, as a technician writes it next to ../models
    return load_config_text(config_text, "loop.yaml", path=REPO / "firmware_configs" / "loop.yaml")


def store_of(detectors, folder: Path, config=None) -> CheckpointStore:
    hashes = [config_hash(config, d.model) if config else "" for d in detectors]
    return CheckpointStore(folder, detectors, hashes, every_ms=10**15, max_age_ms=10**15)


def fed(detectors, readings, *, updates=None) -> list:
    """Every output, each reading through the checkpoint store as the runner feeds it; ``updates``: {time: backend}."""
    store = store_of(detectors, Path("/nonexistent-never-saved"))
    store.begin(None)
    out, pending = [], dict(updates or {})
    for r in readings:
        for t in [t for t in pending if r.time_ms >= t]:
            assert hand_to_detectors(detectors, NAME, pending.pop(t)) == 0
        out += [o for batch in store.update(r) for o in batch]
    return out


def new_version(tmp_path: Path, version: str, *, gain: float = 1.0) -> object:
    """The shipped calibration as ``version``, reading a raw PM ``gain`` times high as the old one read it true."""
    folder = tmp_path / f"{NAME}-v{version}"
    shutil.copytree(REPO / "models" / NAME, folder)
    path = folder / "manifest.json"
    raw = json.loads(path.read_text())
    raw["version"] = version
    scaling = raw["input"]["scaling"]
    scaling["mean"][0] *= gain  # (gain * x - gain * mean) / (gain * scale): the old model on x
    scaling["scale"][0] *= gain
    path.write_text(json.dumps(raw, indent=1))
    manifest = ModelManifest.read(folder)
    parity = manifest.files["parity"]
    with np.load(parity.path) as z:
        X = z["X"]
    buf = io.BytesIO()
    np.savez(buf, X=X, outputs=load_model(manifest, "numpy").predict(X))  # its own reference outputs
    parity.path.write_bytes(buf.getvalue())
    raw["files"]["parity"].update(sha256=hashlib.sha256(buf.getvalue()).hexdigest(), bytes=len(buf.getvalue()))
    path.write_text(json.dumps(raw, indent=1))
    return load_model(ModelManifest.read(folder), "numpy")


def alerts(outputs, model: str = "pm25-drift") -> list[Alert]:
    return [o for o in outputs if isinstance(o, Alert) and o.model == model]


def calibrated(outputs) -> list[Reading]:
    return [o for o in outputs if isinstance(o, Reading) and o.sensor == "pm25-cal"]


# ---- derived readings feed the other detectors ---------------------------------------------------------


def test_the_calibrated_readings_reach_the_drift_model_and_the_eaqi():
    readings = stream()
    out = fed(build_detectors(load(text())), readings)
    made = calibrated(out)
    assert len(made) == len(readings) // 4  # one per step
    # What a drift test and an EAQI fed the same readings and the calibrated ones after each step decide.
    drift = CalibrationDriftDetector(
        "air", "gw", "pm25-cal", reference="PM-ref", calibration_days=3, smoothing_days=1, threshold=3.0,
        min_sigma=0.5, model="pm25-drift",
    )  # fmt: skip
    aqi = AqiDetector("air", "gw", [("pm25-cal", "pm25_calibrated"), ("PM-ref", "pm25")], model="aq")
    by_time = {r.time_ms: r for r in made}
    expected = []
    for r in readings:
        for det in (drift, aqi):
            expected += det.update(r)
            if r.time_ms in by_time and r.sensor == "T-node":  # the step's last input completes it
                expected += det.update(by_time[r.time_ms])
    decided = [o for o in out if not isinstance(o, Reading) and o.model.split(".")[0] in ("pm25-drift", "aq")]
    strip = [(type(o).__name__, o.model, o.time_ms, o.label) for o in decided]
    assert sorted(strip) == sorted((type(o).__name__, o.model, o.time_ms, o.label) for o in expected)
    bands = Counter(o.label for o in decided if isinstance(o, Detection) and o.model == "aq.pm25-cal")
    assert set(bands) - {"insufficient_data"}, bands  # the EAQI banded the calibrated PM2.5
    assert [a.state for a in alerts(out)] == [AlertState.RAISED]  # the drift of the calibrated output


class _Derives(Detector):
    """Derives ``<sensor>-d`` from each reading of ``source``, and records every reading it is given."""

    def __init__(self, model: str, source: str | None):
        super().__init__("s", "g", model=model)
        self.source, self.seen = source, []

    def update(self, reading: Reading) -> list:
        self.seen.append(reading.sensor)
        if reading.sensor != self.source:
            return []
        return [Reading(reading.time_ms, "s", "g", f"{reading.sensor}-d", "pm25_calibrated", reading.value, "ug/m3")]


def test_a_derived_reading_goes_to_every_other_detector_once_and_one_level_deep():
    first, second, watcher = _Derives("first", "raw"), _Derives("second", "raw-d"), _Derives("watcher", None)
    store = store_of([first, second, watcher], Path("/nonexistent-never-saved"))
    out = [o for batch in store.update(Reading(0, "s", "g", "raw", "pm25", 1.0, "ug/m3")) for o in batch]
    assert [o.sensor for o in out] == ["raw-d", "raw-d-d"]  # both published
    assert first.seen == ["raw"]  # never its own derived reading
    assert second.seen == ["raw", "raw-d"] and watcher.seen == ["raw", "raw-d"]  # raw-d-d is not fed on
    assert store.update(Reading(1, "s", "g", "other", "pm25", 1.0, "ug/m3")) is not None


# ---- exactly once across a restart ---------------------------------------------------------------------


@pytest.mark.parametrize("producer_lost", [False, True], ids=["all-restored", "calibration-starts-afresh"])
def test_a_restart_in_the_middle_feeds_each_derived_reading_once(tmp_path, producer_lost):
    """Saved mid-step while the alert is open; the replay starts again at its first reading."""
    config = load(text())
    readings = stream()
    never_stopped = build_detectors(config)
    whole = fed(never_stopped, readings)
    split = len(readings) * 10 // 16 + 2  # day 10, between two inputs of a step
    before = fed(build_detectors(config), readings[:split])
    assert alerts(before) and not any(a.state is AlertState.CLEARED for a in alerts(before))

    crashed = store_of(build_detectors(config), tmp_path, config)
    crashed.begin(None)
    for r in readings[:split]:
        list(crashed.update(r))
    crashed.save()
    if producer_lost:
        (tmp_path / "pm25-cal.json").unlink()  # the calibration starts afresh and makes its readings again
    restarted = store_of(build_detectors(config), tmp_path, config)
    restarted.begin(_NoMarks())
    again = [o for r in readings for batch in restarted.update(r) for o in batch]
    assert restarted.counters()["checkpoints_restored"] == (2 if producer_lost else 3)
    tail = whole[len(fed(build_detectors(config), readings[:split])) :]
    consumers = ("pm25-drift", "aq")

    def decided(outputs):
        return [key(o) for o in outputs if not isinstance(o, Reading) and o.model.split(".")[0] in consumers]

    assert decided(again) == decided(tail)  # nothing seen twice (doubled slots), nothing missed (a lost day)
    assert not [a for a in alerts(again) if a.state is AlertState.RAISED]  # the open alert is not raised again
    # Seen twice would not show in a mean (slot sums and counts both double): the states must be the same.
    assert [d.state() for d in restarted.detectors] == [d.state() for d in never_stopped]
    made_again, skipped = calibrated(again), restarted.counters()["checkpoint_readings_skipped"]
    if producer_lost:
        assert len(made_again) == len(calibrated(whole))  # made again, skipped by the restored consumers
        assert skipped == 2 * split + 2 * len(calibrated(before))  # the drift test and the EAQI: raw and derived
    else:
        assert made_again == calibrated(tail)
        assert skipped == 3 * split


def test_the_calibrations_checkpoint_follows_its_drift_models_section():
    """The applier's state holds its drift copy's: another drift section makes its checkpoint another config's."""
    config, other = load(text()), load(text().replace("threshold: 3.0", "threshold: 4.0"))
    assert config_hash(config, "pm25-cal") != config_hash(other, "pm25-cal")
    assert config_hash(config, "aq") == config_hash(other, "aq")


def _replay(readings, path: Path) -> Path:
    times = sorted({r.time_ms // 600_000 * 600_000 for r in readings})
    row = {t: i for i, t in enumerate(times)}
    column = {s: j for j, (s, _, _) in enumerate(SENSORS)}
    values = np.full((len(times), len(SENSORS)), np.nan, np.float32)
    for r in readings:
        values[row[r.time_ms // 600_000 * 600_000], column[r.sensor]] = r.value
    return ZoneDataset(
        time_ms=times,
        values=values,
        columns=[s for s, _, _ in SENSORS],
        quantities=[q for _, q, _ in SENSORS],
        units=[u for _, _, u in SENSORS],
        leak_flow_lps=np.zeros(len(times), np.float32),
    ).save(path)


def test_a_resumed_gateway_publishes_each_decision_on_calibrated_readings_once(tmp_path):
    """Stop at A, resume and stop at B, put checkpoint A back (a crash after B), resume to the end: outbox = one run."""
    replay = _replay(stream(), tmp_path / "air.npz")
    head = (
        f"sources: {{replay: {{file: {replay}}}}}\nstorage: {{data_dir: {tmp_path / 'gw'}}}\n"
        f"mqtt: {{host: 127.0.0.1, port: {free_port()}, topic_prefix: loop}}\n"
    )
    config = load(text(head=head).replace("mqtt: {host: 127.0.0.1}\n", "", 1))
    readings = list(GatewayRunner.from_config(config).sources[0])  # what the replay gives (its own order)
    expected = Counter(key(o) for o in fed(build_detectors(config), readings) if not isinstance(o, Reading))

    def run_until(n: int | None) -> GatewayRunner:
        runner, stop, seen = GatewayRunner.from_config(config, resume=True), threading.Event(), [0]

        def count(_reading):
            seen[0] += 1
            if n is not None and seen[0] >= n:
                stop.set()

        runner.run(stop=stop, on_reading=count, drain_timeout_s=0)
        return runner

    folder = tmp_path / "gw" / FOLDER
    run_until(len(readings) * 7 // 16 + 1)  # day 7, the calibration drifting
    shutil.copytree(folder, tmp_path / "at-a")
    run_until(len(readings) * 11 // 16 + 3)  # day 11, the alert open
    shutil.rmtree(folder)
    shutil.copytree(tmp_path / "at-a", folder)  # the state of B is lost, its outputs are in the outbox
    third = run_until(None)
    assert third.checkpoints.counters()["checkpoints_restored"] == 3
    reference = build_detectors(config)
    fed(reference, readings)
    assert [d.state() for d in third.detectors] == [d.state() for d in reference]  # each reading seen once
    stored = outbox_items(tmp_path / "gw", "loop")
    assert {k: v for k, v in stored.items() if v > 1} == {}  # nothing made twice
    assert stored == expected
    assert [k[2] for k in stored if k[0] == "alert" and k[1].startswith("recal-")] == ["raised"]


# ---- the alert: what to refit, the version in service; suspect while open ---------------------------------


@pytest.mark.parametrize("version", ["1", "2"])
def test_the_alert_names_the_calibration_the_version_running_and_the_commands(tmp_path, version):
    updates = {START + DAY: new_version(tmp_path, "2")} if version == "2" else {}
    out = fed(build_detectors(load(text())), stream(days=10), updates=updates)
    [raised] = alerts(out)
    first_part = "Sensor pm25-cal: its daily median residual to the reference has moved from "
    assert raised.message.startswith(first_part), raised.message
    assert raised.message.endswith(
        f"since its calibration period 2026-01-01..2026-01-03: recalibration needed. Refit calibration pm25-cal "
        f"(model {NAME} v{version}): co-locate PM25-sds with a reference for 7 days, run 'frugalsense train "
        f"air-calibration --update ../models/{NAME} --csv co-location.csv', then 'frugalsense model sign' and "
        "'frugalsense model push' the new version."
    ), raised.message
    assert [json.loads(e) for e in raised.explanation["refit"]] == [
        {"model": "pm25-cal", "manifest": NAME, "version": version, "model_dir": f"../models/{NAME}"}
    ]
    raised.validate()  # within the contract: message length, explanation of text


def test_readings_are_suspect_while_the_alert_is_open_and_ok_once_a_new_version_clears_it(tmp_path):
    corrects = new_version(tmp_path, "2", gain=3.0)  # refitted on the drifted sensor
    out = fed(build_detectors(load(text())), stream(), updates={START + 10 * DAY: corrects})
    raised, cleared = alerts(out)
    assert (raised.state, cleared.state) == (AlertState.RAISED, AlertState.CLEARED)
    assert START + 9 * DAY <= raised.time_ms < START + 10 * DAY < cleared.time_ms  # cleared by v2's readings
    made = calibrated(out)
    assert {r.quality for r in made if r.time_ms < raised.time_ms} == {Quality.OK}
    assert {r.quality for r in made if raised.time_ms < r.time_ms < cleared.time_ms} == {Quality.SUSPECT}
    assert {r.quality for r in made if r.time_ms > cleared.time_ms} == {Quality.OK}
    assert {r.value > 0 for r in made} == {True}


def test_a_drift_model_on_a_raw_input_keeps_the_applier_on_raw_readings_and_still_names_the_calibration():
    detectors = build_detectors(load(text(drift="sensor: PM25-sds, reference: PM-ref")))
    drift, applier = detectors[0], detectors[1]
    assert not applier.watches_output and applier.drift.sensor == "PM25-sds"
    out = fed(detectors, stream(days=10))
    [raised] = alerts(out)
    assert raised.message.startswith("Sensor PM25-sds: its daily median residual to the reference has moved")
    assert f"Refit calibration pm25-cal (model {NAME} v1): co-locate PM25-sds" in raised.message
    assert drift.refits and drift.refits[0].model == "pm25-cal"


def test_without_a_calibration_the_alert_says_to_recalibrate_the_sensor():
    sensors = "".join(f"  - {{id: {s}, quantity: {q}, driver: replay}}\n" for s, q, _ in SENSORS)
    config = load(
        f"site: air\ngateway: gw\nmqtt: {{host: 127.0.0.1}}\nsources: {{replay: {{file: none.npz}}}}\n"
        f"sensors:\n{sensors}models:\n  - {{name: pm25-drift, type: calibration_drift, sensor: PM25-sds, "
        "reference: PM-ref, calibration_days: 3, smoothing_days: 1, threshold: 3.0, min_sigma: 0.5}\n"
    )
    [raised] = alerts(fed(build_detectors(config), stream(days=10)))
    assert raised.message.endswith(
        "recalibration needed. Recalibrate sensor PM25-sds: co-locate it with a reference for 7 days and "
        "recalibrate it (or train a calibration of it with 'frugalsense train air-calibration --csv "
        "co-location.csv --out DIR' and run it as a model of type calibration)."
    ), raised.message
    assert raised.explanation["refit"] == []


# ---- the config: a calibration's virtual sensor is a sensor of its quantity -----------------------------------


def validate(tmp_path, config_text: str, capsys) -> tuple[int, str, Path]:
    path = tmp_path / "loop.yaml"
    path.write_text(config_text.replace("../models/", f"{REPO}/models/"))  # the same line numbers
    code = main(["config", "validate", str(path)])
    return code, capsys.readouterr().err, path


def line_of(config_text: str, needle: str) -> int:
    return next(n for n, x in enumerate(config_text.splitlines(), 1) if needle in x)


def test_a_config_watching_the_virtual_sensor_validates_and_builds(tmp_path, capsys):
    code, err, _ = validate(tmp_path, text(), capsys)
    assert code == 0, err


@pytest.mark.parametrize(
    ("drift", "more", "needle", "message"),
    [
        (
            "sensor: pm25-cla, reference: PM-ref",
            "",
            "pm25-cla",
            "models[0].sensor: no sensor with id 'pm25-cla' in sensors, did you mean 'pm25-cal'?",
        ),
        (
            "sensor: pm25-cal, reference: RH-node",
            "",
            "reference: RH-node",
            "models[0].reference: sensor 'RH-node' measures humidity; the reference of sensor 'pm25-cal' "
            "(pm25_calibrated, calibrated pm25) must measure pm25",
        ),
        (
            "sensor: PM25-sds, reference: pm25-cal",
            "",
            "reference: pm25-cal",
            "models[0].reference: 'pm25-cal' is a calibration's virtual sensor; the reference of sensor "
            "'PM25-sds' (pm25) must be a co-located reference sensor measuring pm25",
        ),
        (
            "sensor: pm25-cal, estimate_from: no2v",
            "  - {name: no2v, type: no2_virtual, model_dir: ../models/air-no2-virtual,\n"
            "      sensors: {cell_count: PM-ref, wind_speed: PM-ref, temperature: T-node, humidity: RH-node}}\n",
            "estimate_from",
            "models[0].estimate_from: model 'no2v' estimates no2; sensor 'pm25-cal' (pm25_calibrated, "
            "calibrated pm25) is not an NO2 sensor",
        ),
        (
            "sensor: pm25-other, reference: PM-ref",
            "  - {name: pm25-other, type: calibration, model_dir: ../models/air-pm25-calibration,\n"
            "      inputs: {pm25: PM-ref, humidity: RH-node, temperature: T-node}}\n",
            "drift_model",
            "models[1].drift_model: 'pm25-drift' watches 'pm25-other', the output of another calibration",
        ),
    ],
    ids=["typo", "reference-quantity", "virtual-reference", "estimate-of-no2", "another-calibrations-output"],
)
def test_wrong_names_and_quantities_are_refused_at_their_line(tmp_path, capsys, drift, more, needle, message):
    config_text = text(drift=drift, more=more)
    code, err, path = validate(tmp_path, config_text, capsys)
    assert code == 1
    assert f"{path}:{line_of(config_text, needle)}: {message}" in err, err


def test_an_eaqi_on_a_virtual_sensor_of_another_quantity_is_refused(tmp_path, capsys):
    config_text = text().replace("sensors: [pm25-cal, PM-ref]", "sensors: [pm25-cal, RH-node]")
    code, err, path = validate(tmp_path, config_text, capsys)
    assert code == 1 and f"{path}:{line_of(config_text, 'RH-node]')}: models[2].sensors[1]: sensor 'RH-node'" in err
    assert "pm25_calibrated" in err and "no2_calibrated" in err  # the EAQI says it covers them
