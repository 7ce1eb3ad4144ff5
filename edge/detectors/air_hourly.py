"""The hourly loop the air-site model detectors share: 10-minute slot buffers, one decision per full UTC hour.

``HourlyAirDetector`` keeps the last 24 h of its sensors as 10-minute slot means
(``SlotBuffer``) and, at every full UTC hour (data time), hands the window to its
subclass's ``_decide``. Its model is an exported one, verified and loaded by
``load_air_model``, which refuses a model computed from other features than the
gateway's. The detectors themselves are in ``edge.detectors.air_models``.

>>> from edge.contracts import Reading
>>> buf = SlotBuffer({"pm25": "PM25-a"})
>>> for k, v in enumerate([10.0, 14.0, 30.0]):  # two readings in slot 0, one in slot 1
...     buf.add(Reading(k * 300_000, "s", "g", "PM25-a", "pm25", v, "ug/m3"))
>>> row = buf.values(2)["pm25"]
>>> row[-2:].tolist(), int(np.isnan(row[:-2]).sum()) == HISTORY_SLOTS - 2
([12.0, 30.0], True)
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from edge.contracts import Detection, Quality, Reading, Severity, check_id
from edge.detectors import state_json as sj
from edge.detectors.base import ModelDetector, Output
from edge.features.air_features import CONTEXT_SLOTS, HISTORY_SLOTS, HOUR_SLOTS, SLOT_MS, local_clock

INSUFFICIENT = "insufficient_data"
HOUR_MS = HOUR_SLOTS * SLOT_MS
USABLE = (Quality.OK, Quality.SUSPECT)
DIAGNOSTIC = (Quality.OK, Quality.SUSPECT, Quality.BAD)


def load_air_model(
    model_dir: str | Path, expected_features: tuple[str, ...], backend: str = "auto", precision: str = "float"
) -> Any:
    """Verify and load an exported model's ``precision`` file; refuse one computed from other features."""
    from edge.runtime import load_model
    from edge.runtime.manifest import MANIFEST_FILE, ModelManifest
    from edge.runtime.registry import verify

    path = Path(model_dir)
    if not (path / MANIFEST_FILE).is_file():
        raise ValueError(f"{path}: no exported model here (no {MANIFEST_FILE}); train it with 'make train-air'")
    manifest = verify(ModelManifest.read(path))
    if tuple(manifest.features) != tuple(expected_features):
        raise ValueError(
            f"model {manifest.name} v{manifest.version} in {path} expects features "
            f"{', '.join(manifest.features)}, but this gateway computes {', '.join(expected_features)}: "
            "retrain it with this version ('make train-air')"
        )
    return load_model(manifest, backend=backend, precision=precision)


