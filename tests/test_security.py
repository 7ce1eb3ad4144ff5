"""A real Mosquitto, TLS only, with passwords, client certificates and the per-gateway ACL.

Every refusal is checked next to the same action allowed (own prefix, right password,
right certificate), so a broker that refused everything, or nothing, fails here.
"""

from __future__ import annotations

import socket
import ssl
import stat
import subprocess
import sys
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from edge.contracts import Reading
from gateway.bridge.influx_writer import InfluxV1Writer
from gateway.bridge.service import Bridge
from gateway.device.publisher import GatewayPublisher
from gateway.local_services.services import LocalServices
from gateway.protocol import topics as T
from gateway.protocol.mqtt_client import MqttSettings
from gateway.security.broker import BrokerSecurity, acl_text, gateway_user, write_password_file
from gateway.security.certs import issue_certificate, make_ca, write_pair
from tests.test_contracts import T0

ROOT = Path(__file__).resolve().parent.parent
PREFIX = "frugalsense"
BRIDGE_USER = "frugalsense-bridge"
GW1, GW2 = gateway_user("net3", "gw-01"), gateway_user("net3", "gw-02")
OPERATOR, NOTIFIER = "m.dupont@net3", "frugalsense-notify"
PASSWORDS = {GW1: "pw-gw-01", GW2: "pw-gw-02", BRIDGE_USER: "pw-bridge", OPERATOR: "pw-op", NOTIFIER: "pw-notify"}
NOT_AUTHORIZED = 135  # MQTT v5 reason code 0x87


class Fleet:
    """Paths of the generated CA, certificates and broker files."""

    def __init__(self, root: Path):
        self.root = root
        ca = make_ca("test fleet CA")
        self.ca = root / "ca.pem"
        write_pair(ca, self.ca, root / "ca.key")
        write_pair(
            issue_certificate(ca, "broker", dns_names=["localhost"], ip_addresses=["127.0.0.1"], server=True),
            root / "broker.pem",
            root / "broker.key",
        )
        for user in (GW1, GW2):
            name = user.replace("/", "_")
            write_pair(issue_certificate(ca, user), root / f"{name}.pem", root / f"{name}.key")
        # A certificate that looks right but comes from another CA.
        write_pair(issue_certificate(make_ca("intruder CA"), GW1), root / "intruder.pem", root / "intruder.key")
        # gw-01 announces itself to Home Assistant; gw-02 does not.
        (root / "acl").write_text(
            acl_text(PREFIX, BRIDGE_USER, home_assistant=[("net3", "gw-01")], operators=[OPERATOR])
        )
        write_password_file(root / "passwd", PASSWORDS)
        self.security = BrokerSecurity(
            ca_file=self.ca,
            cert_file=root / "broker.pem",
            key_file=root / "broker.key",
            password_file=root / "passwd",
            acl_file=root / "acl",
            client_cert_listener=True,
        )

    def cert(self, user: str) -> tuple[str, str]:
        name = user.replace("/", "_")
        return str(self.root / f"{name}.pem"), str(self.root / f"{name}.key")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    root = tmp_path_factory.mktemp("fleet")
    files = Fleet(root)
    with LocalServices(root / "services", influxdb=False, mosquitto_security=files.security) as broker:
        files.broker = broker
        yield files


# ---- a small synchronous MQTT client for the checks ------------------------------------


