"""The benchmark suite's smoke run writes a well-formed report (structure only: timings are never asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.contracts import Quality, Reading
from edge.runtime.base import dequantize, quantize
from gateway.bridge.influx_points import batch_lines, reading_line, reading_point
from gateway.protocol import payloads

ROOT = Path(__file__).resolve().parent.parent
FIGURE_KEYS = {"name", "median", "min", "max", "unit", "target", "met", "comparison", "ratio"}


def test_bench_quick_writes_every_figure(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "scripts.bench", "--quick", "--out", str(tmp_path)],  # from ROOT: see cwd
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads((tmp_path / "benchmarks.json").read_text())
    machine = report["machine"]
    assert {"cpu", "cores", "memory_gb", "date", "versions"} <= set(machine)
    assert {"python", "numpy", "onnxruntime", "ai-edge-litert"} <= set(machine["versions"])
    names = [f["name"] for f in report["figures"]]
    assert len(names) == len(set(names)), "figure names must be unique"
    for f in report["figures"]:
        assert FIGURE_KEYS <= set(f), f
        assert f["min"] <= f["median"] <= f["max"] or f["median"] != f["median"], f  # NaN: nothing measured
        assert f["met"] in (True, False, None)
        assert (f["target"] is None) == (f["met"] is None), f
    for prefix in (
        "roofline",
        "inference batch 1:",
        "inference batch 1024:",
        "gateway pipeline",
        "bridge:",
        "footprint: gateway peak RSS, litert",
        "footprint: CPU-seconds",
        "footprint: cold start",
        "model: ",
        "leak scenario generation",
        "fleet: sustained",
        "fleet: end-to-end lag p99",
    ):
        assert any(n.startswith(prefix) for n in names), f"no figure {prefix!r}"
    pipeline = next(f for f in report["figures"] if f["name"].startswith("gateway pipeline"))
    assert pipeline["comparison"]["c_client"]["unit"] == "readings/s"
    assert pipeline["comparison"]["all_acknowledged"] is True
    md = (tmp_path / "benchmarks.md").read_text()
    assert all(n in md for n in names)


# ---- optimisations keep their outputs: the fast paths against the reference code ----------

_ids = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    site=_ids,
    sensor=_ids,
    t=st.integers(0, 4_000_000_000_000),
    value=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-(10**6), 10**6)),
    quality=st.sampled_from(list(Quality)),
)
def test_reading_line_is_what_point_writes(site, sensor, t, value, quality):
    r = Reading(t, site, "gw-1", sensor, "flow", None if quality == Quality.UNKNOWN else value, "L/s", quality)
    assert reading_line(r) == reading_point(r).to_line_protocol()


# The bridge's batch path (payloads.decode_batch + influx_points.batch_lines) against the
# per-reading reference: each row a Reading, validated by the contract, written by Point.

_T0 = 1_772_409_600_000
_row_value = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(10**6), 10**6),
    st.none(),
    st.booleans(),
    st.text(max_size=3),
)
_row = st.one_of(
    st.tuples(st.integers(_T0 - 10**12, 5_000_000_000_000) | st.booleans() | st.floats(), _row_value),
    st.tuples(st.integers(_T0, _T0 + 10**9), _row_value, st.sampled_from([q.value for q in Quality] + ["great"])),
)


def _reference(rows, quantity, unit):
    """What decode gave before the batch path: a validated Reading per row, or the first row's error."""
    out = []
    for row in rows:
        value = row[1]
        if isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        quality = Quality(row[2]) if len(row) == 3 else Quality.OK
        out.append(Reading(row[0], "net3", "gw-01", "F-1", quantity, value, unit, quality).validate())
    return out


@settings(max_examples=400, deadline=None, derandomize=True)
@given(
    rows=st.lists(_row, min_size=1, max_size=6),
    quantity=st.sampled_from(["flow", "pm25", "flux"]),
    unit=st.sampled_from(["L/s", "ug/m3"]),
)
def test_batch_decode_and_lines_match_the_per_reading_path(rows, quantity, unit):
    import json

    body = json.dumps({"v": 1, "quantity": quantity, "unit": unit, "readings": [list(r) for r in rows]}).encode()
    topic = "frugalsense/net3/gw-01/readings/F-1"
    try:
        expected = _reference([list(r) for r in rows], quantity, unit)
    except (ValueError, TypeError) as exc:  # the contract refuses a row: the batch path must, with its words
        with pytest.raises(payloads.PayloadError) as caught:
            payloads.decode_batch("frugalsense", topic, body)
        assert caught.value.reason == "invalid"
        assert str(exc) in str(caught.value)
        return
    batch = payloads.decode_batch("frugalsense", topic, body)
    assert batch.readings() == expected
    assert batch_lines(batch) == [reading_point(r).to_line_protocol() for r in expected]


# The int8 helpers, written for speed, against their plain formulas.


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    scale=st.floats(1e-6, 10.0),
    zero_point=st.integers(-128, 127),
    x=st.lists(st.floats(-1e6, 1e6, width=32), min_size=1, max_size=16),
)
def test_quantize_and_dequantize_equal_their_plain_formulas(scale, zero_point, x):
    import numpy as np

    x = np.array(x, dtype=np.float32)
    plain_q = np.clip(np.round(x / scale) + zero_point, -128, 127).astype(np.int8)
    assert np.array_equal(quantize(x, scale, zero_point), plain_q)
    q = np.arange(-128, 128, dtype=np.int8)
    plain_d = ((q.astype(np.int32) - zero_point) * np.float32(scale)).astype(np.float32)
    d = dequantize(q, scale, zero_point)
    assert d.dtype == np.float32 and np.array_equal(d, plain_d)


# orjson parses payloads on the bridge's hot path; the standard library takes over where it refuses.
# Whatever the bytes, the outcome must be the one the standard library alone gives.
_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)


def _outcome(topic, payload):
    try:
        return "ok", payloads.decode("frugalsense", topic, payload)
    except payloads.PayloadError as exc:
        return exc.reason, str(exc)


@settings(max_examples=400, deadline=None, derandomize=True)
@given(
    body=st.one_of(
        st.binary(max_size=64),
        _json_values.map(lambda v: __import__("json").dumps(v).encode()),
        st.lists(
            st.tuples(
                st.integers(1_772_409_600_000, 1_772_409_700_000),
                st.floats(allow_nan=True, allow_infinity=True) | st.integers(-10, 10),
            ),
            min_size=1,
            max_size=4,
        ).map(
            lambda rows: (
                __import__("json")
                .dumps({"v": 1, "quantity": "flow", "unit": "L/s", "readings": [list(r) for r in rows]})
                .encode()
            )
        ),
    )
)
def test_orjson_fast_path_decides_as_the_standard_library_would(body):
    from unittest import mock

    def refuse(_):
        raise payloads.orjson.JSONDecodeError("forced", "", 0)

    topic = "frugalsense/net3/gw-01/readings/F-1"
    fast = _outcome(topic, body)
    with mock.patch.object(payloads.orjson, "loads", refuse):
        slow = _outcome(topic, body)
    assert fast == slow
