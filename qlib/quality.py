"""Quality-aware design: least energy subject to a measured quality target (beyond the paper).

Problem (P1) (eq. 30) maximizes the bit-width :math:`\\hat b` the budgets allow, since its
objective, the distortion-bound gap, falls with every extra bit. A measured quality curve
(CIDEr, scene accuracy) saturates: beyond a few bits the captions no longer change
measurably. Past that plateau, P1's design keeps paying energy for bits that buy nothing
measurable. The quality-aware design asks instead

.. math::

    \\min_{\\hat b, f, \\tilde f} E(\\hat b, f, \\tilde f) \\quad \\text{s.t.}\\quad
    Q_m(\\hat b) \\ge q_m \\;\\forall m,\\; T \\le T_0,\\; E \\le E_0,\\; (30c)–(30e),

with :math:`Q_m` a measured quality table (the caller passes the lower end of its 95 %
interval to ask for the target with 95 % confidence over test samples). For a fixed
:math:`\\hat b` the least energy over :math:`T \\le T_0` is the closed form of
:func:`qlib.design.optimal_frequencies`, and it grows with :math:`\\hat b` (eqs. 4–9), so the
optimum is the smallest bit-width that meets every target, if the budgets afford it.

The module is model-level: it takes plain tables, never a captioner, so it serves any
measured quality (it does not import :mod:`qlib.captioning`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from qlib import design

__all__ = ["QualityDesign", "smallest_bit_width", "solve_quality_aware", "compare_with_p1"]


@dataclass(frozen=True)
class QualityDesign:
    """A least-energy design that meets quality targets.

    Attributes
    ----------
    feasible : bool
        Whether a bit-width meets every target within the budgets.
    bit_width : int or None
        The smallest bit-width meeting every target (None if none does).
    f_agent, f_server, delay, energy : float or None
        Least-energy frequencies at ``bit_width`` (:func:`qlib.design.optimal_frequencies`),
        the delay (eq. 8) and energy (eq. 9) they give.
    reason : str
        Why it is infeasible: no measured bit-width meets the targets, or the budgets do not
        afford the bits the targets need.
    """

    feasible: bool
    bit_width: int | None = None
    f_agent: float | None = None
    f_server: float | None = None
    delay: float | None = None
    energy: float | None = None
    reason: str = ""


def _check_tables(quality: Mapping[str, Mapping[int, float]], targets: Mapping[str, float]) -> None:
    if not targets:
        raise ValueError("targets must name at least one metric")
    for name, target in targets.items():
        if name not in quality:
            raise ValueError(f"targets names {name!r}, which quality does not hold (has {sorted(quality)})")
        if not np.isfinite(float(target)):
            raise ValueError(f"targets[{name!r}] must be a finite number, got {target!r}")
        table = quality[name]
        if not table:
            raise ValueError(f"quality[{name!r}] must hold at least one bit-width")
        for b, v in table.items():
            if isinstance(b, bool) or int(b) != b or not 1 <= int(b) <= 64:
                raise ValueError(f"quality[{name!r}] keys must be integer bit-widths >= 1, got {b!r}")
            if v is not None and not np.isfinite(float(v)):
                raise ValueError(f"quality[{name!r}][{b}] must be finite or None, got {v!r}")


def smallest_bit_width(quality: Mapping[str, Mapping[int, float]], targets: Mapping[str, float],
                       B_max: int | None = None) -> int | None:
    """The smallest measured bit-width at which every metric reaches its target.

    Parameters
    ----------
    quality : mapping
        ``{metric: {bit_width: value}}``; pass the lower 95 % bounds to ask for the target with
        95 % confidence. A value of ``None`` counts as not meeting the target.
    targets : mapping
        ``{metric: target}``, e.g. ``{"scene_accuracy": 0.75}``.
    B_max : int, optional
        Ignore bit-widths above it.

    Returns
    -------
    int or None
        None if no measured bit-width (<= ``B_max``) meets every target.

    Examples
    --------
    >>> smallest_bit_width({"acc": {2: 0.1, 3: 0.6, 4: 0.8, 8: 0.81}}, {"acc": 0.75})
    4
    """
    _check_tables(quality, targets)
    common = set.intersection(*(set(int(b) for b in quality[m]) for m in targets))
    ok = [b for b in sorted(common) if (B_max is None or b <= B_max)
          and all(quality[m][b] is not None and quality[m][b] >= targets[m] for m in targets)]
    return ok[0] if ok else None


def solve_quality_aware(problem: design.Problem, quality: Mapping[str, Mapping[int, float]],
                        targets: Mapping[str, float]) -> QualityDesign:
    """Least energy subject to measured quality >= targets and the budgets of ``problem``.

    Parameters
    ----------
    problem : qlib.design.Problem
        Workloads, budgets :math:`T_0, E_0` and hardware of (P1) (eqs. 4–9, 30a–30e).
    quality, targets
        As in :func:`smallest_bit_width`.

    Returns
    -------
    QualityDesign
    """
    b = smallest_bit_width(quality, targets, problem.B_max)
    if b is None:
        return QualityDesign(False, reason="no measured bit-width up to B_max meets the quality targets")
    f = design.optimal_frequencies(problem, float(b))
    if not bool(f["feasible"]):
        return QualityDesign(False, bit_width=b, reason=f"{f['reason']}: the budgets do not afford the "
                             f"{b} bits the quality targets need")
    return QualityDesign(True, b, float(f["f_agent"]), float(f["f_server"]), float(f["delay"]), float(f["energy"]))


def compare_with_p1(problems: Sequence[design.Problem], quality: Mapping[str, Mapping[int, float]],
                    targets: Mapping[str, float]) -> list[dict[str, Any]]:
    """P1's design (the exact optimum, least energy among optimal designs) against the
    quality-aware design, problem by problem: the energy saved at the target quality.

    Returns
    -------
    list of dict
        Per problem: ``T0``, ``E0``, ``p1_bit_width``, ``p1_energy`` (None if P1 is infeasible),
        ``qa_bit_width``, ``qa_energy``, ``qa_feasible``, ``qa_reason``, ``saved`` (J, P1 minus
        quality-aware, when both are feasible), ``saved_fraction`` (of P1's energy), and
        ``p1_meets_target`` (whether P1's bit-width meets the targets in the table).
    """
    rows = []
    for p in problems:
        p1 = design.solve_exact(p)
        qa = solve_quality_aware(p, quality, targets)
        meets = None
        if p1.feasible:
            meets = all(quality[m].get(p1.bit_width) is not None and quality[m][p1.bit_width] >= targets[m]
                        for m in targets)
        saved = p1.energy - qa.energy if (p1.feasible and qa.feasible) else None
        rows.append({"T0": p.T0, "E0": p.E0, "p1_bit_width": p1.bit_width, "p1_energy": p1.energy,
                     "qa_bit_width": qa.bit_width, "qa_energy": qa.energy, "qa_feasible": qa.feasible,
                     "qa_reason": qa.reason, "saved": saved,
                     "saved_fraction": saved / p1.energy if saved is not None and p1.energy > 0 else None,
                     "p1_meets_target": meets})
    return rows
