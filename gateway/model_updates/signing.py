"""Sign an exported model and publish it to gateways: the data scientist's side of signed model updates.

The fleet has one Ed25519 model-signing key pair. The private key stays on the
workstation (or in CI) in a file only its owner can read; every gateway holds the
public key. ``sign_model`` checks that the model folder is exactly what its manifest
says (sha256 of every file), then signs ``manifest.json`` (which covers every file by
its sha256) and writes ``manifest.sig`` next to it. ``build_update`` packs the signed
folder into one MQTT message; ``push_update`` publishes it, retained, to one gateway.

>>> import tempfile
>>> private, public = generate_signing_key(tempfile.mkdtemp())
>>> oct(private.stat().st_mode & 0o777), public.name
('0o600', 'model-signing.pub')
"""

from __future__ import annotations

import base64
import json
import os
import threading
from pathlib import Path

from edge.runtime.manifest import MANIFEST_FILE, ManifestError, ModelManifest
from edge.runtime.registry import verify
from gateway.model_updates.envelope import (
    MAX_FILE_BYTES,
    MAX_UPDATE_BYTES,
    SIGNATURE_ALG,
    SIGNATURE_FILE,
    SIGNING_CONTEXT,
    UPDATE_FORMAT,
    UPDATE_SCHEMA,
    UpdateRefused,
    check_signature,
    key_id,
    parse_version,
)
from gateway.security.secrets import SecretFileError, check_private_file, write_private_file

KEY_NAME = "model-signing"


class SigningError(ValueError):
    """The model cannot be signed or sent as it is; the message says which file and what to do."""


