"""The gateway config schema: what a technician may write in ``firmware_configs/*.yaml``.

Defaults live here and only here. Every check raises its own plain-words message (with
a "did you mean" where a name was misspelt) so `validate.py` can show it as is.
Checks that span sections (a model naming a sensor, duplicate ids) are in
``cross_section_issues`` so all of them can be reported at once, each at its own key.

Sensor drivers and model types are registries: a new driver is a ``SensorBase``
subclass with ``driver: Literal["name"]`` decorated with ``@sensor_driver``, defined
before ``GatewayConfig`` is built (i.e. in this module or one it imports).

>>> cfg = GatewayConfig.model_validate({
...     "site": "net3-north", "gateway": "gw-01", "mqtt": {"host": "127.0.0.1"},
...     "sensors": [{"id": "F-lake", "quantity": "flow", "driver": "replay"}],
...     "sources": {"replay": {"file": "net3.npz"}}})
>>> cfg.mqtt.client_id, cfg.sensors[0].unit, cfg.sensors[0].column
('frugalsense-gw-01', 'L/s', 'F-lake')
"""
from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, NamedTuple, Union
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr, ValidationInfo,
                      field_validator, model_validator)
from pydantic_core import PydanticCustomError

from edge.contracts import QUANTITY_UNITS, ContractError, check_id
from edge.drivers.modbus_rtu import BUS as MODBUS_BUS
from edge.drivers.modbus_rtu import DATA_TYPES as MODBUS_DATA_TYPES
from edge.drivers.modbus_rtu import UNIT_FACTORS as MODBUS_UNIT_FACTORS
from edge.air.correction import CORRECTIONS as PM_CORRECTIONS
from edge.air.correction import DEFAULT_CORRECTION as DEFAULT_PM_CORRECTION
from edge.air.eaqi import BANDS as EAQI_BANDS
from edge.air.eaqi import POLLUTANT_OF_QUANTITY
from edge.drivers import line_node, pms5003, sds011
from edge.sources.cell_counts import DEFAULT_K as CELL_DEFAULT_K
from edge.sources.cell_counts import MIN_K as CELL_MIN_K
from gateway.security.secrets import loose_permissions

# validate.py runs the cross-section checks itself (to report them all, each at its
# own line); code calling model_validate directly gets the first one as an error.
CONTEXT_CROSS_CHECKS = "cross_checks"
CONTEXT_PATH = "path"


def suggest(word: object, choices: Iterable[str]) -> str | None:
    """The closest known name to a misspelt one, ignoring case.

    >>> suggest("presure", QUANTITY_UNITS), suggest("xyz", ["mqtt"])
    ('pressure', None)
    """
    if not isinstance(word, str):
        return None
    lowered = {c.lower(): c for c in choices}
    match = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.6)
    return lowered[match[0]] if match else None


def describe(value: object) -> str:
    """A value as a technician typed it, for 'got ...' in messages."""
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a section of keys"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return repr(value)
    return str(value)


