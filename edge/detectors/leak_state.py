"""A learned leak detector's model of normal as JSON: the zone's recent days and the last 24 h of residuals.

``LeakFeatureState`` (edge/features/leak_features.py) keeps the days that make the
zone's expected patterns and the residual tail the rolling windows read. Saved, they
are packed float64 arrays (``state_json.packed``); restored, today's expected patterns are computed again
from the same days, exactly as ``start_day`` computed them before the restart.

>>> import numpy as np
>>> from edge.features.leak_features import LeakFeatureLayout
>>> lay = LeakFeatureLayout(step_s=3600, n_flow=1, n_pressure=0, min_baseline_days=1)
>>> fs = LeakFeatureState(lay)
>>> fs.start_day(0); fs.end_day(np.full((24, 1), 10.0), accepted=True); fs.start_day(86_400_000)
>>> back = restore_features(lay, features_state(fs), "demo")
>>> back.baseline_days, back.ready_, float(back.expected_[0, 0])
(1, True, 10.0)
"""

from __future__ import annotations

from edge.detectors import state_json as sj
from edge.features.leak_features import LeakFeatureLayout, LeakFeatureState, _Day


def features_state(fs: LeakFeatureState) -> dict:
    """The days kept (channels, weekday, accepted, night flow), the residual tail and the day being fed."""
    return {
        "days": [
            {"channels": sj.packed(d.channels), "weekday": d.weekday, "accepted": d.accepted, "mnf": sj.number(d.mnf)}
            for d in fs.days_
        ],
        "tail": sj.packed(fs.tail_),
        "day_start_ms": fs.day_start_ms_,
    }


def restore_features(lay: LeakFeatureLayout, saved: dict, owner: str) -> LeakFeatureState:
    """A new LeakFeatureState from ``features_state``; ValueError if malformed or of another layout."""
    fs = LeakFeatureState(lay)
    days = sj.listing(sj.field(saved, "days", owner), "features days")
    if len(days) > lay.history_days:
        raise ValueError(f"{owner}: {len(days)} days saved, the model keeps {lay.history_days}")
    for d in days:
        fs.days_.append(
            _Day(
                sj.array(sj.field(d, "channels", owner), (lay.steps_per_day, lay.n_channels), "a baseline day"),
                sj.integer(sj.field(d, "weekday", owner), "weekday"),
                sj.flag(sj.field(d, "accepted", owner), "accepted"),
                sj.real(sj.field(d, "mnf", owner), "a day's night flow"),
            )
        )
    fs.tail_ = sj.array(sj.field(saved, "tail", owner), fs.tail_.shape, "features tail")
    day_start = sj.optional(sj.field(saved, "day_start_ms", owner), sj.integer, "day_start_ms")
    if day_start is not None:
        fs.start_day(day_start)  # today's expected patterns, from the days above as they were
    return fs


__all__ = ["features_state", "restore_features"]
