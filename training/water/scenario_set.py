"""The leak scenario set file: many simulated runs of one network with the same sensors, and their labels.

One ``.npz`` per dataset: N scenarios x T steps x S sensors, float32, plus the true
leak flow and leak flag per step. Every scenario shares the time axis and the sensor
list, so training can stack them; ``zone(i)`` gives one scenario as the
``ZoneDataset`` the replay source and the device read.

Flows are stored as a district meter reads them, positive into the zone (the same
convention as ``training.water.zone``), so the zone inflow is their plain sum.

>>> import numpy as np
>>> s = ScenarioSet(time_ms=np.array([1_772_409_600_000, 1_772_410_500_000]),
...                 values=np.ones((2, 2, 2), np.float32), columns=["10", "101"],
...                 quantities=["flow", "pressure"], units=["L/s", "m"],
...                 leak_flow_lps=np.array([[0, 0], [0, 3.5]], np.float32),
...                 leak_flag=np.array([[0, 0], [0, 1]], bool),
...                 scenarios=[{"seed": 1, "leak": None}, {"seed": 2, "leak": {"node": "15"}}],
...                 meta={"network": "Net3"})
>>> s.n_scenarios, s.n_steps, s.zone(1).leak_flow_lps.tolist()
(2, 2, [0.0, 3.5])
>>> s.select([1]).scenarios
[{'seed': 2, 'leak': {'node': '15'}}]
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge.contracts import QUANTITY_UNITS
from edge.datasets import DatasetError, ZoneDataset, read_npz

FORMAT = "frugalsense-leak-scenarios"
FORMAT_VERSION = 1
_ARRAYS = (
    "format",
    "time_ms",
    "values",
    "columns",
    "quantities",
    "units",
    "leak_flow_lps",
    "leak_flag",
    "scenarios",
    "meta",
)


@dataclass(eq=False)
class ScenarioSet:
    """N scenarios of T steps and S sensors; ``scenarios[i]`` says what was simulated in run i."""

    time_ms: np.ndarray  # int64[T]
    values: np.ndarray  # float32[N, T, S]; NaN = no measurement
    columns: list[str]
    quantities: list[str]
    units: list[str]
    leak_flow_lps: np.ndarray  # float32[N, T], true leak outflow
    leak_flag: np.ndarray  # bool[N, T], True from leak start to leak end (even while a ramp is tiny)
    scenarios: list[dict]  # per run: seed, leak (node, diameter, times, ramp) or None, population change
    meta: dict = field(default_factory=dict)  # network, sensors, step, generator settings

    def __post_init__(self) -> None:
        self.time_ms = np.asarray(self.time_ms, dtype=np.int64)
        self.values = np.asarray(self.values, dtype=np.float32)
        self.leak_flow_lps = np.asarray(self.leak_flow_lps, dtype=np.float32)
        self.leak_flag = np.asarray(self.leak_flag, dtype=bool)
        self.columns = [str(c) for c in self.columns]
        self.quantities = [str(q) for q in self.quantities]
        self.units = [str(u) for u in self.units]
        if self.values.ndim != 3:
            raise DatasetError(f"scenario values must have shape (scenarios, steps, sensors), got {self.values.shape}")
        n, t, s = self.values.shape
        if self.time_ms.shape != (t,) or (t > 1 and not np.all(np.diff(self.time_ms) > 0)):
            raise DatasetError(f"scenario times must be {t} strictly increasing values")
        for name in ("leak_flow_lps", "leak_flag"):
            if getattr(self, name).shape != (n, t):
                raise DatasetError(f"scenario {name} must have shape ({n}, {t}), got {getattr(self, name).shape}")
        for name in ("columns", "quantities", "units"):
            if len(getattr(self, name)) != s:
                raise DatasetError(f"scenario set has {s} sensors but {len(getattr(self, name))} {name}")
        for quantity, unit in zip(self.quantities, self.units, strict=True):
            if QUANTITY_UNITS.get(quantity) != unit:
                raise DatasetError(f"unit {unit!r} is not the unit of {quantity!r}")
        if len(self.scenarios) != n:
            raise DatasetError(f"scenario set has {n} runs but {len(self.scenarios)} descriptions")

    @property
    def n_scenarios(self) -> int:
        return self.values.shape[0]

    @property
    def n_steps(self) -> int:
        return self.values.shape[1]

    @property
    def step_s(self) -> int:
        return int((self.time_ms[1] - self.time_ms[0]) // 1000) if self.n_steps > 1 else int(self.meta["step_s"])

    @property
    def sensors(self) -> list[tuple[str, str]]:
        return list(zip(self.columns, self.quantities, strict=True))

    def zone(self, i: int) -> ZoneDataset:
        """Scenario ``i`` as a single-zone dataset (what the replay source and ``detect`` read)."""
        meta = {
            **{k: v for k, v in self.meta.items() if k != "generator"},
            "scenario": self.scenarios[i],
            "inflow_signs": {c: 1 for c, q in self.sensors if q == "flow"},
        }
        return ZoneDataset(
            time_ms=self.time_ms,
            values=self.values[i],
            columns=self.columns,
            quantities=self.quantities,
            units=self.units,
            leak_flow_lps=self.leak_flow_lps[i],
            meta=meta,
        )

    def select(self, indices) -> ScenarioSet:
        indices = list(indices)
        return ScenarioSet(
            self.time_ms,
            self.values[indices],
            self.columns,
            self.quantities,
            self.units,
            self.leak_flow_lps[indices],
            self.leak_flag[indices],
            [self.scenarios[i] for i in indices],
            dict(self.meta),
        )

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_name(path.name + ".npz")
        np.savez_compressed(
            path,
            format=np.array(f"{FORMAT}/{FORMAT_VERSION}"),
            time_ms=self.time_ms,
            values=self.values,
            columns=np.array(self.columns, dtype=str),
            quantities=np.array(self.quantities, dtype=str),
            units=np.array(self.units, dtype=str),
            leak_flow_lps=self.leak_flow_lps,
            leak_flag=self.leak_flag,
            scenarios=np.array(json.dumps(self.scenarios, sort_keys=True)),
            meta=np.array(json.dumps(self.meta, sort_keys=True)),
        )
        return path

    @classmethod
    def load(cls, path: str | Path) -> ScenarioSet:
        arrays = read_npz(Path(path), _ARRAYS, f"{FORMAT}/{FORMAT_VERSION}", "leak scenario set")
        return cls(
            time_ms=arrays["time_ms"],
            values=arrays["values"],
            columns=arrays["columns"].tolist(),
            quantities=arrays["quantities"].tolist(),
            units=arrays["units"].tolist(),
            leak_flow_lps=arrays["leak_flow_lps"],
            leak_flag=arrays["leak_flag"],
            scenarios=json.loads(str(arrays["scenarios"])),
            meta=json.loads(str(arrays["meta"])),
        )