class Client:
    """Connects and reports the CONNACK, PUBACK and SUBACK reason codes as plain ints."""

    def __init__(
        self,
        fleet: Fleet,
        client_id: str,
        *,
        user: str | None = None,
        password: str | None = None,
        protocol=mqtt.MQTTv5,
        tls: bool = True,
        cert: tuple[str, str] | None = None,
        port: int | None = None,
    ):
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol)
        if user:
            self.c.username_pw_set(user, password)
        if tls:
            certfile, keyfile = cert or (None, None)
            self.c.tls_set(ca_certs=str(fleet.ca), certfile=certfile, keyfile=keyfile)
        self.port = port or fleet.broker.mqtt_port
        self.connack: int | None = None
        self.acks: dict[int, int] = {}
        self.suback: list[int] | None = None
        self.received: list[tuple[str, bytes]] = []
        self.gone = False
        self.events = threading.Condition()
        self.c.on_connect = self._on_connect
        self.c.on_publish = self._on_publish
        self.c.on_subscribe = self._on_subscribe
        self.c.on_message = self._on_message
        self.c.on_disconnect = self._on_disconnect
        self.c.on_connect_fail = self._on_disconnect

    def _notify(self):
        with self.events:
            self.events.notify_all()

    def _on_connect(self, client, userdata, flags, reason, props):
        self.connack = reason.value
        self._notify()

    def _on_disconnect(self, *args):
        self.gone = True
        self._notify()

    def _on_publish(self, client, userdata, mid, reason, props):
        self.acks[mid] = reason.value
        self._notify()

    def _on_subscribe(self, client, userdata, mid, reasons, props):
        self.suback = [r.value for r in reasons]
        self._notify()

    def _on_message(self, client, userdata, message):
        self.received.append((message.topic, message.payload))
        self._notify()

    def wait(self, predicate, timeout_s: float = 10.0) -> bool:
        with self.events:
            return self.events.wait_for(predicate, timeout_s)

    def connect(self) -> int | None:
        """The CONNACK reason code, or None if the broker never sent one."""
        try:
            self.c.connect("127.0.0.1", self.port, keepalive=10)
        except (OSError, ssl.SSLError):
            return None
        self.c.loop_start()
        self.wait(lambda: self.connack is not None or self.gone, 5)
        return self.connack

    def publish(self, topic: str, payload: bytes = b"x") -> int:
        info = self.c.publish(topic, payload, qos=1)
        assert self.wait(lambda: info.mid in self.acks), f"no PUBACK for {topic}"
        return self.acks[info.mid]

    def subscribe(self, topic: str) -> list[int]:
        self.suback = None
        self.c.subscribe(topic, qos=1)
        assert self.wait(lambda: self.suback is not None)
        return self.suback

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture
def spy(fleet):
    """The bridge's user, reading every gateway's topics."""
    client = Client(fleet, "spy", user=BRIDGE_USER, password=PASSWORDS[BRIDGE_USER])
    assert client.connect() == 0
    assert client.subscribe(f"{PREFIX}/#") == [1]
    yield client
    client.close()


def own(user: str, tail: str = "readings/F-lake") -> str:
    return f"{PREFIX}/{user}/{tail}"


# ---- the ACL ------------------------------------------------------------------------------


def test_v5_gateway_is_refused_under_another_gateways_prefix(fleet, spy):
    gw = Client(fleet, "gw-01-v5", user=GW1, password=PASSWORDS[GW1])
    assert gw.connect() == 0
    try:
        assert gw.publish(own(GW2), b"forged") == NOT_AUTHORIZED
        assert gw.publish(f"{PREFIX}/deadletter", b"forged") == NOT_AUTHORIZED
        assert gw.publish(own(GW1), b"mine") == 0  # the same client, its own prefix: accepted
        assert spy.wait(lambda: (own(GW1), b"mine") in spy.received)
    finally:
        gw.close()
    assert [topic for topic, _ in spy.received] == [own(GW1)]


def test_v311_gateway_under_another_prefix_is_silently_dropped(fleet, spy):
    """MQTT 3.1.1 has no reason code in PUBACK: Mosquitto acknowledges, then drops the message."""
    gw = Client(fleet, "gw-01-v311", user=GW1, password=PASSWORDS[GW1], protocol=mqtt.MQTTv311)
    assert gw.connect() == 0
    try:
        assert gw.publish(own(GW2), b"forged") == 0
        # Messages of one connection arrive in order: once the marker is in, the forged one would be too.
        assert gw.publish(own(GW1, "status"), b"marker") == 0
        assert spy.wait(lambda: (own(GW1, "status"), b"marker") in spy.received)
    finally:
        gw.close()
    assert (own(GW2), b"forged") not in spy.received
    assert [topic for topic, _ in spy.received] == [own(GW1, "status")]


