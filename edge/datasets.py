"""The zone dataset file: sensor time series of one water zone, with the true leak flow as label.

Written by the simulation in ``training/``, read by the replay source on the gateway,
so the format lives here (``edge`` never imports ``training``). A sensor is named by
its ``(column, quantity)`` pair because a network may hold a node and a link with the
same name (EPANET Net3 has junction "10" and pump "10").

>>> import numpy as np
>>> ds = ZoneDataset(
...     time_ms=np.array([1_772_409_600_000, 1_772_410_500_000], dtype=np.int64),
...     values=np.array([[40.0, 52.1], [41.5, 52.0]], dtype=np.float32),
...     columns=["10", "10"], quantities=["flow", "pressure"], units=["L/s", "m"],
...     leak_flow_lps=np.zeros(2, dtype=np.float32), meta={"network": "Net3"})
>>> ds.series("10", "pressure").tolist()
[52.099998474121094, 52.0]
>>> ds.series("10", "head")
Traceback (most recent call last):
...
edge.datasets.DatasetError: no sensor column '10' with quantity 'head' in the dataset (available: 10/flow, 10/pressure)
"""

from __future__ import annotations

import csv
import json
import math
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge.contracts import QUANTITY_UNITS, ms_to_datetime

# Stored in every file so a foreign .npz is recognised as such, not half-read.
FORMAT = "frugalsense-zone-dataset"
FORMAT_VERSION = 1
_ARRAYS = ("format", "time_ms", "values", "columns", "quantities", "units", "leak_flow_lps", "meta")


class DatasetError(ValueError):
    """A dataset is malformed, unreadable or lacks what was asked of it."""


def read_npz(path: Path, names: tuple[str, ...], fmt: str, what: str) -> dict[str, np.ndarray]:
    """The arrays ``names`` of a frugalsense ``.npz`` whose ``format`` array says ``fmt``; else DatasetError.

    A truncated, foreign or damaged file is a clear error naming the file, never a crash.
    """
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in names if k not in npz.files]
            if missing:
                raise DatasetError(f"{path}: not a frugalsense {what} (missing {', '.join(missing)})")
            arrays = {k: npz[k] for k in names}
    except DatasetError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as exc:
        raise DatasetError(f"{path}: unreadable or truncated {what} file ({exc})") from None
    if str(arrays["format"]) != fmt:
        raise DatasetError(f"{path}: format {str(arrays['format'])!r} is not {fmt}")
    return arrays


