"""Doctor checks from what the running gateway last said about itself: its sources and its outbox.

The gateway writes its last status (the one it also publishes) to ``status.json`` in
its data dir every minute and when it stops (gateway/device/status_file.py). Doctor
reads that file, not the broker: it works with the network down, and it is the
gateway's own view. One check per source (failures, restarts, the drivers' counters:
frames, checksums, garbage, timeouts), and one of the outbox (messages the broker
refused and holds). A source the gateway gave up on, and a message the broker keeps
refusing, are failures with a fix. Then the gateway's health (CPU, memory, free disk, SoC
temperature, outbox backlog: a SoC at ``HOT_SOC_C`` or more fails) and the sensors it says are
silent (``silent_sensors.json``, gateway/device/silent_sensors.py), each named with since when.
"""

from __future__ import annotations

import json
import time

from gateway.config import GatewayConfig
from gateway.device.silent_sensors import FILE_NAME as SILENT_FILE
from gateway.device.status_file import read_status, status_path
from gateway.tools.doctor.check import FAIL, OK, SKIP, Check

OWN = ("readings", "failures", "restarts", "gave_up")  # the supervisor's counters, shown first
HOT_SOC_C = 80.0  # a Raspberry Pi throttles its CPU from here


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
    states = status.get("source_states") or {}
    for name, counters in sorted((status.get("sources") or {}).items()):
        state = f"{states[name]}, " if isinstance(states.get(name), str) else ""
        detail = f"{state}{_counters(counters)} ({when})"
        if counters.get("gave_up") or states.get(name) == "failed":
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
    if isinstance(status.get("health"), dict):
        checks.append(_health(status["health"], when))
    silent = _silent(data_dir)
    if silent is not None:
        checks.append(silent)
    return checks


def _health(health: dict, when: str) -> Check:
    """The gateway's own health, as it last said (gateway/device/health.py)."""
    parts = [
        f"{label} {health[key]:g}{unit}"
        for key, label, unit in (
            ("cpu_percent", "CPU", " %"),
            ("rss_mb", "RSS", " MB"),
            ("disk_free_mb", "free disk", " MB"),
            ("soc_temp_c", "SoC", " degC"),
            ("outbox_backlog", "outbox", " waiting"),
            ("outbox_oldest_age_s", "oldest", " s"),
        )
        if isinstance(health.get(key), int | float)
    ]
    detail = f"{', '.join(parts) or 'nothing measured'} ({when})"
    temperature = health.get("soc_temp_c")
    if isinstance(temperature, int | float) and temperature >= HOT_SOC_C:
        return Check(
            FAIL,
            "health",
            detail,
            f"the SoC is at {temperature:g} degC and slows down from {HOT_SOC_C:g}: give the enclosure air or shade, "
            "fit a heatsink",
        )
    return Check(OK, "health", detail)


def _silent(data_dir) -> Check | None:
    """The sensors the gateway says are silent now, from its silent_sensors.json (None if it watches none)."""
    try:
        doc = json.loads((data_dir / SILENT_FILE).read_text(encoding="utf-8"))
        sensors = doc["sensors"]
        silent = {n: e for n, e in sensors.items() if isinstance(e, dict) and isinstance(e.get("alert_id"), str)}
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return Check(FAIL, "silent sensors", f"{data_dir / SILENT_FILE} unreadable ({exc})", "delete it: it is rebuilt")
    if not silent:
        return Check(OK, "silent sensors", f"none of {len(sensors)} watched")
    names = ", ".join(f"{n} since {_utc(e.get('since_ms'))}" for n, e in sorted(silent.items()))
    return Check(
        FAIL,
        "silent sensors",
        f"{len(silent)} of {len(sensors)} watched sensors send nothing: {names}",
        "check each one's power, cable and connector (`frugalsense doctor` lists their ports above)",
    )


def _utc(time_ms) -> str:
    if not isinstance(time_ms, int):
        return "an unknown time"
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(time_ms / 1000))
