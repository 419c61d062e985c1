r"""Sign–magnitude weight quantizers, uniform and power-of-two (paper Sec. II-C, III, VI-A).

The paper keeps the sign bit of every parameter and quantizes only its magnitude
:math:`\theta = |w|` (Sec. II-C), so a ``bit_width`` of :math:`\hat b` leaves
:math:`\hat b - 1` bits, i.e. at most :math:`2^{\hat b - 1}` distinct magnitudes.
Two level sets are used in the evaluation (Sec. VI-A):

- ``"uniform"``: a fixed step :math:`\Delta = M / (2^{\hat b-1}-1)` up to the tensor's (or
  channel's) largest magnitude :math:`M`, magnitudes :math:`\{0, \Delta, \dots, M\}` (the
  usual symmetric integer quantizer: ``bit_width=8`` gives the levels -127…127 times Δ);
- ``"pot"``: power-of-two logarithmic levels as in Incremental Network Quantization
  (Zhou et al., 2017): :math:`\{0\}\cup\{2^{n_1}, 2^{n_1-1}, \dots, 2^{n_1-2^{\hat b-1}+2}\}`
  with :math:`n_1 = \lfloor \log_2(4M/3) \rfloor`, each magnitude rounded to the nearest
  level (arithmetic midpoints, as INQ does).

:func:`quantize_module` applies either to every weight of a ``torch.nn.Module`` and reports the
L1 parameter distortion :math:`\|\mathbf W - \hat{\mathbf W}\|_1` (eq. 15) of each layer.

Both quantizers are vectorized torch code (a handful of elementwise passes, no Python loop
over elements) and run on any floating dtype and device; ``benchmarks/bench_quantize.py``
compares their speed with ``Tensor.clone()``.
"""

from __future__ import annotations

import copy
import math
from typing import Literal

import torch

__all__ = ["SCHEMES", "quantize", "quantize_module", "num_levels"]

SCHEMES = ("uniform", "pot")

Scheme = Literal["uniform", "pot"]

# Bit pattern of the exponent field of an IEEE float: masking the mantissa away leaves
# 2**floor(log2|x|) exactly, one integer AND instead of log2/floor/exp2.
_EXP_MASK = {torch.float32: (torch.int32, 0x7F800000), torch.float64: (torch.int64, 0x7FF0000000000000)}


def _check_bit_width(bit_width: int) -> int:
    if isinstance(bit_width, bool) or not isinstance(bit_width, int):
        try:
            import numpy as np

            if isinstance(bit_width, np.integer):
                bit_width = int(bit_width)
            else:
                raise TypeError
        except TypeError:
            raise ValueError(f"bit_width must be an integer in 1…16, got {bit_width!r}") from None
    if not 1 <= bit_width <= 16:
        raise ValueError(f"bit_width must be an integer in 1…16, got {bit_width}")
    return bit_width


def _check_scheme(scheme: str) -> str:
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
    return scheme


def num_levels(bit_width: int) -> int:
    """Number of distinct magnitudes a ``bit_width``-bit sign–magnitude code can hold, 2**(bit_width-1)."""
    return 2 ** (_check_bit_width(bit_width) - 1)


def _max_magnitude(x: torch.Tensor, per_channel: bool) -> torch.Tensor:
    """Largest |x| of the tensor (0-d) or of each slice along dim 0 (shape (C, 1, …, 1))."""
    if per_channel and x.ndim >= 2:
        flat = x.reshape(x.shape[0], -1)
        lo, hi = torch.aminmax(flat, dim=1)
        m = torch.maximum(-lo, hi)
        return m.reshape((x.shape[0],) + (1,) * (x.ndim - 1))
    lo, hi = torch.aminmax(x)  # one read pass, no |x| temporary
    return torch.maximum(-lo, hi)


def _uniform(x: torch.Tensor, M: torch.Tensor, bit_width: int) -> torch.Tensor:
    if bit_width == 1:
        # Sign only: the one magnitude is the top of the uniform grid, M; exact zeros stay 0.
        return torch.sign(x).mul_(M)
    n = float(2 ** (bit_width - 1) - 1)
    safe = torch.where(M > 0, M, torch.ones_like(M))  # all-zero tensor/channel: output zeros
    # k = round(x * n / M) is signed and symmetric (round half to even), so the sign bit
    # survives and 0 stays 0. The level is (k / n) * M rather than k * (M / n): the top level
    # is then M exactly, which makes quantize() idempotent bit for bit.
    q = torch.mul(x, n / safe)
    q.round_()
    q.div_(n)
    q.mul_(safe)
    return q


