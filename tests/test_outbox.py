"""The durable outbox alone (SQLite, kill -9) and behind the publisher and runner against a real Mosquitto."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.contracts import Alert, Reading
from gateway.device.outbox import (
    ALERT,
    BACKLOG_MESSAGES,
    DETECTION,
    READING,
    ROW_OVERHEAD_BYTES,
    STATUS,
    Outbox,
    OutboxError,
    Outgoing,
)
from gateway.device.publisher import GatewayPublisher
from gateway.local_services.services import LocalServices, free_port
from gateway.protocol import payloads
from gateway.protocol import topics as T
from gateway.protocol.mqtt_client import MqttSettings
from tests.test_contracts import T0, alert, detection

ROOT = Path(__file__).resolve().parents[1]
DAY_S = 86_400


class Clock:
    def __init__(self, now: float = 1_800_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def size_of(stream: str, payload: bytes) -> int:
    return len(payload) + len(stream) + ROW_OVERHEAD_BYTES


# ---- the store ---------------------------------------------------------------------------


def test_messages_leave_in_the_order_they_were_put_when_there_is_no_backlog():
    box = Outbox(None)
    puts = [
        ("gw/readings/F", READING),
        ("gw/detections/leak", DETECTION),
        ("gw/alerts", ALERT),
        ("gw/readings/F", READING),
        ("gw/status", STATUS),
        ("gw/alerts", ALERT),
    ]
    for stream, kind in puts:
        box.put(stream, b"{}", kind)
    taken = box.take(100)
    assert [(m.stream, m.kind) for m in taken] == puts
    assert [m.seq for m in taken] == [1, 1, 1, 2, 1, 2]  # one sequence per stream


def test_a_backlog_sends_alerts_then_detections_then_status_then_readings_each_stream_in_order():
    box = Outbox(None)
    kinds = [READING, STATUS, DETECTION, ALERT]
    for i in range(BACKLOG_MESSAGES + 20):
        kind = kinds[i % 4]
        box.put(f"gw/{kind}/{i % 3}", b"{}", kind)
    taken = box.take(1000)
    order = [m.kind for m in taken]
    assert order == sorted(order, key=[ALERT, DETECTION, STATUS, READING].index)
    seqs = defaultdict(list)
    for m in taken:
        seqs[m.stream].append(m.seq)
    assert all(s == list(range(1, len(s) + 1)) for s in seqs.values())


def test_full_outbox_drops_oldest_status_then_oldest_readings_never_alerts_or_detections():
    reading_payload, alert_payload = b"r" * 200, b"a" * 200
    one = size_of("gw/readings/F", reading_payload)
    box = Outbox(None, max_bytes=10 * one)
    for _ in range(3):
        box.put("gw/status", b"s" * (200 + len("readings/F") - len("status")), STATUS)  # same size as a reading
    for _ in range(7):
        box.put("gw/readings/F", reading_payload, READING, items=50)
    assert len(box) == 10 and box.stats()["outbox_dropped_readings"] == 0

    box.put("gw/readings/F", reading_payload, READING, items=50)  # full: the oldest status goes
    assert box.stats()["outbox_dropped_status"] == 1 and box.stats()["outbox_dropped_readings"] == 0
    for _ in range(2):
        box.put("gw/readings/F", reading_payload, READING, items=50)
    assert box.stats()["outbox_dropped_status"] == 3
    box.put("gw/readings/F", reading_payload, READING, items=50)  # no status left: the oldest reading goes
    assert box.stats()["outbox_dropped_readings"] == 50

    for _ in range(15):  # alerts push every reading out, then go over the bound rather than be dropped
        assert box.put("gw/alerts", alert_payload, ALERT) is not None
    stats = box.stats()
    assert stats["outbox_backlog"] == 15 and stats["outbox_over_bound"] == 5
    assert stats["outbox_dropped_readings"] == 11 * 50
    assert [m.kind for m in box.take(100)] == [ALERT] * 15
    # Readings that cannot fit are dropped on arrival, and counted.
    assert box.put("gw/readings/F", reading_payload, READING, items=50) is None
    assert box.stats()["outbox_dropped_readings"] == 12 * 50


def test_messages_in_flight_are_never_dropped_to_make_room():
    payload = b"r" * 100
    box = Outbox(None, max_bytes=3 * size_of("gw/readings/F", payload))
    for _ in range(3):
        box.put("gw/readings/F", payload, READING)
    in_flight = box.take(2)
    box.put("gw/readings/F", payload, READING)
    assert [m.seq for m in box.take(10)] == [4]  # seq 3 (untaken) made room; 1 and 2 are with the broker
    box.ack([m.id for m in in_flight])
    assert len(box) == 1


def test_old_readings_and_status_expire_but_alerts_and_detections_do_not():
    clock = Clock()
    box = Outbox(None, max_age_s=2 * DAY_S, clock=clock)
    for stream, kind in (
        ("gw/readings/F", READING),
        ("gw/status", STATUS),
        ("gw/alerts", ALERT),
        ("gw/detections/leak", DETECTION),
    ):
        box.put(stream, b"{}", kind, items=10 if kind == READING else 1)
    clock.now += 3 * DAY_S
    box.put("gw/readings/F", b"{}", READING, items=10)
    assert sorted(m.kind for m in box.take(10)) == [ALERT, DETECTION, READING]
    stats = box.stats()
    assert (stats["outbox_dropped_readings"], stats["outbox_dropped_status"]) == (10, 1)


def test_contents_sequences_counters_and_marks_survive_a_reopen(tmp_path):
    path = tmp_path / "outbox.sqlite3"
    with Outbox(path, max_bytes=3 * size_of("gw/readings/F", b"x" * 50)) as box:
        for i in range(4):
            box.put("gw/readings/F", b"x" * 50, READING, items=5, data_time_ms=T0 + i)
        box.put("gw/alerts", b"{}", ALERT, data_time_ms=T0 + 100)
        # Full at 3: readings 1 and 2 made room for reading 4 and the alert.
        taken = box.take(2)
        assert [m.seq for m in taken] == [3, 4]
        box.ack([taken[0].id])  # the second one was in flight when the process ended
    with Outbox(path) as box:
        assert box.replayed == 2
        assert [(m.stream, m.seq) for m in box.take(10)] == [("gw/readings/F", 4), ("gw/alerts", 1)]
        assert box.put("gw/readings/F", b"{}", READING) == 5
        assert box.marks() == {"gw/readings/F": (T0 + 3, 1), "gw/alerts": (T0 + 100, 1)}
        assert box.stats()["outbox_dropped_readings"] == 10


def test_a_mark_counts_the_messages_at_its_time_so_a_resumed_replay_skips_exactly_those(tmp_path):
    """Two detectors deciding on the same night share one stream and one time: a crash between
    their two messages must not make the resumed replay skip the second one."""
    from gateway.device.runner import _Resume

    with Outbox(tmp_path / "o.sqlite3") as box:
        box.put("gw/detections/leak", b"zone a", DETECTION, data_time_ms=T0)  # the crash comes after this one
    with Outbox(tmp_path / "o.sqlite3") as box:
        marks = box.marks()
        assert marks == {"gw/detections/leak": (T0, 1)}
        resume = _Resume(marks)
        assert resume.stored("gw/detections/leak", T0 - 1)
        assert resume.stored("gw/detections/leak", T0)  # zone a: stored before the crash
        assert not resume.stored("gw/detections/leak", T0)  # zone b: never stored, publish it
        assert not resume.stored("gw/detections/leak", T0 + 1) and not resume.stored("gw/alerts", T0)
        box.put("gw/detections/leak", b"zone b", DETECTION, data_time_ms=T0)
        assert box.marks()["gw/detections/leak"] == (T0, 2)
        box.put("gw/detections/leak", b"next night", DETECTION, data_time_ms=T0 + 86_400_000)
        assert box.marks()["gw/detections/leak"] == (T0 + 86_400_000, 1)


def test_an_outbox_file_from_before_counted_marks_is_upgraded_in_place(tmp_path):
    path = tmp_path / "o.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE streams (stream TEXT PRIMARY KEY, next_seq INTEGER NOT NULL, mark_ms INTEGER);"
        "INSERT INTO streams VALUES ('gw/alerts', 4, 1772409600000);"
    )
    db.close()
    with Outbox(path) as box:
        assert box.marks() == {"gw/alerts": (T0, 0)}  # count unknown: the item at the mark is sent again
        assert box.put("gw/alerts", b"{}", ALERT) == 4


def test_ids_are_never_reused_so_a_new_message_is_never_mistaken_for_a_sent_one(tmp_path):
    with Outbox(tmp_path / "o.sqlite3") as box:
        box.put("gw/alerts", b"1", ALERT)
        (first,) = box.take(10)
        box.ack([first.id])
        box.put("gw/alerts", b"2", ALERT)
        (second,) = box.take(10)
        assert second.id > first.id and second.payload == b"2"


def test_a_second_process_on_the_same_outbox_is_refused(tmp_path):
    with Outbox(tmp_path / "o.sqlite3"):
        with pytest.raises(OutboxError, match="another gateway process is using the outbox"):
            Outbox(tmp_path / "o.sqlite3")
    Outbox(tmp_path / "o.sqlite3").close()  # free again once the first one closed


def test_a_damaged_file_says_what_to_do(tmp_path):
    path = tmp_path / "outbox.sqlite3"
    path.write_bytes(b"this is not a database, it is a text file. " * 200)
    with pytest.raises(OutboxError, match="damaged or not an outbox .* move it aside"):
        Outbox(path)


def test_a_data_dir_that_cannot_be_created_says_which_setting_to_fix(tmp_path):
    (tmp_path / "a-file").write_text("")
    with pytest.raises(OutboxError, match="cannot create the outbox in .*a-file.*storage.data_dir"):
        Outbox(tmp_path / "a-file" / "gw" / "outbox.sqlite3")


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="sync policy"):
        Outbox(None, sync="sometimes")
    with pytest.raises(ValueError, match="message class"):
        Outbox(None).put("gw/x", b"", "gossip")


def test_full_sync_is_what_the_file_uses(tmp_path):
    with Outbox(tmp_path / "o.sqlite3") as box:
        assert box._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert box._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with Outbox(tmp_path / "n.sqlite3", sync="normal") as box:
        assert box._db.execute("PRAGMA synchronous").fetchone()[0] == 1


@settings(max_examples=60, derandomize=True, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["put_r", "put_s", "put_a", "put_d", "take", "ack"]), st.integers(0, 5)), max_size=120
    )
)
def test_every_message_is_delivered_in_order_dropped_and_counted_or_still_there(ops):
    """Whatever happens, per stream: delivered seqs increase; alerts/detections are never lost."""
    box = Outbox(None, max_bytes=8 * size_of("gw/readings/0", b"x" * 100))
    stored: dict[str, list[int]] = defaultdict(list)
    kinds = {}
    delivered: dict[str, list[int]] = defaultdict(list)
    in_flight = []
    for op, arg in ops:
        if op.startswith("put"):
            kind = {"put_r": READING, "put_s": STATUS, "put_a": ALERT, "put_d": DETECTION}[op]
            stream = f"gw/{kind}/{arg % 2}"
            seq = box.put(stream, b"x" * 100, kind, items=2)
            if seq is not None:
                stored[stream].append(seq)
                kinds[stream] = kind
        elif op == "take":
            in_flight += box.take(arg)
        elif in_flight:
            done, in_flight = in_flight[:arg], in_flight[arg:]
            box.ack(m.id for m in done)
            for m in done:
                delivered[m.stream].append(m.seq)
    in_flight += box.take(10_000)
    for m in in_flight:
        delivered[m.stream].append(m.seq)
    dropped = 0
    for stream, seqs in stored.items():
        assert delivered[stream] == sorted(delivered[stream])
        missing = set(seqs) - set(delivered[stream])
        if kinds[stream] in (ALERT, DETECTION):
            assert not missing
        dropped += len(missing) * (2 if kinds[stream] == READING else 1)
    stats = box.stats()
    assert dropped == stats["outbox_dropped_readings"] + stats["outbox_dropped_status"]


# ---- kill -9 -----------------------------------------------------------------------------

WRITER = """
import sys
from gateway.device.outbox import Outbox, READING, ALERT
box = Outbox(sys.argv[1])
i = 0
while True:
    i += 1
    kind = ALERT if i % 10 == 0 else READING
    seq = box.put("gw/" + kind, b"x" * 1000, kind, data_time_ms=1_772_409_600_000 + i)
    print(kind, seq, flush=True)