def test_gateway_does_not_get_other_gateways_messages(fleet, spy):
    """Mosquitto 2.0 grants every SUBSCRIBE and applies read rights to each message it delivers."""
    reader = Client(fleet, "gw-01-reader", user=GW1, password=PASSWORDS[GW1])
    writer = Client(fleet, "gw-02-writer", user=GW2, password=PASSWORDS[GW2])
    assert reader.connect() == 0 and writer.connect() == 0
    try:
        assert reader.subscribe(f"{PREFIX}/#") == [1]
        assert writer.publish(own(GW2), b"gw-02 data") == 0
        assert spy.wait(lambda: (own(GW2), b"gw-02 data") in spy.received)  # the bridge's user gets it
        # A round trip on the reader's own connection: anything sent to it before is in by then.
        assert reader.publish(own(GW1), b"ping") == 0
    finally:
        reader.close()
        writer.close()
    assert reader.received == []


# ---- who may connect ------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [mqtt.MQTTv5, mqtt.MQTTv311], ids=["v5", "v3.1.1"])
def test_client_without_credentials_is_refused(fleet, protocol):
    # paho reports v3.1.1's CONNACK codes as v5 reason codes: 5 "not authorized" becomes 135.
    anonymous = Client(fleet, "anon", protocol=protocol)
    assert anonymous.connect() == NOT_AUTHORIZED
    anonymous.close()
    wrong = Client(fleet, "wrong", user=GW1, password="guess", protocol=protocol)
    assert wrong.connect() in (NOT_AUTHORIZED, 134)  # 134: bad user name or password
    wrong.close()
    right = Client(fleet, "right", user=GW1, password=PASSWORDS[GW1], protocol=protocol)
    assert right.connect() == 0
    right.close()


def _mqtt_connect_packet() -> bytes:
    """A plain MQTT 3.1.1 CONNECT with client id "plain" and clean session."""
    body = b"\x00\x04MQTT\x04\x02\x00\x0a" + b"\x00\x05plain"
    return bytes([0x10, len(body)]) + body


@pytest.mark.parametrize("listener", ["password", "client_cert"])
def test_plaintext_is_refused(fleet, listener):
    port = fleet.broker.mqtt_port if listener == "password" else fleet.broker.mqtt_client_cert_port
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(_mqtt_connect_packet())
        try:
            answer = sock.recv(16)
        except (TimeoutError, ConnectionResetError):
            answer = b""
    # A CONNACK starts with 0x20; the TLS listener answers with a TLS alert (0x15) or hangs up.
    assert not answer.startswith(b"\x20"), answer
    # And paho without TLS gets no CONNACK either, even with the right password.
    plain = Client(fleet, "plain", user=GW1, password=PASSWORDS[GW1], tls=False, port=port)
    assert plain.connect() is None
    plain.close()
    # The positive control on the same port: TLS connects.
    cert = fleet.cert(GW1) if listener == "client_cert" else None
    tls = Client(fleet, "tls", user=GW1, password=PASSWORDS[GW1], cert=cert, port=port)
    assert tls.connect() == 0
    tls.close()


def test_broker_config_has_no_plaintext_listener(fleet):
    lines = (fleet.broker.info("mosquitto").data_dir.parent / "mosquitto.conf").read_text().splitlines()
    listeners = [i for i, line in enumerate(lines) if line.startswith("listener ")]
    assert len(listeners) == 2
    for i in listeners:
        assert lines[i + 1].startswith("cafile ") and lines[i + 2].startswith("certfile ")
    assert "allow_anonymous false" in lines and "allow_anonymous true" not in lines


# ---- client certificates ------------------------------------------------------------------


def test_client_certificate_is_the_identity(fleet, spy):
    port = fleet.broker.mqtt_client_cert_port
    gw = Client(fleet, "gw-01-cert", cert=fleet.cert(GW1), port=port)  # no username, no password
    assert gw.connect() == 0
    try:
        assert gw.publish(own(GW2), b"forged") == NOT_AUTHORIZED
        assert gw.publish(own(GW1), b"by-cert") == 0
        assert spy.wait(lambda: (own(GW1), b"by-cert") in spy.received)
    finally:
        gw.close()
    # Without a certificate, or with one from another CA, the TLS handshake fails: no CONNACK.
    assert Client(fleet, "no-cert", user=GW1, password=PASSWORDS[GW1], port=port).connect() is None
    intruder = (str(fleet.root / "intruder.pem"), str(fleet.root / "intruder.key"))
    assert Client(fleet, "intruder", cert=intruder, port=port).connect() is None


# ---- the real publisher and bridge through the secured broker -------------------------------


