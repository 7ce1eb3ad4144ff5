"""The recalibration loop end to end on a simulated drifting site, over the session's real Mosquitto.

The site (training/air/drifting_site.py) has a metal-oxide NO2 sensor drifting 0.4 ug/m3
and 0.3 % of sensitivity a day. Its first calibration, ``train air-calibration`` on a
30-day co-location, goes on a gateway that also runs the shipped NO2 virtual sensor
(phones per antenna and weather) and a calibration_drift model watching the calibrated
output against it. As a water/air service lives it:

1. the gateway raises ``recalibration_needed``, naming the calibration, its version and the
   command to run;
2. the next day a reference is brought for 7 days; their CSV goes through
   ``frugalsense train air-calibration --update``, then ``frugalsense model sign`` and
   ``frugalsense model push`` to the gateway, which reports ``applied``;
3. the gateway's calibrated readings from then on are the new version's, and on the 14
   days after the co-location they score within 0.05 R2 of a calibration trained from
   scratch on the same week (the target), far above the stale first one.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from edge.contracts import Alert, AlertState, Reading
from gateway.cli import main
from gateway.config import load_config_text
from gateway.device.checkpoint_files import config_hash
from gateway.device.checkpoints import CheckpointStore
from gateway.device.runner import build_detectors
from gateway.model_updates.listener import start_for_config
from gateway.model_updates.signing import generate_signing_key
from gateway.protocol.mqtt_client import MqttSettings
from training.air.calibration import train_calibration
from training.air.calibration_previous import load_previous
from training.air.drifting_site import INPUTS, REFERENCE, co_location, drifting_site, r2

REPO = Path(__file__).resolve().parents[1]
DAY = 86_400_000
SITE, GATEWAY = "drift-site", "gw-1"
START_DAY = 30  # the gateway starts when the first co-location ends
AFTER_DAYS = 14  # scored after the recalibration's co-location
# sensor id -> (the simulated site's column, quantity, unit)
SENSORS = {
    "NO2-node": ("no2", "no2", "ug/m3"),
    "T-node": ("temperature", "temperature", "degC"),
    "RH-node": ("humidity", "humidity", "%"),
    "WS-met": ("wind_speed", "wind_speed", "m/s"),
    "CC-zone": ("cell_count", "cell_count", "count"),
}


def _train(table, out, train_days):
    return train_calibration(
        table, REFERENCE, out, list(INPUTS), train_days=train_days, signal="no2",
        temperature="temperature", humidity="humidity", unit="ug/m3",
    )  # fmt: skip


def readings(site, first_day: float, last_day: float) -> list[Reading]:
    """The site's sensors as the gateway reads them, 10-minute slots, one second apart within a slot."""
    t0 = int(site.time_ms[0])
    rows = np.flatnonzero((site.time_ms >= t0 + first_day * DAY) & (site.time_ms < t0 + last_day * DAY))
    out = []
    for i in rows:
        for lag, (sensor, (column, quantity, unit)) in enumerate(SENSORS.items()):
            value = float(site.sensors[column][i])
            if math.isfinite(value):
                out.append(Reading(int(site.time_ms[i]) + 1000 * lag, SITE, GATEWAY, sensor, quantity, value, unit))
    return out


def config(v1: Path, data_dir: Path, public: Path, prefix: str):
    text = (
        f"site: {SITE}\ngateway: {GATEWAY}\nmqtt: {{host: 127.0.0.1, topic_prefix: {prefix}}}\n"
        f"sources: {{replay: {{file: none.npz}}}}\nstorage: {{data_dir: {data_dir}}}\n"
        f"model_updates: {{enabled: true, public_key_file: {public}}}\nsensors:\n"
        + "".join(f"  - {{id: {s}, quantity: {q}, driver: replay}}\n" for s, (_, q, _) in SENSORS.items())
        + "models:\n"
        "  - {name: no2v, type: no2_virtual, backend: numpy, model_dir: ../models/air-no2-virtual,\n"
        "      sensors: {cell_count: CC-zone, wind_speed: WS-met, temperature: T-node, humidity: RH-node}}\n"
        f"  - {{name: no2-cal, type: calibration, backend: numpy, model_dir: {v1}, quantity: no2_calibrated,\n"
        "      inputs: {no2: NO2-node, temperature: T-node, humidity: RH-node}, drift_model: no2-drift}\n"
        "  - {name: no2-drift, type: calibration_drift, sensor: no2-cal, estimate_from: no2v}\n"
    )
    return load_config_text(text, "drift-site.yaml", path=REPO / "firmware_configs" / "drift-site.yaml")