"""


def test_every_message_put_before_a_kill_9_is_there_after_it(tmp_path):
    path = tmp_path / "outbox.sqlite3"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    confirmed = []
    try:
        for line in proc.stdout:
            confirmed.append(tuple(line.split()))
            if len(confirmed) == 500:
                proc.send_signal(signal.SIGKILL)  # mid-stream: the writer is between two puts, or inside one
                break
    finally:
        proc.kill()
        proc.wait()
    # What the writer confirmed before it died but we had not read yet is still in the pipe.
    confirmed += [tuple(line.split()) for line in proc.stdout.read().splitlines() if line.strip()]
    with Outbox(path) as box:
        assert box._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        present = {(m.kind, str(m.seq)) for m in box.take(100_000)}
    assert set(confirmed) <= present
    assert len(present) - len(confirmed) <= 1  # at most the put that was committing when killed


# ---- group commit: several messages in one transaction ------------------------------------


def test_put_many_stores_like_puts_in_order_with_per_stream_sequences(tmp_path):
    with Outbox(tmp_path / "o.sqlite3") as box:
        box.put("gw/readings/A", b"a0", READING, items=50)
        seqs = box.put_many(
            [
                Outgoing("gw/readings/A", b"a1", READING, 50, T0),
                Outgoing("gw/readings/B", b"b1", READING, 50, T0),
                Outgoing("gw/alerts", b"al", ALERT, data_time_ms=T0 + 1, retain=True),
            ]
        )
        assert seqs == [2, 1, 1]
        assert box.put_many([]) == []
    with Outbox(tmp_path / "o.sqlite3") as box:
        sent = box.take(10)
        assert [(m.stream, m.seq, m.payload) for m in sent] == [
            ("gw/readings/A", 1, b"a0"),
            ("gw/readings/A", 2, b"a1"),
            ("gw/readings/B", 1, b"b1"),
            ("gw/alerts", 1, b"al"),
        ]
        assert sent[-1].retain and sent[1].items == 50
        assert box.marks()["gw/readings/B"] == (T0, 1) and box.marks()["gw/alerts"] == (T0 + 1, 1)
        assert box.put("gw/readings/A", b"a2", READING) == 3


def test_put_many_drops_oldest_readings_when_full_but_never_alerts_and_counts_as_puts_do():
    box = Outbox(None, max_bytes=3 * size_of("gw/readings/F", b"x" * 100))
    seqs = box.put_many(
        [Outgoing("gw/readings/F", b"x" * 100, READING, 50) for _ in range(4)]
        + [Outgoing("gw/alerts", b"x" * 100, ALERT)]
    )
    assert seqs == [1, 2, 3, 4, 1]
    stats = box.stats()
    assert stats["outbox_dropped_readings"] == 100 and stats["outbox_dropped_reading_messages"] == 2
    assert [(m.kind, m.seq) for m in box.take(10)] == [(READING, 3), (READING, 4), (ALERT, 1)]


def test_a_failed_put_many_stores_none_of_its_messages_and_leaves_sequences_as_they_were(tmp_path):
    with Outbox(tmp_path / "o.sqlite3") as box:
        box.put("gw/readings/A", b"a", READING)
        with pytest.raises(ValueError, match="message class"):
            box.put_many([Outgoing("gw/readings/A", b"a", READING), Outgoing("gw/x", b"?", "gossip")])
        real_put, calls = box.put, []

        def failing_put(*args, **kw):  # the second message cannot be written: the first must go too
            calls.append(args[0])
            if len(calls) == 2:
                raise sqlite3.OperationalError("disk I/O error")
            return real_put(*args, **kw)

        box.put = failing_put
        with pytest.raises(OutboxError, match="disk I/O error"):
            box.put_many(
                [Outgoing("gw/readings/A", b"a", READING, data_time_ms=T0), Outgoing("gw/readings/B", b"b", READING)]
            )
        del box.put
        assert len(box) == 1 and box.stats()["outbox_bytes"] == size_of("gw/readings/A", b"a")
        assert "gw/readings/A" not in box.marks()
        assert box.put_many([Outgoing("gw/readings/A", b"a", READING), Outgoing("gw/readings/B", b"b", READING)]) == [
            2,
            1,
        ]


GROUP_WRITER = """
import sys
from gateway.device.outbox import Outbox, Outgoing, READING, ALERT
box = Outbox(sys.argv[1])
group = 0
while True:
    group += 1
    step = [Outgoing(f"gw/readings/S{s}", b"%d:%d:" % (group, s) + b"x" * 1000, READING, 50) for s in range(8)]
    seqs = box.put_many(step + [Outgoing("gw/alerts", b"%d:a:" % group, ALERT)])
    print(group, *seqs, flush=True)
