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


# ----------------------------------------------------------------------------------------
# Blahut–Arimoto against closed forms
# ----------------------------------------------------------------------------------------


def _binary_entropy(x):
    return -x * np.log2(x) - (1 - x) * np.log2(1 - x)


def test_blahut_arimoto_binary_hamming_closed_form():
    # Bernoulli(0.3) with Hamming distortion: R(D) = h(0.3) - h(D) for D < 0.3.
    p = np.array([0.7, 0.3])
    res = rd.blahut_arimoto(p, 1.0 - np.eye(2), [0.5, 1.5, 3.0], tol=1e-10)
    assert res.converged.all()
    closed = _binary_entropy(0.3) - _binary_entropy(res.distortion)
    np.testing.assert_allclose(res.rate, closed, atol=1e-8)
    assert np.all(res.rate_lower <= res.rate) and np.all(res.rate - res.rate_lower < 1e-10)


def test_blahut_arimoto_gaussian_squared_error_within_half_percent():
    # N(0, 1), d = (x - y)^2: D(R) = 2^(-2R). Cells of width 0.05 with exact masses.
    from scipy import stats

    h = 0.05
    x = np.arange(-6.0, 6.0 + h / 2, h)
    p = np.diff(stats.norm.cdf(np.r_[-np.inf, (x[:-1] + x[1:]) / 2, np.inf]))
    res = rd.blahut_arimoto(p, (x[:, None] - x[None, :]) ** 2, [1.0, 4.0], tol=1e-3, max_iter=3000)
    assert np.all(res.rate > 0.3)
    np.testing.assert_allclose(res.distortion, np.exp2(-2 * res.rate), rtol=5e-3)
    # The certified lower bound brackets the curve from the other side.
    assert np.all(res.distortion >= np.exp2(-2 * res.rate_lower) * (1 - 5e-3))


def test_blahut_arimoto_one_sided_exponential_within_half_percent():
    # Exp(1) with d = theta - theta_hat for theta_hat <= theta (inf otherwise):
    # R(D) = log2(1 / (lam D)) (Verdu 1996). Reproduction at the cell's left edge, distortion
    # from the cell's conditional mean, so the discretisation error is second order in h.
    h, lam = 0.04, 1.0
    e = np.arange(int(12 / h) + 1) * h
    p = -np.diff(np.exp(-e))
    p /= p.sum()
    mean = e[:-1] + 1 - h * np.exp(-h) / -np.expm1(-h)
    diff = mean[:, None] - e[None, :-1]
    res = rd.blahut_arimoto(p, np.where(diff >= 0, diff, np.inf), [2.0, 4.0], tol=1e-3, max_iter=4000)
    np.testing.assert_allclose(res.rate, np.log2(1 / (lam * res.distortion)), rtol=5e-3)
    # The dense solver with forbidden pairs matches a direct log-sum-exp implementation.
    assert np.all(np.isfinite(res.q)) and np.all(res.q[:, -1] < 1e-6)


def test_blahut_arimoto_survives_huge_slopes():
    # Slopes so large that exp(-s d) underflows for every off-diagonal pair: the log-domain
    # fallback keeps everything finite and the rate tends to the source entropy.
    p = np.array([0.5, 0.25, 0.25])
    d = np.abs(np.subtract.outer(np.arange(3.0), np.arange(3.0)))
    res = rd.blahut_arimoto(p, d, [1e4], tol=1e-9)
    assert res.rate[0] == pytest.approx(1.5, abs=1e-6) and res.distortion[0] < 1e-12


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(p=[0.5, 0.6], dist=np.zeros((2, 2)), slopes=1.0), "probability vector"),
        (dict(p=[0.5, 0.5], dist=np.zeros((3, 2)), slopes=1.0), "shape"),
        (dict(p=[0.5, 0.5], dist=-np.ones((2, 2)), slopes=1.0), "distortions >= 0"),
        (dict(p=[0.5, 0.5], dist=np.full((2, 2), np.inf), slopes=1.0), "finite entry"),
        (dict(p=[0.5, 0.5], dist=np.zeros((2, 2)), slopes=0.0), "slopes"),
        (dict(p=[0.5, 0.5], dist=np.zeros((2, 2)), slopes=1.0, tol=0.0), "tol"),
        (dict(p=[0.5, 0.5], dist=np.zeros((2, 2)), slopes=1.0, max_iter=0), "max_iter"),
    ],
)
def test_blahut_arimoto_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        rd.blahut_arimoto(**kwargs)


