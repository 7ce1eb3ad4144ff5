"""Contracts, topics, payload codec and InfluxDB mapping, and their agreement with docs/contracts.md."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from edge.contracts import (
    Alert,
    AlertState,
    ContractError,
    Detection,
    Quality,
    Reading,
    Severity,
)
from gateway.bridge import influx_points
from gateway.protocol import payloads
from gateway.protocol import topics as T

DOC = Path(__file__).resolve().parents[1] / "docs" / "contracts.md"
T0 = 1_772_409_600_000  # 2026-03-02T00:00Z
PREFIX = "frugalsense"


def reading(**kw) -> Reading:
    base = dict(time_ms=T0, site="net3", gateway="gw-01", sensor="F-lake", quantity="flow", value=131.25, unit="L/s")
    base.update(kw)
    return Reading(**base)


def detection(**kw) -> Detection:
    base = dict(
        time_ms=T0 + 3_600_000,
        site="net3",
        gateway="gw-01",
        kind="leak",
        label="leak",
        score=0.31,
        severity=Severity.WARNING,
        model="mnf",
        model_version="1",
        window_start_ms=T0,
        window_end_ms=T0 + 7_200_000,
        explanation={"excess_lps": 14.5, "sensors": ["F-lake", "F-river"]},
    )
    base.update(kw)
    return Detection(**base)


def alert(**kw) -> Alert:
    base = dict(
        time_ms=T0 + 3_600_000,
        site="net3",
        gateway="gw-01",
        kind="leak",
        alert_id="leak-2026-03-02",
        state=AlertState.RAISED,
        label="leak",
        severity=Severity.WARNING,
        score=0.31,
        message="Night flow 61.0 L/s is 31% above the baseline",
        model="mnf",
        model_version="1",
        since_ms=T0,
        explanation={"excess_lps": 14.5},
    )
    base.update(kw)
    return Alert(**base)


# --- contracts ----------------------------------------------------------------


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(value=math.nan), "finite number"),
        (dict(value=math.inf), "finite number"),
        (dict(value="12"), "finite number"),
        (dict(value=True), "finite number"),
        (dict(value=None), "finite number"),
        (dict(unit="m3/h"), "expected 'L/s'"),
        (dict(quantity="flux"), "unknown quantity 'flux'"),
        (dict(sensor="F lake"), "sensor 'F lake'"),
        (dict(site="a/b"), "site 'a/b'"),
        (dict(time_ms=0), "outside 2000..2100"),
        (dict(time_ms=1.5e12), "integer milliseconds"),
        (dict(value=3.0, quality=Quality.UNKNOWN), "carries no value"),
    ],
)
def test_reading_rejects(change, message):
    with pytest.raises(ContractError, match=re.escape(message)):
        reading(**change).validate()


def test_unknown_reading_has_no_value():
    assert reading(value=None, quality=Quality.UNKNOWN).validate().value is None


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(window_end_ms=T0 - 1), "window ends before it starts"),
        (dict(score=math.nan), "score must be a finite number"),
        (dict(explanation={"bad key": 1.0}), "explanation key 'bad key'"),
        (dict(explanation={"flow": math.inf}), "not finite"),
        (dict(explanation={"sensors": [1, 2]}), "list of text"),
        (dict(severity="loud"), "'loud' is not a valid Severity"),
    ],
)
def test_detection_rejects(change, message):
    with pytest.raises((ContractError, ValueError), match=re.escape(message)):
        detection(**change).validate()


def test_alert_rejects_long_message():
    with pytest.raises(ContractError, match="500 characters"):
        alert(message="x" * 501).validate()


# --- topics -------------------------------------------------------------------


def test_deadletter_topic_is_outside_bridge_subscription():
    import paho.mqtt.client as mqtt

    subs = T.bridge_subscriptions(PREFIX)
    t = T.Topics(PREFIX, "net3", "gw-01")

    def seen(topic):
        return any(mqtt.topic_matches_sub(sub, topic) for sub in subs)

    assert all(seen(topic) for topic in (t.readings("F-lake"), t.status, t.detections("leak"), t.alerts))
    assert not seen(T.deadletter_topic(PREFIX))
    assert not seen(f"{t.base}/model-update/leak_mlp") and not seen(f"{t.base}/models")


@pytest.mark.parametrize(
    "topic",
    [
        "frugalsense/net3/gw-01",
        "frugalsense/net3/gw-01/readings",
        "frugalsense/net3/gw-01/alerts/x",
        "frugalsense/net3/gw-01/weather/x",
        "other/net3/gw-01/status",
        "frugalsense/n3 t/gw-01/status",
        "frugalsense/net3/gw-01/readings/a/b",
    ],
)
def test_topics_outside_the_tree_are_refused(topic):
    with pytest.raises(T.TopicError):
        T.parse_topic(PREFIX, topic)


# --- payload codec ------------------------------------------------------------


def test_readings_round_trip_with_qualities():
    batch = [reading(time_ms=T0 + i * 900_000, value=float(i)) for i in range(3)]
    batch.append(reading(time_ms=T0 + 3 * 900_000, value=None, quality=Quality.UNKNOWN))
    batch.append(reading(time_ms=T0 + 4 * 900_000, value=7.5, quality=Quality.SUSPECT))
    topic = T.Topics(PREFIX, "net3", "gw-01").readings("F-lake")
    assert payloads.decode(PREFIX, topic, payloads.encode_readings(batch)) == batch


def test_detection_and_alert_round_trip():
    t = T.Topics(PREFIX, "net3", "gw-01")
    d, a = detection(), alert()
    assert payloads.decode(PREFIX, t.detections("leak"), payloads.encode_detection(d)) == d
    assert payloads.decode(PREFIX, t.alerts, payloads.encode_alert(a)) == a


def test_status_birth_and_will():
    t = T.Topics(PREFIX, "net3", "gw-01")
    born = payloads.decode(PREFIX, t.status, payloads.encode_status("online", T0, {"readings_published": 3}))
    assert (born.state, born.time_ms, born.counters) == ("online", T0, {"readings_published": 3})
    will = payloads.decode(PREFIX, t.status, payloads.encode_status("offline"))
    assert (will.state, will.time_ms) == ("offline", None)


READINGS_TOPIC = "frugalsense/net3/gw-01/readings/F-lake"


@pytest.mark.parametrize(
    "topic, payload, reason",
    [
        (READINGS_TOPIC, b"\xff\xfe\x00garbage", "not_utf8"),
        (READINGS_TOPIC, b"{not json", "not_json"),
        (READINGS_TOPIC, b"[1,2]", "bad_shape"),
        (READINGS_TOPIC, b'{"v":2,"quantity":"flow","unit":"L/s","readings":[[1772409600000,1]]}', "schema_version"),
        (READINGS_TOPIC, b'{"quantity":"flow"}', "schema_version"),
        (READINGS_TOPIC, b'{"v":1,"quantity":"flow","unit":"L/s","readings":[[1772409600000,NaN]]}', "invalid"),
        (READINGS_TOPIC, b'{"v":1,"quantity":"flow","unit":"L/s","readings":[[1772409600000,"1"]]}', "invalid"),
        (READINGS_TOPIC, b'{"v":1,"quantity":"flow","unit":"m3/h","readings":[[1772409600000,1]]}', "invalid"),
        (READINGS_TOPIC, b'{"v":1,"quantity":"flow","unit":"L/s","readings":[]}', "invalid"),
        (READINGS_TOPIC, b'{"v":1,"quantity":"flow","unit":"L/s"}', "invalid"),
        (READINGS_TOPIC, b'{"v":1,"quantity":"flow","unit":"L/s","readings":[[99999999999999,1]]}', "invalid"),
        (READINGS_TOPIC, b'{"v":1,"quantity":"flow","unit":"L/s","readings":[[1772409600000,1,"great"]]}', "invalid"),
        (READINGS_TOPIC, b" " * (payloads.MAX_PAYLOAD_BYTES + 1), "too_large"),
        ("frugalsense/net3/readings/F-lake", b'{"v":1}', "bad_topic"),
        ("frugalsense/net3/gw-01/status", b'{"v":1,"state":"sleeping"}', "invalid"),
        ("frugalsense/net3/gw-01/alerts", b'{"v":1,"time":1772409600000}', "invalid"),
        (
            "frugalsense/net3/gw-01/detections/leak",
            b'{"v":1,"time":1772409600000,"label":"leak","score":true,'
            b'"severity":"warning","model":"mnf","model_version":"1","window":[1772409600000,1772409600000]}',
            "invalid",
        ),
    ],
)
def test_malformed_payloads_have_a_reason(topic, payload, reason):
    with pytest.raises(payloads.PayloadError) as caught:
        payloads.decode(PREFIX, topic, payload)
    assert caught.value.reason == reason


# --- InfluxDB mapping -----------------------------------------------------------


def test_unknown_reading_becomes_point_without_value():
    (line,) = influx_points.to_line_protocol(reading(value=None, quality=Quality.UNKNOWN))
    assert 'quality="unknown"' in line and "value=" not in line


def test_explanation_cannot_overwrite_contract_fields():
    (line,) = influx_points.to_line_protocol(detection(explanation={"score": 99.0, "sensors": ["a", "b"]}))
    assert "score=0.31" in line and "x_score=99" in line and 'x_sensors="a,b"' in line


# --- the documentation says what the code does ----------------------------------


def _doc_json_blocks() -> list[dict]:
    text = DOC.read_text()
    return [json.loads(block) for block in re.findall(r"```json\n(.*?)```", text, flags=re.S)]


def test_documented_payload_examples_decode():
    blocks = _doc_json_blocks()
    readings_ex, detection_ex, alert_ex, status_ex, alert_command_ex, deadletter_ex = blocks
    t = T.Topics(PREFIX, "net3", "gw-01")
    for topic, body in [
        (t.readings("F-lake"), readings_ex),
        (t.detections("leak"), detection_ex),
        (t.alerts, alert_ex),
        (t.status, status_ex),
        (t.alert_commands, alert_command_ex),
    ]:
        payloads.decode(PREFIX, topic, json.dumps(body).encode())
    assert set(deadletter_ex) == {"v", "reason", "detail", "topic", "payload", "encoding", "bytes"}


def test_documented_deadletter_reasons_match_code():
    text = DOC.read_text()
    documented = set(re.findall(r"`([a-z_0-9]+)`", text.split("Reasons:")[1].split("\n\n")[0]))
    in_code = set(re.findall(r'PayloadError\(\s*"([a-z_0-9]+)"', Path(payloads.__file__).read_text()))
    in_code.add("rejected_by_database")  # raised by the bridge when InfluxDB refuses the data
    assert documented == in_code


def test_documented_line_protocol_example_matches():
    text = DOC.read_text()
    example = re.search(r"One reading is one point:\n\n```\n(.*?)\n```", text, flags=re.S).group(1)
    r = reading(sensor="P-15", quantity="pressure", value=42.5, unit="m")
    assert influx_points.to_line_protocol(r) == [example]


def test_documented_alert_state_example_is_the_documented_command():
    text = DOC.read_text()
    line = re.search(
        r"`frugalsense alert list` reads `alert` and `alert_state` together:\n\n```\n(.*?)\n```", text
    ).group(1)
    command = payloads.decode(
        PREFIX, T.Topics(PREFIX, "net3", "gw-01").alert_commands, json.dumps(_doc_json_blocks()[4]).encode()
    )
    assert influx_points.to_line_protocol(command) == [line]


def test_documented_measurements_match_code():
    text = DOC.read_text()
    table = text.split("## InfluxDB schema")[1]
    documented = re.findall(r"^\| `([a-z_]+)` \|", table, flags=re.M)
    assert tuple(documented) == influx_points.MEASUREMENTS


def test_times_far_from_the_receivers_clock_are_refused():
    t = T.Topics(PREFIX, "net3", "gw-01")
    now = T0 + 86_400_000
    body = payloads.encode_readings([reading(time_ms=now + 2 * 86_400_000)])
    with pytest.raises(payloads.PayloadError) as caught:
        payloads.decode(PREFIX, t.readings("F-lake"), body, now_ms=now)
    assert caught.value.reason == "time_out_of_range" and "days in the future" in str(caught.value)
    year_2000 = payloads.encode_alert(alert(time_ms=946_684_800_001, since_ms=946_684_800_001))
    with pytest.raises(payloads.PayloadError, match="time_out_of_range"):
        payloads.decode(PREFIX, t.alerts, year_2000, now_ms=T0)  # 26 years before the receiver's clock
    # within a day ahead and ten years back: fine, and without a clock nothing is checked
    assert payloads.decode(
        PREFIX, t.readings("F-lake"), payloads.encode_readings([reading(time_ms=now + 3_600_000)]), now_ms=now
    )
    assert payloads.decode(PREFIX, t.readings("F-lake"), body)


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"time_ms": True}, "time must be integer"),
        ({"time_ms": 5}, "outside 2000..2100"),
        ({"value": float("inf")}, "finite number"),
        ({"value": "3"}, "finite number"),
        ({"value": True}, "finite number"),
        ({"unit": "m"}, "not the unit of flow"),
        ({"sensor": ["F-1"]}, "sensor ['F-1'] must be"),
    ],
)
def test_a_sensor_already_validated_still_has_every_reading_checked(bad, message):
    """Reading.validate remembers a sensor's identity once it passed; time, value and quality are checked every time."""
    good = dict(time_ms=T0, site="net3", gateway="gw-01", sensor="F-1", quantity="flow", value=1.0, unit="L/s")
    Reading(**good).validate()  # now a known identity
    with pytest.raises(ContractError, match=re.escape(message)):
        Reading(**{**good, **bad}).validate()
