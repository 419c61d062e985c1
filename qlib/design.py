r"""Joint design of the quantization bit-width and the clock frequencies (paper Sec. V, VI-C).

Problem (P1) of the paper (eq. 30) chooses the on-agent bit-width :math:`\hat b\in\{1,\dots,
B_{\max}\}` and the agent and server clock frequencies :math:`f, \tilde f` that minimize the
gap between the distortion bounds of Sec. IV,

.. math:: g(\hat b) = D^U(\hat b - 1) - D^L(\hat b - 1),

(one bit of the :math:`\hat b` is the sign, so the magnitude rate is :math:`\hat b - 1`), subject
to the delay budget :math:`T(\hat b, f, \tilde f)\le T_0` (eq. 30a), the energy budget
:math:`E(\hat b, f, \tilde f)\le E_0` (eq. 30b) and the frequency ranges (30d), (30e).

This module holds

- :class:`Problem` (P1 with the paper's Sec. VI-C constants as defaults), :class:`Solution`,
  and :data:`READINGS`, the two readings of the paper's constants the book compares;
- :class:`ProblemBatch` / :class:`SolutionBatch` and :func:`solve_exact_batch`: the certified
  optimum array in, array out (hundreds of thousands of problems per second);
- :func:`solve_exact`, the certified global optimum of P1 for :class:`Problem` objects:
  :math:`g` is strictly decreasing in :math:`\hat b` and the feasible bit-widths form a
  down-set, so the optimum is the largest bit-width for which the minimum-energy
  frequencies at the delay budget (a closed-form KKT solution, :func:`optimal_frequencies`)
  meet the energy budget; among the optimal designs the least-energy one is returned;
- :func:`solve_sca`, the paper's Algorithm 1: relaxation (P2), auxiliary variable (P3),
  successive convex approximation (P4.k) with cvxpy, a scale-free stopping threshold δ,
  rounding, and the least-energy frequencies at the rounded bit-width;
- the baselines of Sec. VI-C: :func:`solve_fixed_frequency` and :func:`solve_random_feasible`.
  The PPO baseline lives one layer up, in :mod:`qlib.ppo_env`, which registers itself as
  method ``"ppo"`` (:func:`register_method`); this module never imports it.

Every solver returns a :class:`Solution`. A budget that no design meets gives
``feasible=False`` and the reason (``"delay"`` or ``"energy"`` in :attr:`Solution.reason`);
no solver ever returns a point that violates a constraint (checked with the relative
tolerance :data:`RTOL`), and every feasible design reports the energy it uses.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field, fields, replace
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from qlib import rd, system

__all__ = [
    "RTOL",
    "ENERGY_SCOPES",
    "READINGS",
    "REASON_CODES",
    "Problem",
    "Solution",
    "ProblemBatch",
    "SolutionBatch",
    "gap_objective",
    "optimal_frequencies",
    "relaxed_optimum",
    "solve_exact",
    "solve_exact_batch",
    "solve_sca",
    "solve_fixed_frequency",
    "solve_random_feasible",
    "solve_ppo",
    "random_problems",
    "random_problem_batch",
    "METHODS",
    "register_method",
    "run_methods",
    "summarize_methods",
]

#: Relative tolerance of the constraint checks (delay <= T0 (1 + RTOL), energy <= E0 (1 + RTOL)).
RTOL = 1e-9

#: What the energy budget E0 bounds: ``"total"`` (eq. 9, agent + server, the paper's (30b)) or
#: ``"agent"`` (eq. 6 only, the agent's battery; the server's energy is reported, not bounded).
ENERGY_SCOPES = ("total", "agent")

#: The two readings of the paper's Sec. VI-C constants compared in the book (issue 13.4), as
#: :class:`Problem` keyword overrides. ``"literal"``: the constants and (30b) as printed; at
#: E0 = 2 J the server alone at 10 GHz needs ~20-28 J, so fixed frequency is never feasible, and
#: the server is ~60x less efficient per FLOP than the agent. ``"plausible"``: E0 bounds the
#: agent's (battery) energy only and the agent's ψ is 10x the printed value (2e-28), the
#: reading under which fixed frequency is feasible and below the optimum, as in the paper's
#: figures (chapter 05 checks both statements).
READINGS: dict[str, dict[str, Any]] = {
    "literal": {"energy_scope": "total"},
    "plausible": {"energy_scope": "agent", "psi_agent": 2e-28},
}

#: Reason codes of :class:`SolutionBatch`: 0 feasible, 1 delay, 2 energy.
REASON_CODES = {0: "", 1: "delay", 2: "energy"}

_LN2 = math.log(2.0)
_HW = system.Hardware()
# Normalized coefficients below this are beyond float64's normal range once multiplied by a
# bit-width or squared frequency: a budget that large is reported, not silently mis-solved.
_TINY = 1e-305


def gap_objective(bit_width: Any, lam: Any = 1.0) -> Any:
    r"""The objective of (P1)/(P2): :math:`D^U(\hat b-1) - D^L(\hat b-1)` (eqs. 24, 26, 30).

    Parameters
    ----------
    bit_width : float or ndarray
        Bit-width :math:`\hat b \ge 1` (one sign bit plus :math:`\hat b - 1` magnitude bits);
        non-integers are the relaxation :math:`\tilde b` of (P2).
    lam : float or ndarray
        λ > 0 of the exponential weight magnitudes (eq. 3).

    Returns
    -------
    float or ndarray
        The gap, ``+inf`` at :math:`\hat b = 1` where :math:`D^U(0)` is unbounded. It is
        positive and strictly decreasing in :math:`\hat b` (proved in the chapter).

    Examples
    --------
    >>> round(float(gap_objective(2, 1.0)), 4)  # D^U(1) - D^L(1) = 0.618 - 0.25
    0.368
    """
    b = np.asarray(bit_width, dtype=float)
    if np.any(~np.isfinite(b)) or np.any(b < 1):
        raise ValueError(f"bit_width must be finite and >= 1 (sign bit included), got {bit_width!r}")
    lam_arr = np.asarray(lam, dtype=float)
    if np.any(~np.isfinite(lam_arr)) or np.any(lam_arr <= 0):
        raise ValueError(f"lam must be finite and > 0, got {lam!r}")
    b, lam_arr = np.broadcast_arrays(b, lam_arr)
    out = np.full(b.shape, np.inf)
    ok = b > 1
    if np.any(ok):
        R = b[ok] - 1.0
        out[ok] = np.asarray(rd.distortion_upper(R, lam_arr[ok])) - np.asarray(rd.distortion_lower(R, lam_arr[ok]))
    return out[()] if out.ndim == 0 else out


_FLOAT_FIELDS = ("n_flop_agent", "n_flop_server", "T0", "E0", "lam")
_HW_FIELDS = tuple(f.name for f in fields(system.Hardware))


def _coefficients(n_flop_agent: Any, n_flop_server: Any, T0: Any, E0: Any, b_full: Any, f_agent_max: Any,
                  f_server_max: Any, c_agent: Any, c_server: Any, eta_agent: Any, eta_server: Any,
                  psi_agent: Any, psi_server: Any) -> dict[str, Any]:
    """``tau_a, tau_s, eps_a, eps_s`` (see :meth:`Problem.coefficients`), scalars or arrays.

    Divided step by step (cycles / f_max / T0, never cycles / (f_max T0)) so that a huge budget
    underflows only where the quotient itself does, not through an overflowing product.
    """
    cyc_a = n_flop_agent / b_full / c_agent  # agent cycles per bit of width
    cyc_s = n_flop_server / c_server
    return {
        "tau_a": cyc_a / f_agent_max / T0,
        "tau_s": cyc_s / f_server_max / T0,
        "eps_a": eta_agent * psi_agent * cyc_a * f_agent_max * f_agent_max / E0,
        "eps_s": eta_server * psi_server * cyc_s * f_server_max * f_server_max / E0,
    }


def _check_scale(coeffs: Mapping[str, Any], T0: Any, E0: Any) -> None:
    """One clear error for budgets so large that the normalized problem leaves float64's normal range."""
    for key, budget, name in (("tau_a", T0, "T0"), ("tau_s", T0, "T0"), ("eps_a", E0, "E0"), ("eps_s", E0, "E0")):
        v = np.atleast_1d(np.asarray(coeffs[key], dtype=float))
        b = np.broadcast_to(np.atleast_1d(np.asarray(budget, dtype=float)), v.shape)
        bad = ~(v >= _TINY)
        if np.any(bad):
            i = int(np.flatnonzero(bad)[0])
            limit = b[i] * v[i] / _TINY if v[i] > 0 else float("nan")
            raise ValueError(
                f"{name} must be at most {limit:.3g} for these workloads and hardware (got {b[i]:g}): beyond, "
                f"the normalized {'delay' if name == 'T0' else 'energy'} coefficient {key} underflows "
                f"float64 (every bit-width is feasible long before)")