def _uniform_wide(x: torch.Tensor, M: torch.Tensor, bit_width: int) -> torch.Tensor:
    """:func:`_uniform` for a maximum M outside the range where n / M is a normal float.

    There n / M overflows to inf (M tiny or subnormal) or loses bits (M near the format's
    maximum), and the fast path returns ±inf or levels off the grid (issue 14.1). Here x / M
    (|x / M| <= 1, never overflows) is formed in float64, where every float32 value, subnormals
    included, is a normal number; a float64 input keeps float64 and x / M is as exact as it gets.
    """
    wide = torch.float64
    xd, Md = x.to(wide), M.to(wide)
    if bit_width == 1:
        return torch.sign(xd).mul_(Md).to(x.dtype)
    n = float(2 ** (bit_width - 1) - 1)
    safe = torch.where(Md > 0, Md, torch.ones_like(Md))
    q = torch.div(xd, safe)
    q.mul_(n).round_().div_(n).mul_(safe)
    # q <= M in magnitude, so the cast back cannot overflow.
    return q.to(x.dtype)


def _pot_top_exponent(M: torch.Tensor, emax: int) -> torch.Tensor:
    """n1 = floor(log2(4 M / 3)) (INQ) from frexp(M) = m 2^e, without forming 4 M / 3 (which
    overflows for M >= 2.55e38 in float32), capped at ``emax`` so that 2**n1 is finite in the
    output's dtype (float16: 2**15; 2**16 = 65536 is beyond its maximum 65504)."""
    m, e = torch.frexp(M)
    n1 = e - (m < 0.75).to(e.dtype)  # 4 m / 3 in [2/3, 4/3): floor(log2) is 0 iff m >= 3/4
    return torch.clamp(n1, max=emax)


def _pot(x: torch.Tensor, M: torch.Tensor, bit_width: int) -> torch.Tensor:
    int_dtype, mask = _EXP_MASK[x.dtype]
    safe = torch.where(M > 0, M, torch.ones_like(M))
    # n1 = floor(log2(4 M / 3)) as in INQ, via frexp so no log rounding enters.
    _, e = torch.frexp(safe * (4.0 / 3.0))
    top = torch.exp2((e - 1).to(safe.dtype))  # 2**n1, exact for integer exponents
    if bit_width == 1:
        # Sign only: the one magnitude is 2**n1; exact zeros stay 0.
        return torch.sign(x).mul_(torch.where(M > 0, top, torch.zeros_like(top)))
    n_nonzero = 2 ** (bit_width - 1) - 1  # plus the zero level: 2**(bit_width-1) magnitudes
    low = top * 2.0 ** -(n_nonzero - 1)  # 2**n2, exact (may underflow to 0 at 15-16 bits)
    # Nearest level with arithmetic midpoints: |x| in [1.5*2**(j-1), 1.5*2**j) -> 2**j, i.e.
    # 2**floor(log2(4|x|/3)); below low/2 -> 0, in [low/2, low) -> low.
    a = torch.abs(x)
    a.mul_(4.0 / 3.0)
    cut = low * (2.0 / 3.0)  # a < cut (|x| < low / 2) rounds to the zero level
    if low.ndim == 0:
        # Per tensor (the fast path, ~2x clone): in-place passes only, no boolean mask. The
        # elements below the cut are parked at +inf (a > t keeps a; t is the float just below
        # the cut, so a >= cut is kept), which the clamp and the exponent mask leave at +inf
        # and nan_to_num_ then sends to 0.
        torch.nn.functional.threshold_(a, float(torch.nextafter(cut, torch.zeros_like(cut))), math.inf)
        a.clamp_(min=float(low))
        a.view(int_dtype).bitwise_and_(mask)  # 2**floor(log2(a)); subnormals flush to 0
        a.nan_to_num_(posinf=0.0)
        return a.copysign_(x)
    zero = a < cut  # per channel: the cut differs by row
    a.view(int_dtype).bitwise_and_(mask)  # 2**floor(log2(a)); subnormals flush to 0
    a = torch.maximum(a, low)
    a.masked_fill_(zero, 0.0)
    return a.copysign_(x)


