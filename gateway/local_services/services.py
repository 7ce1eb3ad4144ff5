"""Start private Mosquitto, InfluxDB 1.x and VictoriaMetrics on free loopback ports for demos and tests.

Each service gets its own config, data and log under a folder the caller names, listens
on 127.0.0.1 only, on ports picked free at start (never 1883, 8086 or 8428), and is
stopped on ``stop()``, on leaving the ``with`` block, or at interpreter exit. System-wide
services are never touched.

    with LocalServices(Path(".run/demo")) as services:
        services.create_influx_database("frugalsense")
        print(services.mqtt_port, services.influx_url)

Binaries are found on PATH (plus /usr/sbin, where Debian puts mosquitto); an
environment variable (``FRUGALSENSE_MOSQUITTO_BIN``, ``FRUGALSENSE_INFLUXD_BIN``,
``FRUGALSENSE_VICTORIA_METRICS_BIN``) or the ``binaries`` keyword overrides that.
"""

from __future__ import annotations

import atexit
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from gateway.security.broker import BrokerSecurity

MOSQUITTO = "mosquitto"
INFLUXDB = "influxdb"
VICTORIAMETRICS = "victoriametrics"
SERVICE_NAMES = (MOSQUITTO, INFLUXDB, VICTORIAMETRICS)

LOOPBACK = "127.0.0.1"
STOP_TIMEOUT_S = 5.0
# A fresh port can be taken by someone else between our probe and the service's bind.
PORT_ATTEMPTS = 3
LOG_TAIL_LINES = 20


class ServiceError(RuntimeError):
    """A local service could not be started, stopped or asked something."""


class InfluxQueryError(ServiceError):
    """InfluxDB answered a query or write with an error."""


@dataclass
class ServiceInfo:
    """Where a running local service can be reached and where its files are."""

    name: str
    port: int
    pid: int
    data_dir: Path
    log_path: Path
    url: str