def test_publisher_and_bridge_work_through_tls_and_acl(fleet, services):
    port = fleet.broker.mqtt_port
    writer = InfluxV1Writer(services.influx_url, "security_test")
    bridge_settings = MqttSettings(
        "127.0.0.1",
        port,
        client_id="secure-bridge",
        username=BRIDGE_USER,
        password=PASSWORDS[BRIDGE_USER],
        ca_file=str(fleet.ca),
    )
    bridge = Bridge(bridge_settings, writer, prefix=PREFIX, share_group="bridges").start()
    try:
        gw_settings = MqttSettings(
            "127.0.0.1", port, client_id="secure-gw-01", username=GW1, password=PASSWORDS[GW1], ca_file=str(fleet.ca)
        )
        pub = GatewayPublisher(T.Topics(PREFIX, "net3", "gw-01"), gw_settings, readings_batch=10).connect()
        for i in range(30):
            pub.add_reading(Reading(T0 + i * 60_000, "net3", "gw-01", "F-lake", "flow", float(i), "L/s"))
        assert pub.close()
        assert bridge.wait_idle(quiet_s=0.5, timeout_s=30)
    finally:
        bridge.stop()
    (series,) = writer.query("SELECT value FROM reading")
    assert [v for _, v in series["values"]] == [float(i) for i in range(30)]


# ---- the technician's script ----------------------------------------------------------------


