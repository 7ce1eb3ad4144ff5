"""Feature terms of a sensor calibration, computed from raw readings: one code path for training and the gateway.

A calibration model does not see the raw readings themselves but *terms* computed
from them (a log of a resistance, a humidity growth factor, products of those). The
recipe travels in the model's manifest as a ``calibration`` section::

    {"inputs": ["sps30_pm25", "sht45_rh"],          # raw readings, in this order
     "terms": [{"name": "pm", "kind": "value", "of": [0]},
               {"name": "growth", "kind": "humidity_growth", "of": [1]},
               {"name": "pm*growth", "kind": "product", "of": [0, 1]}],
     "target": "ref_pm25", "unit": "ug/m3"}

Kinds of term (``of`` lists input indexes, or for ``product`` earlier term indexes):

* ``value``: the reading as it is;
* ``log``: natural log of a reading that is a resistance or a voltage (floored at
  :data:`LOG_FLOOR`, so a zero reading stays finite);
* ``humidity_growth``: the kappa-Koehler water uptake ``aw / (1 - aw)`` with water
  activity ``aw = RH / 100`` capped at :data:`MAX_WATER_ACTIVITY` (a PM sensor reads
  ``dry * (1 + kappa * aw / (1 - aw))``, so ``PM * growth`` is the humid excess);
* ``product``: the product of earlier terms (interactions).

Numpy only (1.24 is enough): the gateway and the trainer run this same function.

>>> spec = {"inputs": ["pm", "rh"], "terms": [
...     {"name": "pm", "kind": "value", "of": [0]},
...     {"name": "g", "kind": "humidity_growth", "of": [1]},
...     {"name": "pm*g", "kind": "product", "of": [0, 1]}]}
>>> compute_terms(np.array([[10.0, 50.0], [4.0, 80.0]]), spec).round(3).tolist()
[[10.0, 1.0, 10.0], [4.0, 4.0, 16.0]]
>>> compute_terms(np.array([[1.0, 99.0]]), spec).round(1).tolist()  # capped at aw 0.95
[[1.0, 19.0, 19.0]]
>>> round(float(compute_terms(np.array([[np.e**2]]), {"inputs": ["r"],
...     "terms": [{"name": "log r", "kind": "log", "of": [0]}]})[0, 0]), 6)
2.0
>>> check_spec({"inputs": ["pm"], "terms": [{"name": "x", "kind": "square", "of": [0]}]})
Traceback (most recent call last):
...
ValueError: calibration term 'x': unknown kind 'square' (known: value, log, humidity_growth, product)
"""

from __future__ import annotations

import numpy as np

LOG_FLOOR = 1e-6
MAX_WATER_ACTIVITY = 0.95
KINDS = ("value", "log", "humidity_growth", "product")


def humidity_growth(rh) -> np.ndarray:
    """kappa-Koehler water uptake ``aw / (1 - aw)`` for relative humidity in %, aw capped at 0.95.

    >>> humidity_growth(np.array([0.0, 50.0, 75.0])).tolist()
    [0.0, 1.0, 3.0]
    """
    aw = np.clip(np.asarray(rh, dtype=np.float64) / 100.0, 0.0, MAX_WATER_ACTIVITY)
    return aw / (1.0 - aw)


def check_spec(spec: dict) -> None:
    """Raise ValueError, naming the term, when a calibration section cannot be computed."""
    inputs = spec.get("inputs")
    terms = spec.get("terms")
    if not isinstance(inputs, list) or not inputs or not all(isinstance(i, str) for i in inputs):
        raise ValueError("calibration 'inputs' must be a non-empty list of reading names")
    if not isinstance(terms, list) or not terms:
        raise ValueError("calibration 'terms' must be a non-empty list")
    for n, term in enumerate(terms):
        name = term.get("name", f"#{n}") if isinstance(term, dict) else f"#{n}"
        if not isinstance(term, dict) or not isinstance(term.get("name"), str):
            raise ValueError(f"calibration term {name!r}: needs a 'name', a 'kind' and 'of'")
        kind, of = term.get("kind"), term.get("of")
        if kind not in KINDS:
            raise ValueError(f"calibration term {name!r}: unknown kind {kind!r} (known: {', '.join(KINDS)})")
        if not isinstance(of, list) or not of or not all(isinstance(i, int) for i in of):
            raise ValueError(f"calibration term {name!r}: 'of' must list indexes")
        limit, what = (n, "earlier terms") if kind == "product" else (len(inputs), "inputs")
        if any(i < 0 or i >= limit for i in of):
            raise ValueError(f"calibration term {name!r}: 'of' {of} must index the {limit} {what}")
        if kind != "product" and len(of) != 1:
            raise ValueError(f"calibration term {name!r}: a {kind} term takes one input")


def compute_terms(raw, spec: dict) -> np.ndarray:
    """(n, len(terms)) float64 terms from (n, len(inputs)) raw readings; NaN in, NaN out."""
    check_spec(spec)
    x = np.asarray(raw, dtype=np.float64)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[1] != len(spec["inputs"]):
        raise ValueError(
            f"expected rows of {len(spec['inputs'])} readings ({', '.join(spec['inputs'])}), got {x.shape}"
        )
    out = np.empty((x.shape[0], len(spec["terms"])), dtype=np.float64)
    for j, term in enumerate(spec["terms"]):
        kind, of = term["kind"], term["of"]
        if kind == "value":
            out[:, j] = x[:, of[0]]
        elif kind == "log":
            col = x[:, of[0]]
            out[:, j] = np.where(np.isnan(col), np.nan, np.log(np.maximum(col, LOG_FLOOR)))
        elif kind == "humidity_growth":
            out[:, j] = humidity_growth(x[:, of[0]])
        else:
            out[:, j] = np.prod(out[:, of], axis=1)
    return out


__all__ = ["KINDS", "LOG_FLOOR", "MAX_WATER_ACTIVITY", "check_spec", "compute_terms", "humidity_growth"]