# ----------------------------------------------------------------------------------------
# D(R) of the exponential source with |theta - theta_hat|, and the exact closed form
# ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def numeric_curve():
    R = np.linspace(0.25, 6.0, 24)
    return R, rd.distortion_rate(R, 1.0)


def test_distortion_rate_meets_its_stated_accuracy(numeric_curve):
    # The docstring promises 0.15 % on [0.25, 6], whatever else shares the call.
    R, D = numeric_curve
    np.testing.assert_allclose(D, rd.distortion_rate_exact(R, 1.0), rtol=1.5e-3)
    for r in (0.25, 0.3, 6.0):  # single-rate calls, the ends of the range
        assert float(rd.distortion_rate(r)) == pytest.approx(float(rd.distortion_rate_exact(r, 1.0)), rel=1.5e-3)
    # ... and lies strictly between the paper's bounds (eqs 24 and 26).
    assert np.all(rd.distortion_lower(R, 1.0) < D) and np.all(D < rd.distortion_upper(R, 1.0))


def test_distortion_rate_does_not_depend_on_the_other_rates_of_the_call(numeric_curve):
    alone = float(rd.distortion_rate(0.5))
    among_four = rd.distortion_rate([0.5, 1.0, 2.0, 3.0])
    assert alone == float(among_four[0])
    assert float(rd.distortion_rate(2.0)) == float(among_four[2])
    R, D = numeric_curve
    assert float(rd.distortion_rate(R[5])) == float(D[5])


def test_distortion_rate_scales_as_one_over_lambda():
    R = np.array([0.5, 2.0, 3.5])
    np.testing.assert_allclose(rd.distortion_rate(R, 4.0), rd.distortion_rate(R, 1.0) / 4.0, rtol=1e-6)


def test_grid_error_is_second_order_in_kappa():
    # Halving kappa = s h cuts the error of D about fourfold (the claim in the docstring).
    # One Blahut-Arimoto point per kappa, compared with the exact D at the point's own rate.
    err = {}
    for k in (0.4, 0.2):
        c = rd.exponential_curve(1.0, 4.05, 4.1, per_bit=1, kappa=k, tol=1e-5)
        err[k] = float(c.distortion[0] / rd.distortion_rate_exact(c.rate[0], 1.0) - 1)
    assert err[0.4] < 0 and err[0.2] < 0  # a finer grid only ever raises D towards the limit
    assert err[0.4] / err[0.2] == pytest.approx(4.0, rel=0.15)


def test_exact_form_against_dense_blahut_arimoto():
    # A grid independent of exponential_curve's O(N) recursion: dense matrix, cell masses,
    # reproduction at cell midpoints; D is within 0.5 % of the exact form at the same rate.
    h = 0.02
    e = np.arange(int(12 / h) + 1) * h
    p = -np.diff(np.exp(-e))
    p /= p.sum()
    x = e[:-1] + h / 2
    res = rd.blahut_arimoto(p, np.abs(x[:, None] - x[None, :]), [2.0, 5.0], tol=1e-3, max_iter=3000)
    assert res.converged.all()
    np.testing.assert_allclose(res.distortion, rd.distortion_rate_exact(res.rate, 1.0), rtol=5e-3)
    # At slope s the exact curve has a = lam / s and R = log2((1 + a) / (2 a)).
    a = 1.0 / res.slope
    np.testing.assert_allclose(res.rate, np.log2((1 + a) / (2 * a)), atol=5e-3)


