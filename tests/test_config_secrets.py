"""Secrets in gateway configs: files readable by others are refused; the production templates validate."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.config import ConfigError, load_config
from gateway.security.broker import gateway_user
from gateway.security.secrets import SecretFileError, check_private_file, read_secret_file

ROOT = Path(__file__).resolve().parent.parent
# tests/test_config.py checks firmware_configs/*.yaml; the templates one folder down are checked here.
TEMPLATES = sorted((ROOT / "firmware_configs" / "templates").glob("*.yaml"))

CONFIG = """\
site: s1
gateway: gw-1
sensors:
  - {{id: F-1, quantity: flow, driver: replay}}
sources:
  replay: {{file: data.npz}}
mqtt:
  host: 127.0.0.1
  port: 8883
  username: s1/gw-1
{secret}
"""


def write(tmp_path: Path, secret: str) -> Path:
    path = tmp_path / "gw.yaml"
    path.write_text(CONFIG.format(secret=secret))
    return path


def secret_file(path: Path, mode: int) -> Path:
    path.write_text("s3cret\n")
    os.chmod(path, mode)
    return path


# ---- templates -------------------------------------------------------------------------


def test_there_are_production_templates():
    assert {p.name for p in TEMPLATES} >= {"production-tls.yaml", "production-mtls.yaml"}


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.name)
def test_template_validates_and_is_tls_only(path, capsys):
    assert main(["config", "validate", str(path)]) == 0
    assert ": ok (" in capsys.readouterr().out
    mqtt = load_config(path).mqtt
    assert mqtt.tls is not None and mqtt.tls.ca_file is not None and mqtt.port != 1883
    assert mqtt.password_env is None  # secrets in files the validator checks
    if mqtt.tls.cert_file is None:  # password login: the user must be the one the ACL pattern expects
        config = load_config(path)
        assert mqtt.username == gateway_user(config.site, config.gateway) and mqtt.password_file is not None


# ---- password_file and key_file ----------------------------------------------------------


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o602])
def test_password_file_readable_by_others_is_refused(tmp_path, mode):
    secret_file(tmp_path / "mqtt.pass", mode)
    config = write(tmp_path, "  password_file: mqtt.pass")  # relative: next to the config file
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    (problem,) = caught.value.problems
    full = tmp_path / "mqtt.pass"
    assert str(problem) == (
        f"{config}:11: mqtt.password_file: {full} is open to other users (mode {mode:04o}): run chmod 600 {full}"
    )


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_private_password_file_is_accepted(tmp_path, mode):
    secret_file(tmp_path / "mqtt.pass", mode)
    assert load_config(write(tmp_path, "  password_file: mqtt.pass")).mqtt.password_file == Path("mqtt.pass")
    assert read_secret_file(tmp_path / "mqtt.pass") == "s3cret"


def test_private_key_readable_by_others_is_refused_and_the_cli_says_chmod(tmp_path, capsys):
    key = secret_file(tmp_path / "client.key", 0o644)
    config = write(tmp_path, f"  tls:\n    ca_file: ca.pem\n    cert_file: client.pem\n    key_file: {key}")
    assert main(["config", "validate", str(config)]) == 1
    err = capsys.readouterr().err
    assert f"{config}:14: mqtt.tls.key_file: {key} is open to other users (mode 0644): run chmod 600 {key}" in err
    os.chmod(key, 0o600)
    assert main(["config", "validate", str(config)]) == 0


def test_missing_secret_file_is_left_to_the_gateway_start(tmp_path):
    # Configs are validated on workstations where /etc/frugalsense/... does not exist.
    config = load_config(write(tmp_path, "  password_file: /nonexistent/frugalsense/mqtt.pass"))
    with pytest.raises(SecretFileError, match="does not exist"):
        check_private_file(config.mqtt.password_file)


def test_inline_password_is_still_refused(tmp_path):
    with pytest.raises(ConfigError, match="a password must not be written in the config file"):
        load_config(write(tmp_path, "  password: hunter2"))


def test_read_secret_file_errors_say_what_to_do(tmp_path):
    empty = tmp_path / "empty"
    empty.write_text("\n")
    os.chmod(empty, 0o600)
    with pytest.raises(SecretFileError, match="is empty"):
        read_secret_file(empty)
    loose = secret_file(tmp_path / "loose", 0o644)
    with pytest.raises(SecretFileError, match=f"run chmod 600 {loose}"):
        read_secret_file(loose)
