"""Frame parsers under garbage: 100,000 random bytes with valid and corrupt frames interleaved, fed in random chunks.

Every valid frame must come out decoded at its own stream offset, every corrupt one
must come out as a rejection at its offset with the right reason, the counters must
account for every byte, and nothing may raise. Hypothesis is derandomized: the same
streams on every run.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.drivers import line_node, pms5003, sds011
from edge.drivers.base import Reply, Sample
from edge.drivers.framing import Frame, Rejection

GARBAGE_BYTES = 100_000
SETTINGS = settings(
    derandomize=True, max_examples=4, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)


def sds011_frames(rnd: random.Random) -> tuple[bytes, dict]:
    pm25, pm10 = rnd.randint(0, 9999) / 10, rnd.randint(0, 19999) / 10
    return sds011.measurement_frame(pm25, pm10, device_id=rnd.randint(0, 0xFFFF)), {"pm25": pm25, "pm10": pm10}


def sds011_corrupt(rnd: random.Random, frame: bytes) -> tuple[bytes, str]:
    spoiled = bytearray(frame)
    where = rnd.choice(["data", "checksum", "tail"])
    if where == "tail":
        spoiled[9] = rnd.choice([b for b in range(256) if b != sds011.TAIL])
        return bytes(spoiled), "bad_tail"
    i = rnd.randint(2, 7) if where == "data" else 8
    spoiled[i] = (spoiled[i] + rnd.randint(1, 255)) % 256  # any change of one byte breaks the sum
    return bytes(spoiled), "bad_checksum"


def pms5003_frames(rnd: random.Random) -> tuple[bytes, dict]:
    if rnd.random() < 0.1:
        command = rnd.choice([pms5003.CMD_MODE, pms5003.CMD_SLEEP_WORK])
        return pms5003.reply_frame(command, rnd.randint(0, 1)), {"reply": command}
    words = [rnd.randint(0, 0xFFFF) for _ in range(12)]
    frame = pms5003.measurement_frame(*words[:6], counts=tuple(words[6:]))
    return frame, dict(zip(pms5003.FIELDS, map(float, words), strict=True))


def pms5003_corrupt(rnd: random.Random, frame: bytes) -> tuple[bytes, str]:
    spoiled = bytearray(frame)
    where = rnd.choice(["data", "checksum", "length"])
    if where == "length":
        spoiled[3] = rnd.choice([b for b in range(256) if b not in (pms5003.MEASUREMENT_LENGTH, pms5003.REPLY_LENGTH)])
        return bytes(spoiled), "bad_length"
    i = rnd.randint(4, len(frame) - 3) if where == "data" else len(frame) - 1
    spoiled[i] = (spoiled[i] + rnd.randint(1, 255)) % 256
    return bytes(spoiled), "bad_checksum"


def expected_values(driver, frame: bytes) -> dict:
    decoded = driver.decode(frame)
    return {"reply": decoded.command} if isinstance(decoded, Reply) else decoded.values


def build_stream(rnd: random.Random, make_frame, corrupt, n_valid: int, n_corrupt: int):
    garbage = rnd.randbytes(GARBAGE_BYTES)
    cuts = sorted(rnd.randrange(GARBAGE_BYTES + 1) for _ in range(n_valid + n_corrupt))
    kinds = ["valid"] * n_valid + ["corrupt"] * n_corrupt
    rnd.shuffle(kinds)
    stream, valid, spoiled, previous = bytearray(), {}, {}, 0
    for cut, kind in zip(cuts, kinds, strict=True):
        stream += garbage[previous:cut]
        previous = cut
        frame, values = make_frame(rnd)
        if kind == "valid":
            valid[len(stream)] = values
        else:
            frame, reason = corrupt(rnd, frame)
            spoiled[len(stream)] = reason
        stream += frame
    stream += garbage[previous:]
    return bytes(stream), valid, spoiled


def feed_in_chunks(rnd: random.Random, parser, stream: bytes) -> list:
    out, i = [], 0
    while i < len(stream):
        n = rnd.choice([1, 2, 7, rnd.randint(1, 64), rnd.randint(64, 4096)])
        out += parser.feed(stream[i : i + n])
        i += n
    return out


@pytest.mark.parametrize(
    "driver, make_frame, corrupt",
    [
        (sds011.DRIVER, sds011_frames, sds011_corrupt),
        (pms5003.DRIVER, pms5003_frames, pms5003_corrupt),
    ],
    ids=["sds011", "pms5003"],
)
@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), n_valid=st.integers(1, 800), n_corrupt=st.integers(0, 300))
def test_every_valid_frame_decoded_every_corrupt_one_counted(driver, make_frame, corrupt, seed, n_valid, n_corrupt):
    rnd = random.Random(seed)  # drives the 100,000 bytes: too many for Hypothesis to draw one by one
    stream, valid, spoiled = build_stream(rnd, make_frame, corrupt, n_valid, n_corrupt)
    parser = driver.new_parser()
    out = feed_in_chunks(rnd, parser, stream)

    frames = {f.offset: f for f in out if isinstance(f, Frame)}
    rejections = {r.offset: r for r in out if isinstance(r, Rejection)}
    for offset, values in valid.items():
        assert offset in frames, f"valid frame at offset {offset} was not decoded"
        assert expected_values(driver, frames[offset].data) == values
    for offset, reason in spoiled.items():
        assert offset in rejections, f"corrupt frame at offset {offset} was not counted"
        assert rejections[offset].reason == reason
    # Frames found in the random bytes themselves are real frames (they pass the check) and rare.
    extra = set(frames) - set(valid)
    assert all(driver.new_parser().feed(frames[o].data) for o in extra)
    assert len(extra) <= 2

    c = parser.counters
    assert c["frames_ok"] == len(frames)
    assert sum(v for k, v in c.items() if k.startswith("bad_")) == len(rejections) >= len(spoiled)
    frame_bytes = sum(len(f.data) for f in frames.values())
    assert c["bytes_in"] == len(stream) == frame_bytes + c["resync_bytes"] + parser.pending
    assert parser.pending < 32  # never more than one unfinished frame is held


LINE = b"no2=%.1f t=%.1f rh=%.1f"


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), n_lines=st.integers(1, 800))
def test_line_node_decodes_every_line_that_follows_a_newline(seed, n_lines):
    rnd = random.Random(seed)

    # A line node has no checksum: a line glued to garbage cannot be told apart, so the
    # promise is that any line starting after a newline is decoded, and garbage never crashes.
    def make_line(r):
        values = {"no2": r.randint(0, 4000) / 10, "t": r.randint(-300, 500) / 10, "rh": r.randint(0, 1000) / 10}
        return b"\n" + LINE % (values["no2"], values["t"], values["rh"]) + r.choice([b"\n", b"\r\n"]), values

    stream, valid, _ = build_stream(rnd, make_line, None, n_lines, 0)
    parser = line_node.new_parser()
    out = feed_in_chunks(rnd, parser, stream)
    decoded = {}
    bad_lines = 0
    for item in out:
        if isinstance(item, Frame):
            try:
                decoded[item.offset] = line_node.decode(item.data)
            except ValueError:
                bad_lines += 1
    for offset, values in valid.items():
        sample = decoded.get(offset + 1)  # the line starts after its leading newline
        assert isinstance(sample, Sample), f"line at offset {offset + 1} was not decoded"
        assert sample.values == values
    c = parser.counters
    assert c["bytes_in"] == len(stream)
    assert c["lines_ok"] == len(decoded) + bad_lines
    assert c["too_long"] + c["not_text"] == sum(isinstance(i, Rejection) for i in out) > 0
