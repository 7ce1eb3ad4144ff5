"""`frugalsense flash` and `frugalsense doctor` on real files, a real broker and pty-backed serial lines."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest

from edge.drivers import DRIVERS, sds011
from edge.drivers.modbus_rtu import encode_value
from gateway.cli import main
from gateway.tools import bundle as B
from gateway.tools.doctor import FAIL, OK, check_frame_stream

ROOT = Path(__file__).resolve().parents[1]
WATER_DMA = ROOT / "firmware_configs" / "water-dma.yaml"


@pytest.fixture(scope="module")
def exported_model(tmp_path_factory):
    """A small leak classifier exported by the project's own exporter (numpy format, real manifest)."""
    from sklearn.linear_model import LogisticRegression

    from training.export import export_model

    rng = np.random.default_rng(5)
    X = rng.normal(size=(200, 3))
    model = LogisticRegression().fit(X, (X[:, 0] > 0).astype(int))
    out = tmp_path_factory.mktemp("models") / "leak_lr"
    export_model(model, X, out, "leak_lr", "3", formats=("numpy",), feature_names=["mnf", "dp", "ratio"])
    return out


def gateway_config(tmp_path: Path) -> Path:
    """The shipped DMA config with a CA file next to it (bundled by its relative path)."""
    folder = tmp_path / "site"
    (folder / "tls").mkdir(parents=True)
    (folder / "tls" / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\nnot a real one\n-----END CERTIFICATE-----\n")
    text = WATER_DMA.read_text().replace("ca_file: /etc/frugalsense/tls/ca.crt", "ca_file: tls/ca.crt")
    path = folder / "gateway.yaml"
    path.write_text(text)
    return path


def test_flash_writes_a_bundle_that_doctor_passes(tmp_path, exported_model, capsys):
    card = tmp_path / "card"
    assert main(["flash", str(gateway_config(tmp_path)), "--to", str(card), "--model", str(exported_model)]) == 0
    listing = B.read_checksums(card)
    assert {
        "gateway.yaml",
        "tls/ca.crt",
        "frugalsense.service",
        "requirements.txt",
        "INSTALL.txt",
        "models/leak_lr/manifest.json",
        "models/leak_lr/leak_lr.npz",
    } <= set(listing)
    unit = (card / "frugalsense.service").read_text()
    assert "ExecStart=/opt/frugalsense/venv/bin/frugalsense run /etc/frugalsense/gateway.yaml" in unit
    pins = (card / "requirements.txt").read_text().splitlines()
    assert any(p.startswith("pymodbus==") for p in pins) and any(p.startswith("paho-mqtt==") for p in pins)
    assert not any(p.lower().startswith(("wntr", "scikit-learn", "pytest")) for p in pins)  # not for the gateway
    capsys.readouterr()

    assert main(["doctor", "--bundle", str(card)]) == 0
    out = capsys.readouterr().out
    assert "OK   bundle" in out and "OK   model leak_lr" in out and "FAIL" not in out


def test_a_changed_byte_in_a_bundled_model_fails_doctor_naming_the_file(tmp_path, exported_model, capsys):
    card = tmp_path / "card"
    assert main(["flash", str(gateway_config(tmp_path)), "--to", str(card), "--model", str(exported_model)]) == 0
    weights = card / "models" / "leak_lr" / "leak_lr.npz"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    capsys.readouterr()

    assert main(["doctor", "--bundle", str(card)]) == 1
    lines = capsys.readouterr().out.splitlines()
    failed = [line for line in lines if line.startswith(FAIL)]
    assert len(failed) == 2, lines
    assert failed[0].startswith("FAIL bundle") and "models/leak_lr/leak_lr.npz: has changed" in failed[0]
    assert failed[1].startswith("FAIL model leak_lr") and str(weights) in failed[1] and "fix:" in failed[1]


def test_flash_refuses_a_model_that_is_not_what_was_exported(tmp_path, exported_model, capsys):
    broken = tmp_path / "leak_lr"
    broken.mkdir()
    for f in exported_model.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    (broken / "leak_lr.parity.npz").write_bytes(b"truncated")
    code = main(["flash", str(gateway_config(tmp_path)), "--to", str(tmp_path / "card"), "--model", str(broken)])
    assert code == 2
    err = capsys.readouterr().err
    assert "leak_lr.parity.npz is not the file its manifest describes" in err and "export the model again" in err
    assert not (tmp_path / "card").exists()


def test_flash_copies_a_file_from_outside_the_config_folder_and_points_the_bundle_at_it(tmp_path, capsys):
    config = gateway_config(tmp_path)
    (tmp_path / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\nthe utility's CA\n-----END CERTIFICATE-----\n")
    written = config.read_text().replace("ca_file: tls/ca.crt", "ca_file: ../ca.crt")
    config.write_text(written)
    card = tmp_path / "card"
    assert main(["flash", str(config), "--to", str(card)]) == 0
    out = capsys.readouterr().out
    assert "mqtt.tls.ca_file: ../ca.crt -> data/ca.crt in gateway.yaml" in out
    assert (card / "data" / "ca.crt").read_bytes() == (tmp_path / "ca.crt").read_bytes()
    assert "data/ca.crt" in B.read_checksums(card) and "tls/ca.crt" not in B.read_checksums(card)
    flashed = (card / "gateway.yaml").read_text()
    assert flashed == written.replace("ca_file: ../ca.crt", "ca_file: data/ca.crt")  # comments and layout kept
    assert config.read_text() == written  # the technician's file is left as it is
    assert main(["doctor", "--bundle", str(card)]) == 0


def test_flash_refuses_to_move_a_path_it_cannot_rewrite_on_its_own(tmp_path, capsys):
    config = gateway_config(tmp_path)
    (tmp_path / "ca.crt").write_text("a CA\n")
    text = config.read_text().replace("    ca_file: tls/ca.crt\n", "    <<: {ca_file: ../ca.crt}\n")
    assert "<<:" in text
    config.write_text(text)
    assert main(["flash", str(config), "--to", str(tmp_path / "card")]) == 2
    err = capsys.readouterr().err
    assert "mqtt.tls.ca_file: cannot point it at its copy in the bundle" in err and "write it out" in err
    assert not (tmp_path / "card").exists()


def test_flash_refuses_a_missing_file_a_folder_outside_and_a_foreign_target(tmp_path, capsys):
    config = gateway_config(tmp_path)
    config.write_text(config.read_text().replace("ca_file: tls/ca.crt", "ca_file: ../ca.crt"))
    assert main(["flash", str(config), "--to", str(tmp_path / "card")]) == 2
    assert f"mqtt.tls.ca_file: {tmp_path / 'ca.crt'} does not exist" in capsys.readouterr().err

    (tmp_path / "ca.crt").mkdir()  # a folder the gateway would fill: it must be named where it is on the gateway
    assert main(["flash", str(config), "--to", str(tmp_path / "card")]) == 2
    assert "give its absolute path on the gateway" in capsys.readouterr().err
    assert not (tmp_path / "card").exists()

    config.write_text(WATER_DMA.read_text())
    occupied = tmp_path / "photos"
    occupied.mkdir()
    (occupied / "holiday.jpg").write_bytes(b"\xff\xd8")
    assert main(["flash", str(config), "--to", str(occupied)]) == 2
    assert "is not empty and holds no earlier bundle" in capsys.readouterr().err
    assert main(["flash", str(tmp_path / "nope.yaml"), "--to", str(occupied)]) == 2  # validated first


# ---- doctor on the gateway: pty-backed serial lines, the real broker -------------------


def doctor_config(tmp_path: Path, port: str, services, mqtt_port: int | None = None) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(f"""\
site: dma-7
gateway: gw-dma-7
sensors:
  - {{id: P-inlet, quantity: pressure, driver: modbus_rtu, port: {port}, baudrate: 9600, parity: N,
     device_id: 10, address: 0, data_type: int16, register_unit: mbar, timeout_s: 0.5}}
models: []
mqtt: {{host: {services.mqtt_host}, port: {mqtt_port or services.mqtt_port}}}
storage: {{data_dir: {tmp_path / "data"}}}
""")
    return path


def test_doctor_on_the_gateway_passes_with_a_transmitter_answering(
    tmp_path, null_modem, modbus_device, services, capsys
):
    modbus_device({10: ({0: encode_value(4250, "int16")}, {})})  # 4.25 bar in mbar
    assert main(["doctor", "--config", str(doctor_config(tmp_path, null_modem.gateway, services))]) == 0
    out = capsys.readouterr().out
    assert "OK   sensor P-inlet" in out and "device 10, holding registers 0 (int16)" in out and "43.3 m" in out
    assert "OK   serial port" in out and "not a /dev/serial/by-id path" in out
    assert f"OK   broker               {services.mqtt_host}:{services.mqtt_port}" in out
    assert "OK   disk" in out


def test_doctor_fails_a_silent_transmitter_and_an_absent_broker_with_fixes(tmp_path, silent_port, services, capsys):
    from gateway.local_services.services import free_port

    config = doctor_config(tmp_path, silent_port, services, mqtt_port=free_port())
    assert main(["doctor", "--config", str(config), "--broker-timeout", "2"]) == 1
    lines = capsys.readouterr().out.splitlines()
    sensor = next(line for line in lines if "sensor P-inlet" in line)
    assert sensor.startswith("FAIL") and "no valid answer from device 10" in sensor
    assert "fix: check the transmitter's power, the RS-485 A/B wires" in sensor and "9600 8N1" in sensor
    broker = next(line for line in lines if " broker " in line)
    assert broker.startswith("FAIL") and "fix: check the broker runs" in broker


def _stream_frames(fd: int, stop: threading.Event) -> None:
    frames = [sds011.measurement_frame(pm25=12.3 + i, pm10=20.0 + i) for i in range(50)]
    for frame in frames:
        if stop.wait(0.05):
            return
        os.write(fd, b"\x00\x17" + frame)  # line noise between frames, as on a real cable


def test_a_streaming_sensor_passes_with_frames_and_fails_when_silent(null_modem, silent_port):
    # The device end of the cable streams SDS011 frames; doctor reads the gateway end.
    stop = threading.Event()
    device = os.open(null_modem.device, os.O_RDWR | os.O_NOCTTY)
    writer = threading.Thread(target=_stream_frames, args=(device, stop), daemon=True)
    writer.start()
    try:
        check = check_frame_stream(null_modem.gateway, DRIVERS["sds011"], sensor_id="PM-1", timeout_s=3)
    finally:
        stop.set()
        writer.join()
        os.close(device)
    assert check.status == OK and check.detail.startswith("sds011 frame on") and "pm25=" in check.detail

    silent = check_frame_stream(silent_port, DRIVERS["sds011"], sensor_id="PM-1", timeout_s=0.5)
    assert silent.status == FAIL and "no bytes" in silent.detail
    assert "the sensor sends nothing: check its power" in silent.line()


def test_status_reads_the_retained_status_from_the_broker_and_the_local_outbox(tmp_path, services, capsys):
    from gateway.device.publisher import GatewayPublisher
    from gateway.protocol import topics as T
    from gateway.protocol.mqtt_client import MqttSettings

    config = doctor_config(tmp_path, "/dev/null", services)
    config.write_text(config.read_text().replace("port: /dev/null", "port: /dev/serial/by-id/none"))
    publisher = GatewayPublisher(
        T.Topics("frugalsense", "dma-7", "gw-dma-7"),
        MqttSettings(services.mqtt_host, services.mqtt_port, client_id="status-test"),
    )
    publisher.connect()
    publisher.publish_status({"outbox_backlog": 3})
    try:
        assert publisher.wait_acked(10)
        assert main(["status", "--config", str(config)]) == 0
        out = capsys.readouterr().out
        assert out.startswith("dma-7/gw-dma-7: online at ") and "outbox_backlog" in out and " 3\n" in out
    finally:
        publisher.close(10)
    assert main(["status", "--config", str(config)]) == 1  # a clean stop leaves 'offline' retained
    assert "dma-7/gw-dma-7: offline" in capsys.readouterr().out
    assert main(["status", "--config", str(config), "--local"]) == 1
    assert "no outbox at" in capsys.readouterr().out