@dataclass(frozen=True)
class Problem:
    r"""Problem (P1) (eq. 30): minimize the distortion-bound gap under delay and energy budgets.

    Parameters
    ----------
    n_flop_agent : float
        Full-precision on-agent workload :math:`N_{\mathrm{FLOP}}` in FLOPs (> 0).
    n_flop_server : float
        On-server workload :math:`\tilde N_{\mathrm{FLOP}}` in FLOPs (> 0).
    T0 : float
        Delay budget :math:`T_0` in s (> 0), eq. (30a).
    E0 : float
        Energy budget :math:`E_0` in J (> 0), eq. (30b).
    lam : float
        λ > 0 of the exponential weight magnitudes (eq. 3); it only scales the objective.
    B_max : int
        Largest bit-width :math:`B_{\max}`, an integer in [2, b_full] (eq. 30c).
    b_full : int
        Full-precision bit-width :math:`b` (integer >= 1).
    f_agent_max, f_server_max : float
        :math:`f^{\max}`, :math:`\tilde f^{\max}` in cycles/s (> 0), eqs. (30d), (30e).
    c_agent, c_server : float
        FLOPs per cycle :math:`c`, :math:`\tilde c` (> 0).
    eta_agent, eta_server : float
        PUEs :math:`\eta`, :math:`\tilde\eta` (>= 1).
    psi_agent, psi_server : float
        Power coefficients :math:`\psi`, :math:`\tilde\psi` in W/(cycle/s)^3 (> 0).
    energy_scope : {"total", "agent"}
        What :math:`E_0` bounds: the total energy of eq. (9) (default, (30b) as printed) or the
        agent's energy of eq. (6) only (see :data:`READINGS`).

    Raises
    ------
    ValueError
        Naming the field, if a value is non-physical (non-finite, non-positive, a PUE below 1,
        a non-integer or out-of-range ``B_max``, an unknown ``energy_scope``), or if a budget is
        so large that the normalized problem underflows float64.

    Examples
    --------
    >>> p = Problem(n_flop_agent=64e9, n_flop_server=128e9, T0=2.0, E0=2.0)
    >>> round(float(p.delay(16, 2e9, 10e9)), 4)  # 16/32 * 64e9/(2e9*32) + 128e9/(10e9*128)
    0.6
    """

    n_flop_agent: float
    n_flop_server: float
    T0: float
    E0: float
    lam: float = 1.0
    B_max: int = 16
    # The processor defaults are those of qlib.system.Hardware (Sec. VI-C), kept in one place.
    b_full: int = _HW.b_full
    f_agent_max: float = _HW.f_agent_max
    f_server_max: float = _HW.f_server_max
    c_agent: float = _HW.c_agent
    c_server: float = _HW.c_server
    eta_agent: float = _HW.eta_agent
    eta_server: float = _HW.eta_server
    psi_agent: float = _HW.psi_agent
    psi_server: float = _HW.psi_server
    energy_scope: str = "total"
    # The uplink (chapter "The uplink", beyond the paper); rate_bps=None is the paper's (P1).
    rate_bps: float | None = None
    tx_power_w: float = 0.0
    payload_elements: float = 0.0
    activation_bits: float = 16.0

    def __post_init__(self) -> None:
        if self.energy_scope not in ENERGY_SCOPES:
            raise ValueError(f"energy_scope must be one of {ENERGY_SCOPES}, got {self.energy_scope!r}")
        for fld in fields(self):
            value = getattr(self, fld.name)
            if fld.name == "energy_scope" or (value is None and fld.default is None):
                continue  # a string field, and optional fields left at None
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
                raise ValueError(f"{fld.name} must be a real number, got {value!r}")
            if not math.isfinite(float(value)):
                raise ValueError(f"{fld.name} must be finite, got {value!r}")
        for name in _FLOAT_FIELDS:
            if float(getattr(self, name)) <= 0:
                raise ValueError(f"{name} must be a finite number > 0, got {getattr(self, name)!r}")
            object.__setattr__(self, name, float(getattr(self, name)))
        # The processor constants are checked by qlib.system.Hardware (errors name the field).
        object.__setattr__(self, "_hw", system.Hardware(**{k: getattr(self, k) for k in _HW_FIELDS}))
        for name in _HW_FIELDS:
            object.__setattr__(self, name, getattr(self._hw, name))
        if float(self.B_max) != int(self.B_max) or not 2 <= int(self.B_max) <= self.b_full:
            raise ValueError(
                f"B_max must be an integer in [2, b_full={self.b_full}] (the relaxation needs "
                f"B_max > 1), got {self.B_max!r}")
        object.__setattr__(self, "B_max", int(self.B_max))
        if self.rate_bps is not None:  # errors name the field (qlib.system validates the rest)
            if self.payload_elements < 0 or self.payload_elements != int(self.payload_elements):
                raise ValueError(f"payload_elements must be an integer >= 0, got {self.payload_elements!r}")
            system.uplink_energy(system.embedding_bits(1, 1, self.activation_bits) * self.payload_elements,
                                 self.rate_bps, self.tx_power_w)
        else:  # an uplink problem is checked through computation_only(), the (P1) it reduces to
            _check_scale(self.coefficients(), self.T0, self.E0)

    def _uplink(self, power: bool) -> dict[str, float]:
        """The optional uplink arguments of :func:`qlib.system.total_delay` / ``total_energy``."""
        if self.rate_bps is None:
            return {}
        up = {"payload_bits": self.payload_elements * self.activation_bits, "rate_bps": self.rate_bps}
        return {**up, "tx_power_w": self.tx_power_w} if power else up

    def uplink_delay(self) -> float:
        """:math:`t_{\\mathrm{up}}` in s (0 without an uplink)."""
        return float(system.total_delay(1, 0, 0, 1, 1, self.hardware, **self._uplink(False)))

    def uplink_energy(self) -> float:
        """:math:`e_{\\mathrm{up}}` in J (0 without an uplink)."""
        return float(system.total_energy(1, 0, 0, 1, 1, self.hardware, **self._uplink(True)))

    def computation_only(self) -> "Problem":
        """(P1) on the budgets the uplink leaves: :math:`T_0 - t_{\\mathrm{up}}`, :math:`E_0 - e_{\\mathrm{up}}`.

        For a fixed activation bit-width the uplink is a constant delay and energy, so the
        problem with an uplink is the paper's (P1) with reduced budgets. Raises ``ValueError``
        naming the budget (``"delay"`` / ``"energy"``) if the uplink alone uses it up.
        """
        t_up, e_up = self.uplink_delay(), self.uplink_energy()
        for name, budget, used in (("delay", self.T0, t_up), ("energy", self.E0, e_up)):
            if used >= budget:
                raise ValueError(f"{name}: the uplink alone ({used:.4g}) uses up the {name} budget ({budget:.4g})")
        return replace(self, T0=self.T0 - t_up, E0=self.E0 - e_up, rate_bps=None)

    @property
    def hardware(self) -> system.Hardware:
        """The processor constants as a :class:`qlib.system.Hardware`."""
        return self._hw  # type: ignore[attr-defined, no-any-return]

    def delay(self, bit_width: Any, f_agent: Any, f_server: Any) -> Any:
        """Total delay :math:`T` in s (eq. 8), via :func:`qlib.system.total_delay`."""
        return system.total_delay(bit_width, self.n_flop_agent, self.n_flop_server, f_agent, f_server, self.hardware,
                                  **self._uplink(False))

    def energy(self, bit_width: Any, f_agent: Any, f_server: Any) -> Any:
        """The energy :math:`E_0` bounds, in J: eq. (9) (``energy_scope="total"``) or eq. (6) (``"agent"``),
        plus the uplink's transmit energy when there is one (the agent's radio spends it, so it counts in both)."""
        if self.energy_scope == "agent":
            return system.agent_energy(bit_width, self.n_flop_agent, f_agent, self.hardware) + self.uplink_energy()
        return self.total_energy(bit_width, f_agent, f_server)

    def total_energy(self, bit_width: Any, f_agent: Any, f_server: Any) -> Any:
        """Total energy :math:`E` in J (eq. 9, plus the uplink's), whatever the scope of the budget."""
        return system.total_energy(bit_width, self.n_flop_agent, self.n_flop_server, f_agent, f_server, self.hardware,
                                   **self._uplink(True))

    def objective(self, bit_width: Any) -> Any:
        """The objective of (P1) at ``bit_width`` (see :func:`gap_objective`)."""
        return gap_objective(bit_width, self.lam)

    def violation(self, bit_width: Any, f_agent: Any, f_server: Any) -> tuple[Any, Any]:
        """Relative constraint violations ``(T/T0 - 1, E/E0 - 1)``; <= 0 means met."""
        return (np.asarray(self.delay(bit_width, f_agent, f_server)) / self.T0 - 1.0,
                np.asarray(self.energy(bit_width, f_agent, f_server)) / self.E0 - 1.0)

    def is_feasible(self, bit_width: float, f_agent: float, f_server: float, rtol: float = RTOL) -> bool:
        """Whether a design meets (30a)–(30e) (bit-width integer check excluded), up to ``rtol``."""
        if not (0 < f_agent <= self.f_agent_max * (1 + rtol) and 0 < f_server <= self.f_server_max * (1 + rtol)):
            return False
        if not 1 <= bit_width <= self.B_max:
            return False
        dv, ev = self.violation(bit_width, f_agent, f_server)
        return bool(dv <= rtol and ev <= rtol)

    def coefficients(self) -> dict[str, float]:
        """Dimensionless coefficients ``tau_a, tau_s, eps_a, eps_s`` of the normalized constraints.

        With :math:`\\varphi = f/f^{\\max}` and :math:`\\tilde\\varphi = \\tilde f/\\tilde f^{\\max}`,
        ``T/T0 = tau_a b / phi + tau_s / phi_s`` and ``E/E0 = eps_a b phi**2 + eps_s phi_s**2``
        (eqs. 4–9 divided by the budgets). ``eps_s`` is the server's energy at its maximum
        clock over E0 whatever :attr:`energy_scope`; under ``"agent"`` the budget ignores it.
        """
        if self.rate_bps is not None:
            raise ValueError("this Problem has an uplink (rate_bps is set): use solve_exact (or qlib.uplink.solve_joint, "
                             "which also picks the activation bits and the split), or pass "
                             "problem.computation_only() (the budgets the uplink leaves) to the other solvers")
        return _coefficients(*(getattr(self, k) for k in ("n_flop_agent", "n_flop_server", "T0", "E0")),
                             *(getattr(self, k) for k in _HW_FIELDS[-1:] + _HW_FIELDS[:-1]))


