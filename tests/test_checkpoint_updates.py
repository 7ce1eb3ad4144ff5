"""A gateway restarted after a model update goes on from its checkpoint, with the updated model.

The learned leak model needs three days of flows before it scores. A gateway takes a signed v2
over the session's real Mosquitto while it runs, stops cleanly (its checkpoint says v2), and
starts again on the same data dir with the readings that come after the stop, as a live
gateway sees them: the installed v2 is in service again, the checkpoint is taken back (not
"of another version"), and the first decision after the restart is the one a gateway that never
stopped gives, not ``insufficient_data`` while it warms up for three more days.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edge.contracts import Detection
from edge.datasets import ZoneDataset
from gateway.config import load_config_text
from gateway.device.checkpoints import FOLDER
from gateway.device.runner import GatewayRunner, build_detectors
from gateway.model_updates.listener import status_topic, update_topic
from gateway.model_updates.signing import build_update, generate_signing_key, push_update, sign_model
from gateway.model_updates.store import ModelStore
from gateway.protocol import topics as T
from gateway.protocol.mqtt_client import MqttSettings
from tests.test_detector_contract import DAY, GATEWAY, HOUR, NET3, NET3_P, SITE, T0, water_stream
from tests.test_model_updates import retained_status
from tests.test_ota_models import INSUFFICIENT, WAIT_S, push, reversion

REPO = Path(__file__).resolve().parents[1]
MODEL = "leak-mlp-net3"
PREFIX = "ckpt-upd"
UPDATE_MS = T0 + 3 * DAY + 2 * HOUR  # v2 is pushed at this data time
STOP_MS = T0 + 3 * DAY + 14 * HOUR  # and the gateway stopped here (mid-step), after its first scores at 3.5 days
SENSORS = [(f"F-{e}", e, "flow", "L/s") for e in NET3] + [(f"P-{e}", e, "pressure", "m") for e in NET3_P]


def dataset(readings, path: Path) -> Path:
    """The readings as a replay file (every sensor at every step, as water_stream gives them)."""
    times = sorted({r.time_ms for r in readings})
    row = {t: i for i, t in enumerate(times)}
    column = {sensor: j for j, (sensor, *_) in enumerate(SENSORS)}
    values = np.full((len(times), len(SENSORS)), np.nan, np.float32)
    for r in readings:
        values[row[r.time_ms], column[r.sensor]] = r.value
    return ZoneDataset(
        time_ms=times,
        values=values,
        columns=[c for _, c, _, _ in SENSORS],
        quantities=[q for *_, q, _ in SENSORS],
        units=[u for *_, u in SENSORS],
        leak_flow_lps=np.zeros(len(times), np.float32),
    ).save(path)


def gateway_config(replay: Path, data_dir: Path, models: Path, public: Path, host: str, prefix: str = PREFIX):
    sensors = "".join(f"  - {{id: {s}, quantity: {q}, driver: replay, column: '{c}'}}\n" for s, c, q, _ in SENSORS)
    text = (
        f"site: {SITE}\ngateway: {GATEWAY}\nmqtt: {{host: {host}, topic_prefix: {prefix}}}\n"
        f"sources: {{replay: {{file: {replay}}}}}\nstorage: {{data_dir: {data_dir}}}\n"
        f"model_updates: {{enabled: true, public_key_file: {public}}}\nsensors:\n{sensors}models:\n"
        f"  - {{name: leak-ml, type: learned_leak, model_dir: {models}/{MODEL}, backend: onnxruntime}}\n"
    )
    return load_config_text(text, "gateway.yaml", path=REPO / "firmware_configs" / "gateway.yaml")


def decided(outputs) -> list[Detection]:
    """The detections after the stop (the one made at STOP_MS came from the first run's reading)."""
    return [o for o in outputs if isinstance(o, Detection) and o.time_ms > STOP_MS]


class Site:
    """One gateway's data dir and topics on the session's broker, its readings split at STOP_MS, signed v2."""

    def __init__(self, services, tmp_path: Path, prefix: str):
        self.services, self.tmp, self.prefix = services, tmp_path, prefix
        private, self.public = generate_signing_key(tmp_path / "keys")
        self.v2 = reversion(REPO / "models" / MODEL, tmp_path / "models-v2" / MODEL, "2", shift=0.3)
        sign_model(self.v2, private)
        self.readings = list(water_stream(days=4))
        self.before = dataset([r for r in self.readings if r.time_ms <= STOP_MS], tmp_path / "before.npz")
        self.after = dataset([r for r in self.readings if r.time_ms >= STOP_MS], tmp_path / "after.npz")
        self.data_dir = tmp_path / "data"
        self.topics = T.Topics(prefix, SITE, GATEWAY)

    def gateway(self, replay: Path) -> GatewayRunner:
        cfg = gateway_config(replay, self.data_dir, REPO / "models", self.public, self.services.mqtt_host, self.prefix)
        return GatewayRunner.from_config(cfg, mqtt_port=self.services.mqtt_port, resume=True)

    def run_to_the_stop(self, on_reading=None) -> None:
        """The first run, stopped cleanly at STOP_MS (its checkpoint saved then)."""
        stop = threading.Event()

        def each(reading):
            if on_reading is not None:
                on_reading(reading)
            if reading.time_ms >= STOP_MS:
                stop.set()

        self.gateway(self.before).run(stop=stop, on_reading=each, drain_timeout_s=0)

    def checkpoint_version(self) -> tuple:
        head = json.loads((self.data_dir / FOLDER / "leak-ml.json").read_text())["header"]
        return head["model_name"], head["model_version"]

    def clear_update(self) -> None:
        settings = MqttSettings(self.services.mqtt_host, self.services.mqtt_port, client_id=f"{self.prefix}-clear")
        push_update(settings, {update_topic(self.topics, MODEL): status_topic(self.topics)}, b"")

    def check_went_on(self, restarted: GatewayRunner, outputs) -> None:
        """Its checkpoint taken back, v2 deciding as a gateway that never stopped would, with no warm-up."""
        assert ModelStore(self.data_dir / "models").pointer(MODEL).current == "2"
        counters = restarted.checkpoints.counters()
        assert (counters["checkpoints_restored"], counters["checkpoints_ignored"]) == (1, 0), counters
        assert counters["checkpoint_readings_skipped"] == 1  # the one reading of STOP_MS the first run had seen
        got = decided(outputs)
        assert got and all(d.model_version == "2" for d in got)
        # A gateway that never stopped (v2 keeps the state, so: one that ran v2 all along).
        cfg = gateway_config(self.before, self.tmp / "ref", self.tmp / "models-v2", self.public, "127.0.0.1")
        detectors = build_detectors(cfg)
        reference = decided([o for r in self.readings for d in detectors for o in d.update(r)] + detectors[0].flush())
        assert reference[0].label != INSUFFICIENT  # the model had its three days: the test can fail
        assert got[0].label != INSUFFICIENT, "the restarted gateway warmed up again"
        assert [(d.window_end_ms, d.label) for d in got] == [(d.window_end_ms, d.label) for d in reference]
        assert [d.score for d in got] == pytest.approx([d.score for d in reference], abs=1e-4)


def test_a_gateway_restarted_after_a_model_update_restores_its_checkpoint_and_does_not_warm_up(services, tmp_path):
    site = Site(services, tmp_path, PREFIX)
    reports: list = []

    def update_at(reading):  # v2 arrives while the first run goes on
        if reading.time_ms >= UPDATE_MS and not reports:
            retained_status(services, site.topics)  # the receiver is up
            reports.append(push(services, site.topics, site.v2, MODEL, "2"))

    try:
        site.run_to_the_stop(update_at)
        assert reports and reports[0]["outcome"] == "applied", reports
        assert site.checkpoint_version() == (MODEL, "2")  # saved at the stop, with v2
        restarted, outputs = site.gateway(site.after), []  # v2 is installed, the checkpoint says v2
        restarted.run(on_output=outputs.append, drain_timeout_s=0)
    finally:
        site.clear_update()
    site.check_went_on(restarted, outputs)


def test_an_update_pushed_while_the_gateway_was_off_is_taken_on_top_of_its_checkpoint(services, tmp_path):
    """The retained v2 reaches the gateway as it starts again, with its v1 checkpoint: state restored, then v2."""
    site = Site(services, tmp_path, PREFIX + "-off")
    site.run_to_the_stop()
    assert site.checkpoint_version() == (MODEL, "1")
    store = ModelStore(site.data_dir / "models")
    settings = MqttSettings(services.mqtt_host, services.mqtt_port, client_id=f"{site.prefix}-push")
    try:
        body = build_update(site.v2)[1]
        push_update(settings, {update_topic(site.topics, MODEL): status_topic(site.topics)}, body)  # nobody is on
        restarted, outputs = site.gateway(site.after), []
        later = list(restarted.sources[0])

        def once_updated():  # a live sensor's first reading comes after the update was taken
            deadline = time.monotonic() + WAIT_S
            while (store.pointer(MODEL) is None or store.pointer(MODEL).current != "2") and time.monotonic() < deadline:
                time.sleep(0.05)
            yield from later

        restarted.sources = [once_updated()]
        restarted.run(on_output=outputs.append, drain_timeout_s=0)
    finally:
        site.clear_update()
    site.check_went_on(restarted, outputs)


# ---- the store: a model update between two saves, and one before the first reading --------------------


def no2(k: int, value: float = 40.0):
    from edge.contracts import Reading

    return Reading(k * 300_000, "s", "g", "NO2", "no2", value, "ug/m3")


def eaqi_store(folder: Path, detector=None):
    from edge.detectors import AqiDetector
    from gateway.device.checkpoints import CheckpointStore

    detector = detector or AqiDetector("s", "g", [("NO2", "no2")])
    return CheckpointStore(folder, [detector], ["h"], every_ms=DAY, max_age_ms=DAY)


def test_the_first_reading_after_a_model_update_saves_a_checkpoint_of_the_new_version(tmp_path):
    """Else a crash before the next periodic save would leave only the replaced version's checkpoint."""
    store = eaqi_store(tmp_path)
    for k in range(10):
        list(store.update(no2(k)))
    assert store.counters()["checkpoints_saved"] == 0  # a day of data time between periodic saves
    store.detectors[0].model_version = "2"  # what use_model does when the update is applied
    list(store.update(no2(10)))
    assert store.counters()["checkpoints_saved"] == 1
    doc = json.loads((tmp_path / "eaqi.json").read_text())
    assert doc["header"]["model_version"] == "2" and doc["positions"]["NO2"] == [no2(9).time_ms, 1]
    list(store.update(no2(11)))
    assert store.counters()["checkpoints_saved"] == 1  # once per update, not per reading


def test_an_update_handed_over_before_the_first_reading_is_not_undone_by_the_checkpoint(tmp_path):
    """begin() puts the state back at once: a swap that resets the detector afterwards stands."""
    from gateway.device.checkpoints import _NoMarks

    store = eaqi_store(tmp_path)
    for k in range(20):
        list(store.update(no2(k, 300.0)))  # very poor air: an alert open in the checkpoint
    store.save()
    resumed = eaqi_store(tmp_path)
    resumed.begin(_NoMarks())
    assert resumed.detectors[0].state() == store.detectors[0].state()  # restored here, not at the first reading
    resumed.detectors[0].reset()  # a model update that resets the state, arriving before the first reading
    outputs = [o for out in resumed.update(no2(20)) for o in out]
    fresh = eaqi_store(tmp_path / "fresh")
    assert outputs == fresh.detectors[0].update(no2(20))
    assert resumed.detectors[0].state() == fresh.detectors[0].state()
    assert resumed.counters()["checkpoints_restored"] == 1
