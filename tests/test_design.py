"""Unit tests of qlib.design (paper Sec. V, VI-C): the exact optimum against brute force, the
paper's Algorithm 1 (SCA), the baselines, feasibility of every returned point, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest

from qlib import design, rd
from qlib.design import (
    RTOL,
    Problem,
    gap_objective,
    optimal_frequencies,
    random_problems,
    relaxed_optimum,
    solve_exact,
    solve_fixed_frequency,
    solve_random_feasible,
    solve_sca,
)

BLIP2 = dict(n_flop_agent=533.59e9, n_flop_server=166.71e9)
GIT = dict(n_flop_agent=212.15e9, n_flop_server=126.32e9)


def _assert_feasible(p: Problem, s: design.Solution) -> None:
    """The solution is either flagged infeasible with a reason, or meets every constraint of (P1)."""
    if not s.feasible:
        assert s.reason.split(":")[0] in ("delay", "energy"), s.reason
        assert s.bit_width is None and s.objective == math.inf
        return
    assert isinstance(s.bit_width, int) and 1 <= s.bit_width <= p.B_max
    assert 0 < s.f_agent <= p.f_agent_max * (1 + RTOL)
    assert 0 < s.f_server <= p.f_server_max * (1 + RTOL)
    assert s.delay == pytest.approx(float(p.delay(s.bit_width, s.f_agent, s.f_server)), rel=1e-12)
    assert s.energy == pytest.approx(float(p.energy(s.bit_width, s.f_agent, s.f_server)), rel=1e-12)
    assert s.delay <= p.T0 * (1 + RTOL), (s, p)
    assert s.energy <= p.E0 * (1 + RTOL), (s, p)
    assert s.objective == float(p.objective(s.bit_width))


# ---------------------------------------------------------------------------------- Problem


def test_problem_defaults_are_the_papers_section_vi_c():
    p = Problem(T0=1.0, E0=1.0, **GIT)
    assert (p.f_agent_max, p.f_server_max, p.c_agent, p.c_server) == (2e9, 10e9, 32, 128)
    assert (p.eta_agent, p.eta_server, p.psi_agent, p.psi_server) == (1.0, 2.0, 2e-29, 1e-28)
    assert (p.B_max, p.b_full, p.lam) == (16, 32, 1.0)


@pytest.mark.parametrize("field, value", [
    ("n_flop_agent", 0.0), ("n_flop_server", -1.0), ("T0", 0.0), ("E0", -2.0), ("lam", 0.0),
    ("T0", float("nan")), ("E0", float("inf")), ("B_max", 1), ("B_max", 33), ("B_max", 8.5),
    ("f_agent_max", 0.0), ("f_server_max", -1.0), ("c_agent", 0), ("c_server", -3),
    ("eta_agent", 0.5), ("eta_server", 0.9), ("psi_agent", 0.0), ("psi_server", -1e-28),
    ("b_full", 0), ("T0", "1"), ("E0", True),
])
def test_problem_rejects_non_physical_input_naming_the_field(field, value):
    kwargs = dict(T0=1.0, E0=1.0, **GIT)
    kwargs[field] = value
    with pytest.raises(ValueError, match=field):
        Problem(**kwargs)


def test_coefficients_reproduce_the_normalized_delay_and_energy():
    p = Problem(T0=1.7, E0=0.9, **BLIP2)
    c = p.coefficients()
    b, f, fs = 7.0, 1.3e9, 3.1e9
    phi, phs = f / p.f_agent_max, fs / p.f_server_max
    assert float(p.delay(b, f, fs)) / p.T0 == pytest.approx(c["tau_a"] * b / phi + c["tau_s"] / phs, rel=1e-12)
    assert float(p.energy(b, f, fs)) / p.E0 == pytest.approx(c["eps_a"] * b * phi**2 + c["eps_s"] * phs**2,
                                                           rel=1e-12)


# ------------------------------------------------------------------------ the objective


def test_objective_is_the_bound_gap_and_infinite_at_one_bit():
    assert gap_objective(1, 2.0) == math.inf
    b = np.arange(2, 17)
    expected = rd.distortion_upper(b - 1.0, 2.0) - rd.distortion_lower(b - 1.0, 2.0)
    np.testing.assert_allclose(gap_objective(b, 2.0), expected, rtol=1e-14)
    assert float(gap_objective(2, 1.0)) == pytest.approx((math.sqrt(5) - 1) / 2 - 0.25, rel=1e-12)


def test_objective_is_positive_and_strictly_decreasing_on_the_relaxation():
    # Proved in the chapter: with x = 2^(b-1), d(λg)/dx < 0 iff 3x^4 + 6x^2 - 8x + 3 > 0.
    b = np.linspace(1.0001, 32.0, 20001)
    g = gap_objective(b, 1.0)
    assert np.all(g > 0)
    assert np.all(np.diff(g) < 0)
    x = np.linspace(1.0, 100.0, 10001)
    assert np.all(3 * x**4 + 6 * x**2 - 8 * x + 3 > 0)


def test_objective_rejects_bit_widths_below_one():
    with pytest.raises(ValueError, match="bit_width"):
        gap_objective(0.5)
    with pytest.raises(ValueError, match="lam"):
        gap_objective(4, -1.0)


# ------------------------------------------------------------- minimum-energy frequencies


def _grid_min_energy(p: Problem, b: float, n: int = 400) -> float:
    f = p.f_agent_max * np.logspace(-3, 0, n)[:, None]
    fs = p.f_server_max * np.logspace(-3, 0, n)[None, :]
    ok = np.asarray(p.delay(b, f, fs)) <= p.T0
    e = np.asarray(p.energy(b, f, fs))
    return float(e[ok].min()) if ok.any() else math.inf


def test_optimal_frequencies_meet_the_delay_budget_with_least_energy():
    for p in random_problems(60, seed=3):
        for b in (1.0, 4.0, 9.5, 16.0):
            out = optimal_frequencies(p, b)
            grid = _grid_min_energy(p, b)
            if out["reason"] == "delay":
                assert grid == math.inf
                continue
            assert float(out["delay"]) <= p.T0 * (1 + RTOL)
            assert out["f_agent"] <= p.f_agent_max and out["f_server"] <= p.f_server_max
            # No grid point does better; the grid (1.7 % steps, energy ~ f^2) gets within 8 %.
            assert float(out["energy"]) <= grid * (1 + 1e-9)
            assert grid <= float(out["energy"]) * 1.08
            assert bool(out["feasible"]) == (float(out["energy"]) <= p.E0 * (1 + RTOL))


def test_optimal_frequencies_match_a_general_purpose_solver():
    from scipy.optimize import minimize

    checked = 0
    for p in random_problems(30, seed=9):
        b = 6.0
        out = optimal_frequencies(p, b)
        if out["reason"] == "delay":
            continue
        # SLSQP on log-frequencies, delay budget as an inequality, caps as bounds.
        e_scale = float(out["energy"])
        res = minimize(lambda x: float(p.energy(b, np.exp(x[0]), np.exp(x[1]))) / e_scale,
                       x0=np.log([p.f_agent_max / 2, p.f_server_max / 2]), method="SLSQP",
                       bounds=[(np.log(p.f_agent_max) - 12, np.log(p.f_agent_max)),
                               (np.log(p.f_server_max) - 12, np.log(p.f_server_max))],
                       constraints=[{"type": "ineq",
                                     "fun": lambda x: 1 - float(p.delay(b, np.exp(x[0]), np.exp(x[1]))) / p.T0}],
                       options={"ftol": 1e-12, "maxiter": 500})
        assert res.success, res.message
        assert res.fun == pytest.approx(1.0, rel=1e-4)
        checked += 1
    assert checked >= 15


def test_optimal_frequencies_are_vectorized_and_check_the_range():
    p = Problem(T0=3.5, E0=2.0, **BLIP2)
    out = optimal_frequencies(p, np.arange(1, 17))
    assert out["f_agent"].shape == (16,)
    assert np.all(np.diff(out["energy"]) >= 0)  # least energy grows with the bit-width
    with pytest.raises(ValueError, match="bit_width"):
        optimal_frequencies(p, 17)


# ---------------------------------------------------------------------------- exact optimum


def _brute_force_bits(p: Problem, n: int = 300) -> int:
    """Largest b in {1..B_max} with a feasible point on a log-spaced (f, f~) grid (caps included)."""
    f = p.f_agent_max * np.logspace(-3, 0, n)[None, :, None]
    fs = p.f_server_max * np.logspace(-3, 0, n)[None, None, :]
    b = np.arange(1, p.B_max + 1, dtype=float)[:, None, None]
    ok = (np.asarray(p.delay(b, f, fs)) <= p.T0) & (np.asarray(p.energy(b, f, fs)) <= p.E0)
    feasible = ok.any(axis=(1, 2))
    return int(np.flatnonzero(feasible).max() + 1) if feasible.any() else 0


def test_solve_exact_equals_brute_force_on_200_random_instances():
    problems = random_problems(200, seed=11)
    exact = solve_exact(problems)
    n_equal = 0
    for p, s in zip(problems, exact):
        _assert_feasible(p, s)
        b_exact = s.bit_width or 0
        b_grid = _brute_force_bits(p)
        # The grid is an inner approximation: it can never beat the certified optimum ...
        assert b_grid <= b_exact
        # ... and misses it only when a budget is tight to within the grid's 2.3 % spacing.
        shrunk = solve_exact(Problem(**{**_fields(p), "T0": p.T0 * 0.97, "E0": p.E0 * 0.97}))
        assert b_grid >= (shrunk.bit_width or 0)
        n_equal += b_grid == b_exact
    assert n_equal >= 190
    # The instances exercise every regime.
    bits = [s.bit_width for s in exact]
    assert None in bits and 1 in bits and 16 in bits and len(set(bits)) >= 12


def _fields(p: Problem) -> dict:
    return {k: getattr(p, k) for k in Problem.__dataclass_fields__}


def test_solve_exact_batch_equals_one_by_one():
    problems = random_problems(30, seed=5)
    batch = solve_exact(problems)
    for p, s in zip(problems, batch):
        one = solve_exact(p)
        assert (one.bit_width, one.feasible) == (s.bit_width, s.feasible)
        if one.feasible:
            assert one.f_agent == pytest.approx(s.f_agent, rel=1e-12)
            assert one.f_server == pytest.approx(s.f_server, rel=1e-12)


def test_solve_exact_is_the_floor_of_the_relaxed_optimum():
    for p in random_problems(40, seed=8):
        s = solve_exact(p)
        if not s.feasible:
            with pytest.raises(ValueError, match="infeasible"):
                relaxed_optimum(p)
            continue
        b_relaxed = relaxed_optimum(p)
        assert s.bit_width == min(p.B_max, math.floor(b_relaxed + 1e-9))


def test_solve_exact_takes_mixed_hardware_in_one_batch():
    a = Problem(T0=3.5, E0=2.0, **BLIP2)
    b = Problem(T0=3.5, E0=2.0, f_agent_max=1e9, **BLIP2)
    sa, sb = solve_exact([a, b])
    assert sa.bit_width == solve_exact(a).bit_width and sb.bit_width == solve_exact(b).bit_width
    assert sb.bit_width < sa.bit_width


def test_solve_exact_rejects_bad_input():
    with pytest.raises(ValueError, match="problems"):
        solve_exact([])
    with pytest.raises(ValueError, match="problems"):
        solve_exact([1, 2])


# ------------------------------------------------------------------ infeasible budgets


@pytest.mark.parametrize("budgets, why", [
    (dict(T0=0.01, E0=100.0), "delay"),   # 16 ms: even 1 bit at both max clocks is too slow
    (dict(T0=100.0, E0=1e-6), "energy"),  # 1 µJ: below the least energy that meets even 100 s
])
def test_infeasible_budgets_are_reported_by_every_method(budgets, why):
    p = Problem(**budgets, **BLIP2)
    for s in (solve_exact(p), solve_sca(p), solve_fixed_frequency(p), solve_random_feasible(p),
              design.solve_ppo(p)):
        assert s.feasible is False, s
        assert s.reason.startswith(why), s.reason
        assert s.bit_width is None and s.objective == math.inf


def test_one_bit_only_is_feasible_with_infinite_objective():
    # Budgets between the cost of 1 and 1.001 bits: only b = 1 is feasible.
    p0 = Problem(T0=3.5, E0=2.0, **BLIP2)
    t1 = float(p0.delay(1, p0.f_agent_max, p0.f_server_max))
    p = Problem(**{**_fields(p0), "T0": t1 * (1 + 1e-5), "E0": 1e3})
    for s in (solve_exact(p), solve_sca(p)):
        assert s.feasible and s.bit_width == 1 and s.objective == math.inf
        _assert_feasible(p, s)


# ------------------------------------------------------------------------- SCA (Algorithm 1)


def test_sca_objective_is_non_increasing_and_reaches_the_relaxed_optimum():
    problems = [p for p in random_problems(40, seed=21) if solve_exact(p).feasible][:12]
    for p in problems:
        s = solve_sca(p, delta=1e-8)
        _assert_feasible(p, s)
        h = np.asarray(s.history)
        assert len(h) >= 2
        # Non-increasing up to the interior-point solver's accuracy (a relative 1e-6 of the
        # objective is 1.4e-6 bits of b~); the decreases themselves are >= delta until the stop.
        assert np.all(np.diff(h) <= 1e-6 * h[1:]), h
        assert s.relaxed_bit_width == pytest.approx(relaxed_optimum(p), abs=1e-4)
        assert s.bit_width == solve_exact(p).bit_width


def test_sca_rounding_is_made_feasible():
    # Relaxed optimum 11.37 for BLIP-2 at the paper's budgets: nearest = 11, feasible.
    p = Problem(T0=3.5, E0=2.0, **BLIP2)
    s = solve_sca(p)
    assert s.bit_width == 11 and s.relaxed_bit_width == pytest.approx(11.368, abs=1e-3)
    # A budget whose relaxed optimum has fractional part > 0.5: rounding to nearest is infeasible.
    found = 0
    for q in random_problems(60, seed=2):
        e = solve_exact(q)
        if not e.feasible or e.bit_width in (1, q.B_max):
            continue
        if relaxed_optimum(q) % 1 > 0.55:
            s = solve_sca(q)
            _assert_feasible(q, s)
            assert s.bit_width == e.bit_width and "rounded down" in s.reason
            found += 1
        if found == 3:
            break
    assert found == 3


def test_sca_with_the_papers_printed_surrogate_runs_to_the_lower_end():
    # (34) as printed freezes D^U at b^(k): the surrogate is increasing in b~, so SCA descends.
    p = Problem(T0=3.5, E0=2.0, **BLIP2)
    s = solve_sca(p, surrogate="paper", b_start=6.0)
    assert s.history[0] == pytest.approx(float(gap_objective(6.0)), rel=1e-12)
    assert s.history[-1] > 1000 * s.history[0]  # the true objective went up, not down
    assert s.relaxed_bit_width == pytest.approx(1.001, abs=1e-6) and s.bit_width == 1


def test_sca_stops_early_with_a_coarse_threshold():
    p = Problem(T0=3.5, E0=2.0, **BLIP2)
    coarse, fine = solve_sca(p, delta=1e-3), solve_sca(p, delta=1e-9)
    assert len(coarse.history) < len(fine.history)
    assert coarse.bit_width <= fine.bit_width


@pytest.mark.parametrize("kwargs, name", [
    (dict(delta=0.0), "delta"), (dict(max_iter=0), "max_iter"), (dict(b_eps=1.5), "b_eps"),
    (dict(surrogate="other"), "surrogate"), (dict(b_start=30.0), "b_start"), (dict(b_start=15.9), "b_start"),
])
def test_sca_rejects_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        solve_sca(Problem(T0=3.5, E0=2.0, **BLIP2), **kwargs)


# -------------------------------------------------------------------------------- baselines


def test_fixed_frequency_is_the_largest_bit_width_at_the_caps_and_never_beats_exact():
    for p in random_problems(100, seed=4):
        s, e = solve_fixed_frequency(p), solve_exact(p)
        _assert_feasible(p, s)
        if s.feasible:
            assert (s.f_agent, s.f_server) == (p.f_agent_max, p.f_server_max)
            assert s.bit_width <= e.bit_width
            if s.bit_width < p.B_max:
                assert not p.is_feasible(s.bit_width + 1, p.f_agent_max, p.f_server_max)


def test_random_feasible_is_seeded_and_keeps_the_best_feasible_draw():
    p = Problem(T0=3.5, E0=2.0, **GIT)
    a, b = solve_random_feasible(p, seed=3), solve_random_feasible(p, seed=3)
    assert (a.bit_width, a.samples) == (b.bit_width, b.samples)
    assert a.bit_width == max(a.samples)
    few = solve_random_feasible(p, n_samples=3, seed=1)
    assert len(few.samples) <= 3 and few.objective >= solve_exact(p).objective
    exact = solve_exact(p).bit_width
    assert all(1 <= x <= exact for x in a.samples)


@pytest.mark.parametrize("kwargs, name", [(dict(n_samples=0), "n_samples"), (dict(seed=-1), "seed")])
def test_random_feasible_rejects_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        solve_random_feasible(Problem(T0=3.5, E0=2.0, **GIT), **kwargs)


def test_no_method_ever_returns_a_constraint_violating_point():
    problems = random_problems(300, seed=17)
    for p, e in zip(problems, solve_exact(problems)):
        _assert_feasible(p, e)
        for s in (solve_fixed_frequency(p), solve_random_feasible(p, seed=1), design.solve_ppo(p)):
            _assert_feasible(p, s)
            assert s.objective >= e.objective  # nothing beats the certified optimum
            if s.feasible:
                assert e.feasible
    for p in problems[:25]:
        s = solve_sca(p)
        _assert_feasible(p, s)
        assert s.objective >= solve_exact(p).objective


# ------------------------------------------------------------------------------------- PPO


def test_design_env_follows_the_gymnasium_api():
    from stable_baselines3.common.env_checker import check_env

    from qlib.ppo_env import DesignEnv

    env = DesignEnv()
    check_env(env, warn=True)
    obs, _ = env.reset(seed=0)
    assert obs.shape == env.observation_space.shape and env.observation_space.contains(obs)
    p = Problem(T0=3.5, E0=2.0, **BLIP2)
    env.reset(options={"problem": p})
    # A 1-bit design with a balanced split meets these budgets; B_max with the agent at a
    # 2 % share of the delay budget would need f > f_max, so it is penalized.
    r_ok, info_ok = env.evaluate([-1.0, 0.0])
    r_bad, info_bad = env.evaluate([1.0, -1.0])
    assert info_ok["feasible"] and r_ok == 0.0
    assert not info_bad["feasible"] and r_bad < -0.5
    _, r, terminated, truncated, _ = env.step([-1.0, 0.0])
    assert r == r_ok and truncated and not terminated


def test_decode_action_maps_the_extremes_to_the_bit_range_and_the_delay_share():
    from qlib.ppo_env import decode_action

    p = Problem(T0=3.5, E0=2.0, **GIT)
    c = p.coefficients()
    b, f, fs = decode_action(p, [-1.0, 0.0])
    assert b == 1
    assert f == pytest.approx(c["tau_a"] * 1 / 0.5 * p.f_agent_max)
    assert fs == pytest.approx(c["tau_s"] / 0.5 * p.f_server_max)
    assert float(p.delay(b, f, fs)) == pytest.approx(p.T0)
    assert decode_action(p, [1.0, 1.0])[0] == p.B_max


def test_train_ppo_is_seeded_and_its_policy_solves_problems():
    from qlib.ppo_env import train_ppo

    a, b = train_ppo(512, seed=3), train_ppo(512, seed=3)
    problems = random_problems(20, seed=6)
    sa = [design.solve_ppo(p, a) for p in problems]
    sb = [design.solve_ppo(p, b) for p in problems]
    assert [s.bit_width for s in sa] == [s.bit_width for s in sb]
    for p, s in zip(problems, sa):
        _assert_feasible(p, s)


def test_the_committed_policy_is_a_trained_one():
    # A random policy is feasible on about half the solvable instances and attains the
    # optimum on a few percent; the committed one must do clearly better.
    problems = random_problems(300, seed=99)
    ref = solve_exact(problems)
    res = design.run_methods(problems, methods=("ppo",))
    row = design.summarize_methods(res, ref)[0]
    n_solvable = row["n_solvable"]
    assert row["missed_feasible"] <= 0.25 * n_solvable
    assert row["attained"] >= 0.2


@pytest.mark.parametrize("call, name", [
    (lambda: __import__("qlib.ppo_env").ppo_env.DesignEnv(horizon=0), "horizon"),
    (lambda: __import__("qlib.ppo_env").ppo_env.DesignEnv(penalty=-1.0), "penalty"),
    (lambda: __import__("qlib.ppo_env").ppo_env.train_ppo(10), "total_timesteps"),
    (lambda: __import__("qlib.ppo_env").ppo_env.train_ppo(512, seed=-1), "seed"),
    (lambda: design.solve_ppo("not a problem"), "problem"),
])
def test_ppo_rejects_bad_arguments(call, name):
    with pytest.raises(ValueError, match=name):
        call()