def format_path(loc: Iterable[str | int]) -> str:
    """``('sensors', 0, 'id')`` -> ``'sensors[0].id'``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def fail(message: str, suggestion: str | None = None) -> PydanticCustomError:
    # The message goes through the context so braces in a typed value stay literal.
    return PydanticCustomError("config", "{message}", {"message": message, "suggestion": suggestion})


# ---- value types ---------------------------------------------------------------------

def _text(value: object) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        raise fail(f"must be text, got the number {value}: write it in quotes, \"{value}\"")
    if not isinstance(value, str) or not value.strip():
        raise fail(f"must be text, got {describe(value)}")
    return value


def _identifier(value: object) -> str:
    text = _text(value)
    try:
        return check_id("value", text)
    except ContractError:
        raise fail("must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit, "
                   f"got {text!r}") from None


def _one_of(choices: Iterable[str]) -> Callable[[object], str]:
    names = list(choices)

    def check(value: object) -> str:
        if value not in names:
            raise fail(f"must be one of {', '.join(names)}; got {describe(value)}", suggest(value, names))
        return value  # type: ignore[return-value]
    return check


def whole(low: int, high: int) -> Any:
    """A whole number in ``low..high``; true/false and 1.5 are refused, not converted."""
    def check(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise fail(f"must be a whole number between {low} and {high}, got {describe(value)}")
        return value
    return Annotated[int, BeforeValidator(check)]


def number(low: float, high: float | None = None, low_open: bool = False) -> Any:
    """A number ``> low`` (``low_open``) or ``>= low``, and ``<= high`` if given."""
    bound = f"greater than {low}" if low_open else f"at least {low}"
    if high is not None:
        bound += f" and at most {high}"

    def check(value: object) -> float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok:
            ok = (value > low if low_open else value >= low) and (high is None or value <= high)
        if not ok:
            raise fail(f"must be a number {bound}, got {describe(value)}")
        return float(value)  # type: ignore[arg-type]
    return Annotated[float, BeforeValidator(check)]


_CLOCK = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$")


def _clock_time(value: object) -> str:
    if not isinstance(value, str) or not _CLOCK.match(value):
        raise fail(f"must be a time of day HH:MM (24-hour), like \"02:00\", got {describe(value)}")
    return value


def _timezone(value: object) -> str:
    name = _text(value)
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise fail(f"unknown time zone {name!r}: use an IANA name like 'Europe/Paris' or 'UTC'",
                   suggest(name, available_timezones() | {"UTC"})) from None
    return name


def _topic_prefix(value: object) -> str:
    text = _text(value)
    if re.search(r"[+#\s\x00]", text) or text.startswith(("/", "$")) or text.endswith("/") or "//" in text:
        raise fail("must be MQTT topic levels separated by '/', without '+', '#', spaces, "
                   f"empty levels, or a leading '/' or '$', got {text!r}")
    return text


def _host(value: object) -> str:
    text = _text(value)
    if "://" in text or "/" in text or re.search(r"\s", text):
        raise fail(f"must be a host name or IP address only (no 'mqtt://', path or spaces), got {text!r}")
    return text


def _env_var(value: object) -> str:
    text = _text(value)
    if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", text):
        raise fail(f"must be the name of an environment variable (letters, digits, '_'), got {text!r}")
    return text


def _client_id(value: object) -> str:
    text = _text(value)
    if len(text) > 128 or re.search(r"\s", text):
        raise fail(f"must be at most 128 characters without spaces, got {text!r}")
    return text


Text = Annotated[str, BeforeValidator(_text)]
Identifier = Annotated[str, BeforeValidator(_identifier)]
Quantity = Annotated[str, BeforeValidator(_one_of(QUANTITY_UNITS))]
ClockTime = Annotated[str, BeforeValidator(_clock_time)]
TimeZoneName = Annotated[str, BeforeValidator(_timezone)]
FilePath = Annotated[Path, BeforeValidator(_text)]


class Section(BaseModel):
    """A block of keys; unknown keys are errors (a typo must never be silently ignored)."""

    model_config = ConfigDict(extra="forbid")
    # Keys refused with a specific explanation instead of "unknown key".
    refused_keys: ClassVar[dict[str, str]] = {}


# ---- sensors -------------------------------------------------------------------------

SENSOR_DRIVERS: dict[str, type["SensorBase"]] = {}
MODEL_TYPES: dict[str, type["ModelBase"]] = {}


def _tag_of(cls: type[BaseModel], key: str) -> str:
    return cls.model_fields[key].annotation.__args__[0]  # type: ignore[union-attr]


def sensor_driver(cls: type["SensorBase"]) -> type["SensorBase"]:
    SENSOR_DRIVERS[_tag_of(cls, "driver")] = cls
    return cls


def model_type(cls: type["ModelBase"]) -> type["ModelBase"]:
    MODEL_TYPES[_tag_of(cls, "type")] = cls
    return cls


class SensorBase(Section):
    """What every sensor has, whatever its driver."""

    id: Identifier
    quantity: Quantity
    unit: Text | None = None  # filled with the canonical unit of the quantity

    @field_validator("unit")
    @classmethod
    def _canonical_unit(cls, unit: str | None, info: ValidationInfo) -> str | None:
        quantity = info.data.get("quantity")
        if unit is not None and quantity is not None and unit != QUANTITY_UNITS[quantity]:
            raise fail(f"{unit!r} is not the unit of {quantity}: use {QUANTITY_UNITS[quantity]!r} "
                       "(or leave unit out)")
        return unit

    @model_validator(mode="after")
    def _fill_unit(self) -> "SensorBase":
        if self.unit is None:
            self.unit = QUANTITY_UNITS[self.quantity]
        return self


@sensor_driver
class ReplaySensor(SensorBase):
    """A sensor replayed from a recorded or simulated dataset (``sources.replay``)."""

    driver: Literal["replay"]
    column: Text | None = None  # element name in the dataset; filled with the sensor id

    @model_validator(mode="after")
    def _fill_column(self) -> "ReplaySensor":
        if self.column is None:
            self.column = self.id
        return self


def _serial_port(value: object) -> str:
    text = _text(value)
    if not text.startswith("/dev/"):
        raise fail(f"must be a serial device path, preferably under /dev/serial/by-id/ (stable across reboots), "
                   f"got {text!r}")
    return text


def _finite(nonzero: bool) -> Any:
    def check(value: object) -> float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value == value \
            and abs(value) != float("inf") and not (nonzero and value == 0)
        if not ok:
            raise fail(f"must be a{' non-zero' if nonzero else ''} number, got {describe(value)}")
        return float(value)  # type: ignore[arg-type]
    return Annotated[float, BeforeValidator(check)]


def _choice(*choices: Any) -> Any:
    """One of a few values written as is (numbers stay numbers: 3, not "3")."""
    def check(value: object) -> Any:
        if isinstance(value, bool) or value not in choices:
            names = [str(c) for c in choices]
            raise fail(f"must be one of {', '.join(names)}; got {describe(value)}", suggest(str(value), names))
        return value
    return BeforeValidator(check)


@sensor_driver
class ModbusRtuSensor(SensorBase):
    """A pressure or flow transmitter on a Modbus RTU (RS-485) line; the register map is on its datasheet."""

    driver: Literal["modbus_rtu"]
    port: Annotated[str, BeforeValidator(_serial_port)]  # e.g. /dev/serial/by-id/usb-FTDI_FT232R_A10K1234-if00-port0
    baudrate: Annotated[int, _choice(1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)] = MODBUS_BUS.baudrate
    bytesize: Annotated[int, _choice(7, 8)] = MODBUS_BUS.bytesize
    parity: Annotated[str, _choice("N", "E", "O")] = MODBUS_BUS.parity  # N none, E even, O odd
    stopbits: Annotated[int, _choice(1, 2)] = int(MODBUS_BUS.stopbits)
    device_id: whole(1, 247) = 1  # the transmitter's Modbus address (slave id)
    function: Annotated[int, _choice(3, 4)] = 3  # 3 = read holding registers, 4 = read input registers
    address: whole(0, 65535)  # first register of the value, 0-based as on the wire (40001 on a datasheet is 0)
    data_type: Annotated[str, BeforeValidator(_one_of(MODBUS_DATA_TYPES))] = "float32"
    word_order: Annotated[str, BeforeValidator(_one_of(("big", "little")))] = "big"  # 32-bit values: high word first?
    scale: _finite(nonzero=True) = 1.0  # value = raw * scale + offset, in register_unit
    offset: _finite(nonzero=False) = 0.0
    register_unit: Text | None = Field(default=None, validate_default=True)  # unit the device reports; default: unit
    timeout_s: number(0.05, 10) = 1.0  # no answer within this: the reading is 'unknown'
    poll_s: number(0.5, 86400) = 10.0  # one read of every sensor on this port per poll_s

    @field_validator("quantity")
    @classmethod
    def _transmitter_quantity(cls, quantity: str) -> str:
        if quantity not in MODBUS_UNIT_FACTORS:
            raise fail(f"a Modbus transmitter here measures {' or '.join(MODBUS_UNIT_FACTORS)}, got {quantity!r}")
        return quantity

    @field_validator("register_unit")
    @classmethod
    def _known_unit(cls, unit: str | None, info: ValidationInfo) -> str | None:
        quantity = info.data.get("quantity")
        units = MODBUS_UNIT_FACTORS.get(quantity, {})
        if unit is not None and units and unit not in units:
            raise fail(f"{quantity} cannot be converted from {unit!r}: use one of {', '.join(units)}",
                       suggest(unit, units))
        return unit

    @model_validator(mode="after")
    def _fits(self) -> "ModbusRtuSensor":
        if self.address + MODBUS_DATA_TYPES[self.data_type][0] - 1 > 65535:
            raise fail(f"address {self.address} leaves no room for a {self.data_type} (two registers)")
        return self


# ---- air-quality serial sensors and cell-tower counts ----------------------------------
# Entries with the same port are one device (an SDS011 gives pm25 and pm10 on one line);
# their device settings must agree (checked across sections). Bus defaults come from
# each driver's declaration in edge/drivers.

def _stable_port(value: object) -> str:
    port = _serial_port(value)
    if re.fullmatch(r"/dev/tty(USB|ACM)[0-9]+", port):
        raise fail(f"{port} changes with the order devices are plugged in: use the sensor's stable link under "
                   "/dev/serial/by-id/ (list them with: ls -l /dev/serial/by-id/)")
    return port


_BAUDRATES = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)


class _AirSerialSensor(SensorBase):
    port: Annotated[str, BeforeValidator(_stable_port)]  # e.g. /dev/serial/by-id/usb-1a86_USB_Serial-if00-port0
    quantities: ClassVar[tuple[str, ...]] = ()  # what this driver can give

    @field_validator("quantity")
    @classmethod
    def _driver_quantity(cls, quantity: str) -> str:
        if cls.quantities and quantity not in cls.quantities:
            raise fail(f"this sensor gives {', '.join(cls.quantities)}; got {quantity!r}",
                       suggest(quantity, cls.quantities))
        return quantity


class _FanPmSensor(_AirSerialSensor):
    """A fan-driven optical PM sensor, queried every interval_s while its fan runs."""

    interval_s: number(1, 3600) = 10.0  # seconds between queries while awake
    work_s: number(0, 86400) = 0.0  # seconds the fan runs per cycle, warm-up included
    sleep_s: number(0, 86400) = 0.0  # seconds the fan sleeps per cycle; 0 = it never sleeps
    humidity_sensor: Identifier | None = None  # pm25_corrected: the humidity sensor (a line node) to correct with
    correction: Annotated[str, BeforeValidator(_one_of(PM_CORRECTIONS))] = DEFAULT_PM_CORRECTION

    @model_validator(mode="after")
    def _consistent(self) -> "_FanPmSensor":
        if self.quantity == "pm25_corrected" and self.humidity_sensor is None:
            raise fail("a pm25_corrected sensor needs humidity_sensor: the id of a humidity sensor "
                       "(the US EPA correction uses relative humidity)")
        if self.quantity != "pm25_corrected" and self.humidity_sensor is not None:
            raise fail("humidity_sensor is only used by a pm25_corrected sensor")
        if self.sleep_s > 0 and self.work_s <= self.warmup_s:  # type: ignore[attr-defined]
            raise fail(f"work_s ({self.work_s:g} s) must be longer than warmup_s ({self.warmup_s:g} s) "  # type: ignore[attr-defined]
                       "when the fan sleeps, or no reading is ever taken")
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
        raise fail(f"must be a whole number from {CELL_MIN_K} to 1000, got {describe(value)}: smaller counts "
                   "identify people (statistical offices suppress counts below about 11)")
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
            raise fail("give the zone's cells either as a cells list or as a cell_map file with a zone, not "
                       + ("both" if has_cells else "neither"))
        if has_map and zone is None:
            raise fail("a cell_map needs zone: the zone of this gateway in that file")
        if has_cells and zone is not None:
            raise fail("zone picks cells from a cell_map; with a cells list, leave it out")
        return zone


# ---- models --------------------------------------------------------------------------

class ModelBase(Section):
    name: Identifier


def _sign(value: object) -> int:
    if isinstance(value, bool) or value not in (1, -1):
        raise fail(f"must be 1 (flow into the zone) or -1 (flow out of the zone), got {describe(value)}")
    return int(value)  # type: ignore[call-overload]


class InflowTerm(Section):
    """One metered pipe of a zone's inflow: +1 into the zone, -1 out of it."""

    sensor: Identifier
    sign: Annotated[int, BeforeValidator(_sign)] = 1


