"""Detector state as plain JSON data and back: what ``state()`` writes and ``restore()`` checks.

A checkpoint must survive ``json.dumps(..., allow_nan=False)``: JSON has no NaN, so a
float that may be missing is written ``null`` (``number`` / ``numbers``) and read back
as NaN (``real``, ``array``); an infinity is written as the string ``"inf"`` or
``"-inf"``. Small numpy arrays become nested lists; a large one (a day of a zone's
channels) is ``packed``: its float64 bytes, little-endian, in base64, with its shape, so
a save holds one string instead of a Python float per value (a learned leak
detector's 28 baseline days: 6.6 MB of lists against about 2 MB packed). Reading back checks every type and shape
and raises ValueError naming the field, so a corrupt checkpoint is refused with a reason
instead of half-restoring a detector.

>>> numbers(np.array([[1.5, np.nan], [np.inf, 2.0]]))
[[1.5, None], ['inf', 2.0]]
>>> array([[1.5, None], ["inf", 2.0]], (2, 2), "today").tolist()
[[1.5, nan], [inf, 2.0]]
>>> p = packed(np.array([[1.5, np.nan], [np.inf, 2.0]]))
>>> p["shape"], array(p, (2, 2), "today").tolist()
([2, 2], [[1.5, nan], [inf, 2.0]])
>>> array([1.0, 2.0], (3,), "sums")
Traceback (most recent call last):
...
ValueError: sums has shape (2,), expected (3,)
>>> integer("12", "bin")
Traceback (most recent call last):
...
ValueError: bin must be a whole number, got '12'
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")
_INF = {"inf": math.inf, "-inf": -math.inf}


# ---- writing ------------------------------------------------------------------------------------------


def number(value: float | None) -> float | str | None:
    """One float as JSON: None for NaN (and for None), "inf" / "-inf" for infinities."""
    if value is None or math.isnan(value):
        return None
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return float(value)


def numbers(values: Any) -> list:
    """A float array (any shape) as nested lists of ``number``."""
    a = np.asarray(values, dtype=np.float64)
    if np.isfinite(a).all():
        return a.tolist()
    out = a.astype(object)
    out[np.isnan(a)] = None
    out[np.isposinf(a)] = "inf"
    out[np.isneginf(a)] = "-inf"
    return out.tolist()


def packed(values: Any) -> dict:
    """A float array as ``{"float64_le": base64 of its bytes, "shape": [...]}``: NaN and infinities kept as they are."""
    a = np.ascontiguousarray(values, dtype="<f8")
    return {"float64_le": base64.b64encode(a.tobytes()).decode("ascii"), "shape": list(a.shape)}


def alert_pair(alert: tuple[str, int] | None) -> list | None:
    """An open alert (alert_id, since_ms) as a list, None when no alert is open."""
    return None if alert is None else [alert[0], int(alert[1])]


# ---- reading ------------------------------------------------------------------------------------------


def field(state: Any, key: str, owner: str) -> Any:
    """``state[key]``; ValueError if ``state`` is no dict or has no ``key``."""
    if not isinstance(state, dict):
        raise ValueError(f"{owner}: the saved state must be a JSON object, got {type(state).__name__}")
    if key not in state:
        raise ValueError(f"{owner}: the saved state has no {key!r}")
    return state[key]


def integer(value: Any, what: str) -> int:
    """A whole number (a bool is not one)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} must be a whole number, got {value!r}")
    return value


def real(value: Any, what: str) -> float:
    """A float written by ``number``: None is NaN, "inf" / "-inf" are infinities."""
    if value is None:
        return math.nan
    if isinstance(value, str) and value in _INF:
        return _INF[value]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{what} must be a number, got {value!r}")
    return float(value)


def text(value: Any, what: str) -> str:
    """A string."""
    if not isinstance(value, str):
        raise ValueError(f"{what} must be text, got {value!r}")
    return value


def flag(value: Any, what: str) -> bool:
    """true or false."""
    if not isinstance(value, bool):
        raise ValueError(f"{what} must be true or false, got {value!r}")
    return value


def listing(value: Any, what: str, length: int | None = None) -> list:
    """A JSON list; with ``length``, of exactly that many items."""
    if not isinstance(value, list):
        raise ValueError(f"{what} must be a list, got {type(value).__name__}")
    if length is not None and len(value) != length:
        raise ValueError(f"{what} must have {length} items, got {len(value)}")
    return value


def mapping(value: Any, what: str, keys: set[str] | None = None) -> dict:
    """A JSON object; with ``keys``, exactly those keys (the detector's sensors, say)."""
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be a JSON object, got {type(value).__name__}")
    if keys is not None and set(value) != keys:
        raise ValueError(f"{what} covers {sorted(value)}, but this detector has {sorted(keys)}")
    return value


def optional(value: Any, read: Callable[[Any, str], T], what: str) -> T | None:
    """None, or ``read(value, what)``."""
    return None if value is None else read(value, what)


def alert(value: Any, what: str) -> tuple[str, int] | None:
    """An open alert written by ``alert_pair``."""
    if value is None:
        return None
    alert_id, since = listing(value, what, 2)
    return text(alert_id, f"{what} id"), integer(since, f"{what} since")


def array(value: Any, shape: tuple[int, ...], what: str) -> np.ndarray:
    """A float array written by ``numbers`` or ``packed``, of exactly ``shape``."""
    if isinstance(value, dict):
        return _unpacked(value, shape, what)
    try:
        a = np.array(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a list of numbers (null for missing)") from None
    if a.shape != shape:
        raise ValueError(f"{what} has shape {a.shape}, expected {shape}")
    return a


def _unpacked(value: dict, shape: tuple[int, ...], what: str) -> np.ndarray:
    data, saved = value.get("float64_le"), value.get("shape")
    if not isinstance(data, str) or not isinstance(saved, list):
        raise ValueError(f"{what} must be a list of numbers or a packed array (float64_le, shape)")
    if tuple(saved) != shape:
        raise ValueError(f"{what} has shape {tuple(saved)}, expected {shape}")
    try:
        raw = base64.b64decode(data, validate=True)
    except ValueError:
        raise ValueError(f"{what}: its packed bytes are not base64") from None
    if len(raw) != 8 * math.prod(shape):
        raise ValueError(f"{what}: {len(raw)} packed bytes, {8 * math.prod(shape)} expected for shape {shape}")
    return np.frombuffer(raw, dtype="<f8").astype(np.float64).reshape(shape)


__all__ = [
    "alert",
    "alert_pair",
    "array",
    "field",
    "flag",
    "integer",
    "listing",
    "mapping",
    "number",
    "numbers",
    "optional",
    "packed",
    "real",
    "text",
]