def feed(store: CheckpointStore, stream: list[Reading]) -> list:
    return [o for r in stream for batch in store.update(r) for o in batch]


@pytest.fixture(scope="module")
def story(services, tmp_path_factory):
    """Run the whole story once; what each step measured."""
    tmp = tmp_path_factory.mktemp("drifting-site")
    site = drifting_site(130)
    v1 = tmp / "no2-calibration"
    _train(co_location(site, 0, 37), v1, 30)  # the first co-location: days 0-30 train (30-37 only report)
    private, public = generate_signing_key(tmp / "keys")
    prefix = "driftsite"
    cfg = config(v1, tmp / "data", public, prefix)
    detectors = build_detectors(cfg)
    hashes = [config_hash(cfg, d.model) for d in detectors]
    store = CheckpointStore(tmp / "checkpoints", detectors, hashes, every_ms=10**15, max_age_ms=10**15)
    store.begin(None)
    settings = MqttSettings(services.mqtt_host, services.mqtt_port, client_id=f"{prefix}-gw")
    listener = start_for_config(cfg, settings, detectors, backend="numpy")
    assert listener is not None and listener.wait_subscribed(20.0)
    try:
        stream = readings(site, START_DAY, 130)
        before, alarm = [], None
        for i, r in enumerate(stream):  # until the gateway says recalibration is needed
            before += [o for batch in store.update(r) for o in batch]
            raised = [o for o in before if isinstance(o, Alert) and o.state is AlertState.RAISED]
            if raised:
                alarm, rest = raised[0], stream[i + 1 :]
                break
        assert alarm is not None, "the drift model never raised recalibration_needed"
        alarm_day = (alarm.time_ms - int(site.time_ms[0])) // DAY + 1  # the reference arrives the next day
        co_end = alarm_day + 7
        during = [r for r in rest if r.time_ms < int(site.time_ms[0]) + co_end * DAY]
        after = rest[len(during) :]
        outputs_during = feed(store, during)  # the gateway goes on while the reference stands next to it
        csv = tmp / "recent-colocation.csv"
        _write_csv(co_location(site, alarm_day, 7), csv)
        cli = ["train", "air-calibration", "--update", str(v1), "--csv", str(csv), "--out", str(tmp / "v2")]
        assert main(cli) == 0
        assert main(["model", "sign", str(tmp / "v2"), "--key", str(private)]) == 0
        push = ["model", "push", str(tmp / "v2"), "--to", f"{SITE}/{GATEWAY}", "--prefix", prefix, "--wait", "20"]
        push += ["--mqtt-host", services.mqtt_host, "--mqtt-port", str(services.mqtt_port)]
        pushed = main(push)
        scored = [r for r in after if r.time_ms < int(site.time_ms[0]) + (co_end + AFTER_DAYS) * DAY]
        outputs_after = feed(store, scored)
    finally:
        listener.stop()
    _train(co_location(site, alarm_day, 7 + AFTER_DAYS), tmp / "fresh", 7)  # from scratch on the same week
    return {
        "site": site, "v1": v1, "v2": tmp / "v2", "fresh": tmp / "fresh", "alarm": alarm, "alarm_day": alarm_day,
        "co_end": co_end, "pushed": pushed, "before": before, "during": outputs_during, "after": outputs_after,
        "scored": scored,
    }  # fmt: skip


