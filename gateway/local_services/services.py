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

Each service has its module (``mosquitto``, ``influxdb``, ``victoriametrics``) on the
child-process lifecycle they share (``process``); this one runs them together, and is
where callers import them from.
"""

from __future__ import annotations

import atexit
import json
import urllib.parse
import weakref
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from gateway.local_services.influxdb import INFLUXDB, InfluxDB, InfluxQueryError
from gateway.local_services.mosquitto import MOSQUITTO, Mosquitto, mqtt_answers
from gateway.local_services.process import (
    LOOPBACK,
    STOP_TIMEOUT_S,
    Service,
    ServiceError,
    ServiceInfo,
    free_port,
    free_ports,
    http_request,
)
from gateway.local_services.victoriametrics import VICTORIAMETRICS, VictoriaMetrics
from gateway.security.broker import BrokerSecurity

SERVICE_NAMES = (MOSQUITTO, INFLUXDB, VICTORIAMETRICS)


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
        self._services: dict[str, Service] = {}
        if mosquitto:
            self._services[MOSQUITTO] = Mosquitto(
                self.root,
                binaries.get(MOSQUITTO),
                persistence=mosquitto_persistence,
                extra_config=mosquitto_extra_config,
                security=mosquitto_security,
            )
        if influxdb:
            self._services[INFLUXDB] = InfluxDB(self.root, binaries.get(INFLUXDB))
        if victoriametrics:
            self._services[VICTORIAMETRICS] = VictoriaMetrics(self.root, binaries.get(VICTORIAMETRICS))
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

    def _service(self, name: str) -> Service:
        if name not in self._services:
            raise ServiceError(f"{name}: not managed here; this LocalServices runs {list(self._services)}")
        return self._services[name]

    def _started(self, name: str) -> Service:
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


__all__ = [
    "INFLUXDB",
    "MOSQUITTO",
    "SERVICE_NAMES",
    "VICTORIAMETRICS",
    "InfluxQueryError",
    "LocalServices",
    "ServiceError",
    "ServiceInfo",
    "free_port",
    "free_ports",
    "http_request",
    "mqtt_answers",
]
