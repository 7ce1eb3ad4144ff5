"""A private Mosquitto 2.0 broker: its config lines, the CONNECT probe, and the service that runs it.

Anonymous on one loopback listener by default; with a ``BrokerSecurity`` TLS only, with
passwords, an ACL and, if asked, a second listener for client certificates.
"""

from __future__ import annotations

import os
import pwd
import time
from collections.abc import Sequence
from pathlib import Path

from gateway.local_services.process import LOOPBACK, Service
from gateway.security.broker import BrokerSecurity

MOSQUITTO = "mosquitto"


def mosquitto_config_lines(
    port: int,
    log_path: Path,
    *,
    persistence_dir: Path | None = None,
    user: str | None = None,
    extra_lines: Sequence[str] = (),
    listener_lines: Sequence[str] | None = None,
) -> list[str]:
    """Lines of a Mosquitto 2.0 config: one anonymous loopback listener, a log file, options.

    ``listener_lines`` replace the anonymous listener (``BrokerSecurity.config_lines``:
    TLS only, passwords, ACL). ``extra_lines`` are appended as given. ``user`` keeps
    Mosquitto from dropping root privileges to the ``mosquitto`` user, who could not
    write our folders.

    >>> mosquitto_config_lines(18830, Path("/tmp/m.log"), persistence_dir=Path("/tmp/p"), user="root")
    ... # doctest: +NORMALIZE_WHITESPACE
    ['user root', 'log_dest file /tmp/m.log', 'log_timestamp_format %Y-%m-%dT%H:%M:%S',
     'persistence true', 'persistence_location /tmp/p',
     'listener 18830 127.0.0.1', 'allow_anonymous true']
    """
    lines = []
    if user:
        lines.append(f"user {user}")
    lines += [f"log_dest file {log_path}", "log_timestamp_format %Y-%m-%dT%H:%M:%S"]
    if persistence_dir is not None:
        # Mosquitto 2.0 adds the slash before the file name itself.
        lines += ["persistence true", f"persistence_location {persistence_dir}"]
    if listener_lines is None:
        lines += [f"listener {port} {LOOPBACK}", "allow_anonymous true"]
    else:
        lines += list(listener_lines)
    lines += list(extra_lines)
    return lines


def mqtt_answers(host: str, port: int, timeout_s: float = 2.0, *, ca_file: Path | None = None) -> bool:
    """True if an MQTT broker at host:port accepts a CONNECT (CONNACK with success).

    With ``ca_file`` it connects over TLS, anonymously, and any CONNACK counts: a
    secured broker answering "not authorized" is up.
    """
    import paho.mqtt.client as mqtt  # only needed when Mosquitto is asked for

    result: dict[str, bool] = {}
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"frugalsense-probe-{os.getpid()}")
    client.on_connect = lambda c, u, flags, reason, props: result.setdefault(
        "ok", ca_file is not None or not reason.is_failure
    )
    try:
        if ca_file is not None:
            client.tls_set(ca_certs=str(ca_file))
        client.connect(host, port, keepalive=10)
        deadline = time.monotonic() + timeout_s
        while "ok" not in result and time.monotonic() < deadline:
            client.loop(timeout=0.1)
        client.disconnect()
        client.loop(timeout=0.1)  # lets paho close its socket
    except (OSError, ValueError):  # ssl.SSLError is an OSError; ValueError: TLS files unreadable
        return False
    return result.get("ok", False)


def _current_user() -> str | None:
    """Our user name, so Mosquitto started as root stays root instead of becoming ``mosquitto``."""
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:  # a uid without a passwd entry is not root, and Mosquitto then ignores `user`
        return None


class Mosquitto(Service):
    """Mosquitto as a child process: anonymous on loopback, or TLS-only with ``security``."""

    name, binary, apt_package, env_var = MOSQUITTO, "mosquitto", "mosquitto", "FRUGALSENSE_MOSQUITTO_BIN"

    def __init__(
        self,
        root: Path,
        binary_override: str | None,
        *,
        persistence: bool,
        extra_config: Sequence[str],
        security: BrokerSecurity | None = None,
    ):
        super().__init__(root, binary_override)
        self.persistence = persistence
        self.extra_config = list(extra_config)
        self.security = security
        self.port_count = security.port_count if security else 1
        self.config_path = self.dir / "mosquitto.conf"

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.security else 'mqtt'}://{LOOPBACK}:{self.ports[0]}"

    def command(self, binary: str) -> list[str]:
        listeners = self.security.config_lines(self.ports, LOOPBACK) if self.security else None
        lines = mosquitto_config_lines(
            self.ports[0],
            self.log_path,
            persistence_dir=self.data_dir if self.persistence else None,
            user=_current_user(),
            extra_lines=self.extra_config,
            listener_lines=listeners,
        )
        self.config_path.write_text("\n".join(lines) + "\n")
        return [binary, "-c", str(self.config_path)]

    def answers(self) -> bool:
        return mqtt_answers(LOOPBACK, self.ports[0], ca_file=self.security.ca_file if self.security else None)
