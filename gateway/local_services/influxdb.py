"""A private InfluxDB 1.x (Debian's influxd 1.6.7): its config file and the service that runs it.

The HTTP API (the first port) and the RPC port of backup/restore (the second) listen
on loopback only; reporting, the monitor and every other listener are off. The query
and write helpers are ``LocalServices.create_influx_database``, ``influx_query`` and
``influx_write``.
"""

from __future__ import annotations

from pathlib import Path

from gateway.local_services.process import LOOPBACK, Service, ServiceError, http_answers

INFLUXDB = "influxdb"


class InfluxQueryError(ServiceError):
    """InfluxDB answered a query or write with an error."""


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


class InfluxDB(Service):
    """influxd as a child process, with its config file under the service folder."""

    name, binary, apt_package, env_var = INFLUXDB, "influxd", "influxdb", "FRUGALSENSE_INFLUXD_BIN"
    port_count = 2  # HTTP API, and the RPC port used by backup/restore

    def command(self, binary: str) -> list[str]:
        config_path = self.dir / "influxdb.conf"
        config_path.write_text(influxdb_config_text(self.ports[0], self.ports[1], self.data_dir))
        return [binary, "-config", str(config_path)]

    def answers(self) -> bool:
        return http_answers(self.url + "/ping", 204)
