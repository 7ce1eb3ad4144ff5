"""Make the TLS and login files of a fleet: CA, broker certificate, broker passwords and ACL, per-gateway files.

Run it on a trusted workstation, keep ``ca.key`` offline, copy each folder where it goes:

    python scripts/make_certs.py --out fleet --broker-host mqtt.example.org \\
        --gateway net3-north/gw-01 --gateway net3-north/gw-02 [--client-certs]

    fleet/ca.pem, ca.key                       the fleet's CA (ca.key never leaves this machine)
    fleet/broker/                              -> the broker: broker.pem/.key, passwd, acl, mosquitto-tls.conf
    fleet/bridge/mqtt.pass                     -> the bridge host (user frugalsense-bridge)
    fleet/gateways/<site>/<gateway>/           -> that gateway: ca.pem, mqtt.pass, client.pem/.key
    fleet/operators/<login>/                   -> that operator (--operator m.dupont@net3): ca.pem, mqtt.pass

Running it again with more ``--gateway`` adds them and keeps the CA, the broker
certificate and every password already made. Secrets are written with mode 0600.
"""

from __future__ import annotations

import argparse
import secrets
import shutil
import sys
from pathlib import Path

from gateway.protocol import topics as T
from gateway.security.broker import (
    DEFAULT_BRIDGE_USER,
    MQTTS_PORT,
    BrokerSecurity,
    acl_text,
    gateway_user,
    operator_user,
    write_password_file,
)
from gateway.security.certs import issue_certificate, load_pair, make_ca, write_pair
from gateway.security.secrets import read_secret_file, write_private_file

ROOT = Path(__file__).resolve().parent.parent

