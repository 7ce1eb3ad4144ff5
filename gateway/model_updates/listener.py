"""The model-update receiver's MQTT side: topics, broker ACL lines, status messages, and the listener the runner starts.

Topics (docs/contracts.md, docs/model-updates.md):

    <prefix>/<site>/<gateway>/model-update/<model>   QoS 1, retained: the model this gateway should run
    <prefix>/<site>/<gateway>/models                 QoS 1, retained: what it runs, and the last outcome

:func:`start_for_config` builds the store and the receiver from a gateway config, hands
every new model to the detectors that run it, and starts a :class:`ModelUpdateListener`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import threading
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import replace

from edge.contracts import check_id
from edge.detectors.base import Detector, ModelSwapError
from gateway.model_updates.envelope import UPDATE_SCHEMA, ModelUpdateConfigError, key_id, load_public_key
from gateway.model_updates.handover import DetectorHandOver
from gateway.model_updates.receiver import REFUSED, UNCHANGED, ModelUpdateReceiver, UpdateReport, now_ms
from gateway.model_updates.store import ModelStore

log = logging.getLogger(__name__)

UPDATE_CHANNEL = "model-update"
STATUS_CHANNEL = "models"
DEFAULT_PUSH_USER = "frugalsense-models"


def update_topic(topics, model: str) -> str:
    """Where the update for one model of one gateway is published (retained: the model it should run)."""
    return f"{topics.base}/{UPDATE_CHANNEL}/{check_id('model', model)}"


def status_topic(topics) -> str:
    """Where a gateway says which models it runs and what became of the last update (retained)."""
    return f"{topics.base}/{STATUS_CHANNEL}"


def acl_lines(prefix: str = "frugalsense", push_user: str = DEFAULT_PUSH_USER) -> str:
    """Lines to add to the broker ACL (gateway/security/broker.py): who may send and read model updates.

    A gateway (user ``<site>/<gateway>``) reads only its own update topic; it already
    writes its models status under its prefix. The model publisher writes every update
    topic and reads the status (``model push --wait``).

    >>> print(acl_lines())  # doctest: +NORMALIZE_WHITESPACE
    # Signed model updates: a gateway reads only its own updates; the model publisher sends them.
    pattern read frugalsense/%u/model-update/#
    user frugalsense-models
    topic write frugalsense/+/+/model-update/#
    topic read frugalsense/+/+/models
    """
    return (
        f"# Signed model updates: a gateway reads only its own updates; the model publisher sends them.\n"
        f"pattern read {prefix}/%u/{UPDATE_CHANNEL}/#\n"
        f"user {push_user}\n"
        f"topic write {prefix}/+/+/{UPDATE_CHANNEL}/#\n"
        f"topic read {prefix}/+/+/{STATUS_CHANNEL}\n"
    )


def encode_status(state: dict, last: UpdateReport | None, time_ms: int | None = None) -> bytes:
    """A models status message: what the gateway runs (``receiver.state()``) and the last update's report."""
    body = {"v": UPDATE_SCHEMA, "time": time_ms or now_ms(), "models": state}
    if last is not None:
        body["last_update"] = last.to_dict()
    return json.dumps(body, separators=(",", ":")).encode()


def decode_status(payload: bytes) -> dict:
    """A models status message as a dict; ValueError if it is not one."""
    body = json.loads(payload.decode("utf-8"))
    if not isinstance(body, dict) or body.get("v") != UPDATE_SCHEMA or not isinstance(body.get("models"), dict):
        raise ValueError("not a models status message")
    return body


