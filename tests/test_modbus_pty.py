"""The Modbus RTU source against pymodbus' own RTU server, on the far end of a pty pair (no mocked line)."""

from __future__ import annotations

import math
import struct

import pytest

from edge.contracts import Quality
from edge.drivers.base import SerialBus
from edge.drivers.modbus_rtu import RegisterPoint, encode_value
from edge.sources.modbus_source import ModbusSensor, ModbusSource, sources_from_config
from gateway.config import load_config_text

BUS = SerialBus(9600, 8, "N", 1)  # a pty takes no parity setting
M_PER_BAR = 100 / 9.80665


def point(
    device_id=1,
    function=3,
    address=0,
    data_type="float32",
    word_order="big",
    scale=1.0,
    offset=0.0,
    quantity="pressure",
    unit="bar",
):
    return RegisterPoint(device_id, function, address, data_type, word_order, scale, offset, quantity, unit)


def source(port, sensors, **kw):
    return ModbusSource(
        "dma-7",
        "gw-dma-7",
        port,
        sensors,
        bus=BUS,
        timeout_s=kw.pop("timeout_s", 0.3),
        poll_s=kw.pop("poll_s", 0.5),
        clock=lambda: 1_772_409_600.0,
        **kw,
    )


def test_register_maps_decode_to_contract_units(null_modem, modbus_device):
    modbus_device(
        {
            # Pressure transducer: float32 bar, low word first, in holding registers 0-1.
            1: ({0: encode_value(3.25, "float32", "little")}, {}),
            # Flow meter: int32 in m3/h x 100 (big word order) in input registers 100-101, and a
            # signed int16 test register at 110.
            2: ({}, {100: encode_value(45_000, "int32", "big"), 110: encode_value(-120, "int16")}),
        }
    )
    src = source(
        null_modem.gateway,
        [
            ModbusSensor("P-inlet", point(1, 3, 0, "float32", "little")),
            ModbusSensor("F-inlet", point(2, 4, 100, "int32", "big", scale=0.01, quantity="flow", unit="m3/h")),
            ModbusSensor("F-back", point(2, 4, 110, "int16", scale=0.1, quantity="flow", unit="L/s")),
        ],
    )
    readings = src.poll_once()
    src.line.close()
    assert [r.sensor for r in readings] == ["P-inlet", "F-inlet", "F-back"]
    assert all(r.validate() and r.quality is Quality.OK for r in readings)
    assert readings[0].value == pytest.approx(3.25 * M_PER_BAR) and readings[0].unit == "m"
    assert readings[1].value == pytest.approx(450.0 * 1000 / 3600) and readings[1].unit == "L/s"
    assert readings[2].value == pytest.approx(-12.0)
    assert readings[0].time_ms == 1_772_409_600_000


def test_the_wrong_word_order_gives_a_different_value(null_modem, modbus_device):
    # The check a technician makes on site: the same registers read with the other word order.
    modbus_device({1: ({0: encode_value(3.25, "float32", "big")}, {})})
    src = source(
        null_modem.gateway,
        [ModbusSensor("P-big", point(word_order="big")), ModbusSensor("P-little", point(word_order="little"))],
    )
    big, little = src.poll_once()
    src.line.close()
    assert big.value == pytest.approx(3.25 * M_PER_BAR)
    assert little.value != pytest.approx(big.value)


def test_a_silent_transmitter_reads_unknown_never_its_last_value(null_modem, modbus_device):
    device = modbus_device({1: ({0: encode_value(2.0, "float32")}, {})})
    src = source(
        null_modem.gateway, [ModbusSensor("P-inlet", point()), ModbusSensor("P-ghost", point(device_id=9))]
    )  # not configured at id 9
    first = src.poll_once()
    assert first[0].quality is Quality.OK and first[0].value == pytest.approx(2.0 * M_PER_BAR)
    assert first[1].quality is Quality.UNKNOWN and first[1].value is None
    device.close()  # the transmitter loses power
    second = src.poll_once()
    src.line.close()
    assert [(r.quality, r.value) for r in second] == [(Quality.UNKNOWN, None)] * 2
    assert all(r.validate() for r in second)
    assert src.counters["no_answer"] == 2 and src.counters["ok"] == 1


