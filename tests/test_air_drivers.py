"""Driver frames byte for byte against the datasheets' examples, and the pure decoders' edge cases."""

from __future__ import annotations

import pytest

from edge.drivers import line_node, pms5003, sds011
from edge.drivers.base import DecodeError, Reply
from edge.drivers.framing import Frame, Rejection


@pytest.mark.parametrize(
    "frame, datasheet",
    [
        (sds011.PASSIVE_MODE, "AA B4 02 01 01 00 00 00 00 00 00 00 00 00 00 FF FF 02 AB"),
        (sds011.ACTIVE_MODE, "AA B4 02 01 00 00 00 00 00 00 00 00 00 00 00 FF FF 01 AB"),
        (sds011.QUERY, "AA B4 04 00 00 00 00 00 00 00 00 00 00 00 00 FF FF 02 AB"),
        (sds011.SLEEP, "AA B4 06 01 00 00 00 00 00 00 00 00 00 00 00 FF FF 05 AB"),
        (sds011.WAKE, "AA B4 06 01 01 00 00 00 00 00 00 00 00 00 00 FF FF 06 AB"),
        (pms5003.PASSIVE_MODE, "42 4D E1 00 00 01 70"),
        (pms5003.ACTIVE_MODE, "42 4D E1 00 01 01 71"),
        (pms5003.QUERY, "42 4D E2 00 00 01 71"),
        (pms5003.SLEEP, "42 4D E4 00 00 01 73"),
        (pms5003.WAKE, "42 4D E4 00 01 01 74"),
    ],
    ids=[
        "sds-passive",
        "sds-active",
        "sds-query",
        "sds-sleep",
        "sds-wake",
        "pms-passive",
        "pms-active",
        "pms-read",
        "pms-sleep",
        "pms-wake",
    ],
)
def test_command_frames_match_the_datasheet(frame, datasheet):
    assert frame == bytes.fromhex(datasheet)


def test_sds011_reply_to_a_sleep_command_is_recognised():
    reply = bytes.fromhex("AA C5 06 01 00 00 A1 60 08 AB")  # the datasheet's answer to 'sleep'
    assert sds011.check_frame(reply) is None
    assert sds011.decode(reply) == Reply(command=0x06, data=b"\x01\x00\x00")
    assert sds011.reply_frame(sds011.CMD_SLEEP_WORK, b"\x01\x00") == reply


def test_pms5003_measurement_words_in_order():
    frame = pms5003.measurement_frame(1, 2, 3, 4, 5, 6, counts=(7, 8, 9, 10, 11, 12), error_code=3)
    assert frame[:4] == bytes.fromhex("424D001C") and len(frame) == 32
    sample = pms5003.decode(frame)
    assert list(sample.values.values()) == [float(v) for v in range(1, 13)]
    assert sample.fault == "error_code_3"
    assert pms5003.decode(bytes.fromhex("424D0004E1000174")) == Reply(command=0xE1, data=b"\x00")


def test_pms5003_parser_rejects_a_corrupt_length_at_once():
    parser = pms5003.new_parser()
    out = parser.feed(bytes.fromhex("424DFFFF") + pms5003.measurement_frame(pm25_atm=9))
    assert isinstance(out[0], Rejection) and out[0].reason == "bad_length"
    assert isinstance(out[1], Frame) and out[1].offset == 4  # not waiting for 65 kB, not losing the next frame


@pytest.mark.parametrize(
    "line, reason",
    [
        (b"no2", "is not key=value"),
        (b"no2=1e400", "not a finite number"),
        (b"no2=12,no2=13", "appears twice"),
        (b"2no2=12", "is not key=value"),
        (b"t=warm", "is not a number"),
    ],
)
def test_line_node_bad_lines_say_why(line, reason):
    with pytest.raises(DecodeError, match=reason) as caught:
        line_node.decode(line)
    assert caught.value.reason == "bad_line"


def test_line_parser_drops_an_overlong_line_once_and_resumes_at_the_next():
    parser = line_node.new_parser()
    out = parser.feed(b"x" * 300) + parser.feed(b"y" * 300 + b"\nno2=5;rh=40\n")
    assert [type(o).__name__ for o in out] == ["Rejection", "Frame"]
    assert line_node.decode(out[1].data).values == {"no2": 5.0, "rh": 40.0}
    assert parser.counters["too_long"] == 1


def test_line_node_unit_conversions():
    assert line_node.to_canonical("o3", "ppb", 50.0) == pytest.approx(99.77, abs=0.01)
    assert line_node.to_canonical("temperature", "degF", 212.0) == pytest.approx(100.0)
    with pytest.raises(ValueError, match="no conversion from 'ppb' for humidity"):
        line_node.to_canonical("humidity", "ppb", 1.0)
