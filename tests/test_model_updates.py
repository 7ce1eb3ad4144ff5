"""Signed model updates over a real Mosquitto: applied, refused (tampered, unsigned, other key, downgrade), rolled back.

Models are exported with ``training.export.export_model`` from seeded synthetic data; the
gateway side is the receiver the runner starts (``start_for_config``), talking to the
session's Mosquitto. Crash points are simulated by stopping between the store's steps.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from edge.detectors.base import Detector, ModelDetector, ModelSwapError
from edge.runtime import load_model
from edge.runtime.manifest import ModelManifest
from gateway.cli import main as cli
from gateway.config import GatewayConfig
from gateway.model_updates.envelope import MAX_UPDATE_BYTES, load_public_key, verify_update
from gateway.model_updates.listener import (
    decode_status,
    hand_to_detectors,
    start_for_config,
    status_topic,
    update_topic,
)
from gateway.model_updates.receiver import ModelUpdateReceiver
from gateway.model_updates.signing import build_update, generate_signing_key, push_update, sign_model
from gateway.model_updates.store import POINTER_FILE, ModelStore, Pointer
from gateway.protocol import topics as T
from gateway.protocol.mqtt_client import MqttSettings, make_client
from training.export import export_model

NAME = "leak_lr"
WAIT_S = 20.0  # upper bound only: every wait returns as soon as the gateway has answered


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(23)
    X = rng.normal(size=(600, 3)) * [2.0, 0.5, 0.1] + [40.0, 1.0, 5.0]
    y = ((X[:, 0] - 40) / 2 - (X[:, 2] - 5) / 0.1 + rng.normal(0, 0.3, len(X)) > 0).astype(int)
    return X, y


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, data):
    """The fleet key, another key, and signed exports: v1, v2 (other weights), v3 that fails the smoke test."""
    X, y = data
    root = tmp_path_factory.mktemp("fleet")
    private, public = generate_signing_key(root / "keys")
    other_private, _ = generate_signing_key(root / "other-keys")
    for version, C in (("1", 1.0), ("2", 0.005), ("3", 1.0)):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=C)).fit(X, y)
        export_model(model, X, root / f"v{version}", NAME, version)
    # v3: a data scientist's slip, signed in good faith: the input scaling does not fit the
    # model, so it no longer takes its own reference decisions.
    manifest = json.loads((root / "v3" / "manifest.json").read_text())
    manifest["input"]["scaling"]["mean"][0] += 3 * manifest["input"]["scaling"]["scale"][0]
    (root / "v3" / "manifest.json").write_text(json.dumps(manifest, indent=1))
    export_model(make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y), X, root / "other", "pipe_burst", "1")
    # v5: the same features, but a regression (a detector reading class labels could not use it).
    export_model(
        make_pipeline(StandardScaler(), LinearRegression()).fit(X, y), X, root / "v5", NAME, "5", decision_threshold=0.5
    )
    for folder in ("v1", "v2", "v3", "v5", "other"):
        sign_model(root / folder, private)
    return {
        "root": root,
        "private": private,
        "public": public,
        "other_private": other_private,
        "key": load_public_key(public),
    }


def payload(fleet, folder: str) -> bytes:
    return build_update(fleet["root"] / folder, fleet["key"])[1]


def reference(fleet, folder: str) -> tuple[np.ndarray, np.ndarray]:
    """The scikit-learn outputs stored at export: what the model must predict on its parity rows."""
    with np.load(fleet["root"] / folder / f"{NAME}.parity.npz") as z:
        return z["X"], z["outputs"]


class Scorer(ModelDetector):
    """A detector running an exported model (a ModelDetector: ``runtime_``, ``model_version``), as the air ones do."""

    kind = "leak"

    def __init__(self, runtime):
        super().__init__("net3", "gw-07", model=runtime.manifest.name, model_version=runtime.manifest.version)
        self.runtime_ = runtime

    def update(self, reading):
        return []

    def decide(self, X):
        return self.model_version, self.runtime_.decide(X)


@pytest.fixture
def gateway(services, fleet, tmp_path, request):
    """A gateway running v1 from its bundle, listening for updates on its own topic prefix."""
    started = []

    def start(*, allow_downgrade=False, bundle="v1"):
        prefix = "mu-" + re.sub(r"[^A-Za-z0-9]", "", request.node.name)[-40:]
        config = GatewayConfig.model_validate(
            {
                "site": "net3",
                "gateway": "gw-07",
                "mqtt": {"host": services.mqtt_host, "topic_prefix": prefix},
                "sensors": [{"id": "F-lake", "quantity": "flow", "driver": "replay"}],
                "sources": {"replay": {"file": "zone.npz"}},
                "storage": {"data_dir": str(tmp_path / "data")},
                "model_updates": {
                    "enabled": True,
                    "public_key_file": str(fleet["public"]),
                    "allow_downgrade": allow_downgrade,
                },
            }
        )
        detector = Scorer(load_model(ModelManifest.read(fleet["root"] / bundle), backend="numpy"))
        settings = MqttSettings(services.mqtt_host, services.mqtt_port, client_id=f"{prefix}-gw")
        listener = start_for_config(config, settings, [detector], backend="numpy")
        started.append(listener)
        assert listener.wait_subscribed(WAIT_S)
        topics = T.Topics(prefix, config.site, config.gateway)
        return listener, detector, topics, ModelStore(tmp_path / "data" / "models")

    yield start
    for listener in started:
        listener.stop()


def push(services, topics, body: bytes, model=NAME, version="2") -> dict | None:
    settings = MqttSettings(services.mqtt_host, services.mqtt_port, client_id=f"{topics.prefix}-push")
    reports = push_update(
        settings, {update_topic(topics, model): status_topic(topics)}, body, model=model, version=version, wait_s=WAIT_S
    )
    return reports[update_topic(topics, model)]


def retained_status(services, topics) -> dict:
    client = make_client(MqttSettings(services.mqtt_host, services.mqtt_port, client_id=f"{topics.prefix}-look"))
    got = threading.Event()
    box = {}

    def on_message(c, userdata, message):
        box["status"] = decode_status(message.payload)
        got.set()

    client.on_message = on_message
    client.on_connect = lambda c, *a: c.subscribe(status_topic(topics), qos=1)
    client.connect(services.mqtt_host, services.mqtt_port)
    client.loop_start()
    try:
        assert got.wait(WAIT_S), "no retained models status"
    finally:
        client.disconnect()
        client.loop_stop()
    return box["status"]


def flip_byte(data: bytes, offset: int) -> bytes:
    out = bytearray(data)
    out[offset] ^= 0x01
    return bytes(out)


def envelope_with(body: bytes, **changes) -> bytes:
    env = json.loads(body)
    env.update(changes)
    return json.dumps(env).encode()


# ---- the must-shows -------------------------------------------------------------------------


def test_signed_update_is_applied_and_the_gateway_predicts_with_it(services, fleet, gateway):
    listener, detector, topics, store = gateway()
    X, v2_outputs = reference(fleet, "v2")
    before_version, before = detector.decide(X)
    assert before_version == "1"

    report = push(services, topics, payload(fleet, "v2"))

    assert report["outcome"] == "applied"
    version, after = detector.decide(X)
    assert version == "2" and not np.array_equal(before, after)
    np.testing.assert_allclose(detector.runtime_.predict(X), v2_outputs, atol=1e-4)  # the new model, exactly
    assert store.pointer(NAME) == Pointer("2", None)  # v1 came with the bundle: it stays the fallback there
    status = retained_status(services, topics)
    assert status["models"][NAME]["version"] == "2" and status["last_update"]["outcome"] == "applied"


def test_next_update_keeps_the_previous_version_on_disk(services, fleet, gateway, data):
    listener, detector, topics, store = gateway()
    receiver = listener.receiver
    assert receiver.apply(payload(fleet, "v2"), NAME).outcome == "applied"
    # A later v4 (v2's files re-signed under a new version) arrives over MQTT.
    v4 = fleet["root"] / "v4"
    shutil.copytree(fleet["root"] / "v2", v4)
    manifest = json.loads((v4 / "manifest.json").read_text())
    manifest["version"] = "4"
    (v4 / "manifest.json").write_text(json.dumps(manifest))
    sign_model(v4, fleet["private"])
    assert push(services, topics, payload(fleet, "v4"), version="4")["outcome"] == "applied"
    assert store.pointer(NAME) == Pointer("4", "2")
    assert sorted(p.name for p in (store.root / NAME).iterdir()) == ["2", "4", POINTER_FILE]
    assert retained_status(services, topics)["models"][NAME] == {
        "version": "4",
        "runtime": "numpy/numpy",
        "previous": "2",
    }


def _tamper_file(fleet, body):
    env = json.loads(body)
    path = f"{NAME}.npz"
    env["files"][path] = base64.b64encode(flip_byte(base64.b64decode(env["files"][path]), 200)).decode()
    return json.dumps(env).encode()


def _tamper_manifest(fleet, body):
    env = json.loads(body)
    manifest = base64.b64decode(env["manifest"])
    offset = manifest.index(b'"mean"') + 10  # a digit of the first feature's mean
    env["manifest"] = base64.b64encode(flip_byte(manifest, offset)).decode()
    return json.dumps(env).encode()


def _unsigned(fleet, body):
    env = json.loads(body)
    del env["signature"]
    return json.dumps(env).encode()


def _other_key(fleet, body):
    other = fleet["root"] / "v2-other-key"
    if not other.exists():
        shutil.copytree(fleet["root"] / "v2", other)
        sign_model(other, fleet["other_private"])
    return build_update(other)[1]


@pytest.mark.parametrize(
    "tamper, reason, says",
    [
        (_tamper_file, "hash_mismatch", f"{NAME}.npz: expected sha256"),
        (_tamper_manifest, "bad_signature", "changed after signing"),
        (_unsigned, "unsigned", "carries no signature"),
        (_other_key, "bad_signature", "this gateway trusts key"),
    ],
    ids=["model_file_byte", "manifest_byte_after_signing", "unsigned", "other_key"],
)
def test_bad_updates_are_refused_reported_and_v1_keeps_detecting(services, fleet, gateway, tamper, reason, says):
    listener, detector, topics, store = gateway()
    X, v1_outputs = reference(fleet, "v1")
    _, before = detector.decide(X)

    report = push(services, topics, tamper(fleet, payload(fleet, "v2")))

    assert report["outcome"] == "refused" and report["reason"] == reason and says in report["detail"]
    version, after = detector.decide(X)
    assert version == "1" and np.array_equal(before, after)
    np.testing.assert_allclose(detector.runtime_.predict(X), v1_outputs, atol=1e-4)
    assert not (store.root / NAME / "2").exists() and store.pointer(NAME) is None
    status = retained_status(services, topics)
    assert status["models"][NAME]["version"] == "1" and status["last_update"]["reason"] == reason


def test_model_failing_the_smoke_test_is_rolled_back(services, fleet, gateway):
    listener, detector, topics, store = gateway()
    assert listener.receiver.apply(payload(fleet, "v2"), NAME).outcome == "applied"
    X, v2_outputs = reference(fleet, "v2")

    report = push(services, topics, payload(fleet, "v3"), version="3")

    assert report["outcome"] == "rolled_back" and report["reason"] == "smoke_test_failed"
    assert "reference decision" in report["detail"] and "v2 stays in service" in report["detail"]
    assert detector.model_version == "2"
    np.testing.assert_allclose(detector.runtime_.predict(X), v2_outputs, atol=1e-4)
    assert store.pointer(NAME) == Pointer("2", None) and not (store.root / NAME / "3").exists()


def test_downgrade_is_refused_unless_allowed(services, fleet, gateway):
    listener, detector, topics, store = gateway(bundle="v2")
    report = push(services, topics, payload(fleet, "v1"), version="1")
    assert report["outcome"] == "refused" and report["reason"] == "downgrade"
    assert "v1 is not newer than v2" in report["detail"] and detector.model_version == "2"

    allowing = ModelUpdateReceiver(
        ModelStore(store.root.parent / "other"), fleet["key"], models=[NAME], allow_downgrade=True, backend="numpy"
    )
    assert allowing.apply(payload(fleet, "v2")).outcome == "applied"
    assert allowing.apply(payload(fleet, "v1")).outcome == "applied"
    assert allowing.state()[NAME]["version"] == "1"


def test_unknown_model_and_wrong_topic_are_refused(services, fleet, gateway):
    listener, detector, topics, store = gateway()
    report = push(services, topics, payload(fleet, "other"), model="pipe_burst", version="1")
    assert report["outcome"] == "refused" and report["reason"] == "unknown_model"
    assert "runs no model pipe_burst" in report["detail"]
    wrong = listener.receiver.apply(payload(fleet, "v2"), topic_model="pipe_burst")
    assert wrong.reason == "mismatch" and detector.model_version == "1"


def test_same_update_again_changes_nothing(fleet, tmp_path):
    receiver = ModelUpdateReceiver(ModelStore(tmp_path), fleet["key"], models=[NAME], backend="numpy")
    assert receiver.apply(payload(fleet, "v2")).outcome == "applied"
    again = receiver.apply(payload(fleet, "v2"))
    assert again.outcome == "unchanged" and receiver.last_report.outcome == "applied"


# ---- crash safety: the pointer moves only after the files are complete -----------------------


def test_crash_before_the_pointer_moved_keeps_the_old_model(fleet, tmp_path):
    store = ModelStore(tmp_path)
    first = ModelUpdateReceiver(store, fleet["key"], models=[NAME], backend="numpy")
    first.apply(payload(fleet, "v1"))
    store.install(verify_update(payload(fleet, "v2"), fleet["key"]))  # files written, then power cut
    (tmp_path / NAME / ".incoming-x1").mkdir()  # and a half-written one from an earlier cut
    restarted = ModelUpdateReceiver(store, fleet["key"], backend="numpy")
    assert restarted.load_installed() == []
    assert restarted.state()[NAME]["version"] == "1"
    assert sorted(p.name for p in (tmp_path / NAME).iterdir()) == ["1", POINTER_FILE]


def test_crash_after_the_pointer_moved_rolls_back_at_start(fleet, tmp_path):
    store = ModelStore(tmp_path)
    ModelUpdateReceiver(store, fleet["key"], models=[NAME], backend="numpy").apply(payload(fleet, "v2"))
    store.install(verify_update(payload(fleet, "v3"), fleet["key"]))
    store.set_pointer(NAME, Pointer("3", "2"))  # power cut before v3 was smoke-tested
    restarted = ModelUpdateReceiver(store, fleet["key"], backend="numpy")
    (report,) = restarted.load_installed()
    assert (report.outcome, report.reason, report.version) == ("rolled_back", "smoke_test_failed", "3")
    assert restarted.state()[NAME]["version"] == "2" and store.pointer(NAME) == Pointer("2", None)
    assert not (tmp_path / NAME / "3").exists()


def test_model_changed_on_disk_is_not_loaded_at_start(fleet, tmp_path):
    store = ModelStore(tmp_path)
    receiver = ModelUpdateReceiver(store, fleet["key"], models=[NAME], backend="numpy")
    receiver.apply(payload(fleet, "v1"))
    receiver.apply(payload(fleet, "v2"))
    target = tmp_path / NAME / "2" / f"{NAME}.npz"
    target.write_bytes(flip_byte(target.read_bytes(), 100))
    restarted = ModelUpdateReceiver(store, fleet["key"], backend="numpy")
    (report,) = restarted.load_installed()
    assert report.outcome == "rolled_back" and "does not match its manifest" in report.detail
    assert restarted.state()[NAME]["version"] == "1"


# ---- the envelope ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda body: b" " * (MAX_UPDATE_BYTES + 1), "too_large"),
        (lambda body: b"\xff\xfe", "bad_envelope"),
        (lambda body: envelope_with(body, format="something-else"), "bad_envelope"),
        (lambda body: envelope_with(body, v=2), "bad_envelope"),
        (lambda body: envelope_with(body, manifest="%%%"), "bad_envelope"),
        (lambda body: envelope_with(body, signature={"alg": "rsa", "value": "AA=="}), "bad_signature"),
        (lambda body: envelope_with(body, files={**json.loads(body)["files"], "extra.bin": "AA=="}), "mismatch"),
        (
            lambda body: envelope_with(
                body, files={k: v for k, v in json.loads(body)["files"].items() if not k.endswith(".npz")}
            ),
            "mismatch",
        ),
    ],
    ids=["too_large", "not_utf8", "format", "schema", "manifest_b64", "alg", "extra_file", "missing_file"],
)
def test_malformed_envelopes_are_refused_with_a_reason(fleet, tmp_path, make, reason):
    receiver = ModelUpdateReceiver(ModelStore(tmp_path), fleet["key"], models=[NAME], backend="numpy")
    report = receiver.apply(make(payload(fleet, "v2")), NAME)
    assert (report.outcome, report.reason) == ("refused", reason)
    assert receiver.state() == {} and not (tmp_path / NAME).exists()


# ---- the data scientist's side ----------------------------------------------------------------


def test_cli_keygen_sign_and_push(services, fleet, gateway, tmp_path, capsys):
    keys = tmp_path / "keys"
    assert cli(["model", "keygen", "--out", str(keys)]) == 0
    assert oct((keys / "model-signing.key").stat().st_mode & 0o777) == "0o600"
    assert cli(["model", "keygen", "--out", str(keys)]) == 2  # never overwrites a key gateways trust
    assert "already exists" in capsys.readouterr().err

    model = tmp_path / "v2"
    shutil.copytree(fleet["root"] / "v2", model)
    (model / "manifest.sig").unlink()
    assert cli(["model", "push", str(model), "--to", "net3/gw-07", "--mqtt-port", str(services.mqtt_port)]) == 2
    assert "is not signed" in capsys.readouterr().err
    os.chmod(fleet["private"], 0o644)
    try:
        assert cli(["model", "sign", str(model), "--key", str(fleet["private"])]) == 2
        assert "chmod 600" in capsys.readouterr().err
    finally:
        os.chmod(fleet["private"], 0o600)
    assert cli(["model", "sign", str(model), "--key", str(fleet["private"])]) == 0
    assert f"signed model {NAME} v2" in capsys.readouterr().out

    listener, detector, topics, store = gateway()
    code = cli(
        [
            "model",
            "push",
            str(model),
            "--to",
            f"{topics.site}/{topics.gateway}",
            "--prefix",
            topics.prefix,
            "--mqtt-host",
            services.mqtt_host,
            "--mqtt-port",
            str(services.mqtt_port),
            "--public-key",
            str(fleet["public"]),
            "--wait",
            str(WAIT_S),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and "gateway: applied" in out and detector.model_version == "2"


def test_sign_refuses_a_folder_that_does_not_match_its_manifest(fleet, tmp_path, capsys):
    model = tmp_path / "v2"
    shutil.copytree(fleet["root"] / "v2", model)
    target = model / f"{NAME}.onnx"
    target.write_bytes(flip_byte(target.read_bytes(), 50))
    assert cli(["model", "sign", str(model), "--key", str(fleet["private"])]) == 2
    assert "does not match its manifest" in capsys.readouterr().err


# ---- config and contracts -----------------------------------------------------------------------


def test_config_needs_the_public_key_when_enabled():
    base = {
        "site": "s",
        "gateway": "g",
        "mqtt": {"host": "h"},
        "sensors": [{"id": "F", "quantity": "flow", "driver": "replay"}],
        "sources": {"replay": {"file": "a"}},
    }
    assert GatewayConfig.model_validate(base).model_updates.enabled is False
    with pytest.raises(ValueError, match="set public_key_file"):
        GatewayConfig.model_validate({**base, "model_updates": {"enabled": True}})
    with pytest.raises(ValueError, match="true or false"):
        GatewayConfig.model_validate({**base, "model_updates": {"allow_downgrade": "yes"}})


def test_contracts_doc_lists_the_topics_and_its_status_example_decodes():
    text = (Path(__file__).resolve().parents[1] / "docs" / "contracts.md").read_text()
    assert "| `<prefix>/<site>/<gateway>/model-update/<model>` | 1 | yes |" in text
    assert "| `<prefix>/<site>/<gateway>/models` | 1 | yes |" in text
    example = re.search(r"\*\*Models status\*\*.*?```jsonc\n(.*?)```", text, flags=re.S).group(1)
    status = decode_status(example.encode())
    assert set(status["last_update"]) == {"model", "version", "outcome", "time", "reason", "detail"}


# ---- with the production broker setup: TLS, passwords, per-gateway ACL -------------------------


def test_tls_broker_acl_lets_each_gateway_read_only_its_own_updates(fleet, tmp_path):
    from gateway.local_services.services import LocalServices
    from gateway.model_updates.listener import DEFAULT_PUSH_USER, ModelUpdateListener
    from gateway.security.broker import BrokerSecurity, acl_text, gateway_user, write_password_file
    from gateway.security.certs import issue_certificate, make_ca, write_pair

    prefix, gw1, gw2 = "frugalsense", gateway_user("net3", "gw-01"), gateway_user("net3", "gw-02")
    passwords = {gw1: "pw-1", gw2: "pw-2", DEFAULT_PUSH_USER: "pw-push"}
    ca = make_ca("model updates test CA")
    write_pair(ca, tmp_path / "ca.pem", tmp_path / "ca.key")
    write_pair(
        issue_certificate(ca, "broker", dns_names=["localhost"], ip_addresses=["127.0.0.1"], server=True),
        tmp_path / "broker.pem",
        tmp_path / "broker.key",
    )
    (tmp_path / "acl").write_text(acl_text(prefix))  # acl_text includes the model-update lines
    write_password_file(tmp_path / "passwd", passwords)
    security = BrokerSecurity(
        ca_file=tmp_path / "ca.pem",
        cert_file=tmp_path / "broker.pem",
        key_file=tmp_path / "broker.key",
        password_file=tmp_path / "passwd",
        acl_file=tmp_path / "acl",
    )

    def settings(user: str, client_id: str) -> MqttSettings:
        return MqttSettings(
            broker.mqtt_host,
            broker.mqtt_port,
            client_id=client_id,
            username=user,
            password=passwords[user],
            ca_file=str(tmp_path / "ca.pem"),
        )

    listeners = []
    with LocalServices(tmp_path / "services", influxdb=False, mosquitto_security=security) as broker:
        try:
            for user, gateway in ((gw1, "gw-01"), (gw2, "gw-02")):
                receiver = ModelUpdateReceiver(
                    ModelStore(tmp_path / gateway), fleet["key"], models=[NAME], backend="numpy"
                )
                listeners.append(
                    ModelUpdateListener(
                        receiver, T.Topics(prefix, "net3", gateway), settings(user, f"frugalsense-{gateway}")
                    ).start()
                )
                assert listeners[-1].wait_subscribed(WAIT_S)
            gw1_topics, gw2_topics = listeners[0].topics, listeners[1].topics
            pusher = settings(DEFAULT_PUSH_USER, "pusher")
            reports = push_update(
                pusher,
                {update_topic(gw1_topics, NAME): status_topic(gw1_topics)},
                payload(fleet, "v2"),
                model=NAME,
                version="2",
                wait_s=WAIT_S,
            )
            assert reports[update_topic(gw1_topics, NAME)]["outcome"] == "applied"
            assert listeners[0].receiver.state()[NAME]["version"] == "2" and listeners[1].receiver.state() == {}

            # Another gateway may not send gw-01 an update (v5 PUBACK "not authorized").
            with pytest.raises(ConnectionError, match="refused the update"):
                push_update(settings(gw2, "gw-02-intruder"), {update_topic(gw1_topics, NAME): ""}, payload(fleet, "v1"))
            # ... nor read gw-01's: subscribed to gw-01's topic first, then its own, it gets only its own.
            push_update(pusher, {update_topic(gw2_topics, NAME): ""}, b"x")
            seen: list[str] = []
            own = threading.Event()

            def on_message(client, userdata, message):
                seen.append(message.topic)
                if message.topic.startswith(gw2_topics.base):
                    own.set()

            spy = make_client(settings(gw2, "gw-02-spy"))
            spy.on_message = on_message
            spy.on_connect = lambda c, *a: c.subscribe(
                [(update_topic(gw1_topics, NAME), 1), (update_topic(gw2_topics, NAME), 1)]
            )
            spy.connect(broker.mqtt_host, broker.mqtt_port)
            spy.loop_start()
            try:
                assert own.wait(WAIT_S)
            finally:
                spy.disconnect()
                spy.loop_stop()
            assert seen == [update_topic(gw2_topics, NAME)]
        finally:
            for listener in listeners:
                listener.stop()


# ---- the runner starts the receiver when the config enables it ----------------------------------


def test_runner_receives_updates_while_it_runs(services, fleet, tmp_path):
    from edge.datasets import ZoneDataset
    from gateway.device.runner import GatewayRunner

    t0 = 1_772_409_600_000
    ZoneDataset(
        time_ms=t0 + 900_000 * np.arange(4, dtype=np.int64),
        values=np.full((4, 1), 40.0, np.float32),
        columns=["F-lake"],
        quantities=["flow"],
        units=["L/s"],
        leak_flow_lps=np.zeros(4, np.float32),
        meta={},
    ).save(tmp_path / "zone.npz")
    config = GatewayConfig.model_validate(
        {
            "site": "net3",
            "gateway": "gw-run",
            "mqtt": {"host": services.mqtt_host, "topic_prefix": "mu-runner"},
            "sensors": [{"id": "F-lake", "quantity": "flow", "driver": "replay"}],
            "sources": {"replay": {"file": str(tmp_path / "zone.npz")}},
            "storage": {"data_dir": str(tmp_path / "data")},
            "model_updates": {"enabled": True, "public_key_file": str(fleet["public"]), "models": [NAME]},
        }
    )
    topics = T.Topics("mu-runner", "net3", "gw-run")
    reports = []

    def during_the_run(reading):
        if not reports:  # first reading: the receiver is up (its status is retained), send it v2
            retained_status(services, topics)
            reports.append(push(services, topics, payload(fleet, "v2")))

    runner = GatewayRunner.from_config(config, mqtt_port=services.mqtt_port)
    runner.run(on_reading=during_the_run, drain_timeout_s=WAIT_S)
    assert reports[0]["outcome"] == "applied"
    assert ModelStore(tmp_path / "data" / "models").pointer(NAME) == Pointer("2", None)


def test_docs_explain_every_reason():
    from gateway.model_updates.envelope import REASONS

    text = (Path(__file__).resolve().parents[1] / "docs" / "model-updates.md").read_text()
    table = text.split("| reason | what happened | what to do |")[1].split("\n\n")[0]
    assert re.findall(r"^\| `([a-z_]+)` \|", table, flags=re.M) == list(REASONS)


def test_a_newer_bundle_model_wins_over_an_older_installed_update(fleet, tmp_path):
    store = ModelStore(tmp_path)
    ModelUpdateReceiver(store, fleet["key"], models=[NAME], backend="numpy").apply(payload(fleet, "v1"))
    restarted = ModelUpdateReceiver(store, fleet["key"], backend="numpy")
    restarted.adopt(load_model(ModelManifest.read(fleet["root"] / "v2"), backend="numpy"))  # re-flashed with v2
    assert restarted.load_installed() == [] and restarted.state()[NAME]["version"] == "2"


def test_recorded_windows_are_the_smoke_test(fleet, tmp_path, data):
    store = ModelStore(tmp_path)
    receiver = ModelUpdateReceiver(store, fleet["key"], models=[NAME], backend="numpy")
    receiver.apply(payload(fleet, "v1"))
    store.record_smoke_windows(NAME, data[0][:20, :2])  # rows this gateway can no longer compute in full
    report = receiver.apply(payload(fleet, "v2"))
    assert report.outcome == "rolled_back" and "cannot score the smoke-test windows" in report.detail
    assert receiver.state()[NAME]["version"] == "1"
    with pytest.raises(ValueError, match="finite feature rows"):
        store.record_smoke_windows(NAME, [[1.0, float("nan"), 2.0]])


def test_a_model_with_other_outputs_is_refused(fleet, tmp_path):
    receiver = ModelUpdateReceiver(ModelStore(tmp_path), fleet["key"], models=[NAME], backend="numpy")
    receiver.apply(payload(fleet, "v1"))
    report = receiver.apply(payload(fleet, "v5"))
    assert (report.outcome, report.reason) == ("refused", "outputs_changed") and "regression" in report.detail
    assert receiver.state()[NAME]["version"] == "1" and not (tmp_path / NAME / "5").exists()


class PickyScorer(Scorer):
    """A model detector that refuses every new model, as one whose classes changed would."""

    def check_model(self, backend):
        raise ModelSwapError(f"{self.model!r} wants other classes")


class Rule(Detector):
    """A rule-based detector: runs no exported model."""

    kind = "leak"

    def update(self, reading):
        return []


def test_hand_to_detectors_swaps_every_detector_running_the_model_and_counts_refusals(fleet):
    def loaded(folder):
        return load_model(ModelManifest.read(fleet["root"] / folder), backend="numpy")

    first, picky, second, rule = (
        Scorer(loaded("v1")),
        PickyScorer(loaded("v1")),
        Scorer(loaded("v1")),
        Rule("net3", "gw-07", model="night_flow"),
    )
    v2 = loaded("v2")
    assert hand_to_detectors([first, picky, second, rule], NAME, v2) == 1
    assert first.runtime_ is v2 and second.runtime_ is v2 and first.model_version == second.model_version == "2"
    assert picky.model_version == "1" and picky.runtime_ is not v2
    assert hand_to_detectors([first, rule], "another_model", loaded("v1")) == 0 and first.runtime_ is v2
