"""The quality-aware design (issue 13, item 6): least energy subject to a measured quality target."""

from __future__ import annotations

import numpy as np
import pytest

from qlib import design, quality

# A saturating curve like the measured ones: blind at 1-2 bits, a plateau from 4.
ACC = {b: v for b, v in zip(range(1, 17), [0.0, 0.01, 0.6, 0.8, 0.81, 0.82] + [0.815] * 10)}
CIDER = {b: v for b, v in zip(range(1, 17), [1.0, 1.8, 4.5, 5.0, 5.06, 5.19] + [5.17] * 10)}
TABLE = {"scene_accuracy": ACC, "CIDEr": CIDER}


def test_smallest_bit_width():
    assert quality.smallest_bit_width(TABLE, {"scene_accuracy": 0.75}) == 4
    assert quality.smallest_bit_width(TABLE, {"scene_accuracy": 0.75, "CIDEr": 5.1}) == 6
    assert quality.smallest_bit_width(TABLE, {"scene_accuracy": 0.9}) is None
    assert quality.smallest_bit_width(TABLE, {"scene_accuracy": 0.75}, B_max=3) is None
    assert quality.smallest_bit_width({"a": {3: None, 4: 1.0}}, {"a": 0.5}) == 4  # undefined: not met


def test_least_energy_is_at_the_smallest_bit_width_that_meets_the_target():
    for p in design.random_problems(60, seed=1):
        qa = quality.solve_quality_aware(p, TABLE, {"scene_accuracy": 0.75})
        bits = np.arange(1, p.B_max + 1, dtype=float)
        f = design.optimal_frequencies(p, bits)
        ok = np.asarray(f["feasible"]) & np.array([ACC[int(b)] >= 0.75 for b in bits])
        if not ok.any():
            assert not qa.feasible and qa.reason
            continue
        # Brute force over every bit-width: the least energy among those meeting target and budgets.
        best = int(bits[ok][np.argmin(np.asarray(f["energy"])[ok])])
        assert qa.feasible and qa.bit_width == best == 4
        assert p.is_feasible(qa.bit_width, qa.f_agent, qa.f_server)
        assert qa.energy == pytest.approx(float(p.energy(qa.bit_width, qa.f_agent, qa.f_server)))


def test_compare_with_p1_saves_energy_past_the_plateau():
    problems = design.random_problems(80, seed=2)
    rows = quality.compare_with_p1(problems, TABLE, {"scene_accuracy": 0.75})
    both = [r for r in rows if r["saved"] is not None]
    assert len(both) > 10
    for r in both:
        assert r["qa_bit_width"] <= r["p1_bit_width"] and r["saved"] >= -1e-12 and r["p1_meets_target"]
        assert r["saved_fraction"] == pytest.approx(r["saved"] / r["p1_energy"])
    # Whenever P1 goes past 4 bits it pays for bits the target does not need: strictly more energy.
    assert all(r["saved"] > 0 for r in both if r["p1_bit_width"] > 4)
    # A budget too small for the target: P1 still designs (fewer bits), the quality-aware design says why not.
    short = [r for r in rows if r["p1_bit_width"] is not None and r["p1_bit_width"] < 4]
    assert short
    assert all(not r["qa_feasible"] and "afford" in r["qa_reason"] and r["p1_meets_target"] is False for r in short)


def test_bad_input():
    p = design.Problem(n_flop_agent=64e9, n_flop_server=128e9, T0=2.0, E0=2.0)
    with pytest.raises(ValueError, match="targets"):
        quality.solve_quality_aware(p, TABLE, {})
    with pytest.raises(ValueError, match="BLEU"):
        quality.solve_quality_aware(p, TABLE, {"BLEU-4": 0.5})
    with pytest.raises(ValueError, match="finite"):
        quality.solve_quality_aware(p, {"a": {4: float("nan")}}, {"a": 0.5})
    with pytest.raises(ValueError, match="integer bit-widths"):
        quality.smallest_bit_width({"a": {0.5: 1.0}}, {"a": 0.5})
