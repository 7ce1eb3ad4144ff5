"""Read a historical SCADA export (CSV) into clean sensor series, reporting every problem it fixed or skipped.

The file: a header row, the timestamp in the first column, then one column per
sensor named as in the network (``10``), or with its quantity (``flow_10``,
``pressure_101``) where a node and a link share a name; a trailing ``[unit]`` is
ignored. The separator (``,`` ``;`` or tab) and a decimal comma are detected.
Flows are converted from ``flow_unit`` (L/s or m3/h), pressures from
``pressure_unit`` (m, bar, kPa). Timestamps: ISO 8601, ``DD/MM/YYYY HH:MM[:SS]``,
``DD.MM.YYYY HH:MM[:SS]`` or Unix seconds/milliseconds; without an offset they are in
``timezone``.

Nothing is silently dropped: empty or non-numeric cells, unparseable times,
unsorted and duplicated timestamps, gaps and stuck sensors (the same non-zero value
for ``stuck_hours`` or more: treated as missing) are each counted in ``issues``.

>>> import io
>>> text = "time;flow_10 [m3/h];101\\n2026-03-02 00:15;36,0;40,1\\n2026-03-02 00:00;36;40\\n2026-03-02 00:15;37;x\\n"
>>> s = read_scada_csv(io.StringIO(text), [("10", "flow"), ("101", "pressure")], flow_unit="m3/h")
>>> s.values.round(2).tolist()
[[10.0, 40.0], [10.0, 40.1]]
>>> for line in s.issues: print(line)
2 rows were out of time order: sorted
1 duplicated timestamp, 1 with different values: the first non-empty value kept
pressure 101 (column '101'): 1 non-numeric cell (first at line 4: 'x'), treated as missing
>>> read_scada_csv(io.StringIO(text), [("60", "flow"), ("10", "flow")])  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
edge.sources.scada_csv.ScadaError: the CSV has no column for flow 60 (name a column '60' or 'flow_60'); ...
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np

FLOW_UNITS = {"L/s": 1.0, "l/s": 1.0, "m3/h": 1000.0 / 3600.0}
PRESSURE_UNITS = {"m": 1.0, "bar": 10.197, "kPa": 0.10197}
STUCK_HOURS = 6.0
_MISSING = {"", "nan", "na", "n/a", "null", "none", "-", "--"}
_UNIT_SUFFIX = re.compile(r"\s*[\[(][^\])]*[\])]\s*$")
_DAY_FIRST = ("%d/%m/%Y %H:%M:%S", "%d/%m/%Y %H:%M", "%d.%m.%Y %H:%M:%S", "%d.%m.%Y %H:%M")


class ScadaError(ValueError):
    """The CSV cannot be used at all; the message says why and what to change."""


@dataclass
class _BadCells:
    """The non-numeric cells of one column: how many, and the first one's (line, text)."""

    count: int = 0
    first: tuple[int, str] | None = None


@dataclass
class ScadaSeries:
    """A SCADA export read for some sensors: times, values in canonical units, and what was wrong with the file."""

    time_ms: np.ndarray  # int64 [T], strictly increasing
    values: np.ndarray  # float64 [T, S], canonical units, NaN = no usable value
    sensors: list[tuple[str, str]]  # (element, quantity) per column of values
    columns: list[str]  # the CSV header of each
    issues: list[str] = field(default_factory=list)

    @property
    def step_ms(self) -> int:
        gaps = np.diff(self.time_ms)
        return int(np.median(gaps)) if gaps.size else 0