def generate_signing_key(out_dir: str | os.PathLike, name: str = KEY_NAME, *, force: bool = False) -> tuple[Path, Path]:
    """A new Ed25519 key pair: ``<name>.key`` (private, 0600 from the start) and ``<name>.pub`` (for gateways)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    out = Path(out_dir)
    private, public = out / f"{name}.key", out / f"{name}.pub"
    if private.exists() and not force:
        # Overwriting it would orphan every gateway that trusts the old public key.
        raise SigningError(
            f"{private} already exists: gateways trust its public key; use another folder or --force to replace it"
        )
    out.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    write_private_file(
        private,
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    os.chmod(public, 0o644)
    return private, public


def load_signing_key(path: str | os.PathLike):
    """The private key, after checking that only its owner can read the file."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        check_private_file(path)
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except SecretFileError as exc:
        raise SigningError(str(exc)) from None
    except (OSError, ValueError, TypeError) as exc:
        raise SigningError(f"{os.fspath(path)} is not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningError(f"{os.fspath(path)} is not an Ed25519 key (make one with: frugalsense model keygen)")
    return key


def _checked_manifest(model_dir: Path) -> ModelManifest:
    try:
        manifest = verify(ModelManifest.read(model_dir))
    except ManifestError as exc:
        raise SigningError(str(exc)) from None
    try:
        parse_version(manifest.version)
    except UpdateRefused as exc:
        raise SigningError(f"model {manifest.name}: {exc.detail}") from None
    for entry in manifest.files.values():
        if entry.bytes > MAX_FILE_BYTES:
            raise SigningError(
                f"{entry.path} has {entry.bytes} bytes; a model file sent to gateways may have at most {MAX_FILE_BYTES}"
            )
    return manifest


def sign_model(model_dir: str | os.PathLike, key_path: str | os.PathLike) -> dict:
    """Check ``model_dir`` against its manifest, sign the manifest, write ``manifest.sig``; return the signature."""
    model_dir = Path(model_dir)
    key = load_signing_key(key_path)
    _checked_manifest(model_dir)
    manifest_bytes = (model_dir / MANIFEST_FILE).read_bytes()
    signature = {
        "alg": SIGNATURE_ALG,
        "key_id": key_id(key.public_key()),
        "value": base64.b64encode(key.sign(SIGNING_CONTEXT + manifest_bytes)).decode(),
    }
    (model_dir / SIGNATURE_FILE).write_text(json.dumps(signature) + "\n")
    return signature


def build_update(model_dir: str | os.PathLike, public_key=None) -> tuple[ModelManifest, bytes]:
    """One update message from a signed model folder: the manifest as signed, its signature, every file it lists.

    With ``public_key`` the signature is checked first (the key gateways will check it with).
    """
    model_dir = Path(model_dir)
    manifest = _checked_manifest(model_dir)
    try:
        signature = json.loads((model_dir / SIGNATURE_FILE).read_text())
    except FileNotFoundError:
        raise SigningError(
            f"{model_dir} is not signed (no {SIGNATURE_FILE}): run frugalsense model sign {model_dir} --key KEY"
        ) from None
    except ValueError as exc:
        raise SigningError(f"{model_dir / SIGNATURE_FILE} is not readable JSON ({exc})") from None
    manifest_bytes = (model_dir / MANIFEST_FILE).read_bytes()
    if public_key is not None:
        try:
            check_signature(manifest_bytes, signature, public_key)
        except UpdateRefused as exc:
            raise SigningError(f"{model_dir}: {exc.detail}") from None
    rel = {entry["path"] for entry in manifest.raw["files"].values()}
    envelope = {
        "format": UPDATE_FORMAT,
        "v": UPDATE_SCHEMA,
        "manifest": base64.b64encode(manifest_bytes).decode(),
        "signature": signature,
        "files": {path: base64.b64encode((model_dir / path).read_bytes()).decode() for path in sorted(rel)},
    }
    payload = json.dumps(envelope, separators=(",", ":")).encode()
    if len(payload) > MAX_UPDATE_BYTES:
        raise SigningError(
            f"model {manifest.name} v{manifest.version} makes an update of {len(payload)} bytes, "
            f"more than one message may carry ({MAX_UPDATE_BYTES}): export fewer formats"
        )
    return manifest, payload


def push_update(
    settings,
    targets: dict[str, str],
    payload: bytes,
    *,
    model: str | None = None,
    version: str | None = None,
    wait_s: float = 0.0,
    timeout_s: float = 30.0,
) -> dict[str, dict | None]:
    """Publish one update, retained at QoS 1, to each gateway of ``targets`` (update topic -> models status topic).

    Returns once the broker acknowledged every message (PUBACK) and, with ``wait_s``, once
    every gateway reported on ``model`` ``version`` or ``wait_s`` passed: update topic ->
    the gateway's ``last_update`` report, or None (offline: the retained update waits for it).
    ``payload`` b"" clears the retained update. Raises ConnectionError if the broker cannot
    be reached, does not acknowledge, or refuses (ACL).
    """
    from gateway.model_updates.listener import decode_status
    from gateway.protocol.mqtt_client import make_client

    client = make_client(settings)
    connected, subscribed, done = threading.Event(), threading.Event(), threading.Event()
    refused: list[str] = []
    acked: set[int] = set()
    reports: dict[str, dict | None] = {topic: None for topic in targets}
    by_status = {status: topic for topic, status in targets.items()}
    published = threading.Condition()

    def on_connect(c, userdata, flags, reason_code, properties=None):
        if reason_code.is_failure:
            refused.append(str(reason_code))
        connected.set()

    def on_publish(c, userdata, mid, reason_code, properties=None):
        if reason_code.is_failure:
            refused.append(str(reason_code))
        with published:
            acked.add(mid)
            published.notify_all()

    def on_message(c, userdata, message):
        if message.retain:  # an answer from before this push
            return
        try:
            last = decode_status(message.payload).get("last_update") or {}
        except ValueError:
            return
        # A refused update may carry no version: nothing in it is trusted before the signature verifies.
        if last.get("model") == model and last.get("version") in (version, None):
            reports[by_status[message.topic]] = last
            if all(r is not None for r in reports.values()):
                done.set()

    client.on_connect, client.on_publish, client.on_message = on_connect, on_publish, on_message
    client.on_subscribe = lambda *args: subscribed.set()
    where = f"MQTT broker {settings.host}:{settings.port}"
    try:
        client.connect(settings.host, settings.port, keepalive=settings.keepalive_s)
    except OSError as exc:
        raise ConnectionError(f"cannot reach {where}: {exc}") from None
    client.loop_start()
    try:
        if not connected.wait(timeout_s) or refused:
            raise ConnectionError(f"{where} did not accept the connection ({', '.join(refused) or 'no answer'})")
        if wait_s > 0:
            client.subscribe([(status, 1) for status in by_status])
            if not subscribed.wait(timeout_s):
                raise ConnectionError(f"{where} did not answer the subscription to the gateways' status")
        mids = [client.publish(topic, payload, qos=1, retain=True).mid for topic in targets]
        with published:
            all_acked = published.wait_for(lambda: acked.issuperset(mids), timeout_s)
        if not all_acked:
            raise ConnectionError(f"{where} did not acknowledge the update within {timeout_s:.0f} s")
        if refused:
            raise ConnectionError(f"{where} refused the update: {refused[-1]} (check the broker ACL for this user)")
        if wait_s > 0:
            done.wait(wait_s)
    finally:
        client.disconnect()
        client.loop_stop()
    return reports