"""


def test_messages_stored_by_one_put_many_survive_a_kill_9_together_in_order(tmp_path):
    path = tmp_path / "outbox.sqlite3"
    proc = subprocess.Popen(
        [sys.executable, "-c", GROUP_WRITER, str(path)], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    confirmed = []
    try:
        for line in proc.stdout:
            confirmed.append([int(x) for x in line.split()])
            if len(confirmed) == 150:
                proc.send_signal(signal.SIGKILL)  # between two put_many calls, or inside one
                break
    finally:
        proc.kill()
        proc.wait()
    confirmed += [[int(x) for x in line.split()] for line in proc.stdout.read().splitlines() if line.strip()]
    with Outbox(path) as box:
        assert box._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        present = box.take(100_000)
    groups = defaultdict(list)
    for m in present:
        groups[int(m.payload.split(b":")[0])].append(m)
    assert all(len(members) == 9 for members in groups.values())  # all of a group, or none of it
    assert {g for g, *_ in confirmed} <= set(groups)
    assert len(groups) - len(confirmed) <= 1  # at most the group that was committing when killed
    for g, *seqs in confirmed:
        assert [m.seq for m in groups[g]] == seqs == [g] * 9  # the sequence each put_many returned
    by_stream = defaultdict(list)
    for m in present:
        by_stream[m.stream].append(m.seq)
    assert all(seqs == list(range(1, len(seqs) + 1)) for seqs in by_stream.values())


def test_publisher_stores_the_batches_of_one_time_step_in_one_transaction_before_what_follows():
    topics = T.Topics("obx0", "net3", "gw-01")
    pub = GatewayPublisher(topics, MqttSettings("127.0.0.1", free_port(), client_id="obx0-gw"), readings_batch=2)
    groups = []
    put_many = pub.outbox.put_many
    pub.outbox.put_many = lambda messages: groups.append([(m.stream, m.kind) for m in messages]) or put_many(messages)
    sensors = ["F-1", "F-2", "F-3"]
    for step in range(2):  # every sensor's batch fills up at step 1
        for sensor in sensors:
            pub.add_reading(Reading(T0 + step * 60_000, "net3", "gw-01", sensor, "flow", 1.0, "L/s"))
    pub.publish_detection(detection())  # goes in the same transaction, after the batches made before it
    pub.add_reading(Reading(T0 + 120_000, "net3", "gw-01", "F-1", "flow", 1.0, "L/s"))
    pub.add_reading(Reading(T0 + 180_000, "net3", "gw-01", "F-1", "flow", 1.0, "L/s"))
    pub.add_reading(Reading(T0 + 240_000, "net3", "gw-01", "F-2", "flow", 1.0, "L/s"))  # F-1's step is over
    pub.publish_alert(alert())
    assert groups == [
        [(topics.readings(s), READING) for s in sensors] + [(topics.detections("leak"), DETECTION)],
        [(topics.readings("F-1"), READING)],
        [(topics.alerts, ALERT)],
    ]
    assert pub.counters["messages_published"] == 6 and pub.counters["readings_published"] == 8
    sent = pub.outbox.take(100)
    assert [(m.stream, m.seq) for m in sent] == [(topics.readings(s), 1) for s in sensors] + [
        (topics.detections("leak"), 1),
        (topics.readings("F-1"), 2),
        (topics.alerts, 1),
    ]
    pub.flush()  # F-2's one reading
    assert groups[-1] == [(topics.readings("F-2"), READING)] and pub.counters["readings_published"] == 9
    pub.outbox.close()


# ---- behind the publisher, with a real broker ----------------------------------------------


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    """A private Mosquitto with persistence, so the spy's session survives a stop and start."""
    with LocalServices(tmp_path_factory.mktemp("outbox-broker"), influxdb=False, mosquitto_persistence=True) as s:
        yield s


