"""Modbus RTU pressure and flow transmitters: register maps, value decoding, unit conversion, bus defaults.

A transmitter keeps its measurement in one or two 16-bit registers, read with
function code 3 (holding registers) or 4 (input registers). What the registers mean
is on the datasheet, so it lives in the gateway config, one sensor per register map::

    address: 0           first register, 0-based as on the wire
    function: 3          3 = holding, 4 = input
    data_type: float32   int16, uint16, int32, uint32 or float32
    word_order: big      for 32-bit values: "big" = high word first, "little" = low word first
    scale: 1.0           value = raw * scale + offset, in register_unit
    offset: 0.0
    register_unit: bar   converted here to the contract's unit (m head for pressure, L/s for flow)

The bus I/O is pymodbus' (it frames requests and checks each reply's CRC); this module
is pure so it can be tested without a line.

>>> point = RegisterPoint(device_id=1, function=3, address=0, data_type="float32",
...                       word_order="little", scale=1.0, offset=0.0, quantity="pressure", register_unit="bar")
>>> point.count
2
>>> regs = encode_value(2.5, "float32", "little")   # what the device would hold for 2.5 bar
>>> regs
[0, 16416]
>>> round(point.value(regs), 3)                     # metres of water head
25.493
>>> RegisterPoint(1, 4, 10, "int16", "big", 0.01, 0.0, "flow", "m3/h").value([0xFF38])  # -200 * 0.01 m3/h
-0.5555555555555556
>>> to_canonical("pressure", "psi", 1.0)
Traceback (most recent call last):
...
edge.drivers.modbus_rtu.RegisterMapError: pressure cannot be given in 'psi': use one of m, bar, mbar, kPa
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

from edge.drivers.base import SerialBus

# The Modbus over serial line spec (V1.02, 2.5.1) makes 19200 baud, even parity the
# default; many transmitters ship at 9600: the config says which.
BUS = SerialBus(baudrate=19200, bytesize=8, parity="E", stopbits=1)

HOLDING, INPUT = 3, 4
FUNCTIONS = {HOLDING: "holding registers", INPUT: "input registers"}
# data type -> (registers, struct format of the big-endian bytes)
DATA_TYPES: dict[str, tuple[int, str]] = {
    "int16": (1, ">h"),
    "uint16": (1, ">H"),
    "int32": (2, ">i"),
    "uint32": (2, ">I"),
    "float32": (2, ">f"),
}
WORD_ORDERS = ("big", "little")
MAX_DEVICE_ID = 247  # 248-255 are reserved, 0 is broadcast (no reply)
MAX_ADDRESS = 65535

# quantity -> {unit a transmitter may report in -> factor to the contract's unit}.
# Pressure head in metres of fresh water: 1 bar = 100 kPa / (1000 kg/m3 * 9.80665 m/s2).
_M_PER_KPA = 1 / 9.80665
UNIT_FACTORS: dict[str, dict[str, float]] = {
    "pressure": {"m": 1.0, "bar": 100 * _M_PER_KPA, "mbar": 0.1 * _M_PER_KPA, "kPa": _M_PER_KPA},
    "flow": {"L/s": 1.0, "m3/h": 1000 / 3600, "L/min": 1 / 60, "m3/s": 1000.0},
}


class RegisterMapError(ValueError):
    """A register map a transmitter cannot have; the message says which key and why."""


def to_canonical(quantity: str, unit: str, value: float) -> float:
    """``value`` in ``unit`` converted to the contract's unit of ``quantity``."""
    units = UNIT_FACTORS.get(quantity)
    if units is None:
        raise RegisterMapError(f"Modbus transmitters here measure {', '.join(UNIT_FACTORS)}, not {quantity}")
    if unit not in units:
        raise RegisterMapError(f"{quantity} cannot be given in {unit!r}: use one of {', '.join(units)}")
    return value * units[unit]


def register_count(data_type: str) -> int:
    """How many 16-bit registers a value of ``data_type`` occupies."""
    if data_type not in DATA_TYPES:
        raise RegisterMapError(f"data_type {data_type!r} is not one of {', '.join(DATA_TYPES)}")
    return DATA_TYPES[data_type][0]


def decode_registers(registers: list[int], data_type: str, word_order: str = "big") -> float:
    """The number held in ``registers`` (16-bit words as read off the bus).

    >>> decode_registers([0x0001, 0x0002], "uint32", "big"), decode_registers([0x0001, 0x0002], "uint32", "little")
    (65538.0, 131073.0)
    """
    count, fmt = register_count(data_type), DATA_TYPES[data_type][1]
    if word_order not in WORD_ORDERS:
        raise RegisterMapError(f"word_order {word_order!r} is not one of {', '.join(WORD_ORDERS)}")
    if len(registers) != count or not all(isinstance(r, int) and 0 <= r <= 0xFFFF for r in registers):
        raise RegisterMapError(f"{data_type} needs {count} registers of 0..65535, got {registers!r}")
    words = list(registers) if word_order == "big" else list(reversed(registers))
    return float(struct.unpack(fmt, struct.pack(f">{count}H", *words))[0])


def encode_value(value: float, data_type: str, word_order: str = "big") -> list[int]:
    """The registers a device holds for ``value`` (the inverse of ``decode_registers``; for simulators)."""
    count, fmt = register_count(data_type), DATA_TYPES[data_type][1]
    raw = value if data_type == "float32" else int(round(value))
    words = list(struct.unpack(f">{count}H", struct.pack(fmt, raw)))
    return words if word_order == "big" else list(reversed(words))


@dataclass(frozen=True, slots=True)
class RegisterPoint:
    """Where one measurement is on the bus and how its registers become a value in the contract's unit."""

    device_id: int
    function: int
    address: int
    data_type: str
    word_order: str
    scale: float
    offset: float
    quantity: str
    register_unit: str

    def __post_init__(self) -> None:
        if not 1 <= self.device_id <= MAX_DEVICE_ID:
            raise RegisterMapError(f"device_id must be 1..{MAX_DEVICE_ID}, got {self.device_id}")
        if self.function not in FUNCTIONS:
            raise RegisterMapError(
                f"function must be 3 (holding registers) or 4 (input registers), got {self.function}"
            )
        if not 0 <= self.address <= MAX_ADDRESS - register_count(self.data_type) + 1:
            raise RegisterMapError(f"register {self.address} is outside 0..{MAX_ADDRESS}")
        if self.word_order not in WORD_ORDERS:
            raise RegisterMapError(f"word_order {self.word_order!r} is not one of {', '.join(WORD_ORDERS)}")
        to_canonical(self.quantity, self.register_unit, 0.0)  # refuses a unit it cannot convert

    @property
    def count(self) -> int:
        return register_count(self.data_type)

    def value(self, registers: list[int]) -> float:
        """The measurement in the contract's unit; NaN if the device holds a non-finite float (its fault flag)."""
        raw = decode_registers(registers, self.data_type, self.word_order)
        if not math.isfinite(raw):
            return math.nan
        return to_canonical(self.quantity, self.register_unit, raw * self.scale + self.offset)

    def describe(self) -> str:
        """Where the value is, as a technician checks it against the datasheet.

        >>> RegisterPoint(2, 4, 30, "float32", "big", 1.0, 0.0, "flow", "L/s").describe()
        'device 2, input registers 30-31 (float32, big word order)'
        """
        last = self.address + self.count - 1
        span = f"{self.address}-{last}" if last != self.address else f"{self.address}"
        order = f", {self.word_order} word order" if self.count > 1 else ""
        return f"device {self.device_id}, {FUNCTIONS[self.function]} {span} ({self.data_type}{order})"