def _pot_wide(x: torch.Tensor, M: torch.Tensor, bit_width: int, emax: int) -> torch.Tensor:
    """:func:`_pot` from exponents alone (frexp), for maxima where the fast path overflows.

    The fast path forms 4|x|/3 and 2**n1, which overflow when M >= 2.55e38 (float32) and give
    2**16 = inf for float16 inputs >= 49152 (issue 14.1). Here every level is 2**k with the
    integer k = floor(log2(4|x|/3)) read off frexp(|x|), clipped to [n2, n1] with n1 capped so
    that 2**n1 is finite in the output dtype; no product can overflow. The rule is the fast
    path's: levels below the working format's normal range flush to 0.
    """
    n1 = _pot_top_exponent(M, emax)
    tiny_exp = math.frexp(torch.finfo(x.dtype).tiny)[1] - 1  # exponent of the smallest normal number
    pos = M > 0
    if bit_width == 1:
        top = torch.where(pos & (n1 >= tiny_exp), torch.exp2(n1.to(x.dtype)), torch.zeros_like(M))
        return torch.sign(x).mul_(top)
    n_nonzero = 2 ** (bit_width - 1) - 1
    n2 = n1 - (n_nonzero - 1)  # exponent of the lowest nonzero level
    m, e = torch.frexp(torch.abs(x))
    k = e - (m < 0.75).to(e.dtype)  # floor(log2(4|x|/3)), exact
    # |x| < 2**(n2-1) (below half the lowest level) is the zero level: frexp's e <= n2 - 1.
    zero = (e < n2) | (x == 0) | ~pos
    k = torch.minimum(torch.maximum(k, n2), n1)
    zero |= k < tiny_exp
    level = torch.exp2(k.to(x.dtype))
    level.masked_fill_(zero, 0.0)
    return level.copysign_(x)


def _emax(dtype: torch.dtype) -> int:
    """Exponent of the largest power of two that is finite in ``dtype`` (float16: 15, float32: 127)."""
    return math.frexp(torch.finfo(dtype).max)[1] - 1


def _fast_path_ok(M: torch.Tensor, work_dtype: torch.dtype, out_dtype: torch.dtype, scheme: str,
                  bit_width: int) -> bool:
    """Whether the fast elementwise code is exact for these maxima (no overflow, no lost bits).

    Uniform needs n / M to be a normal number of the working dtype; PoT needs 4 M / 3 < 2**(emax+1)
    of the output dtype (so that 2**n1 is finite there). Outside, the ``_wide`` variants run.
    """
    fi = torch.finfo(work_dtype)
    Mpos = M[M > 0]  # all-zero slices give zeros on either path
    if not Mpos.numel():
        return True
    Mmin, Mmax = (float(v) for v in torch.aminmax(Mpos))
    if scheme == "uniform":
        n = float(2 ** (bit_width - 1) - 1) or 1.0
        return Mmin >= 4.0 * n * fi.tiny and Mmax <= fi.max / 4.0 and n / Mmax >= 4.0 * fi.tiny
    emax = _emax(out_dtype)
    return Mmax < 1.5 * 2.0**emax and Mmin >= fi.tiny


