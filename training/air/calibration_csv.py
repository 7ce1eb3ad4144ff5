"""Read a user's CSV of co-located low-cost sensors and a reference instrument into a calibration table.

The CSV may be in the shape of the UCI "Air Quality" dataset (``;`` separators,
decimal commas, ``Date`` and ``Time`` in two columns as ``10/03/2004`` and
``18.00.00``, -200 for a missing value, empty trailing columns) or a plain one
(``,`` separators, decimal points, one ISO date-time column). Rows are put in time
order. Every problem names the file, the line and what is wrong.

>>> table = read_calibration_csv(io.StringIO(
...     "Date;Time;NO2(GT);PT08.S4(NO2);T;;\\n"
...     "10/03/2004;18.00.00;113;1692;13,6;;\\n"
...     "10/03/2004;19.00.00;-200;1559;13,3;;\\n"))
>>> table.names, table.columns["T"].tolist(), table.columns["NO2(GT)"].tolist()
(['NO2(GT)', 'PT08.S4(NO2)', 'T'], [13.6, 13.3], [113.0, nan])
>>> from edge.contracts import ms_to_datetime
>>> ms_to_datetime(int(table.time_ms[0])).isoformat()
'2004-03-10T18:00:00+00:00'
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np

TIME_NAMES = ("datetime", "date_time", "timestamp", "time", "date")
# (date part, time part) formats tried in order; day-first is the European (and UCI) habit.
DATE_FORMATS = ("%d/%m/%Y", "%m/%d/%Y", "%Y-%m-%d", "%d.%m.%Y", "%Y/%m/%d")
TIME_FORMATS = ("%H.%M.%S", "%H:%M:%S", "%H:%M", "%H.%M")
_NUMBER = re.compile(r"^[+-]?(\d+([.,]\d*)?|[.,]\d+)([eE][+-]?\d+)?$")


class CalibrationCsvError(ValueError):
    """The CSV cannot be used for a calibration; the message says where and why."""


@dataclass
class CalibrationTable:
    """Numeric columns of a CSV in time order (NaN = missing), with their times in UTC ms."""

    time_ms: np.ndarray
    columns: dict[str, np.ndarray]
    source: str = "csv"
    rows_without_time: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return list(self.columns)


# ---- reading -------------------------------------------------------------------------


def _open_text(path) -> tuple[str, str]:
    if isinstance(path, io.StringIO):
        return path.getvalue(), "csv"
    path = Path(path)
    if not path.is_file():
        raise CalibrationCsvError(f"{path}: no such file")
    raw = path.read_bytes()
    for encoding in ("utf-8-sig", "latin-1"):
        try:
            return raw.decode(encoding), str(path)
        except UnicodeDecodeError:
            continue
    raise CalibrationCsvError(f"{path}: not a text file")  # pragma: no cover - latin-1 decodes anything


def _delimiter(header: str) -> str:
    counts = {d: header.count(d) for d in (";", "\t", ",")}
    best = max(counts, key=counts.get)
    if counts[best] == 0:
        raise CalibrationCsvError("the first line has no ';', ',' or tab: is this a CSV with a header line?")
    return best


def _parse_number(text: str, decimal_comma: bool) -> float:
    text = text.strip()
    if not text or not _NUMBER.match(text):
        return math.nan
    return float(text.replace(",", ".") if decimal_comma else text)


def _time_columns(header: list[str]) -> tuple[int, int | None]:
    lowered = [h.strip().lower() for h in header]
    if "date" in lowered and "time" in lowered:
        return lowered.index("date"), lowered.index("time")
    for name in TIME_NAMES:
        if name in lowered:
            return lowered.index(name), None
    return 0, None  # the first column, if it parses as a time


def _time_parser(samples: list[str], where: str):
    """A function text -> datetime for the format the samples are in."""

    def iso(text):
        return datetime.fromisoformat(text.strip().replace(" ", "T", 1))

    candidates = (
        [iso]
        + [
            (lambda fmt: lambda text: datetime.strptime(text.strip(), fmt))(f"{d} {t}")
            for d in DATE_FORMATS
            for t in TIME_FORMATS
        ]
        + [(lambda fmt: lambda text: datetime.strptime(text.strip(), fmt))(d) for d in DATE_FORMATS]
    )
    for parse in candidates:
        try:
            for s in samples:
                parse(s)
            return parse
        except ValueError:
            continue
    raise CalibrationCsvError(
        f"{where}: cannot read {samples[0]!r} as a date and time "
        "(expected e.g. 10/03/2004 18.00.00, 2004-03-10T18:00:00 or 2004-03-10 18:00)"
    )


def read_calibration_csv(path, missing: float | None = -200.0, tz: str = "UTC") -> CalibrationTable:
    """Read a calibration CSV (``;`` or ``,``, decimal commas, one or two time columns); see the module doc.

    ``missing``: the code meaning "no value" (UCI: -200). Times without an offset are
    in ``tz``.
    """
    text, source = _open_text(path)
    lines = [line for line in text.splitlines() if line.strip(" ;,\t")]
    if len(lines) < 2:
        raise CalibrationCsvError(f"{source}: needs a header line and at least one data line")
    delimiter = _delimiter(lines[0])
    rows = list(csv.reader(lines, delimiter=delimiter))
    header = [h.strip() for h in rows[0]]
    while header and not header[-1]:
        header.pop()  # the UCI file ends every line with ';;'
    if len(set(header)) != len(header) or "" in header:
        raise CalibrationCsvError(f"{source}: the header has empty or repeated column names: {header}")
    body = [r + [""] * (len(header) - len(r)) for r in rows[1:]]
    decimal_comma = delimiter != "," and any(re.match(r"^-?\d+,\d+$", c.strip()) for r in body[:200] for c in r)
    date_col, time_col = _time_columns(header)

    def stamp(r):
        return f"{r[date_col]} {r[time_col]}" if time_col is not None else r[date_col]

    dated = [r for r in body if r[date_col].strip()]
    # Spread over the file: a day-first file may show a day above 12 only after the 12th of the month.
    samples = [stamp(r) for r in dated[:: max(1, len(dated) // 500)]]
    if not samples:
        raise CalibrationCsvError(f"{source}: no row has a date in column {header[date_col]!r}")
    parse = _time_parser(samples, f"{source}, column {header[date_col]!r}")
    zone = ZoneInfo(tz)
    times, keep = [], []
    for n, r in enumerate(body):
        try:
            when = parse(stamp(r))
        except ValueError:
            continue
        if when.tzinfo is None:
            when = when.replace(tzinfo=zone)
        times.append(int(when.astimezone(UTC).timestamp() * 1000))
        keep.append(n)
    skip = {date_col} | ({time_col} if time_col is not None else set())
    columns = {}
    for j, name in enumerate(header):
        if j in skip:
            continue
        values = np.array([_parse_number(body[n][j], decimal_comma) for n in keep])
        if missing is not None:
            values[values == missing] = np.nan
        if np.isfinite(values).any():
            columns[name] = values
    if not columns:
        raise CalibrationCsvError(f"{source}: no numeric column besides the time")
    order = np.argsort(np.asarray(times, dtype=np.int64), kind="stable")
    table = CalibrationTable(
        np.asarray(times, dtype=np.int64)[order],
        {k: v[order] for k, v in columns.items()},
        source,
        rows_without_time=len(body) - len(keep),
    )
    table.notes.append(
        f"separator {delimiter!r}, decimal {'comma' if decimal_comma else 'point'}, "
        f"time from {header[date_col]!r}" + (f" + {header[time_col]!r}" if time_col is not None else "")
    )
    return table
