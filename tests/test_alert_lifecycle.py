"""The alert lifecycle end to end: `frugalsense alert` -> real Mosquitto -> bridge -> alert_state in real InfluxDB.

The commands run in-process through the CLI's ``main``, as a technician would type them;
the bridge is the real one, on a private prefix and database per test (as tests/test_bridge.py).
"""

from __future__ import annotations

import itertools
import json
import time

import pytest

from edge.contracts import AlertState
from gateway.bridge.influx_writer import InfluxV1Writer, WriteError
from gateway.bridge.service import Bridge
from gateway.cli import main
from gateway.device.publisher import GatewayPublisher
from gateway.local_services.process import free_port
from gateway.local_services.services import LocalServices
from gateway.protocol import topics as T
from gateway.protocol.alert_commands import decode_command, encode_command
from gateway.protocol.mqtt_client import MqttSettings
from tests.mqtt_clients import Collector, Publisher
from tests.test_contracts import T0, alert
from tests.test_security import BRIDGE_USER, GW1, OPERATOR, PASSWORDS, Fleet

_n = itertools.count()
LEAK, BURST = "leak-2026-03-02", "burst-2026-03-02"


@pytest.fixture
def lane(services):
    """A private prefix, database and bridge per test."""
    i = next(_n)
    prefix, db = f"fsalert{i}", f"alert_test_{i}"
    writer = InfluxV1Writer(services.influx_url, db)
    settings = MqttSettings(services.mqtt_host, services.mqtt_port, client_id=f"alert-bridge-{i}")
    bridge = Bridge(settings, writer, prefix=prefix).start()
    yield prefix, db, writer, bridge
    bridge.stop()


