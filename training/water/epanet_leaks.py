"""Hydraulics of one network with a leak as a time-varying EPANET emitter, step by step.

``EpanetSimulator`` silently ignores ``Junction.add_leak`` and WNTR's own simulator is
~40x slower, so a leak here is an emitter at the junction (Q = K * sqrt(p), the same
orifice law WNTR uses, Q = Cd * A * sqrt(2 g p)) whose coefficient is changed through
the EPANET toolkit at every report step: 0 before the leak, a linear ramp for an
incipient leak, 0 again after the repair. ``scripts/bench_scenarios.py`` checks the
leak flow against ``WNTRSimulator`` on one case.

The network is prepared once with wntr (SI units, time steps, repeated weekly
controls, pressure-driven demand) and written as an INP text that worker processes
open with the toolkit, one scenario at a time.

>>> round(emitter_coefficient(0.05), 3)  # L/s per sqrt(m): a 5 cm hole at 40 m gives ~41 L/s
6.523
"""

from __future__ import annotations

import ctypes
import logging
import math
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import wntr
from wntr.epanet.toolkit import ENepanet, EpanetException
from wntr.network.controls import Control, SimTimeCondition

GRAVITY = 9.81
DISCHARGE_COEFF = 0.75  # sharp-edged orifice, as in wntr's add_leak default
DAY_S = 86_400
WEEK_S = 7 * DAY_S
# EPANET refuses a required pressure below 0.1 m; the same value is used for WNTR in the check.
REQUIRED_PRESSURE_M = 0.1

# EPANET toolkit codes (epanet2_enums.h)
_EN_EMITTER, _EN_DEMAND, _EN_PRESSURE = 3, 9, 11
_EN_DIAMETER, _EN_LENGTH, _EN_ROUGHNESS, _EN_FLOW = 0, 1, 2, 8
_EN_PATTERNSTEP, _EN_PATTERNSTART = 3, 4
_EN_NODECOUNT, _EN_LINKCOUNT = 0, 2
_EN_JUNCTION = 0
_EN_CVPIPE, _EN_PIPE = 0, 1
_EN_EMITEXPON = 3


class SimulationError(RuntimeError):
    """A hydraulic run failed; the message names the network and what went wrong."""


def emitter_coefficient(diameter_m: float, discharge_coeff: float = DISCHARGE_COEFF) -> float:
    """EPANET emitter coefficient (L/s per sqrt(m)) of a round hole of ``diameter_m``."""
    area = math.pi * diameter_m**2 / 4
    return discharge_coeff * area * math.sqrt(2 * GRAVITY) * 1000.0


def load_network(network: str | os.PathLike) -> tuple[wntr.network.WaterNetworkModel, str]:
    """A network by wntr library name ("Net3") or INP path; returns (model, display name)."""
    path = Path(network)
    if path.suffix.lower() != ".inp":
        try:
            path = Path(wntr.library.model_library.get_filepath(str(network)))
        except Exception:  # wntr raises a bare Exception for unknown names
            known = ", ".join(sorted(wntr.library.model_library.model_name_list))
            raise SimulationError(f"unknown network {network!r}: give an EPANET .inp file or one of {known}") from None
    if not path.is_file():
        raise SimulationError(f"network file {path} does not exist")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            wn = wntr.network.WaterNetworkModel(str(path))
    except Exception as exc:  # wntr raises many types on a malformed INP
        raise SimulationError(f"{path}: not a readable EPANET network ({exc})") from None
    return wn, path.stem


def prepare_inp(wn: wntr.network.WaterNetworkModel, days: int, step_s: int) -> str:
    """INP text of ``wn`` in L/s and metres, run for ``days`` at ``step_s``, pressure-driven demand."""
    if step_s < 60 or DAY_S % step_s:
        raise SimulationError(f"time step must divide one day and be >= 60 s, got {step_s} s")
    t = wn.options.time
    t.duration = days * DAY_S
    t.hydraulic_timestep = step_s
    t.report_timestep = step_s
    t.quality_timestep = step_s
    t.report_start = 0
    wn.options.quality.parameter = "NONE"
    h = wn.options.hydraulic
    h.demand_model = "PDD"  # keeps demands finite when a large leak drags a node below zero
    h.minimum_pressure = 0.0
    h.required_pressure = REQUIRED_PRESSURE_M
    h.emitter_exponent = 0.5
    repeat_weekly_controls(wn, days)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "network.inp"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            wntr.network.io.write_inpfile(wn, str(path), units="LPS")
        return path.read_text()


