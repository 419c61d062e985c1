"""qlib.mixed: the exact bit allocator, sensitivity tables and the mixed-precision joint design."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qlib import design, mixed, rd
from qlib.quantize import quantize_module


def _brute(table, sizes, budget, bw):
    best = np.inf
    for choice in itertools.product(range(len(bw)), repeat=len(sizes)):
        if sum(s * bw[j] for s, j in zip(sizes, choice)) <= budget:
            best = min(best, sum(table[l][j] for l, j in enumerate(choice)))
    return best


@st.composite
def instances(draw):
    L = draw(st.integers(1, 4))
    bw = sorted(draw(st.sets(st.integers(1, 8), min_size=1, max_size=4)))
    scale = 10.0 ** draw(st.integers(-12, 3))
    table = [[draw(st.floats(0, 10, allow_nan=False)) * scale for _ in bw] for _ in range(L)]
    sizes = [draw(st.integers(1, 40)) for _ in range(L)]
    lo, hi = sum(s * min(bw) for s in sizes), sum(s * max(bw) for s in sizes)
    return np.array(table), sizes, draw(st.integers(lo, hi)), bw


@settings(max_examples=120, deadline=None)
@given(instances())
def test_allocate_bits_equals_brute_force(inst):
    table, sizes, budget, bw = inst
    bits = mixed.allocate_bits(table, sizes, budget, bw)
    assert int(np.dot(sizes, bits)) <= budget
    got = sum(table[l][bw.index(int(b))] for l, b in enumerate(bits))
    best = _brute(table, sizes, budget, bw)
    assert got <= best * (1 + 1e-9) + 1e-300


def test_allocate_bits_beats_the_convex_hull_where_it_must():
    # Layer 0's curve is non-convex: 2 bits buy nothing, 3 bits buy everything. A greedy or
    # Lagrangian allocation on the convex hull cannot reach the optimum (0 at 3 bits, 1 at 1 bit).
    table = np.array([[10.0, 10.0, 0.0], [5.0, 1.0, 0.9]])
    assert mixed.allocate_bits(table, [1, 1], 4, [1, 2, 3]).tolist() == [3, 1]
    assert mixed.allocate_bits(table, [1, 1], 3, [1, 2, 3]).tolist() == [1, 2]


def test_allocate_bits_infinite_entries_are_forbidden_and_errors_are_clear():
    table = np.array([[np.inf, 1.0, 0.5], [3.0, 2.0, 1.0]])
    bits = mixed.allocate_bits(table, [2, 1], 6, [1, 2, 3])
    assert bits[0] != 1
    with pytest.raises(ValueError, match="budget must be at least 5"):
        mixed.allocate_bits(table, [2, 1], 4.5, [1, 2, 3])
    with pytest.raises(ValueError, match="table must have shape"):
        mixed.allocate_bits(np.ones((2, 2)), [1, 1], 10, [1, 2, 3])
    with pytest.raises(ValueError, match="sizes"):
        mixed.allocate_bits(np.ones((2, 3)), [1, 0], 10, [1, 2, 3])
    with pytest.raises(ValueError, match="NaN"):
        mixed.allocate_bits([[np.nan, 1.0]], [1], 10, [1, 2])
    with pytest.raises(ValueError, match="bit_widths"):
        mixed.allocate_bits([[1.0, 1.0]], [1], 10, [2, 2])


def test_allocate_bits_is_fast_for_a_few_hundred_layers():
    import time

    rng = np.random.default_rng(1)
    s = rng.integers(1000, 100_000, 200)
    t = (rng.exponential(1, (200, 1)) * s[:, None] * 2.0 ** -np.arange(1, 17)[None, :]
         * rng.uniform(0.5, 2, (200, 16)))
    t = np.sort(t, axis=1)[:, ::-1]
    t0 = time.perf_counter()
    bits = mixed.allocate_bits(t, s, 3.5 * s.sum())
    assert time.perf_counter() - t0 < 60
    assert mixed.average_bits(bits, s) <= 3.5


@settings(max_examples=60, deadline=None)
@given(instances())
def test_allocate_for_distortion_is_the_least_bits_reaching_the_target(inst):
    table, sizes, budget, bw = inst
    target = _brute(table, sizes, budget, bw)
    bits = mixed.allocate_for_distortion(table, sizes, target, bw)
    got = sum(table[l][bw.index(int(b))] for l, b in enumerate(bits))
    assert got <= target * (1 + 1e-6) + 1e-300
    assert int(np.dot(sizes, bits)) <= budget  # the budget's own optimum reaches it, so no more bits
    with pytest.raises(ValueError, match="target must be at least"):
        mixed.allocate_for_distortion(table, sizes, table.min(axis=1).sum() - 1.0 - abs(target), bw)


def test_modelled_table_is_prop31_times_exact_rd():
    lam, sizes = [2.0, 0.5], [10, 30]
    t = mixed.modelled_table(lam, sizes, [1, 2, 3], coefficients=[3.0, 1.0])
    assert t[0, 1] == pytest.approx(3.0 * 10 * rd.distortion_rate_exact(1.0, 2.0))
    assert t[1, 0] == pytest.approx(30 * np.log(2) / 0.5)  # D(0) = ln 2 / λ
    g = mixed.modelled_table(lam, sizes, [1, 2, 3], rate_distortion="gap")
    assert np.isinf(g[:, 0]).all() and g[1, 2] == pytest.approx(30 * design.gap_objective(3, 0.5))
    with pytest.raises(ValueError, match="lam"):
        mixed.modelled_table([0.0], [1])
    with pytest.raises(ValueError, match="rate_distortion"):
        mixed.modelled_table([1.0], [1], rate_distortion="nope")


def test_fit_lam_is_the_exponential_mle():
    w = torch.tensor([[0.5, -1.5], [1.0, 0.0]])
    assert mixed.fit_lam(w) == pytest.approx(4 / 3.0)
    with pytest.raises(ValueError):
        mixed.fit_lam(torch.zeros(3))


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 8, bias=False), torch.nn.ReLU(), torch.nn.Linear(8, 3, bias=False))


def test_quantize_layers_matches_quantize_module_when_uniform():
    net = _net()
    q1, d1 = quantize_module(net, 3, "pot", per_channel=True)
    q2, d2 = mixed.quantize_layers(net, dict.fromkeys(mixed.quantizable_layers(net), 3), "pot", per_channel=True)
    assert d1 == pytest.approx(d2)
    for a, b in zip(q1.parameters(), q2.parameters()):
        assert torch.equal(a, b)
    q3, d3 = mixed.quantize_layers(net, {"0.weight": 2})
    assert list(d3) == ["0.weight"] and torch.equal(q3[2].weight, net[2].weight)
    with pytest.raises(ValueError, match="does not have"):
        mixed.quantize_layers(net, {"nope": 2})


def test_layer_sensitivity_one_layer_at_a_time_and_additivity():
    net = _net()
    x = [torch.randn(16, 6, generator=torch.Generator().manual_seed(1))]
    sens = mixed.layer_sensitivity(net, x, [2, 4, 8], "uniform", False)
    assert sens.names == ("0.weight", "2.weight") and sens.output.shape == (2, 3)
    # Quantizing layer 0 alone is exactly what allocation_distortion measures for {layer 0: b}.
    assert sens.output[0, 1] == pytest.approx(mixed.allocation_distortion(net, x, {"0.weight": 4}))
    assert np.all(sens.output[:, 0] > sens.output[:, 2])  # 2 bits hurt more than 8
    both = mixed.allocation_distortion(net, x, {"0.weight": 8, "2.weight": 8})
    assert 0 < both <= 2.0 * sens.output[:, 2].sum()  # roughly additive at high resolution
    assert net[0].weight.requires_grad  # the module is left untouched


def test_hessian_traces_of_a_quadratic_are_exact():
    lin = torch.nn.Linear(3, 1, bias=False)
    X = torch.randn(50, 3, generator=torch.Generator().manual_seed(0))

    def loss(m):
        return 0.5 * (m(X) ** 2).sum()

    # Hessian of 0.5 ||X w||^2 is X^T X; Rademacher v^T H v has mean tr(H), and with 400 probes ~1 %.
    tr = mixed.hessian_traces(loss, lin, ["weight"], n_probes=400, seed=0)["weight"]
    assert tr == pytest.approx(float((X * X).sum()), rel=0.1)
    with pytest.raises(ValueError, match="n_probes"):
        mixed.hessian_traces(loss, lin, n_probes=0)


def test_prop31_coefficients_have_zero_tau_off_layer():
    Ws = [np.eye(2) * 2, np.eye(2) * 3, np.eye(2) * 5]
    assert mixed.prop31_coefficients(Ws).tolist() == [15.0, 10.0, 6.0]


def test_design_mixed_is_never_worse_than_uniform_and_meets_the_budgets():
    rng = np.random.default_rng(0)
    problems = design.random_problems(25, seed=3)
    checked = 0
    for p in problems:
        L = int(rng.integers(2, 7))
        flops = rng.integers(1, 50, L)
        lam = rng.uniform(0.5, 20, L)
        table = mixed.modelled_table(lam, flops * 100, range(1, p.B_max + 1),
                                     coefficients=rng.uniform(0.1, 10, L))
        d = mixed.design_mixed(p, table, flops)
        uni = design.solve_exact(p)
        assert d.feasible == uni.feasible
        if not d.feasible:
            continue
        checked += 1
        assert d.objective <= d.uniform_objective * (1 + 1e-12)
        assert d.average_bits <= d.max_average_bits + 1e-9
        assert p.is_feasible(d.average_bits, d.f_agent, d.f_server)
        assert d.equal_quality_energy <= d.uniform_energy * (1 + 1e-9)
        eq = table[np.arange(L), d.equal_quality_bits - 1].sum()
        assert eq <= d.uniform_objective * (1 + 1e-6)
    assert checked >= 5