def alert_cmd(capsys, *argv: str) -> tuple[int, str, str]:
    """Run `frugalsense alert ARGV`; its exit code, stdout and stderr."""
    capsys.readouterr()
    code = main(["alert", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def mqtt(services, prefix: str) -> list[str]:
    return ["--mqtt-host", services.mqtt_host, "--mqtt-port", str(services.mqtt_port), "--prefix", prefix]


def influx(services, db: str) -> list[str]:
    return ["--influx-url", services.influx_url, "--database", db]


def on_gw01(alert_id: str = LEAK) -> list[str]:
    return [alert_id, "--site", "net3", "--gateway", "gw-01"]


def rows(writer: InfluxV1Writer, query: str) -> list[dict]:
    return [dict(zip(s["columns"], v, strict=True)) for s in writer.query(query) for v in s["values"]]


def landed(writer: InfluxV1Writer, count: int, measurement: str = "alert_state", timeout_s: float = 30.0) -> bool:
    """Wait until ``measurement`` holds ``count`` points (a PUBACK to the sender comes before the bridge's write)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if len(rows(writer, f"SELECT * FROM {measurement}")) >= count:
                return True
        except WriteError:  # the bridge has not created the database yet
            pass
        time.sleep(0.05)
    return False


# ---- the four changes land with the fixed schema ----------------------------------------------


def test_each_change_is_one_alert_state_point_with_the_fixed_schema(services, lane, capsys):
    prefix, db, writer, bridge = lane
    commands = T.Topics(prefix, "net3", "gw-01").alert_commands
    with Collector(services.mqtt_port, commands, host=services.mqtt_host, client_id=f"{prefix}-spy") as spy:
        changes = [
            ["ack", *on_gw01(), "--by", "m.dupont", "--text", "crew on site"],
            ["assign", *on_gw01(), "--by", "m.dupont", "--to", "équipe 2"],
            ["comment", *on_gw01(), "--by", "j.martin", "--text", 'valve V-12 closed, "temporary"'],
            ["resolve", *on_gw01(), "--by", "j.martin"],
        ]
        for change in changes:
            code, out, err = alert_cmd(capsys, *change, *mqtt(services, prefix))
            assert code == 0, err
            assert out.startswith(f"sent {change[0]} of alert {LEAK} on net3/gw-01 by ")
        assert spy.wait(4)
        sent = [decode_command(prefix, topic, payload) for topic, payload in spy.payloads()]
    assert landed(writer, 4) and bridge.wait_idle(quiet_s=0.5, timeout_s=30)

    points = rows(writer, "SELECT * FROM alert_state")
    assert [(p["action"], p["by"], p["text"], p["assignee"]) for p in points] == [
        ("ack", "m.dupont", "crew on site", None),
        ("assign", "m.dupont", None, "équipe 2"),
        ("comment", "j.martin", 'valve V-12 closed, "temporary"', None),
        ("resolve", "j.martin", None, None),
    ]
    assert {(p["site"], p["gateway"], p["alert_id"]) for p in points} == {("net3", "gw-01", LEAK)}
    # The point's time is the command's time_ms, to the millisecond.
    assert [p["time"] for p in points] == [c.time_ms for c in sent]
    tags = rows(writer, "SHOW TAG KEYS FROM alert_state")
    assert sorted(t["tagKey"] for t in tags) == ["action", "alert_id", "gateway", "site"]
    fields = rows(writer, "SHOW FIELD KEYS FROM alert_state")
    assert sorted((f["fieldKey"], f["fieldType"]) for f in fields) == [
        ("assignee", "string"),
        ("by", "string"),
        ("text", "string"),
    ]


def test_by_defaults_to_the_login_and_mistakes_are_one_line(services, lane, capsys, monkeypatch):
    prefix, db, writer, bridge = lane
    monkeypatch.setenv("USER", "technicien")
    assert alert_cmd(capsys, "ack", *on_gw01(), *mqtt(services, prefix))[0] == 0
    assert landed(writer, 1)
    assert [p["by"] for p in rows(writer, "SELECT * FROM alert_state")] == ["technicien"]

    code, _, err = alert_cmd(capsys, "ack", "leak 2", "--site", "net3", "--gateway", "gw-01", *mqtt(services, prefix))
    assert code == 2 and "alert id 'leak 2' must be 1-64 letters" in err
    with pytest.raises(SystemExit):  # argparse: a comment without its text
        main(["alert", "comment", *on_gw01(), *mqtt(services, prefix)])
    assert "--text" in capsys.readouterr().err
    # Nobody subscribed (no bridge on this prefix): the broker says so, and so does the command.
    code, _, err = alert_cmd(capsys, "ack", *on_gw01(), *mqtt(services, f"{prefix}-nobody"))
    assert code == 1 and "nobody is subscribed to" in err and "it is not stored" in err
    unused_port = str(free_port())  # nothing listens there
    code, _, err = alert_cmd(capsys, "ack", *on_gw01(), "--mqtt-host", "127.0.0.1", "--mqtt-port", unused_port)
    assert code == 2 and f"cannot reach the MQTT broker 127.0.0.1:{unused_port}" in err


# ---- alert list --------------------------------------------------------------------------------


def test_alert_list_shows_each_alert_with_its_lifecycle(services, lane, capsys):
    prefix, db, writer, bridge = lane
    settings = MqttSettings(services.mqtt_host, services.mqtt_port, client_id=f"{prefix}-gw-01")
    pub = GatewayPublisher(T.Topics(prefix, "net3", "gw-01"), settings).connect()
    pub.publish_alert(alert(alert_id=LEAK))
    pub.publish_alert(alert(alert_id=BURST, kind="burst", severity="critical", time_ms=T0 + 7_200_000))
    pub.publish_alert(alert(alert_id=BURST, kind="burst", state=AlertState.CLEARED, time_ms=T0 + 90_000_000))
    assert pub.close()
    for change in (
        ["ack", *on_gw01(), "--by", "m.dupont"],
        ["assign", *on_gw01(), "--by", "m.dupont", "--to", "crew-2"],
        ["comment", *on_gw01(), "--by", "j.martin", "--text", "leak found under rue Pasteur"],
    ):
        assert alert_cmd(capsys, *change, *mqtt(services, prefix))[0] == 0
    assert landed(writer, 3, "alert") and landed(writer, 3)

    code, out, err = alert_cmd(capsys, "list", *influx(services, db))
    assert code == 0, err
    header, leak, burst, summary = out.splitlines()
    assert header.split()[:8] == ["ALERT", "SITE", "GATEWAY", "KIND", "SEVERITY", "RAISED", "CLEARED", "ACKNOWLEDGED"]
    assert leak.split()[:9] == [LEAK, "net3", "gw-01", "leak", "warning", "2026-03-02", "01:00", "-", "m.dupont"]
    assert "crew-2" in leak and leak.endswith('"leak found under rue Pasteur" (j.martin)')
    raised_cleared = ["2026-03-02", "02:00", "2026-03-03", "01:00"]
    nobody_acted = ["-"] * 4  # acknowledged by, assignee, resolved, comment
    assert burst.split() == [BURST, "net3", "gw-01", "burst", "critical", *raised_cleared, *nobody_acted]
    assert summary == f"2 alert(s) shown; 1 of 2 in database {db} open; times UTC"

    code, out, _ = alert_cmd(capsys, "list", "--open", "--site", "net3", *influx(services, db))
    assert code == 0 and [line.split()[0] for line in out.splitlines()[1:-1]] == [LEAK]
    assert alert_cmd(capsys, "resolve", *on_gw01(), "--by", "j.martin", *mqtt(services, prefix))[0] == 0
    assert landed(writer, 4)
    code, out, _ = alert_cmd(capsys, "list", "--open", *influx(services, db))
    assert code == 0 and out == f"no open alerts in database {db}\n"
    code, out, _ = alert_cmd(capsys, "list", "--site", "net9", *influx(services, db))
    assert code == 0 and out == "no alerts in site net9\n"
    code, _, err = alert_cmd(capsys, "list", "--site", "net3' OR 1=1", *influx(services, db))
    assert code == 2 and "--site: site" in err


# ---- garbage on the command topic -------------------------------------------------------------


def test_malformed_commands_are_counted_and_dead_lettered_and_good_ones_still_land(services, lane, capsys):
    prefix, db, writer, bridge = lane
    topic = T.Topics(prefix, "net3", "gw-01").alert_commands
    now_ms = int(time.time() * 1000)
    good = {"v": 1, "alert_id": LEAK, "action": "comment", "by": "m.dupont", "time_ms": now_ms, "text": "x"}
    bad = [
        b"{nope",
        b'{"v":2,"alert_id":"a"}',
        json.dumps(good | {"action": "close"}).encode(),
        json.dumps({k: v for k, v in good.items() if k != "by"}).encode(),
        json.dumps(good | {"text": None}).encode(),  # a comment without text
        json.dumps(good | {"time_ms": now_ms + 40 * 86_400_000}).encode(),  # an operator's clock 40 days ahead
    ]
    with Collector(
        services.mqtt_port, T.deadletter_topic(prefix), host=services.mqtt_host, client_id=f"{prefix}-spy"
    ) as spy:
        with Publisher(services.mqtt_port, host=services.mqtt_host, client_id=f"{prefix}-raw") as raw:
            for payload in bad:
                raw.publish(topic, payload)
        assert alert_cmd(capsys, "ack", *on_gw01(), "--by", "m.dupont", *mqtt(services, prefix))[0] == 0
        assert spy.wait(len(bad))
        assert landed(writer, 1)
    dead = [json.loads(payload) for _, payload in spy.payloads()]
    assert [d["reason"] for d in dead] == [
        "not_json",
        "schema_version",
        "invalid",
        "invalid",
        "invalid",
        "time_out_of_range",
    ]
    assert "action must be one of ack, assign, comment, resolve, got 'close'" in dead[2]["detail"]
    assert "missing field 'by'" in dead[3]["detail"] and "comment needs a text" in dead[4]["detail"]
    assert {d["topic"] for d in dead} == {topic}
    assert bridge.deadletters == {"not_json": 1, "schema_version": 1, "invalid": 3, "time_out_of_range": 1}
    assert [p["action"] for p in rows(writer, "SELECT * FROM alert_state")] == ["ack"]


# ---- the broker's ACL: only operators -----------------------------------------------------------


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """The TLS-only Mosquitto with passwords and the fleet ACL of tests/test_security.py (operator m.dupont@net3)."""
    root = tmp_path_factory.mktemp("alert-fleet")
    files = Fleet(root)
    with LocalServices(root / "services", influxdb=False, mosquitto_security=files.security) as broker:
        files.broker = broker
        yield files


def test_only_an_operator_login_may_send_and_a_gateway_gets_a_technicians_error(fleet, services, capsys, monkeypatch):
    port = fleet.broker.mqtt_port
    writer = InfluxV1Writer(services.influx_url, "alert_acl_test")
    bridge_settings = MqttSettings(
        "127.0.0.1",
        port,
        client_id="alert-acl-bridge",
        username=BRIDGE_USER,
        password=PASSWORDS[BRIDGE_USER],
        ca_file=str(fleet.ca),
    )
    for user, password in PASSWORDS.items():
        monkeypatch.setenv(f"PW_{user.replace('/', '_').replace('@', '_').replace('.', '_')}", password)
    monkeypatch.setenv("PW_WRONG", "guess")

    def login(user: str, env: str | None = None) -> list[str]:
        env = env or f"PW_{user.replace('/', '_').replace('@', '_').replace('.', '_')}"
        tls = ["--mqtt-host", "127.0.0.1", "--mqtt-port", str(port), "--mqtt-ca-file", str(fleet.ca)]
        return [*tls, "--mqtt-username", user, "--mqtt-password-env", env]

    bridge = Bridge(bridge_settings, writer, prefix="frugalsense").start()
    try:
        code, out, err = alert_cmd(capsys, "ack", *on_gw01(), "--by", "m.dupont", *login(OPERATOR))
        assert code == 0, err
        code, _, err = alert_cmd(capsys, "resolve", *on_gw01(), "--by", "gw-01", *login(GW1))
        assert code == 2
        assert "refused the command on frugalsense/net3/gw-01/alert-commands: Not authorized" in err
        assert "Only operator logins may send alert commands: net3/gw-01 is not one" in err
        code, _, err = alert_cmd(capsys, "resolve", *on_gw01(), *login(OPERATOR, "PW_WRONG"))
        assert code == 2 and f"refused the login {OPERATOR}" in err
        code, _, err = alert_cmd(capsys, "comment", *on_gw01(), "--text", "plain", "--mqtt-port", str(port))
        assert code == 2 and "hung up before answering the connection: a TLS port spoken to without" in err
        assert alert_cmd(capsys, "comment", *on_gw01(), "--by", "m.dupont", "--text", "ok", *login(OPERATOR))[0] == 0
        assert landed(writer, 2)  # the refused ones were never routed: the broker said no before
    finally:
        bridge.stop()
    points = rows(writer, "SELECT * FROM alert_state")
    assert [(p["action"], p["by"]) for p in points] == [("ack", "m.dupont"), ("comment", "m.dupont")]


def test_the_command_payload_is_what_the_contract_says():
    from gateway.protocol.alert_commands import AlertCommand

    c = AlertCommand("net3", "gw-01", LEAK, "assign", "m.dupont", T0, assignee="crew-2")
    assert json.loads(encode_command(c)) == {
        "v": 1,
        "alert_id": LEAK,
        "action": "assign",
        "by": "m.dupont",
        "time_ms": T0,
        "text": None,
        "assignee": "crew-2",
    }