def test_exact_forms_are_inverse_and_limits():
    D = np.linspace(1e-3, 0.69, 50)
    np.testing.assert_allclose(rd.distortion_rate_exact(rd.rate_distortion_exact(D, 1.0), 1.0), D, rtol=1e-10)
    assert rd.distortion_rate_exact(0.0, 2.0) == pytest.approx(np.log(2) / 2)
    assert rd.rate_distortion_exact(1.0, 1.0) == 0.0  # beyond ln 2 / lam no bits are needed
    R = np.array([8.0, 12.0])
    np.testing.assert_allclose(rd.distortion_rate_exact(R, 1.0) / rd.distortion_lower(R, 1.0), 1.0, atol=2e-3)
    with pytest.raises(ValueError, match="R >= 0"):
        rd.distortion_rate_exact(-1.0, 1.0)
    with pytest.raises(ValueError, match=r"\[0.25, 8\]"):
        rd.distortion_rate(0.1)


# ----------------------------------------------------------------------------------------
# Operational curves of scalar quantizers
# ----------------------------------------------------------------------------------------


def test_lloyd_max_satisfies_its_conditions_and_closed_form():
    from scipy.optimize import minimize_scalar

    for n in (1, 2, 5, 64):
        q = rd.lloyd_max_abs(n, lam=2.0)
        a, b = np.r_[0.0, q.thresholds], np.r_[q.thresholds, np.inf]
        np.testing.assert_allclose(q.levels, rd._cell_median(a * 2.0, b * 2.0) / 2.0, rtol=1e-12)  # medians
        np.testing.assert_allclose(q.thresholds, (q.levels[:-1] + q.levels[1:]) / 2, rtol=1e-9)  # midpoints
        assert q.distortion == pytest.approx(np.log1p(1 / n) / 2.0, rel=1e-10)
        assert q.rate == pytest.approx(np.log2(n)) and 0 <= q.entropy <= q.rate + 1e-12
    # Global optimality of the 2-level quantizer, by brute-force minimisation over the threshold.
    def cost(t):
        m = rd._cell_median(np.array(0.0), np.array(t))
        m2 = rd._cell_median(np.array(t), np.array(np.inf))
        return float(rd._cell_abs_cost(0.0, t, m) + rd._cell_abs_cost(t, np.inf, m2))
    assert minimize_scalar(cost, bounds=(0.01, 5), method="bounded").fun == pytest.approx(np.log(1.5), rel=1e-8)


def test_lloyd_max_sits_between_exact_curve_and_one_bit_more():
    R = np.arange(1, 9)
    D_lm = rd.lloyd_max_distortion(R)
    D = rd.distortion_rate_exact(R, 1.0)
    assert np.all(D_lm > D) and np.all(D_lm < rd.distortion_rate_exact(R - 1, 1.0) * 1.01)
    assert D_lm[-1] / D[-1] == pytest.approx(2.0, rel=5e-3)


def test_uniform_entropy_coded_against_monte_carlo():
    q = rd.uniform_entropy_coded(0.5, lam=2.0)
    rng = np.random.default_rng(0)
    th = rng.exponential(0.5, 400_000)
    k = np.floor(th / 0.5 + 0.5)
    assert q.distortion == pytest.approx(np.mean(np.abs(th - 0.5 * k)), rel=1e-2)
    _, c = np.unique(k, return_counts=True)
    assert q.entropy == pytest.approx(-(c / th.size) @ np.log2(c / th.size), rel=1e-2)
    assert q.distortion > rd.distortion_rate_exact(q.entropy, 2.0)
    with pytest.raises(ValueError, match="step"):
        rd.uniform_entropy_coded(0.0)


