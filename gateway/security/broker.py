"""Mosquitto's side of fleet security: TLS-only listeners, the password file, and a per-gateway ACL.

A gateway's MQTT user is ``<site>/<gateway>`` (its password user, or the Common Name
of its client certificate), so one ACL line gives every gateway its own topic prefix
and nothing else: ``pattern write frugalsense/%u/#``, less the alert commands there
(``pattern deny``: Mosquitto checks deny lines before grants), which only operators
send. The bridge's user reads every gateway and writes the dead-letter topic; the
notifier reads alerts and alert commands; the model publisher sends signed updates.

>>> print(acl_text("frugalsense", "frugalsense-bridge"))  # doctest: +NORMALIZE_WHITESPACE
# frugalsense broker ACL: anything not granted here is refused.
# A gateway (user "<site>/<gateway>") may publish only under its own prefix,
# but not the alert commands there: only operators send those.
pattern write frugalsense/%u/#
pattern deny frugalsense/%u/alert-commands
<BLANKLINE>
# The bridge reads every gateway and reports what it cannot use.
user frugalsense-bridge
topic read frugalsense/#
topic write frugalsense/deadletter
<BLANKLINE>
# The notifier reads the alerts and the operators' changes to them.
user frugalsense-notify
topic read frugalsense/+/+/alerts
topic read frugalsense/+/+/alert-commands
<BLANKLINE>
# Signed model updates: a gateway reads only its own updates; the model publisher sends them.
pattern read frugalsense/%u/model-update/#
user frugalsense-models
topic write frugalsense/+/+/model-update/#
topic read frugalsense/+/+/models
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from edge.contracts import ContractError, check_id
from gateway.protocol import topics as T
from gateway.security.secrets import write_private_file

DEFAULT_BRIDGE_USER = "frugalsense-bridge"
DEFAULT_NOTIFIER_USER = "frugalsense-notify"
MQTTS_PORT = 8883  # the registered port for MQTT over TLS


def gateway_user(site: str, gateway: str) -> str:
    """The MQTT user of one gateway; the ACL pattern turns it into the gateway's topic prefix.

    >>> gateway_user("net3-north", "gw-01")
    'net3-north/gw-01'
    >>> gateway_user("net3", "gw/01")
    Traceback (most recent call last):
    ...
    ValueError: gateway 'gw/01' must be 1-64 letters, digits, '.', '_' or '-'
    """
    for what, value in (("site", site), ("gateway", gateway)):
        try:
            check_id(what, value)
        except ContractError:
            # A '/', '+' or '#' here would widen the ACL pattern to other gateways' topics.
            raise ValueError(f"{what} {value!r} must be 1-64 letters, digits, '.', '_' or '-'") from None
    return f"{site}/{gateway}"


def operator_user(name: str) -> str:
    """An operator's MQTT login, checked: it must hold an ``@``, which no site id can.

    Every login gets the gateway pattern ``<prefix>/%u/#``: an operator called ``net3``
    would write every gateway of site ``net3``. With an ``@`` that pattern matches no
    gateway's topics.

    >>> operator_user("m.dupont@net3")
    'm.dupont@net3'
    >>> operator_user("net3")
    Traceback (most recent call last):
    ...
    ValueError: operator login 'net3' needs an '@' (e.g. m.dupont@net3): without one it could be a site id, \
and the gateway ACL pattern would let it write that site's gateways
    """
    if not isinstance(name, str) or not 3 <= len(name) <= 100 or any(c in name for c in "/+#: \t\r\n"):
        raise ValueError(f"operator login {name!r} must be 3-100 characters without '/', '+', '#', ':' or spaces")
    if "@" not in name:
        raise ValueError(
            f"operator login {name!r} needs an '@' (e.g. m.dupont@net3): without one it could be a site id, "
            "and the gateway ACL pattern would let it write that site's gateways"
        )
    return name


def acl_text(
    prefix: str = T.DEFAULT_PREFIX,
    bridge_user: str = DEFAULT_BRIDGE_USER,
    home_assistant: Iterable[tuple[str, str]] = (),
    ha_prefix: str = "homeassistant",
    operators: Iterable[str] = (),
    notifier_user: str = DEFAULT_NOTIFIER_USER,
) -> str:
    """The broker ACL; ``home_assistant`` lists the (site, gateway) pairs that announce themselves to Home Assistant.

    Discovery topics are ``<ha_prefix>/<component>/<gateway>/<object>/config`` (gateway/device/ha_discovery.py):
    outside the gateway's own prefix, so each such gateway gets its own line for its node id.
    ``operators`` are the logins that may act on alerts (``frugalsense alert``, see ``operator_user``).
    """
    commands = f"{prefix}/+/+/{T.ALERT_COMMANDS}"
    return f"""\
# frugalsense broker ACL: anything not granted here is refused.
# A gateway (user "<site>/<gateway>") may publish only under its own prefix,
# but not the alert commands there: only operators send those.
pattern write {prefix}/%u/#
pattern deny {prefix}/%u/{T.ALERT_COMMANDS}

