"""The model-update envelope and its signature: what one MQTT message carries, and how the gateway checks it.

One message carries one update: a JSON envelope holding the model's ``manifest.json``
exactly as it was signed, an Ed25519 signature over it, and every file the manifest
lists (base64). :func:`verify_update` trusts nothing in it before the signature checks
out against the public key in the gateway's config, and nothing in a file before its
sha256 matches the signed manifest. Nothing is written here: that is the store's part.

>>> parse_version("1.10.0") > parse_version("1.9"), parse_version("3") == parse_version("3.0")
(True, True)
>>> parse_version("v3")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
gateway.model_updates.envelope.UpdateRefused: bad_manifest: version 'v3' cannot be ordered: use numbers ...
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from edge.contracts import ContractError, check_id
from edge.runtime.manifest import MANIFEST_FILE, ManifestError, ModelManifest

UPDATE_FORMAT = "frugalsense-model-update"
UPDATE_SCHEMA = 1
SIGNATURE_FILE = "manifest.sig"  # next to manifest.json, written by `frugalsense model sign`
SIGNATURE_ALG = "ed25519"
# Signed bytes = this prefix + manifest.json: a signature made with the fleet key for anything
# else can never pass as a model signature.
SIGNING_CONTEXT = b"frugalsense-model-manifest-v1\x00"
MAX_UPDATE_BYTES = 256 * 1024  # one MQTT message; the bridge's payload limit too
MAX_FILE_BYTES = 64 * 1024  # every shipped model file stays under this (docs/models.md)

# The reasons of a refusal or a roll-back, as reported on the models status topic.
REASONS = {
    "too_large": "the message is larger than one update may be",
    "bad_envelope": "not a frugalsense model update (or a field of it is malformed)",
    "unsigned": "the update carries no signature",
    "bad_signature": "the signature does not verify with this gateway's public key",
    "bad_manifest": "the signed manifest is not a usable model manifest",
    "mismatch": "the files or the model name do not match the signed manifest or the topic",
    "hash_mismatch": "a file's sha256 or size differs from the signed manifest",
    "unknown_model": "this gateway does not run a model of that name",
    "downgrade": "the version is not newer than the one in service",
    "features_changed": "the model reads other features than the one in service",
    "outputs_changed": "the model gives other outputs (task, classes) than the one in service",
    "smoke_test_failed": "the model failed verification, loading or the smoke test on this gateway",
    "handover_failed": "a detector took the model but does not score with it: every detector went back",
    "storage_error": "the gateway could not write the model to its disk",
}


class UpdateRefused(Exception):
    """An update the gateway will not run; ``reason`` is a key of REASONS."""

    def __init__(self, reason: str, detail: str, model: str | None = None, version: str | None = None):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail, self.model, self.version = reason, detail, model, version


class ModelUpdateConfigError(ValueError):
    """The gateway's model-update settings cannot be used (public key file missing or not a key)."""


# ---- keys and versions ------------------------------------------------------------------