def test_a_modbus_exception_and_a_fault_value_read_unknown(null_modem, modbus_device):
    nan = list(struct.unpack(">HH", struct.pack(">f", math.nan)))
    modbus_device({1: ({0: nan}, {})})
    src = source(
        null_modem.gateway, [ModbusSensor("P-nan", point()), ModbusSensor("P-wrong", point(address=500))]
    )  # no register 500
    readings = src.poll_once()
    src.line.close()
    assert [r.quality for r in readings] == [Quality.UNKNOWN, Quality.UNKNOWN]
    assert src.counters["device_fault"] == 1 and src.counters["modbus_exception_2"] == 1


def test_a_missing_port_reads_unknown_and_says_so(tmp_path, caplog):
    src = source(str(tmp_path / "ttyUSB-gone"), [ModbusSensor("P-inlet", point())])
    (reading,) = src.poll_once()
    assert reading.quality is Quality.UNKNOWN
    assert src.counters["port_unavailable"] == 1
    assert "is the USB-RS485 adapter plugged in" in caplog.text


CONFIG = """\
site: dma-7
gateway: gw-dma-7
mqtt: {{host: 127.0.0.1}}
sensors:
  - {{id: P-inlet, quantity: pressure, driver: modbus_rtu, port: {port}, baudrate: 9600, parity: N,
     device_id: 1, address: 0, data_type: float32, word_order: little, register_unit: bar,
     timeout_s: 0.3, poll_s: 0.5}}
  - {{id: F-inlet, quantity: flow, driver: modbus_rtu, port: {port}, baudrate: 9600, parity: N,
     device_id: 2, function: 4, address: 100, data_type: uint16, scale: 0.1, register_unit: m3/h,
     timeout_s: 0.3, poll_s: 0.5}}
"""


def test_a_config_becomes_one_source_per_port_that_polls_on_schedule(null_modem, modbus_device):
    modbus_device({1: ({0: encode_value(4.0, "float32", "little")}, {}), 2: ({}, {100: [360]})})
    config = load_config_text(CONFIG.format(port=null_modem.gateway))
    (src,) = sources_from_config(config.site, config.gateway, config.sensors, polls=2)
    readings = list(src)
    assert [r.sensor for r in readings] == ["P-inlet", "F-inlet"] * 2
    assert all(r.validate().quality is Quality.OK for r in readings)
    assert readings[1].value == pytest.approx(36.0 * 1000 / 3600)
    assert readings[2].time_ms > readings[0].time_ms  # the second poll is a new measurement


def test_the_gateway_runner_publishes_polled_transmitters(null_modem, modbus_device, services, tmp_path):
    import json
    import threading

    from gateway.device.runner import GatewayRunner
    from tests.mqtt_clients import Collector

    modbus_device({1: ({0: encode_value(4.0, "float32", "little")}, {}), 2: ({}, {100: [360]})})
    text = CONFIG.format(port=null_modem.gateway).replace(
        "{host: 127.0.0.1}",
        f"{{host: {services.mqtt_host}, port: {services.mqtt_port}, topic_prefix: modbus-e2e, readings_batch: 1}}",
    )
    config = load_config_text(text + f"storage: {{data_dir: {tmp_path / 'data'}}}\n")
    watcher = Collector(services.mqtt_port, "modbus-e2e/dma-7/gw-dma-7/readings/#", host=services.mqtt_host).start()
    stop, seen = threading.Event(), []

    def count(reading):
        seen.append(reading)
        if len(seen) >= 4:  # two polls of two transmitters
            stop.set()

    summary = GatewayRunner.from_config(config).run(stop=stop, on_reading=count, drain_timeout_s=10)
    # The broker's copies to our watcher may trail the gateway's acks.
    watcher.wait_for(lambda messages: {m.topic.rsplit("/", 1)[1] for m in messages} == {"P-inlet", "F-inlet"})
    watcher.close()
    received = [(topic.rsplit("/", 1)[1], json.loads(payload)) for topic, payload in watcher.payloads()]
    assert summary.readings >= 4 and summary.all_acknowledged
    values = {sensor: body["readings"][0][1] for sensor, body in received}
    assert values["P-inlet"] == pytest.approx(4.0 * M_PER_BAR) and values["F-inlet"] == pytest.approx(10.0)
