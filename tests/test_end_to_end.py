"""The walking skeleton end to end: replay -> MNF detector -> Mosquitto -> bridge -> InfluxDB, all real."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import numpy as np
import pytest

from gateway.bridge.influx_writer import InfluxV1Writer
from gateway.bridge.service import Bridge
from gateway.config import load_config
from gateway.device.runner import GatewayRunner
from gateway.protocol.mqtt_client import MqttSettings

ROOT = Path(__file__).resolve().parents[1]
DEMO_CONFIG = ROOT / "firmware_configs" / "net3-demo.yaml"
HOUR_MS = 3_600_000
_n = itertools.count()


def demo_config_text(tmp_path: Path, dataset_path: Path) -> str:
    """The demo config, moved to ``tmp_path``: its relative paths made to point where they should."""
    return (
        DEMO_CONFIG.read_text()
        .replace("../.run/demo/net3-leak.npz", str(dataset_path))
        .replace("../.run/demo/gw-net3-01", str(tmp_path / "gateway"))
        .replace("../models/", f"{ROOT}/models/")
    )


def run_zone(services, tmp_path: Path, dataset):
    """Run the demo gateway over ``dataset``; return (summary, writer, bridge) once all has landed."""
    i = next(_n)
    dataset_path = dataset.save(tmp_path / "zone.npz")
    text = demo_config_text(tmp_path, dataset_path).replace("topic_prefix: frugalsense", f"topic_prefix: e2e{i}")
    config_path = tmp_path / "gateway.yaml"
    config_path.write_text(text)
    config = load_config(config_path)

    writer = InfluxV1Writer(services.influx_url, f"e2e_{i}")
    settings = MqttSettings(services.mqtt_host, services.mqtt_port, client_id=f"e2e-bridge-{i}")
    bridge = Bridge(settings, writer, prefix=f"e2e{i}").start()
    try:
        runner = GatewayRunner.from_config(config, mqtt_host=services.mqtt_host, mqtt_port=services.mqtt_port)
        summary = runner.run()
        assert summary.all_acknowledged
        assert bridge.wait_idle(quiet_s=1.0, timeout_s=60)
    finally:
        bridge.stop()
    return config, summary, writer, bridge


def test_every_reading_lands_once_and_the_leak_is_alerted(services, tmp_path, leak_run):
    config, summary, writer, bridge = run_zone(services, tmp_path, leak_run)

    # Every reading published lands exactly once, with the same value.
    sensor_column = {s.id: (s.column, s.quantity) for s in config.sensors}
    assert summary.readings == leak_run.values.size
    for sensor, (column, quantity) in sensor_column.items():
        (series,) = writer.query(f"SELECT value FROM reading WHERE sensor = '{sensor}'")
        times = np.array([row[0] for row in series["values"]])
        values = np.array([row[1] for row in series["values"]])
        np.testing.assert_array_equal(times, leak_run.time_ms)
        # float32 in the dataset -> float64 on the wire: exact, not approximate.
        np.testing.assert_array_equal(values, leak_run.series(column, quantity).astype(np.float64))
    assert sum(bridge.deadletters.values()) == 0

    # One leak alert per detector (MNF and learned), after the injected start and within the first 48 h.
    leak_start = leak_run.meta["leak_start_ms"]
    (alerts,) = writer.query("SELECT model, x_excess_lps FROM alert WHERE state = 'raised'")
    assert sorted(row[1] for row in alerts["values"]) == ["leak-ml", "mnf-leak"]
    for alert_time, _model, excess_lps in alerts["values"]:
        assert leak_start < alert_time <= leak_start + 48 * HOUR_MS
        assert excess_lps > 0.5 * leak_run.meta["leak_mean_flow_lps"]

    # The detections (MNF one per night, the learned one per step) and the gateway's status landed too.
    per_model = {
        s["tags"]["model"]: s["values"][0][1] for s in writer.query("SELECT count(label) FROM detection GROUP BY model")
    }
    assert sum(per_model.values()) == summary.detections
    assert per_model["mnf-leak"] == 14
    (status,) = writer.query("SELECT last(state) FROM gateway_status")
    assert status["values"][0][1] == "offline"  # a clean stop says so


def test_no_alert_in_the_leak_free_weeks(services, tmp_path, leak_free_run):
    _, summary, writer, _ = run_zone(services, tmp_path, leak_free_run)
    assert summary.alerts == 0
    assert writer.query("SELECT alert_id FROM alert") == []
    (labels,) = writer.query("SELECT label FROM detection")
    assert "leak" not in {row[1] for row in labels["values"]}
    assert summary.readings == leak_free_run.values.size


def test_demo_command_prints_alert_and_counts(tmp_path, capsys, leak_run):
    """`frugalsense demo`, as a user runs it, on a cached dataset."""
    from gateway.cli import main

    config_path = tmp_path / "demo.yaml"
    dataset_path = leak_run.save(tmp_path / "net3-leak.npz")
    config_path.write_text(demo_config_text(tmp_path, dataset_path))
    assert main(["demo", "--config", str(config_path), "--dir", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "readings published 13440, in InfluxDB 13440 -> all landed" in out
    assert "ALERT leak-2026-03-11 at 2026-03-11 04:00 UTC, 15.0 h after the leak began" in out  # MNF
    assert "ALERT leak-20260310T1330 at 2026-03-10 15:30 UTC, 2.5 h after the leak began" in out  # learned
    # the air site's calibration model: its calibrated PM2.5 landed in InfluxDB and beats the raw sensor
    [calibration] = [line for line in out.splitlines() if "PM2.5 calibration (pm25-cal" in line]
    r2, raw_r2 = (float(w) for w in re.findall(r"R2 (-?[0-9.]+)", calibration))
    assert "readings in InfluxDB" in calibration and r2 > raw_r2, calibration


@pytest.mark.parametrize("bad", ["mqqt", "sensors_typo"])
def test_demo_refuses_a_broken_config_without_traceback(tmp_path, capsys, bad):
    from gateway.cli import main

    text = DEMO_CONFIG.read_text()
    text = text.replace("mqtt:", "mqqt:") if bad == "mqqt" else text.replace("quantity: flow", "quantity: flo", 1)
    config_path = tmp_path / "broken.yaml"
    config_path.write_text(text)
    assert main(["demo", "--config", str(config_path), "--dir", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "did you mean 'mqtt'" in err if bad == "mqqt" else "did you mean 'flow'" in err
