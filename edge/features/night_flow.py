"""Zone inflow and Minimum Night Flow (MNF): the one feature code path for device and training.

MNF is the lowest 1 h rolling mean of the district inflow inside the night window
(02:00-04:00 local time by default), when legitimate use is lowest and a leak is the
largest share of the flow. A night with any missing sample has no MNF (NaN): a gap
must never look like a low night.

>>> import numpy as np
>>> start = 1_772_409_600_000  # 2026-03-02T00:00Z
>>> t = start + np.arange(96) * 900_000  # one day at 15 min
>>> flow = np.full(96, 50.0)
>>> flow[8:16] = [30, 30, 32, 28, 30, 34, 40, 40]  # 02:00 .. 03:45
>>> dates, mnf = minimum_night_flow(t, flow)
>>> dates.tolist(), mnf.tolist()
([datetime.date(2026, 3, 2)], [30.0])
>>> flow[9] = np.nan
>>> minimum_night_flow(t, flow)[1].tolist()
[nan]
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np

_CLOCK = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")
_DURATION = re.compile(r"^(\d+)\s*(h|min|s)$")
_DURATION_MS = {"h": 3_600_000, "min": 60_000, "s": 1000}


def zone_inflow(values: np.ndarray, signs) -> np.ndarray:
    """Signed sum of the district meters per time step: +1 for water entering the zone.

    NaN in any meter makes that step NaN (the zone balance is unknown, not smaller).

    >>> zone_inflow(np.array([[10.0, 5.0, 2.0], [10.0, np.nan, 1.0]]), [1, 1, -1]).tolist()
    [13.0, nan]
    """
    values = np.asarray(values, dtype=np.float64)
    signs = np.asarray(signs, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] != signs.shape[0]:
        raise ValueError(
            f"zone inflow needs values of shape (T, {signs.shape[0]}) for {signs.shape[0]} signs, got {values.shape}"
        )
    if not np.all(np.isin(signs, (-1.0, 1.0))):
        raise ValueError(f"inflow signs must be +1 or -1, got {signs.tolist()}")
    return values @ signs


def parse_clock(text: str) -> time:
    """'02:00' -> time(2, 0); anything else is refused with the expected form."""
    match = _CLOCK.match(str(text).strip())
    if not match:
        raise ValueError(f"night time {text!r} must be HH:MM, e.g. '02:00'")
    return time(int(match.group(1)), int(match.group(2)))


def parse_duration_ms(text: str) -> int:
    """'1h' -> 3600000, '30min' -> 1800000, '900s' -> 900000.

    >>> parse_duration_ms("30min")
    1800000
    """
    match = _DURATION.match(str(text).strip())
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"duration {text!r} must be a positive number with h, min or s, e.g. '1h'")
    return int(match.group(1)) * _DURATION_MS[match.group(2)]


def zone_info(tz: str) -> ZoneInfo:
    """The IANA time zone ``tz``; a ValueError that names the key if it is unknown."""
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {tz!r} (use an IANA name such as 'UTC' or 'Europe/Paris')") from None


def night_window(
    night_date: date, night_start: str = "02:00", night_end: str = "04:00", tz: str = "UTC"
) -> tuple[int, int]:
    """UTC ms [start, end) of the night that ends on ``night_date`` (local time).

    A window across midnight (e.g. '23:00'-'05:00') starts the evening before.

    >>> night_window(date(2026, 3, 2))
    (1772416800000, 1772424000000)
    >>> night_window(date(2026, 3, 2), "23:00", "01:00")
    (1772406000000, 1772413200000)
    """
    zone = zone_info(tz)
    begin, end = parse_clock(night_start), parse_clock(night_end)
    if begin == end:
        raise ValueError("the night window has the same start and end")
    start_day = night_date if begin < end else night_date - timedelta(days=1)
    start = datetime.combine(start_day, begin, tzinfo=zone)
    stop = datetime.combine(night_date, end, tzinfo=zone)
    return int(start.timestamp() * 1000), int(stop.timestamp() * 1000)


def night_after(
    time_ms: int, night_start: str = "02:00", night_end: str = "04:00", tz: str = "UTC"
) -> tuple[date, int, int]:
    """The first night (date, start ms, end ms) that has not ended at ``time_ms``.

    >>> night_after(1_772_424_000_000)[0]  # 04:00 exactly: that night is over
    datetime.date(2026, 3, 3)
    """
    local = datetime.fromtimestamp(time_ms / 1000, tz=zone_info(tz)).date()
    for offset in (-1, 0, 1, 2):
        day = local + timedelta(days=offset)
        start, end = night_window(day, night_start, night_end, tz)
        if end > time_ms:
            return day, start, end
    raise AssertionError("unreachable: a night ends within two days")


def night_mnf(
    time_ms: np.ndarray, inflow: np.ndarray, start_ms: int, end_ms: int, step_ms: int, rolling_ms: int = 3_600_000
) -> float:
    """MNF of one night window, or NaN unless every step in [start, end) has a value.

    >>> t = np.arange(0, 7_200_000, 900_000)
    >>> night_mnf(t, np.array([9, 8, 8, 8, 8, 9, 9, 9.0]), 0, 7_200_000, 900_000)
    8.0
    >>> night_mnf(t[1:], np.array([8, 8, 8, 8, 9, 9, 9.0]), 0, 7_200_000, 900_000)
    nan
    """
    if step_ms <= 0 or rolling_ms % step_ms or (end_ms - start_ms) % step_ms:
        raise ValueError(
            f"the rolling window ({rolling_ms} ms) and the night ({end_ms - start_ms} ms) "
            f"must be whole numbers of the sample step ({step_ms} ms)"
        )
    width = rolling_ms // step_ms
    expected = (end_ms - start_ms) // step_ms
    if width > expected:
        raise ValueError(f"the rolling window ({rolling_ms} ms) is longer than the night ({end_ms - start_ms} ms)")
    time_ms = np.asarray(time_ms)
    inside = (time_ms >= start_ms) & (time_ms < end_ms)
    flow = np.asarray(inflow, dtype=np.float64)[inside]
    if flow.shape[0] != expected or np.isnan(flow).any():
        return float("nan")
    flow = flow[np.argsort(time_ms[inside], kind="stable")]
    means = np.convolve(flow, np.ones(width) / width, mode="valid")
    return float(means.min())


def minimum_night_flow(
    time_ms,
    inflow,
    night_start: str = "02:00",
    night_end: str = "04:00",
    tz: str = "UTC",
    rolling: str = "1h",
    step_ms: int | None = None,
):
    """One MNF per night fully inside the data: ``(night_dates, mnf)``, NaN where a sample is missing.

    ``step_ms`` is the sample step; by default the smallest gap between timestamps.
    """
    time_ms = np.asarray(time_ms, dtype=np.int64)
    inflow = np.asarray(inflow, dtype=np.float64)
    if time_ms.ndim != 1 or time_ms.shape != inflow.shape:
        raise ValueError(f"time_ms and inflow must be 1-D of equal length, got {time_ms.shape} and {inflow.shape}")
    if time_ms.shape[0] < 2 and step_ms is None:
        raise ValueError("need at least two samples (or step_ms) to know the sample step")
    if step_ms is None:
        gaps = np.diff(np.unique(time_ms))
        step_ms = int(gaps.min())
    rolling_ms = parse_duration_ms(rolling)
    zone = zone_info(tz)
    first_day = datetime.fromtimestamp(time_ms.min() / 1000, tz=zone).date()
    last_day = datetime.fromtimestamp(time_ms.max() / 1000, tz=zone).date() + timedelta(days=1)
    dates, mnf = [], []
    day = first_day
    while day <= last_day:
        start, end = night_window(day, night_start, night_end, tz)
        if start >= time_ms.min() and end <= time_ms.max() + step_ms:
            dates.append(day)
            mnf.append(night_mnf(time_ms, inflow, start, end, step_ms, rolling_ms))
        day += timedelta(days=1)
    return np.array(dates, dtype=object), np.array(mnf, dtype=np.float64)
