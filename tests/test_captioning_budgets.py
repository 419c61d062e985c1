"""Designs across budgets joined with measured quality (Figs 5-8) and the profile table (Table I)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from qlib import design
from qlib.captioning import budgets
from qlib.captioning.budgets import attach_quality, budget_sweep, profile_designs
from qlib.captioning.metrics import SampleScores

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
    # Random is valued at the bit-width its solver returns: never above the optimum.
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


def test_one_workload_split_counts_the_frames_the_quality_uses():
    video = budgets.workload("git-base-vatex")
    assert video.n_frames == budgets.VIDEO_FRAMES == 4
    six = budgets.workload("git-base-vatex", n_frames=6)  # the paper's 212 GFLOPs count six frames
    assert six.n_flop_agent == pytest.approx(video.n_flop_agent * 6 / 4, rel=1e-9)
    assert 200e9 < six.n_flop_agent < 215e9


def _runs(values_by_bits, n=60, seed=0):
    """Per-sample accuracies (0/1) with the given means, one SampleScores per bit-width."""
    rng = np.random.default_rng(seed)
    out = {}
    for b, p in values_by_bits.items():
        x = (rng.random(n) < p).astype(float)
        out[(b, "uniform")] = SampleScores({"acc": np.column_stack([x, np.ones(n)])}, {})
    return out


def test_quality_table_and_seed_bands_reach_the_rows():
    curve = {b: min(0.9, 0.1 * b) for b in range(1, 17)}
    scores = {f"seed{k}": _runs(curve, seed=k) for k in range(3)}
    settings = [(b, "uniform") for b in range(1, 17)]
    table = budgets.quality_table(scores, settings, ["acc"])
    s4 = table[(4, "uniform")]["acc"]
    assert s4["mean"] == pytest.approx(np.mean(s4["per_seed"])) and s4["ci95"][0] <= s4["mean"] <= s4["ci95"][1]
    rows = budget_sweep(**GIT, axis="T0", budgets=[0.05, 0.6, 1.2], fixed=2.0,
                        methods=("exact", "fixed-frequency", "random-feasible"), progress=False)
    out = attach_quality(rows, {b: table[(b, "uniform")]["acc"] for b in range(1, 17)}, name="acc")
    for r in out:
        if r["feasible"]:
            assert r["acc_min"] <= r["acc"] <= r["acc_max"] and len(r["acc_ci95"]) == 2
        else:
            assert math.isnan(r["acc"]) and r["acc_ci95"] is None
    cmp = budgets.compare_methods(rows, scores, "uniform", name="acc", reference="exact")
    verdicts = {(c["budget"], c["method"]): c for c in cmp}
    assert verdicts[(0.05, "fixed-frequency")]["verdict"] == "neither feasible"
    for c in cmp:
        if c["difference"] is not None:
            assert c["verdict"] in ("tie", "reference better", "reference worse")
            assert (c["verdict"] == "tie") == (c["ci95"][0] <= 0 <= c["ci95"][1])
    with pytest.raises(ValueError, match="reference"):
        budgets.compare_methods(rows, scores, "uniform", name="acc", reference="sca")
    with pytest.raises(ValueError, match="not scored"):
        budgets.quality_table(scores, [(17, "uniform")], ["acc"])


def test_identical_designs_tie_and_far_apart_bit_widths_do_not():
    scores = {"m": _runs({1: 0.0, 8: 0.9, 9: 0.9}, n=200)}
    rows = [{"budget": 1.0, "method": "exact", "feasible": True, "bit_width": 8},
            {"budget": 1.0, "method": "ppo", "feasible": True, "bit_width": 8},
            {"budget": 1.0, "method": "fixed-frequency", "feasible": True, "bit_width": 1}]
    cmp = {c["method"]: c for c in budgets.compare_methods(rows, scores, "uniform", name="acc", reference="exact")}
    assert cmp["ppo"]["verdict"] == "tie" and cmp["ppo"]["difference"] == 0.0
    assert cmp["fixed-frequency"]["verdict"] == "reference better"


def test_plateau_is_where_the_bit_widths_tie_with_full_precision():
    curve = {1: 0.0, 2: 0.05, 3: 0.5, 4: 0.88, 5: 0.9, 6: 0.9, None: 0.9}
    scores = {f"s{k}": {(b, "uniform"): v for (b, _), v in _runs({b: p for b, p in curve.items()}, n=300,
                                                                  seed=k).items()} for k in range(2)}
    out = budgets.versus_full_precision(scores, [1, 2, 3, 4, 5, 6], "uniform", "acc")
    verdicts = [r["verdict"] for r in out["rows"]]
    assert verdicts[:3] == ["below"] * 3 and out["plateau"] in (4, 5)
    assert all(v == "tie" for v in verdicts[out["plateau"] - 1:])
