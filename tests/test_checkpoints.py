"""Detector state survives a restart: every detector's state()/restore(), and the gateway's checkpoint store.

The property, for every detector on a real stream: feed readings A then B to one
detector; feed A to another, carry its state through JSON into a third built the same
way and feed it B: the outputs on B are the same (the same detections, the open alert
never raised again, its clear still coming). The store's part: one atomic file per
detector, refused with a logged reason when it is corrupt or not this detector's, and a
resumed runner whose decisions are each made once, even after a "crash" that loses the
last minutes of detector state.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from edge.contracts import Alert, AlertState, Detection
from edge.detectors import (
    AirPatternDetector,
    AqiDetector,
    No2VirtualSensor,
    SensorFaultDetector,
)
from edge.detectors import state_json as sj
from edge.sources.replay import ReplaySource
from gateway.config import load_config_text
from gateway.device.checkpoints import FOLDER, CheckpointStore, config_hash
from gateway.device.outbox import Outbox, outbox_path
from gateway.device.runner import GatewayRunner, build_detectors, build_sources
from gateway.local_services.services import free_port
from gateway.protocol import payloads
from tests import chaos_restart
from tests import test_air_eaqi as eaqi_data
from tests import test_detector_contract as contract
from tests import test_drift as drift_data
from training.air.sensors import NO_FAULTS, FaultRates
from training.air.simulation import simulate_air_site

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "models"
DAY_MS = 86_400_000


@pytest.fixture(scope="module")
def net3_config(tmp_path_factory):
    """The demo gateway (night flow and the learned leak model) on two weeks of Net3 with a repaired leak."""
    root = tmp_path_factory.mktemp("net3")
    data = chaos_restart.repaired_leak_dataset(root)  # the demo's leak, repaired three days later
    return net3_text(data, root / "gateway", port=1883)


def net3_text(dataset: Path, data_dir: Path, *, port: int, prefix: str = "ckpt") -> str:
    """The demo gateway's two leak detectors, as the chaos scenario runs them (replayed as fast as it goes)."""
    return chaos_restart.net3_config_text(dataset, prefix=prefix, port=port, speed=0, data_dir=data_dir)


def load(text: str):
    return load_config_text(text, "gateway.yaml")


# ---- the property, detector by detector ------------------------------------------------------------------


def feed(detector, readings) -> list[Detection | Alert]:
    return [out for r in readings for out in detector.update(r)]


def round_trip(detector) -> dict:
    """The state as it comes back from a checkpoint file: strict JSON (NaN would fail here)."""
    return json.loads(json.dumps(detector.state(), allow_nan=False))


def check_restart(make, readings, split: int) -> tuple[list, list]:
    """Outputs on readings[split:] of one detector fed everything, and of a restored one; they must be equal."""
    whole = make()
    before = feed(whole, readings[:split])
    after = feed(whole, readings[split:]) + whole.flush()
    first = make()
    assert feed(first, readings[:split]) == before  # deterministic, or the property means nothing
    second = make()
    second.restore(round_trip(first))
    restored = feed(second, readings[split:]) + second.flush()
    assert restored == after
    return before, after


def open_alert_split(make, readings) -> int:
    """An index inside an alert that is raised and then cleared (mid-step: not at a time boundary)."""
    outputs, raised = [], {}
    detector = make()
    for i, r in enumerate(readings):
        for out in detector.update(r):
            outputs.append(out)
            if isinstance(out, Alert) and out.state is AlertState.RAISED:
                raised.setdefault(out.alert_id, i)
            elif isinstance(out, Alert) and out.alert_id in raised:
                return (raised[out.alert_id] + i) // 2 + 1
    raise AssertionError(f"no alert raised and cleared in this stream: {Counter(type(o).__name__ for o in outputs)}")