@dataclass(frozen=True)
class Solution:
    """A design returned by a solver.

    Attributes
    ----------
    method : str
        ``"exact"``, ``"sca"``, ``"fixed-frequency"``, ``"random-feasible"`` or ``"ppo"``.
    feasible : bool
        Whether the returned design meets every constraint of (P1).
    bit_width : int or None
        :math:`\\hat b` (None when infeasible).
    f_agent, f_server : float or None
        :math:`f`, :math:`\\tilde f` in cycles/s.
    delay : float or None
        :math:`T` (s) of the design.
    energy : float or None
        The energy the budget :math:`E_0` bounds (J): eq. (9), or eq. (6) under
        ``energy_scope="agent"``.
    energy_total : float or None
        Total energy of eq. (9) (J), whatever the budget's scope.
    objective : float
        :math:`D^U(\\hat b-1) - D^L(\\hat b-1)`; ``inf`` when infeasible or at :math:`\\hat b = 1`.
    reason : str
        Why the result is infeasible (``"delay"`` / ``"energy"`` and a sentence), or a note on a
        feasible result (SCA stopped at ``max_iter``, rounding repaired, only 1 bit fits).
    history : tuple of float
        SCA only: the (P2) objective at :math:`\\tilde b^{(k)}`, k = 0, 1, ... (Algorithm 1).
    bit_history : tuple of float
        SCA only: the iterates :math:`\\tilde b^{(k)}`, k = 0, 1, ...
    relaxed_bit_width : float or None
        SCA only: :math:`\\tilde b^*` before rounding.
    converged : bool or None
        SCA only: whether the stopping rule was met (False: stopped at ``max_iter`` or by a
        solver failure; :attr:`reason` says which).
    samples : tuple of int
        Random-feasible and PPO: the feasible bit-widths among the trials.
    solve_time : float
        Wall-clock seconds of the solve.
    """

    method: str
    feasible: bool
    bit_width: int | None = None
    f_agent: float | None = None
    f_server: float | None = None
    delay: float | None = None
    energy: float | None = None
    objective: float = math.inf
    reason: str = ""
    history: tuple[float, ...] = ()
    bit_history: tuple[float, ...] = ()
    relaxed_bit_width: float | None = None
    samples: tuple[int, ...] = field(default=(), repr=False)
    solve_time: float = 0.0
    energy_total: float | None = None
    converged: bool | None = None


def _design(problem: Problem, method: str, b: int, f: float, fs: float, **extra: Any) -> Solution:
    """A feasible :class:`Solution`, its delay, energy and objective computed by qlib.system."""
    obj = float(problem.objective(b))
    note = extra.pop("reason", "")
    if not math.isfinite(obj) and "unbounded" not in note:
        note = (note + "; " if note else "") + "bit_width = 1: the bound D^U(0) is unbounded, objective +inf"
    return Solution(method=method, feasible=True, bit_width=int(b), f_agent=float(f), f_server=float(fs),
                    delay=float(problem.delay(b, f, fs)), energy=float(problem.energy(b, f, fs)),
                    energy_total=float(problem.total_energy(b, f, fs)),
                    objective=obj, reason=note, **extra)


def _infeasible(method: str, why: str, **extra: Any) -> Solution:
    return Solution(method=method, feasible=False, reason=why, **extra)


def _check_problem(problem: Any, name: str = "problem") -> "Problem":
    if not isinstance(problem, Problem):
        raise ValueError(f"{name} must be a qlib.design.Problem, got {type(problem).__name__} "
                         "(for many problems call the solver once per problem, or use solve_exact/ProblemBatch)")
    return problem


# --------------------------------------------------------------------------------------------
# Arrays of problems (issue 14.4): the certified optimum at array speed.
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ProblemBatch:
    r"""Many instances of (P1) as arrays, one entry per problem (fields as in :class:`Problem`).

    Every field takes a scalar (shared by all problems) or a 1-D array; they are broadcast to
    one length ``n`` and checked at once (errors name the field). ``energy_scope`` is a string
    or an array of strings from :data:`ENERGY_SCOPES`. :func:`solve_exact_batch` solves them.

    Examples
    --------
    >>> batch = ProblemBatch(n_flop_agent=[64e9, 500e9], n_flop_server=128e9, T0=2.0, E0=2.0)
    >>> solve_exact_batch(batch).bit_width.tolist()
    [16, 6]
    """

    n_flop_agent: Any
    n_flop_server: Any
    T0: Any
    E0: Any
    lam: Any = 1.0
    B_max: Any = 16
    b_full: Any = _HW.b_full
    f_agent_max: Any = _HW.f_agent_max
    f_server_max: Any = _HW.f_server_max
    c_agent: Any = _HW.c_agent
    c_server: Any = _HW.c_server
    eta_agent: Any = _HW.eta_agent
    eta_server: Any = _HW.eta_server
    psi_agent: Any = _HW.psi_agent
    psi_server: Any = _HW.psi_server
    energy_scope: Any = "total"

    def __post_init__(self) -> None:
        names = [f.name for f in fields(self) if f.name != "energy_scope"]
        arrs = {}
        for name in names:
            value = getattr(self, name)
            try:
                arr = np.asarray(value, dtype=float)
            except (TypeError, ValueError):
                raise ValueError(f"{name} must be a number or a 1-D array of numbers, got {type(value).__name__}") from None
            if arr.ndim > 1:
                raise ValueError(f"{name} must be a scalar or a 1-D array, got shape {arr.shape}")
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"{name} must be finite (no NaN or inf)")
            arrs[name] = arr
        scope = np.asarray(self.energy_scope)
        if scope.ndim > 1 or not np.all(np.isin(scope, ENERGY_SCOPES)):
            raise ValueError(f"energy_scope must be one of {ENERGY_SCOPES} (or a 1-D array of them)")
        try:
            shapes = np.broadcast_shapes(*(a.shape for a in arrs.values()), scope.shape)
        except ValueError:
            raise ValueError("the fields of a ProblemBatch must be scalars or 1-D arrays of one common length") from None
        n = shapes[0] if shapes else 1
        if n < 1:
            raise ValueError("a ProblemBatch needs at least one problem")
        for name in names:
            arr = np.broadcast_to(arrs[name], (n,))
            if name in ("eta_agent", "eta_server"):
                if np.any(arr < 1):
                    raise ValueError(f"{name} (PUE) must be a finite number >= 1, got {arr[arr < 1][0]!r}")
            elif np.any(arr <= 0):
                raise ValueError(f"{name} must be a finite number > 0, got {arr[arr <= 0][0]!r}")
            object.__setattr__(self, name, arr)
        if np.any(self.b_full != np.floor(self.b_full)):
            raise ValueError("b_full must be an integer >= 1 (bits per stored weight)")
        bm = self.B_max
        if np.any(bm != np.floor(bm)) or np.any(bm < 2) or np.any(bm > self.b_full):
            raise ValueError("B_max must be an integer in [2, b_full] (the relaxation needs B_max > 1)")
        object.__setattr__(self, "B_max", bm.astype(int))
        object.__setattr__(self, "b_full", self.b_full.astype(int))
        object.__setattr__(self, "energy_scope", np.broadcast_to(scope, (n,)).astype(str))
        _check_scale(self.coefficients(), self.T0, self.E0)

    def __len__(self) -> int:
        return int(self.T0.shape[0])

    @classmethod
    def from_problems(cls, problems: Iterable[Problem]) -> "ProblemBatch":
        """The batch of a sequence of :class:`Problem` (order kept)."""
        items = list(problems) if not isinstance(problems, Problem) else [problems]
        if not items or not all(isinstance(p, Problem) for p in items):
            raise ValueError("problems must be a Problem or a non-empty sequence of Problem instances")
        cols = {f.name: [getattr(p, f.name) for p in items] for f in fields(cls)}
        return cls(**{k: np.asarray(v) for k, v in cols.items()})

    def problem(self, i: int) -> Problem:
        """Problem ``i`` as a :class:`Problem`."""
        return Problem(**{f.name: (getattr(self, f.name)[i].item() if f.name != "energy_scope"
                                   else str(self.energy_scope[i])) for f in fields(self)})

    def coefficients(self) -> dict[str, np.ndarray]:
        """Arrays of :meth:`Problem.coefficients`."""
        return _coefficients(self.n_flop_agent, self.n_flop_server, self.T0, self.E0, self.b_full,
                             *(getattr(self, k) for k in _HW_FIELDS[:-1]))


