"""The uplink (beyond the paper): payload, transmission delay and energy, (P1) with the uplink,
the joint design over weight bits, activation bits and the split, and its brute-force check."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from qlib import design, system, uplink


# ---------------------------------------------------------------- qlib.system


def test_payload_delay_energy_values_and_broadcast():
    assert float(system.embedding_bits(257, 1408, 16)) == 257 * 1408 * 16
    assert float(system.uplink_delay(8e6, 4e6)) == 2.0
    assert float(system.uplink_energy(8e6, 4e6, 0.25)) == 0.5
    out = system.uplink_delay(system.embedding_bits(32, 768, np.arange(1, 17)), np.array([[1e6], [1e7]]))
    assert out.shape == (2, 16)
    assert np.allclose(out[0] / out[1], 10.0)


@pytest.mark.parametrize("call, name", [
    (lambda: system.embedding_bits(0, 8, 8), "n_tokens"),
    (lambda: system.embedding_bits(2.5, 8, 8), "n_tokens"),
    (lambda: system.embedding_bits(4, -1, 8), "dim"),
    (lambda: system.embedding_bits(4, 8, 0), "activation_bits"),
    (lambda: system.embedding_bits(4, 8, 65), "activation_bits"),
    (lambda: system.uplink_delay(-1, 1e6), "payload_bits"),
    (lambda: system.uplink_delay(1, 0), "rate_bps"),
    (lambda: system.uplink_delay(1, math.nan), "rate_bps"),
    (lambda: system.uplink_energy(1, 1e6, -0.1), "tx_power_w"),
    (lambda: system.total_delay(8, 1e9, 1e9, 1e9, 1e9, payload_bits=1.0), "rate_bps"),
    (lambda: system.total_energy(8, 1e9, 1e9, 1e9, 1e9, payload_bits=1.0, rate_bps=1e6), "tx_power_w"),
])
def test_bad_uplink_inputs_name_the_parameter(call, name):
    with pytest.raises(ValueError, match=name):
        call()


def test_eqs_8_9_unchanged_without_uplink_and_additive_with_it():
    rng = np.random.default_rng(0)
    b, na, ns = rng.uniform(1, 32, 50), rng.uniform(1e9, 1e12, 50), rng.uniform(1e9, 1e12, 50)
    f, fs = rng.uniform(1e8, 2e9, 50), rng.uniform(1e8, 1e10, 50)
    old_t = system.agent_delay(b, na, f) + system.server_delay(ns, fs)
    old_e = system.agent_energy(b, na, f) + system.server_energy(ns, fs)
    assert np.array_equal(system.total_delay(b, na, ns, f, fs), old_t)  # bit for bit
    assert np.array_equal(system.total_energy(b, na, ns, f, fs), old_e)
    L, r = 1e6, 5e6
    assert np.allclose(system.total_delay(b, na, ns, f, fs, payload_bits=L, rate_bps=r), old_t + 0.2)
    assert np.allclose(system.total_energy(b, na, ns, f, fs, payload_bits=L, rate_bps=r, tx_power_w=1.5), old_e + 0.3)


# ---------------------------------------------------------------- qlib.design.Problem


def _without(p: design.Solution) -> design.Solution:
    return dataclasses.replace(p, solve_time=0.0)


def test_problem_without_uplink_gives_todays_answers():
    probs = design.random_problems(300, seed=3)
    ref = design.solve_exact(probs)
    # Uplink fields set but no rate: ignored, identical results (bit for bit).
    same = design.solve_exact([dataclasses.replace(p, tx_power_w=2.0, payload_elements=1000, activation_bits=4)
                               for p in probs])
    assert [_without(s) for s in same] == [_without(s) for s in ref]
    # A rate but an empty payload: the same designs, the same delay and energy.
    zero = design.solve_exact([dataclasses.replace(p, rate_bps=1e6, tx_power_w=1.0) for p in probs])
    for s, z in zip(ref, zero):
        assert (s.feasible, s.bit_width, s.f_agent, s.f_server, s.delay, s.energy) == \
               (z.feasible, z.bit_width, z.f_agent, z.f_server, z.delay, z.energy)
    assert any(s.feasible for s in ref) and not all(s.feasible for s in ref)


def test_uplink_problem_is_p1_on_reduced_budgets_and_meets_full_budgets():
    probs = [dataclasses.replace(p, rate_bps=2e7, tx_power_w=0.5, payload_elements=257 * 1408, activation_bits=16)
             for p in design.random_problems(200, seed=4)]
    sols = design.solve_exact(probs)
    n_ok = 0
    for p, s in zip(probs, sols):
        t_up, e_up = p.uplink_delay(), p.uplink_energy()
        assert t_up == pytest.approx(257 * 1408 * 16 / 2e7) and e_up == pytest.approx(0.5 * t_up)
        if t_up >= p.T0 or e_up >= p.E0:
            assert not s.feasible and s.reason.split(":")[0] in ("delay", "energy")
            continue
        r = design.solve_exact(p.computation_only())
        assert (r.feasible, r.bit_width) == (s.feasible, s.bit_width)
        if s.feasible:
            n_ok += 1
            assert s.delay == pytest.approx(r.delay + t_up) and s.energy == pytest.approx(r.energy + e_up)
            assert s.delay <= p.T0 * (1 + 1e-9) and s.energy <= p.E0 * (1 + 1e-9)
            assert p.is_feasible(s.bit_width, s.f_agent, s.f_server)
            if s.bit_width < p.B_max:  # one more bit would break a budget at any frequencies
                assert not design.optimal_frequencies(p.computation_only(), s.bit_width + 1)["feasible"]
    assert n_ok > 20


def test_other_solvers_refuse_an_uplink_problem_clearly():
    p = design.Problem(n_flop_agent=64e9, n_flop_server=128e9, T0=2.0, E0=2.0, rate_bps=1e7,
                       payload_elements=1000)
    with pytest.raises(ValueError, match="computation_only"):
        design.solve_sca(p)
    with pytest.raises(ValueError, match="computation_only"):
        design.optimal_frequencies(p, 8)


@pytest.mark.parametrize("kw, name", [({"rate_bps": 0.0}, "rate_bps"), ({"rate_bps": -1.0}, "rate_bps"),
                                      ({"rate_bps": 1e6, "tx_power_w": -1.0}, "tx_power_w"),
                                      ({"rate_bps": 1e6, "payload_elements": 2.5}, "payload_elements"),
                                      ({"rate_bps": 1e6, "payload_elements": -1}, "payload_elements"),
                                      ({"rate_bps": 1e6, "activation_bits": 0}, "activation_bits"),
                                      ({"rate_bps": "fast"}, "rate_bps")])
def test_bad_uplink_fields_name_the_field(kw, name):
    with pytest.raises(ValueError, match=name):
        design.Problem(n_flop_agent=1e9, n_flop_server=1e9, T0=1.0, E0=1.0, **kw)


# ---------------------------------------------------------------- qlib.uplink


@pytest.fixture(scope="module")
def blip2_splits():
    return uplink.split_points("blip2-opt-2.7b")


def test_split_shapes_from_the_shipped_configs(blip2_splits):
    assert [(s.n_tokens, s.dim) for s in blip2_splits] == [(257, 1408), (32, 768), (32, 2560)]
    # Moving the split deeper adds agent FLOPs and takes them from the server.
    a = [s.n_flop_agent for s in blip2_splits]
    assert a[0] < a[1] < a[2]
    tot = [s.n_flop_agent + s.n_flop_server for s in blip2_splits]
    assert np.allclose(tot, tot[0], rtol=1e-12)
    git = uplink.split_points("git-base-vatex")
    frame = [s for s in git if s.n_frames == 1]
    clip = [s for s in git if s.n_frames == 6]
    assert {(s.n_tokens, s.dim) for s in frame} == {(197, 768)}
    assert {(s.n_tokens, s.dim) for s in clip} == {(6 * 197, 768)}
    assert all(c.n_flop_agent > 5 * f.n_flop_agent for f, c in zip(frame, clip))


def test_vit_shape_matches_a_meta_forward():
    import torch

    from qlib.costs import build_meta_model, load_config

    for name, attr, expect in (("blip2-opt-2.7b", "vision_model", (257, 1408)),
                               ("git-base", "git.image_encoder", (197, 768))):
        model = build_meta_model(load_config(name))
        enc = model.get_submodule(attr)
        size = enc.config.image_size
        with torch.no_grad():
            out = enc(torch.empty(1, 3, size, size, device="meta")).last_hidden_state
        assert tuple(out.shape[1:]) == expect
        assert (uplink.split_points(name)[0].n_tokens, uplink.split_points(name)[0].dim) == expect


def _bases(n: int, seed: int) -> list[design.Problem]:
    return design.random_problems(n, seed=seed)


def test_joint_equals_brute_force(blip2_splits):
    rng = np.random.default_rng(7)
    checked = 0
    for p in _bases(6, seed=11):
        rate = float(10 ** rng.uniform(6, 9))
        acts = sorted(set(rng.choice(np.arange(1, 17), size=3, replace=False).tolist()))
        for splits in (None, blip2_splits[:2]):
            base = dataclasses.replace(p, payload_elements=50_000)
            s = uplink.solve_joint(base, rate, 0.3, acts, splits)
            bf = uplink.brute_force_joint(base, rate, 0.3, acts, splits, n_grid=301)
            assert s.feasible == bf.feasible
            if s.feasible:
                checked += 1
                assert (s.bit_width, s.activation_bits, s.split) == (bf.bit_width, bf.activation_bits, bf.split)
                assert s.energy <= bf.energy * (1 + 1e-6)  # the closed form is the least energy
    assert checked >= 4


def test_optimal_weight_bits_never_increase_as_the_rate_falls(blip2_splits):
    rates = np.geomspace(1e10, 1e5, 40)
    n_fell = 0
    for p in _bases(8, seed=5):
        for acts, splits in (((16,), None), ((2, 4, 8, 16), None), ((4, 16), blip2_splits)):
            base = dataclasses.replace(p, payload_elements=100_000)
            sols = uplink.solve_joint(base, rates, 0.2, acts, splits)
            bits = [s.bit_width if s.feasible else 0 for s in sols]
            assert all(b1 >= b2 for b1, b2 in zip(bits, bits[1:])), bits
            n_fell += bits[0] > bits[-1]
    assert n_fell > 4


def test_rate_where_bits_fall_is_the_threshold():
    base = design.Problem(n_flop_agent=212e9, n_flop_server=128e9, T0=2.0, E0=2.0, payload_elements=907_776)
    ref = design.solve_exact(base).bit_width
    r = uplink.rate_where_bits_fall(base, 0.2, rtol=1e-9)
    assert uplink.solve_joint(base, r * 1.001, 0.2).bit_width == ref
    assert uplink.solve_joint(base, r / 1.001, 0.2).bit_width < ref
    assert uplink.rate_where_bits_fall(base, 0.2, (2,)) < r  # fewer activation bits: the fall starts lower


def test_uplink_eating_a_budget_is_infeasible_with_a_reason():
    base = design.Problem(n_flop_agent=64e9, n_flop_server=128e9, T0=1.0, E0=2.0, payload_elements=1_000_000)
    s = uplink.solve_joint(base, 1e6, 0.2)  # 16 s of air time
    assert not s.feasible and s.reason.startswith("delay")
    s = uplink.solve_joint(base, 1e9, 1e4)  # 10 kW radio
    assert not s.feasible and s.reason.startswith("energy")


def test_admissible_activation_bits():
    diffs = {1: (-3.0, -2.0), 2: (-0.5, -0.01), 3: (-0.1, 0.05), 4: (-0.05, 0.1)}
    assert uplink.admissible_activation_bits(diffs) == [3, 4]
    assert uplink.admissible_activation_bits(diffs, tolerance=0.02) == [2, 3, 4]
    with pytest.raises(ValueError, match="tolerance"):
        uplink.admissible_activation_bits(diffs, tolerance=-1)
    with pytest.raises(ValueError, match="activation_bits"):
        uplink.solve_joint(design.Problem(n_flop_agent=1e9, n_flop_server=1e9, T0=1, E0=1), 1e6, 0.1, [])


def test_split_map_agrees_with_solve_joint(blip2_splits):
    base = design.Problem(n_flop_agent=1e9, n_flop_server=1e9, T0=3.5, E0=2.0)
    T0s, rates = [1.0, 3.5], [1e5, 6e6, 1e9]
    m = uplink.split_map(base, T0s, rates, 0.2, (16,), blip2_splits)
    names = [s.name for s in blip2_splits]
    for i, t0 in enumerate(T0s):
        for j, r in enumerate(rates):
            s = uplink.solve_joint(dataclasses.replace(base, T0=t0), r, 0.2, (16,), blip2_splits)
            assert m["bit_width"][i, j] == (s.bit_width if s.feasible else 0)
            assert m["split"][i, j] == (names.index(s.split) if s.feasible else -1)
            assert m["bit_width"][i, j] == m["bits_by_split"][:, i, j].max()
    # At LTE's rate the 14.7x smaller payload after the Q-Former buys weight bits.
    assert m["bits_by_split"][1, 1, 1] > m["bits_by_split"][0, 1, 1]