@model_type
class MnfModel(ModelBase):
    """Minimum Night Flow leak detector over one zone's metered inflow."""

    type: Literal["mnf"]
    zone_inflow: list[InflowTerm] = Field(min_length=1)
    night_start: ClockTime = "02:00"  # local time (the config's timezone)
    # validate_default: the default end must still come after a start given in the file
    night_end: ClockTime = Field(default="04:00", validate_default=True)
    threshold: number(0, 5, low_open=True) = 0.2  # relative rise over the baseline
    history_days: whole(2, 60) = 10
    raise_after: whole(1, 7) = 1
    clear_after: whole(1, 14) = 2

    @field_validator("night_end")
    @classmethod
    def _after_start(cls, end: str, info: ValidationInfo) -> str:
        start = info.data.get("night_start")
        if start is not None and end <= start:
            raise fail(f"must be after night_start ({start}), got {end!r} "
                       "(a night window may not cross midnight)")
        return end

    def detector_params(self, timezone: str) -> dict[str, Any]:
        """Keyword arguments for the night-flow detector, in its own parameter names."""
        return {
            "zone_inflow": [(term.sensor, term.sign) for term in self.zone_inflow],
            "night_start": self.night_start, "night_end": self.night_end,
            "threshold": self.threshold, "history_days": self.history_days,
            "raise_after": self.raise_after, "clear_after": self.clear_after,
            "timezone": timezone,
        }


