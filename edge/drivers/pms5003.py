"""Plantower PMS5003 laser PM sensor: frame check, decoding, and the passive/sleep command frames.

Bus 9600 8N1. Frames start ``42 4D`` and a big-endian length (bytes after it):

* 32-byte measurement (length 28): 13 big-endian words - PM1/PM2.5/PM10 at CF=1
  (bytes 4-9), the same "atmospheric" (10-15), particle counts per 0.1 L above
  0.3/0.5/1/2.5/5/10 um (16-27), version and error code (28, 29); checksum in
  bytes 30-31 = 16-bit sum of bytes 0..29.
* 8-byte command reply (length 4): command, data, checksum.

Commands are ``42 4D CMD DATAH DATAL LRCH LRCL`` with LRC the 16-bit sum of the
first five bytes.

>>> frame = measurement_frame(pm25_cf1=14, pm25_atm=12)
>>> check_frame(frame), len(frame)
(None, 32)
>>> decode(frame).values["pm25_cf1"], decode(frame).values["pm25"]
(14.0, 12.0)
>>> check_frame(frame[:30] + b"\\x00\\x00")
'bad_checksum'
>>> PASSIVE_MODE.hex(" "), SLEEP.hex(" ")
('42 4d e1 00 00 01 70', '42 4d e4 00 00 01 73')
"""

from __future__ import annotations

import struct

from edge.drivers.base import Driver, PmCommands, Reply, Sample, SerialBus
from edge.drivers.framing import FrameParser

BUS = SerialBus(baudrate=9600, bytesize=8, parity="N", stopbits=1)
HEADER = b"\x42\x4d"
MEASUREMENT_LENGTH, REPLY_LENGTH = 28, 4  # the length word of each frame kind
CMD_READ, CMD_MODE, CMD_SLEEP_WORK = 0xE2, 0xE1, 0xE4
# Datasheet: "stable data should be got at least 30 seconds after the sensor wakeup".
WARMUP_S = 30.0
# Word order of a measurement frame (after header and length).
FIELDS = ("pm1_cf1", "pm25_cf1", "pm10_cf1", "pm1", "pm25", "pm10", "n0_3", "n0_5", "n1_0", "n2_5", "n5_0", "n10")


def _sum16(data: bytes) -> int:
    return sum(data) & 0xFFFF


def frame_length(prefix: bytes) -> int | None:
    """Total frame length from the first 4 bytes, None for a length this sensor never sends."""
    length = int.from_bytes(prefix[2:4], "big")
    return 4 + length if length in (MEASUREMENT_LENGTH, REPLY_LENGTH) else None


def check_frame(frame: bytes) -> str | None:
    """None if ``frame`` is a well-formed frame from the sensor, else the reason (a counter name)."""
    if frame[:2] != HEADER:
        return "bad_header"
    if len(frame) < 6 or frame_length(frame[:4]) != len(frame):
        return "bad_length"
    if int.from_bytes(frame[-2:], "big") != _sum16(frame[:-2]):
        return "bad_checksum"
    return None


def decode(frame: bytes) -> Sample | Reply:
    """PM in ug/m3 (CF=1 and atmospheric) and particle counts, or the command a reply acknowledges."""
    if len(frame) == 4 + REPLY_LENGTH:
        return Reply(command=frame[4], data=bytes(frame[5:6]))
    words = struct.unpack(">12H", frame[4:28])
    version, error_code = frame[28], frame[29]
    # The datasheet documents no error codes; a nonzero one is reported, not interpreted.
    fault = f"error_code_{error_code}" if error_code else None
    return Sample({name: float(w) for name, w in zip(FIELDS, words, strict=True)}, fault, {"version": str(version)})


def new_parser() -> FrameParser:
    """A fresh PMS5003 frame parser (0x42 0x4d header, length word, 16-bit sum) for one serial port."""
    return FrameParser(headers=[HEADER], prefix_length=4, length_of=frame_length, check=check_frame)


def command_frame(command: int, data: int = 0) -> bytes:
    """The 7-byte frame of one command.

    >>> command_frame(CMD_READ).hex(" ")
    '42 4d e2 00 00 01 71'
    """
    body = HEADER + bytes([command]) + data.to_bytes(2, "big")
    return body + _sum16(body).to_bytes(2, "big")


def measurement_frame(
    pm1_cf1: int = 0,
    pm25_cf1: int = 0,
    pm10_cf1: int = 0,
    pm1_atm: int = 0,
    pm25_atm: int = 0,
    pm10_atm: int = 0,
    counts: tuple[int, ...] = (0,) * 6,
    version: int = 0x97,
    error_code: int = 0,
) -> bytes:
    """The frame a sensor would send for these values (for tests and simulators)."""
    words = (pm1_cf1, pm25_cf1, pm10_cf1, pm1_atm, pm25_atm, pm10_atm, *counts)
    body = HEADER + MEASUREMENT_LENGTH.to_bytes(2, "big") + struct.pack(">12H", *words)
    body += bytes([version, error_code])
    return body + _sum16(body).to_bytes(2, "big")


def reply_frame(command: int, data: int) -> bytes:
    """The frame a sensor sends to acknowledge a command (for tests and simulators)."""
    body = HEADER + REPLY_LENGTH.to_bytes(2, "big") + bytes([command, data])
    return body + _sum16(body).to_bytes(2, "big")


PASSIVE_MODE = command_frame(CMD_MODE, 0)
ACTIVE_MODE = command_frame(CMD_MODE, 1)
QUERY = command_frame(CMD_READ)
SLEEP = command_frame(CMD_SLEEP_WORK, 0)
WAKE = command_frame(CMD_SLEEP_WORK, 1)

DRIVER = Driver(
    name="pms5003",
    bus=BUS,
    new_parser=new_parser,
    decode=decode,
    fields=FIELDS,
    correction_input="pm25_cf1",  # the US EPA correction is fitted on CF=1 values
    commands=PmCommands(passive_mode=PASSIVE_MODE, query=QUERY, sleep=SLEEP, wake=WAKE),
    warmup_s=WARMUP_S,
)