@dataclass(frozen=True)
class SolutionBatch:
    """The certified optima of a :class:`ProblemBatch`, as arrays (one entry per problem).

    Attributes
    ----------
    bit_width : ndarray of int
        :math:`\\hat b` (0 where infeasible).
    f_agent, f_server, delay, energy, energy_total, objective : ndarray of float
        As in :class:`Solution` (NaN where infeasible; ``objective`` is ``inf`` there).
    feasible : ndarray of bool
    reason_code : ndarray of int
        :data:`REASON_CODES`: 0 feasible, 1 delay, 2 energy.
    """

    bit_width: np.ndarray
    f_agent: np.ndarray
    f_server: np.ndarray
    delay: np.ndarray
    energy: np.ndarray
    energy_total: np.ndarray
    objective: np.ndarray
    feasible: np.ndarray
    reason_code: np.ndarray

    def __len__(self) -> int:
        return int(self.bit_width.shape[0])


def random_problems(n: int, seed: int = 0, rng: np.random.Generator | None = None, **fixed: Any) -> list[Problem]:
    r"""``n`` seeded random instances of (P1) around the paper's settings (Sec. VI-C hardware).

    Workloads and budgets are log-uniform: :math:`N_{\mathrm{FLOP}}` in [50, 1000] GFLOPs,
    :math:`\tilde N_{\mathrm{FLOP}}` in [20, 500] GFLOPs, :math:`T_0` in [0.3, 4] s,
    :math:`E_0` in [0.5, 10] J (the BLIP-2 and GIT settings of Figs. 5–8 lie inside); λ = 1.
    Keyword arguments override any :class:`Problem` field for all instances.

    Parameters
    ----------
    n : int
        Number of instances (>= 1).
    seed : int
        Seed of the NumPy generator (ignored when ``rng`` is given).
    rng : numpy.random.Generator, optional
        Generator to draw from.
    """
    if isinstance(n, bool) or not (isinstance(n, (int, np.integer)) and n >= 1):
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    gen = rng if rng is not None else np.random.default_rng(seed)

    def logu(lo: float, hi: float) -> np.ndarray:
        return np.exp(gen.uniform(math.log(lo), math.log(hi), size=int(n)))

    na, ns, t0, e0 = logu(50e9, 1000e9), logu(20e9, 500e9), logu(0.3, 4.0), logu(0.5, 10.0)
    base = {"lam": 1.0}
    base.update(fixed)
    return [Problem(**{"n_flop_agent": float(na[i]), "n_flop_server": float(ns[i]), "T0": float(t0[i]),
                       "E0": float(e0[i]), **base}) for i in range(int(n))]


def random_problem_batch(n: int, seed: int = 0, **fixed: Any) -> ProblemBatch:
    """The instances of :func:`random_problems` (same seed, same draws) as one :class:`ProblemBatch`.

    ``random_problem_batch(n, seed).problem(i) == random_problems(n, seed)[i]``; no
    :class:`Problem` objects are built, so millions of instances take a fraction of a second.
    """
    if isinstance(n, bool) or not (isinstance(n, (int, np.integer)) and n >= 1):
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    gen = np.random.default_rng(seed)

    def logu(lo: float, hi: float) -> np.ndarray:
        return np.exp(gen.uniform(math.log(lo), math.log(hi), size=int(n)))

    na, ns, t0, e0 = logu(50e9, 1000e9), logu(20e9, 500e9), logu(0.3, 4.0), logu(0.5, 10.0)
    base = {"lam": 1.0}
    base.update(fixed)
    return ProblemBatch(n_flop_agent=na, n_flop_server=ns, T0=t0, E0=e0, **base)


# --------------------------------------------------------------------------------------------
# Minimum-energy frequencies for a given bit-width (closed-form KKT solution), vectorized.
# --------------------------------------------------------------------------------------------