def splits(make, readings, alert: bool) -> list[int]:
    n = len(readings)
    points = [n // 3 + 1, (2 * n) // 3 + 3]
    return points + ([open_alert_split(make, readings)] if alert else [])


def assert_alert_goes_on(before, after) -> None:
    """An alert open at the split is not raised again after it (an EAQI alert may move to another band under
    its id: that is a new label, not a repeat), and its clear comes after it."""
    label: dict[str, str | None] = {}
    for a in (o for o in before if isinstance(o, Alert)):
        label[a.alert_id] = a.label if a.state == AlertState.RAISED else None
    open_ids = {i for i, lab in label.items() if lab is not None}
    assert open_ids, "no alert was open at the split"
    for a in (o for o in after if isinstance(o, Alert) and o.alert_id in open_ids):
        if a.state == AlertState.RAISED:
            assert label[a.alert_id] not in (None, a.label), f"{a.alert_id} raised twice as {a.label}"
        label[a.alert_id] = a.label if a.state == AlertState.RAISED else None
    assert all(label[i] is None for i in open_ids), f"not cleared after the restart: {open_ids}"


def net3_cases(config_text):
    config = load(config_text)
    readings = list(build_sources(config)[0])
    return config, readings


@pytest.mark.parametrize("model", ["mnf-leak", "leak-ml"])
def test_a_leak_detector_restored_mid_leak_goes_on_and_clears(net3_config, model):
    config, readings = net3_cases(net3_config)
    [section] = [m for m in config.models if m.name == model]

    def make():
        return section.build_detector(config)

    for split in splits(make, readings, alert=True):
        before, after = check_restart(make, readings, split)
    assert_alert_goes_on(before, after)
    fresh = feed(make(), readings[split:])
    assert fresh != after  # without the state the detector decides otherwise: the test can fail


AIR_FAULT_INPUTS = ("pm25", "pm10", "no2", "temperature", "humidity")


def air_readings(site):
    ds = site.to_dataset()
    return list(ReplaySource(ds, "air-test", "gw-air", list(zip(ds.columns, ds.columns, ds.quantities, strict=True))))


AIR_CASES = {
    "air_pattern": (
        lambda: simulate_air_site(days=6, seed=90210, start="2026-01-12", faults=NO_FAULTS),
        lambda: AirPatternDetector(
            "air-test",
            "gw-air",
            {k: k for k in ("pm25", "pm10", "no2", "temperature", "humidity", "cell_count")},
            MODELS / "air-pattern",
            backend="numpy",
        ),
        False,
    ),
    "sensor_fault": (
        lambda: simulate_air_site(days=8, seed=4242, start="2026-02-02", faults=FaultRates().scaled(3.0)),
        lambda: SensorFaultDetector(
            "air-test", "gw-air", {k: k for k in AIR_FAULT_INPUTS}, MODELS / "air-fault", backend="numpy"
        ),
        True,
    ),
    "no2_virtual": (
        lambda: simulate_air_site(days=6, seed=90210, start="2026-01-12", faults=NO_FAULTS),
        lambda: No2VirtualSensor(
            "air-test",
            "gw-air",
            {k: k for k in ("cell_count", "wind_speed", "temperature", "humidity")},
            MODELS / "air-no2-virtual",
            backend="numpy",
        ),
        False,
    ),
    "eaqi": (
        lambda: simulate_air_site(days=8, seed=4242, start="2026-02-02", faults=NO_FAULTS),
        lambda: AqiDetector("air-test", "gw-air", [("pm25", "pm25"), ("pm10", "pm10"), ("no2", "no2")]),
        False,
    ),
}


@pytest.mark.parametrize("name", sorted(AIR_CASES))
def test_an_air_detector_restored_anywhere_decides_as_if_never_stopped(name):
    simulate, make, alerts = AIR_CASES[name]
    readings = air_readings(simulate())
    for split in splits(make, readings, alert=alerts):
        before, after = check_restart(make, readings, split)
    assert any(isinstance(o, Detection) and o.label != "insufficient_data" for o in after)
    if alerts:
        assert_alert_goes_on(before, after)


def test_the_eaqi_alert_restored_mid_episode_is_not_raised_twice():
    no2 = [60] * 12 + [250] * 30 + [60] * 40  # 5-minute NO2: fair, then 2.5 h very poor, then fair again
    o3 = [50 + (k % 12) for k in range(len(no2))]
    both = eaqi_data.hourly("NO2-kerb", "no2", no2, step_ms=300_000) + eaqi_data.hourly("O3", "o3", o3, step_ms=300_000)
    readings = sorted(both, key=lambda r: r.time_ms)

    def make():
        return AqiDetector("centre", "gw-1", [("NO2-kerb", "no2"), ("O3", "o3")], raise_after=2, clear_after=2)

    split = open_alert_split(make, readings)
    before, after = check_restart(make, readings, split)
    assert_alert_goes_on(before, after)


def test_the_drift_detector_keeps_its_calibration_and_page_hinkley_sums():
    readings = list(contract.drift_stream(days=16))  # the Page-Hinkley sum passes its threshold on day 13

    def make():
        return contract.build("calibration_drift")

    for split in splits(make, readings, alert=False):
        before, after = check_restart(make, readings, split)
    assert any(isinstance(o, Alert) and o.state == AlertState.RAISED for o in after)
    fresh = feed(make(), readings[split:])
    assert not any(isinstance(o, Alert) for o in fresh)  # a fresh one recalibrates on the drifted days


def test_the_drift_detector_restores_its_virtual_sensor_estimator_mid_day():
    site = drift_data.site_with(seed=3, drift_per_day=2.0, days=16)
    readings = list(drift_data.readings(site, drift_data.site_columns(site)))

    def make():
        return drift_data.with_estimator(calibration_days=5, smoothing_days=3)

    split = 9 * 144 * 5 + 37 * 5 + 2  # day 9, 06:10, between two sensors of one step
    before, after = check_restart(make, readings, split)
    mid_day = make()
    feed(mid_day, readings[:split])
    state = round_trip(mid_day)
    assert all(state["estimator"]["slots"].values()) and state["slots"] and state["page_hinkley"]["n"] > 0
    assert any(isinstance(o, Detection) and o.label not in ("calibrating", "insufficient_data") for o in after)


# ---- malformed states are refused, and the detector stays as it was --------------------------------------


def every_detector():
    config = contract.contract_config()
    for model in config.models:
        detector = model.build_detector(config)
        stream = list(contract.STREAMS[model.type]())
        feed(detector, stream[: len(stream) // 2])
        yield model.type, detector


@pytest.mark.parametrize(
    ("model_type", "detector"), list(every_detector()), ids=lambda v: v if isinstance(v, str) else ""
)
def test_a_malformed_state_is_refused_with_a_reason_and_changes_nothing(model_type, detector):
    good = round_trip(detector)
    assert good, f"{model_type} keeps no state"
    for key in good:
        for broken in ({k: v for k, v in good.items() if k != key}, {**good, key: {"bad": 1}}):
            with pytest.raises(ValueError, match=r"\w") as refused:
                detector.restore(broken)
            assert str(refused.value), f"{model_type}: no reason given for a bad {key!r}"
            assert round_trip(detector) == good, f"{model_type}: a refused state ({key!r}) changed the detector"
    for junk in (None, [], "state", 3):
        with pytest.raises(ValueError):
            detector.restore(junk)
    detector.restore(good)
    assert round_trip(detector) == good


def test_nan_survives_the_checkpoint_and_comes_back_as_nan(net3_config):
    config, readings = net3_cases(net3_config)
    detector = build_detectors(config)[1]  # the learned leak model: its day array is NaN where not yet filled
    feed(detector, readings[: 3 * 960 + 55])
    state = round_trip(detector)
    assert np.isnan(sj.array(state["today"], detector.today_.shape, "today")[-1]).all()  # packed: NaN as it is
    again = build_detectors(config)[1]
    again.restore(state)
    assert np.isnan(again.today_[-1]).all() and np.array_equal(again.today_, detector.today_, equal_nan=True)


# ---- the store: files, headers, what is refused ---------------------------------------------------------


def aqi_store(folder: Path, config_id: str = "cfg", max_age_days: int = 7) -> CheckpointStore:
    detector = AqiDetector("s", "g", [("NO2", "no2")], raise_after=1, clear_after=1)
    return CheckpointStore(folder, [detector], [config_id], every_ms=3_600_000, max_age_ms=max_age_days * DAY_MS)


class NoMarks:
    marks: dict = {}

    def already_asked(self, stream, count):
        raise AssertionError("no mark to tell about")


def test_a_checkpoint_file_is_written_atomically_with_its_header(tmp_path):
    store = aqi_store(tmp_path)
    readings = list(contract.air_stream(days=1.0))
    for r in (r for r in readings if r.sensor == "NO2"):
        list(store.update(r))
    store.save()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["eaqi.json"]  # no temp file left behind
    doc = json.loads((tmp_path / "eaqi.json").read_text())
    head = doc["header"]
    assert head["format"] == 1 and head["detector"] == "AqiDetector" and head["model"] == "eaqi"
    assert head["model_name"] is None and head["model_version"] == "1" and head["config_hash"] == "cfg"
    assert head["last_time_ms"] == max(r.time_ms for r in readings)
    assert doc["positions"]["NO2"][0] == head["last_time_ms"]
    assert store.counters()["checkpoints_saved"] >= 1 and store.counters()["checkpoint_errors"] == 0


def corrupt(doc: dict, what: str) -> str:
    text = json.dumps(doc)
    if what == "truncated":
        return text[: len(text) // 2]
    if what == "not_json":
        return "\x00\x01 not json"
    head = dict(doc["header"])
    if what == "other_version":
        head["model_version"] = "2"
    elif what == "other_config":
        head["config_hash"] = "another"
    elif what == "other_detector":
        head["detector"] = "MinimumNightFlowDetector"
    elif what == "bad_time":
        head["last_time_ms"] = "yesterday"
    elif what == "bad_state":
        return json.dumps({**doc, "state": {**doc["state"], "history": "x"}})
    elif what == "bad_positions":
        return json.dumps({**doc, "positions": {"NO2": "x"}})
    return json.dumps({**doc, "header": head})


CORRUPTIONS = (
    "truncated",
    "not_json",
    "other_version",
    "other_config",
    "other_detector",
    "bad_time",
    "bad_state",
    "bad_positions",
)


@pytest.mark.parametrize("what", CORRUPTIONS)
def test_a_corrupt_or_foreign_checkpoint_is_logged_counted_and_ignored(tmp_path, caplog, what):
    readings = [r for r in contract.air_stream(days=1.0) if r.sensor == "NO2"]
    store = aqi_store(tmp_path)
    for r in readings[:100]:
        list(store.update(r))
    store.save()
    path = tmp_path / "eaqi.json"
    path.write_text(corrupt(json.loads(path.read_text()), what))
    fresh = aqi_store(tmp_path)
    with caplog.at_level(logging.WARNING, logger="gateway.device.checkpoints"):
        fresh.begin(NoMarks())
        outputs = [o for r in readings[100:] for out in fresh.update(r) for o in out]
    assert fresh.counters()["checkpoints_ignored"] == 1 and fresh.counters()["checkpoints_restored"] == 0
    assert any("ignored" in m and "eaqi.json" in m for m in caplog.messages), caplog.messages
    alone = aqi_store(tmp_path / "none")
    assert outputs == [o for r in readings[100:] for o in alone.detectors[0].update(r)]  # it started afresh


def test_a_checkpoint_older_than_the_limit_is_ignored(tmp_path, caplog):
    readings = [r for r in contract.air_stream(days=1.0) if r.sensor == "NO2"]
    store = aqi_store(tmp_path)
    for r in readings:
        list(store.update(r))
    store.save()
    late = aqi_store(tmp_path, max_age_days=1)
    late.begin(NoMarks())
    with caplog.at_level(logging.WARNING, logger="gateway.device.checkpoints"):
        list(late.update(dataclasses.replace(readings[-1], time_ms=readings[-1].time_ms + 2 * DAY_MS)))
    assert late.counters()["checkpoints_ignored"] == 1
    assert any("too old" in m for m in caplog.messages)


def test_the_config_hash_follows_the_model_section_only(net3_config):
    config = load(net3_config)
    other = load(net3_config.replace("history_days: 10", "history_days: 9"))
    assert config_hash(config, "mnf-leak") != config_hash(other, "mnf-leak")  # its section changed
    assert config_hash(config, "leak-ml") == config_hash(other, "leak-ml")  # not this one's
    assert config_hash(config, "not-a-model") == ""


def test_a_save_that_fails_is_counted_not_raised(tmp_path):
    (tmp_path / "file").write_text("")
    store = aqi_store(tmp_path / "file" / "sub")  # a folder that cannot be made
    for r in [r for r in contract.air_stream(days=0.2) if r.sensor == "NO2"]:
        list(store.update(r))
    store.save()
    assert store.counters()["checkpoint_errors"] >= 1


# ---- the runner: stopped, resumed, "crashed" ---------------------------------------------------------------


def outbox_items(data_dir: Path, prefix: str) -> Counter:
    """Detections and alerts stored in the outbox (nothing was delivered: the broker port is closed)."""
    found: Counter = Counter()
    with Outbox(outbox_path(data_dir)) as box:
        for message in box.take(1_000_000):
            if "/readings/" in message.stream or message.stream.endswith("/status"):
                continue
            out = payloads.decode(prefix, message.stream, message.payload)
            found[key(out)] += 1
    return found


def key(out) -> tuple:
    if isinstance(out, Alert):
        return ("alert", out.alert_id, str(out.state), out.time_ms)
    return ("detection", out.model, out.window_end_ms, out.label, round(out.score, 9))


def run_until(config, readings: int | None) -> GatewayRunner:
    import threading

    runner = GatewayRunner.from_config(config, resume=True)
    stop = threading.Event()
    seen = {"n": 0}

    def count(_reading):
        seen["n"] += 1
        if readings is not None and seen["n"] >= readings:
            stop.set()

    runner.run(stop=stop, on_reading=count, drain_timeout_s=0)
    return runner


def test_a_resumed_gateway_makes_each_decision_once_even_after_losing_its_last_state(net3_config, tmp_path):
    """Stop at A (checkpoint A), resume and stop at B, put checkpoint A back (a crash after B), resume to the end."""
    text = net3_text(Path(load(net3_config).sources.replay.file), tmp_path / "gw", port=free_port())
    config = load(text)
    source = build_sources(config)[0]
    detectors = build_detectors(config)
    expected = Counter()
    for r in source:
        for d in detectors:
            expected.update(key(o) for o in d.update(r))
    for d in detectors:
        expected.update(key(o) for o in d.flush())
    n = 14 * 96 * 10
    folder = tmp_path / "gw" / FOLDER

    first = run_until(config, int(n * 0.62) + 3)  # mid-leak, between two sensors of one step
    assert first.checkpoints.counters()["checkpoints_saved"] >= 2
    shutil.copytree(folder, tmp_path / "at-a")
    second = run_until(config, int(n * 0.75) + 7)
    assert second.checkpoints.counters()["checkpoints_restored"] == 2
    shutil.rmtree(folder)
    shutil.copytree(tmp_path / "at-a", folder)  # the state of B is lost, its outputs are in the outbox
    third = run_until(config, None)
    assert third.checkpoints.counters()["checkpoints_restored"] == 2
    learned = third.detectors[1]
    assert learned.late_readings_ == 0  # the readings its checkpoint held were not fed to it again
    held = third.checkpoints.counters()["checkpoint_readings_skipped"]
    assert int(n * 0.62) * 2 <= held <= int(n * 0.62) * 2 + 20  # each of the two, up to checkpoint A

    stored = outbox_items(tmp_path / "gw", "ckpt")
    assert {k: v for k, v in stored.items() if v > 1} == {}  # nothing made twice
    assert stored == expected
    alerts = [k for k in stored if k[0] == "alert"]
    assert {k[2] for k in alerts} == {"raised", "cleared"}


def test_outputs_at_the_mark_time_made_before_the_checkpoint_are_told_to_the_resume(tmp_path):
    """Two detectors of one kind decide the same hour on readings a minute apart; the checkpoint falls between.

    The run that "crashes" stored both of the first detector's outputs for that hour and one of the
    second's. The resumed run makes only the second's again (the first is restored past them): the
    outbox's mark counts 3 items at that time, 2 of which will never be asked about. Told so, the resume
    keeps the second's missing output; not told, it would take it for stored and lose it.
    """
    from edge.contracts import Reading
    from gateway.device.outbox_store import Mark
    from gateway.device.runner import _Resume
    from gateway.protocol.topics import Topics

    topics = Topics("ckpt", "s", "g")

    def detectors():
        return [AqiDetector("s", "g", [(sensor, "no2")], model=f"eaqi-{sensor.lower()}") for sensor in ("A", "B")]

    def store(dets):
        return CheckpointStore(tmp_path, dets, ["h", "h"], every_ms=61 * 60_000, max_age_ms=DAY_MS, topics=topics)

    readings = sorted(
        [
            Reading(k * 300_000 + lag, "s", "g", s, "no2", 40.0 + k, "ug/m3")
            for k in range(30)
            for s, lag in (("A", 0), ("B", 60_000))
        ],
        key=lambda r: r.time_ms,
    )
    whole = []
    reference = detectors()
    for r in readings:
        for d in reference:
            whole += [(topics.detections(o.kind), o.time_ms, o) for o in d.update(r)]

    crashed = store(detectors())
    crashed.begin(None)
    stored = []
    for r in readings:
        produced = [(topics.detections(o.kind), o.time_ms, o) for out in crashed.update(r) for o in out]
        if r.sensor == "B" and r.time_ms == 61 * 60_000:
            stored += produced[:1]  # killed while storing the second detector's outputs of the hour
            break
        stored += produced
    assert crashed.counters()["checkpoints_saved"] == 2  # before B's reading at 01:01: A had decided 01:00
    hour = 3_600_000
    marks = {topics.detections("aqi"): Mark(hour, sum(1 for _, t, _ in stored if t == hour))}
    assert marks[topics.detections("aqi")].count == 3

    resume = _Resume(marks)
    resumed = store(detectors())
    resumed.begin(resume)
    new = []
    for r in readings:
        for out in resumed.update(r):
            new += [
                (s, t, o)
                for s, t, o in ((topics.detections(o.kind), o.time_ms, o) for o in out)
                if not resume.stored(s, t)
            ]
    assert resumed.counters()["checkpoints_restored"] == 2
    assert [o for *_, o in stored] + [o for *_, o in new] == [o for *_, o in whole]


def test_a_save_cut_short_leaves_the_last_checkpoint_and_its_temp_file_is_removed(tmp_path):
    readings = [r for r in contract.air_stream(days=1.0) if r.sensor == "NO2"]
    store = aqi_store(tmp_path)
    for r in readings:
        list(store.update(r))
    store.save()
    saved = (tmp_path / "eaqi.json").read_text()
    (tmp_path / ".eaqi.json.k2j3.tmp").write_text(saved[:100])  # killed mid-write, before the rename
    again = aqi_store(tmp_path)
    again.begin(NoMarks())
    list(again.update(dataclasses.replace(readings[-1], time_ms=readings[-1].time_ms + 300_000)))
    assert again.counters()["checkpoints_restored"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eaqi.json"]


def test_the_drift_checkpoint_names_its_estimators_model_version(tmp_path):
    from edge.detectors.drift import CalibrationDriftDetector

    def drift(version: str):
        estimator = No2VirtualSensor("s", "g", {k: k for k in drift_data.WEATHER}, drift_data.MODEL, backend="numpy")
        estimator.model_version = version
        return CalibrationDriftDetector("s", "g", "no2", estimator=estimator, calibration_days=3)

    store = CheckpointStore(tmp_path, [drift("1")], ["h"], every_ms=DAY_MS, max_age_ms=DAY_MS)
    site = drift_data.site_with(seed=3, drift_per_day=None, days=2)
    for r in drift_data.readings(site, drift_data.site_columns(site)):
        list(store.update(r))
    store.save()
    head = json.loads((tmp_path / "calibration-drift.json").read_text())["header"]
    assert head["estimator"] == ["air-no2-virtual", "1"]
    other = CheckpointStore(tmp_path, [drift("2")], ["h"], every_ms=DAY_MS, max_age_ms=DAY_MS)
    other.begin(NoMarks())
    assert other.counters()["checkpoints_ignored"] == 1
