"""Caption quality of the joint designs under delay and energy budgets (paper Sec. VI-C, Figs 5–8, Table I).

A design (Sec. V) fixes the agent's bit-width :math:`\\hat b` and the clock frequencies; the
caption quality it buys is the measured CIDEr of the split model with its encoder quantized
to :math:`\\hat b` bits (the cached sweep of :mod:`qlib.captioning.sweep`). This module runs the
solvers of :mod:`qlib.design` across budgets (:func:`budget_sweep`) and joins the results with
a bit-width → quality table (:func:`attach_quality`); :func:`profile_designs` reproduces the
testbed experiment of Table I, where the agent can only pick among a few frequency profiles.

The delay and energy model is that of eqs. (4)–(9) with the workload split of the named model
(:func:`qlib.costs.model_costs`); it does not depend on the quantizer, so one design serves the
uniform and the power-of-two quantizer alike, and only the quality lookup differs.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from qlib import design, system

__all__ = ["METHODS", "METHOD_LABELS", "AGENT_MODULES", "workload", "budget_sweep", "attach_quality",
           "profile_designs", "ppo_available"]

#: Solver names in the order of the paper's legends.
METHODS = ("sca", "exact", "ppo", "fixed-frequency", "random-feasible")
METHOD_LABELS = {"sca": "proposed (SCA, Alg. 1)", "exact": "exact optimum", "ppo": "PPO-based",
                 "fixed-frequency": "fixed frequency", "random-feasible": "feasible random"}


#: The modules :class:`qlib.captioning.model.SplitCaptioner` puts on the agent, per model type.
AGENT_MODULES = {"git": ("image_encoder",), "blip-2": ("vision_model",), "blip_2": ("vision_model",)}


def workload(name: str, n_frames: int | None = None) -> Any:
    """Agent/server FLOPs of a paper-scale model, split exactly as :class:`SplitCaptioner` splits it.

    The agent runs the vision encoder only (the part that is quantized, whose workload eq. (4)
    scales with :math:`\\hat b`); the server runs the rest, including BLIP-2's Q-Former and GIT's
    visual projection, which :func:`qlib.costs.model_costs` counts on the agent by default
    (about 2 % of BLIP-2's agent FLOPs, under 1 % of GIT's).

    Parameters
    ----------
    name : str
        A cost-table name or hub id (``"blip2-opt-2.7b"``, ``"git-base-vatex"``, ...).
    n_frames : int, optional
        Video frames (default: the model config's, 6 for GIT-VaTeX).

    Returns
    -------
    qlib.costs.ModelCosts
    """
    from qlib.costs import load_config, model_costs

    kind = getattr(load_config(name), "model_type", "")
    if kind not in AGENT_MODULES:
        raise ValueError(f"name must be a GIT or BLIP-2 model, got {name!r} (model_type={kind!r})")
    return model_costs(name, n_frames=n_frames, agent_modules=AGENT_MODULES[kind])


def ppo_available() -> bool:
    """Whether the committed PPO policy of :mod:`qlib.ppo_env` is present."""
    try:
        from qlib import ppo_env
    except ImportError:  # pragma: no cover - ships with qlib
        return False
    return ppo_env.DEFAULT_POLICY_PATH.exists()


def _solve(problem: design.Problem, method: str, seed: int) -> design.Solution:
    if method == "sca":
        return design.solve_sca(problem)
    if method == "exact":
        return design.solve_exact(problem)
    if method == "ppo":
        return design.solve_ppo(problem)
    if method == "fixed-frequency":
        return design.solve_fixed_frequency(problem)
    if method == "random-feasible":
        return design.solve_random_feasible(problem, n_samples=400, seed=seed)
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def budget_sweep(n_flop_agent: float, n_flop_server: float, axis: str, budgets: Sequence[float], fixed: float,
                 methods: Sequence[str] = METHODS, seed: int = 0, progress: bool = True,
                 **problem_kw: Any) -> list[dict[str, Any]]:
    """Designs of every method across one budget axis (Figs 5–8).

    Parameters
    ----------
    n_flop_agent, n_flop_server : float
        Workloads :math:`N_{\\mathrm{FLOP}}`, :math:`\\tilde N_{\\mathrm{FLOP}}` (eqs. 4–5).
    axis : {"T0", "E0"}
        The budget that varies; the other is held at ``fixed``.
    budgets : sequence of float
        Values of the varying budget (> 0).
    methods : sequence of str
        Subset of :data:`METHODS`.
    problem_kw
        Further :class:`qlib.design.Problem` fields (``lam``, ``B_max``, hardware constants).

    Returns
    -------
    list of dict
        One row per (budget, method): ``budget``, ``method``, ``feasible``, ``bit_width``,
        ``f_agent``, ``f_server``, ``delay``, ``energy``, ``samples`` (feasible random draws).
    """
    from tqdm import tqdm  # text bar: tqdm.auto warns in notebooks without ipywidgets

    if axis not in ("T0", "E0"):
        raise ValueError(f"axis must be 'T0' or 'E0', got {axis!r}")
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise ValueError(f"methods must be a subset of {METHODS}, got {bad}")
    rows = []
    for budget in tqdm(list(budgets), desc=f"designs over {axis}", disable=not progress,
                       mininterval=0, miniters=1):
        kw = {"T0": float(budget), "E0": float(fixed)} if axis == "T0" else {"T0": float(fixed), "E0": float(budget)}
        problem = design.Problem(n_flop_agent=n_flop_agent, n_flop_server=n_flop_server, **kw, **problem_kw)
        for method in methods:
            sol = _solve(problem, method, seed)
            rows.append({"budget": float(budget), "method": method, "feasible": bool(sol.feasible),
                         "bit_width": sol.bit_width, "f_agent": sol.f_agent, "f_server": sol.f_server,
                         "delay": sol.delay, "energy": sol.energy, "samples": tuple(sol.samples)})
    return rows


def attach_quality(rows: Sequence[Mapping[str, Any]], quality: Mapping[int, float],
                   name: str = "CIDEr") -> list[dict[str, Any]]:
    """Add the measured quality at each design's bit-width (NaN where no design is feasible).

    The feasible-random baseline reports the mean over its feasible trials, as the paper
    evaluates "only feasible trials" (the best trial would coincide with the exact optimum).
    """
    needed = {int(b) for row in rows if row["feasible"]
              for b in ((row.get("samples") or ()) if row["method"] == "random-feasible" else ()) + (row["bit_width"],)}
    missing = sorted(needed - {int(b) for b in quality})
    if missing:
        raise ValueError(f"quality must hold every bit-width a design chooses; missing {missing} "
                         "(measure b̂ = 1…B_max)")
    out = []
    for row in rows:
        r = dict(row)
        if not r["feasible"]:
            r[name] = math.nan
        elif r["method"] == "random-feasible" and r.get("samples"):
            r[name] = float(np.mean([quality[int(b)] for b in r["samples"]]))
        else:
            r[name] = float(quality[int(r["bit_width"])])
        out.append(r)
    return out


def profile_designs(n_flop_agent: float, n_flop_server: float, f_profiles: Mapping[str, float],
                    delay_budgets: Sequence[float], energy_budgets: Sequence[float], B_max: int = 16,
                    hw: system.Hardware | None = None) -> list[dict[str, Any]]:
    """Table I: the largest bit-width each agent frequency profile allows under one budget.

    The agent frequency is fixed by the profile (the testbed cannot tune it finely); the server
    frequency is free in :math:`(0, \\tilde f^{\\max}]`. Under a delay-only budget the server runs at
    :math:`\\tilde f^{\\max}` and :math:`\\hat b` is the largest with :math:`T \\le T_0` (eq. 8);
    under an energy-only budget the server can run arbitrarily slowly, so its energy (eq. 7)
    vanishes and :math:`\\hat b` is the largest with the agent energy (eq. 6) :math:`\\le E_0`.

    Returns
    -------
    list of dict
        ``profile``, ``f_agent``, ``budget_kind`` (``"delay"``/``"energy"``), ``budget``,
        ``bit_width`` (None if even 1 bit misses the budget), ``delay``, ``energy``.
    """
    hw = hw or system.Hardware()
    if not isinstance(B_max, (int, np.integer)) or not 1 <= B_max <= hw.b_full:
        raise ValueError(f"B_max must be an integer in [1, {hw.b_full}], got {B_max!r}")
    bits = np.arange(1, int(B_max) + 1)
    rows = []
    for profile, f in f_profiles.items():
        if not 0 < f <= hw.f_agent_max:
            raise ValueError(f"f_profiles[{profile!r}] must be in (0, f_agent_max={hw.f_agent_max:g}], got {f!r}")
        t = np.asarray(system.total_delay(bits, n_flop_agent, n_flop_server, f, hw.f_server_max, hw))
        e_agent = np.asarray(system.agent_energy(bits, n_flop_agent, f, hw))
        for kind, budgets, used in (("delay", delay_budgets, t), ("energy", energy_budgets, e_agent)):
            for budget in budgets:
                if not budget > 0:
                    raise ValueError(f"{kind} budgets must be > 0, got {budget!r}")
                ok = used <= budget * (1 + 1e-9)
                b = int(bits[ok].max()) if ok.any() else None
                rows.append({"profile": profile, "f_agent": float(f), "budget_kind": kind, "budget": float(budget),
                             "bit_width": b, "delay": float(t[b - 1]) if b else None,
                             "energy": float(e_agent[b - 1]) if b else None})
    return rows
