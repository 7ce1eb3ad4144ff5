"""Nova Fitness SDS011 laser PM sensor: frame check, decoding, and the query/sleep command frames.

Bus 9600 8N1. The sensor sends 10-byte frames (Laser Dust Sensor Control Protocol V1.3)::

    AA C0 PM25L PM25H PM10L PM10H ID1 ID2 CS AB    measurement, PM = (H*256 + L) / 10 ug/m3
    AA C5 CMD  D1    D2    D3    ID1 ID2 CS AB    reply to a command

with CS = sum of bytes 2..7 mod 256. It receives 19-byte commands
``AA B4 CMD D2..D13 ID1 ID2 CS AB`` with CS = sum of bytes 2..16 mod 256 (ID FF FF
addresses every sensor on the line).

>>> frame = measurement_frame(pm25=12.3, pm10=45.6)
>>> frame.hex(" ")
'aa c0 7b 00 c8 01 a1 60 45 ab'
>>> check_frame(frame), decode(frame)
(None, Sample(values={'pm25': 12.3, 'pm10': 45.6}, fault=None, info={'device_id': 'a160'}))
>>> check_frame(frame[:8] + b"\\x00\\xab")
'bad_checksum'
>>> decode(measurement_frame(pm25=999.9, pm10=1999.9)).fault
'fan_failure'
>>> SLEEP.hex(" ")
'aa b4 06 01 00 00 00 00 00 00 00 00 00 00 00 ff ff 05 ab'
"""

from __future__ import annotations

from edge.drivers.base import DecodeError, Driver, PmCommands, Reply, Sample, SerialBus
from edge.drivers.framing import FrameParser

BUS = SerialBus(baudrate=9600, bytesize=8, parity="N", stopbits=1)
HEAD, TAIL = 0xAA, 0xAB
MEASUREMENT, REPLY, COMMAND = 0xC0, 0xC5, 0xB4
FRAME_LENGTH = 10
COMMAND_LENGTH = 19
ALL_SENSORS = 0xFFFF

# Command ids (data byte 1 of a command, echoed in byte 2 of the reply).
CMD_REPORT_MODE, CMD_QUERY, CMD_SLEEP_WORK, CMD_WORKING_PERIOD = 0x02, 0x04, 0x06, 0x08
SET = 0x01

# Datasheet range is 0.0-999.9 ug/m3; a stopped fan reads 999.9 / 1999.9 (field notes).
RANGE_MAX = 999.9
FAN_FAILURE = (999.9, 1999.9)
# The datasheet asks for 30 s of fan running before readings are representative.
WARMUP_S = 30.0


def checksum(data: bytes) -> int:
    """The SDS011 checksum: the sum of the data bytes, modulo 256."""
    return sum(data) % 256


def check_frame(frame: bytes) -> str | None:
    """None if ``frame`` is a well-formed 10-byte frame from the sensor, else the reason (a counter name)."""
    if len(frame) != FRAME_LENGTH:
        return "bad_length"
    if frame[0] != HEAD or frame[1] not in (MEASUREMENT, REPLY):
        return "bad_header"
    if frame[9] != TAIL:
        return "bad_tail"
    if frame[8] != checksum(frame[2:8]):
        return "bad_checksum"
    return None


def decode(frame: bytes) -> Sample | Reply:
    """Values of a checked frame: PM2.5 and PM10 in ug/m3, or the command a reply acknowledges."""
    device_id = frame[6:8].hex()
    if frame[1] == REPLY:
        return Reply(command=frame[2], data=bytes(frame[3:6]))
    if frame[1] != MEASUREMENT:
        raise DecodeError("bad_header", f"SDS011 frame type 0x{frame[1]:02x} is not a measurement or a reply")
    pm25 = int.from_bytes(frame[2:4], "little") / 10
    pm10 = int.from_bytes(frame[4:6], "little") / 10
    fault = None
    if (pm25, pm10) == FAN_FAILURE:
        fault = "fan_failure"
    elif pm25 > RANGE_MAX or pm10 > RANGE_MAX:
        fault = "out_of_range"
    return Sample({"pm25": pm25, "pm10": pm10}, fault, {"device_id": device_id})


def new_parser() -> FrameParser:
    """A fresh SDS011 frame parser (fixed 10-byte measurement and reply frames) for one serial port."""
    return FrameParser(
        headers=[bytes([HEAD, MEASUREMENT]), bytes([HEAD, REPLY])],
        prefix_length=2,
        length_of=lambda prefix: FRAME_LENGTH,
        check=check_frame,
    )


def command_frame(command: int, data: bytes = b"", device_id: int = ALL_SENSORS) -> bytes:
    """The 19-byte frame of one command; ``data`` fills data bytes 2.. (zero-padded to 12 bytes).

    >>> command_frame(CMD_QUERY).hex(" ")
    'aa b4 04 00 00 00 00 00 00 00 00 00 00 00 00 ff ff 02 ab'
    """
    if len(data) > 12:
        raise ValueError("an SDS011 command carries at most 12 data bytes after the command id")
    body = bytes([command]) + data.ljust(12, b"\x00") + device_id.to_bytes(2, "big")
    return bytes([HEAD, COMMAND]) + body + bytes([checksum(body), TAIL])


def measurement_frame(pm25: float, pm10: float, device_id: int = 0xA160) -> bytes:
    """The frame a sensor would send for these values (for tests and simulators)."""
    body = bytes([MEASUREMENT]) + round(pm25 * 10).to_bytes(2, "little") + round(pm10 * 10).to_bytes(2, "little")
    body += device_id.to_bytes(2, "big")
    return bytes([HEAD]) + body + bytes([checksum(body[1:]), TAIL])


def reply_frame(command: int, data: bytes, device_id: int = 0xA160) -> bytes:
    """The reply a sensor sends to a command (3 data bytes)."""
    body = bytes([REPLY, command]) + data.ljust(3, b"\x00")[:3] + device_id.to_bytes(2, "big")
    return bytes([HEAD]) + body + bytes([checksum(body[1:]), TAIL])


PASSIVE_MODE = command_frame(CMD_REPORT_MODE, bytes([SET, 0x01]))  # report mode 1 = query
ACTIVE_MODE = command_frame(CMD_REPORT_MODE, bytes([SET, 0x00]))
QUERY = command_frame(CMD_QUERY)
SLEEP = command_frame(CMD_SLEEP_WORK, bytes([SET, 0x00]))
WAKE = command_frame(CMD_SLEEP_WORK, bytes([SET, 0x01]))

DRIVER = Driver(
    name="sds011",
    bus=BUS,
    new_parser=new_parser,
    decode=decode,
    fields=("pm25", "pm10"),
    correction_input="pm25",  # the SDS011 has one PM2.5 output; no CF=1/atmospheric split
    commands=PmCommands(passive_mode=PASSIVE_MODE, query=QUERY, sleep=SLEEP, wake=WAKE),
    warmup_s=WARMUP_S,
)
