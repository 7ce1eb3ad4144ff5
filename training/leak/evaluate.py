"""LeakDB-style evaluation of leak detectors on held-out scenario sets, against Minimum Night Flow.

Scores are pooled over every time step of every scenario of a group (LeakDB,
Vrachimis et al. 2018): a step is positive when the detector's alarm is on, true
when a leak is open. TPR, TNR, F1 = 2TP / (2TP + FP + FN); per leak, the
early-detection score 2 / (1 + exp(alpha * x / tau)) with x the delay from the leak
start to the first alarm inside the window [start, end + 5 h] and tau that window's
length (alpha = 5; 0 when never detected); false alarms per zone per 30 days on
leak-free scenarios (alarm raises).

The learned detector is replayed day by day with exactly the device's logic
(``LeakFeatureState`` + ``AlarmPersistence``: a day enters the baseline only if no
alarm was on in it), scoring each day's rows in one batch. MNF follows LeakDB's rule
(a night flagged when its MNF exceeds by lambda the lowest MNF of the previous 10
unflagged nights), using ``edge.features.night_flow``; its alarm holds from the end
of a night to the end of the next.

>>> flags = np.array([[0, 0, 1, 1, 1, 1, 0, 0]], bool)
>>> alarm = np.array([[0, 0, 0, 1, 1, 1, 1, 0]], bool)
>>> m = pooled_scores(alarm, flags)
>>> m["tp"], m["fp"], m["fn"], round(m["f1"], 3)
(3, 1, 1, 0.75)
>>> round(early_detection_score(delay_s=3600, window_s=10 * 3600), 3)
0.755
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from edge.detectors.leak_settings import AlarmPersistence, LeakDetectorSettings
from edge.features.leak_features import DAY_MS, LeakFeatureState, zone_channels
from edge.features.night_flow import minimum_night_flow, night_window
from training.water.scenario_set import ScenarioSet

ALPHA = 5.0
AFTER_END_S = 5 * 3600
MNF_LAMBDAS = (0.10, 0.20, 0.30)
MNF_HISTORY_NIGHTS = 10
MNF_MIN_HISTORY = 2


@dataclass
class Trace:
    """A detector's output on one scenario set: alarm state, score and validity per step."""

    alarm: np.ndarray  # bool [N, T]
    score: np.ndarray  # float [N, T], NaN where the row was not valid
    valid: np.ndarray  # bool [N, T]


def sensor_values(scenario_set: ScenarioSet, sensors: list[tuple[str, str]]) -> np.ndarray:
    """The set's values for ``sensors`` only, in that order [N, T, S]."""
    index = [scenario_set.sensors.index(tuple(s)) for s in sensors]
    return scenario_set.values[:, :, index]