@model_type
class EaqiModel(ModelBase):
    """European Air Quality Index: hourly band per pollutant sensor and for the station, alerts with persistence."""

    type: Literal["eaqi"]
    sensors: list[Identifier] = Field(min_length=1)  # pm25, pm25_corrected, pm10, no2 or o3 sensors
    alert_from: Annotated[str, BeforeValidator(_one_of(EAQI_BANDS))] = "poor"  # the band that raises an alert
    raise_after: whole(1, 48) = 2  # hours in a row at a higher band before it counts
    clear_after: whole(1, 48) = 3  # hours in a row at a lower band before it counts

    def detector_params(self, quantities: dict[str, str]) -> dict[str, Any]:
        """Keyword arguments for the AQI detector; ``quantities`` maps sensor id -> quantity."""
        return {"sensors": [(s, quantities[s]) for s in self.sensors], "alert_from": self.alert_from,
                "raise_after": self.raise_after, "clear_after": self.clear_after}


# Air-site models (edge/detectors/air_models.py, edge/detectors/drift.py, docs/air-models.md).
_AIR_INPUTS = ("pm25", "pm10", "no2", "temperature", "humidity", "wind_speed", "cell_count")
_BACKENDS = ("auto", "onnxruntime", "litert", "numpy")


class AirInputs(Section):
    """Which sensor feeds each input of an air model; a sensor must measure that input's quantity."""

    pm25: Identifier | None = None
    pm10: Identifier | None = None
    no2: Identifier | None = None
    temperature: Identifier | None = None
    humidity: Identifier | None = None
    wind_speed: Identifier | None = None
    cell_count: Identifier | None = None

    def given(self) -> dict[str, str]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class _AirModel(ModelBase):
    model_dir: FilePath  # the exported model's folder (manifest.json inside), relative to this file
    backend: Annotated[str, BeforeValidator(_one_of(_BACKENDS))] = "auto"  # auto: the fastest, measured
    sensors: AirInputs
    needs: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="after")
    def _inputs(self) -> "_AirModel":
        missing = [k for k in self.needs if getattr(self.sensors, k) is None]
        if missing:
            raise fail(f"sensors must name a sensor for {', '.join(self.needs)} (missing: {', '.join(missing)})")
        return self

    def detector_params(self, config: "GatewayConfig") -> dict[str, Any]:
        return {"sensors": self.sensors.given(), "model_dir": config.resolve_path(self.model_dir),
                "backend": self.backend, "timezone": config.timezone}


