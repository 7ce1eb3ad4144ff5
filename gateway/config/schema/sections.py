"""The fixed sections of a gateway config: sources, mqtt (with tls), storage, homeassistant, model_updates."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, ClassVar

from pydantic import BeforeValidator, Field, ValidationInfo, field_validator

from gateway.config.schema.base import Section
from gateway.config.schema.types import (
    CONTEXT_PATH,
    FilePath,
    Identifier,
    SilentMinutes,
    Text,
    _client_id,
    _env_var,
    _flag,
    _host,
    _topic_prefix,
    fail,
    number,
    whole,
)
from gateway.security.secrets import loose_permissions


class ReplaySource(Section):
    """A recorded or simulated dataset the replay sensors are read from."""

    file: FilePath  # relative to the config file's folder
    speed: number(0) = 0.0  # 0 = as fast as possible, N = N times real time


class SourcesConfig(Section):
    """Where the sensors' readings come from besides their own drivers."""

    replay: ReplaySource | None = None


def _private_file(path: Path | None, info: ValidationInfo) -> Path | None:
    """Refuse a secret file (password, private key) that other users can read; a missing one is
    left to the gateway's start (a config is often checked on a workstation, not on the gateway)."""
    if path is None:
        return None
    full = Path(os.path.expanduser(path))
    config_path = (info.context or {}).get(CONTEXT_PATH)
    if not full.is_absolute() and config_path is not None:
        full = Path(config_path).absolute().parent / full
    problem = loose_permissions(full)
    if problem:
        raise fail(problem)
    return path


class TlsConfig(Section):
    """TLS to the broker: the CA that signed it and, for mutual TLS, this gateway's certificate and key."""

    ca_file: FilePath | None = None
    cert_file: FilePath | None = None
    key_file: FilePath | None = Field(default=None, validate_default=True)  # checked against cert_file

    @field_validator("key_file")
    @classmethod
    def _pair(cls, key_file: Path | None, info: ValidationInfo) -> Path | None:
        if (key_file is None) != (info.data.get("cert_file") is None) and "cert_file" in info.data:
            raise fail("cert_file and key_file go together: give both or neither")
        return key_file

    @field_validator("key_file")
    @classmethod
    def _key_file_private(cls, key_file: Path | None, info: ValidationInfo) -> Path | None:
        return _private_file(key_file, info)


class MqttConfig(Section):
    """The MQTT broker the gateway publishes to."""

    refused_keys: ClassVar[dict[str, str]] = {
        "password": "a password must not be written in the config file: put it in an environment "
        "variable named by password_env, or in a file named by password_file",
    }

    host: Annotated[str, BeforeValidator(_host)]
    port: whole(1, 65535) = 1883
    client_id: Annotated[str, BeforeValidator(_client_id)] | None = None  # filled: frugalsense-<gateway>
    keepalive_s: whole(5, 3600) = 30
    topic_prefix: Annotated[str, BeforeValidator(_topic_prefix)] = "frugalsense"
    readings_batch: whole(1, 1000) = 50
    username: Text | None = None
    password_env: Annotated[str, BeforeValidator(_env_var)] | None = None
    password_file: FilePath | None = None
    tls: TlsConfig | None = None

    @field_validator("password_file")
    @classmethod
    def _one_password(cls, password_file: Path | None, info: ValidationInfo) -> Path | None:
        if password_file is not None and info.data.get("password_env") is not None:
            raise fail("give password_env or password_file, not both")
        return password_file

    @field_validator("password_file")
    @classmethod
    def _password_file_private(cls, password_file: Path | None, info: ValidationInfo) -> Path | None:
        return _private_file(password_file, info)


class StorageConfig(Section):
    """Where the gateway keeps its outbox and state, and how large and old the outbox may grow."""

    data_dir: FilePath = Path("/var/lib/frugalsense")  # outbox and detector state
    outbox_max_mb: whole(1, 4096) = 64
    # Readings and status older than this are dropped from the outbox (alerts and detections
    # never are): past a database's retention they would be dropped there anyway.
    outbox_max_age_days: whole(1, 3650) = 30
    # Detector state (baselines, windows, open alerts) is saved to data_dir/checkpoints/ at
    # least this often in data time (a fast replay at most once a second) and on a clean stop.
    checkpoint_every_min: whole(1, 1440) = 5
    # On start a checkpoint older than this, in data time, than the first reading is ignored:
    # the detector warms up again instead of going on from a stale state.
    checkpoint_max_age_days: whole(1, 365) = 7


class AlertsConfig(Section):
    """Alerts the gateway raises itself, besides its models': a sensor gone silent (`sensor_silent`)."""

    # A sensor with no reading for more than this many minutes, on the gateway's clock, raises a
    # sensor_silent alert, cleared when its readings come back ('unknown' readings do not count).
    # A sensor's own silent_after_min overrides it. Absent or 0: no sensor is watched.
    silent_after_min: SilentMinutes | None = None


class HomeAssistantConfig(Section):
    """Home Assistant MQTT discovery: sensors, leak detections and the gateway appear in Home Assistant."""

    enabled: Annotated[bool, BeforeValidator(_flag)] = False
    prefix: Annotated[str, BeforeValidator(_topic_prefix)] = "homeassistant"  # Home Assistant's discovery_prefix


class ModelUpdatesConfig(Section):
    """Signed model updates over MQTT (docs/model-updates.md): verified, swapped, rolled back if they fail."""

    enabled: Annotated[bool, BeforeValidator(_flag)] = False
    # Ed25519 public key (PEM) of the fleet's model-signing key: frugalsense model keygen
    public_key_file: FilePath | None = Field(default=None, validate_default=True)
    # accept a version not newer than the one in service
    allow_downgrade: Annotated[bool, BeforeValidator(_flag)] = False
    models: list[Identifier] = Field(default_factory=list)  # model names accepted before one is installed

    @field_validator("public_key_file")
    @classmethod
    def _key_when_enabled(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        if path is None and info.data.get("enabled"):
            raise fail(
                "model updates need the public key that signs them: set public_key_file "
                "(make the key pair with: frugalsense model keygen)"
            )
        return path
