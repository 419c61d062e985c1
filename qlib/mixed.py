r"""Per-layer mixed precision under the co-inference budgets (beyond the paper: Sec. III, IV, V).

The paper gives every agent layer the same bit-width :math:`\hat b` and Remark 3.1 drops the
per-layer coefficients :math:`A^{(l)}` of Prop. 3.1 (eqs. 13, 14). This module keeps them:

- **sensitivity tables** ``table[l, j]``: the distortion caused by layer ``l`` at bit-width
  ``bit_widths[j]``, measured (:func:`layer_sensitivity`: one layer alone quantized, output
  distortion on data), modelled (:func:`modelled_table`: :math:`A^{(l)} n_l D(b-1;\lambda_l)`
  with each layer's fitted :math:`\lambda_l` and the exact :math:`D(R)` of the exponential
  source, :func:`qlib.rd.distortion_rate_exact`), or HAWQ-style (:func:`hawq_table`:
  Hessian trace times the squared weight perturbation, Dong et al. 2020);
- **an exact allocator** (:func:`allocate_bits`): the multiple-choice knapsack
  :math:`\min\sum_l \mathrm{table}[l, b_l]` s.t. :math:`\sum_l n_l b_l \le` budget, and its
  dual (:func:`allocate_for_distortion`: fewest bits reaching a distortion target);
- **the joint design with mixed precision** (:func:`design_mixed`): with eq. (4)'s workload
  :math:`\sum_l N_l b_l / b`, delay (8) and energy (9) depend on the bit-widths only through
  the FLOP-weighted average :math:`\bar b = \sum_l N_l b_l / \sum_l N_l`; the feasible
  averages form the interval :math:`[1, \tilde b^*]` (the relaxed optimum of (P2), found
  from the closed-form least-energy frequencies of :func:`qlib.design.optimal_frequencies`),
  so the exact mixed design is the allocator at the budget :math:`\tilde b^*\sum_l N_l`.

Layering: this module sits beside :mod:`qlib.design` and :mod:`qlib.distortion`; it imports
only leaves and those, never an application (the captioner-specific parts live in
:mod:`qlib.captioning.mixed`). Models are passed in.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray

from qlib import design, rd
from qlib.distortion import layer_coefficients
from qlib.quantize import quantize

__all__ = [
    "DEFAULT_BIT_WIDTHS",
    "allocate_bits",
    "allocate_for_distortion",
    "average_bits",
    "fit_lam",
    "quantizable_layers",
    "quantize_layers",
    "modelled_table",
    "prop31_coefficients",
    "LayerSensitivity",
    "layer_sensitivity",
    "allocation_distortion",
    "rank_agreement",
    "additivity",
    "hessian_traces",
    "hawq_table",
    "MixedDesign",
    "design_mixed",
]

#: Bit-widths the allocator chooses from by default (those :func:`qlib.quantize.quantize` accepts).
DEFAULT_BIT_WIDTHS = tuple(range(1, 17))


# --------------------------------------------------------------------------------------------
# The exact allocator (multiple-choice knapsack).
# --------------------------------------------------------------------------------------------

def _check_problem(table: ArrayLike, sizes: ArrayLike, bit_widths: Iterable[int]
                   ) -> tuple[NDArray[np.float64], NDArray[np.int64], NDArray[np.int64]]:
    bw = np.asarray(list(bit_widths))
    if bw.ndim != 1 or bw.size == 0 or not np.all(np.isfinite(bw.astype(float))) or np.any(bw != np.round(bw)) \
            or np.any(bw < 1) or len(set(bw.tolist())) != bw.size:
        raise ValueError(f"bit_widths must be distinct integers >= 1, got {bw.tolist()!r}")
    bw = bw.astype(np.int64)
    t = np.asarray(table, dtype=np.float64)
    if t.ndim != 2 or t.shape[1] != bw.size or t.shape[0] == 0:
        raise ValueError(f"table must have shape (layers, len(bit_widths)) = (L, {bw.size}) with L >= 1, "
                         f"got {t.shape}")
    if np.any(np.isnan(t)) or np.any(t == -np.inf):
        raise ValueError("table must hold finite numbers (or +inf for a bit-width a layer may not take), no NaN")
    if np.any(np.all(np.isinf(t), axis=1)):
        raise ValueError("every layer needs at least one bit-width with a finite table entry")
    s = np.asarray(sizes, dtype=np.float64).reshape(-1)
    if s.shape != (t.shape[0],) or np.any(~np.isfinite(s)) or np.any(s < 1) or np.any(s != np.round(s)):
        raise ValueError(f"sizes must hold one integer >= 1 per layer ({t.shape[0]}), got {np.asarray(sizes)!r}")
    return t, s.astype(np.int64), bw


def _solve_mckp(cost: NDArray[np.float64], weight: NDArray[np.float64], rhs: float, constraint_row: str
                ) -> NDArray[np.float64] | None:
    """min sum cost*x over binary x, one choice per row of ``cost``, with sum weight*x <= rhs.

    ``cost`` and ``weight`` are (L, J), +inf in ``cost`` forbids a choice. Returns the 0/1
    matrix or None if HiGHS reports infeasibility.
    """
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import csr_array

    L, J = cost.shape
    allowed = np.isfinite(cost) & np.isfinite(weight)
    idx = np.flatnonzero(allowed.reshape(-1))
    rows = idx // J
    n = idx.size
    one_each = csr_array((np.ones(n), (rows, np.arange(n))), shape=(L, n))
    budget_row = csr_array(weight.reshape(-1)[idx][None, :])
    constraints = [LinearConstraint(one_each, 1.0, 1.0), LinearConstraint(budget_row, -np.inf, rhs)]
    with warnings.catch_warnings():
        # mip_abs_gap is a HiGHS option scipy passes through verbatim (with a RuntimeWarning);
        # both gaps at 0 make HiGHS prove optimality instead of stopping within 1e-4 / 1e-6.
        warnings.simplefilter("ignore", RuntimeWarning)
        res = milp(cost.reshape(-1)[idx], integrality=np.ones(n), bounds=Bounds(0, 1), constraints=constraints,
                   options={"mip_rel_gap": 0.0, "mip_abs_gap": 0.0, "presolve": True})
    if res.x is None:
        if res.status == 2:  # infeasible
            return None
        raise RuntimeError(f"the MILP solver failed on the {constraint_row} problem: {res.message}")
    x = np.zeros(L * J)
    x[idx] = np.round(res.x)
    return x.reshape(L, J)


def allocate_bits(table: ArrayLike, sizes: ArrayLike, budget: float,
                  bit_widths: Iterable[int] = DEFAULT_BIT_WIDTHS) -> NDArray[np.int64]:
    r"""Per-layer bit-widths minimising the total distortion under a total-bits budget (exact).

    Solves the multiple-choice knapsack

    .. math:: \min_{b_1,\dots,b_L}\ \sum_l \mathrm{table}[l, b_l]
              \quad\text{s.t.}\quad \sum_l \mathrm{sizes}[l]\, b_l \le \mathrm{budget},
              \ b_l \in \mathrm{bit\_widths},

    to optimality, not only on its convex hull (a Lagrangian/greedy allocation can miss the
    optimum by a whole bit on a few layers).

    Parameters
    ----------
    table : array_like, shape (L, J)
        ``table[l, j]``: distortion of layer ``l`` at ``bit_widths[j]`` (any real numbers; it
        need not be monotone or convex); ``+inf`` forbids that choice.
    sizes : array_like, shape (L,)
        Integers >= 1: parameter counts (or per-layer FLOPs :math:`N_l`, for eq. (4)).
    budget : float
        Total bits :math:`\sum_l n_l b_l` allowed, >= the cheapest allowed allocation.
    bit_widths : iterable of int
        Distinct integers >= 1 (default 1…16).

    Returns
    -------
    ndarray of int, shape (L,)
        The optimal bit-width of each layer. Among tied optima the solver returns one of them.

    Raises
    ------
    ValueError
        Bad shapes or values, or an infeasible budget (the message gives the least feasible one).

    Notes
    -----
    Solved as a 0/1 integer program (one binary per allowed (layer, bit-width) pair, one
    equality per layer, one knapsack row) with scipy's HiGHS branch and bound
    (:func:`scipy.optimize.milp`) and both optimality gaps at 0. We chose the MILP over a
    hand-written dynamic programme because its cost does not grow with the budget: a DP over
    the budget divided by the gcd of the sizes is exact but needs :math:`L\times` budget/gcd
    cells, which for a ViT with a few hundred layers of co-prime sizes is out of reach, while
    HiGHS solves such instances in milliseconds. To keep HiGHS' absolute tolerances harmless
    the costs are shifted by each layer's minimum (which changes no argmin) and scaled to order
    one; the budget row is divided by the gcd of the sizes, so it has small integer
    coefficients, and the rounded solution is checked against the budget in exact integers.
    The tests compare it with brute force on random instances.

    Examples
    --------
    >>> allocate_bits([[4.0, 1.0, 0.5], [9.0, 2.0, 0.1]], sizes=[1, 1], budget=5, bit_widths=[1, 2, 3]).tolist()
    [2, 3]
    """
    t, s, bw = _check_problem(table, sizes, bit_widths)
    if not (isinstance(budget, (int, float, np.integer, np.floating)) and math.isfinite(budget)):
        raise ValueError(f"budget must be a finite number of bits, got {budget!r}")
    allowed = np.isfinite(t)
    cheapest = int(np.sum(s * np.where(allowed, bw[None, :], np.iinfo(np.int64).max).min(axis=1)))
    if budget < cheapest:
        raise ValueError(f"budget must be at least {cheapest} bits (every layer at its smallest allowed "
                         f"bit-width), got {budget!r}: no allocation is feasible")
    # Fast path: the per-layer argmin already fits.
    greedy = np.where(allowed, t, np.inf).argmin(axis=1)
    if int(np.sum(s * bw[greedy])) <= budget:
        return bw[greedy]
    g = int(np.gcd.reduce(s))
    units = s // g
    rhs = math.floor(budget / g + 1e-9)  # sum(units * b) is an integer: the budget floors exactly
    shifted = np.where(allowed, t - np.where(allowed, t, np.inf).min(axis=1, keepdims=True), np.inf)
    weight = (units[:, None] * bw[None, :]).astype(np.float64)
    # Scale: the optimum's cost is at most that of any feasible allocation, so scaling by the
    # cost of the cheapest-bits one makes the optimum <= 1; a second pass rescales by the
    # optimum found, so the solver's absolute tolerances are relative ones.
    cheap = np.where(allowed, bw[None, :], np.iinfo(np.int64).max).argmin(axis=1)
    scale = float(shifted[np.arange(len(s)), cheap].sum())
    x = None
    for _ in range(2):
        if not scale > 0 or not math.isfinite(scale):
            scale = 1.0
        for slack in range(4):  # guard: step the budget down if rounding ever broke it
            x = _solve_mckp(shifted / scale, weight, float(rhs - slack), "allocation")
            if x is None:
                raise ValueError(f"budget must be at least {cheapest} bits; no allocation fits {budget!r}")
            if float((x * weight).sum()) <= rhs + 1e-9:
                break
        else:  # pragma: no cover - would take a solver bug
            raise RuntimeError("the MILP solution violates the budget after rounding")
        found = float(np.where(x > 0, shifted, 0.0).sum())
        if found <= 0 or abs(found - scale) <= 1e-12 * scale:
            break
        scale = found
    assert x is not None
    return bw[x.argmax(axis=1)]


def allocate_for_distortion(table: ArrayLike, sizes: ArrayLike, target: float,
                            bit_widths: Iterable[int] = DEFAULT_BIT_WIDTHS) -> NDArray[np.int64]:
    r"""The fewest total bits :math:`\sum_l n_l b_l` whose distortion :math:`\sum_l \mathrm{table}[l, b_l]` is at most ``target`` (exact).

    The dual of :func:`allocate_bits` (same data, same solver): it answers "what does mixed
    precision save at equal quality?".

    Parameters
    ----------
    table, sizes, bit_widths
        As in :func:`allocate_bits`.
    target : float
        Largest total distortion allowed; at least the smallest achievable one.

    Returns
    -------
    ndarray of int, shape (L,)

    Raises
    ------
    ValueError
        Bad input, or a target below the least achievable distortion (the message gives it).
    """
    t, s, bw = _check_problem(table, sizes, bit_widths)
    if not (isinstance(target, (int, float, np.integer, np.floating)) and math.isfinite(target)):
        raise ValueError(f"target must be a finite distortion, got {target!r}")
    best = float(np.where(np.isfinite(t), t, np.inf).min(axis=1).sum())
    if target < best * (1 - 1e-12) - 1e-300:
        raise ValueError(f"target must be at least {best:.6g} (every layer at its least-distortion "
                         f"bit-width), got {target!r}")
    allowed = np.isfinite(t)
    base = np.where(allowed, t, np.inf).min(axis=1, keepdims=True)
    shifted = np.where(allowed, t - base, np.inf)
    slack = max(float(target - base.sum()), 0.0)  # >= 0 up to rounding
    # Excesses below the target's own rounding (relative 1e-12) cannot be told apart from 0 in
    # float64 (e.g. 1 + 1e-247 == 1): such choices are allowed, and then the fewest bits win.
    tol = 1e-12 * abs(float(target))
    # A choice whose excess over its layer's best alone exceeds the slack can never be taken.
    allowed &= shifted <= slack * (1 + 1e-12) + tol
    if slack <= tol or np.all(allowed.sum(axis=1) == 1):
        return bw[np.where(allowed, bw[None, :], np.iinfo(np.int64).max).argmin(axis=1)]
    g = int(np.gcd.reduce(s))
    cost = np.where(allowed, (s // g)[:, None] * bw[None, :], np.inf).astype(np.float64)
    row = np.where(allowed, shifted / slack, np.inf)  # entries in [0, 1]: tolerances are relative
    rhs = 1.0
    x = None
    for _ in range(4):
        x = _solve_mckp(cost, row, rhs, "distortion-target")
        if x is None:
            raise ValueError(f"target must be at least {best:.6g}, got {target!r}")
        found = float(np.where(x > 0, shifted, 0.0).sum())
        if found <= slack * (1 + 1e-9):
            break
        rhs -= (found - slack) / slack  # HiGHS' feasibility tolerance let it over: tighten the row
    assert x is not None
    return bw[x.argmax(axis=1)]


def average_bits(bits: ArrayLike, sizes: ArrayLike) -> float:
    r"""The size-weighted average bit-width :math:`\sum_l n_l b_l / \sum_l n_l`."""
    b = np.asarray(bits, dtype=np.float64).reshape(-1)
    s = np.asarray(sizes, dtype=np.float64).reshape(-1)
    if b.shape != s.shape or b.size == 0 or np.any(s <= 0):
        raise ValueError("bits and sizes must be non-empty, of equal length, with sizes > 0")
    return float(np.sum(b * s) / np.sum(s))


# --------------------------------------------------------------------------------------------
# Layers of a torch model, and quantizing them with different bit-widths.
# --------------------------------------------------------------------------------------------

def quantizable_layers(module: torch.nn.Module) -> dict[str, int]:
    """The parameters :func:`qlib.quantize.quantize_module` quantizes by default (floating, >= 2
    dimensions: the matrices of eq. 10, convolution kernels, embeddings) and their sizes, in order."""
    if not isinstance(module, torch.nn.Module):
        raise ValueError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    return {n: int(p.numel()) for n, p in module.named_parameters() if p.is_floating_point() and p.ndim >= 2}


def fit_lam(tensor: torch.Tensor | ArrayLike) -> float:
    r"""Maximum-likelihood λ of the exponential magnitudes of one tensor (eq. 3): ``numel / sum |w|``.

    The same estimate as ``qlib.weights.fit_magnitudes(...).overall.lam`` on all magnitudes
    (zeros included: they are part of the layer's distortion too).
    """
    w = torch.as_tensor(tensor).detach().double().abs()
    total = float(w.sum())
    if w.numel() == 0 or not math.isfinite(total) or total <= 0:
        raise ValueError("tensor must be non-empty, finite and not all zero to fit λ")
    return w.numel() / total


def quantize_layers(module: torch.nn.Module, bits: Mapping[str, int | None], scheme: str = "uniform",
                    per_channel: bool = False) -> tuple[torch.nn.Module, dict[str, float]]:
    r"""A copy of ``module`` with each named parameter quantized at its own bit-width.

    Parameters
    ----------
    module : torch.nn.Module
        Deep-copied, never modified.
    bits : mapping of str to int or None
        Parameter name -> bit-width in 1…16; names not listed (or None) stay full precision.
    scheme : {"uniform", "pot"}
    per_channel : bool
        Per-output-channel maxima (see :func:`qlib.quantize.quantize`).

    Returns
    -------
    (torch.nn.Module, dict)
        The quantized copy and :math:`\|\mathbf W^{(l)}-\hat{\mathbf W}^{(l)}\|_1` (eq. 15) per quantized parameter.
    """
    import copy

    params = dict(module.named_parameters())
    unknown = [n for n in bits if n not in params]
    if unknown:
        raise ValueError(f"bits names parameters the module does not have: {unknown[:3]}")
    qmodule = copy.deepcopy(module)
    qparams = dict(qmodule.named_parameters())
    dist: dict[str, float] = {}
    with torch.no_grad():
        for name, b in bits.items():
            if b is None:
                continue
            p = qparams[name]
            q = quantize(p, int(b), scheme, per_channel)
            dist[name] = float((p - q).abs().sum(dtype=torch.float64))
            p.copy_(q)
    return qmodule, dist


# --------------------------------------------------------------------------------------------
# Sensitivity tables: modelled (Prop. 3.1 + exact D(R)), measured, HAWQ.
# --------------------------------------------------------------------------------------------

def prop31_coefficients(weights: Sequence[ArrayLike], norm: str = "induced") -> NDArray[np.float64]:
    r""":math:`A^{(l)}` of Prop. 3.1 (eq. 14) when layer ``l`` alone is quantized.

    The other layers are exact, so :math:`\tau^{(k)}=0` for :math:`k\neq l` and
    :math:`A^{(l)}=\prod_{j\neq l}\|\mathbf W^{(j)}\|_1` (``qlib.distortion.layer_coefficients``
    with zero :math:`\tau`; :math:`\tau^{(l)}` does not enter :math:`A^{(l)}`).
    """
    return layer_coefficients(weights, np.zeros(len(weights)), norm)  # type: ignore[arg-type]


def modelled_table(lam: ArrayLike, sizes: ArrayLike, bit_widths: Iterable[int] = range(1, 9),
                   coefficients: ArrayLike | None = None, rate_distortion: str = "exact") -> NDArray[np.float64]:
    r"""Model of each layer's distortion at each bit-width: :math:`A^{(l)}\, n_l\, D(b-1;\lambda_l)`.

    One bit is the sign, so the magnitude rate is :math:`b-1` (as in (P1)). :math:`n_l D` is
    the expected parameter distortion :math:`\|\mathbf W^{(l)}-\hat{\mathbf W}^{(l)}\|_1` of
    eq. (15) of an optimal quantizer of the exponential magnitudes (eq. 3), and
    :math:`A^{(l)}` turns it into an output-distortion bound (eq. 13; ``None``: all 1, the
    surrogate of Remark 3.1 layer by layer, or the constant H of Remark 3.2 for a transformer).

    Parameters
    ----------
    lam : array_like, shape (L,)
        λ_l > 0 of each layer (:func:`fit_lam`).
    sizes : array_like, shape (L,)
        Parameter counts n_l.
    bit_widths : iterable of int
        Bit-widths >= 1.
    coefficients : array_like, shape (L,), optional
        :math:`A^{(l)} \ge 0` (:func:`prop31_coefficients` for a network of the form of eq. 10).
    rate_distortion : {"exact", "upper", "gap"}
        ``"exact"``: :math:`D(R) = -\ln(1-2^{-(R+1)})/\lambda` (:func:`qlib.rd.distortion_rate_exact`,
        chapter 03); ``"upper"``: :math:`D^U(R)` (eq. 26, +inf at b = 1); ``"gap"``:
        :math:`D^U - D^L`, the objective of (P1) (+inf at b = 1).

    Returns
    -------
    ndarray, shape (L, J)
    """
    lam_a = np.asarray(lam, dtype=np.float64).reshape(-1)
    n = np.asarray(sizes, dtype=np.float64).reshape(-1)
    bw = np.asarray(list(bit_widths), dtype=np.float64)
    if lam_a.size == 0 or lam_a.shape != n.shape or np.any(~np.isfinite(lam_a)) or np.any(lam_a <= 0):
        raise ValueError("lam must hold one finite λ > 0 per layer, matching sizes")
    if np.any(~np.isfinite(n)) or np.any(n < 1):
        raise ValueError("sizes must be >= 1")
    if bw.size == 0 or np.any(bw < 1) or np.any(bw != np.round(bw)):
        raise ValueError(f"bit_widths must be integers >= 1, got {bw.tolist()}")
    A = np.ones_like(n) if coefficients is None else np.asarray(coefficients, dtype=np.float64).reshape(-1)
    if A.shape != n.shape or np.any(~np.isfinite(A)) or np.any(A < 0):
        raise ValueError("coefficients must hold one finite A >= 0 per layer")
    R = bw[None, :] - 1.0
    L_ = lam_a[:, None]
    if rate_distortion == "exact":
        D = np.asarray(rd.distortion_rate_exact(np.broadcast_to(R, (n.size, bw.size)), np.broadcast_to(L_, (n.size, bw.size))))
    elif rate_distortion in ("upper", "gap"):
        D = np.full((n.size, bw.size), np.inf)
        ok = np.broadcast_to(R > 0, D.shape)
        RR, LL = np.broadcast_to(R, D.shape)[ok], np.broadcast_to(L_, D.shape)[ok]
        D[ok] = rd.distortion_upper(RR, LL) if rate_distortion == "upper" else design.gap_objective(RR + 1.0, LL)
    else:
        raise ValueError(f"rate_distortion must be 'exact', 'upper' or 'gap', got {rate_distortion!r}")
    return (A * n)[:, None] * D


def _outputs(module: torch.nn.Module, batches: Sequence[Any], output_fn: Callable[[Any, Any], torch.Tensor] | None
             ) -> list[torch.Tensor]:
    outs = []
    with torch.no_grad():
        for batch in batches:
            out = module(**batch) if isinstance(batch, dict) else module(batch)
            if output_fn is not None:
                out = output_fn(out, batch)
            elif not isinstance(out, torch.Tensor):
                out = getattr(out, "last_hidden_state", None)
                if out is None:
                    raise ValueError("cannot read a tensor from the model output; pass output_fn=")
            outs.append(out.detach().double())
    return outs


def _l1_gap(ref: Sequence[torch.Tensor], new: Sequence[torch.Tensor]) -> float:
    total = sum(float((a - b).abs().reshape(a.shape[0], -1).sum()) for a, b in zip(ref, new))
    return total / sum(int(a.shape[0]) for a in ref)


@dataclass(frozen=True)
class LayerSensitivity:
    """Measured single-layer sensitivities of one model, scheme and scale granularity."""

    names: tuple[str, ...]  #: quantized parameters, in model order
    sizes: NDArray[np.int64]  #: their parameter counts n_l
    bit_widths: tuple[int, ...]
    scheme: str
    per_channel: bool
    output: NDArray[np.float64]  #: (L, J) mean L1 output distortion, layer l alone at bit_widths[j]
    param: NDArray[np.float64]  #: (L, J) ||W_l - Q(W_l)||_1 (eq. 15)
    sq_error: NDArray[np.float64]  #: (L, J) ||W_l - Q(W_l)||_2^2 (for HAWQ)

    def table(self, kind: str = "output") -> NDArray[np.float64]:
        """``"output"`` or ``"param"`` table, shape (L, J)."""
        if kind not in ("output", "param"):
            raise ValueError(f"kind must be 'output' or 'param', got {kind!r}")
        return self.output if kind == "output" else self.param


def layer_sensitivity(module: torch.nn.Module, batches: Sequence[Any], bit_widths: Iterable[int] = range(1, 9),
                      scheme: str = "uniform", per_channel: bool = False, names: Sequence[str] | None = None,
                      output_fn: Callable[[Any, Any], torch.Tensor] | None = None) -> LayerSensitivity:
    r"""Output distortion when one layer alone is quantized, for every layer and bit-width (measured).

    Parameters
    ----------
    module : torch.nn.Module
        The model (part); a deep copy is modified one parameter at a time.
    batches : sequence
        Input batches (Tensors, or dicts of keyword inputs); use training data.
    bit_widths : iterable of int
        In 1…16.
    scheme : {"uniform", "pot"}
    per_channel : bool
    names : sequence of str, optional
        Parameters to probe (default :func:`quantizable_layers`).
    output_fn : callable, optional
        ``output_fn(output, batch) -> Tensor``; default the output or its ``last_hidden_state``.

    Returns
    -------
    LayerSensitivity
        ``output[l, j]`` is :math:`\mathbb E_x\|f(\mathbf x,\mathbf W)-f(\mathbf x,\hat{\mathbf W}_{(l,b_j)})\|_1`.
    """
    import copy

    bw = tuple(int(b) for b in bit_widths)
    if not bw:
        raise ValueError("bit_widths must not be empty")
    batches = list(batches)
    if not batches:
        raise ValueError("batches must not be empty")
    work = copy.deepcopy(module).eval()
    params = dict(work.named_parameters())
    names = tuple(names) if names is not None else tuple(quantizable_layers(module))
    missing = [n for n in names if n not in params]
    if missing or not names:
        raise ValueError(f"names must be non-empty parameter names of the module, missing: {missing[:3]}")
    ref = _outputs(work, batches, output_fn)
    L, J = len(names), len(bw)
    out, par, sq = np.zeros((L, J)), np.zeros((L, J)), np.zeros((L, J))
    with torch.no_grad():
        for i, name in enumerate(names):
            p = params[name]
            orig = p.detach().clone()
            for j, b in enumerate(bw):
                q = quantize(orig, b, scheme, per_channel)
                d = (orig - q).double()
                par[i, j] = float(d.abs().sum())
                sq[i, j] = float((d * d).sum())
                p.copy_(q)
                out[i, j] = _l1_gap(ref, _outputs(work, batches, output_fn))
            p.copy_(orig)
    sizes = np.array([params[n].numel() for n in names], dtype=np.int64)
    return LayerSensitivity(names, sizes, bw, scheme, bool(per_channel), out, par, sq)


def allocation_distortion(module: torch.nn.Module, batches: Sequence[Any], bits: Mapping[str, int | None],
                          scheme: str = "uniform", per_channel: bool = False,
                          output_fn: Callable[[Any, Any], torch.Tensor] | None = None) -> float:
    """Measured mean L1 output distortion with several layers quantized at once (``bits``: name -> bit-width).

    Compare it with the sum of the single-layer entries of :func:`layer_sensitivity` to see how
    additive the per-layer distortions are (the allocator assumes they add).
    """
    batches = list(batches)
    qmodule, _ = quantize_layers(module, bits, scheme, per_channel)
    return _l1_gap(_outputs(module.eval(), batches, output_fn), _outputs(qmodule.eval(), batches, output_fn))


def rank_agreement(measured: ArrayLike, predicted: ArrayLike) -> dict[str, NDArray[np.float64]]:
    """How well ``predicted`` ranks the layers of ``measured``, column by column (per bit-width).

    Returns Spearman's ρ and Kendall's τ (scipy.stats) with their p-values, one per column of
    the (L, J) tables; NaN where a column is constant (no ranking to compare).
    """
    from scipy.stats import kendalltau, spearmanr

    m, p = np.asarray(measured, dtype=np.float64), np.asarray(predicted, dtype=np.float64)
    if m.shape != p.shape or m.ndim != 2 or m.shape[0] < 3:
        raise ValueError("measured and predicted must be (L, J) tables of the same shape with L >= 3 layers")
    out = {k: np.full(m.shape[1], np.nan) for k in ("spearman", "spearman_p", "kendall", "kendall_p")}
    for j in range(m.shape[1]):
        if np.ptp(m[:, j]) == 0 or np.ptp(p[:, j]) == 0:
            continue
        r = spearmanr(m[:, j], p[:, j])
        k = kendalltau(m[:, j], p[:, j])
        out["spearman"][j], out["spearman_p"][j] = r.statistic, r.pvalue
        out["kendall"][j], out["kendall_p"][j] = k.statistic, k.pvalue
    return out


def additivity(module: torch.nn.Module, batches: Sequence[Any], sensitivity: LayerSensitivity, n_draws: int = 20,
               seed: int = 0, output_fn: Callable[[Any, Any], torch.Tensor] | None = None
               ) -> dict[str, NDArray[np.float64]]:
    """Measured output distortion of random allocations against the sum of their single-layer entries.

    Each draw gives every layer of ``sensitivity`` a bit-width drawn uniformly from its
    ``bit_widths`` (seeded) and quantizes all of them at once, with the same scheme and
    granularity. Returns ``joint`` (measured), ``summed`` (Σ_l table[l, b_l]) and ``average_bits``.
    """
    if not isinstance(n_draws, int) or n_draws < 1:
        raise ValueError(f"n_draws must be an integer >= 1, got {n_draws!r}")
    rng = np.random.default_rng(seed)
    batches = list(batches)
    joint, summed, avg = [], [], []
    for _ in range(n_draws):
        j = rng.integers(0, len(sensitivity.bit_widths), len(sensitivity.names))
        bits = {n: sensitivity.bit_widths[k] for n, k in zip(sensitivity.names, j)}
        joint.append(allocation_distortion(module, batches, bits, sensitivity.scheme, sensitivity.per_channel,
                                           output_fn))
        summed.append(float(sensitivity.output[np.arange(len(j)), j].sum()))
        avg.append(average_bits([bits[n] for n in sensitivity.names], sensitivity.sizes))
    return {"joint": np.array(joint), "summed": np.array(summed), "average_bits": np.array(avg)}


def hessian_traces(loss_fn: Callable[[torch.nn.Module], torch.Tensor], module: torch.nn.Module,
                   names: Sequence[str] | None = None, n_probes: int = 16, seed: int = 0) -> dict[str, float]:
    r"""Hutchinson estimates of :math:`\operatorname{tr}\nabla^2_{\mathbf W^{(l)}}\mathcal L` for each layer (HAWQ-v2).

    :math:`\operatorname{tr} H = \mathbb E_v[v^\top H v]` for Rademacher :math:`v`; each probe
    costs one Hessian–vector product by double back-propagation (``torch.autograd.grad`` with
    ``create_graph=True``). Only the block of each layer is needed, and one probe of the
    concatenated Rademacher vector yields every block's estimate at once.

    Parameters
    ----------
    loss_fn : callable
        ``loss_fn(module) -> scalar Tensor``, a differentiable training loss (e.g. the captioning
        cross-entropy on training batches).
    module : torch.nn.Module
        Its parameters ``names`` are differentiated (its ``requires_grad`` flags are restored).
    names : sequence of str, optional
        Default :func:`quantizable_layers`.
    n_probes : int
        Rademacher probes, >= 1.
    seed : int

    Returns
    -------
    dict
        Name -> trace estimate (mean over probes).

    References
    ----------
    .. [1] Z. Dong et al., "HAWQ-V2: Hessian aware trace-weighted quantization of neural
       networks", NeurIPS 2020.
    .. [2] M. F. Hutchinson, "A stochastic estimator of the trace of the influence matrix", 1990.
    """
    if not isinstance(n_probes, int) or n_probes < 1:
        raise ValueError(f"n_probes must be an integer >= 1, got {n_probes!r}")
    params = dict(module.named_parameters())
    names = tuple(names) if names is not None else tuple(quantizable_layers(module))
    missing = [n for n in names if n not in params]
    if missing or not names:
        raise ValueError(f"names must be non-empty parameter names of the module, missing: {missing[:3]}")
    flags = {n: p.requires_grad for n, p in params.items()}
    for n, p in params.items():
        p.requires_grad_(n in names)
    gen = torch.Generator().manual_seed(int(seed))
    sums = dict.fromkeys(names, 0.0)
    try:
        with torch.enable_grad():
            ps = [params[n] for n in names]
            for _ in range(n_probes):
                loss = loss_fn(module)
                grads = torch.autograd.grad(loss, ps, create_graph=True)
                vs = [(torch.randint(0, 2, p.shape, generator=gen) * 2 - 1).to(p.dtype) for p in ps]
                hvs = torch.autograd.grad(grads, ps, grad_outputs=vs)
                for n, v, hv in zip(names, vs, hvs):
                    sums[n] += float((v * hv).sum())
    finally:
        for n, p in params.items():
            p.requires_grad_(flags[n])
    return {n: s / n_probes for n, s in sums.items()}


def hawq_table(traces: Mapping[str, float], sensitivity: LayerSensitivity) -> NDArray[np.float64]:
    r"""HAWQ-v2's per-layer cost :math:`\Omega_l(b) = \overline{\operatorname{tr} H_l}\,\|Q_b(\mathbf W_l)-\mathbf W_l\|_2^2`.

    :math:`\overline{\operatorname{tr} H_l}=\operatorname{tr}H_l/n_l` is the average Hessian
    trace (from :func:`hessian_traces`) and the squared perturbation is that of the same
    quantizer (``sensitivity.sq_error``), so the table ranks layers as Dong et al. (2020) do and
    plugs into :func:`allocate_bits` for the same average bits.
    """
    missing = [n for n in sensitivity.names if n not in traces]
    if missing:
        raise ValueError(f"traces must hold every layer of the sensitivity table, missing {missing[:3]}")
    avg = np.array([traces[n] for n in sensitivity.names], dtype=np.float64) / sensitivity.sizes
    return avg[:, None] * sensitivity.sq_error


# --------------------------------------------------------------------------------------------
# Joint design with mixed precision (P1 with eq. (4)'s workload sum_l N_l b_l / b).
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MixedDesign:
    """The mixed-precision design of (P1) and the uniform design under the same budgets."""

    feasible: bool
    bit_widths: NDArray[np.int64] | None  #: per layer
    average_bits: float | None  #: FLOP-weighted average, sum N_l b_l / sum N_l
    f_agent: float | None
    f_server: float | None
    delay: float | None
    energy: float | None
    objective: float  #: sum_l table[l, b_l]
    max_average_bits: float | None  #: largest feasible average bit-width (relaxation P2)
    uniform_bit_width: int | None  #: the uniform design's b-hat (solve_exact)
    uniform_objective: float  #: sum_l table[l, b-hat]
    uniform_energy: float | None  #: least energy of the uniform design at T0
    equal_quality_bits: NDArray[np.int64] | None  #: fewest FLOP-weighted bits reaching uniform_objective
    equal_quality_energy: float | None  #: its least energy at T0 (<= uniform_energy)
    reason: str = ""


def design_mixed(problem: design.Problem, table: ArrayLike, flops: ArrayLike,
                 bit_widths: Iterable[int] | None = None) -> MixedDesign:
    r"""Exact joint design of per-layer bit-widths and both frequencies under :math:`T_0, E_0`.

    With per-layer workloads :math:`N_l` (``flops``, summing to the agent's full-precision
    workload) eq. (4) becomes :math:`t=\sum_l N_l b_l/(b f c)=\bar b N_{\mathrm{FLOP}}/(bfc)`
    and eq. (6) likewise, with :math:`\bar b=\sum_l N_l b_l/\sum_l N_l`. So a set of bit-widths
    is feasible iff :math:`\bar b\le\tilde b^*`, the largest feasible real bit-width of the
    relaxation (P2) (:func:`qlib.design.relaxed_optimum`, from the closed-form least-energy
    frequencies). The optimum is therefore :func:`allocate_bits` at the budget
    :math:`\tilde b^*\sum_l N_l`, with the least-energy frequencies at :math:`\bar b`
    (:func:`qlib.design.optimal_frequencies`). The uniform design (:func:`qlib.design.solve_exact`)
    is one feasible point of the same knapsack, so the mixed design is never worse in ``table``.

    Parameters
    ----------
    problem : qlib.design.Problem
        Budgets and hardware; ``problem.n_flop_agent`` is the total agent workload.
    table : array_like, shape (L, J)
        Per-layer distortion at ``bit_widths`` (e.g. :func:`modelled_table`).
    flops : array_like, shape (L,)
        Positive integers proportional to each layer's workload :math:`N_l` (only their ratios matter).
    bit_widths : iterable of int, optional
        Default 1…``problem.B_max``.

    Returns
    -------
    MixedDesign
        ``feasible=False`` (with the reason) when even 1 bit everywhere misses the budgets.
    """
    bw = tuple(range(1, problem.B_max + 1)) if bit_widths is None else tuple(int(b) for b in bit_widths)
    if max(bw) > problem.B_max:
        raise ValueError(f"bit_widths must not exceed B_max={problem.B_max}, got {max(bw)}")
    t, N, bwa = _check_problem(table, flops, bw)
    uni = design.solve_exact(problem)
    if not uni.feasible:
        return MixedDesign(False, None, None, None, None, None, None, math.inf, None, None, math.inf, None, None,
                           None, reason=uni.reason)
    b_star = float(design.relaxed_optimum(problem))
    total = int(N.sum())
    budget = b_star * total
    if uni.bit_width not in bw:
        raise ValueError(f"bit_widths must contain the uniform design's bit-width {uni.bit_width}")
    j_uni = bw.index(int(uni.bit_width))
    uniform_objective = float(t[:, j_uni].sum())
    uniform_energy = float(design.optimal_frequencies(problem, float(uni.bit_width))["energy"])
    bits = allocate_bits(t, N, budget, bw)
    while True:
        avg = float(np.sum(N * bits) / total)
        fr = design.optimal_frequencies(problem, min(avg, float(problem.B_max)))
        if bool(fr["feasible"]):
            break
        # b_star comes from a bisection; should its last digit ever overshoot, take one unit less.
        budget = float(np.sum(N * bits)) - 1
        bits = allocate_bits(t, N, budget, bw)
    jb = np.array([bw.index(int(b)) for b in bits])
    objective = float(t[np.arange(len(bits)), jb].sum())
    eq_bits = allocate_for_distortion(t, N, uniform_objective, bw)
    eq_avg = float(np.sum(N * eq_bits) / total)
    eq_energy = float(design.optimal_frequencies(problem, eq_avg)["energy"])
    return MixedDesign(True, bits, avg, float(fr["f_agent"]), float(fr["f_server"]), float(fr["delay"]),
                       float(fr["energy"]), objective, b_star, int(uni.bit_width), uniform_objective,
                       uniform_energy, eq_bits, eq_energy)
