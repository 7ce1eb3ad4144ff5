"""Zone leak features: the device's step-by-step rows equal training's whole-day rows; gaps never score."""

from __future__ import annotations

import numpy as np
import pytest

from edge.features.leak_features import DAY_MS, LeakFeatureLayout, LeakFeatureState, zone_channels
from training.water.scenarios import LeakEvent, Scenario, ScenarioConfig, generate, plan_zone

DAY = 86_400


@pytest.fixture(scope="module")
def net1_set():
    plan = plan_zone("Net1", ScenarioConfig(days=8, step_s=1800, warmup_days=4.0))
    leak = LeakEvent(node="12", diameter_m=0.05, start_s=6 * DAY + 7200, end_s=None)
    return generate(plan, 2, 0, workers=1, progress=False, scenarios=[Scenario(11, leak), Scenario(11, None)])


def _layout(s):
    return LeakFeatureLayout(step_s=s.step_s, n_flow=2, n_pressure=5)


def _whole_days(layout, s, i, accepted):
    state, ch = LeakFeatureState(layout), zone_channels(layout, s.values[i])
    spd = layout.steps_per_day
    rows, valid = [], []
    for d in range(s.n_steps // spd):
        state.start_day(int(s.time_ms[0]) + d * DAY_MS)
        X, ok = state.features(ch[d * spd : (d + 1) * spd])
        rows.append(X)
        valid.append(ok)
        state.end_day(ch[d * spd : (d + 1) * spd], accepted[d])
    return np.vstack(rows), np.concatenate(valid)


def test_step_by_step_rows_equal_whole_day_rows(net1_set):
    layout = _layout(net1_set)
    spd = layout.steps_per_day
    accepted = [True] * 6 + [False] * 2
    X_day, ok_day = _whole_days(layout, net1_set, 0, accepted)
    state, ch = LeakFeatureState(layout), zone_channels(layout, net1_set.values[0])
    for d in range(net1_set.n_steps // spd):
        state.start_day(int(net1_set.time_ms[0]) + d * DAY_MS)
        today = np.full((spd, layout.n_channels), np.nan)
        for k in range(spd):
            today[k] = ch[d * spd + k]
            x, ok = state.features(today[: k + 1], last_only=True)
            assert ok[0] == ok_day[d * spd + k]
            np.testing.assert_array_equal(x[0], X_day[d * spd + k])
        state.end_day(today, accepted[d])
    assert ok_day.sum() > 2 * spd  # the comparison covered real, valid rows


def test_a_leak_moves_the_flow_balance_and_no_leak_stays_near_zero(net1_set):
    layout = _layout(net1_set)
    names = layout.feature_names
    leak_rows = slice(7 * layout.steps_per_day, 8 * layout.steps_per_day)
    X_leak, ok_leak = _whole_days(layout, net1_set, 0, [True] * 6 + [False] * 2)
    X_free, ok_free = _whole_days(layout, net1_set, 1, [True] * 8)
    rel24 = names.index("inflow_rel_24h")
    assert ok_leak[leak_rows].all() and ok_free[leak_rows].all()
    assert np.abs(X_free[leak_rows, rel24]).max() < 0.08
    assert X_leak[leak_rows, rel24].min() > X_free[leak_rows, rel24].max()


def test_a_missing_sensor_makes_the_step_invalid_never_a_value(net1_set):
    layout = _layout(net1_set)
    values = net1_set.values[1].copy()
    values[6 * 48 + 10, 3] = np.nan  # one pressure, one step on day 6
    values[7 * 48 :, 0] = np.nan  # a flow meter dead for the whole last day
    state, ch = LeakFeatureState(layout), zone_channels(layout, values)
    oks = []
    for d in range(8):
        state.start_day(int(net1_set.time_ms[0]) + d * DAY_MS)
        X, ok = state.features(ch[d * 48 : (d + 1) * 48])
        assert np.isfinite(X).all() and np.all(X[~ok] == 0)
        oks.append(ok)
        state.end_day(ch[d * 48 : (d + 1) * 48], True)
    assert oks[6][9] and not oks[6][10] and oks[6][11]
    assert not oks[7].any()
    assert state.days_[-1].accepted is False  # a day without its meter never enters the baseline


def test_layout_refuses_a_step_that_does_not_divide_an_hour():
    with pytest.raises(ValueError, match="must divide one hour"):
        LeakFeatureLayout(step_s=960, n_flow=1, n_pressure=0)
    with pytest.raises(ValueError, match=r"need values of shape \(steps, 3\)"):
        zone_channels(LeakFeatureLayout(step_s=900, n_flow=1, n_pressure=2), np.zeros((4, 2)))