def quantize(tensor: torch.Tensor, bit_width: int, scheme: Scheme = "uniform",
             per_channel: bool = False) -> torch.Tensor:
    r"""Sign–magnitude quantization of a tensor (Sec. II-C; levels of Sec. VI-A).

    The sign of every element is kept and its magnitude is rounded to the nearest of at most
    :math:`2^{\text{bit\_width}-1}` levels (``bit_width - 1`` magnitude bits).

    Parameters
    ----------
    tensor : torch.Tensor
        Any floating tensor (float16, bfloat16, float32, float64) on any device. Must be finite.
    bit_width : int
        Total bits per element, sign included, in 1…16.

        - ``bit_width = 1`` is **sign only**: every nonzero element becomes
          :math:`\operatorname{sign}(w)\,\alpha` with one magnitude :math:`\alpha` per tensor
          (or channel): the top level of the scheme, :math:`\alpha = M` (uniform) or
          :math:`2^{n_1}` (PoT).
        - ``bit_width >= 2``: the magnitude levels include 0. Uniform:
          :math:`\{k\Delta\}_{k=0}^{2^{b-1}-1}`, :math:`\Delta = M/(2^{b-1}-1)`. PoT:
          :math:`\{0\} \cup \{2^{n_1-j}\}_{j=0}^{2^{b-1}-2}`, :math:`n_1=\lfloor\log_2(4M/3)\rfloor`.

        **Zero** is the magnitude level 0 (with the sign of the input, so ``-0.0`` may appear,
        which compares equal to 0). An exact zero input has no sign to keep and stays 0 at every
        bit-width, also at ``bit_width = 1``.
    scheme : {"uniform", "pot"}
        Uniform step, or power-of-two logarithmic levels (Incremental Network Quantization).
    per_channel : bool
        If True and the tensor has >= 2 dimensions, :math:`M` is taken per slice along dim 0
        (the output channel of a ``Linear``/``Conv`` weight); otherwise per tensor.

    Returns
    -------
    torch.Tensor
        A new tensor of the same shape, dtype and device. float16/bfloat16 inputs are
        quantized in float32 and rounded back, so uniform levels are the nearest
        representable values (PoT levels are exact unless below the format's normal range,
        where they flush to 0, as they do in float32/float64). The output is finite wherever
        the input is: scales are formed without overflow (see ``_uniform_wide``, ``_pot_wide``),
        and the top PoT level :math:`2^{n_1}` is capped at the largest power of two of the
        dtype (float16: :math:`2^{15}`; float32: :math:`2^{127}`), where INQ's rule would give
        ``inf``.

    Raises
    ------
    ValueError
        If ``bit_width`` is not an integer in 1…16, ``scheme`` is unknown, ``tensor`` is not a
        floating torch tensor, or it holds NaN or ±inf.

    Notes
    -----
    The L1 distortion :math:`\sum_i |w_i-\hat w_i|` (eq. 15) is non-increasing in
    ``bit_width`` element by element for PoT (the level sets are nested) and for uniform from
    1 to 3 bits; beyond, the uniform grids are not nested and the total is non-increasing in
    practice (each step at least halves Δ), which the tests check.

    References
    ----------
    .. [1] Lyu et al., 2026, Sec. II-C and VI-A.
    .. [2] A. Zhou et al., "Incremental network quantization", ICLR 2017 (PoT levels).

    Examples
    --------
    >>> import torch
    >>> quantize(torch.tensor([0.9, -0.3, 0.05, 0.0]), 3).tolist()
    [0.8999999761581421, -0.30000001192092896, 0.0, 0.0]
    >>> quantize(torch.tensor([0.9, -0.3, 0.05, 0.0]), 3, "pot").tolist()
    [1.0, -0.25, 0.0, 0.0]
    """
    if not isinstance(tensor, torch.Tensor):
        raise ValueError(f"tensor must be a torch.Tensor, got {type(tensor).__name__}")
    if not tensor.is_floating_point():
        raise ValueError(f"tensor must have a floating dtype (float16/bfloat16/float32/float64), got {tensor.dtype}")
    bit_width = _check_bit_width(bit_width)
    scheme = _check_scheme(scheme)
    x = tensor.detach()
    work = x if x.dtype in (torch.float32, torch.float64) else x.float()
    if work.numel() == 0:
        return tensor.detach().clone()
    M = _max_magnitude(work, per_channel)
    if not bool(torch.isfinite(M).all()):
        raise ValueError("tensor must hold finite values only (found NaN or inf)")
    if _fast_path_ok(M, work.dtype, tensor.dtype, scheme, bit_width):
        q = _uniform(work, M, bit_width) if scheme == "uniform" else _pot(work, M, bit_width)
    elif scheme == "uniform":
        q = _uniform_wide(work, M, bit_width)
    else:
        q = _pot_wide(work, M, bit_width, _emax(tensor.dtype))
    return q.to(tensor.dtype) if q.dtype != tensor.dtype else q


def quantize_module(module: torch.nn.Module, bit_width: int, scheme: Scheme = "uniform",
                    per_channel: bool = False, include: Literal["weights", "all"] = "weights"
                    ) -> tuple[torch.nn.Module, dict[str, float]]:
    r"""A quantized copy of ``module`` and the L1 parameter distortion of each layer (eq. 15).

    Parameters
    ----------
    module : torch.nn.Module
        The model (or model part); it is deep-copied and never modified.
    bit_width : int
        Bits per parameter, sign included, in 1…16 (see :func:`quantize`).
    scheme : {"uniform", "pot"}
        Level set (see :func:`quantize`).
    per_channel : bool
        Per-output-channel maximum for weights with >= 2 dimensions.
    include : {"weights", "all"}
        ``"weights"`` quantizes floating parameters with >= 2 dimensions (the matrices
        :math:`\mathbf W^{(l)}` of eq. 10, convolution kernels, embeddings), leaving biases and
        normalization gains in full precision, the common practice; ``"all"`` quantizes every
        floating parameter.

    Returns
    -------
    (torch.nn.Module, dict[str, float])
        The quantized copy, and :math:`\|\mathbf W^{(l)} - \hat{\mathbf W}^{(l)}\|_1` (the
        entry-wise sum of eq. 15, computed in float64) for every quantized parameter, keyed by
        its name in ``module.named_parameters()``, in order. The model's total parameter
        distortion is the sum of the values.
    """
    if not isinstance(module, torch.nn.Module):
        raise ValueError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    bit_width = _check_bit_width(bit_width)
    scheme = _check_scheme(scheme)
    if include not in ("weights", "all"):
        raise ValueError(f"include must be 'weights' or 'all', got {include!r}")
    qmodule = copy.deepcopy(module)
    distortion: dict[str, float] = {}
    with torch.no_grad():
        for name, p in qmodule.named_parameters():
            if not p.is_floating_point() or (include == "weights" and p.ndim < 2):
                continue
            q = quantize(p, bit_width, scheme, per_channel)
            distortion[name] = float((p - q).abs().sum(dtype=torch.float64))  # float64 accumulation
            p.copy_(q)
    return qmodule, distortion
