"""The InfluxDB options of the commands that talk to it (bridge, report, influx setup) and the writer they make.

As for MQTT, a password never goes on the command line (``ps`` would show it): it comes
from a 0600 file (``--influx-password-file``) or from the environment variable
``FRUGALSENSE_INFLUX_PASSWORD`` (a systemd ``EnvironmentFile``). ``--influx-ca`` is the
CA that signed an ``https://`` server's certificate.
"""

from __future__ import annotations

import argparse
import os

from gateway.commands.mqtt_options import env_value

PASSWORD_ENV = "FRUGALSENSE_INFLUX_PASSWORD"
DEFAULT_URL = "http://127.0.0.1:8086"
DEFAULT_DATABASE = "frugalsense"
V2_ONLY = ("bucket", "org", "token_env")


def add_influx_options(
    parser: argparse.ArgumentParser, *, v2: bool = True, url_flags: tuple[str, ...] = ("--influx-url",)
):
    """Add the InfluxDB group (``v2``: the API switch and the v2 options too); return it."""
    influx = parser.add_argument_group("InfluxDB")
    if v2:
        influx.add_argument(
            "--influx-api",
            choices=("v1", "v2"),
            default="v1",
            help="v1: /write?db= and InfluxQL (InfluxDB 1.x, as Debian ships it); v2: /api/v2 with "
            "influxdb-client (InfluxDB 1.8+, 2.x, 3.x, Cloud)",
        )
    else:  # InfluxQL only: the v2 options are simply absent
        parser.set_defaults(influx_api="v1", **dict.fromkeys(V2_ONLY))
    influx.add_argument(
        *url_flags, dest="influx_url", default=DEFAULT_URL, metavar="URL", help=f"default {DEFAULT_URL}"
    )
    influx.add_argument(
        "--database",
        default=DEFAULT_DATABASE,
        help="v1 database" + (" (and the v2 bucket if none given)" if v2 else "") + f"; default {DEFAULT_DATABASE}",
    )
    if v2:
        influx.add_argument("--bucket", default=None, help="v2 bucket (InfluxDB 1.8: DATABASE/RETENTION_POLICY)")
        influx.add_argument("--org", default=None, help="v2 organisation (InfluxDB 1.8 ignores it)")
        influx.add_argument(
            "--token-env",
            default=None,
            metavar="VAR",
            help="environment variable holding the v2 API token (InfluxDB 1.8: USER:PASSWORD)",
        )
    influx.add_argument(
        "--influx-user",
        default=None,
        metavar="USER",
        help=f"InfluxDB 1.x user when authentication is on; its password from --influx-password-file or {PASSWORD_ENV}",
    )
    influx.add_argument(
        "--influx-password-file",
        default=None,
        metavar="FILE",
        help="file holding the InfluxDB password; must not be readable by group or others",
    )
    influx.add_argument(
        "--influx-ca", default=None, metavar="PEM", help="CA certificate that signed the https:// server's certificate"
    )
    return influx


def influx_login(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """(user, password) from the options; every mistake is a UserError naming the option."""
    from gateway.cli import UserError
    from gateway.security.secrets import SecretFileError, read_secret_file

    if args.influx_password_file and not args.influx_user:
        raise UserError("--influx-password-file needs --influx-user (the user whose password it holds)")
    if not args.influx_user:
        return None, None
    if args.influx_password_file:
        try:
            return args.influx_user, read_secret_file(args.influx_password_file)
        except SecretFileError as exc:
            raise UserError(f"--influx-password-file: {exc}") from None
    password = os.environ.get(PASSWORD_ENV)
    if password is None:
        raise UserError(
            f"--influx-user {args.influx_user} needs its password: --influx-password-file FILE, "
            f"or the environment variable {PASSWORD_ENV}"
        )
    return args.influx_user, password


def password_source(args: argparse.Namespace) -> str:
    """Where the password came from, for error messages."""
    return f"--influx-password-file {args.influx_password_file}" if args.influx_password_file else PASSWORD_ENV


def check_ca(args: argparse.Namespace) -> None:
    """--influx-ca must be a file, and only for an https:// URL."""
    from gateway.cli import UserError

    if args.influx_ca and not os.path.isfile(args.influx_ca):
        raise UserError(f"--influx-ca {args.influx_ca}: no such file")
    if args.influx_ca and not args.influx_url.startswith("https://"):
        raise UserError(f"--influx-ca is for https:// servers; --influx-url is {args.influx_url}")


def make_writer(args: argparse.Namespace):
    """The writer (v1 or v2) the options describe, or a UserError saying which options do not fit."""
    from gateway.bridge.influx_writer import make_influx_writer
    from gateway.cli import UserError

    api = args.influx_api
    if api == "v1" and (args.bucket or args.org or args.token_env):
        raise UserError("--bucket, --org and --token-env are for --influx-api v2; v1 uses --database")
    check_ca(args)
    user, password = influx_login(args)
    token = env_value(args.token_env, "the InfluxDB token")
    if api == "v2" and user and not token:
        token = f"{user}:{password}"  # InfluxDB 1.8's v2 API takes USER:PASSWORD as its token
    return make_influx_writer(
        api,
        args.influx_url,
        database=args.database,
        bucket=args.bucket,
        org=args.org,
        token=token,
        username=user if api == "v1" else None,
        password=password if api == "v1" else None,
        ca_file=args.influx_ca,
    )


def login_problem(args: argparse.Namespace, exc) -> str | None:
    """A refused login (401/403) as a sentence naming the options to fix; None for other errors."""
    said = f"{exc.status} {exc.detail}".strip()
    if exc.status == 401 and not args.influx_user:
        return (
            f"InfluxDB {args.influx_url} wants a login (it answered {said}): give --influx-user and "
            f"--influx-password-file FILE or {PASSWORD_ENV}"
        )
    if exc.status == 401:
        return (
            f"InfluxDB {args.influx_url} refused user {args.influx_user!r} (it answered {said}): "
            f"check --influx-user and the password in {password_source(args)}"
        )
    if exc.status == 403:
        return (
            f"InfluxDB {args.influx_url}: user {args.influx_user!r} may not do this (it answered {said}): "
            f"GRANT it WRITE (bridge) or admin rights (influx setup) on database {args.database}"
        )
    return None
