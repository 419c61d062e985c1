"""Tests of qlib.rd: the paper's bounds (eqs 23-26), Blahut-Arimoto and the exact R(D)."""

from __future__ import annotations

import numpy as np
import pytest

from qlib import rd

R_GRID = np.linspace(0.05, 12.0, 240)


@pytest.mark.parametrize("lam", [0.3, 1.0, 7.5])
def test_bounds_are_mutual_inverses(lam):
    d_up = rd.distortion_upper(R_GRID, lam)
    d_lo = rd.distortion_lower(R_GRID, lam)
    np.testing.assert_allclose(rd.rate_upper(d_up, lam), R_GRID, rtol=1e-10)
    np.testing.assert_allclose(rd.rate_lower(d_lo, lam), R_GRID, rtol=1e-10)


def test_known_values_of_the_bounds():
    # D^U(1) = (sqrt(5) - 1) / 2, the golden-ratio conjugate; D^L(R) = 2^-(R+1) / lam.
    assert rd.distortion_upper(1.0, 1.0) == pytest.approx((np.sqrt(5) - 1) / 2, rel=1e-14)
    assert rd.distortion_lower(3.0, 2.0) == pytest.approx(1 / 32, rel=1e-14)
    assert rd.rate_lower(0.25, 1.0) == pytest.approx(1.0)
    # R^U(D) = log2(1/x + x/(x+1)) with x = lam D = 1: log2(3/2).
    assert rd.rate_upper(0.5, 2.0) == pytest.approx(np.log2(1.5), rel=1e-14)


def test_lower_below_upper_and_both_decreasing():
    lam = 1.0
    lo, up = rd.distortion_lower(R_GRID, lam), rd.distortion_upper(R_GRID, lam)
    assert np.all(lo < up)
    assert np.all(np.diff(lo) < 0) and np.all(np.diff(up) < 0)
    # Both decay as 2^-R at high rate: D^U / D^L -> 2 (D^U ~ 1/(lam 2^R), D^L = 1/(lam 2^(R+1))).
    assert up[-1] / lo[-1] == pytest.approx(2.0, rel=1e-3)


def test_bounds_scale_as_one_over_lambda():
    for f in (rd.distortion_lower, rd.distortion_upper):
        np.testing.assert_allclose(f(R_GRID, 4.0), f(R_GRID, 1.0) / 4.0, rtol=1e-13)


def test_upper_bound_keeps_precision_at_high_rate():
    # Naive sqrt(1 + 4/(2^R - 1)) - 1 loses every digit near R = 60; the rewritten form keeps them.
    assert rd.distortion_upper(60.0, 1.0) == pytest.approx(2.0**-60, rel=1e-12)


def test_vectorized_and_broadcasting():
    out = rd.distortion_upper(np.array([[1.0], [2.0]]), np.array([1.0, 2.0, 4.0]))
    assert out.shape == (2, 3)
    assert isinstance(rd.distortion_lower(1.0, 1.0), np.floating)


@pytest.mark.parametrize(
    "func, arg, match",
    [
        (rd.distortion_upper, 0.0, "R > 0"),
        (rd.distortion_upper, -1.0, "R > 0"),
        (rd.distortion_lower, -0.5, "R >= 0"),
        (rd.rate_lower, 0.0, "D > 0"),
        (rd.rate_upper, -2.0, "D > 0"),
        (rd.rate_upper, np.nan, "D > 0"),
        (rd.distortion_upper, [1.0, np.inf], "R > 0"),
    ],
)
def test_domain_errors_name_the_domain(func, arg, match):
    with pytest.raises(ValueError, match=match):
        func(arg, 1.0)


@pytest.mark.parametrize("func", [rd.distortion_upper, rd.distortion_lower, rd.rate_lower, rd.rate_upper])
@pytest.mark.parametrize("lam", [0.0, -1.0, "a"])
def test_bad_lambda(func, lam):
    with pytest.raises(ValueError, match="lam"):
        func(1.0, lam)