class SlotBuffer:
    """Readings of a few sensors as 10-minute slot means; ``values(end_slot)`` gives the last HISTORY_SLOTS."""

    def __init__(self, roles: dict[str, str], qualities: tuple[Quality, ...] = USABLE):
        self.sensor_role = {sensor: role for role, sensor in roles.items()}
        self.qualities = qualities
        self.slots_: dict[str, dict[int, list[float]]] = {role: {} for role in roles}

    def add(self, reading: Reading) -> None:
        """Count a reading of a buffered sensor into its slot (other sensors and qualities are ignored)."""
        role = self.sensor_role.get(reading.sensor)
        if role is None or reading.quality not in self.qualities or reading.value is None:
            return
        value = float(reading.value)
        if math.isfinite(value):
            acc = self.slots_[role].setdefault(reading.time_ms // SLOT_MS, [0.0, 0])
            acc[0] += value
            acc[1] += 1

    def values(self, end_slot: int) -> dict[str, np.ndarray]:
        """role -> slot means of slots ``end_slot - HISTORY_SLOTS .. end_slot - 1`` (NaN = nothing)."""
        first = end_slot - HISTORY_SLOTS
        out: dict[str, np.ndarray] = {}
        for role, slots in self.slots_.items():
            for old in [s for s in slots if s < first]:
                del slots[old]
            row = np.full(HISTORY_SLOTS, np.nan)
            for s, (total, n) in slots.items():
                if s < end_slot:
                    row[s - first] = total / n
            out[role] = row
        return out


class HourlyAirDetector(ModelDetector):
    """Shared loop: buffer readings, close each full hour once, let the subclass decide on it."""

    kind = "air"
    features: ClassVar[tuple[str, ...]] = ()
    qualities: ClassVar[tuple[Quality, ...]] = USABLE

    def __init__(
        self,
        site: str,
        gateway: str,
        sensors: dict[str, str],
        model_dir: str | Path,
        backend: str = "auto",
        model: str = "air",
        timezone: str = "UTC",
        precision: str = "float",
    ) -> None:
        super().__init__(site, gateway, model=model)
        self.sensors = dict(sensors)
        self.model_dir = Path(model_dir)
        self.backend, self.precision = backend, precision
        self.timezone = timezone
        self._check_sensors()
        local_clock(np.array([0]), timezone)  # an unknown time zone fails here, not at the first hour
        self.runtime_ = load_air_model(self.model_dir, self.features, backend, precision)
        self.model_version = self.runtime_.manifest.version
        self.reset()

    def _check_sensors(self) -> None:
        for role, sensor in self.sensors.items():
            check_id(f"{role} sensor", sensor)
        if len(set(self.sensors.values())) != len(self.sensors):
            raise ValueError(f"{self.kind}: the same sensor is given for two inputs")

    def reset(self) -> None:
        """Forget every buffered slot and the next hour to decide."""
        self.buffer_ = SlotBuffer(self.sensors, self.qualities)
        self.next_end_slot_: int | None = None

    def state(self) -> dict:
        """The buffered 10-minute slots ([slot, sum, count] per input) and the next hour to decide."""
        slots = self.buffer_.slots_
        return {
            "slots": {role: [[k, total, n] for k, (total, n) in acc.items()] for role, acc in slots.items()},
            "next_end_slot": self.next_end_slot_,
        }

    def restore(self, state: dict) -> None:
        """Take back ``state()``; ValueError (and nothing changed) if it is malformed or of other inputs."""
        self.__dict__.update(self._restored(state))

    def _restored(self, state: dict) -> dict:
        """The attributes ``state`` restores, checked; subclasses add theirs."""
        owner = f"{self.kind} detector {self.model!r}"
        buffer = SlotBuffer(self.sensors, self.qualities)
        saved = sj.mapping(sj.field(state, "slots", owner), "slots", set(self.sensors))
        for role, items in saved.items():
            for item in sj.listing(items, f"{role} slots"):
                k, total, n = sj.listing(item, f"a {role} slot", 3)
                buffer.slots_[role][sj.integer(k, "slot")] = [sj.real(total, "slot sum"), sj.integer(n, "slot count")]
        end = sj.optional(sj.field(state, "next_end_slot", owner), sj.integer, "next_end_slot")
        return {"buffer_": buffer, "next_end_slot_": end}

    def update(self, reading: Reading) -> list[Output]:
        """Consume one reading; return the decisions of every full hour that ended at or before it."""
        if reading.sensor not in self.buffer_.sensor_role:
            return []
        slot = reading.time_ms // SLOT_MS
        end_slot = self.next_end_slot_
        if end_slot is None or slot - end_slot >= HISTORY_SLOTS:  # a gap longer than the context: nothing to judge
            end_slot = slot - slot % HOUR_SLOTS + HOUR_SLOTS
        out: list[Output] = []
        while slot >= end_slot:
            out += self._hour(end_slot)
            end_slot += HOUR_SLOTS
        self.next_end_slot_ = end_slot
        self.buffer_.add(reading)
        return out

    def _hour(self, end_slot: int) -> list[Output]:
        values = self.buffer_.values(end_slot)
        times = (end_slot - HISTORY_SLOTS + np.arange(HISTORY_SLOTS, dtype=np.int64)) * SLOT_MS
        return self._decide(values, times, end_slot * SLOT_MS)

    def _decide(self, values: dict[str, np.ndarray], times: np.ndarray, end_ms: int) -> list[Output]:
        raise NotImplementedError  # pragma: no cover - each detector decides its own way

    def _detection(
        self,
        end_ms: int,
        label: str,
        score: float,
        explanation: dict,
        *,
        model: str | None = None,
        severity: Severity = Severity.INFO,
        window_ms: tuple[int, int] | None = None,
    ) -> Detection:
        start, end = window_ms or (end_ms - HOUR_MS, end_ms)
        return self.detection(end_ms, label, score, severity, start, end, explanation, model=model)

    @staticmethod
    def _missing(inputs: tuple[str, ...], values: dict[str, np.ndarray]) -> list[str]:
        return [
            role
            for role in inputs
            if np.mean(~np.isnan(values[role][-CONTEXT_SLOTS:])) < 0.5 or np.all(np.isnan(values[role][-HOUR_SLOTS:]))
        ]


__all__ = ["DIAGNOSTIC", "HOUR_MS", "INSUFFICIENT", "USABLE", "HourlyAirDetector", "SlotBuffer", "load_air_model"]
