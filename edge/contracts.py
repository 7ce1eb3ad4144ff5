"""The data contracts every part of frugalsense speaks: Reading, Detection, Alert.

These types are the only shapes that cross a module boundary (bytes -> Reading ->
window -> features -> model -> Detection -> Alert). `docs/contracts.md` is the
prose version; the two must agree.

Times are integer milliseconds since the Unix epoch, UTC: exact, cheap to compare,
and what InfluxDB stores at ``precision=ms``.

>>> r = Reading(time_ms=1_700_000_000_000, site="net3", gateway="gw-01",
...             sensor="P-15", quantity="pressure", value=42.5, unit="m")
>>> r.time.isoformat()
'2023-11-14T22:13:20+00:00'
>>> Reading(time_ms=1_700_000_000_000, site="net3", gateway="gw-01", sensor="P-15",
...         quantity="pressure", value=42.5, unit="bar").validate()
Traceback (most recent call last):
...
edge.contracts.ContractError: reading P-15: unit 'bar' is not the unit of pressure (expected 'm')
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

SCHEMA_VERSION = 1

# Earliest and latest times a contract accepts: anything outside is a broken clock.
EARLIEST_MS = 946_684_800_000  # 2000-01-01T00:00:00Z
LATEST_MS = 4_102_444_800_000  # 2100-01-01T00:00:00Z

# Identifiers end up in MQTT topic levels and InfluxDB tags: no '/', '+', '#',
# spaces, commas or '=' (each would break one or the other).
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class ContractError(ValueError):
    """A value does not satisfy a data contract; the message says which and why."""


class Quality(StrEnum):
    """How far a reading can be trusted."""

    OK = "ok"
    SUSPECT = "suspect"  # plausible but flagged (stuck, spike, humidity artefact)
    BAD = "bad"  # failed a physical check; kept for diagnosis, never for detection
    UNKNOWN = "unknown"  # sensor link lost: no value, never the last one as if fresh


class Severity(StrEnum):
    """How urgent a detection or alert is."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class AlertState(StrEnum):
    """Whether an alert is being raised or cleared."""

    RAISED = "raised"
    CLEARED = "cleared"


# quantity -> canonical unit. One unit per quantity so a dashboard never mixes them.
QUANTITY_UNITS: dict[str, str] = {
    "pressure": "m",  # pressure head, metres of water
    "flow": "L/s",
    "pm1": "ug/m3",
    "pm25": "ug/m3",
    "pm10": "ug/m3",
    "pm25_corrected": "ug/m3",
    "pm25_calibrated": "ug/m3",  # a co-location calibration applied on the gateway (model type calibration)
    "no2": "ug/m3",
    "o3": "ug/m3",
    "temperature": "degC",
    "humidity": "%",
    "cell_count": "count",
    "wind_speed": "m/s",  # weather input of the NO2 virtual sensor (dilution ~ 1/wind)
    "no2_calibrated": "ug/m3",  # a calibration of a raw NO2 signal, applied on the gateway
    "resistance": "ohm",  # raw metal-oxide sensor resistance, a calibration's input
    "voltage": "V",  # raw electrochemical or metal-oxide sensor output voltage, a calibration's input
}