def repeat_weekly_controls(wn: wntr.network.WaterNetworkModel, days: int) -> None:
    """Timed controls ("AT TIME") written for the first week only are repeated every week.

    Net3 schedules its Lake pump this way for 168 h; without the repeat the pump would
    stay in its last state from day 8 on.
    """
    timed = [(name, wn.get_control(name)) for name in wn.control_name_list]
    timed = [(n, c) for n, c in timed if isinstance(c, Control) and isinstance(c.condition, SimTimeCondition)]
    if not timed or max(c.condition._threshold for _, c in timed) >= WEEK_S:  # wntr has no public getter
        return
    for name, control in timed:
        for week in range(1, math.ceil(days / 7)):
            at = control.condition._threshold + week * WEEK_S
            if at >= days * DAY_S:
                break
            for action in control.actions():
                wn.add_control(
                    f"{name} week {week + 1}", Control(SimTimeCondition(wn, "=", at), action, priority=control.priority)
                )


@dataclass
class Demand:
    """One demand category of a junction: base (L/s) and its pattern unrolled to one value per step."""

    node_index: int
    node: str
    category: int
    base_lps: float
    multipliers: np.ndarray


class EpanetRun:
    """One open EPANET project: perturb it, set demands, run it with a leak schedule, read the sensors."""

    def __init__(self, inp_path: str | os.PathLike, steps: int, step_s: int):
        self.steps, self.step_s = steps, step_s
        logging.getLogger("wntr.epanet.toolkit").setLevel(logging.ERROR)  # warnings are counted instead
        self.en = ENepanet()
        try:
            self.en.ENopen(str(inp_path), os.devnull, "")
        except EpanetException as exc:
            raise SimulationError(f"EPANET could not open the network: {exc}") from None
        self._lib, self._ph = self.en.ENlib, self.en._project
        self._call("EN_setoption", ctypes.c_int(_EN_EMITEXPON), ctypes.c_double(0.5))
        self.warnings = 0

    def close(self) -> None:
        self.en.ENclose()

    def __enter__(self) -> EpanetRun:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, name: str, *args) -> None:
        code = getattr(self._lib, name)(self._ph, *args)
        if code >= 100:
            raise SimulationError(f"EPANET {name} failed with error {code}")

    def _count(self, what: int) -> int:
        n = ctypes.c_int()
        self._call("EN_getcount", ctypes.c_int(what), ctypes.byref(n))
        return n.value

    def node_index(self, name: str) -> int:
        return self.en.ENgetnodeindex(name)

    def link_index(self, name: str) -> int:
        return self.en.ENgetlinkindex(name)

    def scale_pipes(self, factors: np.ndarray) -> None:
        """Multiply every pipe's diameter, length, roughness by ``factors[pipe, 0..2]`` (pipes in index order)."""
        pipes = self.pipe_indices()
        if factors.shape != (len(pipes), 3):
            raise ValueError(f"need ({len(pipes)}, 3) pipe factors, got {factors.shape}")
        for index, row in zip(pipes, factors.tolist(), strict=True):
            for code, factor in zip((_EN_DIAMETER, _EN_LENGTH, _EN_ROUGHNESS), row, strict=True):
                value = self.en.ENgetlinkvalue(index, code)
                self.en.ENsetlinkvalue(index, code, value * factor)

    def pipe_indices(self) -> list[int]:
        return [
            i for i in range(1, self._count(_EN_LINKCOUNT) + 1) if self.en.ENgetlinktype(i) in (_EN_CVPIPE, _EN_PIPE)
        ]

    def demands(self) -> list[Demand]:
        """Every positive junction demand with its pattern held per pattern step, unrolled to ``steps``."""
        pattern_step = self.en.ENgettimeparam(_EN_PATTERNSTEP)
        pattern_start = self.en.ENgettimeparam(_EN_PATTERNSTART)
        t = np.arange(self.steps) * self.step_s + pattern_start
        unrolled: dict[int, np.ndarray] = {}
        out = []
        for node in range(1, self._count(_EN_NODECOUNT) + 1):
            if self.en.ENgetnodetype(node) != _EN_JUNCTION:
                continue
            n = ctypes.c_int()
            self._call("EN_getnumdemands", ctypes.c_int(node), ctypes.byref(n))
            for k in range(1, n.value + 1):
                base, pat = ctypes.c_double(), ctypes.c_int()
                self._call("EN_getbasedemand", ctypes.c_int(node), ctypes.c_int(k), ctypes.byref(base))
                self._call("EN_getdemandpattern", ctypes.c_int(node), ctypes.c_int(k), ctypes.byref(pat))
                if base.value <= 0:  # a negative demand is a source (Net2's inflow node): left as is
                    continue
                if pat.value not in unrolled:
                    pattern = self._pattern(pat.value)
                    unrolled[pat.value] = pattern[(t // pattern_step).astype(int) % len(pattern)]
                out.append(Demand(node, self.en.ENgetnodeid(node), k, base.value, unrolled[pat.value]))
        return out

    def _pattern(self, index: int) -> np.ndarray:
        if index == 0:
            return np.ones(1)
        n = ctypes.c_int()
        self._call("EN_getpatternlen", ctypes.c_int(index), ctypes.byref(n))
        values = []
        for period in range(1, n.value + 1):
            v = ctypes.c_double()
            self._call("EN_getpatternvalue", ctypes.c_int(index), ctypes.c_int(period), ctypes.byref(v))
            values.append(v.value)
        return np.array(values)

    def set_demand(self, demand: Demand, base_lps: float, multipliers: np.ndarray) -> None:
        """Give one demand category its own base and a pattern with one multiplier per step."""
        name = f"fs{demand.node_index}_{demand.category}".encode()
        index = ctypes.c_int()
        self._call("EN_addpattern", ctypes.c_char_p(name))
        self._call("EN_getpatternindex", ctypes.c_char_p(name), ctypes.byref(index))
        values = np.ascontiguousarray(multipliers, dtype=np.float64)
        self._call(
            "EN_setpattern", index, values.ctypes.data_as(ctypes.POINTER(ctypes.c_double)), ctypes.c_int(len(values))
        )
        self._call(
            "EN_setbasedemand",
            ctypes.c_int(demand.node_index),
            ctypes.c_int(demand.category),
            ctypes.c_double(base_lps),
        )
        self._call("EN_setdemandpattern", ctypes.c_int(demand.node_index), ctypes.c_int(demand.category), index)

    def use_step_patterns(self) -> None:
        """Patterns set by ``set_demand`` have one value per simulation step, from time 0."""
        self.en.ENsettimeparam(_EN_PATTERNSTEP, self.step_s)
        self.en.ENsettimeparam(_EN_PATTERNSTART, 0)

    def run(
        self,
        flow_links: list[int],
        pressure_nodes: list[int],
        leak_node: int | None = None,
        leak_coeff: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Simulate; return flows (L/s, link direction) [T, F], pressures (m) [T, P] and leak flow (L/s) [T].

        ``leak_coeff[k]`` is the emitter coefficient during report step k (0 = closed).
        """
        steps, step_s = self.steps, self.step_s
        flows = np.full((steps, len(flow_links)), np.nan)
        pressures = np.full((steps, len(pressure_nodes)), np.nan)
        leak = np.zeros(steps)
        current = 0.0
        t = 0
        try:
            self.en.ENopenH()
            self.en.ENinitH(0)
            while True:
                if leak_node is not None:
                    coeff = float(leak_coeff[min(t // step_s, steps - 1)])
                    if coeff != current:
                        self.en.ENsetnodevalue(leak_node, _EN_EMITTER, coeff)
                        current = coeff
                t = self.en.ENrunH()
                if t % step_s == 0 and t // step_s < steps:
                    k = t // step_s
                    for j, link in enumerate(flow_links):
                        flows[k, j] = self.en.ENgetlinkvalue(link, _EN_FLOW)
                    for j, node in enumerate(pressure_nodes):
                        pressures[k, j] = self.en.ENgetnodevalue(node, _EN_PRESSURE)
                    if leak_node is not None and current > 0:
                        leak[k] = current * math.sqrt(max(self.en.ENgetnodevalue(leak_node, _EN_PRESSURE), 0.0))
                tstep = self.en.ENnextH()
                if tstep <= 0:
                    break
                t += tstep
            self.en.ENcloseH()
        except EpanetException as exc:
            raise SimulationError(f"hydraulics failed at {t / 3600:.2f} h: {exc}") from None
        self.warnings = len(self.en.errcodelist)
        if np.isnan(flows).any() or np.isnan(pressures).any():
            raise SimulationError("EPANET skipped report steps (is the time step a multiple of the hydraulic step?)")
        return flows, pressures, leak
