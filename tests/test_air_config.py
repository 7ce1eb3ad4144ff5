"""Air-quality gateway configs: the shipped one validates and builds; mistakes a technician makes say what and where."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edge.contracts import Quality
from edge.detectors.aqi import AqiDetector
from edge.sources.cell_counts import CellCountSource, CellFileError
from edge.sources.serial_source import SerialSource
from gateway.config import ConfigError, load_config, load_config_text
from gateway.device.runner import build_detectors, build_sources

ROOT = Path(__file__).resolve().parent.parent
AIR_DEMO = ROOT / "firmware_configs" / "air-demo.yaml"
SDS = "/dev/serial/by-id/usb-1a86_USB2.0-Serial-if00-port0"
NODE = "/dev/serial/by-id/usb-Espressif_ESP32-if00"

BASE = f"""\
site: city-centre
gateway: gw-air-01
mqtt: {{host: 127.0.0.1}}
sensors:
  - {{id: RH-node, quantity: humidity, driver: line, port: {NODE}, key: rh}}
"""


def problems(extra: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config_text(BASE + extra, "air.yaml")
    return [str(p) for p in caught.value.problems]


def test_shipped_air_config_validates_with_driver_defaults():
    config = load_config(AIR_DEMO)
    by_id = {s.id: s for s in config.sensors}
    assert by_id["PM25-sds"].baudrate == 9600 and by_id["PM25-sds"].warmup_s == 30.0
    assert by_id["NO2-node"].baudrate == 115200 and by_id["NO2-node"].node_unit == "ppb"
    assert by_id["T-node"].node_unit is None and by_id["CC-centre"].k == 11
    assert by_id["PM25c-pms"].correction == "piecewise"
    assert [m.type for m in config.models] == ["eaqi", "calibration"]


def test_shipped_air_config_builds_sources_and_detector(tmp_path):
    config = load_config(AIR_DEMO)
    entries = [s.model_dump() for s in config.sensors if s.driver in ("sds011", "pms5003", "line")]
    source = SerialSource.from_config_entries(config.site, config.gateway, entries)
    assert len(source.counters) == 3  # three devices: SDS011, PMS5003, the node
    cells = CellCountSource.from_config_entries(
        config.site,
        config.gateway,
        [s.model_dump() for s in config.sensors if s.driver == "cell_counts"],
        resolve=config.resolve_path,
        timezone=config.timezone,
    )
    assert len(cells) == 1 and [z.mode for z in cells[0].zones] == [None, "vehicle"]  # one file, read once
    assert [type(s).__name__ for s in build_sources(config)] == ["CellCountSource", "SerialSource"]
    detector, calibration = build_detectors(config)
    assert calibration.inputs == {"pm25": "PM25-sds", "humidity": "RH-node", "temperature": "T-node"}
    assert isinstance(detector, AqiDetector) and detector.model == config.models[0].name
    assert detector.sensors == [("PM25c-sds", "pm25_corrected"), ("PM10-sds", "pm10"), ("NO2-node", "no2")]


def test_config_entries_drive_a_line_node_through_a_pty(tmp_path):
    config = load_config_text(
        BASE
        + f"""\
  - {{id: NO2-node, quantity: no2, driver: line, port: {NODE}, key: no2, node_unit: ppb}}
