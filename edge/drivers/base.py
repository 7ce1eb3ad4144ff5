"""What every serial sensor driver declares: its bus, its parser, its decoder, and the commands it understands.

A driver module (``sds011``, ``pms5003``, ``line_node``) holds two small pure
functions (frame check, value decoding) and one ``DRIVER`` of this shape; the serial
source (``edge/sources/serial_source.py``) is the only loop, shared by all of them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from edge.drivers.framing import Frame, Rejection


@dataclass(frozen=True, slots=True)
class SerialBus:
    """Line settings a device needs (pyserial names): the config's defaults come from here."""

    baudrate: int
    bytesize: int = 8
    parity: str = "N"
    stopbits: float = 1

    def describe(self) -> str:
        """The settings as a technician reads them off a datasheet.

        >>> SerialBus(9600).describe()
        '9600 8N1'
        """
        stop = int(self.stopbits) if float(self.stopbits).is_integer() else self.stopbits
        return f"{self.baudrate} {self.bytesize}{self.parity}{stop}"


@dataclass(frozen=True, slots=True)
class Sample:
    """Values decoded from one frame, by field name.

    ``fault`` says why the device's own values are not to be trusted.
    """

    values: dict[str, float]
    fault: str | None = None
    info: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Reply:
    """A device's acknowledgement of a command (mode, sleep/work), not a measurement."""

    command: int
    data: bytes


class DecodeError(ValueError):
    """A frame that passed its check but holds something the driver cannot use; ``reason`` names its counter."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class Parser(Protocol):
    """Incremental framing of a byte stream: whole frames out, every byte counted, never raises on input."""

    counters: Counter[str]  # bytes in, frames accepted, one counter per rejection reason

    def feed(self, data: bytes) -> list[Frame | Rejection]: ...


@dataclass(frozen=True, slots=True)
class PmCommands:
    """Command frames of a fan-driven PM sensor, so the gateway can query it and duty-cycle its fan."""

    passive_mode: bytes  # answer only when asked (query mode)
    query: bytes  # ask for one measurement
    sleep: bytes  # fan and laser off: the main power draw
    wake: bytes


@dataclass(frozen=True, slots=True)
class Driver:
    """One serial sensor type: its bus settings, parser, decoder, fields and (for PM sensors) commands."""

    name: str
    bus: SerialBus
    new_parser: Callable[[], Parser]
    decode: Callable[[bytes], Sample | Reply]
    fields: tuple[str, ...]  # value names a Sample may carry; a config sensor picks one
    correction_input: str | None = None  # the CF=1 PM2.5 field the humidity correction takes
    commands: PmCommands | None = None  # None: the device reports on its own
    warmup_s: float = 0.0  # after waking, readings are discarded this long (fan spin-up)