def _min_energy(tau_a: Any, tau_s: Any, eps_a: Any, eps_s: Any, r_agent: Any, r_server: Any,
                bits: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    r"""Minimum of E/E0 over the normalized frequencies subject to T/T0 <= 1 (all arrays broadcast).

    min eps_a b phi^2 + eps_s phi_s^2  s.t.  tau_a b / phi + tau_s / phi_s <= 1,  0 < phi, phi_s <= 1.

    KKT: the delay constraint is active and, away from the caps, 2 eps_a b phi = mu tau_a b / phi^2,
    i.e. phi = k * r_agent and phi_s = k * r_server with r = (f_max^3 / (eta psi))^(1/3) / f_max
    up to a common factor (``r_agent``, ``r_server`` carry it). k grows until the delay is met;
    a frequency that reaches its cap stays there and the other one alone closes the gap.

    Returns ``(phi, phi_s, energy_ratio, delay_ok)``; where the delay budget cannot be met
    even at the caps, ``delay_ok`` is False and the caps are returned.
    """
    tau_a, tau_s, eps_a, eps_s, ra, rs, b = np.broadcast_arrays(
        *(np.asarray(x, dtype=float) for x in (tau_a, tau_s, eps_a, eps_s, r_agent, r_server, bits)))
    ta = tau_a * b  # agent delay / T0 at phi = 1
    delay_ok = ta + tau_s <= 1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        k1 = ta / ra + tau_s / rs  # uncapped: delay(k) = (ta/ra + tau_s/rs) / k = 1
        ka, ks = 1.0 / ra, 1.0 / rs  # k at which each frequency reaches its cap
        phi = k1 * ra
        phs = k1 * rs
        agent_first = ka <= ks
        capped = k1 > np.minimum(ka, ks)
        # Agent at its cap, the server closes the gap (and vice versa).
        phs_a = tau_s / (1.0 - ta)
        phi_s = ta / (1.0 - tau_s)
        phi = np.where(capped, np.where(agent_first, 1.0, phi_s), phi)
        phs = np.where(capped, np.where(agent_first, phs_a, 1.0), phs)
    phi = np.where(delay_ok, np.minimum(phi, 1.0), 1.0)
    phs = np.where(delay_ok, np.minimum(phs, 1.0), 1.0)
    energy = eps_a * b * phi**2 + eps_s * phs**2
    return phi, phs, energy, delay_ok


def _ratios_arrays(eta_a: Any, psi_a: Any, fa_max: Any, eta_s: Any, psi_s: Any, fs_max: Any,
                   agent_only: Any) -> tuple[np.ndarray, np.ndarray]:
    """KKT direction f : f_server = (eta psi)^(-1/3) : (eta~ psi~)^(-1/3), in units of the caps.

    Under ``energy_scope="agent"`` the server's energy is free: it runs at its cap first
    (ra = 0, rs = 1 makes :func:`_min_energy` cap the server and slow the agent alone).
    """
    ra = (np.asarray(eta_a) * psi_a) ** (-1.0 / 3.0) / fa_max
    rs = (np.asarray(eta_s) * psi_s) ** (-1.0 / 3.0) / fs_max
    scale = np.maximum(ra, rs)  # keep k of order one
    ra, rs = ra / scale, rs / scale
    agent_only = np.asarray(agent_only, dtype=bool)
    return np.where(agent_only, 0.0, ra), np.where(agent_only, 1.0, rs)


def _ratios(problem: Problem) -> tuple[float, float]:
    ra, rs = _ratios_arrays(problem.eta_agent, problem.psi_agent, problem.f_agent_max, problem.eta_server,
                            problem.psi_server, problem.f_server_max, problem.energy_scope == "agent")
    return float(ra), float(rs)


def _budget_eps_s(problem: Problem, coeffs: Mapping[str, float]) -> float:
    """The server's share of the energy constraint: eps_s, or 0 when E0 bounds the agent only."""
    return 0.0 if problem.energy_scope == "agent" else float(coeffs["eps_s"])


def optimal_frequencies(problem: Problem, bit_width: Any) -> dict[str, Any]:
    r"""For fixed bit-width(s), the frequencies that meet the delay budget with least energy (KKT).

    For fixed :math:`\hat b`, (P1) is the two-variable convex feasibility problem
    :math:`\{(f,\tilde f): T \le T_0, E \le E_0, 0 < f \le f^{\max}, 0 < \tilde f \le \tilde f^{\max}\}`.
    It is non-empty iff the least energy over :math:`T \le T_0` is at most :math:`E_0`. The KKT
    conditions give :math:`f^3 \eta\psi = \tilde f^3 \tilde\eta\tilde\psi` (both frequencies
    scale together) until one reaches its cap, then the other closes the delay gap alone;
    the delay constraint is active. Closed form, no iteration. Under
    ``energy_scope="agent"`` the server runs at its cap and the agent alone closes the gap.

    Parameters
    ----------
    problem : Problem
        The instance.
    bit_width : float or ndarray
        Bit-width(s) in [1, B_max] (non-integers allowed: relaxation (P2)).

    Returns
    -------
    dict
        ``f_agent``, ``f_server`` (cycles/s), ``delay``, ``energy`` (the least budgeted energy),
        ``energy_total`` (eq. 9), ``feasible`` (bool array), ``reason`` (``""``, ``"delay"`` or
        ``"energy"``) per bit-width.

    Examples
    --------
    >>> p = Problem(n_flop_agent=64e9, n_flop_server=128e9, T0=2.0, E0=2.0)
    >>> out = optimal_frequencies(p, 8)
    >>> bool(out["feasible"]), round(float(out["delay"]), 6)
    (True, 2.0)
    """
    _check_problem(problem)
    b = np.asarray(bit_width, dtype=float)
    if np.any(~np.isfinite(b)) or np.any(b < 1) or np.any(b > problem.B_max):
        raise ValueError(f"bit_width must be in [1, B_max={problem.B_max}], got {bit_width!r}")
    c = problem.coefficients()
    ra, rs = _ratios(problem)
    phi, phs, e_ratio, delay_ok = _min_energy(c["tau_a"], c["tau_s"], c["eps_a"], _budget_eps_s(problem, c),
                                              ra, rs, b)
    f = phi * problem.f_agent_max
    fs = phs * problem.f_server_max
    delay = np.asarray(problem.delay(b, f, fs))
    energy = np.asarray(problem.energy(b, f, fs))
    total = np.asarray(problem.total_energy(b, f, fs))
    feasible = delay_ok & (energy <= problem.E0 * (1 + RTOL)) & (delay <= problem.T0 * (1 + RTOL))
    reason = np.where(feasible, "", np.where(delay_ok, "energy", "delay"))
    out = {"f_agent": f, "f_server": fs, "delay": delay, "energy": energy, "energy_total": total,
           "feasible": feasible, "reason": reason}
    return {k: (v[()] if v.ndim == 0 else v) for k, v in out.items()}


# --------------------------------------------------------------------------------------------
# Exact global optimum, array in / array out, and for Problem objects.
# --------------------------------------------------------------------------------------------

_WHY = {
    1: "delay: the delay budget T0 is missed even at bit_width = 1 and both maximum frequencies",
    2: "energy: no frequencies meet the delay budget T0 within the energy budget E0, even at bit_width = 1",
}


def _solve_chunk(tau_a: np.ndarray, tau_s: np.ndarray, eps_a: np.ndarray, eps_s: np.ndarray, ra: np.ndarray,
                 rs: np.ndarray, b_max: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Largest feasible integer bit-width (0: none), its least-energy (phi, phs), delay_ok at b = 1."""
    agent_first = ra >= rs

    def least(b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # max(ra, rs) = 1: the faster-rising clock reaches its cap at k = 1 (see _min_energy)
        ta = tau_a * b
        with np.errstate(divide="ignore", invalid="ignore"):
            k1 = ta / ra + tau_s / rs
            capped = k1 > 1.0
            phi = np.where(capped & ~agent_first, ta / (1.0 - tau_s), np.minimum(k1 * ra, 1.0))
            phs = np.where(capped & agent_first, tau_s / (1.0 - ta), np.minimum(k1 * rs, 1.0))
        return phi, phs, ta + tau_s <= 1.0

    def ok(b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        phi, phs, d_ok = least(b)
        return d_ok & (eps_a * b * phi * phi + eps_s * phs * phs <= 1.0 + RTOL), d_ok

    one = np.ones_like(tau_a)
    one_ok, one_delay_ok = ok(one)
    # Invariant: lo feasible (0 stands for "none"), hi infeasible (B_max + 1 for "beyond").
    lo = one_ok.astype(float)
    hi = np.where(one_ok, b_max + 1.0, 1.0)
    while True:
        gap = hi - lo > 1
        if not gap.any():
            break
        mid = np.floor((lo + hi) / 2)
        good, _ = ok(np.maximum(mid, 1.0))
        lo = np.where(gap & good, mid, lo)
        hi = np.where(gap & ~good, mid, hi)
    phi, phs, _ = least(np.maximum(lo, 1.0))
    return lo, phi, phs, one_delay_ok


_CHUNK = 8192  # problems per pass: every temporary array stays in cache


def solve_exact_batch(batch: ProblemBatch) -> SolutionBatch:
    r"""Certified global optimum of (P1) for every problem of a :class:`ProblemBatch` (arrays in, arrays out).

    :math:`g` is strictly decreasing and the feasible bit-widths are a down-set, so the optimum
    is the largest :math:`\hat b \le B_{\max}` whose least-energy frequencies at the delay budget
    (the closed form of :func:`optimal_frequencies`) meet the energy budget; those least-energy
    frequencies are returned (the lexicographic optimum: best objective, then least energy).
    The largest feasible integer is found by bisection on all problems at once (about
    :math:`\log_2 B_{\max}` NumPy passes over cache-sized chunks), no Python loop over problems.
    """
    if not isinstance(batch, ProblemBatch):
        raise ValueError(f"batch must be a qlib.design.ProblemBatch, got {type(batch).__name__}")
    c = batch.coefficients()
    agent_only = batch.energy_scope == "agent"
    tau_a, tau_s, eps_a = c["tau_a"], c["tau_s"], c["eps_a"]
    eps_s_b = np.where(agent_only, 0.0, c["eps_s"])
    ra, rs = _ratios_arrays(batch.eta_agent, batch.psi_agent, batch.f_agent_max, batch.eta_server,
                            batch.psi_server, batch.f_server_max, agent_only)
    n = len(batch)
    lo, phi, phs = np.empty(n), np.empty(n), np.empty(n)
    delay_ok1 = np.empty(n, dtype=bool)
    bm = batch.B_max.astype(float)
    for s in range(0, n, _CHUNK):
        sl = slice(s, s + _CHUNK)
        lo[sl], phi[sl], phs[sl], delay_ok1[sl] = _solve_chunk(tau_a[sl], tau_s[sl], eps_a[sl], eps_s_b[sl],
                                                               ra[sl], rs[sl], bm[sl])
    best = lo.astype(int)
    feasible = best > 0
    code = np.where(feasible, 0, np.where(delay_ok1, 2, 1)).astype(np.int8)
    b = np.maximum(lo, 1.0)
    with np.errstate(divide="ignore"):
        delay = batch.T0 * (tau_a * b / phi + tau_s / phs)  # eq. (8) over T0, times T0
    e_agent = batch.E0 * eps_a * b * phi**2  # eq. (6)
    total = e_agent + batch.E0 * c["eps_s"] * phs**2  # eq. (9)
    energy = np.where(agent_only, e_agent, total)
    nan = np.full(n, np.nan)
    gap_obj = np.asarray(gap_objective(b, batch.lam))  # the same expression as Problem.objective
    return SolutionBatch(
        bit_width=best, feasible=feasible, reason_code=code,
        f_agent=np.where(feasible, phi * batch.f_agent_max, nan),
        f_server=np.where(feasible, phs * batch.f_server_max, nan),
        delay=np.where(feasible, delay, nan), energy=np.where(feasible, energy, nan),
        energy_total=np.where(feasible, total, nan), objective=np.where(feasible, gap_obj, np.inf))


def _as_list(problems: Any) -> tuple[list[Problem], bool]:
    if isinstance(problems, Problem):
        return [problems], True
    if problems is None or isinstance(problems, (str, bytes)) or not hasattr(problems, "__iter__"):
        raise ValueError(f"problems must be a Problem or a non-empty sequence of Problem instances, "
                         f"got {type(problems).__name__}")
    items = list(problems)
    if not items or not all(isinstance(p, Problem) for p in items):
        raise ValueError("problems must be a Problem or a non-empty sequence of Problem instances")
    return items, False


def solve_exact(problems: Problem | Iterable[Problem]) -> Solution | list[Solution]:
    r"""Certified global optimum of (P1) for :class:`Problem` objects (see :func:`solve_exact_batch`).

    Among the optimal designs (every feasible :math:`(f,\tilde f)` at the optimal :math:`\hat b`)
    the one with least energy is returned. For arrays of problems and no :class:`Solution`
    objects, :func:`solve_exact_batch` is several times faster.

    Parameters
    ----------
    problems : Problem or sequence of Problem

    Returns
    -------
    Solution or list of Solution
        One per problem (a single one for a single problem); ``method="exact"``.

    Examples
    --------
    >>> p = Problem(n_flop_agent=64e9, n_flop_server=128e9, T0=2.0, E0=2.0)
    >>> solve_exact(p).bit_width
    16
    """
    items, single = _as_list(problems)
    if any(p.rate_bps is not None for p in items):
        out_up = _solve_exact_uplink(items)
        return out_up[0] if single else out_up
    t0 = time.perf_counter()
    sb = solve_exact_batch(ProblemBatch.from_problems(items))
    elapsed = (time.perf_counter() - t0) / len(items)
    one = "only bit_width = 1 meets the budgets; its bound D^U(0) is unbounded"
    out = [
        Solution(method="exact", feasible=True, bit_width=int(sb.bit_width[i]), f_agent=float(sb.f_agent[i]),
                 f_server=float(sb.f_server[i]), delay=float(sb.delay[i]), energy=float(sb.energy[i]),
                 energy_total=float(sb.energy_total[i]), objective=float(sb.objective[i]),
                 reason=one if sb.bit_width[i] == 1 else "", solve_time=elapsed)
        if sb.feasible[i] else _infeasible("exact", _WHY[int(sb.reason_code[i])], solve_time=elapsed)
        for i in range(len(items))
    ]
    return out[0] if single else out


def _solve_exact_uplink(items: list[Problem]) -> list[Solution]:
    """solve_exact with uplinks: (P1) on the budgets the uplink leaves (Problem.computation_only)."""
    reduced: list[Problem | None] = []
    whys: list[str] = []
    for p in items:
        try:
            reduced.append(p.computation_only())
            whys.append("")
        except ValueError as exc:
            reduced.append(None)
            whys.append(str(exc))
    solvable = [r for r in reduced if r is not None]
    solved = iter(solve_exact(solvable) if solvable else [])  # type: ignore[arg-type]
    out = []
    for p, r, why in zip(items, reduced, whys):
        if r is None:
            out.append(_infeasible("exact", why))
            continue
        s = next(solved)
        if s.feasible:  # report the full delay and energy, uplink included
            t_up, e_up = p.uplink_delay(), p.uplink_energy()
            s = replace(s, delay=s.delay + t_up, energy=s.energy + e_up, energy_total=s.energy_total + e_up)
        out.append(s)
    return out


def relaxed_optimum(problem: Problem, tol: float = 1e-10) -> float:
    r"""Global optimum :math:`\tilde b^*` of the relaxation (P2): the largest feasible real bit-width.

    Found by bisection on the monotone feasibility of :math:`\tilde b \in [1, B_{\max}]`
    (the objective is strictly decreasing). Returns 1.0 when only :math:`\tilde b = 1` is
    feasible and raises ``ValueError`` when even that is not.
    """
    _check_problem(problem)
    c = problem.coefficients()
    ra, rs = _ratios(problem)
    eps_s = _budget_eps_s(problem, c)

    def feasible(b: float) -> bool:
        _, _, e, ok = _min_energy(c["tau_a"], c["tau_s"], c["eps_a"], eps_s, ra, rs, b)
        return bool(ok) and float(e) <= 1.0

    if not feasible(1.0):
        raise ValueError("problem is infeasible: no bit-width in [1, B_max] meets the budgets")
    if feasible(float(problem.B_max)):
        return float(problem.B_max)
    lo, hi = 1.0, float(problem.B_max)
    while hi - lo > tol:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if feasible(mid) else (lo, mid)
    return lo


# --------------------------------------------------------------------------------------------
# The paper's Algorithm 1 (SCA on P4.k) with cvxpy.
# --------------------------------------------------------------------------------------------

class _P4:
    """Problem (P4.k) as one DPP-compliant cvxpy problem, compiled once and re-solved with new
    parameter values (instance data and the SCA point b~^(k), b~'^(k)).

    Variables are normalized: ``phi = f/f_max`` and ``phs = f_server/f_server_max``, and the
    objective is multiplied by λ (it only scales the objective). ``s = 2 λ D^U(b~-1)`` is an
    epigraph variable: s(s+2)(2^R - 1) >= 4 with R = b~ - 1 is equivalent to
    s >= sqrt(1 + 4/(2^R-1)) - 1 and, in logs, is a DCP constraint
    log s + log(s+2) + R ln2 + log(1 - 2^-R) >= ln 4 (a sum of concave terms).
    """

    def __init__(self) -> None:
        import cvxpy as cp

        self.cp = cp
        self.bt = cp.Variable(name="b_relaxed")            # b~
        self.bp = cp.Variable(pos=True, name="b_aux")      # b~' (stands for 1/b~), (32d)
        self.phi = cp.Variable(pos=True, name="phi")
        self.phs = cp.Variable(pos=True, name="phi_server")
        self.s = cp.Variable(pos=True, name="s")
        self.tau_a = cp.Parameter(nonneg=True)
        self.tau_s = cp.Parameter(nonneg=True)
        self.eps_a = cp.Parameter(nonneg=True)
        self.eps_s = cp.Parameter(nonneg=True)
        self.b_lo = cp.Parameter()
        self.b_hi = cp.Parameter()
        self.two_over_bpk = cp.Parameter(nonneg=True)      # 2 / b~'^(k)
        self.inv_bpk2 = cp.Parameter(nonneg=True)          # 1 / b~'^(k)^2
        self.zeta0 = cp.Parameter()                        # 2^-b^(k) (1 + ln2 b^(k))
        self.zeta1 = cp.Parameter(nonneg=True)             # ln2 2^-b^(k)
        self.w_du = cp.Parameter(nonneg=True)              # 1: corrected (34); 0: (34) as printed
        R = self.bt - 1.0
        constraints = [
            # (32a) divided by T0: N/(b' b f c) + N~/(f~ c~) <= T0
            self.tau_a * cp.inv_prod(cp.hstack([self.bp, self.phi])) + self.tau_s * cp.inv_pos(self.phs) <= 1.0,
            # (32b) divided by E0: eta N psi f^2/(b' b c) + eta~ N~ psi~ f~^2 / c~ <= E0
            self.eps_a * cp.quad_over_lin(self.phi, self.bp) + self.eps_s * cp.square(self.phs) <= 1.0,
            # (36a): the first-order (inner) approximation of (32c) b~ <= 1/b~'
            self.bt <= self.two_over_bpk - self.inv_bpk2 * self.bp,
            # (31c) with the open lower end closed at b_lo = 1 + eps, (30d), (30e)
            self.bt >= self.b_lo, self.bt <= self.b_hi,
            self.phi <= 1.0, self.phs <= 1.0,
            # epigraph of s = 2 λ D^U(b~ - 1) (convex in b~), see the class docstring
            cp.log(self.s) + cp.log(self.s + 2.0) + _LN2 * R + cp.log(1.0 - cp.exp(-_LN2 * R)) >= math.log(4.0),
        ]
        # Corrected (34): λ[D^U(b~-1) - zeta_k(b~)], zeta_k the tangent of D^L(b~-1) = 2^-b~/λ at b^(k).
        # The paper's printed (34) has the first term frozen at b^(k), a constant: w_du = 0.
        objective = cp.Minimize(self.w_du * 0.5 * self.s - (self.zeta0 - self.zeta1 * self.bt))
        self.problem = cp.Problem(objective, constraints)
        assert self.problem.is_dcp(dpp=True)

    def solve(self, coeffs: dict[str, float], b_lo: float, b_hi: float, b_k: float, bp_k: float,
              exact_du: bool = True) -> tuple[str, dict]:
        cp = self.cp
        self.w_du.value = 1.0 if exact_du else 0.0
        for name in ("tau_a", "tau_s", "eps_a", "eps_s"):
            getattr(self, name).value = coeffs[name]
        self.b_lo.value, self.b_hi.value = b_lo, b_hi
        self.two_over_bpk.value = 2.0 / bp_k
        self.inv_bpk2.value = 1.0 / bp_k**2
        self.zeta1.value = _LN2 * 2.0**-b_k
        self.zeta0.value = 2.0**-b_k * (1.0 + _LN2 * b_k)
        try:
            with warnings.catch_warnings():
                # "optimal_inaccurate" is accepted (the iterate is clipped into the box and the
                # rounding step checks feasibility); cvxpy's warning would only repeat that.
                warnings.simplefilter("ignore", UserWarning)
                self.problem.solve(solver=cp.CLARABEL, **_CLARABEL_TOL)
        except cp.error.SolverError as exc:  # pragma: no cover - solver failure is reported, not raised
            return f"solver error: {exc}", {}
        return self.problem.status, {
            "bt": float(self.bt.value), "bp": float(self.bp.value),
            "phi": float(self.phi.value), "phs": float(self.phs.value),
        }


_P4_CACHE: list[_P4] = []
# Normalized coefficients (delay and energy at the caps over the budgets) for which Clarabel
# solves (P4.k) to the accuracy the stopping rule needs; checked to 1e-9 against solve_exact.
_SCA_RANGE = (1e-10, 1e10)
# Tighter than Clarabel's defaults (1e-8): near b~ = B_max the objective changes by ~1e-5 per
# bit, and the default accuracy on b~ would show up as spurious increases of the history.
_CLARABEL_TOL = {"tol_gap_abs": 1e-9, "tol_gap_rel": 1e-9, "tol_feas": 1e-9}


def _p4() -> _P4:
    if not _P4_CACHE:
        _P4_CACHE.append(_P4())
    return _P4_CACHE[0]


def solve_sca(problem: Problem, delta: float = 1e-6, max_iter: int = 100, b_eps: float = 1e-3,
              surrogate: str = "corrected", b_start: float | None = None) -> Solution:
    r"""The paper's Algorithm 1: relax (P2), reformulate (P3), iterate the convex (P4.k), round.

    Steps (Sec. V-B):

    1. relax :math:`\hat b` to :math:`\tilde b\in[1+\epsilon_b, B_{\max}]` (P2); the paper's open
       end :math:`(1, B_{\max}]` is closed at :math:`1+\epsilon_b` because the objective is
       :math:`+\infty` at :math:`\tilde b = 1` (:math:`D^U(0)` is unbounded);
    2. start from the feasible point :math:`\tilde b^{(0)} = 1+\epsilon_b`,
       :math:`\tilde b'^{(0)} = 1/\tilde b^{(0)}` (infeasible budgets are detected here);
    3. solve (P4.k) with cvxpy (Clarabel): constraints (32a), (32b), (32d), (36a), (31c),
       (30d), (30e); objective the convex upper bound of the objective, tight at
       :math:`\tilde b^{(k)}`: :math:`D^U(\tilde b-1)` kept exactly (it is convex) minus the
       tangent :math:`\underline\zeta^{(k)}(\tilde b)` of :math:`D^L` (eq. 33). The paper's
       (34) freezes the first term at :math:`\tilde b^{(k)}`, which is no upper bound and
       drives :math:`\tilde b` to its lower end (see the chapter);
    4. stop when the (P2) objective decreases by less than ``delta`` **times its value**: the
       objective scales as :math:`1/\lambda`, so an absolute δ would stop bits early for large
       λ (issue 14.2); a run that reaches ``max_iter`` first says so in :attr:`Solution.reason`
       (``converged=False``);
    5. round :math:`\tilde b^*` to the nearest integer; if that bit-width is infeasible even with
       its least-energy frequencies, round down instead (always feasible, since
       :math:`\tilde b^*` is);
    6. return the least-energy frequencies at the rounded bit-width (:func:`optimal_frequencies`):
       among the optimal designs the one that uses least energy (a lexicographic objective; the
       SCA iterate's frequencies meet the budgets but may use many times more energy).

    Parameters
    ----------
    problem : Problem
    delta : float
        Relative stopping threshold δ in (0, 1): stop when the (P2) objective falls by less
        than δ times its previous value.
    max_iter : int
        Iteration cap (>= 1).
    b_eps : float
        ε_b in (0, 1): the relaxation's lower end is 1 + ε_b.
    surrogate : {"corrected", "paper"}
        ``"corrected"`` (default): the convex upper bound described above. ``"paper"``: (34)
        exactly as printed, first term frozen at :math:`\tilde b^{(k)}`; kept to show in the
        chapter that it drives :math:`\tilde b` to the lower end of the relaxation.
    b_start : float, optional
        Start point :math:`\tilde b^{(0)}` in [1 + ε_b, B_max] (must be feasible); default 1 + ε_b.

    Returns
    -------
    Solution
        ``method="sca"``; ``history`` holds the (P2) objective at :math:`\tilde b^{(k)}`,
        ``relaxed_bit_width`` the final :math:`\tilde b^*`, ``converged`` whether the stopping
        rule was met, ``reason`` any early stop or repair.
    """
    _check_problem(problem)
    if isinstance(delta, bool) or not (isinstance(delta, (int, float)) and math.isfinite(delta) and 0 < delta < 1):
        raise ValueError(f"delta must be a relative threshold in (0, 1), got {delta!r}")
    if isinstance(max_iter, bool) or not (isinstance(max_iter, (int, np.integer)) and max_iter >= 1):
        raise ValueError(f"max_iter must be an integer >= 1, got {max_iter!r}")
    if isinstance(b_eps, bool) or not (isinstance(b_eps, (int, float)) and 0 < b_eps < 1):
        raise ValueError(f"b_eps must be in (0, 1), got {b_eps!r}")
    if surrogate not in ("corrected", "paper"):
        raise ValueError(f"surrogate must be 'corrected' or 'paper', got {surrogate!r}")
    t0 = time.perf_counter()
    coeffs = dict(problem.coefficients())
    coeffs["eps_s"] = _budget_eps_s(problem, coeffs)
    b_lo = 1.0 + b_eps
    start = optimal_frequencies(problem, np.array([1.0, b_lo]))
    if not start["feasible"][0]:
        why = "delay" if start["reason"][0] == "delay" else "energy"
        return _infeasible("sca", _WHY[1 if why == "delay" else 2], solve_time=time.perf_counter() - t0)
    if not start["feasible"][1]:
        f1 = optimal_frequencies(problem, 1.0)
        return _design(problem, "sca", 1, f1["f_agent"], f1["f_server"], solve_time=time.perf_counter() - t0,
                       converged=True,
                       reason="no relaxed start point above 1 bit is feasible; only bit_width = 1 meets the "
                              "budgets and its bound D^U(0) is unbounded")
    spread = {k: v for k, v in coeffs.items() if v != 0.0}
    if any(not _SCA_RANGE[0] <= v <= _SCA_RANGE[1] for v in spread.values()):
        raise ValueError(
            "problem: its budgets are extreme for SCA (normalized coefficients "
            + ", ".join(f"{k}={v:.2g}" for k, v in spread.items())
            + f", outside [{_SCA_RANGE[0]:g}, {_SCA_RANGE[1]:g}], where the interior-point solver of (P4.k) "
            "loses the frequencies); solve_exact is certified at every scale")
    solver = _p4()
    b_k, bp_k = b_lo, 1.0 / b_lo
    if b_start is not None:
        if isinstance(b_start, bool) or not (isinstance(b_start, (int, float)) and b_lo <= b_start <= problem.B_max):
            raise ValueError(f"b_start must be in [1 + b_eps, B_max] = [{b_lo}, {problem.B_max}], got {b_start!r}")
        st = optimal_frequencies(problem, float(b_start))
        if not st["feasible"]:
            raise ValueError(f"b_start={b_start!r} is not feasible for this problem ({st['reason']} budget)")
        b_k, bp_k = float(b_start), 1.0 / float(b_start)
    history = [float(problem.objective(b_k))]
    bits = [b_k]
    notes = []
    converged = False
    for _ in range(int(max_iter)):
        status, x = solver.solve(coeffs, b_lo, float(problem.B_max), b_k, bp_k, surrogate == "corrected")
        if status not in ("optimal", "optimal_inaccurate"):
            notes.append(f"P4.k solver status {status!r} at iteration {len(history)}; kept the last iterate")
            break
        # Clip into the box: the interior-point solver returns points within its tolerance.
        b_k = min(max(x["bt"], b_lo), float(problem.B_max))
        bp_k = x["bp"]
        history.append(float(problem.objective(b_k)))
        bits.append(b_k)
        if history[-2] - history[-1] < delta * history[-2]:
            converged = True
            break
    else:
        notes.append(f"stopped at max_iter={int(max_iter)} before the objective's relative decrease fell "
                     f"below delta={delta:g}: b̃ = {b_k:.4f} may be below the relaxed optimum")
    b_star = b_k
    # Step 9 of Algorithm 1 (rounding), made feasibility-safe, with least-energy frequencies.
    b = int(min(max(round(b_star), 1), problem.B_max))
    re = optimal_frequencies(problem, float(b))
    if not re["feasible"]:
        b = max(1, min(int(math.floor(b_star + 1e-9)), problem.B_max))
        re = optimal_frequencies(problem, float(b))
        while not re["feasible"] and b > 1:  # numerical safety; b~* itself is feasible
            b -= 1
            re = optimal_frequencies(problem, float(b))
        notes.append("nearest bit-width infeasible: rounded down")
    return _design(problem, "sca", b, float(re["f_agent"]), float(re["f_server"]), history=tuple(history),
                   bit_history=tuple(bits), relaxed_bit_width=float(b_star), converged=converged,
                   reason="; ".join(notes), solve_time=time.perf_counter() - t0)


# --------------------------------------------------------------------------------------------
# Baselines of Sec. VI-C.
# --------------------------------------------------------------------------------------------

def solve_fixed_frequency(problem: Problem) -> Solution:
    r"""Baseline 2 of Sec. VI-C: both frequencies at their maximum, only :math:`\hat b` chosen.

    Returns the largest :math:`\hat b` meeting both budgets at :math:`(f^{\max}, \tilde f^{\max})`,
    or an infeasible solution naming the budget that even :math:`\hat b = 1` misses.
    """
    _check_problem(problem)
    t0 = time.perf_counter()
    F, Fs = problem.f_agent_max, problem.f_server_max
    bits = np.arange(1, problem.B_max + 1)
    delay = np.asarray(problem.delay(bits, F, Fs))
    energy = np.asarray(problem.energy(bits, F, Fs))
    ok = (delay <= problem.T0 * (1 + RTOL)) & (energy <= problem.E0 * (1 + RTOL))
    if not ok.any():
        scope = "total" if problem.energy_scope == "total" else "agent's"
        why = ("delay: the delay budget T0 is missed at the maximum frequencies even at bit_width = 1"
               if delay[0] > problem.T0 * (1 + RTOL) else
               f"energy: at the maximum frequencies the {scope} energy {energy[0]:.3g} J exceeds the energy "
               f"budget E0 = {problem.E0:.3g} J even at bit_width = 1")
        return _infeasible("fixed-frequency", why, solve_time=time.perf_counter() - t0)
    b = int(bits[ok].max())
    return _design(problem, "fixed-frequency", b, F, Fs, solve_time=time.perf_counter() - t0)


def solve_random_feasible(problem: Problem, n_samples: int = 400, seed: int = 0) -> Solution:
    r"""Baseline 3 of Sec. VI-C, the book's one definition of "random feasible".

    Draws ``n_samples`` bit-widths uniformly from :math:`\{1,\dots,B_{\max}\}`, checks each with
    its least-energy frequencies (:func:`optimal_frequencies`: the paper's "for each sampled
    bit-width, we check feasibility by optimizing the remaining computation frequency
    variables") and returns the best feasible trial with those frequencies. The feasible draws
    are in :attr:`Solution.samples`.

    Parameters
    ----------
    problem : Problem
    n_samples : int
        Number of trials (>= 1); the paper uses 400.
    seed : int
        Seed of the NumPy generator (>= 0).
    """
    _check_problem(problem)
    if isinstance(n_samples, bool) or not (isinstance(n_samples, (int, np.integer)) and n_samples >= 1):
        raise ValueError(f"n_samples must be an integer >= 1, got {n_samples!r}")
    if isinstance(seed, bool) or not (isinstance(seed, (int, np.integer)) and seed >= 0):
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    t0 = time.perf_counter()
    rng = np.random.default_rng(int(seed))
    draws = rng.integers(1, problem.B_max + 1, size=int(n_samples))
    cand = np.unique(draws)
    check = optimal_frequencies(problem, cand.astype(float))
    feas = np.atleast_1d(check["feasible"])
    if not feas.any():
        reasons = set(np.atleast_1d(check["reason"]).tolist())
        if 1 in cand:
            why = _WHY[1 if np.atleast_1d(check["reason"])[0] == "delay" else 2]
        else:
            why = ("delay: " if "delay" in reasons else "energy: ") + \
                "no feasible trial: none of the sampled bit-widths meets the budgets"
        return _infeasible("random-feasible", why, solve_time=time.perf_counter() - t0)
    i = int(np.flatnonzero(feas)[-1])  # cand is sorted: the largest feasible draw
    feasible_draws = tuple(int(x) for x in draws if feas[np.searchsorted(cand, x)])
    return _design(problem, "random-feasible", int(cand[i]), float(np.atleast_1d(check["f_agent"])[i]),
                   float(np.atleast_1d(check["f_server"])[i]), samples=feasible_draws,
                   solve_time=time.perf_counter() - t0)


# --------------------------------------------------------------------------------------------
# Methods registry, running and comparing all methods (the chapter's comparisons, Figs. 5-8).
# --------------------------------------------------------------------------------------------

#: The five methods of the chapter, in the order of the paper's figures' legends.
METHODS = ("exact", "sca", "ppo", "fixed-frequency", "random-feasible")

# Solvers registered from above this module (imports go down: qlib.ppo_env registers "ppo").
_REGISTERED: dict[str, Callable[..., Any]] = {}


def register_method(name: str, solver: Callable[..., Any]) -> None:
    """Register ``solver(problems, policy=None, **kw) -> Solution | list[Solution]`` as method ``name``.

    :mod:`qlib.ppo_env` registers ``"ppo"`` when imported; :func:`run_methods` and
    :func:`solve_ppo` look it up here, so this module never imports the RL baseline.
    """
    if not isinstance(name, str) or not callable(solver):
        raise ValueError("register_method needs a method name (str) and a callable solver")
    _REGISTERED[name] = solver


def _registered(name: str) -> Callable[..., Any]:
    if name not in _REGISTERED:
        raise ValueError(
            f"method {name!r} is provided by an application module that is not loaded: "
            f"`import qlib.ppo_env` registers 'ppo' (or pass solvers={{{name!r}: fn}} to run_methods)")
    return _REGISTERED[name]


def solve_ppo(problem: Any, policy: Any = None, **kwargs: Any) -> Any:
    """The registered ``"ppo"`` solver (:func:`qlib.ppo_env.solve_ppo`); kept for old callers.

    Raises ``ValueError`` saying to ``import qlib.ppo_env`` when it is not loaded.
    """
    return _registered("ppo")(problem, policy=policy, **kwargs)


def run_methods(problems: Sequence[Problem], methods: Sequence[str] = METHODS, policy: Any = None,
                seed: int = 0, sca_kwargs: dict[str, Any] | None = None,
                solvers: Mapping[str, Callable[..., Any]] | None = None,
                ppo_kwargs: dict[str, Any] | None = None) -> dict[str, list[Solution]]:
    """Solve every problem with every method; ``{method: [Solution, ...]}`` in problem order.

    ``exact`` is one vectorized call; the others are called per problem. ``policy`` and
    ``ppo_kwargs`` go to the ``"ppo"`` solver (registered by :mod:`qlib.ppo_env`, or given in
    ``solvers``), ``seed`` to :func:`solve_random_feasible`, ``sca_kwargs`` to :func:`solve_sca`.
    ``solvers`` maps further method names to ``fn(problems) -> list[Solution]``.
    """
    solvers = dict(solvers or {})
    known = set(METHODS) | set(solvers)
    unknown = [m for m in methods if m not in known]
    if unknown:
        raise ValueError(f"methods must be among {METHODS} or the keys of solvers, got {unknown}")
    items, _ = _as_list(problems)
    out: dict[str, list[Solution]] = {}
    for m in methods:
        if m in solvers and m != "ppo":
            res = solvers[m](items)
            out[m] = list(res) if not isinstance(res, Solution) else [res]
        elif m == "exact":
            out[m] = solve_exact(items)  # type: ignore[assignment]
        elif m == "sca":
            out[m] = [solve_sca(p, **(sca_kwargs or {})) for p in items]
        elif m == "ppo":
            fn = solvers.get("ppo") or _registered("ppo")
            res = fn(items, policy=policy, **(ppo_kwargs or {}))
            out[m] = list(res) if not isinstance(res, Solution) else [res]
        elif m == "fixed-frequency":
            out[m] = [solve_fixed_frequency(p) for p in items]
        else:
            out[m] = [solve_random_feasible(p, seed=seed) for p in items]
    return out


def summarize_methods(results: dict[str, list[Solution]], reference: Sequence[Solution]) -> list[dict[str, Any]]:
    """Per method: how often it attains the reference optimum, its worst gap, energy, median time.

    Parameters
    ----------
    results : dict
        From :func:`run_methods` (any subset of problems, same order as ``reference``).
    reference : sequence of Solution
        The certified optima (:func:`solve_exact`) of the same problems.

    Returns
    -------
    list of dict
        Keys ``method``, ``n`` (problems), ``n_solvable`` (problems with a feasible design),
        ``attained`` (fraction of all problems where the method's objective equals the optimum,
        infeasible-reported-as-infeasible included), ``missed_feasible`` (solvable problems
        where the method returned no feasible design), ``worst_bit_gap`` (largest optimal
        minus chosen bit-width over problems where both are feasible), ``worst_rel_gap``
        (largest objective / optimum - 1 there, ``inf`` when a method picked b = 1 while the
        optimum is finite), ``median_energy_ratio`` and ``max_energy_ratio`` (energy over the
        optimum's least energy where the method attained the optimum: 1 means no energy wasted)
        and ``median_time_s``.
    """
    rows = []
    for m, sols in results.items():
        if len(sols) != len(reference):
            raise ValueError(f"results[{m!r}] has {len(sols)} solutions, reference has {len(reference)}")
        attained = missed = 0
        bit_gaps, rel_gaps, e_ratio = [0], [0.0], []
        for s, e in zip(sols, reference):
            if not e.feasible:
                attained += not s.feasible
                continue
            if not s.feasible:
                missed += 1
                continue
            attained += s.bit_width == e.bit_width
            bit_gaps.append(int(e.bit_width) - int(s.bit_width))  # type: ignore[arg-type]
            if math.isfinite(e.objective):
                rel_gaps.append(s.objective / e.objective - 1.0)
            if s.bit_width == e.bit_width and e.energy and s.energy is not None:
                e_ratio.append(s.energy / e.energy)
        rows.append({
            "method": m, "n": len(sols), "n_solvable": sum(e.feasible for e in reference),
            "attained": attained / len(sols), "missed_feasible": missed,
            "worst_bit_gap": max(bit_gaps), "worst_rel_gap": max(rel_gaps),
            "median_energy_ratio": float(np.median(e_ratio)) if e_ratio else math.nan,
            "max_energy_ratio": float(np.max(e_ratio)) if e_ratio else math.nan,
            "median_time_s": float(np.median([s.solve_time for s in sols])),
        })
    return rows
