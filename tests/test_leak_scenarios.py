"""Leak scenario generator: EPANET emitter leaks, labels, seeds, sensors, file format (tiny Net1 runs)."""

from __future__ import annotations

import math
import warnings
from dataclasses import replace

import numpy as np
import pytest

from edge.datasets import DatasetError
from training.water.demand_model import PopulationChange
from training.water.epanet_leaks import SimulationError, emitter_coefficient, load_network, prepare_inp
from training.water.scenario_set import ScenarioSet
from training.water.scenarios import LeakEvent, Scenario, ScenarioConfig, generate, plan_zone, sample_scenarios
from training.water.sensor_placement import boundary_links, flow_signs, place_pressure_sensors

DAY = 86_400
TINY = ScenarioConfig(days=4, step_s=900, warmup_days=1.0, duration_days=(1.0, 2.0), ramp_days=(0.5, 1.0))


@pytest.fixture(scope="module")
def net1():
    return plan_zone("Net1", TINY)


def test_boundary_meters_and_placed_pressure_sensors(net1):
    wn, _ = load_network("Net1")
    assert boundary_links(wn) == ["110", "9"]
    assert flow_signs(wn, [("110", 1), ("9", 1), ("9", -1)]) == [1, 1, -1]
    assert [f for f, _ in net1.flows] == ["110", "9"]
    assert len(net1.pressures) == 5 and len(set(net1.pressures)) == 5
    assert place_pressure_sensors(wn, list(net1.pressures), 2) == place_pressure_sensors(wn, list(net1.pressures), 2)
    with pytest.raises(ValueError, match="not in the network: 999"):
        flow_signs(wn, [("999", 1)])


def test_unknown_network_and_bad_sensor_are_clear_errors():
    with pytest.raises(SimulationError, match="unknown network 'Net99'"):
        load_network("Net99")
    with pytest.raises(ValueError, match="not junctions of the network: 9"):
        plan_zone("Net1", TINY, pressures=["9"])  # 9 is the reservoir


def test_labels_follow_the_leak_and_flow_is_positive_only_while_open(net1):
    abrupt = LeakEvent(node="12", diameter_m=0.08, start_s=DAY + 3600, end_s=3 * DAY)
    incipient = LeakEvent(node="22", diameter_m=0.08, start_s=DAY, end_s=None, ramp_s=DAY)
    s = generate(
        net1,
        3,
        0,
        workers=1,
        progress=False,
        scenarios=[Scenario(1, abrupt), Scenario(2, incipient), Scenario(3, None)],
    )
    step = 900
    flag = s.leak_flag
    assert flag[0].nonzero()[0][[0, -1]].tolist() == [(DAY + 3600) // step, 3 * DAY // step - 1]
    assert np.all(s.leak_flow_lps[0][flag[0]] > 10) and np.all(s.leak_flow_lps[0][~flag[0]] == 0)
    ramp = s.leak_flow_lps[1][DAY // step : 2 * DAY // step]
    # The hole grows linearly; the flow follows it (pump switches move the pressure a little).
    assert ramp[0] == 0 and ramp[-1] > 10 and np.corrcoef(np.arange(ramp.size), ramp)[0, 1] > 0.95
    assert not flag[2].any() and s.scenarios[2]["leak"] is None
    # The leak takes water from the zone: the metered inflow rises by about the leak flow.
    gain = s.values[0][flag[0]][:, :2].sum(axis=1).mean() - s.values[2][flag[0]][:, :2].sum(axis=1).mean()
    assert gain == pytest.approx(s.leak_flow_lps[0][flag[0]].mean(), rel=0.35)


def test_emitter_leak_matches_wntr_simulator_on_net1():
    import wntr
    from wntr.sim import WNTRSimulator

    from training.water.epanet_leaks import REQUIRED_PRESSURE_M, EpanetRun

    wn, _ = load_network("Net1")
    inp = prepare_inp(wn, 1, 900)
    area = math.pi * 0.05**2 / 4
    wn2, _ = load_network("Net1")
    wn2.options.time.duration = DAY - 900
    wn2.options.time.hydraulic_timestep = wn2.options.time.report_timestep = 900
    wn2.options.hydraulic.demand_model = "PDD"
    wn2.options.hydraulic.required_pressure = REQUIRED_PRESSURE_M
    wn2.get_node("12").add_leak(wn2, area=area, discharge_coeff=0.75, start_time=6 * 3600)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = WNTRSimulator(wn2).run_sim().node["leak_demand"]["12"].to_numpy() * 1000
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "n.inp").write_text(inp)
        with EpanetRun(Path(tmp) / "n.inp", 96, 900) as run:
            coeff = np.where(np.arange(96) >= 24, emitter_coefficient(0.05), 0.0)
            _, _, leak = run.run([], [], run.node_index("12"), coeff)
    on = reference > 0
    assert on.sum() >= 60 and np.array_equal(on, leak[: len(reference)] > 0)
    assert np.abs(leak[: len(reference)][on] / reference[on] - 1).max() < 1e-3
    assert wntr is not None


def test_same_seed_same_set_whatever_the_workers(net1):
    one = generate(net1, 3, 42, workers=1, progress=False)
    again = generate(net1, 3, 42, workers=1, progress=False)
    two = generate(net1, 3, 42, workers=2, progress=False)
    other = generate(net1, 3, 43, workers=1, progress=False)
    assert np.array_equal(one.values, again.values) and np.array_equal(one.values, two.values)
    assert one.scenarios == two.scenarios
    assert not np.array_equal(one.values, other.values)


def test_sampled_scenarios_respect_the_config(net1):
    cfg = replace(TINY, leak_share=1.0, diameter_m=(0.05, 0.06), incipient_share=0.0)
    plan = replace(net1, config=cfg)
    for sc in sample_scenarios(plan, 20, 3):
        assert sc.leak is not None and 0.05 <= sc.leak.diameter_m <= 0.06 and sc.leak.ramp_s == 0
        assert sc.leak.start_s >= DAY and sc.leak.start_s % 900 == 0 and sc.leak.node in plan.leak_nodes


def test_noise_resolution_and_presence_column(net1):
    change = PopulationChange(start_s=2 * DAY, end_s=3 * DAY, change=0.4)
    plan = replace(net1, config=replace(TINY, presence=True))
    s = generate(plan, 2, 0, workers=1, progress=False, scenarios=[Scenario(5, None, change), Scenario(5, None)])
    assert s.columns[-1] == "presence" and s.quantities[-1] == "cell_count"
    pressures = s.values[0][:, [q == "pressure" for q in s.quantities]]
    assert np.allclose(pressures * 10, np.round(pressures * 10), atol=1e-3)  # 0.1 m resolution
    during = slice(2 * 96, 3 * 96)
    inflow = s.values[:, during, :2].sum(axis=2).mean(axis=1)
    presence = s.values[:, during, -1].mean(axis=1)
    assert inflow[0] > 1.2 * inflow[1] and presence[0] > 1.3 * presence[1]


def test_scenario_file_round_trip_and_foreign_file(net1, tmp_path):
    s = generate(net1, 2, 7, workers=1, progress=False)
    path = s.save(tmp_path / "net1")
    back = ScenarioSet.load(path)
    assert np.array_equal(back.values, s.values) and back.scenarios == s.scenarios and back.sensors == s.sensors
    zone = back.zone(1)
    assert zone.values.shape == (s.n_steps, len(s.columns)) and zone.meta["network"] == "Net1"
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(DatasetError, match="not a frugalsense leak scenario set"):
        ScenarioSet.load(tmp_path / "other.npz")