class Spy:
    """A persistent subscriber: records (topic, seq, payload) of everything the broker delivers."""

    def __init__(self, port: int, topic: str, client_id: str):
        self.got: list[tuple[str, int | None, bytes]] = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.port = port
        self.lock = threading.Lock()

    def _on_message(self, client, userdata, message):
        props = dict(getattr(message.properties, "UserProperty", []) or [])
        with self.lock:
            self.got.append((message.topic, int(props["seq"]) if "seq" in props else None, message.payload))

    def connect(self) -> Spy:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self.client.connect("127.0.0.1", self.port, clean_start=False, properties=props)
        self.client.loop_start()
        return self

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def wait_for(self, count: int, timeout_s: float = 30) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if len(self.got) >= count:
                return True
            time.sleep(0.05)
        return False


def readings(n: int, sensor: str) -> list[Reading]:
    return [Reading(T0 + i * 60_000, "net3", "gw-01", sensor, "flow", 100.0 + i / 8, "L/s") for i in range(n)]


def test_offline_publisher_fills_the_outbox_and_delivers_everything_in_order_when_the_broker_returns(broker, tmp_path):
    prefix = "obx1"
    spy = Spy(broker.mqtt_port, f"{prefix}/#", "obx1-spy").connect()
    time.sleep(0.3)
    spy.close()
    broker.stop_service("mosquitto")
    try:
        topics = T.Topics(prefix, "net3", "gw-01")
        settings = MqttSettings("127.0.0.1", broker.mqtt_port, client_id="obx1-gw")
        pub = GatewayPublisher(
            topics, settings, readings_batch=10, outbox=Outbox(tmp_path / "o.sqlite3"), reconnect_max_s=1
        ).start()
        for r in readings(600, "F-lake") + readings(300, "P-15"):
            pub.add_reading(r)
        pub.publish_detection(detection())
        pub.publish_alert(alert())
        pub.publish_status()
        assert not pub.wait_acked(1.0)
        assert len(pub.outbox) == 60 + 30 + 3 and not pub.connected
    finally:
        broker.start_service("mosquitto")
    spy.connect()
    try:
        assert pub.close(timeout_s=30)
        assert spy.wait_for(93 + 2)  # + online and offline status
    finally:
        spy.close()
    by_stream = defaultdict(list)
    for topic, seq, _ in spy.got:
        if seq is not None:
            by_stream[topic].append(seq)
    assert by_stream[topics.readings("F-lake")] == list(range(1, 61))
    assert by_stream[topics.readings("P-15")] == list(range(1, 31))
    assert by_stream[topics.alerts] == [1] and by_stream[topics.detections("leak")] == [1]
    landed = [
        r
        for topic, _, body in spy.got
        if topic == topics.readings("F-lake")
        for r in payloads.decode(prefix, topic, body)
    ]
    assert landed == readings(600, "F-lake")
    # The queued status says how long the backlog was when it was made.
    (status,) = [json.loads(body) for topic, seq, body in spy.got if topic == topics.status and seq == 1]
    assert status["counters"]["outbox_backlog"] == 92 and status["counters"]["outbox_dropped_readings"] == 0