def read_scada_csv(
    source,
    sensors: list[tuple[str, str]],
    flow_unit: str = "L/s",
    pressure_unit: str = "m",
    tz: str = "UTC",
    stuck_hours: float = STUCK_HOURS,
) -> ScadaSeries:
    """Read ``source`` (path or text stream) for ``sensors``; raise ScadaError if it cannot serve them."""
    if flow_unit not in FLOW_UNITS:
        raise ScadaError(f"flow unit {flow_unit!r} is not one of {', '.join(FLOW_UNITS)}")
    if pressure_unit not in PRESSURE_UNITS:
        raise ScadaError(f"pressure unit {pressure_unit!r} is not one of {', '.join(PRESSURE_UNITS)}")
    try:
        zone = ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScadaError(f"unknown time zone {tz!r}: use an IANA name such as 'UTC' or 'Europe/Paris'") from None
    text = _text(source)
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) < 2:
        raise ScadaError("the CSV needs a header row and at least one data row")
    sep = ";" if ";" in lines[0] else ("\t" if "\t" in lines[0] else ",")
    rows = list(csv.reader(lines, delimiter=sep))
    header = [h.strip() for h in rows[0]]
    decimal_comma = sep != "," and any(re.fullmatch(r"-?\d+,\d+", c.strip()) for r in rows[1:50] for c in r[1:])
    index = _match_columns(header, sensors)
    issues: list[str] = []
    times: list[int] = []
    table: list[list[float]] = []
    bad_times: list[int] = []
    cells = [_BadCells() for _ in sensors]
    for line_no, row in enumerate(rows[1:], start=2):
        t = _parse_time(row[0] if row else "", zone)
        if t is None:
            bad_times.append(line_no)
            continue
        row_values = []
        for j, col in enumerate(index):
            cell = row[col].strip() if col < len(row) else ""
            value = _number(cell, decimal_comma)
            if value is None and cell.lower() not in _MISSING:
                cells[j].count += 1
                cells[j].first = cells[j].first or (line_no, cell)
            row_values.append(math.nan if value is None else value)
        times.append(t)
        table.append(row_values)
    if not times:
        raise ScadaError(
            f"no row has a readable timestamp in the first column (line 2: {rows[1][0]!r}); "
            "use ISO 8601 such as 2026-03-02T00:15:00Z"
        )
    if bad_times:
        issues.append(f"{len(bad_times)} row(s) with an unreadable timestamp skipped (first at line {bad_times[0]})")
    time_ms, values = np.array(times, dtype=np.int64), np.array(table, dtype=np.float64)
    time_ms, values = _sort_and_merge(time_ms, values, issues)
    for j, (element, quantity) in enumerate(sensors):
        bad = cells[j]
        if bad.first is not None:  # set with the first bad cell, so whenever count > 0
            line, cell = bad.first
            issues.append(
                f"{quantity} {element} (column '{header[index[j]]}'): {bad.count} non-numeric "
                f"cell{'s' if bad.count > 1 else ''} (first at line {line}: {cell!r}), "
                "treated as missing"
            )
    factors = np.array(
        [
            FLOW_UNITS[flow_unit] if q == "flow" else PRESSURE_UNITS[pressure_unit] if q == "pressure" else 1.0
            for _, q in sensors
        ]
    )
    values = values * factors
    series = ScadaSeries(time_ms, values, list(sensors), [header[i] for i in index], issues)
    _report_gaps(series)
    _blank_stuck(series, stuck_hours)
    _report_missing(series)
    return series


def _text(source) -> str:
    if isinstance(source, (str, Path)):
        path = Path(source)
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise ScadaError(f"cannot read the file ({exc.strerror})") from None
        try:
            return raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            return raw.decode("latin-1")  # older SCADA exports: Windows-1252 / Latin-1
    if isinstance(source, io.TextIOBase) or hasattr(source, "read"):
        return source.read()
    raise ScadaError(f"cannot read a CSV from {type(source).__name__}")


def _match_columns(header: list[str], sensors: list[tuple[str, str]]) -> list[int]:
    names = [_UNIT_SUFFIX.sub("", h).strip() for h in header]
    index, missing = [], []
    for element, quantity in sensors:
        prefixed = [i for i, n in enumerate(names) if i > 0 and n.lower() == f"{quantity}_{element}".lower()]
        plain = [i for i, n in enumerate(names) if i > 0 and n == element]
        if prefixed:
            index.append(prefixed[0])
        elif plain:
            twins = [q for e, q in sensors if e == element and q != quantity]
            if twins:
                raise ScadaError(
                    f"column '{header[plain[0]]}' could be {quantity} {element} or {twins[0]} {element}: "
                    f"name them {quantity}_{element} and {twins[0]}_{element}"
                )
            index.append(plain[0])
        else:
            missing.append(f"{quantity} {element} (name a column '{element}' or '{quantity}_{element}')")
    if missing:
        raise ScadaError(f"the CSV has no column for {'; '.join(missing)}; columns found: {', '.join(header[1:])}")
    return index