""",
        "air.yaml",
    )
    master, slave = os.openpty()
    try:
        entries = [{**s.model_dump(), "port": os.ttyname(slave)} for s in config.sensors]
        source = SerialSource.from_config_entries(config.site, config.gateway, entries)
        source.poll()
        os.write(master, b"rh=55.5 no2=10\n")
        out = []
        for _ in range(50):
            out += source.poll(timeout_s=0.1)
            if len(out) == 2:
                break
        got = {r.sensor: (round(r.value, 2), r.quality) for r in out}
        assert got == {"RH-node": (55.5, Quality.OK), "NO2-node": (19.13, Quality.OK)}
        source.close()
    finally:
        os.close(master)
        os.close(slave)


@pytest.mark.parametrize(
    "extra, expected",
    [
        (
            "  - {id: CC-1, quantity: cell_count, driver: cell_counts, file: counts.csv, cells: [C1], k: 4}\n",
            "air.yaml:6: sensors[1].k: must be a whole number from 5 to 1000, got 4: smaller counts identify people",
        ),
        (
            "  - {id: PM25-sds, quantity: pm25, driver: sds011, port: /dev/ttyUSB0}\n",
            "air.yaml:6: sensors[1].port: /dev/ttyUSB0 changes with the order devices are plugged in: use the sensor's "
            "stable link under /dev/serial/by-id/",
        ),
        (
            f"  - {{id: PM25c-sds, quantity: pm25_corrected, driver: sds011, port: {SDS}}}\n",
            "air.yaml:6: sensors[1]: a pm25_corrected sensor needs humidity_sensor",
        ),
        (
            f"  - {{id: PM25c-sds, quantity: pm25_corrected, driver: sds011, port: {SDS}, humidity_sensor: RH-nod}}\n",
            "air.yaml:6: sensors[1].humidity_sensor: no sensor with id 'RH-nod' in sensors, did you mean 'RH-node'?",
        ),
        (
            f"  - {{id: PM1-sds, quantity: pm1, driver: sds011, port: {SDS}}}\n",
            "air.yaml:6: sensors[1].quantity: this sensor gives pm25, pm10, pm25_corrected; got 'pm1'",
        ),
        (
            f"  - {{id: PM25-sds, quantity: pm25, driver: sds011, port: {SDS}, work_s: 20, sleep_s: 240}}\n",
            "air.yaml:6: sensors[1]: work_s (20 s) must be longer than warmup_s (30 s) when the fan sleeps",
        ),
        (
            f"  - {{id: PM25-sds, quantity: pm25, driver: sds011, port: {SDS}, sleep_s: 240, work_s: 60}}\n"
            f"  - {{id: PM10-sds, quantity: pm10, driver: sds011, port: {SDS}, sleep_s: 120, work_s: 60}}\n",
            "air.yaml:7: sensors[2].sleep_s: sleep_s 120 differs from 240 of the sensor on the same port (line 6): "
            "one port is one device",
        ),
        (
            f"  - {{id: NO2-node, quantity: no2, driver: line, port: {NODE}, node_unit: pbb}}\n",
            "air.yaml:6: sensors[1].node_unit: no2 cannot be converted from 'pbb': use one of ug/m3, ppb, ppm, "
            "did you mean 'ppb'?",
        ),
        (
            f"  - {{id: PM25-sds, quantity: pm25, driver: sds011, port: {NODE}}}\n",
            "air.yaml:6: sensors[1].driver: driver 'sds011' differs from 'line' of the sensor "
            "on the same port (line 5)",
        ),
        (
            "  - {id: CC-1, quantity: cell_count, driver: cell_counts, file: counts.csv, cell_map: cells.csv}\n",
            "air.yaml:6: sensors[1].zone: a cell_map needs zone",
        ),
        (
            "  - {id: CC-1, quantity: cell_count, driver: cell_counts, file: counts.csv}\n",
            "air.yaml:6: sensors[1].zone: give the zone's cells either as a cells list "
            "or as a cell_map file with a zone, not neither",
        ),
        (
            "models:\n  - {name: aqi, type: eaqi, sensors: [RH-node, NO2-kerb]}\n",
            "air.yaml:7: models[0].sensors[0]: sensor 'RH-node' measures humidity; the EAQI covers pm25",
        ),
        (
            "models:\n  - {name: aqi, type: eaqi, sensors: [RH-node], alert_from: pour}\n",
            "air.yaml:7: models[0].alert_from: must be one of good, fair, moderate, poor, very_poor, extremely_poor; "
            "got 'pour', did you mean 'poor'?",
        ),
    ],
    ids=[
        "k-below-5",
        "ttyUSB",
        "corrected-without-rh",
        "rh-misspelt",
        "sds-pm1",
        "work-shorter-than-warmup",
        "device-settings-differ",
        "node-unit-misspelt",
        "two-drivers-one-port",
        "cell-map-without-zone",
        "no-cells",
        "eaqi-not-a-pollutant",
        "alert-band-misspelt",
    ],
)
def test_air_config_mistakes_name_file_line_and_fix(extra, expected):
    found = problems(extra)
    assert any(p.startswith(expected) for p in found), "\n".join(found)


def test_a_cell_map_zone_that_does_not_exist_is_reported_when_the_source_is_built(tmp_path):
    (tmp_path / "cells.csv").write_text("cell_id,zone\nC1,centre\n")
    entry = {
        "id": "CC-1",
        "file": tmp_path / "counts",
        "k": 11,
        "cells": None,
        "cell_map": tmp_path / "cells.csv",
        "zone": "north",
        "mode": None,
    }
    with pytest.raises(CellFileError, match="has no zone 'north' \\(it has centre\\)"):
        CellCountSource.from_config_entries("s", "g", [entry])