def _write_csv(table, path: Path) -> None:
    from edge.contracts import ms_to_datetime

    names = list(table.columns)
    lines = ["timestamp," + ",".join(names)]
    for i, t in enumerate(table.time_ms):
        lines.append(
            ms_to_datetime(int(t)).isoformat() + "," + ",".join(repr(float(table.columns[n][i])) for n in names)
        )
    path.write_text("\n".join(lines) + "\n")


def _calibrated(outputs) -> list[Reading]:
    return [o for o in outputs if isinstance(o, Reading) and o.sensor == "no2-cal"]


def test_the_gateway_says_recalibration_is_needed_and_which_model_to_refit(story):
    alarm = story["alarm"]
    assert alarm.label == "recalibration_needed" and alarm.model == "no2-drift"
    assert "Refit calibration no2-cal (model calibration-ref-no2 v1" in alarm.message, alarm.message
    assert "frugalsense train air-calibration --update" in alarm.message
    (refit,) = [json.loads(item) for item in alarm.explanation["refit"]]
    assert refit["model"] == "no2-cal" and refit["version"] == "1"
    print(f"\nalarm on day {story['alarm_day'] - 1}: {alarm.message}")


def test_the_update_is_applied_over_mqtt_and_the_readings_are_the_new_versions(story):
    assert story["pushed"] == 0  # the gateway reported applied
    v2 = load_previous(story["v2"])
    assert v2.version == "2"
    made = _calibrated(story["after"])
    assert len(made) > 0.9 * AFTER_DAYS * 144
    by_time = {r.time_ms: r for r in story["scored"]}
    raw = {}
    for r in story["scored"]:
        raw.setdefault(r.time_ms // 600_000, {})[r.sensor] = r.value
    rows = [raw[m.time_ms // 600_000] for m in made]
    X = np.array([[row["NO2-node"], row["T-node"], row["RH-node"]] for row in rows])
    np.testing.assert_allclose([m.value for m in made], v2.predict(X), rtol=1e-6, atol=1e-4)
    assert by_time  # the stream was scored


def test_after_one_update_the_calibrated_readings_are_as_good_as_a_fresh_calibration(story):
    site, made = story["site"], _calibrated(story["after"])
    truth = dict(zip(site.time_ms // 600_000, site.truth["no2"], strict=True))
    y = np.array([truth[m.time_ms // 600_000] for m in made])
    gateway_r2 = r2(y, np.array([m.value for m in made]))
    later = co_location(site, story["co_end"], AFTER_DAYS)
    X = np.stack([later.columns[n] for n in INPUTS], axis=1)
    ok = np.isfinite(later.columns[REFERENCE]) & np.all(np.isfinite(X), axis=1)
    fresh = r2(later.columns[REFERENCE][ok], load_previous(story["fresh"]).predict(X[ok]))
    stale = r2(later.columns[REFERENCE][ok], load_previous(story["v1"]).predict(X[ok]))
    print(
        f"\nR2 on days {story['co_end']}-{story['co_end'] + AFTER_DAYS}: gateway after the update {gateway_r2}, "
        f"fresh from the same week {fresh}, first calibration left alone {stale}"
    )
    assert gateway_r2 >= fresh - 0.05
    assert gateway_r2 > stale + 0.3


def test_the_readings_were_suspect_while_stale(story):
    during = _calibrated(story["during"])
    assert during and all(r.quality.value == "suspect" for r in during)  # the alert is open
    cleared = [o for o in story["after"] if isinstance(o, Alert) and o.model == "no2-drift"]
    assert [a.state for a in cleared] == [AlertState.CLEARED]  # v2 brought the residual back
    day = (cleared[0].time_ms - int(story["site"].time_ms[0])) / DAY
    print(f"\nalert cleared on day {day:.1f}, {day - story['co_end']:.1f} days after v2")
    # the reading that closes the day (and clears the alert) was judged before; every later one is ok
    ok_after = [r for r in _calibrated(story["after"]) if r.time_ms > cleared[0].time_ms + 60_000]
    assert ok_after and all(r.quality.value == "ok" for r in ok_after)
