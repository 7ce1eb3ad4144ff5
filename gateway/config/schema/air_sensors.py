"""Air-quality sensor drivers: SDS011 and PMS5003 PM sensors, key=value line nodes, cell-tower counts."""

from __future__ import annotations

import re
from typing import Annotated, ClassVar, Literal

from pydantic import BeforeValidator, Field, ValidationInfo, field_validator, model_validator

from edge.air.correction import CORRECTIONS as PM_CORRECTIONS
from edge.air.correction import DEFAULT_CORRECTION as DEFAULT_PM_CORRECTION
from edge.contracts import QUANTITY_UNITS
from edge.drivers import line_node, pms5003, sds011
from edge.sources.cell_counts import DEFAULT_K as CELL_DEFAULT_K
from edge.sources.cell_counts import MIN_K as CELL_MIN_K
from gateway.config.schema.sensors import SensorBase, _choice, _serial_port, sensor_driver
from gateway.config.schema.types import (
    FilePath,
    Identifier,
    Text,
    _flag,
    _one_of,
    _text,
    describe,
    fail,
    number,
    suggest,
)

# ---- air-quality serial sensors and cell-tower counts ----------------------------------
# Entries with the same port are one device (an SDS011 gives pm25 and pm10 on one line);
# their device settings must agree (checked across sections). Bus defaults come from
# each driver's declaration in edge/drivers.


def _stable_port(value: object) -> str:
    port = _serial_port(value)
    if re.fullmatch(r"/dev/tty(USB|ACM)[0-9]+", port):
        raise fail(
            f"{port} changes with the order devices are plugged in: use the sensor's stable link under "
            "/dev/serial/by-id/ (list them with: ls -l /dev/serial/by-id/)"
        )
    return port


_BAUDRATES = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)


class _AirSerialSensor(SensorBase):
    port: Annotated[str, BeforeValidator(_stable_port)]  # e.g. /dev/serial/by-id/usb-1a86_USB_Serial-if00-port0
    quantities: ClassVar[tuple[str, ...]] = ()  # what this driver can give

    @field_validator("quantity")
    @classmethod
    def _driver_quantity(cls, quantity: str) -> str:
        if cls.quantities and quantity not in cls.quantities:
            raise fail(
                f"this sensor gives {', '.join(cls.quantities)}; got {quantity!r}", suggest(quantity, cls.quantities)
            )
        return quantity


class _FanPmSensor(_AirSerialSensor):
    """A fan-driven optical PM sensor, queried every interval_s while its fan runs."""

    interval_s: number(1, 3600) = 10.0  # seconds between queries while awake
    work_s: number(0, 86400) = 0.0  # seconds the fan runs per cycle, warm-up included
    sleep_s: number(0, 86400) = 0.0  # seconds the fan sleeps per cycle; 0 = it never sleeps
    humidity_sensor: Identifier | None = None  # pm25_corrected: the humidity sensor (a line node) to correct with
    correction: Annotated[str, BeforeValidator(_one_of(PM_CORRECTIONS))] = DEFAULT_PM_CORRECTION

    @classmethod
    def quiet_s(cls, settings: dict) -> float | None:
        if settings["sleep_s"] > 0:  # asleep, then warming up: no reading in between
            return settings["sleep_s"] + settings["warmup_s"] + settings["interval_s"]
        return settings["interval_s"]

    @model_validator(mode="after")
    def _consistent(self) -> _FanPmSensor:
        if self.quantity == "pm25_corrected" and self.humidity_sensor is None:
            raise fail(
                "a pm25_corrected sensor needs humidity_sensor: the id of a humidity sensor "
                "(the US EPA correction uses relative humidity)"
            )
        if self.quantity != "pm25_corrected" and self.humidity_sensor is not None:
            raise fail("humidity_sensor is only used by a pm25_corrected sensor")
        if self.sleep_s > 0 and self.work_s <= self.warmup_s:  # type: ignore[attr-defined]
            raise fail(
                f"work_s ({self.work_s:g} s) must be longer than warmup_s ({self.warmup_s:g} s) "  # type: ignore[attr-defined]
                "when the fan sleeps, or no reading is ever taken"
            )
        return self


@sensor_driver
class Sds011Sensor(_FanPmSensor):
    """Nova Fitness SDS011 laser PM sensor: one entry per quantity (pm25, pm10, pm25_corrected)."""

    quantities: ClassVar[tuple[str, ...]] = (*sds011.DRIVER.fields, "pm25_corrected")
    driver: Literal["sds011"]
    baudrate: Annotated[int, _choice(*_BAUDRATES)] = sds011.BUS.baudrate
    warmup_s: number(0, 600) = sds011.WARMUP_S  # after waking, readings are discarded this long


