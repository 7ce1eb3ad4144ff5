"""US EPA humidity correction: the piecewise fit is continuous, monotonic in PM, one code path for scalar and array."""

from __future__ import annotations

import numpy as np
import pytest

from edge.air.correction import correct_pm25, epa_nationwide, epa_piecewise

BREAKPOINTS = (30.0, 50.0, 210.0, 260.0)


@pytest.mark.parametrize("rh", [0.0, 35.0, 70.0, 100.0])
def test_piecewise_has_no_jump_at_any_breakpoint(rh):
    for b in BREAKPOINTS:
        assert abs(epa_piecewise(b - 1e-9, rh) - epa_piecewise(b, rh)) < 1e-6, b


def test_piecewise_rises_with_pm_and_falls_with_humidity():
    pm = np.linspace(0, 500, 5001)
    for rh in (10.0, 50.0, 90.0):
        corrected = epa_piecewise(pm, np.full_like(pm, rh))
        assert np.all(np.diff(corrected) >= 0)
    assert epa_piecewise(40.0, 90.0) < epa_piecewise(40.0, 30.0)


def test_arrays_give_the_same_values_as_scalars_and_nan_stays_missing():
    rng = np.random.default_rng(4)
    pm, rh = rng.uniform(0, 400, 200), rng.uniform(0, 100, 200)
    for fn in (epa_nationwide, epa_piecewise):
        vector = fn(pm, rh)
        assert vector == pytest.approx([fn(float(p), float(h)) for p, h in zip(pm, rh, strict=True)])
    out = epa_piecewise(np.array([np.nan, 20.0]), np.array([50.0, np.nan]))
    assert np.isnan(out).all()


def test_below_30_both_fits_agree_and_results_are_clipped_at_zero():
    pm = np.linspace(0, 29.9, 300)
    assert epa_piecewise(pm, np.full_like(pm, 60.0)) == pytest.approx(epa_nationwide(pm, np.full_like(pm, 60.0)))
    assert epa_nationwide(1.0, 100.0) == 0.0  # 0.524 - 8.62 + 5.75 < 0


def test_bad_inputs_are_refused_with_the_value():
    with pytest.raises(ValueError, match="PM2.5 -1 ug/m3 is negative"):
        epa_piecewise(-1.0, 50.0)
    with pytest.raises(ValueError, match="humidity -5 %"):
        epa_nationwide(np.array([5.0, 6.0]), np.array([50.0, -5.0]))
    with pytest.raises(ValueError, match="unknown PM2.5 correction 'linear'"):
        correct_pm25(10.0, 50.0, "linear")


def test_every_quantity_has_a_physical_range():
    """A quantity added to the contracts without a range would let impossible values through unflagged."""
    from edge.air.limits import PHYSICAL_RANGE
    from edge.contracts import QUANTITY_UNITS

    assert set(PHYSICAL_RANGE) == set(QUANTITY_UNITS)