def _parse_time(text: str, zone: ZoneInfo) -> int | None:
    text = text.strip()
    if not text:
        return None
    if re.fullmatch(r"\d{9,13}(\.\d+)?", text):
        value = float(text)
        return int(value if value > 1e11 else value * 1000)
    when = None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        for fmt in _DAY_FIRST:
            try:
                when = datetime.strptime(text, fmt)
                break
            except ValueError:
                continue
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=zone)
    return int(round(when.astimezone(UTC).timestamp() * 1000))


def _number(cell: str, decimal_comma: bool) -> float | None:
    if decimal_comma:
        cell = cell.replace(".", "").replace(",", ".") if re.fullmatch(r"-?[\d.]+,\d+", cell) else cell
    try:
        value = float(cell)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _sort_and_merge(time_ms: np.ndarray, values: np.ndarray, issues: list[str]):
    if np.any(np.diff(time_ms) < 0):
        order = np.argsort(time_ms, kind="stable")
        moved = int(np.sum(order != np.arange(len(order))))
        issues.append(f"{moved} rows were out of time order: sorted")
        time_ms, values = time_ms[order], values[order]
    unique, first, counts = np.unique(time_ms, return_index=True, return_counts=True)
    if unique.size == time_ms.size:
        return time_ms, values
    merged = values[first].copy()
    differing = 0
    for k in np.flatnonzero(counts > 1):
        block = values[first[k] : first[k] + counts[k]]
        filled = [b[np.isfinite(b)] for b in block.T]
        if any(f.size > 1 and np.ptp(f) > 0 for f in filled):
            differing += 1
        merged[k] = [f[0] if f.size else math.nan for f in filled]
    dupes = int(np.sum(counts > 1))
    issues.append(
        f"{dupes} duplicated timestamp{'s' if dupes > 1 else ''}, {differing} with different values: "
        "the first non-empty value kept"
    )
    return unique, merged


def _report_gaps(series: ScadaSeries) -> None:
    if series.time_ms.size < 2:
        return
    gaps = np.diff(series.time_ms)
    step = series.step_ms
    long = gaps > 1.5 * step
    if long.any():
        series.issues.append(
            f"{int(long.sum())} gap(s) longer than the {step / 60000:g} min step; the longest "
            f"{gaps.max() / 3.6e6:.1f} h from {_iso(series.time_ms[np.argmax(gaps)])}"
        )


def _blank_stuck(series: ScadaSeries, stuck_hours: float) -> None:
    """A sensor repeating the same non-zero value for stuck_hours or more is stuck: those values become NaN.

    A flow of exactly 0 is a closed pipe or a stopped pump, not a stuck meter.
    """
    for j, (element, quantity) in enumerate(series.sensors):
        v = series.values[:, j]
        same = np.concatenate([[False], (v[1:] == v[:-1]) & np.isfinite(v[1:])])
        start = 0
        while start < len(v):
            if not same[start]:
                start += 1
                continue
            run_start = start - 1
            end = start
            while end < len(v) and same[end]:
                end += 1
            hours = (series.time_ms[end - 1] - series.time_ms[run_start]) / 3.6e6
            if hours >= stuck_hours and v[run_start] != 0:
                series.issues.append(
                    f"{quantity} {element} stuck at {v[run_start]:g} for {hours:.1f} h from "
                    f"{_iso(series.time_ms[run_start])}: treated as missing"
                )
                series.values[run_start:end, j] = math.nan
            start = end


def _report_missing(series: ScadaSeries) -> None:
    for j, (element, quantity) in enumerate(series.sensors):
        n = int(np.isnan(series.values[:, j]).sum())
        if n:
            series.issues.append(
                f"{quantity} {element}: {n} of {len(series.time_ms)} steps without a usable value "
                f"({n / len(series.time_ms):.1%}); the detector says insufficient_data there"
            )


def _iso(time_ms: int) -> str:
    return datetime.fromtimestamp(int(time_ms) / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")