# ---- behind the runner -------------------------------------------------------------------

CONFIG = """
site: net3
gateway: gw-9
sensors:
  - {{id: F-in, quantity: flow, driver: replay, column: "10"}}
  - {{id: P-1, quantity: pressure, driver: replay, column: "10"}}
sources:
  replay: {{file: zone.npz}}
models:
  - {{name: mnf, type: mnf, zone_inflow: [{{sensor: F-in}}], history_days: 2}}
mqtt: {{host: 127.0.0.1, port: {port}, topic_prefix: {prefix}, readings_batch: 20}}
storage: {{data_dir: gw}}
"""


def small_zone(path: Path):
    import numpy as np

    from edge.datasets import ZoneDataset

    steps = 96 * 6
    t = T0 + np.arange(steps, dtype=np.int64) * 900_000
    hours = (t // 3_600_000) % 24
    leak = np.where(np.arange(steps) >= 96 * 4, 12.0, 0.0)
    flow = 30 + 15 * np.sin((hours - 6) / 24 * 2 * np.pi) + leak
    values = np.stack([flow, np.full(steps, 52.0)], axis=1)
    return ZoneDataset(t, values, ["10", "10"], ["flow", "pressure"], ["L/s", "m"], leak).save(path)


def test_runner_started_with_the_broker_down_keeps_everything_and_a_restart_delivers_it_without_resending(
    broker, tmp_path
):
    from gateway.config import load_config
    from gateway.device.runner import GatewayRunner

    small_zone(tmp_path / "zone.npz")
    (tmp_path / "gw.yaml").write_text(CONFIG.format(port=free_port(), prefix="obx3"))
    config = load_config(tmp_path / "gw.yaml")
    made: list = []  # the summary only counts: keep the alerts to compare with what arrives
    offline = GatewayRunner.from_config(config, resume=True).run(drain_timeout_s=0.5, on_output=made.append)
    assert not offline.all_acknowledged
    assert offline.readings == 2 * 96 * 6 and offline.alerts
    batches = 2 * -(-96 * 6 // 20)  # two sensors, 576 readings each, 20 to a message
    assert offline.outbox_left == batches + offline.detections + offline.alerts + 1  # + a status
    assert len(made) == offline.detections + offline.alerts

    spy = Spy(broker.mqtt_port, "obx3/#", "obx3-spy").connect()
    try:
        time.sleep(0.3)
        online = GatewayRunner.from_config(config, mqtt_port=broker.mqtt_port, resume=True).run()
        assert online.all_acknowledged
        assert online.readings == 0 and online.resumed == 2 * 96 * 6  # nothing made twice
        assert online.detections == 0 and online.alerts == 0
        assert spy.wait_for(offline.outbox_left + 3)  # + online, a status, offline
        time.sleep(0.5)
    finally:
        spy.close()
    sent = [(topic, seq) for topic, seq, _ in spy.got if seq is not None]
    assert len(sent) == len(set(sent)) == offline.outbox_left + 1  # no message twice
    alerts = [json.loads(body) for topic, _, body in spy.got if topic.endswith("/alerts")]
    assert [a["alert_id"] for a in alerts] == [a.alert_id for a in made if isinstance(a, Alert)]


# ---- `frugalsense run`: errors a technician can act on -------------------------------------


def write_gateway(tmp_path: Path, **replace) -> Path:
    small_zone(tmp_path / "zone.npz")
    text = CONFIG.format(port=free_port(), prefix="obx4")
    for old, new in replace.items():
        text = text.replace(old, new)
    path = tmp_path / "gw.yaml"
    path.write_text(text)
    return path


def test_run_refuses_an_invalid_config_with_file_and_line(tmp_path, capsys):
    from gateway.cli import main

    path = write_gateway(tmp_path, **{"quantity: flow": "quantity: flwo"})
    assert main(["run", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}:5" in err and "did you mean 'flow'" in err and "Traceback" not in err


def test_run_says_which_dataset_is_missing(tmp_path, capsys):
    from gateway.cli import main

    path = write_gateway(tmp_path, **{"file: zone.npz": "file: nowhere.npz"})
    assert main(["run", str(path)]) == 2
    assert "nowhere.npz: no such dataset file" in capsys.readouterr().err


def test_run_refuses_a_port_out_of_range(tmp_path, capsys):
    from gateway.cli import main

    assert main(["run", str(write_gateway(tmp_path)), "--mqtt-port", "70000"]) == 2
    assert "--mqtt-port must be between 1 and 65535" in capsys.readouterr().err


def test_run_refuses_to_share_an_outbox_with_a_running_gateway(tmp_path, capsys):
    from gateway.cli import main

    path = write_gateway(tmp_path)
    with Outbox(tmp_path / "gw" / "outbox.sqlite3"):  # what a running gateway holds
        assert main(["run", str(path)]) == 2
    assert "another gateway process is using the outbox" in capsys.readouterr().err
