"""The MQTT connection options every command that talks to a broker takes, and the settings they make.

Secrets never go on the command line (``ps`` would show them): the password comes from
an environment variable or a 0600 file, and a private key file must be 0600 too.
"""

from __future__ import annotations

import argparse
import os


def add_mqtt_options(parser: argparse.ArgumentParser, *, client_id: str, client_id_help: str | None = None):
    """Add the MQTT group to ``parser``; return it so a command can add its own MQTT options."""
    mqtt = parser.add_argument_group("MQTT")
    mqtt.add_argument("--mqtt-host", default="127.0.0.1")
    mqtt.add_argument("--mqtt-port", type=int, default=1883)
    mqtt.add_argument("--mqtt-username", default=None)
    secret = mqtt.add_mutually_exclusive_group()
    secret.add_argument(
        "--mqtt-password-env",
        default=None,
        metavar="VAR",
        help="environment variable holding the MQTT password (never on the command line)",
    )
    secret.add_argument(
        "--mqtt-password-file",
        default=None,
        metavar="FILE",
        help="file holding the MQTT password; must not be readable by group or others",
    )
    mqtt.add_argument(
        "--mqtt-ca-file", default=None, metavar="PEM", help="CA certificate of the broker: connect with TLS"
    )
    mqtt.add_argument("--mqtt-cert-file", default=None, metavar="PEM", help="client certificate (with --mqtt-key-file)")
    mqtt.add_argument(
        "--mqtt-key-file",
        default=None,
        metavar="PEM",
        help="client private key; must not be readable by group or others",
    )
    mqtt.add_argument("--client-id", default=client_id, help=client_id_help)
    return mqtt


def env_value(name: str | None, what: str) -> str | None:
    """The value of environment variable ``name`` (None if no name given); a missing one is a UserError."""
    from gateway.cli import UserError

    if not name:
        return None
    value = os.environ.get(name)
    if value is None:
        raise UserError(f"environment variable {name} ({what}) is not set")
    return value


def mqtt_settings(args: argparse.Namespace):
    """MqttSettings from the options above, with every mistake as one line for people."""
    from gateway.cli import UserError
    from gateway.protocol.mqtt_client import MqttSettings
    from gateway.security.secrets import SecretFileError, check_private_file, read_secret_file

    if bool(args.mqtt_cert_file) != bool(args.mqtt_key_file):
        raise UserError("--mqtt-cert-file and --mqtt-key-file go together: give both or neither")
    if args.mqtt_cert_file and not args.mqtt_ca_file:
        raise UserError("a client certificate needs TLS: give --mqtt-ca-file too")
    try:
        password = env_value(args.mqtt_password_env, "the MQTT password")
        if args.mqtt_password_file:
            password = read_secret_file(args.mqtt_password_file)
        if args.mqtt_key_file:
            check_private_file(args.mqtt_key_file)
    except SecretFileError as exc:
        raise UserError(str(exc)) from None
    return MqttSettings(
        args.mqtt_host,
        args.mqtt_port,
        client_id=args.client_id,
        username=args.mqtt_username,
        password=password,
        ca_file=args.mqtt_ca_file,
        cert_file=args.mqtt_cert_file,
        key_file=args.mqtt_key_file,
    )