def test_quantizer_curve_uses_qlib_quantize():
    rng = np.random.default_rng(1)
    th = rng.exponential(1.0, 20_000)
    for scheme in ("uniform", "pot"):
        c = rd.quantizer_curve(th, [2, 4, 6], scheme)
        assert np.array_equal(c.rate, [1.0, 3.0, 5.0])
        assert np.all(np.diff(c.distortion) <= 0)
        assert np.all(c.entropy <= c.rate + 1e-12)
        # No practical quantizer beats the rate-distortion function, at either rate.
        assert np.all(c.distortion > rd.distortion_rate_exact(c.rate, 1.0))
    # 2 bits uniform = magnitudes {0, M}: almost every sample goes to 0, D close to the mean.
    assert rd.quantizer_curve(th, [2]).distortion[0] == pytest.approx(th.mean(), rel=0.05)
    with pytest.raises(ValueError, match="bit_widths"):
        rd.quantizer_curve(th, [1])
    with pytest.raises(ValueError, match="theta"):
        rd.quantizer_curve(-th)


def test_lloyd_max_samples_matches_the_closed_form_on_exponential_samples():
    rng = np.random.default_rng(0)
    theta = rng.exponential(1.0, 200_000)
    for n_levels in (1, 4, 32):
        q = rd.lloyd_max_samples(theta, n_levels)
        assert q.distortion == pytest.approx(rd.lloyd_max_abs(n_levels).distortion, rel=0.02)
        assert np.all(np.diff(q.levels) >= 0) and q.rate == pytest.approx(np.log2(n_levels))
    # Any other placement of the levels does no better (a Lloyd fixed point): shifting them worsens D.
    q = rd.lloyd_max_samples(theta, 8)
    shifted = q.levels * 1.05
    t = 0.5 * (shifted[:-1] + shifted[1:])
    assert np.mean(np.abs(theta - shifted[np.searchsorted(t, theta)])) > q.distortion
    assert rd.lloyd_max_samples([0.0, 1.0, 2.0, 10.0], 4).distortion == 0.0


@pytest.mark.parametrize("args, match", [(([1.0, -1.0], 1), "theta"), (([1.0], 2), "n_levels"),
                                         (([1.0, 2.0], 1, 0), "max_iter"), (([], 1), "theta")])
def test_lloyd_max_samples_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        rd.lloyd_max_samples(*args)


def test_quantizers_against_upper_bound_on_exponential_weights():
    import torch

    g = torch.Generator().manual_seed(0)
    signs = torch.randint(0, 2, (200, 500), generator=g) * 2 - 1
    mags = -torch.log(torch.rand(200, 500, generator=g, dtype=torch.float64)) / 20.0  # exponential, lam = 20
    chk = rd.quantizers_against_upper_bound([signs * mags], bit_widths=[2, 4, 8])
    assert chk.lam == pytest.approx(20.0, rel=0.01)
    # Lloyd-Max on exponential magnitudes sits under D^U at low rate and tends to it (gap ~ 2^-R / 2).
    assert np.all(chk.lloyd_max[:2] < chk.upper[:2])
    assert chk.lloyd_max[2] == pytest.approx(chk.upper[2], rel=0.05)
    # The uniform quantizer with range set by the largest magnitude is above D^U: eq. (26) is no bound for it.
    assert np.all(chk.uniform[1:] > chk.upper[1:])
    q = quantize_tensor_mean_abs_error(signs * mags, 4, "uniform")
    assert chk.uniform[1] == pytest.approx(q)
    with pytest.raises(ValueError, match="bit_widths"):
        rd.quantizers_against_upper_bound([mags], bit_widths=[1])
    with pytest.raises(ValueError, match="at least one"):
        rd.quantizers_against_upper_bound([])


def quantize_tensor_mean_abs_error(w, b, scheme):
    from qlib.quantize import quantize

    return float((w - quantize(w, b, scheme)).abs().mean())