@model_type
class AirPatternModel(_AirModel):
    """Hourly air pattern: normal, traffic_peak, regional_episode or local_source."""

    type: Literal["air_pattern"]
    needs: ClassVar[tuple[str, ...]] = ("pm25", "pm10", "no2", "temperature", "humidity", "cell_count")


@model_type
class SensorFaultModel(_AirModel):
    """Hourly fault flag per sensor (stuck, spike, dropout, fan_failure) with alerts for lasting faults."""

    type: Literal["sensor_fault"]
    raise_after: whole(1, 48) = 2  # faulty hours in a row before an alert
    clear_after: whole(1, 48) = 2  # healthy hours in a row before it clears

    @model_validator(mode="after")
    def _judged(self) -> "SensorFaultModel":
        given = self.sensors.given()
        if not given or set(given) - {"pm25", "pm10", "no2", "temperature", "humidity"}:
            raise fail("sensors may name pm25, pm10, no2, temperature and humidity sensors (at least one); "
                       "the fault model does not judge wind_speed or cell_count")
        return self

    def detector_params(self, config: "GatewayConfig") -> dict[str, Any]:
        return {**super().detector_params(config), "raise_after": self.raise_after, "clear_after": self.clear_after}


@model_type
class No2VirtualModel(_AirModel):
    """NO2 estimated from phones per antenna and weather, for a zone without an NO2 sensor."""

    type: Literal["no2_virtual"]
    needs: ClassVar[tuple[str, ...]] = ("cell_count", "wind_speed", "temperature", "humidity")


@model_type
class CalibrationDriftModel(ModelBase):
    """Daily Page-Hinkley test of a sensor's calibration: alert 'recalibration_needed' when it goes stale."""

    type: Literal["calibration_drift"]
    sensor: Identifier
    reference: Identifier | None = None  # a co-located reference sensor of the same quantity
    estimate_from: Identifier | None = None  # or the name of a no2_virtual model of this config
    calibration_days: whole(3, 90) = 21
    smoothing_days: whole(1, 30) = 7
    delta: number(0) = 1.5  # daily shift (in calibration spreads) tolerated without counting
    threshold: number(0, low_open=True) = 15.0
    min_sigma: number(0, low_open=True) = 3.0  # smallest calibration spread believed, in the sensor's unit

    @model_validator(mode="after")
    def _one_reference(self) -> "CalibrationDriftModel":
        if self.reference is not None and self.estimate_from is not None:
            raise fail("give reference or estimate_from, not both")
        return self

    def detector_params(self) -> dict[str, Any]:
        return {"sensor": self.sensor, "reference": self.reference, "calibration_days": self.calibration_days,
                "smoothing_days": self.smoothing_days, "delta": self.delta, "threshold": self.threshold,
                "min_sigma": self.min_sigma}


class LeakInput(Section):
    """One input of a learned leak model: this gateway's sensor and the network element it measures."""

    sensor: Identifier
    element: Text  # the link or node name in the network the model was trained on, e.g. "10"


@model_type
class LearnedLeakModel(ModelBase):
    """Learned leak detector on a zone's meters and pressures (edge/detectors/leak_model.py, docs/leak-detection.md)."""

    type: Literal["learned_leak"]
    model_dir: FilePath  # the exported model's folder (manifest.json inside), relative to this file
    backend: Annotated[str, BeforeValidator(_one_of(_BACKENDS))] = "auto"  # auto: the fastest, measured
    # Empty: every sensor feeds the model input named by its replay column (or its id).
    inputs: list[LeakInput] = Field(default_factory=list)

    def detector_params(self, config: "GatewayConfig") -> dict[str, Any]:
        sensors = {s.id: s for s in config.sensors}
        if self.inputs:
            unknown = [i.sensor for i in self.inputs if i.sensor not in sensors]
            if unknown:
                raise ValueError(f"model {self.name}: input sensor(s) {', '.join(unknown)} not in sensors")
            inputs = {i.sensor: (i.element, sensors[i.sensor].quantity) for i in self.inputs}
        else:
            inputs = {s.id: (getattr(s, "column", None) or s.id, s.quantity) for s in config.sensors}
        return {"model_dir": config.resolve_path(self.model_dir), "backend": self.backend, "inputs": inputs}


def _tagged_union(registry: dict[str, type[BaseModel]], key: str) -> Any:
    return Annotated[Union[tuple(registry.values())], Field(discriminator=key)]  # noqa: UP007


SensorConfig = _tagged_union(SENSOR_DRIVERS, "driver")
ModelConfig = _tagged_union(MODEL_TYPES, "type")


# ---- sources, mqtt, storage ----------------------------------------------------------

class ReplaySource(Section):
    file: FilePath  # relative to the config file's folder
    speed: number(0) = 0.0  # 0 = as fast as possible, N = N times real time


class SourcesConfig(Section):
    replay: ReplaySource | None = None


