"""Microcontroller sensor nodes that print ``key=value`` lines: line framing, decoding and unit conversion.

Bus 115200 8N1 by default (USB CDC nodes ignore the rate). A node prints one line per
measurement cycle, e.g. ``no2=23.5 t=18.2 rh=55``; pairs are separated by spaces,
commas or semicolons; ``#`` starts a comment line (boot messages, debug output).
Which key is which quantity, and in which unit the node prints it, is in the config.

>>> p = new_parser()
>>> p.feed(b"no2=23.5 t=18.2 rh=55\\r\\n# booting\\nno2=")
[Frame(offset=0, data=b'no2=23.5 t=18.2 rh=55')]
>>> decode(b"no2=23.5 t=18.2 rh=55").values
{'no2': 23.5, 't': 18.2, 'rh': 55.0}
>>> decode(b"no2=nan")
Traceback (most recent call last):
...
edge.drivers.base.DecodeError: line 'no2=nan': no2 is not a finite number
>>> round(to_canonical("no2", "ppb", 10.0), 2)
19.13
>>> to_canonical("resistance", "kohm", 42.5), to_canonical("voltage", "mV", 250.0)
(42500.0, 0.25)
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable

from edge.drivers.base import DecodeError, Driver, Sample, SerialBus
from edge.drivers.framing import Frame, Rejection

BUS = SerialBus(baudrate=115200, bytesize=8, parity="N", stopbits=1)
MAX_LINE = 256  # bytes; longer is a node printing garbage (or the wrong baud rate)
_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_.]{0,31}$")
_SEPARATORS = re.compile(r"[\s,;]+")
_NOT_TEXT = re.compile(rb"[^\t\x20-\x7e]")  # one regex search, not a Python loop over every byte

# Gas volume ratios to mass concentration at the EU reference conditions for gases
# (20 degC, 101.325 kPa): ug/m3 = ppb * M / Vm with Vm = R*T/p = 24.055 L/mol.
_MOLAR_VOLUME_L = 8.314462618 * 293.15 / 101.325
_MOLAR_MASS = {"no2": 46.0055, "o3": 47.9982}

# quantity -> {unit a node may print -> conversion to the quantity's canonical unit}
Conversion = Callable[[float], float]


def _gas_conversions(m: float) -> dict[str, Conversion]:
    """ppb and ppm of a gas of molar mass ``m`` (g/mol) -> ug/m3."""
    return {"ppb": lambda v: v * m / _MOLAR_VOLUME_L, "ppm": lambda v: v * 1000 * m / _MOLAR_VOLUME_L}


CONVERSIONS: dict[str, dict[str, Conversion]] = {
    **{gas: _gas_conversions(m) for gas, m in _MOLAR_MASS.items()},
    "temperature": {"degF": lambda v: (v - 32) * 5 / 9, "K": lambda v: v - 273.15},
    # raw signals of metal-oxide / electrochemical sensors, the inputs of a calibration model
    "resistance": {"kohm": lambda v: v * 1e3, "Mohm": lambda v: v * 1e6},
    "voltage": {"mV": lambda v: v / 1e3},
}


def node_units(quantity: str) -> list[str]:
    """Units other than the canonical one that a node may print for ``quantity``."""
    return list(CONVERSIONS.get(quantity, {}))


def to_canonical(quantity: str, unit: str, value: float) -> float:
    """``value`` as printed by a node in ``unit``, converted to the contract's unit of ``quantity``."""
    convert = CONVERSIONS.get(quantity, {}).get(unit)
    if convert is None:
        raise ValueError(
            f"no conversion from {unit!r} for {quantity} (known: {', '.join(node_units(quantity)) or 'none'})"
        )
    return convert(value)


class LineParser:
    """Incremental line framing with counters; never raises on input."""

    def __init__(self, max_line: int = MAX_LINE):
        self.max_line = max_line
        self._buffer = bytearray()
        self._base = 0
        self._discarding = False  # inside an overlong line: drop until its end
        self.counters: Counter[str] = Counter(bytes_in=0, lines_ok=0)

    def feed(self, data: bytes) -> list[Frame | Rejection]:
        self.counters["bytes_in"] += len(data)
        self._buffer += data
        out: list[Frame | Rejection] = []
        while (end := self._buffer.find(b"\n")) >= 0:
            raw = bytes(self._buffer[:end])
            offset = self._base
            del self._buffer[: end + 1]
            self._base += end + 1
            if self._discarding:
                self._discarding = False
                continue
            out += self._line(offset, raw)
        if len(self._buffer) > self.max_line:
            if not self._discarding:
                out.append(self._reject(self._base, "too_long", bytes(self._buffer[: self.max_line])))
            self._discarding = True
            self._base += len(self._buffer)
            self._buffer.clear()
        return out

    def _line(self, offset: int, raw: bytes) -> list[Frame | Rejection]:
        line = raw.rstrip(b"\r").strip()
        if not line:
            return []
        if len(line) > self.max_line:
            return [self._reject(offset, "too_long", line[: self.max_line])]
        if _NOT_TEXT.search(line):
            return [self._reject(offset, "not_text", line)]
        if line.startswith(b"#"):
            self.counters["comment_lines"] += 1
            return []
        self.counters["lines_ok"] += 1
        return [Frame(offset, line)]

    def _reject(self, offset: int, reason: str, data: bytes) -> Rejection:
        self.counters[reason] += 1
        return Rejection(offset, reason, data)


def decode(line: bytes) -> Sample:
    """The ``key=value`` pairs of one printable line; raises DecodeError('bad_line', ...) if any pair is unusable."""
    text = line.decode("ascii", errors="replace").strip()
    values: dict[str, float] = {}
    for pair in _SEPARATORS.split(text):
        if not pair:
            continue
        key, sep, raw = pair.partition("=")
        if not sep or not _KEY.match(key):
            raise DecodeError("bad_line", f"line {text[:60]!r}: {pair[:40]!r} is not key=value")
        try:
            value = float(raw)
        except ValueError:
            raise DecodeError("bad_line", f"line {text[:60]!r}: {key} value {raw[:20]!r} is not a number") from None
        if not math.isfinite(value):
            raise DecodeError("bad_line", f"line {text[:60]!r}: {key} is not a finite number")
        if key in values:
            raise DecodeError("bad_line", f"line {text[:60]!r}: {key} appears twice")
        values[key] = value
    if not values:
        raise DecodeError("bad_line", f"line {text[:60]!r} has no key=value pair")
    return Sample(values)


def new_parser() -> LineParser:
    """A fresh line parser for one serial port."""
    return LineParser()


DRIVER = Driver(name="line", bus=BUS, new_parser=new_parser, decode=decode, fields=())