def replay_learned(
    settings: LeakDetectorSettings, score_fn, scenario_set: ScenarioSet, values: np.ndarray | None = None
) -> Trace:
    """Run the device detector logic over every scenario, one day per batch of scores."""
    lay = settings.layout
    spd = lay.steps_per_day
    values = scenario_set.values if values is None else values
    n, t = values.shape[:2]
    if t % spd or int(scenario_set.time_ms[0]) % DAY_MS:
        raise ValueError("scenario sets must hold whole UTC days")
    alarm, score, valid = np.zeros((n, t), bool), np.full((n, t), np.nan), np.zeros((n, t), bool)
    for i in range(n):
        state, persistence = LeakFeatureState(lay), settings.persistence()
        channels = zone_channels(lay, values[i])
        for d in range(t // spd):
            rows = slice(d * spd, (d + 1) * spd)
            state.start_day(int(scenario_set.time_ms[0]) + d * DAY_MS)
            X, ok = state.features(channels[rows])
            s = np.full(spd, np.nan)
            if ok.any():
                s[ok] = score_fn(X[ok])
            alarm_in_day = persistence.active
            for k in range(spd):
                if ok[k]:
                    persistence.update(float(s[k]), k)
                alarm[i, d * spd + k] = persistence.active
                alarm_in_day |= persistence.active
            state.end_day(channels[rows], not alarm_in_day or not state.ready_)
            score[i, rows], valid[i, rows] = s, ok
    return Trace(alarm, score, valid)


def alarm_states(persistence: AlarmPersistence, score: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Alarm state per step of one scenario for given scores (invalid steps neither raise nor clear)."""
    alarm = np.zeros(score.shape[0], bool)
    for k in range(score.shape[0]):
        if valid[k]:
            persistence.update(float(score[k]), k)
        alarm[k] = persistence.active
    return alarm


def replay_mnf(scenario_set: ScenarioSet, threshold: float) -> Trace:
    """LeakDB's MNF rule on the zone inflow (sum of the flow meters)."""
    flows = [i for i, q in enumerate(scenario_set.quantities) if q == "flow"]
    t_ms = scenario_set.time_ms
    n, t = scenario_set.leak_flag.shape
    alarm, score, valid = np.zeros((n, t), bool), np.full((n, t), np.nan), np.zeros((n, t), bool)
    for i in range(n):
        inflow = scenario_set.values[i][:, flows].astype(np.float64).sum(axis=1)
        dates, mnf = minimum_night_flow(t_ms, inflow)
        history: deque[float] = deque(maxlen=MNF_HISTORY_NIGHTS)
        for night, value in zip(dates, mnf, strict=True):
            _, end = night_window(night)
            after = t_ms >= end
            if math.isnan(value):
                continue
            if len(history) < MNF_MIN_HISTORY:
                history.append(value)
                continue
            base = min(history)
            excess = value / base - 1 if base > 0 else 0.0
            flagged = base > 0 and excess > threshold
            if not flagged:
                history.append(value)
            alarm[i, after] = flagged
            score[i, after] = excess
            valid[i, after] = True
    return Trace(alarm, score, valid)


def pooled_scores(alarm: np.ndarray, flags: np.ndarray) -> dict:
    """TP/FP/TN/FN over all steps, TPR, TNR, F1."""
    a, f = np.asarray(alarm, bool), np.asarray(flags, bool)
    tp, fp = int((a & f).sum()), int((a & ~f).sum())
    fn, tn = int((~a & f).sum()), int((~a & ~f).sum())
    return {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "tpr": tp / (tp + fn) if tp + fn else math.nan,
        "tnr": tn / (tn + fp) if tn + fp else math.nan,
        "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else math.nan,
    }


def early_detection_score(delay_s: float | None, window_s: float, alpha: float = ALPHA) -> float:
    """LeakDB's sigma(x) = 2 / (1 + exp(alpha x / tau)); a leak never detected scores 0."""
    if delay_s is None:
        return 0.0
    return 2.0 / (1.0 + math.exp(alpha * delay_s / window_s))


def leak_delays(alarm: np.ndarray, scenario_set: ScenarioSet) -> list[dict]:
    """Per leak: size, kind, mean flow, detection delay (s, None if missed) and early-detection score."""
    step_s = scenario_set.step_s
    t0 = int(scenario_set.time_ms[0])
    n_steps = scenario_set.n_steps
    out = []
    for i, described in enumerate(scenario_set.scenarios):
        leak = described.get("leak")
        if not leak:
            continue
        start = (leak["start_ms"] - t0) // (step_s * 1000)
        end_ms = leak["end_ms"] if leak["end_ms"] is not None else t0 + n_steps * step_s * 1000
        stop = min(n_steps, (end_ms - t0 + AFTER_END_S * 1000) // (step_s * 1000))
        hits = np.flatnonzero(alarm[i, start:stop])
        delay = None if hits.size == 0 else float(hits[0] * step_s)
        window = (stop - start) * step_s
        out.append(
            {
                "scenario": i,
                "diameter_m": leak["diameter_m"],
                "kind": leak["kind"],
                "mean_flow_lps": leak["mean_flow_lps"],
                "delay_s": delay,
                "early_score": early_detection_score(delay, window),
            }
        )
    return out


def false_alarms(alarm: np.ndarray, flags: np.ndarray, step_s: int) -> dict:
    """Alarm raises outside leaks, per zone per 30 days of leak-free time."""
    a = np.asarray(alarm, bool)
    rises = a & ~np.pad(a, ((0, 0), (1, 0)))[:, :-1]
    count = int((rises & ~flags).sum())
    days = float((~flags).sum()) * step_s / 86_400
    return {
        "false_alarms": count,
        "leak_free_days": round(days, 1),
        "false_alarms_per_30_days": count / days * 30 if days else math.nan,
    }


def score_group(trace: Trace, scenario_set: ScenarioSet, rows: np.ndarray) -> dict:
    """Every LeakDB figure for the scenarios ``rows`` of a set."""
    rows = np.asarray(rows)
    alarm, flags = trace.alarm[rows], scenario_set.leak_flag[rows]
    metrics = pooled_scores(alarm, flags)
    delays = [d for d in leak_delays(trace.alarm, scenario_set) if d["scenario"] in set(rows.tolist())]
    metrics["leaks"] = len(delays)
    metrics["early_detection"] = float(np.mean([d["early_score"] for d in delays])) if delays else math.nan
    detected = [d["delay_s"] for d in delays if d["delay_s"] is not None]
    metrics["detected_share"] = len(detected) / len(delays) if delays else math.nan
    metrics["median_delay_h"] = float(np.median(detected)) / 3600 if detected else math.nan
    metrics.update(false_alarms(alarm, flags, scenario_set.step_s))
    metrics["scenarios"] = int(len(rows))
    metrics["insufficient_data_share"] = float(1 - trace.valid[rows].mean())
    return metrics


def groups(scenario_set: ScenarioSet, min_diameter_m: float = 0.05) -> dict[str, np.ndarray]:
    """Scenario indices: leaks >= min_diameter_m (the targets), 5-10 cm, under 5 cm, all leaks, leak-free."""
    diam = np.array([(s.get("leak") or {}).get("diameter_m", 0.0) for s in scenario_set.scenarios])
    has = np.array([s.get("leak") is not None for s in scenario_set.scenarios])
    return {
        f"leaks_ge_{round(min_diameter_m * 100)}cm": np.flatnonzero(has & (diam >= min_diameter_m)),
        "leaks_5_to_10cm": np.flatnonzero(has & (diam >= 0.05) & (diam < 0.10)),
        "leaks_under_5cm": np.flatnonzero(has & (diam < 0.05)),
        "all_leaks": np.flatnonzero(has),
        "leak_free": np.flatnonzero(~has),
    }


def evaluate_set(traces: dict[str, Trace], scenario_set: ScenarioSet) -> dict:
    """{detector: {group: metrics}} for one set."""
    parts = groups(scenario_set)
    return {
        name: {g: score_group(trace, scenario_set, rows) for g, rows in parts.items() if len(rows)}
        for name, trace in traces.items()
    }


def mnf_traces(scenario_set: ScenarioSet) -> dict[str, Trace]:
    """MNF replayed at every lambda of ``MNF_LAMBDAS``, named ``mnf_<percent>``."""
    return {f"mnf_{round(lam * 100)}": replay_mnf(scenario_set, lam) for lam in MNF_LAMBDAS}