def _private_file(path: Path | None, info: ValidationInfo) -> Path | None:
    """Refuse a secret file (password, private key) that other users can read; a missing one is
    left to the gateway's start (a config is often checked on a workstation, not on the gateway)."""
    if path is None:
        return None
    full = Path(os.path.expanduser(path))
    config_path = (info.context or {}).get(CONTEXT_PATH)
    if not full.is_absolute() and config_path is not None:
        full = Path(config_path).absolute().parent / full
    problem = loose_permissions(full)
    if problem:
        raise fail(problem)
    return path


class TlsConfig(Section):
    ca_file: FilePath | None = None
    cert_file: FilePath | None = None
    key_file: FilePath | None = Field(default=None, validate_default=True)  # checked against cert_file

    @field_validator("key_file")
    @classmethod
    def _pair(cls, key_file: Path | None, info: ValidationInfo) -> Path | None:
        if (key_file is None) != (info.data.get("cert_file") is None) and "cert_file" in info.data:
            raise fail("cert_file and key_file go together: give both or neither")
        return key_file

    @field_validator("key_file")
    @classmethod
    def _key_file_private(cls, key_file: Path | None, info: ValidationInfo) -> Path | None:
        return _private_file(key_file, info)


class MqttConfig(Section):
    refused_keys: ClassVar[dict[str, str]] = {
        "password": "a password must not be written in the config file: put it in an environment "
                    "variable named by password_env, or in a file named by password_file",
    }

    host: Annotated[str, BeforeValidator(_host)]
    port: whole(1, 65535) = 1883
    client_id: Annotated[str, BeforeValidator(_client_id)] | None = None  # filled: frugalsense-<gateway>
    keepalive_s: whole(5, 3600) = 30
    topic_prefix: Annotated[str, BeforeValidator(_topic_prefix)] = "frugalsense"
    readings_batch: whole(1, 1000) = 50
    username: Text | None = None
    password_env: Annotated[str, BeforeValidator(_env_var)] | None = None
    password_file: FilePath | None = None
    tls: TlsConfig | None = None

    @field_validator("password_file")
    @classmethod
    def _one_password(cls, password_file: Path | None, info: ValidationInfo) -> Path | None:
        if password_file is not None and info.data.get("password_env") is not None:
            raise fail("give password_env or password_file, not both")
        return password_file

    @field_validator("password_file")
    @classmethod
    def _password_file_private(cls, password_file: Path | None, info: ValidationInfo) -> Path | None:
        return _private_file(password_file, info)


class StorageConfig(Section):
    data_dir: FilePath = Path("/var/lib/frugalsense")  # outbox and detector state
    outbox_max_mb: whole(1, 4096) = 64
    # Readings and status older than this are dropped from the outbox (alerts and detections
    # never are): past a database's retention they would be dropped there anyway.
    outbox_max_age_days: whole(1, 3650) = 30


def _flag(value: object) -> bool:
    if not isinstance(value, bool):
        raise fail(f"must be true or false, got {describe(value)}")
    return value


class HomeAssistantConfig(Section):
    """Home Assistant MQTT discovery: sensors, leak detections and the gateway appear in Home Assistant."""

    enabled: Annotated[bool, BeforeValidator(_flag)] = False
    prefix: Annotated[str, BeforeValidator(_topic_prefix)] = "homeassistant"  # Home Assistant's discovery_prefix