class ModelUpdateListener:
    """The receiver's MQTT link: its own connection, updates applied one at a time off the network thread."""

    def __init__(self, receiver: ModelUpdateReceiver, topics, settings):
        self.receiver = receiver
        self.topics = topics
        # Its own client id: the publisher's session and outbox stay as they are.
        self.settings = replace(settings, client_id=f"{settings.client_id or 'frugalsense'}-models")
        self.client = None
        self._pending: queue.Queue = queue.Queue()
        self._seen: dict[str, str] = {}  # model -> sha256 of the last message handled (retained re-sends)
        self._subscribed = threading.Event()
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._work, name="model-updates", daemon=True)
        self.handled: deque = deque(maxlen=100)  # recent reports, newest last

    def start(self) -> ModelUpdateListener:
        """Connect in the background (never waits for the broker) and start applying updates."""
        from gateway.protocol.mqtt_client import make_client

        self.client = make_client(self.settings)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *args: self._subscribed.set()
        self.client.on_message = self._on_message
        self._worker.start()
        self.client.connect_async(self.settings.host, self.settings.port, keepalive=self.settings.keepalive_s)
        self.client.loop_start()
        return self

    def wait_subscribed(self, timeout_s: float) -> bool:
        return self._subscribed.wait(timeout_s)

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self._pending.put(None)
        if self._worker.is_alive():
            self._worker.join(timeout_s)
        if self.client is not None:
            self.client.disconnect()
            self.client.loop_stop()

    def publish_status(self) -> None:
        if self.client is not None:
            self.client.publish(
                status_topic(self.topics),
                encode_status(self.receiver.state(), self.receiver.last_report),
                qos=1,
                retain=True,
            )

    def _on_connect(self, client, userdata, flags, reason_code, properties=None):
        if reason_code.is_failure:
            log.error(
                "model updates: broker %s:%s refused the connection: %s",
                self.settings.host,
                self.settings.port,
                reason_code,
            )
            return
        client.subscribe(f"{self.topics.base}/{UPDATE_CHANNEL}/+", qos=1)
        self.publish_status()

    def _on_message(self, client, userdata, message):
        if not message.payload:
            return  # a cleared retained update
        model = message.topic.rsplit("/", 1)[-1]
        digest = hashlib.sha256(message.payload).hexdigest()
        if self._seen.get(model) == digest:
            return  # the retained update again, after a reconnect: already handled
        self._seen[model] = digest
        self._pending.put((model, message.payload))

    def _work(self) -> None:
        while not self._stop.is_set():
            item = self._pending.get()
            if item is None:
                return
            model, payload = item
            try:
                report = self.receiver.apply(payload, model)
            except Exception as exc:  # a bug must not end the gateway's only way to get a fixed model
                log.exception("model updates: update for %s could not be handled", model)
                report = UpdateReport(REFUSED, model, None, "bad_envelope", f"internal error: {exc}")
                self.receiver.last_report = report
            if report.reason == "storage_error":
                self._seen.pop(model, None)  # a full disk may clear: try the retained copy again at reconnect
            self.handled.append(report)
            if report.outcome != UNCHANGED:
                self.publish_status()


def hand_to_detectors(detectors: Iterable[Detector], name: str, backend) -> int:
    """Give a new model to every detector that runs model ``name`` (``use_model``); return how many refused it.

    A detector that refuses the model (ModelSwapError) keeps the one it runs: it is logged
    and counted, and the other detectors still get theirs. (The receiver uses
    ``DetectorHandOver`` instead: all or none, and proven to score.)
    """
    refused = 0
    for detector in detectors:
        if detector.model_name != name:
            continue
        try:
            detector.use_model(backend)
        except ModelSwapError as exc:
            refused += 1
            log.error("model %s: %s refused v%s: %s", name, detector.model, backend.manifest.version, exc)
    return refused


def start_for_config(
    config, settings, detectors: Sequence[Detector] = (), *, backend: str = "auto", lock=None
) -> ModelUpdateListener | None:
    """Start receiving signed model updates if the config's ``model_updates`` section enables it.

    ``settings`` are the gateway's MQTT settings (the listener adds ``-models`` to the client
    id); ``detectors`` that run an exported model (``model_name``, including the drift
    detector's estimator) get each new version, loaded on the format and runtime their
    model runs on (``backend`` only for a model none of them runs yet), while holding
    ``lock`` (the lock the runner holds while it feeds them). Returns the running listener
    (call ``stop()`` at the end), or None when disabled or when the public key file is
    unusable (logged as an error).
    """
    from gateway.protocol import topics as T

    section = getattr(config, "model_updates", None)
    if section is None or not section.enabled:
        return None
    try:
        key = load_public_key(config.resolve_path(section.public_key_file))
    except ModelUpdateConfigError as exc:
        # Sensing goes on without updates: a gateway that stopped detecting over its key file would be worse.
        log.error("model updates are off: %s", exc)
        return None
    store = ModelStore(config.resolve_path(config.storage.data_dir) / "models")
    users = DetectorHandOver(detectors, lock)
    receiver = ModelUpdateReceiver(
        store, key, models=section.models, allow_downgrade=section.allow_downgrade, backend=backend, detectors=users
    )
    for runtime in users.runtimes():
        receiver.adopt(runtime)
    receiver.load_installed()
    topics = T.Topics(config.mqtt.topic_prefix, config.site, config.gateway)
    log.info("model updates: listening on %s/%s/+ (signing key %s)", topics.base, UPDATE_CHANNEL, key_id(key))
    return ModelUpdateListener(receiver, topics, settings).start()