def test_make_certs_script_writes_private_keys_and_keeps_the_ca(tmp_path):
    out = tmp_path / "fleet"
    argv = [
        sys.executable,
        str(ROOT / "scripts" / "make_certs.py"),
        "--out",
        str(out),
        "--broker-host",
        "mqtt.example.org",
        "--broker-ip",
        "127.0.0.1",
        "--client-certs",
        "--gateway",
        "net3/gw-01",
        "--gateway",
        "net3/gw-02",
    ]
    done = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    ca_before = (out / "ca.pem").read_bytes()
    for secret in (
        "ca.key",
        "broker/broker.key",
        "broker/passwd",
        "gateways/net3/gw-01/client.key",
        "gateways/net3/gw-01/mqtt.pass",
        "bridge/mqtt.pass",
    ):
        assert stat.S_IMODE((out / secret).stat().st_mode) == 0o600, secret
    assert "pattern write frugalsense/%u/#" in (out / "broker" / "acl").read_text()
    # An operator login, kept across runs like the gateways; one without an '@' is refused.
    with_operator = subprocess.run(argv + ["--operator", "m.dupont@net3"], capture_output=True, text=True, cwd=ROOT)
    assert with_operator.returncode == 0, with_operator.stderr
    assert stat.S_IMODE((out / "operators" / "m.dupont@net3" / "mqtt.pass").stat().st_mode) == 0o600
    assert "user m.dupont@net3\ntopic write frugalsense/+/+/alert-commands" in (out / "broker" / "acl").read_text()
    bad_operator = subprocess.run(argv + ["--operator", "net3"], capture_output=True, text=True, cwd=ROOT)
    assert bad_operator.returncode == 2 and "needs an '@'" in bad_operator.stderr
    assert "listener 8883" in (out / "broker" / "mosquitto-tls.conf").read_text()
    # Adding a gateway later keeps the CA (and so every certificate already out there).
    again = subprocess.run(argv[:-4] + ["--gateway", "net3/gw-03"], capture_output=True, text=True, cwd=ROOT)
    assert again.returncode == 0, again.stderr
    assert (out / "ca.pem").read_bytes() == ca_before
    assert (out / "gateways" / "net3" / "gw-03" / "client.pem").exists()
    assert "net3/gw-01:" in (out / "broker" / "passwd").read_text()  # earlier users kept
    assert "m.dupont@net3:" in (out / "broker" / "passwd").read_text()
    assert "user m.dupont@net3" in (out / "broker" / "acl").read_text()
    bad = subprocess.run(argv[:-4] + ["--gateway", "net3/gw/04"], capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2 and "--gateway must be SITE/GATEWAY" in bad.stderr


def test_bridge_user_writes_only_the_dead_letters(fleet, spy):
    bridge = Client(fleet, "bridge-writes", user=BRIDGE_USER, password=PASSWORDS[BRIDGE_USER])
    assert bridge.connect() == 0
    try:
        assert bridge.publish(own(GW1, "alerts"), b"forged") == NOT_AUTHORIZED
        assert bridge.publish(T.deadletter_topic(PREFIX), b"reject") == 0
        assert spy.wait(lambda: (T.deadletter_topic(PREFIX), b"reject") in spy.received)
    finally:
        bridge.close()
    assert (own(GW1, "alerts"), b"forged") not in spy.received


def test_home_assistant_discovery_only_for_the_gateways_own_node(fleet):
    gw1 = Client(fleet, "gw-01-ha", user=GW1, password=PASSWORDS[GW1])
    gw2 = Client(fleet, "gw-02-ha", user=GW2, password=PASSWORDS[GW2])
    assert gw1.connect() == 0 and gw2.connect() == 0
    try:
        # 16 = "no matching subscribers": accepted, nobody listens here (0 would be the same verdict)
        assert gw1.publish("homeassistant/sensor/gw-01/F-lake/config", b"{}") in (0, 16)
        assert gw1.publish("homeassistant/sensor/gw-02/F-lake/config", b"{}") == NOT_AUTHORIZED
        assert gw2.publish("homeassistant/sensor/gw-02/F-lake/config", b"{}") == NOT_AUTHORIZED  # not enabled for it
    finally:
        gw1.close()
        gw2.close()


# ---- alert commands: operators only --------------------------------------------------------


def test_only_operators_send_alert_commands_and_the_bridge_and_notifier_get_them(fleet, spy):
    """``pattern deny <prefix>/%u/alert-commands`` beats the gateway's ``pattern write <prefix>/%u/#``."""
    commands = own(GW1, "alert-commands")
    notifier = Client(fleet, "notifier", user=NOTIFIER, password=PASSWORDS[NOTIFIER])
    gw = Client(fleet, "gw-01-commands", user=GW1, password=PASSWORDS[GW1])  # it also has its HA user block
    gw311 = Client(fleet, "gw-01-commands-311", user=GW1, password=PASSWORDS[GW1], protocol=mqtt.MQTTv311)
    operator = Client(fleet, "operator", user=OPERATOR, password=PASSWORDS[OPERATOR])
    assert notifier.connect() == 0 and gw.connect() == 0 and gw311.connect() == 0 and operator.connect() == 0
    try:
        assert notifier.subscribe(f"{PREFIX}/+/+/alert-commands") == [1]
        assert gw.publish(commands, b"forged by the gateway") == NOT_AUTHORIZED
        assert gw311.publish(commands, b"forged, v3.1.1") == 0  # acknowledged, then dropped
        assert gw.publish(own(GW1, "alerts"), b"its own alert") == 0  # the rest of its prefix: still its own
        assert operator.publish(own(GW1, "readings/F-lake"), b"forged by the operator") == NOT_AUTHORIZED
        assert operator.publish(own(GW2, "alert-commands"), b"ack by the operator") == 0
        assert operator.publish(commands, b"comment by the operator") == 0
        assert notifier.wait(lambda: len(notifier.received) == 2)
        assert spy.wait(lambda: (commands, b"comment by the operator") in spy.received)
        assert notifier.publish(commands, b"forged by the notifier") == NOT_AUTHORIZED
        # The v3.1.1 gateway's later message is in, so its forged command would be too.
        assert gw311.publish(own(GW1, "status"), b"marker") == 0
        assert spy.wait(lambda: (own(GW1, "status"), b"marker") in spy.received)
    finally:
        for client in (notifier, gw, gw311, operator):
            client.close()
    assert notifier.received == [
        (own(GW2, "alert-commands"), b"ack by the operator"),
        (commands, b"comment by the operator"),
    ]
    assert [t for t, _ in spy.received if t.endswith("alert-commands")] == [own(GW2, "alert-commands"), commands]
    assert (own(GW1, "readings/F-lake"), b"forged by the operator") not in spy.received


def test_an_operator_login_must_not_look_like_a_site():
    with pytest.raises(ValueError, match="needs an '@'"):
        acl_text(PREFIX, operators=["net3"])  # pattern write frugalsense/%u/# would open all of site net3 to it
    with pytest.raises(ValueError, match="without '/'"):
        acl_text(PREFIX, operators=["ops/marie@x"])