class ModelUpdatesConfig(Section):
    """Signed model updates over MQTT (docs/model-updates.md): verified, swapped, rolled back if they fail."""

    enabled: Annotated[bool, BeforeValidator(_flag)] = False
    # Ed25519 public key (PEM) of the fleet's model-signing key: frugalsense model keygen
    public_key_file: FilePath | None = Field(default=None, validate_default=True)
    allow_downgrade: Annotated[bool, BeforeValidator(_flag)] = False  # accept a version not newer than the one in service
    models: list[Identifier] = Field(default_factory=list)  # model names accepted before one is installed

    @field_validator("public_key_file")
    @classmethod
    def _key_when_enabled(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        if path is None and info.data.get("enabled"):
            raise fail("model updates need the public key that signs them: set public_key_file "
                       "(make the key pair with: frugalsense model keygen)")
        return path


# ---- the whole file ------------------------------------------------------------------

class GatewayConfig(Section):
    """One gateway: where it is, what it reads, what it runs, where it sends."""

    site: Identifier
    gateway: Identifier
    timezone: TimeZoneName = "UTC"  # night windows are in this local time
    sensors: list[SensorConfig] = Field(min_length=1)
    sources: SourcesConfig = Field(default_factory=SourcesConfig)
    models: list[ModelConfig] = Field(default_factory=list)
    mqtt: MqttConfig
    storage: StorageConfig = Field(default_factory=StorageConfig)
    homeassistant: HomeAssistantConfig = Field(default_factory=HomeAssistantConfig)
    model_updates: ModelUpdatesConfig = Field(default_factory=ModelUpdatesConfig)

    _path: Path | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _finish(self, info: ValidationInfo) -> "GatewayConfig":
        context = info.context or {}
        if self.mqtt.client_id is None:
            self.mqtt.client_id = f"frugalsense-{self.gateway}"
        if context.get(CONTEXT_PATH) is not None:
            self._path = Path(context[CONTEXT_PATH]).absolute()
        if context.get(CONTEXT_CROSS_CHECKS, True):
            issues = cross_section_issues(self.model_dump())
            if issues:
                raise fail(f"{format_path(issues[0].loc)}: {issues[0].message}", issues[0].suggestion)
        return self

    @property
    def path(self) -> Path | None:
        """The config file this was loaded from (absolute), or None if built in code."""
        return self._path

    def resolve_path(self, path: str | os.PathLike) -> Path:
        """A path from the config, relative ones taken from the config file's folder.

        >>> cfg = GatewayConfig.model_validate(
        ...     {"site": "s", "gateway": "g", "mqtt": {"host": "h"},
        ...      "sensors": [{"id": "F", "quantity": "flow", "driver": "replay"}],
        ...      "sources": {"replay": {"file": "a.npz"}}},
        ...     context={"path": "/etc/frugalsense/gw.yaml"})
        >>> cfg.resolve_path("../data/a.npz"), cfg.resolve_path("/abs/b.npz")
        (PosixPath('/etc/data/a.npz'), PosixPath('/abs/b.npz'))
        """
        path = Path(path).expanduser()
        if path.is_absolute():
            return path
        base = self._path.parent if self._path is not None else Path.cwd()
        return Path(os.path.normpath(base / path))

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


# ---- checks across sections ----------------------------------------------------------

class CrossIssue(NamedTuple):
    loc: tuple[str | int, ...]
    message: str
    suggestion: str | None = None


def _entries(data: dict, key: str) -> list[tuple[int, dict]]:
    items = data.get(key)
    return [(i, item) for i, item in enumerate(items) if isinstance(item, dict)] if isinstance(items, list) else []


def _duplicates(data: dict, section: str, key: str, what: str,
                where: Callable[[tuple], str]) -> list[CrossIssue]:
    issues, first = [], {}
    for i, item in _entries(data, section):
        value = item.get(key)
        if not isinstance(value, str):
            continue
        if value in first:
            issues.append(CrossIssue((section, i, key), f"{what} {value!r} is already used ({where(first[value])})"))
        else:
            first[value] = (section, i, key)
    return issues


# Settings every sensor on one serial port must agree on: they share one line.
_LINE_KEYS = ("baudrate", "bytesize", "parity", "stopbits", "timeout_s", "poll_s")


def _shared_line_issues(data: dict, where: Callable[[tuple], str]) -> list[CrossIssue]:
    issues, first = [], {}
    for i, item in _entries(data, "sensors"):
        if item.get("driver") != "modbus_rtu" or not isinstance(item.get("port"), str):
            continue
        port = item["port"]
        if port not in first:
            first[port] = (i, item)
            continue
        j, other = first[port]
        defaults = ModbusRtuSensor.model_fields
        for key in _LINE_KEYS:
            mine, theirs = item.get(key, defaults[key].default), other.get(key, defaults[key].default)
            if mine != theirs:
                issues.append(CrossIssue(("sensors", i, key if key in item else "port"),
                                         f"{key} {describe(mine)} differs from {describe(theirs)} of the sensor on the "
                                         f"same port ({where(('sensors', j, 'port'))}): one line has one setting"))
    return issues


# Settings every entry of one air sensor device must agree on: they are one device.
_AIR_SERIAL = {"sds011": Sds011Sensor, "pms5003": Pms5003Sensor, "line": LineSensor}
_AIR_DEVICE_KEYS = ("driver", "baudrate", "interval_s", "work_s", "sleep_s", "warmup_s")


def _device_setting(item: dict, key: str) -> object:
    cls = _AIR_SERIAL.get(item.get("driver"))
    if key in item or cls is None:
        return item.get(key)
    field = cls.model_fields.get(key)
    return field.default if field is not None else None


def _air_issues(data: dict, sensors: dict[str, dict], where: Callable[[tuple], str]) -> list[CrossIssue]:
    issues, first = [], {}
    modbus_ports = {item.get("port") for _, item in _entries(data, "sensors") if item.get("driver") == "modbus_rtu"}
    for i, item in _entries(data, "sensors"):
        driver, port = item.get("driver"), item.get("port")
        if driver not in _AIR_SERIAL or not isinstance(port, str):
            continue
        if port in modbus_ports:
            issues.append(CrossIssue(("sensors", i, "port"), f"port {port} is also a Modbus line: one port, one device"))
        if port not in first:
            first[port] = (i, item)
        else:
            j, other = first[port]
            for key in _AIR_DEVICE_KEYS:
                mine, theirs = _device_setting(item, key), _device_setting(other, key)
                if mine != theirs:  # a different driver makes every other setting differ too: say it once
                    issues.append(CrossIssue(("sensors", i, key if key in item else "port"),
                                             f"{key} {describe(mine)} differs from {describe(theirs)} of the sensor on "
                                             f"the same port ({where(('sensors', j, 'port'))}): one port is one device"))
                    if key == "driver":
                        break
        humidity = item.get("humidity_sensor")
        if isinstance(humidity, str):
            loc = ("sensors", i, "humidity_sensor")
            target = sensors.get(humidity)
            if target is None:
                issues.append(CrossIssue(loc, f"no sensor with id {humidity!r} in sensors", suggest(humidity, sensors)))
            elif target.get("quantity") != "humidity" or target.get("driver") != "line":
                issues.append(CrossIssue(loc, f"sensor {humidity!r} is not a humidity sensor of a line node "
                                              "(driver: line, quantity: humidity)"))
    for m, model in _entries(data, "models"):
        if model.get("type") != "eaqi" or not isinstance(model.get("sensors"), list):
            continue
        for s, name in enumerate(model["sensors"]):
            if not isinstance(name, str):
                continue
            loc = ("models", m, "sensors", s)
            if name not in sensors:
                issues.append(CrossIssue(loc, f"no sensor with id {name!r} in sensors", suggest(name, sensors)))
            elif (quantity := sensors[name].get("quantity")) in QUANTITY_UNITS and quantity not in POLLUTANT_OF_QUANTITY:
                issues.append(CrossIssue(loc, f"sensor {name!r} measures {quantity}; the EAQI covers "
                                              f"{', '.join(POLLUTANT_OF_QUANTITY)}"))
    return issues


def _air_model_issues(data: dict, sensors: dict[str, dict]) -> list[CrossIssue]:
    """Air-model inputs name existing sensors of the right quantity; a drift estimate names a no2_virtual model."""
    issues = []
    models = {item.get("name"): item for _, item in _entries(data, "models") if isinstance(item.get("name"), str)}

    def check(loc, name, quantity):
        if name not in sensors:
            issues.append(CrossIssue(loc, f"no sensor with id {name!r} in sensors", suggest(name, sensors)))
        elif (got := sensors[name].get("quantity")) in QUANTITY_UNITS and got != quantity:
            issues.append(CrossIssue(loc, f"sensor {name!r} measures {got}; this input needs {quantity}"))

    for m, model in _entries(data, "models"):
        kind = model.get("type")
        if kind in ("air_pattern", "sensor_fault", "no2_virtual") and isinstance(model.get("sensors"), dict):
            for role, name in model["sensors"].items():
                if role in _AIR_INPUTS and isinstance(name, str):
                    check(("models", m, "sensors", role), name, role)
        if kind != "calibration_drift" or not isinstance(model.get("sensor"), str):
            continue
        if model["sensor"] not in sensors:
            check(("models", m, "sensor"), model["sensor"], None)
        quantity = sensors.get(model["sensor"], {}).get("quantity")
        if isinstance(model.get("reference"), str) and quantity in QUANTITY_UNITS:
            check(("models", m, "reference"), model["reference"], quantity)
        estimate = model.get("estimate_from")
        if isinstance(estimate, str) and (models.get(estimate) or {}).get("type") != "no2_virtual":
            issues.append(CrossIssue(("models", m, "estimate_from"),
                                     f"no model of type no2_virtual named {estimate!r} in models",
                                     suggest(estimate, [n for n, x in models.items() if x.get("type") == "no2_virtual"])))
    return issues


def cross_section_issues(data: dict, where: Callable[[tuple], str] = format_path) -> list[CrossIssue]:
    """Checks that span sections, on plain (possibly invalid) config data.

    Parts that are malformed are skipped: their own checks already report them.
    ``where(loc)`` says where another key is, e.g. ``"line 12"``.
    """
    issues = _duplicates(data, "sensors", "id", "sensor id", where)
    issues += _duplicates(data, "models", "name", "model name", where)
    sensors: dict[str, dict] = {}
    for _, item in _entries(data, "sensors"):
        if isinstance(item.get("id"), str):
            sensors.setdefault(item["id"], item)  # a duplicate is reported above; the first one counts

    sources = data.get("sources")
    replay_users = [i for i, item in _entries(data, "sensors") if item.get("driver") == "replay"]
    if replay_users and not (isinstance(sources, dict) and sources.get("replay")):
        more = f" (the first of {len(replay_users)} replay sensors)" if len(replay_users) > 1 else ""
        issues.append(CrossIssue(("sensors", replay_users[0], "driver"),
                                 "driver 'replay' needs a sources.replay section with the dataset file, "
                                 f"and there is none{more}"))

    issues += _shared_line_issues(data, where)
    issues += _air_issues(data, sensors, where)
    issues += _air_model_issues(data, sensors)

    for m, model in _entries(data, "models"):
        seen: set[str] = set()
        for t, term in _entries(model, "zone_inflow"):
            name = term.get("sensor")
            if not isinstance(name, str):
                continue
            loc = ("models", m, "zone_inflow", t, "sensor")
            if name not in sensors:
                issues.append(CrossIssue(loc, f"no sensor with id {name!r} in sensors", suggest(name, sensors)))
            elif (quantity := sensors[name].get("quantity")) in QUANTITY_UNITS and quantity != "flow":
                issues.append(CrossIssue(loc, f"sensor {name!r} measures {quantity}; "
                                              "a zone inflow must be a flow sensor"))
            elif name in seen:
                issues.append(CrossIssue(loc, f"sensor {name!r} is already in this zone_inflow"))
            seen.add(name)
    return issues
