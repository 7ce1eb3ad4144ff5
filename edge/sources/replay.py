"""Replay a recorded or simulated zone dataset as Readings, step by step, optionally in scaled real time.

All sensors of one time step come out before any of the next, so a detector sees the
same order a live gateway would. A missing value (NaN, or an infinite one) becomes a reading of quality
UNKNOWN with no value: never a made-up one.

>>> import numpy as np
>>> from edge.datasets import ZoneDataset
>>> ds = ZoneDataset(time_ms=[1_772_409_600_000, 1_772_410_500_000],
...                  values=[[40.0, 52.0], [np.nan, 51.5]], columns=["10", "10"],
...                  quantities=["flow", "pressure"], units=["L/s", "m"], leak_flow_lps=[0, 0])
>>> src = ReplaySource(ds, "net3", "gw-01", [("F-10", "10", "flow"), ("P-10", "10", "pressure")])
>>> [(r.sensor, r.value, r.quality.value) for r in src]
[('F-10', 40.0, 'ok'), ('P-10', 52.0, 'ok'), ('F-10', None, 'unknown'), ('P-10', 51.5, 'ok')]
>>> ReplaySource(ds, "net3", "gw-01", [("F-60", "60", "flow")])
Traceback (most recent call last):
...
edge.datasets.DatasetError: no sensor column '60' with quantity 'flow' in the dataset (available: 10/flow, 10/pressure)
"""

from __future__ import annotations

import math
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from itertools import chain
from pathlib import Path

from edge.contracts import Quality, Reading, check_id
from edge.datasets import ZoneDataset

SensorMapping = Sequence[tuple[str, str, str]]  # (sensor_id, dataset column, quantity)


class ReplaySource:
    """Readings from a ZoneDataset; ``speed`` 0 = as fast as possible, N = N times real time."""

    def __init__(
        self,
        dataset: ZoneDataset | str | Path,
        site: str,
        gateway: str,
        sensors: SensorMapping,
        speed: float = 0.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.dataset = dataset if isinstance(dataset, ZoneDataset) else ZoneDataset.load(dataset)
        self.site = check_id("site", site)
        self.gateway = check_id("gateway", gateway)
        if not sensors:
            raise ValueError("replay needs at least one (sensor_id, column, quantity) mapping")
        if isinstance(speed, bool) or not isinstance(speed, (int, float)) or not speed >= 0 or math.isinf(speed):
            raise ValueError(f"replay speed must be 0 (as fast as possible) or a positive factor, got {speed!r}")
        self.speed = float(speed)
        self._sleep = sleep
        self._clock = clock
        self._columns = []
        for entry in sensors:
            if len(entry) != 3:
                raise ValueError(f"sensor mapping {entry!r} must be (sensor_id, column, quantity)")
            sensor, column, quantity = entry
            check_id("sensor", sensor)
            index = self.dataset.column_index(column, quantity)
            self._columns.append((sensor, index, quantity, self.dataset.units[index]))
        ids = [c[0] for c in self._columns]
        if len(set(ids)) != len(ids):
            raise ValueError("replay sensor mapping uses the same sensor id twice")

    def __iter__(self) -> Iterator[Reading]:
        return self.readings()

    def readings(self) -> Iterator[Reading]:
        return chain.from_iterable(self.batches())

    def batches(self, after: tuple[int, int] | None = None) -> Iterator[list[Reading]]:
        """One list per time step. ``after=(time_ms, n)`` starts just after the first ``n`` readings at ``time_ms``.

        That is how a replay restarted after a failure goes on where it stopped: what
        was delivered is not given again, and nothing after it is skipped (a replay is
        deterministic, so the readings at one time always come in the same order).

        >>> import numpy as np
        >>> from edge.datasets import ZoneDataset
        >>> ds = ZoneDataset(time_ms=[1_772_409_600_000, 1_772_410_500_000], values=[[1.0, 2.0], [3.0, 4.0]],
        ...                  columns=["a", "b"], quantities=["flow", "flow"], units=["L/s", "L/s"],
        ...                  leak_flow_lps=[0, 0])
        >>> src = ReplaySource(ds, "net3", "gw-01", [("F-a", "a", "flow"), ("F-b", "b", "flow")])
        >>> [[r.value for r in step] for step in src.batches(after=(1_772_409_600_000, 1))]
        [[2.0], [3.0, 4.0]]
        """
        times = self.dataset.time_ms.tolist()
        values = self.dataset.values
        first, skip = 0, 0
        if after is not None:
            first = bisect_left(times, after[0])
            skip = after[1]
            while skip >= len(self._columns) and first < len(times) and times[first] == after[0]:
                first, skip = first + 1, skip - len(self._columns)  # several steps at one time: whole ones done
            if first >= len(times) or times[first] != after[0]:
                skip = 0
        started = self._clock()
        for step in range(first, len(times)):
            t = times[step]
            if self.speed > 0:
                # Pace against the start, not the previous step, so slow consumers do not add drift.
                due = started + (t - times[first]) / 1000.0 / self.speed
                wait = due - self._clock()
                if wait > 0:
                    self._sleep(wait)
            row = values[step]
            batch = []
            for sensor, index, quantity, unit in self._columns[skip:]:
                value = float(row[index])
                if not math.isfinite(value):
                    batch.append(Reading(t, self.site, self.gateway, sensor, quantity, None, unit, Quality.UNKNOWN))
                else:
                    batch.append(Reading(t, self.site, self.gateway, sensor, quantity, value, unit))
            skip = 0
            if batch:
                yield batch
