"""`frugalsense notify` as a process, with the real Mosquitto, a real SMTP server (aiosmtpd) and the demo's leak.

The alerts are the gateway's own: the demo zone (make demo) run through the gateway, or its
learned leak model's raise of ``leak-20260310T1330`` published as the gateway publishes it.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge.contracts import Alert, AlertState, Severity
from gateway.config import load_config
from gateway.device.runner import GatewayRunner, build_detectors, build_sources
from gateway.protocol import payloads
from gateway.protocol import topics as T
from gateway.protocol.alert_commands import AlertCommand, command_topic, encode_command
from gateway.protocol.mqtt_client import MqttSettings, make_client
from tests.test_end_to_end import demo_config_text
from tests.test_notify_parts import Mailbox

ROOT = Path(__file__).resolve().parents[1]
_n = itertools.count()


@pytest.fixture(scope="module")
def demo_alerts(leak_run, tmp_path_factory) -> list[Alert]:
    """The alerts the demo gateway raises on the demo zone, its detectors run as the service runs them."""
    root = tmp_path_factory.mktemp("notify_demo")
    (root / "gateway.yaml").write_text(demo_config_text(root, leak_run.save(root / "zone.npz")))
    config = load_config(root / "gateway.yaml")
    detectors, out = build_detectors(config), []
    for source in build_sources(config):
        for reading in source:
            for detector in detectors:
                out += detector.update(reading)
    for detector in detectors:
        out += detector.flush()
    return [a for a in out if isinstance(a, Alert)]


def learned_raise(demo_alerts) -> Alert:
    return next(a for a in demo_alerts if a.alert_id == "leak-20260310T1330" and a.state is AlertState.RAISED)


def cleared(a: Alert) -> Alert:
    """The clear the learned leak detector would send (edge/detectors/leak_model.py; the demo's leak runs to the end
    of its two weeks, so the gateway never clears it there)."""
    return dataclasses.replace(
        a,
        time_ms=a.time_ms + 6 * 3_600_000,
        state=AlertState.CLEARED,
        severity=Severity.INFO,
        message="Leak alarm cleared: 4 steps in a row scored below 0.50",
        explanation={},
    )


class NotifierProcess:
    """`frugalsense notify` in a subprocess, on its own prefix, client id and state folder."""

    def __init__(self, services, tmp_path: Path, rules: str):
        i = next(_n)
        self.prefix, self.client_id = f"notify{i}", f"notify-test-{i}"
        self.state_dir = tmp_path / "state"
        self.rules = tmp_path / "notify.yaml"
        self.rules.write_text(rules)
        self.services, self.log = services, tmp_path / "notify.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> NotifierProcess:
        (self.state_dir / "status.json").unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "gateway.cli", "notify", "--config", str(self.rules)]
        cmd += ["--state-dir", str(self.state_dir), "--prefix", self.prefix, "--client-id", self.client_id]
        cmd += ["--mqtt-host", self.services.mqtt_host, "--mqtt-port", str(self.services.mqtt_port)]
        cmd += ["--stats-every", "1"]
        self.proc = subprocess.Popen(cmd, stdout=open(self.log, "a"), stderr=subprocess.STDOUT, cwd=ROOT)
        wait(lambda: self._status().get("subscribed"), 30, lambda: f"notifier not subscribed: {self.log.read_text()}")
        return self

    def _status(self) -> dict:
        try:
            return json.loads((self.state_dir / "status.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            assert self.proc is not None and self.proc.poll() is None, self.log.read_text()
            return {}

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(60)

    def query(self, sql: str) -> list[tuple]:
        db = sqlite3.connect(f"file:{self.state_dir / 'notify.sqlite'}?mode=ro", uri=True, timeout=10)
        try:
            return db.execute(sql).fetchall()
        finally:
            db.close()

    def counter(self, name: str) -> int:
        rows = self.query(f"SELECT value FROM counters WHERE name = '{name}'")
        return rows[0][0] if rows else 0

    def due(self) -> int:
        return self.query("SELECT COUNT(*) FROM outbox WHERE status = 'due'")[0][0]


def wait(condition, timeout_s: float, why) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(why() if callable(why) else why)


class Publisher:
    """A plain MQTT client publishing as the gateway and the operators' tools do (QoS 1)."""

    def __init__(self, services, prefix: str):
        self.prefix = prefix
        self.client = make_client(MqttSettings(services.mqtt_host, services.mqtt_port, client_id=""))
        self.client.connect(services.mqtt_host, services.mqtt_port)
        self.client.loop_start()

    def alert(self, a: Alert) -> None:
        self.raw(T.Topics(self.prefix, a.site, a.gateway).alerts, payloads.encode_alert(a))

    def command(self, c: AlertCommand) -> None:
        self.raw(command_topic(self.prefix, c.site, c.gateway), encode_command(c))

    def raw(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def rules_for(box: Mailbox, **route) -> str:
    lines = [
        "delivery: {first_retry_s: 0.5, max_retry_s: 1, max_attempts: 50, min_send_interval_s: 0}",
        "routes:",
        "  - name: water",
    ]
    lines += ["    match: {kind: leak}", f'    urls: ["{box.url()}"]']
    lines += [f"    {k}: {v}" for k, v in {"group_window_s": 0, **route}.items()]
    return "\n".join(lines) + "\n"


@pytest.fixture
def mailbox():
    box = Mailbox().start()
    yield box
    box.stop()


def test_one_leak_of_the_demo_zone_is_exactly_one_email_with_the_alerts_text(services, tmp_path, leak_run, mailbox):
    """The demo gateway runs over the demo zone and publishes its alerts; the notifier groups the leak's two
    raises (learned model, then night flow) into one e-mail."""
    notifier = NotifierProcess(services, tmp_path, rules_for(mailbox, group_window_s=20)).start()
    try:
        text = demo_config_text(tmp_path, leak_run.save(tmp_path / "zone.npz"))
        (tmp_path / "gateway.yaml").write_text(
            text.replace("topic_prefix: frugalsense", f"topic_prefix: {notifier.prefix}")
        )
        runner = GatewayRunner.from_config(
            load_config(tmp_path / "gateway.yaml"), mqtt_host=services.mqtt_host, mqtt_port=services.mqtt_port
        )
        raised = []
        summary = runner.run(drain_timeout_s=60, on_output=lambda o: raised.append(o) if isinstance(o, Alert) else None)
        assert summary.all_acknowledged
        assert [a.alert_id for a in raised] == ["leak-20260310T1330", "leak-2026-03-11"]
        [(subject, body)] = mailbox.wait_for(1, timeout_s=60)
        wait(lambda: notifier.due() == 0 and notifier.counter("raises_paged") == 2, 30, "notifier still busy")
        assert len(mailbox.texts()) == 1
        assert subject == "2 alert updates – net3-north"
        assert raised[0].message in body  # "Possible leak of about 141.9 L/s since 2026-03-10 13:30 UTC ..."
        assert "Estimated leak flow: 141.9 L/s" in body and "Most affected sensors: 173, 101, 141" in body
    finally:
        notifier.stop()


def test_an_ack_stops_the_repeat_and_the_clear_is_one_resolved_message(services, tmp_path, demo_alerts, mailbox):
    repeat_s = 2
    notifier = NotifierProcess(services, tmp_path, rules_for(mailbox, repeat_every_min=repeat_s / 60)).start()
    publisher = Publisher(services, notifier.prefix)
    try:
        leak = learned_raise(demo_alerts)
        publisher.alert(leak)
        mails = mailbox.wait_for(2, timeout_s=30)  # the raise, then the first reminder 2 s later
        assert mails[0][0] == "[CRITICAL] Possible leak – net3-north" and leak.message in mails[0][1]
        assert mails[1][0] == "[CRITICAL] Reminder 1, not acknowledged: Possible leak – net3-north"

        publisher.command(AlertCommand(leak.site, leak.gateway, leak.alert_id, "ack", "m.dupont", leak.time_ms))
        wait(lambda: notifier.counter("acks") == 1 and notifier.due() == 0, 30, "ack not taken")
        after_ack = len(mailbox.texts())
        time.sleep(3 * repeat_s)  # three repeat intervals: none may come
        assert len(mailbox.texts()) == after_ack
        assert notifier.query("SELECT COUNT(*) FROM outbox WHERE event LIKE 'repeat:%' AND status = 'due'") == [(0,)]

        publisher.alert(cleared(leak))
        publisher.alert(cleared(leak))  # the broker or the gateway sending it twice changes nothing
        mails = mailbox.wait_for(after_ack + 1, timeout_s=30)
        wait(lambda: notifier.counter("alerts_after_close") == 1 and notifier.due() == 0, 30, "clear not taken")
        resolved = [m for m in mailbox.texts() if m[0].startswith("Resolved")]
        assert len(resolved) == 1 and len(mailbox.texts()) == after_ack + 1
        assert resolved[0][0] == "Resolved: Possible leak – net3-north"
        assert "Leak alarm cleared: 4 steps in a row scored below 0.50" in resolved[0][1]
    finally:
        publisher.close()
        notifier.stop()


def test_garbage_on_the_alerts_topic_is_counted_and_the_next_alert_goes_out(services, tmp_path, demo_alerts, mailbox):
    notifier = NotifierProcess(services, tmp_path, rules_for(mailbox)).start()
    publisher = Publisher(services, notifier.prefix)
    try:
        topic = T.Topics(notifier.prefix, "net3-north", "gw-net3-01").alerts
        good = json.loads(payloads.encode_alert(learned_raise(demo_alerts)))
        garbage = [
            b"",
            b"\xff\xfe",
            b"not json",
            b"[1,2]",
            b'{"v":9}',
            json.dumps({**good, "severity": "huge"}).encode(),
        ]
        garbage += [json.dumps({**good, "since": "yesterday"}).encode(), b"{" * 100_000, b"x" * 300_000]
        for i in range(200):
            publisher.raw(topic, garbage[i % len(garbage)])
        commands = command_topic(notifier.prefix, "net3-north", "gw-net3-01")
        for payload in (b"ack!", b'{"v":1,"action":"close"}', b'{"v":1,"action":"ack","alert_id":"x"}'):
            publisher.raw(commands, payload)
        publisher.alert(learned_raise(demo_alerts))
        [(subject, _)] = mailbox.wait_for(1, timeout_s=30)
        assert subject == "[CRITICAL] Possible leak – net3-north"
        rejected = dict(notifier.query("SELECT name, value FROM counters WHERE name LIKE 'rejected_%'"))
        assert sum(v for k, v in rejected.items() if k != "rejected_bad_command") == 200, rejected
        assert rejected["rejected_bad_command"] == 3
        assert set(rejected) >= {"rejected_not_json", "rejected_not_utf8", "rejected_invalid", "rejected_too_large"}
        assert notifier.proc is not None and notifier.proc.poll() is None
    finally:
        publisher.close()
        notifier.stop()


def test_smtp_down_then_up_delivers_once_after_retries(services, tmp_path, demo_alerts):
    box = Mailbox()  # down: nothing listens on its port yet
    notifier = NotifierProcess(services, tmp_path, rules_for(box)).start()
    publisher = Publisher(services, notifier.prefix)
    try:
        publisher.alert(learned_raise(demo_alerts))
        wait(lambda: notifier.counter("send_failures") >= 3, 30, "no failed attempts while SMTP is down")
        assert box.mails == []
        box.start()
        [(subject, _)] = box.wait_for(1, timeout_s=30)
        wait(lambda: notifier.due() == 0, 30, "still due")
        assert len(box.texts()) == 1 and subject == "[CRITICAL] Possible leak – net3-north"
        assert notifier.query("SELECT status, attempts FROM outbox") == [("sent", notifier.counter("send_failures"))]
    finally:
        publisher.close()
        notifier.stop()
        box.stop()


def test_kill_9_mid_stream_loses_nothing_and_repeats_at_most_the_message_in_flight(
    services, tmp_path, demo_alerts, mailbox
):
    """60 raises and 20 clears while the notifier is killed three times; every mail counted by alert id and event."""
    notifier = NotifierProcess(services, tmp_path, rules_for(mailbox)).start()
    publisher = Publisher(services, notifier.prefix)
    leak = learned_raise(demo_alerts)
    raises = [dataclasses.replace(leak, alert_id=f"leak-k{i:02d}", site=f"net3-s{i % 3}") for i in range(60)]
    stream = raises + [cleared(a) for a in raises[:20]]
    kills = 0
    try:
        for i, a in enumerate(stream):
            publisher.alert(a)
            if i in (15, 40, 65):
                wait(lambda n=i: len(mailbox.mails) >= n // 2, 60, "no mail before the kill")
                notifier.kill()
                kills += 1
                notifier.start()
        expected = {(a.alert_id, "raised") for a in raises} | {(a.alert_id, "resolved") for a in raises[:20]}
        mailbox.wait_for(len(expected), timeout_s=120)
        wait(lambda: notifier.due() == 0, 60, "still due")
        seen: dict[tuple[str, str], int] = {}
        received: dict[tuple[str, str], int] = {}  # the last receipt of each: the one the notifier marked
        for (subject, body), at_ms in zip(mailbox.texts(), mailbox.received_ms, strict=True):
            alert_id = next(w for line in body.splitlines() for w in line.split() if w.startswith("leak-k"))
            key = (alert_id, "resolved" if subject.startswith("Resolved") else "raised")
            seen[key] = seen.get(key, 0) + 1
            received[key] = at_ms
        assert set(seen) == expected  # 0 lost
        duplicates = sum(n - 1 for n in seen.values())
        assert duplicates <= kills  # only a send that succeeded in the instant before a kill
        # The window: from the SMTP server's receipt to the notifier's mark as sent (then its fsynced commit).
        rows = notifier.query("SELECT alert_key, event, sent_ms FROM outbox WHERE status = 'sent'")
        windows = sorted(sent - received[(key.rsplit("/", 1)[1], event.split(":")[0])] for key, event, sent in rows)
        print(
            f"\nkill -9 x{kills}: {len(expected)} notifications, 0 lost, {duplicates} duplicated; receipt-to-mark "
            f"window median {windows[len(windows) // 2]} ms, max {windows[-1]} ms"
        )
    finally:
        publisher.close()
        notifier.stop()