def check_id(kind: str, value: object) -> str:
    """Return ``value`` if it is a usable identifier, else raise ContractError.

    >>> check_id("sensor", "F-10")
    'F-10'
    >>> check_id("site", "north/zone")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    edge.contracts.ContractError: site 'north/zone' must be 1-64 letters, digits, '.', '_' or '-', starting with ...
    """
    if not isinstance(value, str) or not _ID.match(value):
        raise ContractError(
            f"{kind} {value!r} must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return value


def check_time(what: str, time_ms: object) -> int:
    """Return ``time_ms`` if it is integer UTC milliseconds within 2000..2100, else raise ContractError."""
    if isinstance(time_ms, bool) or not isinstance(time_ms, int):
        raise ContractError(f"{what}: time must be integer milliseconds since 1970 UTC, got {time_ms!r}")
    if not EARLIEST_MS <= time_ms < LATEST_MS:
        raise ContractError(f"{what}: time {time_ms} ms is outside 2000..2100 (clock not set?)")
    return time_ms


def ms_to_datetime(time_ms: int) -> datetime:
    """The aware UTC datetime of a contract time in milliseconds."""
    return datetime.fromtimestamp(time_ms / 1000, tz=UTC)


def datetime_to_ms(when: datetime) -> int:
    """UTC milliseconds of an aware datetime; a naive one is refused, not guessed."""
    if when.tzinfo is None:
        raise ContractError(f"time {when.isoformat()} has no time zone; give it in UTC")
    return int(round(when.timestamp() * 1000))


@dataclass(slots=True, frozen=True)
class Reading:
    """One measured value of one sensor at one time."""

    time_ms: int
    site: str
    gateway: str
    sensor: str
    quantity: str
    value: float | None
    unit: str
    quality: Quality = Quality.OK

    @property
    def time(self) -> datetime:
        return ms_to_datetime(self.time_ms)

    def validate(self) -> Reading:
        try:
            known = (self.site, self.gateway, self.sensor, self.quantity, self.unit) in _VALID_IDENTITIES
        except TypeError:  # an unhashable field: the full checks say what is wrong with it
            known = False
        if not known:
            self._validate_identity()  # once per sensor, not once per reading
        elif not (type(self.time_ms) is int and EARLIEST_MS <= self.time_ms < LATEST_MS):
            check_time(f"reading {self.sensor}", self.time_ms)  # raises
        quality = self.quality if self.quality.__class__ is Quality else Quality(self.quality)
        value = self.value
        if quality is Quality.UNKNOWN:
            if value is not None:
                raise ContractError(f"reading {self.sensor}: an 'unknown' reading carries no value")
        elif type(value) is not float or not -math.inf < value < math.inf:  # a finite float: done
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise ContractError(f"reading {self.sensor}: value must be a finite number, got {value!r}")
        return self

    def _validate_identity(self) -> None:
        """The checks a sensor's readings share (and the time, in the contract's order); remembered once passed."""
        check_id("site", self.site)
        check_id("gateway", self.gateway)
        check_id("sensor", self.sensor)
        what = f"reading {self.sensor}"
        check_time(what, self.time_ms)
        expected = QUANTITY_UNITS.get(self.quantity)
        if expected is None:
            raise ContractError(f"{what}: unknown quantity {self.quantity!r} (known: {', '.join(QUANTITY_UNITS)})")
        if self.unit != expected:
            raise ContractError(
                f"{what}: unit {self.unit!r} is not the unit of {self.quantity} (expected {expected!r})"
            )
        if len(_VALID_IDENTITIES) >= _MAX_REMEMBERED:
            _VALID_IDENTITIES.clear()
        _VALID_IDENTITIES.add((self.site, self.gateway, self.sensor, self.quantity, self.unit))


# (site, gateway, sensor, quantity, unit) that passed Reading.validate: a gateway has a few
# dozen sensors and a bridge a few thousand, so the set stays small; it is emptied if not.
_VALID_IDENTITIES: set[tuple] = set()
_MAX_REMEMBERED = 100_000


@dataclass(slots=True, frozen=True)
class Detection:
    """One decision of a detector over one window of readings."""

    time_ms: int
    site: str
    gateway: str
    kind: str  # what is detected: "leak", "air_pattern", "sensor_fault", ...
    label: str  # the decision: "leak" / "normal" / "insufficient_data" / ...
    score: float  # detector score, larger = more anomalous; meaning stated per model
    severity: Severity
    model: str
    model_version: str
    window_start_ms: int
    window_end_ms: int
    # Why: estimated leak flow, most affected sensors, baseline used. Flat and small.
    explanation: dict[str, float | str | list[str]] = field(default_factory=dict)

    def validate(self) -> Detection:
        check_id("site", self.site)
        check_id("gateway", self.gateway)
        check_id("detection kind", self.kind)
        check_id("detection label", self.label)
        check_id("model", self.model)
        what = f"{self.kind} detection"
        check_time(what, self.time_ms)
        check_time(what, self.window_start_ms)
        check_time(what, self.window_end_ms)
        if self.window_end_ms < self.window_start_ms:
            raise ContractError(f"{what}: window ends before it starts")
        if not isinstance(self.score, (int, float)) or not math.isfinite(self.score):
            raise ContractError(f"{what}: score must be a finite number, got {self.score!r}")
        Severity(self.severity)
        _check_explanation(what, self.explanation)
        return self


@dataclass(slots=True, frozen=True)
class Alert:
    """A change of a detector's persistent state, for people: raised, then cleared."""

    time_ms: int
    site: str
    gateway: str
    kind: str
    alert_id: str  # the same id for the raise and its clear
    state: AlertState
    label: str
    severity: Severity
    score: float
    message: str
    model: str
    model_version: str
    since_ms: int  # when the condition began (first window that counted)
    explanation: dict[str, float | str | list[str]] = field(default_factory=dict)

    def validate(self) -> Alert:
        check_id("site", self.site)
        check_id("gateway", self.gateway)
        check_id("alert kind", self.kind)
        check_id("alert id", self.alert_id)
        check_id("alert label", self.label)
        check_id("model", self.model)
        what = f"{self.kind} alert {self.alert_id}"
        check_time(what, self.time_ms)
        check_time(what, self.since_ms)
        AlertState(self.state)
        Severity(self.severity)
        if not isinstance(self.score, (int, float)) or not math.isfinite(self.score):
            raise ContractError(f"{what}: score must be a finite number, got {self.score!r}")
        if not isinstance(self.message, str) or len(self.message) > 500:
            raise ContractError(f"{what}: message must be text of at most 500 characters")
        _check_explanation(what, self.explanation)
        return self


def _check_explanation(what: str, explanation: object) -> None:
    if not isinstance(explanation, dict):
        raise ContractError(f"{what}: explanation must be a mapping")
    for key, value in explanation.items():
        check_id(f"{what}: explanation key", key)
        if isinstance(value, bool):
            raise ContractError(f"{what}: explanation {key} must be a number, text or list of text")
        if isinstance(value, (int, float)):
            if not math.isfinite(value):
                raise ContractError(f"{what}: explanation {key} is not finite")
        elif isinstance(value, list):
            if not all(isinstance(v, str) for v in value):
                raise ContractError(f"{what}: explanation {key} must be a list of text")
        elif not isinstance(value, str):
            raise ContractError(f"{what}: explanation {key} must be a number, text or list of text")
