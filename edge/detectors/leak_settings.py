"""The learned leak model's settings on the device and its alarm: persistence with hysteresis.

``LeakDetectorSettings`` is what a model's manifest holds under ``"detector"`` (sensors,
feature layout, thresholds); ``AlarmPersistence`` raises after ``raise_after`` steps
at or above ``raise_threshold`` and clears after ``clear_after`` steps below
``clear_threshold``; ``leak_scores`` reads P(leak) off a classifier backend.

>>> p = AlarmPersistence(raise_threshold=0.8, clear_threshold=0.3, raise_after=2, clear_after=2)
>>> [p.update(s) for s in (0.9, None, 0.95, 0.5, 0.1, 0.2)]
[None, None, 'raised', None, None, 'cleared']
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.detectors import state_json as sj
from edge.features.leak_features import LeakFeatureLayout

LEAK_CLASS_NAMES = ("1", "True", "leak")


class AlarmPersistence:
    """Raise after ``raise_after`` high steps in a row, clear after ``clear_after`` low ones; None = no data."""

    def __init__(self, raise_threshold: float, clear_threshold: float, raise_after: int, clear_after: int):
        if not 0 <= clear_threshold <= raise_threshold <= 1:
            raise ValueError("need 0 <= clear_threshold <= raise_threshold <= 1")
        if raise_after < 1 or clear_after < 1:
            raise ValueError("raise_after and clear_after must be at least 1")
        self.raise_threshold, self.clear_threshold = raise_threshold, clear_threshold
        self.raise_after, self.clear_after = raise_after, clear_after
        self.active = False
        self.high_run = self.low_run = 0
        self.run_start: int | None = None  # index of the first high step of the current run

    def state(self) -> dict:
        return {"active": self.active, "high_run": self.high_run, "low_run": self.low_run, "run_start": self.run_start}

    def restore(self, state: dict) -> None:
        """Take back ``state()`` (ValueError, nothing changed, if malformed)."""
        owner = "alarm persistence"
        restored = {
            "active": sj.flag(sj.field(state, "active", owner), "alarm active"),
            "high_run": sj.integer(sj.field(state, "high_run", owner), "alarm high_run"),
            "low_run": sj.integer(sj.field(state, "low_run", owner), "alarm low_run"),
            "run_start": sj.optional(sj.field(state, "run_start", owner), sj.integer, "alarm run_start"),
        }
        self.__dict__.update(restored)

    def update(self, score: float | None, index: int = 0) -> str | None:
        """One step's score; returns 'raised', 'cleared' or None."""
        if score is None:
            return None
        if score >= self.raise_threshold:
            self.low_run = 0
            if self.high_run == 0 and not self.active:
                self.run_start = index
            self.high_run += 1
            if not self.active and self.high_run >= self.raise_after:
                self.active = True
                return "raised"
            return None
        self.high_run = 0
        self.low_run = self.low_run + 1 if score < self.clear_threshold else 0
        if self.active and self.low_run >= self.clear_after:
            self.active = False
            return "cleared"
        return None


@dataclass(frozen=True)
class LeakDetectorSettings:
    """What a learned leak model needs on the device, stored in its manifest under ``"detector"``."""

    sensors: list[tuple[str, str]]  # (network element, quantity): flows, pressures, presence, in layout order
    layout: LeakFeatureLayout
    raise_threshold: float
    clear_threshold: float
    raise_after: int
    clear_after: int

    def to_dict(self) -> dict:
        return {
            "sensors": [list(s) for s in self.sensors],
            "layout": self.layout.to_dict(),
            "raise_threshold": self.raise_threshold,
            "clear_threshold": self.clear_threshold,
            "raise_after": self.raise_after,
            "clear_after": self.clear_after,
        }

    @classmethod
    def from_dict(cls, data: dict) -> LeakDetectorSettings:
        try:
            return cls(
                sensors=[(str(e), str(q)) for e, q in data["sensors"]],
                layout=LeakFeatureLayout.from_dict(data["layout"]),
                raise_threshold=float(data["raise_threshold"]),
                clear_threshold=float(data["clear_threshold"]),
                raise_after=int(data["raise_after"]),
                clear_after=int(data["clear_after"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"the model's detector settings are incomplete or malformed ({exc})") from None

    def persistence(self) -> AlarmPersistence:
        return AlarmPersistence(self.raise_threshold, self.clear_threshold, self.raise_after, self.clear_after)


def leak_scores(backend, X: np.ndarray) -> np.ndarray:
    """P(leak) per feature row from a classifier backend."""
    names = backend.manifest.output_names
    column = next((i for i, n in enumerate(names) if n in LEAK_CLASS_NAMES), None)
    if column is None:
        raise ValueError(f"model {backend.manifest.name} has no leak class (outputs {names})")
    return backend.predict(X)[:, column].astype(np.float64)
