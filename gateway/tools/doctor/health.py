"""Doctor checks from what the running gateway last said about itself: its sources and its outbox.

The gateway writes its last status (the one it also publishes) to ``status.json`` in
its data dir every minute and when it stops (gateway/device/status_file.py). Doctor
reads that file, not the broker: it works with the network down, and it is the
gateway's own view. One check per source (failures, restarts, the drivers' counters:
frames, checksums, garbage, timeouts), and one of the outbox (messages the broker
refused and holds). A source the gateway gave up on, and a message the broker keeps
refusing, are failures with a fix.
"""

from __future__ import annotations

import time

from gateway.config import GatewayConfig
from gateway.device.status_file import read_status, status_path
from gateway.tools.doctor.check import FAIL, OK, SKIP, Check

OWN = ("readings", "failures", "restarts", "gave_up")  # the supervisor's counters, shown first


def _age(time_ms: int | None, now: float) -> str:
    if not isinstance(time_ms, int):
        return "at an unknown time"
    minutes = max(0.0, now - time_ms / 1000) / 60
    return f"{minutes:.0f} min ago" if minutes < 120 else f"{minutes / 60:.1f} h ago"


def _counters(counters: dict) -> str:
    shown = [f"{k} {counters[k]:g}" for k in OWN if k in counters and (k != "gave_up" or counters[k])]
    shown += [f"{k} {v:g}" for k, v in sorted(counters.items()) if k not in OWN and v]
    return ", ".join(shown) or "no counts yet"


def check_last_status(config: GatewayConfig, now: float | None = None) -> list[Check]:
    """One check per source and one of the outbox, from the gateway's ``status.json`` (SKIP if it never ran)."""
    now = time.time() if now is None else now
    data_dir = config.resolve_path(config.storage.data_dir)
    try:
        status = read_status(data_dir)
    except (OSError, ValueError) as exc:
        return [Check(FAIL, "last status", str(exc), f"delete {status_path(data_dir)}; the gateway writes a new one")]
    if status is None:
        return [Check(SKIP, "last status", f"none in {data_dir}: the gateway has not run here yet")]
    when = _age(status.get("time"), now)
    checks = []
    for name, counters in sorted((status.get("sources") or {}).items()):
        detail = f"{_counters(counters)} ({when})"
        if counters.get("gave_up"):
            checks.append(
                Check(
                    FAIL,
                    f"source {name}",
                    detail,
                    "the gateway stopped reading it after repeated failures: see `journalctl -u frugalsense` "
                    "for the error, fix it (cable, file, config) and restart the service",
                )
            )
        else:
            checks.append(Check(OK, f"source {name}", detail))
    counters = status.get("counters") or {}
    held, oldest = counters.get("outbox_held", 0), counters.get("outbox_held_oldest_s", 0)
    outbox = (
        f"{counters.get('outbox_backlog', 0):g} waiting, {held:g} refused by the broker and held, "
        f"{counters.get('outbox_refused', 0):g} refusals in all ({when})"
    )
    if held:
        topic = f"{config.mqtt.topic_prefix}/{config.site}/{config.gateway}/#"
        checks.append(
            Check(
                FAIL,
                "outbox",
                f"{outbox}; the oldest held for {oldest / 60:.0f} min",
                f"let this gateway's MQTT user publish on {topic} in the broker's ACL (docs/security.md), "
                "then restart the broker: held messages go at once, none is lost",
            )
        )
    else:
        checks.append(Check(OK, "outbox", outbox))
    return checks
