"""A private VictoriaMetrics single-node server: the service that runs it, for the bridge's Prometheus path."""

from __future__ import annotations

from gateway.local_services.process import LOOPBACK, Service, http_answers

VICTORIAMETRICS = "victoriametrics"


class VictoriaMetrics(Service):
    """victoria-metrics as a child process, keeping old demo timestamps and showing fresh points at once."""

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
        return http_answers(self.url + "/health", 200)
