"""Sensor entries: what every sensor has, and the replay and Modbus RTU drivers."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, ValidationInfo, field_validator, model_validator

from edge.contracts import QUANTITY_UNITS
from edge.drivers.modbus_rtu import BUS as MODBUS_BUS
from edge.drivers.modbus_rtu import DATA_TYPES as MODBUS_DATA_TYPES
from edge.drivers.modbus_rtu import UNIT_FACTORS as MODBUS_UNIT_FACTORS
from gateway.config.schema.base import Section, tag_of
from gateway.config.schema.types import (
    Identifier,
    Quantity,
    SilentMinutes,
    Text,
    _one_of,
    _text,
    describe,
    fail,
    number,
    suggest,
    whole,
)


class SensorBase(Section):
    """What every sensor has, whatever its driver."""

    id: Identifier
    quantity: Quantity
    unit: Text | None = None  # filled with the canonical unit of the quantity
    # Minutes without a reading before this sensor is said silent; overrides alerts.silent_after_min (0: never).
    silent_after_min: SilentMinutes | None = None

    @field_validator("unit")
    @classmethod
    def _canonical_unit(cls, unit: str | None, info: ValidationInfo) -> str | None:
        quantity = info.data.get("quantity")
        if unit is not None and quantity is not None and unit != QUANTITY_UNITS[quantity]:
            raise fail(f"{unit!r} is not the unit of {quantity}: use {QUANTITY_UNITS[quantity]!r} (or leave unit out)")
        return unit

    @classmethod
    def quiet_s(cls, settings: dict) -> float | None:
        """The longest a working sensor of this driver stays without a reading, in seconds (None: not known).

        ``settings`` are the entry's keys with the driver's defaults filled in, as numbers; used to refuse a
        ``silent_after_min`` that would call a working sensor silent (gateway/config/schema/cross_checks.py).
        """
        return None

    @model_validator(mode="after")
    def _fill_unit(self) -> SensorBase:
        if self.unit is None:
            self.unit = QUANTITY_UNITS[self.quantity]
        return self


#: driver name -> its sensor class; filled by ``@sensor_driver``.
SENSOR_DRIVERS: dict[str, type[SensorBase]] = {}


def sensor_driver(cls: type[SensorBase]) -> type[SensorBase]:
    """Register a sensor class under its ``driver`` tag."""
    SENSOR_DRIVERS[tag_of(cls, "driver")] = cls
    return cls


@sensor_driver
class ReplaySensor(SensorBase):
    """A sensor replayed from a recorded or simulated dataset (``sources.replay``)."""

    driver: Literal["replay"]
    column: Text | None = None  # element name in the dataset; filled with the sensor id

    @model_validator(mode="after")
    def _fill_column(self) -> ReplaySensor:
        if self.column is None:
            self.column = self.id
        return self


def _serial_port(value: object) -> str:
    text = _text(value)
    if not text.startswith("/dev/"):
        raise fail(
            f"must be a serial device path, preferably under /dev/serial/by-id/ (stable across reboots), got {text!r}"
        )
    return text


def _finite(nonzero: bool) -> Any:
    def check(value: object) -> float:
        ok = (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and value == value
            and abs(value) != float("inf")
            and not (nonzero and value == 0)
        )
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

    @classmethod
    def quiet_s(cls, settings: dict) -> float | None:
        return settings["poll_s"] + settings["timeout_s"]  # one poll of every sensor on the port per poll_s

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
            raise fail(
                f"{quantity} cannot be converted from {unit!r}: use one of {', '.join(units)}", suggest(unit, units)
            )
        return unit

    @model_validator(mode="after")
    def _fits(self) -> ModbusRtuSensor:
        if self.address + MODBUS_DATA_TYPES[self.data_type][0] - 1 > 65535:
            raise fail(f"address {self.address} leaves no room for a {self.data_type} (two registers)")
        return self