@sensor_driver
class Pms5003Sensor(_FanPmSensor):
    """Plantower PMS5003 laser PM sensor: pm1, pm25, pm10 ("atmospheric") and pm25_corrected (from CF=1)."""

    quantities: ClassVar[tuple[str, ...]] = ("pm1", "pm25", "pm10", "pm25_corrected")
    driver: Literal["pms5003"]
    baudrate: Annotated[int, _choice(*_BAUDRATES)] = pms5003.BUS.baudrate
    warmup_s: number(0, 600) = pms5003.WARMUP_S


_LINE_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_.]{0,31}$")


def _line_key(value: object) -> str:
    text = _text(value)
    if not _LINE_KEY.match(text):
        raise fail(f"must be the key the node prints before '=' (letters, digits, '_', '.'), got {text!r}")
    return text


@sensor_driver
class LineSensor(_AirSerialSensor):
    """One value of a microcontroller node printing key=value lines (e.g. no2=23.5 t=18.2 rh=55)."""

    driver: Literal["line"]
    baudrate: Annotated[int, _choice(*_BAUDRATES)] = line_node.BUS.baudrate
    interval_s: number(1, 86400) = 60.0  # how often the node prints; silent for 2.5 of these = 'unknown'
    key: Annotated[str, BeforeValidator(_line_key)] | None = None  # the key the node prints; default: the quantity
    node_unit: Text | None = Field(default=None, validate_default=True)  # e.g. ppb; default: the canonical unit

    @classmethod
    def quiet_s(cls, settings: dict) -> float | None:
        return settings["interval_s"]

    @field_validator("node_unit")
    @classmethod
    def _convertible(cls, unit: str | None, info: ValidationInfo) -> str | None:
        quantity = info.data.get("quantity")
        if unit is None or quantity is None or unit == QUANTITY_UNITS.get(quantity):
            return None
        units = line_node.node_units(quantity)
        if unit not in units:
            known = ", ".join([QUANTITY_UNITS[quantity], *units])
            raise fail(f"{quantity} cannot be converted from {unit!r}: use one of {known}", suggest(unit, units))
        return unit


def _privacy_k(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not CELL_MIN_K <= value <= 1000:
        raise fail(
            f"must be a whole number from {CELL_MIN_K} to 1000, got {describe(value)}: smaller counts "
            "identify people (statistical offices suppress counts below about 11)"
        )
    return value


@sensor_driver
class CellCountSensor(SensorBase):
    """Devices the operator's cells of one zone saw per slot, from operator CSV files; small counts suppressed first."""

    driver: Literal["cell_counts"]
    file: FilePath  # an operator CSV file, or a folder of them; relative to this config file
    k: Annotated[int, BeforeValidator(_privacy_k)] = CELL_DEFAULT_K  # counts below k are dropped before use
    cells: list[Text] | None = None  # the cell ids of this zone...
    cell_map: FilePath | None = None  # ...or a CSV with cell_id and zone columns
    zone: Text | None = Field(default=None, validate_default=True)  # the zone in cell_map
    mode: Identifier | None = None  # one mobility mode (column count_<mode>); default: the total count
    follow: Annotated[bool, BeforeValidator(lambda v: _flag(v))] = False  # watch the folder for new files
    poll_s: number(1, 86400) = 60.0  # how often a followed folder is looked at

    @field_validator("quantity")
    @classmethod
    def _counts(cls, quantity: str) -> str:
        if quantity != "cell_count":
            raise fail(f"a cell_counts sensor gives cell_count, got {quantity!r}")
        return quantity

    @field_validator("zone")
    @classmethod
    def _zone_with_map(cls, zone: str | None, info: ValidationInfo) -> str | None:
        has_cells, has_map = info.data.get("cells") is not None, info.data.get("cell_map") is not None
        if has_cells == has_map and "cells" in info.data and "cell_map" in info.data:
            raise fail(
                "give the zone's cells either as a cells list or as a cell_map file with a zone, not "
                + ("both" if has_cells else "neither")
            )
        if has_map and zone is None:
            raise fail("a cell_map needs zone: the zone of this gateway in that file")
        if has_cells and zone is not None:
            raise fail("zone picks cells from a cell_map; with a cells list, leave it out")
        return zone