@dataclass(eq=False)
class ZoneDataset:
    """T time steps of S sensors, plus the true leak flow at each step (0 without a leak)."""

    time_ms: np.ndarray  # int64[T], UTC ms, strictly increasing
    values: np.ndarray  # float32[T, S]; NaN = no measurement
    columns: list[str]  # element names as in the network ("10", "15")
    quantities: list[str]  # "flow" / "pressure"
    units: list[str]  # "L/s" / "m"
    leak_flow_lps: np.ndarray  # float32[T], ground truth label
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.time_ms = np.asarray(self.time_ms, dtype=np.int64)
        self.values = np.asarray(self.values, dtype=np.float32)
        self.leak_flow_lps = np.asarray(self.leak_flow_lps, dtype=np.float32)
        self.columns = [str(c) for c in self.columns]
        self.quantities = [str(q) for q in self.quantities]
        self.units = [str(u) for u in self.units]
        n_steps = self.time_ms.shape[0] if self.time_ms.ndim == 1 else -1
        if n_steps < 1:
            raise DatasetError("dataset time_ms must be a non-empty 1-D array")
        if self.values.ndim != 2 or self.values.shape[0] != n_steps:
            raise DatasetError(f"dataset values must have shape ({n_steps}, sensors), got {self.values.shape}")
        n_sensors = self.values.shape[1]
        for name in ("columns", "quantities", "units"):
            if len(getattr(self, name)) != n_sensors:
                raise DatasetError(f"dataset has {n_sensors} sensor columns but {len(getattr(self, name))} {name}")
        if self.leak_flow_lps.shape != (n_steps,):
            raise DatasetError(
                f"dataset leak_flow_lps must have {n_steps} values, got shape {self.leak_flow_lps.shape}"
            )
        if n_steps > 1 and not np.all(np.diff(self.time_ms) > 0):
            raise DatasetError("dataset times must be strictly increasing")
        for quantity, unit in zip(self.quantities, self.units, strict=True):  # lengths checked just above
            if QUANTITY_UNITS.get(quantity) != unit:
                raise DatasetError(
                    f"dataset unit {unit!r} is not the unit of {quantity!r} (expected {QUANTITY_UNITS.get(quantity)!r})"
                )
        keys = list(zip(self.columns, self.quantities, strict=True))
        if len(set(keys)) != len(keys):
            raise DatasetError("dataset has the same (column, quantity) twice")
        if not isinstance(self.meta, dict):
            raise DatasetError("dataset meta must be a mapping")

    @property
    def sensors(self) -> list[tuple[str, str]]:
        """The (column, quantity) pairs, in column order."""
        return list(zip(self.columns, self.quantities, strict=True))  # same length: checked on construction

    def column_index(self, column: str, quantity: str) -> int:
        try:
            return self.sensors.index((column, quantity))
        except ValueError:
            available = ", ".join(f"{c}/{q}" for c, q in self.sensors)
            raise DatasetError(
                f"no sensor column {column!r} with quantity {quantity!r} in the dataset (available: {available})"
            ) from None

    def series(self, column: str, quantity: str) -> np.ndarray:
        return self.values[:, self.column_index(column, quantity)]

    def save(self, path: str | Path) -> Path:
        """Write a compressed ``.npz`` (numpy adds the suffix if missing)."""
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_name(path.name + ".npz")
        try:
            meta = json.dumps(self.meta, sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise DatasetError(
                f"dataset meta must hold only JSON values (text, numbers, lists, mappings): {exc}"
            ) from None
        np.savez_compressed(
            path,
            format=np.array(f"{FORMAT}/{FORMAT_VERSION}"),
            time_ms=self.time_ms,
            values=self.values,
            columns=np.array(self.columns, dtype=str),
            quantities=np.array(self.quantities, dtype=str),
            units=np.array(self.units, dtype=str),
            leak_flow_lps=self.leak_flow_lps,
            meta=np.array(meta),
        )
        return path

    @classmethod
    def load(cls, path: str | Path) -> ZoneDataset:
        path = Path(path)
        if not path.is_file():
            raise DatasetError(f"{path}: no such dataset file")
        arrays = read_npz(path, _ARRAYS, f"{FORMAT}/{FORMAT_VERSION}", "zone dataset")
        try:
            meta = json.loads(str(arrays["meta"]))
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}: metadata is not valid JSON ({exc})") from None
        return cls(
            time_ms=arrays["time_ms"],
            values=arrays["values"],
            columns=arrays["columns"].tolist(),
            quantities=arrays["quantities"].tolist(),
            units=arrays["units"].tolist(),
            leak_flow_lps=arrays["leak_flow_lps"],
            meta=meta,
        )

    def to_csv(self, path: str | Path, include_label: bool = True) -> Path:
        """Write a SCADA-like CSV: ISO UTC timestamp, one column per sensor, empty cell = no value.

        The last column ``leak_flow_label [L/s]`` is the simulation's ground truth, not a sensor.
        """
        path = Path(path)
        header = ["timestamp"] + [
            f"{q}_{c} [{u}]" for c, q, u in zip(self.columns, self.quantities, self.units, strict=True)
        ]
        if include_label:
            header.append("leak_flow_label [L/s]")
        with path.open("w", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(header)
            for i, t in enumerate(self.time_ms.tolist()):
                row = [ms_to_datetime(t).strftime("%Y-%m-%dT%H:%M:%SZ")]
                row += [_cell(v) for v in self.values[i].tolist()]
                if include_label:
                    row.append(_cell(float(self.leak_flow_lps[i])))
                writer.writerow(row)
        return path


def _cell(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.3f}"
