"""Unit tests of qlib.system: eqs. (4)-(9) against hand-computed values, broadcasting, bad input."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from qlib import system
from qlib.system import (
    Hardware,
    agent_delay,
    agent_energy,
    server_delay,
    server_energy,
    total_delay,
    total_energy,
)


def test_hardware_defaults_are_the_papers_section_vi_c():
    hw = Hardware()
    assert (hw.f_agent_max, hw.f_server_max) == (2e9, 10e9)
    assert (hw.c_agent, hw.c_server) == (32, 128)
    assert (hw.eta_agent, hw.eta_server) == (1.0, 2.0)
    assert (hw.psi_agent, hw.psi_server) == (2e-29, 1e-28)
    assert hw.b_full == 32 and isinstance(hw.b_full, int)


def test_hardware_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Hardware().c_agent = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"f_agent_max": 0.0}, "f_agent_max"),
        ({"f_server_max": -1e9}, "f_server_max"),
        ({"c_agent": 0}, "c_agent"),
        ({"c_server": -4}, "c_server"),
        ({"psi_agent": 0.0}, "psi_agent"),
        ({"psi_server": -1e-28}, "psi_server"),
        ({"eta_agent": 0.99}, "eta_agent"),
        ({"eta_server": 0.0}, "eta_server"),
        ({"b_full": 0}, "b_full"),
        ({"b_full": 16.5}, "b_full"),
        ({"f_agent_max": float("nan")}, "f_agent_max"),
        ({"c_server": float("inf")}, "c_server"),
        ({"psi_agent": "2e-29"}, "psi_agent"),
        ({"b_full": True}, "b_full"),
    ],
)
def test_hardware_rejects_non_physical_values(kwargs, name):
    with pytest.raises(ValueError, match=name):
        Hardware(**kwargs)


def test_hardware_accepts_pue_of_exactly_one_and_int_like_floats():
    hw = Hardware(eta_server=1, b_full=16.0)
    assert hw.eta_server == 1.0 and hw.b_full == 16


# Hand-computed values with the paper's defaults (c=32, c~=128, eta=1, eta~=2, psi=2e-29,
# psi~=1e-28, b=32).
def test_agent_delay_hand_value():
    # 8/32 * 1e12 FLOP = 2.5e11 FLOP at 2e9 Hz * 32 FLOP/cycle = 6.4e10 FLOP/s -> 3.90625 s
    assert agent_delay(8, 1e12, 2e9) == pytest.approx(3.90625, rel=1e-14)


def test_server_delay_hand_value():
    # 5.12e12 FLOP / (1e10 Hz * 128) = 4 s
    assert server_delay(5.12e12, 1e10) == pytest.approx(4.0, rel=1e-14)


def test_agent_energy_hand_value():
    # cycles = 4/32 * 6.4e11 / 32 = 2.5e9; energy = 1 * 2.5e9 * 2e-29 * (1.5e9)^2 = 0.1125 J
    assert agent_energy(4, 6.4e11, 1.5e9) == pytest.approx(0.1125, rel=1e-13)


def test_server_energy_hand_value():
    # cycles = 2.56e11 / 128 = 2e9; energy = 2 * 2e9 * 1e-28 * (5e9)^2 = 10 J
    assert server_energy(2.56e11, 5e9) == pytest.approx(10.0, rel=1e-13)


def test_totals_are_the_sums_eq_8_and_9():
    args = (6, 3e11, 9e11, 1.2e9, 7e9)
    assert total_delay(*args) == pytest.approx(agent_delay(6, 3e11, 1.2e9) + server_delay(9e11, 7e9), rel=1e-15)
    assert total_energy(*args) == pytest.approx(agent_energy(6, 3e11, 1.2e9) + server_energy(9e11, 7e9), rel=1e-15)
    # hand values: t = 6/32*3e11/(1.2e9*32) = 1.46484375, t~ = 9e11/(7e9*128)
    assert total_delay(*args) == pytest.approx(1.46484375 + 9e11 / (7e9 * 128), rel=1e-14)


def test_custom_hardware_is_used():
    hw = Hardware(c_agent=1, c_server=1, eta_agent=3, eta_server=1, psi_agent=1e-27, psi_server=1e-27, b_full=8)
    assert agent_delay(4, 1e9, 1e9, hw) == pytest.approx(0.5)
    assert server_delay(1e9, 2e9, hw) == pytest.approx(0.5)
    # 3 * (4/8 * 1e9) * 1e-27 * 1e18 = 1.5 J
    assert agent_energy(4, 1e9, 1e9, hw) == pytest.approx(1.5)
    assert server_energy(1e9, 1e9, hw) == pytest.approx(1.0)


def test_linear_in_bit_width_and_quadratic_energy_in_frequency():
    b = np.arange(1, 17)
    t = agent_delay(b, 1e11, 1e9)
    np.testing.assert_allclose(t / t[0], b, rtol=1e-14)
    e1, e2 = agent_energy(8, 1e11, 1e9), agent_energy(8, 1e11, 2e9)
    assert e2 / e1 == pytest.approx(4.0)
    assert server_energy(1e11, 3e9) / server_energy(1e11, 1e9) == pytest.approx(9.0)


def test_vectorized_sweep_matches_scalar_loop():
    rng = np.random.default_rng(0)
    bits = np.arange(1, 17)[:, None]
    f = np.linspace(0.1e9, 2e9, 500)[None, :]
    n_agent, n_server, f_srv = 2e11, 5e11, 8e9
    T = total_delay(bits, n_agent, n_server, f, f_srv)
    E = total_energy(bits, n_agent, n_server, f, f_srv)
    assert T.shape == E.shape == (16, 500)
    for _ in range(20):
        i, j = rng.integers(16), rng.integers(500)
        assert T[i, j] == pytest.approx(float(total_delay(int(bits[i, 0]), n_agent, n_server, float(f[0, j]), f_srv)))
        assert E[i, j] == pytest.approx(float(total_energy(int(bits[i, 0]), n_agent, n_server, float(f[0, j]), f_srv)))


def test_scalars_give_numpy_scalars_and_lists_work():
    assert np.ndim(agent_delay(8, 1e9, 1e9)) == 0
    assert isinstance(float(server_energy(1e9, 1e9)), float)
    np.testing.assert_allclose(server_delay([1.28e12, 2.56e12], 1e10), [1.0, 2.0])


def test_zero_workload_gives_zero_cost():
    assert agent_delay(8, 0, 1e9) == 0.0
    assert server_energy(0, 5e9) == 0.0


@pytest.mark.parametrize("f", [0.0, -1e9, [1e9, 0.0]])
def test_non_positive_agent_frequency_is_rejected(f):
    with pytest.raises(ValueError, match="f_agent"):
        agent_delay(8, 1e9, f)
    with pytest.raises(ValueError, match="f_agent"):
        agent_energy(8, 1e9, f)
    with pytest.raises(ValueError, match="f_agent"):
        total_delay(8, 1e9, 1e9, f, 1e9)
    with pytest.raises(ValueError, match="f_agent"):
        total_energy(8, 1e9, 1e9, f, 1e9)


@pytest.mark.parametrize("f", [0.0, -1.0, np.array([2e9, -2e9])])
def test_non_positive_server_frequency_is_rejected(f):
    for call in (lambda: server_delay(1e9, f), lambda: server_energy(1e9, f),
                 lambda: total_delay(8, 1e9, 1e9, 1e9, f), lambda: total_energy(8, 1e9, 1e9, 1e9, f)):
        with pytest.raises(ValueError, match="f_server"):
            call()


@pytest.mark.parametrize("bits", [0, -3, 33, [4, 40], float("nan")])
def test_bit_width_out_of_range_is_rejected(bits):
    with pytest.raises(ValueError, match="bit_width"):
        agent_delay(bits, 1e9, 1e9)
    with pytest.raises(ValueError, match="bit_width"):
        agent_energy(bits, 1e9, 1e9)


def test_bit_width_bound_follows_b_full():
    assert agent_delay(16, 1e9, 1e9, Hardware(b_full=16)) > 0
    with pytest.raises(ValueError, match="b_full=16"):
        agent_delay(17, 1e9, 1e9, Hardware(b_full=16))


def test_fractional_bit_width_is_allowed_for_the_relaxation():
    assert agent_delay(2.5, 1e9, 1e9) == pytest.approx(2.5 / 2 * agent_delay(2, 1e9, 1e9))


@pytest.mark.parametrize("name, call", [
    ("n_flop_agent", lambda: agent_delay(8, -1.0, 1e9)),
    ("n_flop_agent", lambda: agent_energy(8, float("inf"), 1e9)),
    ("n_flop_server", lambda: server_delay(-5, 1e9)),
    ("n_flop_server", lambda: server_energy(np.nan, 1e9)),
    ("f_agent", lambda: agent_delay(8, 1e9, float("inf"))),
    ("f_server", lambda: server_delay(1e9, "fast")),
    ("hw", lambda: agent_delay(8, 1e9, 1e9, hw={"c_agent": 32})),
])
def test_other_bad_inputs_name_the_parameter(name, call):
    with pytest.raises(ValueError, match=name):
        call()


def test_public_names():
    assert {"Hardware", "agent_delay", "server_delay", "agent_energy", "server_energy", "total_delay",
            "total_energy"} <= set(system.__all__)


def test_latency_measurement_runs_every_supported_precision():
    t = system.measure_latency_by_precision(width=32, layers=2, batch=4, repeats=2)
    assert "fp32" in t and "int8" in t  # int8 dynamic quantization is in every CPU build of torch
    assert set(t) <= {"fp32", "bf16", "int8"} and all(v > 0 for v in t.values())
    assert system.PRECISION_BITS == {"fp32": 32, "bf16": 16, "int8": 8}


@pytest.mark.parametrize("kwargs, name", [({"width": 0}, "width"), ({"repeats": 1.5}, "repeats"),
                                          ({"precisions": ("fp8",)}, "precisions"), ({"precisions": ()}, "precisions")])
def test_latency_measurement_rejects_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        system.measure_latency_by_precision(**kwargs)


def test_notation_table_reads_hardware_and_has_no_bare_bar_in_math():
    """00's notation table: constants come from Hardware, every row has the header's cell count."""
    from qlib import notation
    from qlib.system import Hardware

    hw = Hardware()
    by_name = {s.name: s for s in notation.SYMBOLS}
    assert by_name["c_agent"].default == f"{hw.c_agent:g}" and by_name["psi_server"].default == f"{hw.psi_server:g}"
    assert by_name["b_full"].default == str(hw.b_full) and by_name["b_full"].source.startswith("this book")
    assert by_name["B_max"].source.startswith("this book") and by_name["f_agent"].source == "Sec. VI-C"
    rows = notation.symbol_table().splitlines()
    assert len({row.count("|") for row in rows}) == 1  # a '|' inside math would add a cell
    assert r"\lvert" in by_name["theta"].tex
