"""A second real InfluxDB 1.x for the tests, as production runs it: authentication on, HTTPS only.

Debian's influxd with ``auth-enabled = true`` and ``https-enabled = true`` (a certificate
from the fleet CA of ``gateway.security.certs``), an admin user created through the HTTP
API the way InfluxDB's docs say to (the first CREATE USER needs no login), and a bridge
user with rights on one database only.
"""

from __future__ import annotations

import base64
import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.serialization import Encoding

from gateway.local_services.influxdb import InfluxDB, influxdb_config_text
from gateway.security.certs import issue_certificate, make_ca, write_pair
from gateway.security.secrets import write_private_file

ADMIN, ADMIN_PASSWORD = "admin", "adm1n-S3cret"
BRIDGE, BRIDGE_PASSWORD = "bridge", "br1dge-S3cret"


class SecureInfluxDB(InfluxDB):
    """influxd with a login required and TLS on its HTTP API."""

    def __init__(self, root: Path, cert: Path, key: Path, ca: Path):
        super().__init__(root, None)
        self.cert, self.key, self.ca = cert, key, ca
        self.tls = ssl.create_default_context(cafile=str(ca))

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.ports[0]}"

    def command(self, binary: str) -> list[str]:
        config_path = self.dir / "influxdb.conf"
        text = influxdb_config_text(self.ports[0], self.ports[1], self.data_dir)
        http = (
            "[http]\n  auth-enabled = true\n  https-enabled = true\n"
            f'  https-certificate = "{self.cert}"\n  https-private-key = "{self.key}"\n'
        )
        config_path.write_text(text.replace("[http]\n", http))
        return [binary, "-config", str(config_path)]

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/ping", timeout=1, context=self.tls) as response:
                return response.status == 204
        except OSError:
            return False

    def query(self, q: str, *, user: str | None = ADMIN, password: str = ADMIN_PASSWORD, db: str = "") -> dict:
        """Run InfluxQL as ``user`` (None: no login); raises on an HTTP or statement error."""
        headers = {}
        if user:
            headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        data = urllib.parse.urlencode({"q": q, "db": db, "epoch": "ms"}).encode()
        request = urllib.request.Request(self.url + "/query", data=data, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10, context=self.tls) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"{q!r}: {exc.code} {exc.read()!r}") from None
        for result in answer.get("results", []):
            if "error" in result:
                raise AssertionError(f"{q!r}: {result['error']}")
        return answer


@dataclass
class SecureSetup:
    """The running server and the files a bridge needs to reach it."""

    server: SecureInfluxDB
    ca: Path
    bridge_password_file: Path
    database: str

    @property
    def url(self) -> str:
        return self.server.url


def start_secure_influx(root: Path, database: str = "frugalsense") -> SecureSetup:
    """Start it under ``root``; create the admin, the database and the bridge user (ALL on ``database``)."""
    root.mkdir(parents=True, exist_ok=True)
    ca = make_ca("influx test CA")
    server_pair = issue_certificate(ca, "influxdb", dns_names=["localhost"], ip_addresses=["127.0.0.1"], server=True)
    write_pair(server_pair, root / "influx.crt", root / "influx.key")
    (root / "ca.crt").write_bytes(ca.cert.public_bytes(Encoding.PEM))
    server = SecureInfluxDB(root, root / "influx.crt", root / "influx.key", root / "ca.crt")
    server.start(20)
    try:
        server.query(f"CREATE USER {ADMIN} WITH PASSWORD '{ADMIN_PASSWORD}' WITH ALL PRIVILEGES", user=None)
        server.query(f'CREATE DATABASE "{database}"')
        server.query(f"CREATE USER {BRIDGE} WITH PASSWORD '{BRIDGE_PASSWORD}'")
        server.query(f'GRANT ALL ON "{database}" TO {BRIDGE}')
    except BaseException:
        server.stop()
        raise
    password_file = root / "bridge.pass"
    write_private_file(password_file, BRIDGE_PASSWORD + "\n")
    return SecureSetup(server, root / "ca.crt", password_file, database)
