"""The gateway's health for its status message: CPU, memory, free disk, SoC temperature, outbox backlog.

One ``HealthProbe`` per run; ``sample(outbox_stats)`` is called once per status message
(every minute) and returns only numbers, under fixed names (``HEALTH_FIELDS``, the
``health`` object of docs/contracts.md, which the bridge writes as ``health:<name>``):

- ``cpu_percent``: this process's CPU since the previous sample (100 = one core busy);
- ``rss_mb``: its resident memory;
- ``disk_free_mb``: free space on the file system of ``storage.data_dir`` (the outbox's);
- ``soc_temp_c``: the SoC temperature where the board exposes one (``/sys/class/thermal``, as
  on a Raspberry Pi, else psutil's sensors); absent otherwise, never an error;
- ``outbox_backlog``, ``outbox_oldest_age_s``: messages waiting, and how long the oldest has.

>>> import tempfile
>>> probe = HealthProbe(tempfile.gettempdir(), thermal_root=tempfile.mkdtemp())
>>> h = probe.sample({"outbox_backlog": 3, "outbox_oldest_s": 12.5})
>>> sorted(h)  # and soc_temp_c, where the board has a sensor  # doctest: +ELLIPSIS
['cpu_percent', 'disk_free_mb', 'outbox_backlog', 'outbox_oldest_age_s', 'rss_mb'...]
>>> h["outbox_backlog"], h["outbox_oldest_age_s"], h["rss_mb"] > 1
(3.0, 12.5, True)
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import psutil

from gateway.protocol.status_payload import HEALTH_FIELDS

log = logging.getLogger(__name__)

THERMAL_ROOT = Path("/sys/class/thermal")
# Thermal zones and psutil sensor names that are the SoC or CPU package, best first.
SOC_NAMES = ("cpu-thermal", "cpu_thermal", "soc-thermal", "soc_thermal", "x86_pkg_temp", "coretemp", "k10temp", "cpu")
MB = 1024 * 1024


class HealthProbe:
    """Samples this process and its board; cheap enough for every status message (docs: measured cost)."""

    def __init__(self, data_dir: str | os.PathLike, *, thermal_root: str | os.PathLike = THERMAL_ROOT):
        self.data_dir = Path(data_dir)
        self._process = psutil.Process()
        self._process.cpu_percent(None)  # the first call only starts the count
        self._zone = _soc_zone(Path(thermal_root))
        self._sensor = None if self._zone is not None else _soc_sensor()

    def sample(self, outbox: dict) -> dict[str, float]:
        """The health numbers now; ``outbox`` is the outbox's stats (``outbox_backlog``, ``outbox_oldest_s``)."""
        health = {
            "cpu_percent": round(self._process.cpu_percent(None), 1),
            "rss_mb": round(self._process.memory_info().rss / MB, 1),
        }
        free = _disk_free_mb(self.data_dir)
        if free is not None:
            health["disk_free_mb"] = free
        temperature = self.soc_temp_c()
        if temperature is not None:
            health["soc_temp_c"] = temperature
        health["outbox_backlog"] = float(outbox.get("outbox_backlog", 0))
        health["outbox_oldest_age_s"] = float(outbox.get("outbox_oldest_s", 0.0))
        return {name: health[name] for name in HEALTH_FIELDS if name in health}

    def soc_temp_c(self) -> float | None:
        """The SoC temperature in degC, or None where the board gives none (or it cannot be read now)."""
        if self._zone is not None:
            return _zone_temp(self._zone)
        if self._sensor is not None:
            try:
                readings = psutil.sensors_temperatures().get(self._sensor) or []
            except (OSError, AttributeError):  # AttributeError: a platform without sensors_temperatures
                return None
            if readings:
                return round(float(readings[0].current), 1)
        return None


def _disk_free_mb(folder: Path) -> float | None:
    """Free space where ``folder`` is (its nearest existing parent before the gateway made it)."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        return round(shutil.disk_usage(existing).free / MB, 1)
    except OSError:
        return None


def _zone_temp(zone: Path) -> float | None:
    try:
        return round(int((zone / "temp").read_text().strip()) / 1000, 1)  # millidegrees
    except (OSError, ValueError):
        return None


def _soc_zone(root: Path) -> Path | None:
    """The thermal zone of the SoC (by its type, best first), else the first readable one; None if none."""
    zones = []
    for zone in sorted(root.glob("thermal_zone*")):
        try:
            kind = (zone / "type").read_text().strip().lower()
        except OSError:
            continue
        if _zone_temp(zone) is not None:
            zones.append((kind, zone))
    for name in SOC_NAMES:
        for kind, zone in zones:
            if kind == name:
                return zone
    return zones[0][1] if zones else None


def _soc_sensor() -> str | None:
    try:
        found = psutil.sensors_temperatures()
    except (OSError, AttributeError):
        return None
    for name in SOC_NAMES:
        if found.get(name):
            return name
    return next((name for name, readings in found.items() if readings), None)