def free_port() -> int:
    """Ask the kernel for a currently free TCP port on the loopback address."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def free_ports(count: int) -> list[int]:
    """Pick ``count`` distinct free ports (sockets held open together so they differ)."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(sock)
            sock.bind((LOOPBACK, 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


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


def influxdb_config_text(http_port: int, rpc_port: int, data_dir: Path) -> str:
    """TOML for Debian's influxd 1.6.7: loopback HTTP + RPC, no reporting, nothing else listening.

    Debian's build spells the phone-home switch ``reporting-enabled`` (``influxd config``).

    >>> print(influxdb_config_text(18086, 18088, Path("/d")).splitlines()[1])
    bind-address = "127.0.0.1:18088"
    """
    return f"""\
reporting-enabled = false
bind-address = "{LOOPBACK}:{rpc_port}"

[meta]
  dir = "{data_dir / "meta"}"
  logging-enabled = false

[data]
  dir = "{data_dir / "data"}"
  wal-dir = "{data_dir / "wal"}"
  query-log-enabled = false

[monitor]
  store-enabled = false

[subscriber]
  enabled = false

[http]
  enabled = true
  bind-address = "{LOOPBACK}:{http_port}"
  log-enabled = false
  unix-socket-enabled = false
  pprof-enabled = false

[ifql]
  enabled = false

[continuous_queries]
  log-enabled = false

[logging]
  suppress-logo = true
"""


def http_request(
    method: str,
    url: str,
    *,
    data: bytes | None = None,
    timeout_s: float = 5.0,
    headers: Mapping[str, str] | None = None,
) -> tuple[int, bytes]:
    """One HTTP exchange; returns (status, body) for any answered status, raises OSError if none."""
    request = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


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


def _http_answers(url: str, expected: int) -> bool:
    try:
        return http_request("GET", url, timeout_s=1.0)[0] == expected
    except OSError:
        return False


def _find_binary(name: str, override: str | None) -> str | None:
    if override:
        return shutil.which(override)
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/local/sbin")


def _current_user() -> str | None:
    """Our user name, so Mosquitto started as root stays root instead of becoming ``mosquitto``."""
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:  # a uid without a passwd entry is not root, and Mosquitto then ignores `user`
        return None


class _Service:
    """One child process: config, start with port retry, readiness wait, stop."""

    name = ""
    binary = ""
    apt_package = ""
    env_var = ""
    port_count = 1
    stop_timeout_s = STOP_TIMEOUT_S

    def __init__(self, root: Path, binary_override: str | None):
        self.dir = root / self.name
        self.data_dir = self.dir / "data"
        self.log_path = self.dir / f"{self.name}.log"
        if binary_override:
            self.binary_override, self.override_from = binary_override, f"binaries[{self.name!r}]"
        else:
            self.binary_override, self.override_from = os.environ.get(self.env_var) or None, self.env_var
        self.ports: list[int] = []
        self.process: subprocess.Popen | None = None

    # What differs per service.
    def command(self, binary: str) -> list[str]:
        raise NotImplementedError

    def answers(self) -> bool:
        raise NotImplementedError

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.ports[0]}"

    # The shared lifecycle.
    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def info(self) -> ServiceInfo:
        pid = self.process.pid if self.running else -1
        return ServiceInfo(
            self.name,
            self.ports[0] if self.ports else 0,
            pid,
            self.data_dir,
            self.log_path,
            self.url if self.ports else "",
        )

    def start(self, timeout_s: float) -> None:
        if self.running:
            return
        binary = _find_binary(self.binary, self.binary_override)
        if binary is None:
            wanted = self.binary_override or self.binary
            raise ServiceError(
                f"{self.name}: program {wanted!r} not found; install it with "
                f"'apt-get install {self.apt_package}'"
                + (f", or fix {self.override_from}" if self.binary_override else "")
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        keep_ports = bool(self.ports)  # a restart keeps its port so clients can reconnect
        for attempt in range(1 if keep_ports else PORT_ATTEMPTS):
            if not keep_ports:
                self.ports = free_ports(self.port_count)
            failure = self._launch(binary, timeout_s)
            if failure is None:
                return
            port_taken = "address already in use" in failure.lower()
            if not port_taken or keep_ports or attempt == PORT_ATTEMPTS - 1:
                where = f"{LOOPBACK}:{','.join(map(str, self.ports))}"
                raise ServiceError(f"{self.name} ({where}) {failure}")

    def _launch(self, binary: str, timeout_s: float) -> str | None:
        """Start once and wait until it answers; None on success, else why it failed."""
        argv = self.command(binary)
        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            # Own session: Ctrl-C in a terminal reaches us, not the service, so we stop it in
            # order; and the whole group can be killed if it does not stop.
            self.process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=self.dir, start_new_session=True
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return (
                    f"exited with code {self.process.returncode} during startup; "
                    f"last lines of {self.log_path}:\n{self._log_tail(log_offset)}"
                )
            if self.answers() and self.process.poll() is None:
                return None
            time.sleep(0.05)
        self.stop()
        return f"did not answer within {timeout_s:.0f} s; last lines of {self.log_path}:\n{self._log_tail(log_offset)}"

    def _log_tail(self, offset: int) -> str:
        try:
            with open(self.log_path, "rb") as log:
                log.seek(offset)
                text = log.read().decode("utf-8", "replace")
        except OSError as exc:
            return f"(log unreadable: {exc})"
        return "\n".join(text.splitlines()[-LOG_TAIL_LINES:]) or "(log is empty)"

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=self.stop_timeout_s)
        except subprocess.TimeoutExpired:
            # A wrapper script or a hung service: end it and anything it started.
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait(timeout=self.stop_timeout_s)


class _Mosquitto(_Service):
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


class _InfluxDB(_Service):
    name, binary, apt_package, env_var = INFLUXDB, "influxd", "influxdb", "FRUGALSENSE_INFLUXD_BIN"
    port_count = 2  # HTTP API, and the RPC port used by backup/restore

    def command(self, binary: str) -> list[str]:
        config_path = self.dir / "influxdb.conf"
        config_path.write_text(influxdb_config_text(self.ports[0], self.ports[1], self.data_dir))
        return [binary, "-config", str(config_path)]

    def answers(self) -> bool:
        return _http_answers(self.url + "/ping", 204)


class _VictoriaMetrics(_Service):
    name, binary, apt_package = VICTORIAMETRICS, "victoria-metrics", "victoria-metrics"
    env_var = "FRUGALSENSE_VICTORIA_METRICS_BIN"

    def command(self, binary: str) -> list[str]:
        return [
            binary,
            f"-httpListenAddr={LOOPBACK}:{self.ports[0]}",
            f"-storageDataPath={self.data_dir}",
            # Demo data carries old timestamps; the default one-month retention drops them.
            "-retentionPeriod=100y",
            # Without this, points younger than 30 s are hidden from queries.
            "-search.latencyOffset=0s",
        ]

    def answers(self) -> bool:
        return _http_answers(self.url + "/health", 200)


_LIVE: weakref.WeakSet[LocalServices] = weakref.WeakSet()


@atexit.register
def _stop_all_at_exit() -> None:
    for services in list(_LIVE):
        services.stop()


class LocalServices:
    """Mosquitto, InfluxDB and (if asked) VictoriaMetrics as private child processes.

    ``binaries`` maps a service name ("mosquitto", "influxdb", "victoriametrics") to a
    program path, overriding PATH and the environment variables.
    ``mosquitto_extra_config`` lines are appended to the broker config.
    ``mosquitto_security`` makes the broker TLS-only with passwords, an ACL and, if
    asked, a second listener for client certificates (``mqtt_client_cert_port``).
    A service still running ``stop_timeout_s`` after SIGTERM has its process group killed.
    """

    def __init__(
        self,
        root: Path,
        *,
        mosquitto: bool = True,
        influxdb: bool = True,
        victoriametrics: bool = False,
        mosquitto_persistence: bool = False,
        startup_timeout_s: float = 20.0,
        binaries: Mapping[str, str] | None = None,
        mosquitto_extra_config: Sequence[str] = (),
        stop_timeout_s: float = STOP_TIMEOUT_S,
        mosquitto_security: BrokerSecurity | None = None,
    ):
        self.root = Path(root).resolve()
        self.startup_timeout_s = startup_timeout_s
        binaries = dict(binaries or {})
        unknown = set(binaries) - set(SERVICE_NAMES)
        if unknown:
            raise ValueError(
                f"unknown service name(s) in binaries: {sorted(unknown)}; expected some of {list(SERVICE_NAMES)}"
            )
        self._services: dict[str, _Service] = {}
        if mosquitto:
            self._services[MOSQUITTO] = _Mosquitto(
                self.root,
                binaries.get(MOSQUITTO),
                persistence=mosquitto_persistence,
                extra_config=mosquitto_extra_config,
                security=mosquitto_security,
            )
        if influxdb:
            self._services[INFLUXDB] = _InfluxDB(self.root, binaries.get(INFLUXDB))
        if victoriametrics:
            self._services[VICTORIAMETRICS] = _VictoriaMetrics(self.root, binaries.get(VICTORIAMETRICS))
        for service in self._services.values():
            service.stop_timeout_s = stop_timeout_s

    # Lifecycle.
    def start(self) -> LocalServices:
        _LIVE.add(self)
        try:
            for name in self._services:
                self.start_service(name)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for service in reversed(self._services.values()):
            service.stop()

    def start_service(self, name: str) -> ServiceInfo:
        _LIVE.add(self)
        service = self._service(name)
        service.dir.mkdir(parents=True, exist_ok=True)
        service.start(self.startup_timeout_s)
        return service.info()

    def stop_service(self, name: str) -> None:
        self._service(name).stop()

    def restart_service(self, name: str) -> ServiceInfo:
        self.stop_service(name)
        return self.start_service(name)

    @property
    def names(self) -> tuple[str, ...]:
        """The services this instance manages, in start order."""
        return tuple(self._services)

    def is_running(self, name: str) -> bool:
        return self._service(name).running

    def info(self, name: str) -> ServiceInfo:
        return self._service(name).info()

    def __enter__(self) -> LocalServices:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def _service(self, name: str) -> _Service:
        if name not in self._services:
            raise ServiceError(f"{name}: not managed here; this LocalServices runs {list(self._services)}")
        return self._services[name]

    def _started(self, name: str) -> _Service:
        service = self._service(name)
        if not service.ports:
            raise ServiceError(f"{name}: not started yet; call start() first")
        return service

    # Where to reach them.
    @property
    def mqtt_host(self) -> str:
        return LOOPBACK

    @property
    def mqtt_port(self) -> int:
        return self._started(MOSQUITTO).ports[0]

    @property
    def mqtt_client_cert_port(self) -> int:
        """The TLS listener that requires a client certificate (``client_cert_listener=True``)."""
        service = self._started(MOSQUITTO)
        if len(service.ports) < 2:
            raise ServiceError(
                "mosquitto: no client-certificate listener; "
                "pass mosquitto_security=BrokerSecurity(..., client_cert_listener=True)"
            )
        return service.ports[1]

    @property
    def influx_url(self) -> str:
        return self._started(INFLUXDB).url

    @property
    def vm_url(self) -> str:
        return self._started(VICTORIAMETRICS).url

    # InfluxDB 1.x helpers (v1 API only: Debian's 1.6.7 has no /api/v2/write).
    def create_influx_database(self, name: str) -> None:
        quoted = name.replace("\\", "\\\\").replace('"', '\\"')
        self._influx("POST", "/query", {"q": f'CREATE DATABASE "{quoted}"'})

    def influx_query(self, q: str, db: str | None = None, *, epoch: str | None = "ms") -> dict:
        """Run InfluxQL; times come back as integers in ``epoch`` units (ms like our contracts)."""
        params = {"q": q} | ({"db": db} if db else {}) | ({"epoch": epoch} if epoch else {})
        answer = self._influx("GET", "/query", params)
        for result in answer.get("results", []):
            if "error" in result:
                raise InfluxQueryError(f"influxdb: query {q!r} failed: {result['error']}")
        return answer

    def influx_write(self, db: str, lines: str | Iterable[str], *, precision: str = "ms") -> None:
        """Write line protocol to ``db`` through /write."""
        body = lines if isinstance(lines, str) else "\n".join(lines)
        self._influx("POST", "/write", {"db": db, "precision": precision}, body.encode())

    def _influx(self, method: str, path: str, params: Mapping[str, str], body: bytes | None = None) -> dict:
        url = f"{self.influx_url}{path}"
        if method == "POST" and body is None:
            body, query = urllib.parse.urlencode(params).encode(), ""
        else:
            query = "?" + urllib.parse.urlencode(params)
        try:
            status, raw = http_request(method, url + query, data=body, timeout_s=10.0)
        except OSError as exc:
            raise ServiceError(f"influxdb: no answer from {url}: {exc}") from exc
        try:
            answer = json.loads(raw) if raw.strip() else {}
        except ValueError:
            answer = {"error": raw[:200].decode("utf-8", "replace")}
        if status >= 300 or "error" in answer:
            raise InfluxQueryError(f"influxdb: {path} answered {status}: {answer.get('error', raw[:200])}")
        return answer

    def flush_victoriametrics(self) -> None:
        """Make points written so far visible to queries (VictoriaMetrics buffers ~1 s)."""
        status, raw = http_request("GET", self.vm_url + "/internal/force_flush")
        if status != 200:
            raise ServiceError(f"victoriametrics: force_flush answered {status}: {raw[:200]!r}")

    def vm_export(self, match: str) -> list[dict]:
        """Raw samples of the series matching ``match`` (a PromQL selector), after a flush.

        Export returns every stored sample, so a point written twice shows twice here
        (VictoriaMetrics does not deduplicate unless ``-dedup.minScrapeInterval`` is set).
        """
        self.flush_victoriametrics()
        query = urllib.parse.urlencode({"match[]": match})
        status, raw = http_request("GET", f"{self.vm_url}/api/v1/export?{query}", timeout_s=10.0)
        if status != 200:
            raise ServiceError(f"victoriametrics: export {match!r} answered {status}: {raw[:200]!r}")
        return [json.loads(row) for row in raw.splitlines() if row.strip()]
