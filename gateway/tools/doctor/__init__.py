"""On-site checks of a gateway (or of a bundle before it goes on one): one result per check, a fix for each failure.

Each check returns ``Check(status, name, detail, fix)``; ``status`` is OK, FAIL or SKIP
(the check cannot run here, and the detail says why). The command prints one line
per check and exits non-zero if any failed.

Checks of the files (``files``), of the sensor lines (``lines``) and of the broker,
clock and disk (``system``) each return ``Check``s (``check``); ``run_checks`` runs them all.
"""

from __future__ import annotations

from pathlib import Path

from gateway.tools import bundle as B
from gateway.tools.doctor.check import FAIL, OK, SKIP, Check
from gateway.tools.doctor.files import check_bundle, check_config, check_models, model_dirs
from gateway.tools.doctor.health import check_last_status
from gateway.tools.doctor.lines import BY_ID, check_frame_stream, check_ports, check_sensors
from gateway.tools.doctor.system import EARLIEST_YEAR, check_broker, check_clock, check_disk

__all__ = [
    "BY_ID",
    "EARLIEST_YEAR",
    "FAIL",
    "OK",
    "SKIP",
    "Check",
    "check_broker",
    "check_bundle",
    "check_clock",
    "check_config",
    "check_disk",
    "check_frame_stream",
    "check_last_status",
    "check_models",
    "check_ports",
    "check_sensors",
    "model_dirs",
    "run_checks",
]


def _not_here(name: str) -> Check:
    return Check(SKIP, name, "checking a bundle: run `frugalsense doctor` on the gateway for this")


def run_checks(
    *,
    config_path: Path | None = None,
    bundle: Path | None = None,
    sensor_timeout_s: float | None = None,
    broker_timeout_s: float = 5.0,
) -> list[Check]:
    """Every check, in the order a technician fixes things: files, then the line, then the network."""
    checks: list[Check] = []
    if bundle is not None:
        checks.append(check_bundle(bundle))
        config_path = bundle / B.CONFIG_NAME
    config_check, config = check_config(config_path)
    checks.append(config_check)
    if config is None:
        return checks
    checks += check_models(config)
    if bundle is not None:
        return checks + [_not_here(n) for n in ("serial ports", "sensors", "broker", "clock", "disk", "last status")]
    checks += check_ports(config)
    checks += check_sensors(config, sensor_timeout_s)
    checks.append(check_broker(config, broker_timeout_s))
    checks.append(check_clock())
    checks.append(check_disk(config))
    checks += check_last_status(config)  # sources and outbox as the running gateway last saw them
    return checks