# The bridge reads every gateway and reports what it cannot use.
user {bridge_user}
topic read {prefix}/#
topic write {T.deadletter_topic(prefix)}

# The notifier reads the alerts and the operators' changes to them.
user {notifier_user}
topic read {prefix}/+/+/{T.ALERTS}
topic read {commands}

{_model_update_lines(prefix)}{_operator_lines(operators, prefix)}{_home_assistant_lines(home_assistant, ha_prefix)}"""


def _operator_lines(operators: Iterable[str], prefix: str) -> str:
    """Each operator acknowledges, assigns, comments and resolves any gateway's alerts, and reads them.

    >>> print(_operator_lines(["m.dupont@net3"], "frugalsense"))  # doctest: +NORMALIZE_WHITESPACE
    <BLANKLINE>
    # Operators act on alerts (frugalsense alert ack|assign|comment|resolve) and read them.
    user m.dupont@net3
    topic write frugalsense/+/+/alert-commands
    topic read frugalsense/+/+/alert-commands
    topic read frugalsense/+/+/alerts
    """
    names = [operator_user(name) for name in operators]
    lines = (
        ["\n# Operators act on alerts (frugalsense alert ack|assign|comment|resolve) and read them.\n"] if names else []
    )
    for name in names:
        lines.append(
            f"user {name}\ntopic write {prefix}/+/+/{T.ALERT_COMMANDS}\n"
            f"topic read {prefix}/+/+/{T.ALERT_COMMANDS}\ntopic read {prefix}/+/+/{T.ALERTS}\n"
        )
    return "".join(lines)


def _home_assistant_lines(gateways: Iterable[tuple[str, str]], ha_prefix: str) -> str:
    gateways = list(gateways)
    lines = ["\n# Home Assistant discovery: each gateway announces only its own node.\n"] if gateways else []
    for site, gateway in gateways:
        lines.append(f"user {gateway_user(site, gateway)}\ntopic write {ha_prefix}/+/{gateway}/#\n")
    return "".join(lines)


def _model_update_lines(prefix: str) -> str:
    # Imported here: gateway.model_updates uses gateway.security, not the other way round at import time.
    from gateway.model_updates.listener import acl_lines

    return acl_lines(prefix)


def write_password_file(path: Path, users: Mapping[str, str], *, mosquitto_passwd: str | None = None) -> None:
    """Mosquitto's password file for ``users`` (name -> password), hashed by ``mosquitto_passwd -U``.

    The clear text goes into a 0600 file that ``-U`` hashes in place, so no password is
    ever on a command line (where ``ps`` would show it).
    """
    tool = (
        mosquitto_passwd
        or shutil.which("mosquitto_passwd")
        or shutil.which("mosquitto_passwd", path="/usr/sbin:/usr/local/bin:/usr/local/sbin")
    )
    if tool is None:
        raise FileNotFoundError("mosquitto_passwd not found: install it with 'apt-get install mosquitto'")
    for name, password in users.items():
        if ":" in name or "\n" in name or "\n" in password or not password:
            raise ValueError(f"user {name!r}: names may not contain ':' or line breaks, passwords not be empty")
    write_private_file(path, "".join(f"{name}:{password}\n" for name, password in users.items()))
    done = subprocess.run([tool, "-U", os.fspath(path)], capture_output=True, text=True)
    if done.returncode != 0:
        path.unlink(missing_ok=True)  # never leave the clear text behind
        raise RuntimeError(f"mosquitto_passwd -U {path} failed: {done.stderr.strip() or done.stdout.strip()}")


@dataclass(frozen=True)
class BrokerSecurity:
    """Files of a TLS-only Mosquitto: server certificate, CA for clients, passwords, ACL.

    ``client_cert_listener`` adds a second TLS listener that requires a client
    certificate and takes its Common Name as the user (no password there).
    """

    ca_file: Path
    cert_file: Path
    key_file: Path
    password_file: Path | None = None
    acl_file: Path | None = None
    client_cert_listener: bool = False

    def config_lines(self, ports: Sequence[int], bind: str = "") -> list[str]:
        """Mosquitto 2.0 lines: global auth settings, then one TLS listener per port (never plaintext)."""
        lines = ["per_listener_settings false", "allow_anonymous false"]
        if self.password_file:
            lines.append(f"password_file {self.password_file}")
        if self.acl_file:
            lines.append(f"acl_file {self.acl_file}")
        lines += self._listener(ports[0], bind, client_certs=False)
        if self.client_cert_listener:
            lines += self._listener(ports[1], bind, client_certs=True)
        return lines

    def _listener(self, port: int, bind: str, *, client_certs: bool) -> list[str]:
        return [
            f"listener {port} {bind}".rstrip(),
            f"cafile {self.ca_file}",
            f"certfile {self.cert_file}",
            f"keyfile {self.key_file}",
            "tls_version tlsv1.2",
            f"require_certificate {'true' if client_certs else 'false'}",
            f"use_identity_as_username {'true' if client_certs else 'false'}",
        ]

    @property
    def port_count(self) -> int:
        return 2 if self.client_cert_listener else 1
