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

__all__ = ["METHODS", "METHOD_LABELS", "AGENT_MODULES", "VIDEO_FRAMES", "workload", "budget_sweep",
           "attach_quality", "quality_table", "compare_methods", "versus_full_precision", "profile_designs", "ppo_available"]

#: Frames per clip, for the quality *and* the cost of a video captioner: the paper samples four
#: frames per VaTeX clip (Sec. VI-C). Its 212.27 GFLOPs for GIT-base count the six frames of the
#: checkpoint's temporal embeddings instead (``qlib.costs``, ``n_frames=6``); we count the frames
#: the model is evaluated on, so cost and quality describe the same computation.
VIDEO_FRAMES = 4

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
        Video frames of a video model (default :data:`VIDEO_FRAMES` = 4, the frames the paper
        samples per clip and the frames the quality is measured on; the checkpoint's maximum,
        6 for GIT-VaTeX, gives the paper's 212 GFLOPs). Ignored by image models (one image).

    Returns
    -------
    qlib.costs.ModelCosts

    Notes
    -----
    The one source of the workload split for chapters 05, 06 and 07.
    """
    from qlib.costs import load_config, model_costs

    config = load_config(name)
    kind = getattr(config, "model_type", "")
    if kind not in AGENT_MODULES:
        raise ValueError(f"name must be a GIT or BLIP-2 model, got {name!r} (model_type={kind!r})")
    video = bool(getattr(config, "num_image_with_embedding", None) or getattr(config, "num_frames", None))
    if n_frames is None and video:
        n_frames = VIDEO_FRAMES
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
        import qlib.ppo_env  # noqa: F401 - the PPO baseline registers itself as method "ppo" of qlib.design

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


def attach_quality(rows: Sequence[Mapping[str, Any]], quality: Mapping[int, Any],
                   name: str = "CIDEr") -> list[dict[str, Any]]:
    """Add the measured quality at each design's bit-width (NaN where no design is feasible).

    ``quality[b]`` is a number, or a summary over seeds from :func:`quality_table`
    (``mean``, ``sd``, ``min``, ``max``, ``ci95``): then the row gets ``name`` (the seed mean)
    and ``name_sd``, ``name_min``, ``name_max``, ``name_ci95`` beside it. Every method is
    valued at the bit-width its :class:`qlib.design.Solution` returns (for feasible random, the
    solver's own definition in :func:`qlib.design.solve_random_feasible`), so the chapters use
    one definition of each baseline.
    """
    needed = {int(row["bit_width"]) for row in rows if row["feasible"]}
    missing = sorted(needed - {int(b) for b in quality})
    if missing:
        raise ValueError(f"quality must hold every bit-width a design chooses; missing {missing} "
                         "(measure b̂ = 1…B_max)")
    out = []
    for row in rows:
        r = dict(row)
        q = quality[int(r["bit_width"])] if r["feasible"] else None
        if isinstance(q, Mapping):
            for key in ("sd", "min", "max", "ci95"):
                r[f"{name}_{key}"] = q.get(key) if q is not None else None
            q = q.get("mean")
        elif not r["feasible"]:
            r.update({f"{name}_{key}": None for key in ("sd", "min", "max", "ci95")} if any(
                isinstance(v, Mapping) for v in quality.values()) else {})
        r[name] = math.nan if q is None else float(q)
        out.append(r)
    return out


def quality_table(scores: Mapping[str, Mapping[Any, Any]], settings: Sequence[Any],
                  names: Sequence[str]) -> dict[Any, dict[str, dict[str, Any]]]:
    """Quality of each setting over several models (training seeds) on the same test samples.

    Parameters
    ----------
    scores : mapping
        ``{model: {setting: SampleScores}}`` (:func:`qlib.captioning.metrics.score_samples`).
    settings : sequence
        Settings every model was scored at, e.g. ``(bit_width, quantizer)`` pairs.
    names : sequence of str
        Metrics to summarize.

    Returns
    -------
    dict
        ``{setting: {name: seed summary}}``, the summary of
        :func:`qlib.captioning.metrics.seed_summary`: ``mean``, ``sd`` over seeds, ``min``,
        ``max``, ``per_seed`` and ``ci95``, the paired-bootstrap interval of the seed mean.
    """
    from qlib.captioning.metrics import seed_summary

    if not scores:
        raise ValueError("scores must hold at least one model")
    out: dict[Any, dict[str, dict[str, Any]]] = {}
    for setting in settings:
        missing = [m for m in scores if setting not in scores[m]]
        if missing:
            raise ValueError(f"setting {setting!r} was not scored for {missing}")
        runs = [scores[m][setting] for m in scores]
        out[setting] = {n: seed_summary(runs, n) for n in names}
    return out


def compare_methods(rows: Sequence[Mapping[str, Any]], scores: Mapping[str, Mapping[Any, Any]], quantizer: str,
                    name: str = "CIDEr", reference: str = "sca") -> list[dict[str, Any]]:
    """The reference design against every other method, budget by budget, with paired intervals.

    At each budget the reference chose :math:`\hat b_{\mathrm{ref}}` and a method chose
    :math:`\hat b_m`; the difference of their seed-mean quality, ``ref − method``, gets a
    paired-bootstrap 95 % interval over the test samples (the same resampled samples for
    both bit-widths and all seeds: :func:`qlib.captioning.metrics.bootstrap_interval`).

    Returns
    -------
    list of dict
        ``budget``, ``method``, ``difference``, ``ci95`` and ``verdict``: ``"tie"`` (the
        interval holds 0), ``"reference better"``, ``"reference worse"``, ``"only reference
        feasible"``, ``"only method feasible"`` or ``"neither feasible"``.
    """
    from qlib.captioning.metrics import bootstrap_interval

    by = {(r["method"], r["budget"]): r for r in rows}
    budgets_ = sorted({r["budget"] for r in rows})
    if not any(m == reference for m, _ in by):
        raise ValueError(f"reference must be a method of rows, got {reference!r}")
    models = list(scores)
    k = len(models)
    cache: dict[tuple[int, int], tuple[float, list[float] | None]] = {}
    out = []
    for budget in budgets_:
        ref = by[(reference, budget)]
        for (method, b), r in by.items():
            if b != budget or method == reference:
                continue
            row: dict[str, Any] = {"budget": budget, "method": method, "difference": None, "ci95": None}
            if not ref["feasible"] or not r["feasible"]:
                row["verdict"] = ("neither feasible" if not (ref["feasible"] or r["feasible"]) else
                                  "only reference feasible" if ref["feasible"] else "only method feasible")
                out.append(row)
                continue
            pair = (int(ref["bit_width"]), int(r["bit_width"]))
            if pair not in cache:
                runs = ([scores[m][(pair[0], quantizer)] for m in models]
                        + [scores[m][(pair[1], quantizer)] for m in models])
                vals = [x.value(name) for x in runs]
                diff = float(np.mean(vals[:k]) - np.mean(vals[k:]))
                ci = bootstrap_interval(runs, name, combine=lambda v: v[:k].mean(0) - v[k:].mean(0))
                cache[pair] = (diff, ci)
            diff, ci = cache[pair]
            tie = ci is None or ci[0] <= 0 <= ci[1]
            row.update(difference=diff, ci95=ci,
                       verdict="tie" if tie else ("reference better" if ci[0] > 0 else "reference worse"))
            out.append(row)
    return out


def versus_full_precision(scores: Mapping[str, Mapping[Any, Any]], bit_widths: Sequence[int], quantizer: str,
                          name: str, full: Any = (None, "uniform")) -> dict[str, Any]:
    """Each bit-width against full precision, seed mean minus seed mean, with paired intervals.

    Returns
    -------
    dict
        ``rows``: per bit-width ``bit_width``, ``difference``, ``ci95``, ``verdict``
        (``"tie"``, ``"below"``, ``"above"``); ``plateau``: the smallest bit-width from which no
        measured larger one is significantly below full precision (None if even the largest is).
    """
    from qlib.captioning.metrics import bootstrap_interval

    models = list(scores)
    k = len(models)
    rows = []
    for b in bit_widths:
        runs = [scores[m][(b, quantizer)] for m in models] + [scores[m][full] for m in models]
        vals = [r.value(name) for r in runs]
        if any(v is None for v in vals):
            rows.append({"bit_width": b, "difference": None, "ci95": None, "verdict": "undefined"})
            continue
        ci = bootstrap_interval(runs, name, combine=lambda v: v[:k].mean(0) - v[k:].mean(0))
        verdict = "tie" if ci is None or ci[0] <= 0 <= ci[1] else ("below" if ci[1] < 0 else "above")
        rows.append({"bit_width": b, "difference": float(np.mean(vals[:k]) - np.mean(vals[k:])), "ci95": ci,
                     "verdict": verdict})
    plateau = None
    for i in range(len(rows) - 1, -1, -1):
        if rows[i]["verdict"] in ("below", "undefined"):
            break
        plateau = rows[i]["bit_width"]
    return {"rows": rows, "plateau": plateau}


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