def load_public_key(path: str | os.PathLike):
    """The fleet's Ed25519 model-signing public key from a PEM file (``frugalsense model keygen``)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except FileNotFoundError:
        raise ModelUpdateConfigError(f"model_updates.public_key_file {os.fspath(path)} does not exist") from None
    except (OSError, ValueError) as exc:
        raise ModelUpdateConfigError(
            f"model_updates.public_key_file {os.fspath(path)} is not a PEM public key ({exc})"
        ) from None
    if not isinstance(key, Ed25519PublicKey):
        raise ModelUpdateConfigError(
            f"model_updates.public_key_file {os.fspath(path)} is not an Ed25519 key "
            "(make one with: frugalsense model keygen)"
        )
    return key


def key_id(public_key) -> str:
    """Short name of a public key (sha256 of its 32 raw bytes, 16 hex digits), shown in reports and logs."""
    from cryptography.hazmat.primitives import serialization

    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def parse_version(version: str) -> tuple[int, ...]:
    """A version as numbers, trailing zeros dropped (``"1.2.0"`` == ``"1.2"``), or UpdateRefused."""
    parts = str(version).split(".")
    if not all(p.isdigit() and len(p) <= 9 for p in parts):
        # Only an ordered version lets a gateway refuse an older (replayed) model.
        raise UpdateRefused("bad_manifest", f"version {version!r} cannot be ordered: use numbers such as 3 or 1.2.0")
    numbers = [int(p) for p in parts]
    while len(numbers) > 1 and numbers[-1] == 0:
        numbers.pop()
    return tuple(numbers)


# ---- the envelope -------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifiedUpdate:
    """An update whose signature and file hashes checked out; nothing is written yet."""

    name: str
    version: str
    manifest_bytes: bytes
    signature: dict
    files: dict[str, bytes]  # manifest path -> content
    manifest: ModelManifest  # parsed with root "." (paths are relative)


def _b64(text: object, what: str) -> bytes:
    if not isinstance(text, str):
        raise UpdateRefused("bad_envelope", f"{what} must be base64 text")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise UpdateRefused("bad_envelope", f"{what} is not valid base64") from None


def check_signature(manifest_bytes: bytes, signature: object, public_key) -> None:
    """Raise UpdateRefused (unsigned / bad_signature) unless ``signature`` signs ``manifest_bytes`` with the key."""
    from cryptography.exceptions import InvalidSignature

    if signature is None:
        raise UpdateRefused("unsigned", "the update carries no signature: sign it with 'frugalsense model sign'")
    if not isinstance(signature, dict) or signature.get("alg") != SIGNATURE_ALG:
        raise UpdateRefused("bad_signature", f"the signature must be an {SIGNATURE_ALG} signature object")
    value = _b64(signature.get("value"), "signature.value")
    try:
        public_key.verify(value, SIGNING_CONTEXT + manifest_bytes)
    except InvalidSignature:
        ours, theirs = key_id(public_key), signature.get("key_id")
        if isinstance(theirs, str) and theirs != ours:
            raise UpdateRefused(
                "bad_signature", f"signed by key {theirs[:16]}, this gateway trusts key {ours} only"
            ) from None
        raise UpdateRefused(
            "bad_signature",
            f"the signature does not verify with key {ours}: the manifest or the signature was changed after signing",
        ) from None


def verify_update(payload: bytes, public_key, topic_model: str | None = None) -> VerifiedUpdate:
    """Check an update message: size, shape, signature over the manifest, then every file against the manifest.

    Raises UpdateRefused; nothing of the payload is trusted before the signature verifies.
    """
    if len(payload) > MAX_UPDATE_BYTES:
        raise UpdateRefused(
            "too_large", f"{len(payload)} bytes, an update may have at most {MAX_UPDATE_BYTES}", topic_model
        )
    try:
        envelope = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise UpdateRefused("bad_envelope", "the message is not UTF-8 JSON", topic_model) from None
    if not isinstance(envelope, dict) or envelope.get("format") != UPDATE_FORMAT:
        raise UpdateRefused("bad_envelope", f"the message is not a '{UPDATE_FORMAT}'", topic_model)
    if envelope.get("v") != UPDATE_SCHEMA:
        raise UpdateRefused(
            "bad_envelope",
            f"update schema {envelope.get('v')!r} is not supported (this gateway reads {UPDATE_SCHEMA})",
            topic_model,
        )
    manifest_bytes = _b64(envelope.get("manifest"), "manifest")
    check_signature(manifest_bytes, envelope.get("signature"), public_key)
    # From here on the manifest is the signer's own words.
    try:
        data = json.loads(manifest_bytes.decode("utf-8"))
        manifest = ModelManifest.from_dict(data, root=".", source="signed manifest")
        check_id("model", manifest.name)
    except (UnicodeDecodeError, ValueError, ManifestError, ContractError) as exc:
        raise UpdateRefused("bad_manifest", str(exc), topic_model) from None
    name, version = manifest.name, manifest.version
    parse_version(version)
    if topic_model is not None and name != topic_model:
        raise UpdateRefused(
            "mismatch", f"the manifest is for model {name}, the topic for {topic_model}", topic_model, version
        )
    listed = {entry["path"]: entry for entry in data["files"].values()}
    if set(listed) & {MANIFEST_FILE, SIGNATURE_FILE}:
        raise UpdateRefused(
            "bad_manifest", f"a model file may not be named {MANIFEST_FILE} or {SIGNATURE_FILE}", name, version
        )
    sent = envelope.get("files")
    if not isinstance(sent, dict):
        raise UpdateRefused("bad_envelope", "files must be an object of path -> base64", name, version)
    if set(sent) != set(listed):
        missing, extra = sorted(set(listed) - set(sent)), sorted(set(sent) - set(listed))
        raise UpdateRefused(
            "mismatch",
            f"files missing: {', '.join(missing) or 'none'}; files not in the signed "
            f"manifest: {', '.join(extra) or 'none'}",
            name,
            version,
        )
    files = {}
    for path, entry in sorted(listed.items()):
        content = _b64(sent[path], f"files[{path!r}]")
        actual = hashlib.sha256(content).hexdigest()
        if actual != entry["sha256"].lower() or len(content) != entry["bytes"]:
            raise UpdateRefused(
                "hash_mismatch",
                f"{path}: expected sha256 {entry['sha256']} ({entry['bytes']} "
                f"bytes), got sha256 {actual} ({len(content)} bytes)",
                name,
                version,
            )
        files[path] = content
    return VerifiedUpdate(name, version, manifest_bytes, envelope["signature"], files, manifest)
