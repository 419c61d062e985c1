r"""The uplink in the joint design: payload, activation bits and the split point (beyond the paper).

The paper's delay and energy (eqs. 8–9) count computation only, "since LAIM inference is
typically computation-dominated" (Sec. II-D). This module adds the transmission of the
embedding :math:`\mathbf o` (eq. 1): :math:`L = N_{\mathrm{tok}} d\, b_{\mathrm{act}}` bits sent at
rate :math:`r` with transmit power :math:`P` cost

.. math:: t_{\mathrm{up}} = L / r, \qquad e_{\mathrm{up}} = P L / r

(:func:`qlib.system.uplink_delay`, :func:`qlib.system.uplink_energy`). For a fixed activation
bit-width and split point they are constants, so (P1) with the uplink is the paper's (P1) on the
budgets :math:`T_0 - t_{\mathrm{up}}` and :math:`E_0 - e_{\mathrm{up}}`, solved exactly by
:func:`qlib.design.solve_exact`. On top of that this module

- lists the split points of the shipped configs with their payload shape and agent FLOPs
  (:func:`split_points`, :func:`split_table`);
- solves the joint design over the weight bit-width :math:`\hat b`, the activation bit-width
  :math:`b_{\mathrm{act}}`, both frequencies and the split (:func:`solve_joint`), and checks it
  by an independent brute force (:func:`brute_force_joint`);
- finds the rate below which the optimal weight bit-width falls (:func:`rate_where_bits_fall`).

**The joint objective.** The paper's objective :math:`g(\hat b) = D^U(\hat b-1) - D^L(\hat b-1)`
bounds the distortion from the *weights*; nothing in it prices the activations. We keep it and
add the activation bit-width through the measured quality table: only activation bit-widths
whose caption quality is tied with the unquantized embedding are admissible
(:func:`admissible_activation_bits`). Among the admissible designs the solver maximizes
:math:`\hat b` (i.e. minimizes :math:`g`), then :math:`b_{\mathrm{act}}` (a free margin of
quality), then minimizes energy. Because :math:`\hat b^*(r) = \max_{b_{\mathrm{act}}}
\hat b^*(r, b_{\mathrm{act}})` is a maximum of functions that fall with the rate, the optimal
weight bit-width never increases as the rate falls (tested).

Representative links (:data:`LINKS`) carry their sources in the chapter; the book's
``references.bib`` holds the citations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Mapping, Sequence

import numpy as np

from qlib import design, system

__all__ = [
    "Link",
    "LINKS",
    "SplitPoint",
    "split_points",
    "split_table",
    "admissible_activation_bits",
    "JointSolution",
    "solve_joint",
    "brute_force_joint",
    "rate_where_bits_fall",
    "split_map",
]


@dataclass(frozen=True)
class Link:
    """A representative uplink: achieved rate (bit/s), transmit power (W) and where they come from."""

    name: str
    rate_bps: float
    tx_power_w: float
    source: str


#: Representative uplinks. Powers: 23 dBm = 0.2 W, the maximum output power of a power-class-3
#: UE in LTE and 5G NR (3GPP TS 36.101, TS 38.101-1); a radio's electrical draw is higher, so
#: the uplink energies computed with it are lower bounds. Rates: LTE's median uplink throughput
#: measured by Huang et al. (MobiSys 2012, 4GTest); 5G's median upload speed in the US as
#: reported from Ookla's 2024 data (just above 15 Mbit/s for the two fastest carriers); the
#: 5 GHz Wi-Fi rate of the paper's testbed is not reported, 100 Mbit/s is our assumption.
LINKS: dict[str, Link] = {
    "LTE": Link("LTE", 6e6, 0.2, "huang2012lte; 3gpp36101"),
    "5G": Link("5G", 15e6, 0.2, "lennighan2024uplink; 3gpp38101"),
    "Wi-Fi": Link("Wi-Fi (5 GHz, assumed)", 100e6, 0.2, "assumption; 3gpp38101 for the power"),
}


@dataclass(frozen=True)
class SplitPoint:
    """Where the model is cut: what the agent runs, what it sends, what each side computes.

    Attributes
    ----------
    model, name : str
        Config name (``qlib/data/configs``) and split name (``"after ViT"``, ...).
    n_tokens, dim : int
        Shape of the transmitted embedding (tokens × width; all frames for a clip).
    n_frames : int
        Frames encoded per inference.
    agent_modules : tuple of str
        Modules on the agent (passed to :func:`qlib.costs.model_costs`).
    n_flop_agent, n_flop_server : float
        Full-precision FLOPs on each side (eqs. 4–5).
    """

    model: str
    name: str
    n_tokens: int
    dim: int
    n_frames: int
    agent_modules: tuple[str, ...]
    n_flop_agent: float
    n_flop_server: float

    @property
    def elements(self) -> int:
        """Elements of the embedding, :math:`N_{\\mathrm{tok}} d`."""
        return self.n_tokens * self.dim

    def payload_bits(self, activation_bits: Any = 16) -> Any:
        """Payload :math:`L` in bits (:func:`qlib.system.embedding_bits`)."""
        return system.embedding_bits(self.n_tokens, self.dim, activation_bits)


def _vit_tokens(vc: Any) -> int:
    # A ViT sees (image / patch)^2 patches plus the class token.
    return (int(vc.image_size) // int(vc.patch_size)) ** 2 + 1


def split_points(model: str, n_frames: int | None = None) -> list[SplitPoint]:
    """The split points of a shipped config, with payload shapes and the FLOP split at each.

    BLIP-2: after the ViT (257 × 1408), after the Q-Former (32 × 768), after the language
    projection (32 × 2560). GIT: after the image encoder (197 × 768 per frame) and after the
    visual projection (the same shape), for one frame or a whole clip of ``n_frames``. Shapes
    come from the config (checked against a meta-device forward in the tests); FLOPs from
    :func:`qlib.costs.model_costs` with the agent's modules at each split.

    Parameters
    ----------
    model : str
        ``"blip2-opt-2.7b"``, ``"git-base"`` or ``"git-base-vatex"``.
    n_frames : int, optional
        GIT only: frames per clip (default: the config's, 6 for GIT-VaTeX; 1 for GIT-base).
    """
    from qlib.costs import SHIPPED_CONFIGS, load_config, model_costs

    if model not in SHIPPED_CONFIGS:
        raise ValueError(f"model must be one of {sorted(SHIPPED_CONFIGS)}, got {model!r}")
    cfg = load_config(model)
    out = []
    if cfg.model_type in ("blip-2", "blip_2"):
        if n_frames not in (None, 1):
            raise ValueError(f"n_frames must be None or 1 for the image model {model!r}, got {n_frames!r}")
        vc, q = cfg.vision_config, int(cfg.num_query_tokens)
        cuts = [("after ViT", _vit_tokens(vc), int(vc.hidden_size), ("vision_model",)),
                ("after Q-Former", q, int(cfg.qformer_config.hidden_size), ("vision_model", "qformer", "query_tokens")),
                ("after projection", q, int(cfg.text_config.hidden_size),
                 ("vision_model", "qformer", "query_tokens", "language_projection"))]
        for name, ntok, dim, mods in cuts:
            c = model_costs(model, agent_modules=mods)
            out.append(SplitPoint(model, name, ntok, dim, 1, mods, c.n_flop_agent, c.n_flop_server))
        return out
    frames = int(getattr(cfg, "num_image_with_embedding", None) or 1) if n_frames is None else n_frames
    ntok, dim = _vit_tokens(cfg.vision_config), int(cfg.vision_config.hidden_size)
    proj_dim = int(cfg.hidden_size)
    for name, d, mods in (("after image encoder", dim, ("image_encoder",)),
                          ("after projection", proj_dim, ("image_encoder", "visual_projection"))):
        for nf, label in ((1, "per frame"), (frames, "per clip")):
            if label == "per clip" and frames == 1:
                continue
            c = model_costs(model, n_frames=nf, agent_modules=mods)
            out.append(SplitPoint(model, f"{name}, {label} ({nf} frame{'s' if nf > 1 else ''})", ntok * nf, d, nf,
                                  mods, c.n_flop_agent, c.n_flop_server))
    return out


def split_table(models: Sequence[str] = ("blip2-opt-2.7b", "git-base-vatex"),
                activation_bits: float = 16) -> list[dict[str, Any]]:
    """One row per split point: shape, payload (kB at ``activation_bits``) and agent/server GFLOPs."""
    rows = []
    for m in models:
        for s in split_points(m):
            rows.append({"model": m, "split": s.name, "shape": f"{s.n_tokens} × {s.dim}",
                         "elements": s.elements, "payload_kB": float(s.payload_bits(activation_bits)) / 8e3,
                         "agent_GFLOPs": s.n_flop_agent / 1e9, "server_GFLOPs": s.n_flop_server / 1e9})
    return rows


def admissible_activation_bits(diff_ci95: Mapping[int, tuple[float, float]], tolerance: float = 0.0) -> list[int]:
    """Activation bit-widths whose quality is tied with (or above) the unquantized embedding.

    Parameters
    ----------
    diff_ci95 : mapping
        Activation bits -> 95 % interval of the paired quality difference (setting minus
        unquantized), e.g. ``CIDEr_diff_ci95`` of :func:`qlib.captioning.activations.activation_sweep`.
    tolerance : float
        Accepted loss (>= 0, in the metric's units): admissible if the interval's upper end is
        at least ``-tolerance`` (0: the interval must reach 0, a tie in the book's sense).

    Returns
    -------
    list of int
        Sorted admissible bit-widths.
    """
    if not (isinstance(tolerance, (int, float)) and math.isfinite(tolerance) and tolerance >= 0):
        raise ValueError(f"tolerance must be a finite number >= 0, got {tolerance!r}")
    return sorted(int(b) for b, (lo, hi) in diff_ci95.items() if hi >= -tolerance)


@dataclass(frozen=True)
class JointSolution:
    """A design of the joint problem with the uplink.

    ``bit_width`` is the weight bit-width :math:`\\hat b`, ``activation_bits`` the embedding's
    bits per element, ``split`` the split-point name; ``delay`` and ``energy`` include
    ``uplink_delay`` and ``uplink_energy``; ``objective`` is :math:`g(\\hat b)` of (P1).
    Infeasible: ``feasible=False`` and ``reason`` starting with ``"delay"`` or ``"energy"``.
    """

    feasible: bool
    bit_width: int | None = None
    activation_bits: float | None = None
    split: str | None = None
    f_agent: float | None = None
    f_server: float | None = None
    delay: float | None = None
    energy: float | None = None
    uplink_delay: float | None = None
    uplink_energy: float | None = None
    objective: float = math.inf
    reason: str = ""


def _check_rate_power(rate_bps: Any, tx_power_w: Any) -> tuple[np.ndarray, float]:
    rates = np.atleast_1d(np.asarray(rate_bps, dtype=float))
    system.uplink_energy(0.0, rates, tx_power_w)  # validates both (errors name the parameter)
    return rates, float(tx_power_w)


def _candidates(base: design.Problem, splits: Sequence[SplitPoint] | None,
                activation_bits: Sequence[float]) -> list[tuple[str, float, design.Problem]]:
    if not activation_bits:
        raise ValueError("activation_bits must name at least one bit-width (none is admissible)")
    cuts = ([(None, base.n_flop_agent, base.n_flop_server, base.payload_elements)] if splits is None else
            [(s.name, s.n_flop_agent, s.n_flop_server, s.elements) for s in splits])
    if splits is not None and not cuts:
        raise ValueError("splits must be None or a non-empty sequence of SplitPoint")
    out = []
    for name, na, ns, el in cuts:
        for a in activation_bits:
            out.append((name, float(a), replace(base, n_flop_agent=na, n_flop_server=ns, payload_elements=el,
                                                activation_bits=float(a), rate_bps=None)))
    return out


def solve_joint(base: design.Problem, rate_bps: Any, tx_power_w: float,
                activation_bits: Sequence[float] = (16,), splits: Sequence[SplitPoint] | None = None
                ) -> JointSolution | list[JointSolution]:
    r"""Exact joint design: weight bits, activation bits, both frequencies (and the split) under T0, E0.

    For every (split, activation bit-width) the uplink is a constant :math:`(t_{\mathrm{up}},
    e_{\mathrm{up}})`, and :func:`qlib.design.solve_exact` gives the certified optimum of (P1)
    on the budgets it leaves; all candidates and all rates are solved in one vectorized call.
    The best is chosen lexicographically: largest :math:`\hat b` (least :math:`g`), then largest
    activation bit-width, then least energy.

    Parameters
    ----------
    base : qlib.design.Problem
        Budgets, λ, :math:`B_{\max}` and hardware; its workloads and ``payload_elements`` are
        used when ``splits`` is None (its ``rate_bps`` and ``activation_bits`` are ignored).
    rate_bps : float or sequence of float
        Uplink rate(s) in bit/s (> 0). A sequence gives one solution per rate.
    tx_power_w : float
        Transmit power in W (>= 0).
    activation_bits : sequence of float
        Admissible activation bit-widths (e.g. :func:`admissible_activation_bits`; 16 = float16).
    splits : sequence of SplitPoint, optional
        Split points to choose among (their workloads and payloads replace the base's).

    Returns
    -------
    JointSolution or list of JointSolution
    """
    if not isinstance(base, design.Problem):
        raise ValueError(f"base must be a qlib.design.Problem, got {type(base).__name__}")
    rates, power = _check_rate_power(rate_bps, tx_power_w)
    cands = _candidates(base, splits, activation_bits)
    problems = [replace(p, rate_bps=float(r), tx_power_w=power) for r in rates for _, _, p in cands]
    sols = design.solve_exact(problems)
    k = len(cands)
    out = []
    for i in range(len(rates)):
        best, best_key = None, None
        why = ""
        for j, (name, a, _) in enumerate(cands):
            s, p = sols[i * k + j], problems[i * k + j]  # type: ignore[index]
            if not s.feasible:
                why = why or s.reason
                continue
            key = (s.bit_width, a, -s.energy)
            if best_key is None or key > best_key:
                best_key = key
                best = JointSolution(True, s.bit_width, a, name, s.f_agent, s.f_server, s.delay, s.energy,
                                     p.uplink_delay(), p.uplink_energy(), s.objective, s.reason)
        out.append(best if best is not None else JointSolution(False, reason=why))
    return out[0] if np.ndim(rate_bps) == 0 else out


def _min_energy_brute(p: dict[str, float], hw: system.Hardware, b: float, n_grid: int) -> float:
    """Least total energy over (f, f_server) meeting the delay budget, by grid + bounded search.

    Independent of :mod:`qlib.design`: for each agent frequency the server runs at the least
    frequency that meets the delay budget (energy grows with it); the one-dimensional minimum
    over the agent frequency is found on a geometric grid and refined by
    :func:`scipy.optimize.minimize_scalar`. ``inf`` if no frequencies meet the delay budget.
    """
    from scipy.optimize import minimize_scalar

    t_left = p["T0"] - p["t_up"]
    t_server_min = float(system.server_delay(p["n_flop_server"], hw.f_server_max, hw))
    if t_left <= t_server_min:
        return math.inf
    t_agent_max = t_left - t_server_min
    # Least agent frequency: its delay uses all the time the fastest server leaves.
    f_lo = b * p["n_flop_agent"] / (hw.b_full * hw.c_agent * t_agent_max)
    if f_lo > hw.f_agent_max * (1 + 1e-12):
        return math.inf

    def energy(f: float) -> float:
        ta = float(system.agent_delay(b, p["n_flop_agent"], f, hw))
        slack = t_left - ta
        if slack <= 0:
            return math.inf
        fs = p["n_flop_server"] / (hw.c_server * slack) if p["n_flop_server"] > 0 else hw.f_server_max
        if fs > hw.f_server_max * (1 + 1e-12):
            return math.inf
        return float(system.total_energy(b, p["n_flop_agent"], p["n_flop_server"], f, max(fs, 1e-300), hw)) + p["e_up"]

    lo = max(f_lo, 1e-300)
    grid = np.geomspace(lo, hw.f_agent_max, n_grid)
    vals = np.array([energy(f) for f in grid])
    i = int(np.argmin(vals))
    a, c = grid[max(i - 1, 0)], grid[min(i + 1, n_grid - 1)]
    res = minimize_scalar(energy, bounds=(a, c), method="bounded", options={"xatol": 1e-9 * c})
    return float(min(vals[i], res.fun if np.isfinite(res.fun) else math.inf))


def brute_force_joint(base: design.Problem, rate_bps: float, tx_power_w: float,
                      activation_bits: Sequence[float] = (16,), splits: Sequence[SplitPoint] | None = None,
                      n_grid: int = 2001, rtol: float = 1e-7) -> JointSolution:
    """The joint design by enumeration, for checking :func:`solve_joint`.

    Every (split, activation bit-width, weight bit-width 1…B_max) is tried; each is feasible
    iff its least energy under the delay budget (found numerically with :mod:`qlib.system`
    alone, see :func:`_min_energy_brute`) is within ``E0 (1 + rtol)``. The same lexicographic
    choice as :func:`solve_joint`. Slow; for tests.
    """
    rates, power = _check_rate_power(rate_bps, tx_power_w)
    hw = base.hardware
    best, best_key = None, None
    for name, a, p in _candidates(base, splits, activation_bits):
        L = p.payload_elements * a
        t_up, e_up = float(system.uplink_delay(L, rates[0])), float(system.uplink_energy(L, rates[0], power))
        d = {"T0": p.T0, "t_up": t_up, "e_up": e_up, "n_flop_agent": p.n_flop_agent, "n_flop_server": p.n_flop_server}
        for b in range(p.B_max, 0, -1):
            e = _min_energy_brute(d, hw, float(b), n_grid)
            if e <= p.E0 * (1 + rtol):
                key = (b, a, -e)
                if best_key is None or key > best_key:
                    best_key = key
                    best = JointSolution(True, b, a, name, uplink_delay=t_up, uplink_energy=e_up, energy=e,
                                         objective=float(design.gap_objective(b, p.lam)))
                break
    return best if best is not None else JointSolution(False, reason="no (split, activation bits, bit_width) is feasible")


def rate_where_bits_fall(base: design.Problem, tx_power_w: float, activation_bits: Sequence[float] = (16,),
                         splits: Sequence[SplitPoint] | None = None, rate_range: tuple[float, float] = (1e3, 1e12),
                         rtol: float = 1e-6) -> float | None:
    """The uplink rate below which the optimal weight bit-width drops under its no-uplink value.

    The optimal :math:`\\hat b^*(r)` is non-increasing as the rate falls, so the threshold is
    found by bisection in :math:`\\log r` (relative precision ``rtol``). Returns ``None`` if the
    problem is infeasible without an uplink, or if :math:`\\hat b^*` does not fall within
    ``rate_range`` (it is already lower at the top of the range: then ``rate_range[1]`` is
    returned; it never falls above the bottom: ``None``).
    """
    lo, hi = (float(x) for x in rate_range)
    if not (0 < lo < hi and math.isfinite(hi)):
        raise ValueError(f"rate_range must be (low, high) with 0 < low < high < inf, got {rate_range!r}")
    # Without an uplink (a rate so high the payload costs nothing is not the same: use the
    # paper's problem itself).
    cands = _candidates(base, splits, activation_bits)
    ref = design.solve_exact([p for _, _, p in cands])
    feas = [s.bit_width for s in ref if s.feasible]  # type: ignore[union-attr]
    if not feas:
        return None
    b_ref = max(feas)

    def bits(r: float) -> int:
        s = solve_joint(base, r, tx_power_w, activation_bits, splits)
        return s.bit_width if s.feasible else 0  # type: ignore[union-attr, return-value]

    if bits(hi) < b_ref:
        return hi
    if bits(lo) >= b_ref:
        return None
    while hi / lo > 1 + rtol:
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if bits(mid) < b_ref else (lo, mid)
    return hi


def split_map(base: design.Problem, T0s: Sequence[float], rates: Sequence[float], tx_power_w: float,
              activation_bits: Sequence[float], splits: Sequence[SplitPoint]) -> dict[str, np.ndarray]:
    """The joint design over a (delay budget × rate) grid: which split wins and the bit-widths.

    Returns ``split`` (index into ``splits`` of the chosen split, -1 where infeasible),
    ``bit_width`` (optimal :math:`\\hat b`, 0 where infeasible), ``activation_bits`` (0 where
    infeasible) and ``bits_by_split`` (optimal :math:`\\hat b` with each split alone, shape
    ``(len(splits), len(T0s), len(rates))``), all indexed ``[T0, rate]``.
    """
    names = [s.name for s in splits]
    shape = (len(T0s), len(rates))
    out = {"split": np.full(shape, -1), "bit_width": np.zeros(shape, int), "activation_bits": np.zeros(shape),
           "bits_by_split": np.zeros((len(splits),) + shape, int)}
    for i, t0 in enumerate(T0s):
        b = replace(base, T0=float(t0))
        for j, sol in enumerate(solve_joint(b, list(rates), tx_power_w, activation_bits, splits)):  # type: ignore[arg-type]
            if sol.feasible:
                out["split"][i, j] = names.index(sol.split)
                out["bit_width"][i, j] = sol.bit_width
                out["activation_bits"][i, j] = sol.activation_bits
        for k, sp in enumerate(splits):
            for j, sol in enumerate(solve_joint(b, list(rates), tx_power_w, activation_bits, [sp])):  # type: ignore[arg-type]
                out["bits_by_split"][k, i, j] = sol.bit_width if sol.feasible else 0
    return out
