"""Value checks of config keys (names, numbers, times, hosts, paths) and the plain-words errors they raise."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from pydantic import BeforeValidator
from pydantic_core import PydanticCustomError

from edge.contracts import QUANTITY_UNITS, ContractError, check_id

# validate.py runs the cross-section checks itself (to report them all, each at its
# own line); code calling model_validate directly gets the first one as an error.
CONTEXT_CROSS_CHECKS = "cross_checks"
CONTEXT_PATH = "path"


def suggest(word: object, choices: Iterable[str]) -> str | None:
    """The closest known name to a misspelt one, ignoring case.

    >>> suggest("presure", QUANTITY_UNITS), suggest("xyz", ["mqtt"])
    ('pressure', None)
    """
    if not isinstance(word, str):
        return None
    lowered = {c.lower(): c for c in choices}
    match = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.6)
    return lowered[match[0]] if match else None


def describe(value: object) -> str:
    """A value as a technician typed it, for 'got ...' in messages."""
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a section of keys"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return repr(value)
    return str(value)


def format_path(loc: Iterable[str | int]) -> str:
    """``('sensors', 0, 'id')`` -> ``'sensors[0].id'``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def fail(message: str, suggestion: str | None = None) -> PydanticCustomError:
    """The error a check raises: ``message`` shown as is, with an optional "did you mean" ``suggestion``."""
    # The message goes through the context so braces in a typed value stay literal.
    return PydanticCustomError("config", "{message}", {"message": message, "suggestion": suggestion})


# ---- value types ---------------------------------------------------------------------


def _text(value: object) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        raise fail(f'must be text, got the number {value}: write it in quotes, "{value}"')
    if not isinstance(value, str) or not value.strip():
        raise fail(f"must be text, got {describe(value)}")
    return value


def _identifier(value: object) -> str:
    text = _text(value)
    try:
        return check_id("value", text)
    except ContractError:
        raise fail(
            f"must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit, got {text!r}"
        ) from None


def _one_of(choices: Iterable[str]) -> Callable[[object], str]:
    names = list(choices)

    def check(value: object) -> str:
        if value not in names:
            raise fail(f"must be one of {', '.join(names)}; got {describe(value)}", suggest(value, names))
        return value  # type: ignore[return-value]

    return check


def whole(low: int, high: int) -> Any:
    """A whole number in ``low..high``; true/false and 1.5 are refused, not converted."""

    def check(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise fail(f"must be a whole number between {low} and {high}, got {describe(value)}")
        return value

    return Annotated[int, BeforeValidator(check)]


def number(low: float, high: float | None = None, low_open: bool = False) -> Any:
    """A number ``> low`` (``low_open``) or ``>= low``, and ``<= high`` if given."""
    bound = f"greater than {low}" if low_open else f"at least {low}"
    if high is not None:
        bound += f" and at most {high}"

    def check(value: object) -> float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok:
            ok = (value > low if low_open else value >= low) and (high is None or value <= high)
        if not ok:
            raise fail(f"must be a number {bound}, got {describe(value)}")
        return float(value)  # type: ignore[arg-type]

    return Annotated[float, BeforeValidator(check)]


MAX_SILENT_MIN = 7 * 24 * 60  # a week: a sensor read less often than that is not watched for silence


def _silent_minutes(value: object) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not (value == 0 or 1 <= value <= MAX_SILENT_MIN):  # type: ignore[operator]  # ok: a number
        raise fail(f"must be 0 (never) or a number of minutes from 1 to {MAX_SILENT_MIN}, got {describe(value)}")
    return float(value)  # type: ignore[arg-type]  # ok: a number


#: Minutes without a reading before a sensor is said silent (``sensor_silent`` alert); 0: never.
SilentMinutes = Annotated[float, BeforeValidator(_silent_minutes)]


_CLOCK = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$")


def _clock_time(value: object) -> str:
    if not isinstance(value, str) or not _CLOCK.match(value):
        raise fail(f'must be a time of day HH:MM (24-hour), like "02:00", got {describe(value)}')
    return value


def _timezone(value: object) -> str:
    name = _text(value)
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise fail(
            f"unknown time zone {name!r}: use an IANA name like 'Europe/Paris' or 'UTC'",
            suggest(name, available_timezones() | {"UTC"}),
        ) from None
    return name


def _topic_prefix(value: object) -> str:
    text = _text(value)
    if re.search(r"[+#\s\x00]", text) or text.startswith(("/", "$")) or text.endswith("/") or "//" in text:
        raise fail(
            "must be MQTT topic levels separated by '/', without '+', '#', spaces, "
            f"empty levels, or a leading '/' or '$', got {text!r}"
        )
    return text


def _host(value: object) -> str:
    text = _text(value)
    if "://" in text or "/" in text or re.search(r"\s", text):
        raise fail(f"must be a host name or IP address only (no 'mqtt://', path or spaces), got {text!r}")
    return text


def _env_var(value: object) -> str:
    text = _text(value)
    if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", text):
        raise fail(f"must be the name of an environment variable (letters, digits, '_'), got {text!r}")
    return text


def _client_id(value: object) -> str:
    text = _text(value)
    if len(text) > 128 or re.search(r"\s", text):
        raise fail(f"must be at most 128 characters without spaces, got {text!r}")
    return text


Text = Annotated[str, BeforeValidator(_text)]
Identifier = Annotated[str, BeforeValidator(_identifier)]
Quantity = Annotated[str, BeforeValidator(_one_of(QUANTITY_UNITS))]
ClockTime = Annotated[str, BeforeValidator(_clock_time)]
TimeZoneName = Annotated[str, BeforeValidator(_timezone)]
FilePath = Annotated[Path, BeforeValidator(_text)]


def _flag(value: object) -> bool:
    if not isinstance(value, bool):
        raise fail(f"must be true or false, got {describe(value)}")
    return value
