"""Designs across budgets joined with measured quality (Figs 5-8) and the profile table (Table I)."""

from __future__ import annotations

import math

import pytest

from qlib import design
from qlib.captioning.budgets import attach_quality, budget_sweep, profile_designs

GIT = {"n_flop_agent": 212e9, "n_flop_server": 126e9}
QUALITY = {b: float(b) for b in range(1, 17)}  # a quality that grows with the bit-width


def test_budget_sweep_designs_are_feasible_and_quality_is_attached():
    rows = budget_sweep(**GIT, axis="T0", budgets=[0.05, 0.6, 1.2], fixed=2.0,
                        methods=("exact", "fixed-frequency", "random-feasible"), progress=False)
    assert len(rows) == 9
    out = attach_quality(rows, QUALITY)
    for r in out:
        if r["feasible"]:
            p = design.Problem(**GIT, T0=r["budget"], E0=2.0)
            assert p.is_feasible(r["bit_width"], r["f_agent"], r["f_server"])
        else:
            assert math.isnan(r["CIDEr"])
    exact = {r["budget"]: r for r in out if r["method"] == "exact"}
    assert not exact[0.05]["feasible"] and exact[0.6]["bit_width"] < exact[1.2]["bit_width"]
    rnd = [r for r in out if r["method"] == "random-feasible" and r["feasible"]]
    # Random reports the mean over feasible trials: never above the optimum.
    for r in rnd:
        assert r["CIDEr"] <= exact[r["budget"]]["CIDEr"]
    with pytest.raises(ValueError, match="quality must hold every bit-width"):
        attach_quality(rows, {1: 0.0, 2: 1.0})


def test_profiles_reverse_between_delay_and_energy_budgets():
    profiles = {"low": 0.5e9, "medium": 1.0e9, "high": 2.0e9}
    rows = profile_designs(**GIT, f_profiles=profiles, delay_budgets=[0.8, 1.6], energy_budgets=[0.05, 0.2])
    bits = {(r["profile"], r["budget_kind"], r["budget"]): r["bit_width"] or 0 for r in rows}
    for T0 in (0.8, 1.6):  # delay binds: faster is better
        assert bits[("low", "delay", T0)] <= bits[("medium", "delay", T0)] <= bits[("high", "delay", T0)]
    for E0 in (0.05, 0.2):  # energy binds: slower is better (E grows with f^2)
        assert bits[("low", "energy", E0)] >= bits[("medium", "energy", E0)] >= bits[("high", "energy", E0)]
    assert bits[("high", "delay", 1.6)] > bits[("low", "delay", 1.6)]
    assert bits[("low", "energy", 0.05)] > bits[("high", "energy", 0.05)]


def test_bad_input():
    with pytest.raises(ValueError, match="axis"):
        budget_sweep(**GIT, axis="F0", budgets=[1.0], fixed=1.0)
    with pytest.raises(ValueError, match="methods"):
        budget_sweep(**GIT, axis="T0", budgets=[1.0], fixed=1.0, methods=("greedy",))
    with pytest.raises(ValueError, match="f_profiles"):
        profile_designs(**GIT, f_profiles={"x": 3e9}, delay_budgets=[1.0], energy_budgets=[1.0])