CLIENT_CERT_PORT = MQTTS_PORT + 1


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line: output folder, broker names, gateways, bridge and technician users."""
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[2:]),
    )
    p.add_argument("--out", type=Path, required=True, help="folder for everything (created if missing)")
    p.add_argument(
        "--gateway", action="append", default=[], metavar="SITE/GATEWAY", help="a gateway to make files for (repeat)"
    )
    p.add_argument(
        "--broker-host",
        action="append",
        default=[],
        metavar="NAME",
        help="DNS name gateways use to reach the broker (repeat)",
    )
    p.add_argument(
        "--broker-ip",
        action="append",
        default=[],
        metavar="ADDRESS",
        help="IP address gateways use to reach the broker (repeat)",
    )
    p.add_argument(
        "--client-certs",
        action="store_true",
        help="also make a client certificate per gateway (CN = SITE/GATEWAY) and a listener for them",
    )
    p.add_argument(
        "--operator",
        action="append",
        default=[],
        metavar="LOGIN",
        help="an operator who may act on alerts, a login with an '@' like m.dupont@net3 (repeat)",
    )
    p.add_argument("--prefix", default=T.DEFAULT_PREFIX, help="MQTT topic prefix (default %(default)s)")
    p.add_argument("--bridge-user", default=DEFAULT_BRIDGE_USER)
    p.add_argument(
        "--home-assistant",
        action="store_true",
        help="let every gateway publish its Home Assistant discovery (homeassistant/+/<gateway>/#)",
    )
    p.add_argument(
        "--install-dir",
        default="/etc/mosquitto/frugalsense",
        help="where the broker/ files will live on the broker, for mosquitto-tls.conf",
    )
    p.add_argument("--ca-name", default="frugalsense fleet CA")
    args = p.parse_args(argv)
    for login in args.operator:
        try:
            operator_user(login)
        except ValueError as exc:
            p.error(f"--operator: {exc}")
    args.gateways = []
    for item in args.gateway:
        site, _, gateway = item.partition("/")
        try:
            args.gateways.append(gateway_user(site, gateway) if gateway and "/" not in gateway else None)
        except ValueError as exc:
            p.error(f"--gateway {item!r}: {exc}")
        if args.gateways[-1] is None:
            p.error(f"--gateway must be SITE/GATEWAY, like net3-north/gw-01; got {item!r}")
    return args


def password_of(path: Path) -> str:
    """The password kept in ``path``, made (random, 0600) the first time."""
    if not path.exists():
        write_private_file(path, secrets.token_urlsafe(24) + "\n")
    return read_secret_file(path)


def main(argv: list[str] | None = None) -> int:
    """Write the CA, the broker's certificate, passwords and ACL, and each gateway's files into ``--out``."""
    args = parse_args(argv)
    out: Path = args.out
    for folder in (out, out / "broker", out / "bridge", out / "gateways"):
        folder.mkdir(parents=True, exist_ok=True)

    if (out / "ca.pem").exists():
        ca = load_pair(out / "ca.pem", out / "ca.key")
    else:
        ca = make_ca(args.ca_name)
        write_pair(ca, out / "ca.pem", out / "ca.key")
        print(f"made CA {out / 'ca.pem'} (keep {out / 'ca.key'} offline)")

    broker = out / "broker"
    if not (broker / "broker.pem").exists():
        if not (args.broker_host or args.broker_ip):
            print("make_certs: give --broker-host and/or --broker-ip: the names gateways connect to", file=sys.stderr)
            return 2
        pair = issue_certificate(
            ca,
            (args.broker_host or args.broker_ip)[0],
            dns_names=args.broker_host,
            ip_addresses=args.broker_ip,
            server=True,
        )
        write_pair(pair, broker / "broker.pem", broker / "broker.key")
        print(f"made broker certificate for {', '.join(args.broker_host + args.broker_ip)}")
    shutil.copyfile(out / "ca.pem", broker / "ca.pem")

    for user in args.gateways:
        folder = out / "gateways" / user
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out / "ca.pem", folder / "ca.pem")
        password_of(folder / "mqtt.pass")
        if args.client_certs and not (folder / "client.pem").exists():
            write_pair(issue_certificate(ca, user), folder / "client.pem", folder / "client.key")
        print(f"gateway {user}: {folder}")

    for login in args.operator:
        folder = out / "operators" / login
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out / "ca.pem", folder / "ca.pem")
        password_of(folder / "mqtt.pass")
        print(f"operator {login}: {folder}")

    # The broker's password file is rebuilt from every user made so far, this run or before.
    users = {args.bridge_user: password_of(out / "bridge" / "mqtt.pass")}
    fleet = []
    for pass_file in sorted((out / "gateways").glob("*/*/mqtt.pass")):
        site, gateway = pass_file.parent.parent.name, pass_file.parent.name
        users[gateway_user(site, gateway)] = read_secret_file(pass_file)
        fleet.append((site, gateway))
    operators = [pass_file.parent.name for pass_file in sorted(out.glob("operators/*/mqtt.pass"))]
    users |= {login: read_secret_file(out / "operators" / login / "mqtt.pass") for login in operators}
    write_password_file(broker / "passwd", users)
    (broker / "acl").write_text(
        acl_text(
            args.prefix, args.bridge_user, home_assistant=fleet if args.home_assistant else (), operators=operators
        )
    )
    installed = Path(args.install_dir)
    security = BrokerSecurity(
        ca_file=installed / "ca.pem",
        cert_file=installed / "broker.pem",
        key_file=installed / "broker.key",
        password_file=installed / "passwd",
        acl_file=installed / "acl",
        client_cert_listener=args.client_certs,
    )
    conf = security.config_lines([MQTTS_PORT, CLIENT_CERT_PORT])
    (broker / "mosquitto-tls.conf").write_text(
        "# frugalsense: TLS-only listeners, logins and ACL (made by scripts/make_certs.py).\n"
        f"# Copy the files of this folder to {installed}, then include this file from mosquitto.conf.\n"
        + "\n".join(conf)
        + "\n"
    )
    print(f"broker files in {broker}: {len(users)} users; copy them to {installed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
