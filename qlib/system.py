"""Delay and energy of quantization-aware co-inference (paper Sec. II-D, eqs. 4–9).

The agent runs the on-agent part of the model with ``bit_width``-bit weights; its workload
is assumed to scale linearly with the bit-width, ``bit_width * n_flop_agent / b_full``
FLOPs (the assumption behind eq. 4, checked by measurement in the system-model chapter).
The server runs the rest in full precision. Delay is workload over throughput
(frequency × FLOPs per cycle); energy is the cycle count times ``psi * f**2`` times the
power usage effectiveness (PUE) ``eta``, the CMOS dynamic-power model.

Every function broadcasts its array arguments with NumPy, so a sweep of thousands of
(bit-width, frequency) points is one call. Scalars in give NumPy scalars out.

Beyond the paper, :func:`embedding_bits`, :func:`uplink_delay` and :func:`uplink_energy` price
the transmission of the embedding, and eqs. (8)–(9) (:func:`total_delay`, :func:`total_energy`)
add them when given the optional uplink arguments; without them they are the paper's
computation-only model, unchanged.

Units: frequencies in cycles/s (Hz), workloads in FLOPs, delays in s, energies in J, payloads
in bits, rates in bit/s, powers in W.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Union

import numpy as np

__all__ = [
    "Hardware",
    "agent_delay",
    "server_delay",
    "agent_energy",
    "server_energy",
    "total_delay",
    "total_energy",
    "embedding_bits",
    "uplink_delay",
    "uplink_energy",
    "PRECISION_BITS",
    "measure_latency_by_precision",
]

ArrayLike = Union[float, int, np.ndarray, Any]


def check_real_fields(obj: Any) -> None:
    """Raise ``ValueError`` naming the first field of dataclass ``obj`` that is not a finite real.

    Booleans are rejected too: ``True`` as a frequency is a caller's mistake, not 1 Hz. A field
    whose default is ``None`` may be ``None`` (an optional part of the model, e.g. no uplink).
    """
    for fld in fields(obj):
        value = getattr(obj, fld.name)
        if value is None and fld.default is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise ValueError(f"{fld.name} must be a real number, got {value!r}")
        if not math.isfinite(float(value)):
            raise ValueError(f"{fld.name} must be finite, got {value!r}")


@dataclass(frozen=True)
class Hardware:
    """Processor constants of the agent and the server (defaults: paper Sec. VI-C).

    Parameters
    ----------
    f_agent_max : float
        Largest agent clock frequency :math:`f^{\\max}` in cycles/s (> 0). Default 2 GHz.
    f_server_max : float
        Largest server clock frequency :math:`\\tilde f^{\\max}` in cycles/s (> 0). Default 10 GHz.
    c_agent : float
        Agent FLOPs per cycle :math:`c` (> 0). Default 32.
    c_server : float
        Server FLOPs per cycle :math:`\\tilde c` (> 0). Default 128.
    eta_agent : float
        Agent power usage effectiveness :math:`\\eta` (>= 1: a PUE below 1 would mean the
        facility uses less power than its processor). Default 1.0.
    eta_server : float
        Server PUE :math:`\\tilde\\eta` (>= 1). Default 2.0.
    psi_agent : float
        Agent power coefficient :math:`\\psi` in W/(cycle/s)^3 (> 0). Default 2e-29.
    psi_server : float
        Server power coefficient :math:`\\tilde\\psi` in W/(cycle/s)^3 (> 0). Default 1e-28.
    b_full : int
        Full-precision bit-width :math:`b` of the stored weights (integer >= 1). Default 32.

    Raises
    ------
    ValueError
        If any value is non-finite or outside the range above.

    Examples
    --------
    >>> Hardware().f_agent_max
    2000000000.0
    >>> Hardware(eta_server=0.5)
    Traceback (most recent call last):
    ...
    ValueError: eta_server (PUE) must be a finite number >= 1, got 0.5
    """

    f_agent_max: float = 2e9
    f_server_max: float = 10e9
    c_agent: float = 32.0
    c_server: float = 128.0
    eta_agent: float = 1.0
    eta_server: float = 2.0
    psi_agent: float = 2e-29
    psi_server: float = 1e-28
    b_full: int = 32

    def __post_init__(self) -> None:
        check_real_fields(self)
        for name in ("f_agent_max", "f_server_max", "c_agent", "c_server", "psi_agent", "psi_server"):
            value = float(getattr(self, name))
            if value <= 0:
                raise ValueError(f"{name} must be a finite number > 0, got {getattr(self, name)!r}")
            object.__setattr__(self, name, value)
        for name in ("eta_agent", "eta_server"):
            value = float(getattr(self, name))
            if value < 1:
                raise ValueError(f"{name} (PUE) must be a finite number >= 1, got {getattr(self, name)!r}")
            object.__setattr__(self, name, value)
        if float(self.b_full) != int(self.b_full) or int(self.b_full) < 1:
            raise ValueError(f"b_full must be an integer >= 1 (bits per stored weight), got {self.b_full!r}")
        object.__setattr__(self, "b_full", int(self.b_full))


_DEFAULT = Hardware()


def _array(value: ArrayLike, name: str, *, positive: bool, upper: float | None = None,
           what: str = "") -> np.ndarray:
    """Convert to a float array and check its range; the error names the parameter."""
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a number or an array of numbers, got {value!r}") from exc
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite (no NaN or inf)")
    if positive and np.any(arr <= 0):
        bad = arr[arr <= 0].flat[0]
        raise ValueError(f"{name} must be > 0{what}, got {bad!r}")
    if not positive and np.any(arr < 0):
        bad = arr[arr < 0].flat[0]
        raise ValueError(f"{name} must be >= 0{what}, got {bad!r}")
    if upper is not None and np.any(arr > upper):
        bad = arr[arr > upper].flat[0]
        raise ValueError(f"{name} must be <= {upper:g}{what}, got {bad!r}")
    return arr


def _hw(hw: Hardware) -> Hardware:
    if not isinstance(hw, Hardware):
        raise ValueError(f"hw must be a qlib.system.Hardware, got {type(hw).__name__}")
    return hw


def _bits(bit_width: ArrayLike, hw: Hardware) -> np.ndarray:
    # Continuous bit-widths are allowed: the joint design relaxes b̂ to b̃ in (1, B_max] (P2).
    return _array(bit_width, "bit_width", positive=True, upper=float(hw.b_full),
                  what=f" (bits, in (0, b_full={hw.b_full}])")


def _out(arr: np.ndarray) -> Any:
    return arr[()] if arr.ndim == 0 else arr


def agent_delay(bit_width: ArrayLike, n_flop_agent: ArrayLike, f_agent: ArrayLike,
                hw: Hardware = _DEFAULT) -> Any:
    r"""On-agent inference delay :math:`t(\hat b, f)` in seconds (eq. 4).

    .. math:: t(\hat b, f) = \frac{\hat b N_{\mathrm{FLOP}}}{b f c}

    Parameters
    ----------
    bit_width : float or ndarray
        On-agent bit-width :math:`\hat b`, in (0, ``hw.b_full``]; non-integers allowed (the
        relaxation of problem P2).
    n_flop_agent : float or ndarray
        Full-precision on-agent workload :math:`N_{\mathrm{FLOP}}` in FLOPs (>= 0).
    f_agent : float or ndarray
        Agent clock frequency :math:`f` in cycles/s (> 0).
    hw : Hardware
        Processor constants (``b_full`` and ``c_agent`` are used).

    Returns
    -------
    float or ndarray
        Delay in s, broadcast over the inputs.

    Raises
    ------
    ValueError
        If a frequency is not > 0, a workload is negative, a bit-width is outside
        (0, b_full], or any input is not finite.

    References
    ----------
    .. [1] Lyu et al., 2026, Sec. II-D, eq. (4).

    Examples
    --------
    >>> float(agent_delay(16, 64e9, 2e9))  # 16/32 * 64e9 / (2e9 * 32)
    0.5
    """
    hw = _hw(hw)
    b = _bits(bit_width, hw)
    n = _array(n_flop_agent, "n_flop_agent", positive=False, what=" (FLOPs)")
    f = _array(f_agent, "f_agent", positive=True, what=" (cycles/s)")
    return _out(b * n / (hw.b_full * f * hw.c_agent))


def server_delay(n_flop_server: ArrayLike, f_server: ArrayLike, hw: Hardware = _DEFAULT) -> Any:
    r"""On-server inference delay :math:`\tilde t(\tilde f)` in seconds (eq. 5).

    .. math:: \tilde t(\tilde f) = \frac{\tilde N_{\mathrm{FLOP}}}{\tilde f \tilde c}

    Parameters
    ----------
    n_flop_server : float or ndarray
        On-server workload :math:`\tilde N_{\mathrm{FLOP}}` in FLOPs (>= 0).
    f_server : float or ndarray
        Server clock frequency :math:`\tilde f` in cycles/s (> 0).
    hw : Hardware
        Processor constants (``c_server`` is used).

    Returns
    -------
    float or ndarray
        Delay in s.

    References
    ----------
    .. [1] Lyu et al., 2026, Sec. II-D, eq. (5).

    Examples
    --------
    >>> float(server_delay(1.28e12, 10e9))
    1.0
    """
    hw = _hw(hw)
    n = _array(n_flop_server, "n_flop_server", positive=False, what=" (FLOPs)")
    f = _array(f_server, "f_server", positive=True, what=" (cycles/s)")
    return _out(n / (f * hw.c_server))


def agent_energy(bit_width: ArrayLike, n_flop_agent: ArrayLike, f_agent: ArrayLike,
                 hw: Hardware = _DEFAULT) -> Any:
    r"""On-agent inference energy :math:`e(\hat b, f)` in joules (eq. 6).

    .. math:: e(\hat b, f) = \eta \frac{\hat b N_{\mathrm{FLOP}}}{b c} \psi f^2

    Parameters
    ----------
    bit_width, n_flop_agent, f_agent : float or ndarray
        As in :func:`agent_delay`.
    hw : Hardware
        Processor constants (``b_full``, ``c_agent``, ``eta_agent``, ``psi_agent``).

    Returns
    -------
    float or ndarray
        Energy in J.

    References
    ----------
    .. [1] Lyu et al., 2026, Sec. II-D, eq. (6).

    Examples
    --------
    >>> round(float(agent_energy(32, 32e9, 1e9)), 12)  # 1e9 cycles * 2e-29 * (1e9)**2
    0.02
    """
    hw = _hw(hw)
    b = _bits(bit_width, hw)
    n = _array(n_flop_agent, "n_flop_agent", positive=False, what=" (FLOPs)")
    f = _array(f_agent, "f_agent", positive=True, what=" (cycles/s)")
    return _out(hw.eta_agent * (b * n / (hw.b_full * hw.c_agent)) * hw.psi_agent * f**2)


def server_energy(n_flop_server: ArrayLike, f_server: ArrayLike, hw: Hardware = _DEFAULT) -> Any:
    r"""On-server inference energy :math:`\tilde e(\tilde f)` in joules (eq. 7).

    .. math:: \tilde e(\tilde f) = \tilde\eta \frac{\tilde N_{\mathrm{FLOP}}}{\tilde c} \tilde\psi \tilde f^2

    Parameters
    ----------
    n_flop_server, f_server : float or ndarray
        As in :func:`server_delay`.
    hw : Hardware
        Processor constants (``c_server``, ``eta_server``, ``psi_server``).

    Returns
    -------
    float or ndarray
        Energy in J.

    References
    ----------
    .. [1] Lyu et al., 2026, Sec. II-D, eq. (7).

    Examples
    --------
    >>> round(float(server_energy(128e9, 1e9)), 12)  # 2 * 1e9 cycles * 1e-28 * (1e9)**2
    0.2
    """
    hw = _hw(hw)
    n = _array(n_flop_server, "n_flop_server", positive=False, what=" (FLOPs)")
    f = _array(f_server, "f_server", positive=True, what=" (cycles/s)")
    return _out(hw.eta_server * (n / hw.c_server) * hw.psi_server * f**2)


def total_delay(bit_width: ArrayLike, n_flop_agent: ArrayLike, n_flop_server: ArrayLike,
                f_agent: ArrayLike, f_server: ArrayLike, hw: Hardware = _DEFAULT,
                payload_bits: ArrayLike | None = None, rate_bps: ArrayLike | None = None) -> Any:
    r"""End-to-end delay :math:`T(\hat b, f, \tilde f) = t + \tilde t` (eq. 8), optionally plus the uplink.

    Parameters
    ----------
    bit_width, n_flop_agent, f_agent : float or ndarray
        As in :func:`agent_delay`.
    n_flop_server, f_server : float or ndarray
        As in :func:`server_delay`.
    hw : Hardware
        Processor constants.
    payload_bits, rate_bps : float or ndarray, optional
        The embedding's size in bits (:func:`embedding_bits`) and the uplink rate in bit/s.
        Both ``None`` (default): the paper's computation-only model, eq. (8) exactly. Both
        given: :math:`T + t_{\mathrm{up}}` with :math:`t_{\mathrm{up}}` of :func:`uplink_delay`
        (beyond the paper; chapter "The uplink").

    Returns
    -------
    float or ndarray
        Delay in s.

    Raises
    ------
    ValueError
        If only one of ``payload_bits`` and ``rate_bps`` is given, or an input is out of range.

    References
    ----------
    .. [1] Lyu et al., 2026, Sec. II-D, eq. (8).

    Examples
    --------
    >>> float(total_delay(16, 64e9, 1.28e12, 2e9, 10e9))
    1.5
    >>> float(total_delay(16, 64e9, 1.28e12, 2e9, 10e9, payload_bits=5e6, rate_bps=10e6))
    2.0
    """
    out = (np.asarray(agent_delay(bit_width, n_flop_agent, f_agent, hw))
           + np.asarray(server_delay(n_flop_server, f_server, hw)))
    if payload_bits is None and rate_bps is None:
        return _out(out)
    if payload_bits is None or rate_bps is None:
        raise ValueError("payload_bits and rate_bps must be given together (or both None: computation only)")
    return _out(out + np.asarray(uplink_delay(payload_bits, rate_bps)))


def total_energy(bit_width: ArrayLike, n_flop_agent: ArrayLike, n_flop_server: ArrayLike,
                 f_agent: ArrayLike, f_server: ArrayLike, hw: Hardware = _DEFAULT,
                 payload_bits: ArrayLike | None = None, rate_bps: ArrayLike | None = None,
                 tx_power_w: ArrayLike | None = None) -> Any:
    r"""End-to-end energy :math:`E(\hat b, f, \tilde f) = e + \tilde e` (eq. 9), optionally plus the uplink.

    Parameters
    ----------
    bit_width, n_flop_agent, n_flop_server, f_agent, f_server, hw
        As in :func:`total_delay`.
    payload_bits, rate_bps, tx_power_w : float or ndarray, optional
        All ``None`` (default): the paper's computation-only eq. (9) exactly. All given:
        :math:`E + e_{\mathrm{up}}` with :math:`e_{\mathrm{up}}` of :func:`uplink_energy`.

    Returns
    -------
    float or ndarray
        Energy in J.

    Raises
    ------
    ValueError
        If the three uplink arguments are neither all given nor all ``None``.

    References
    ----------
    .. [1] Lyu et al., 2026, Sec. II-D, eq. (9).

    Examples
    --------
    >>> round(float(total_energy(32, 32e9, 128e9, 1e9, 1e9)), 12)
    0.22
    >>> round(float(total_energy(32, 32e9, 128e9, 1e9, 1e9, payload_bits=1e6, rate_bps=10e6, tx_power_w=0.2)), 12)
    0.24
    """
    out = (np.asarray(agent_energy(bit_width, n_flop_agent, f_agent, hw))
           + np.asarray(server_energy(n_flop_server, f_server, hw)))
    given = [x is not None for x in (payload_bits, rate_bps, tx_power_w)]
    if not any(given):
        return _out(out)
    if not all(given):
        raise ValueError("payload_bits, rate_bps and tx_power_w must be given together "
                         "(or all None: computation only)")
    return _out(out + np.asarray(uplink_energy(payload_bits, rate_bps, tx_power_w)))


# --------------------------------------------------------------------------------------------
# The uplink (beyond the paper): the agent sends the embedding o of eq. (1) to the server.
# --------------------------------------------------------------------------------------------

def embedding_bits(n_tokens: ArrayLike, dim: ArrayLike, activation_bits: ArrayLike) -> Any:
    r"""Size in bits of the embedding :math:`\mathbf o` (eq. 1) the agent transmits.

    .. math:: L = N_{\mathrm{tok}}\, d\, b_{\mathrm{act}}

    Parameters
    ----------
    n_tokens : int or ndarray
        Tokens (rows) of the embedding, an integer >= 1 (e.g. 257 for BLIP-2's ViT-g output;
        frames times tokens for a clip).
    dim : int or ndarray
        Width of each token, an integer >= 1 (1408 for ViT-g).
    activation_bits : float or ndarray
        Bits per transmitted element, in (0, 64] (16 for float16, 32 for float32; a quantized
        embedding may use fewer). Side information such as a per-token scale is not counted.

    Returns
    -------
    float or ndarray
        Payload in bits.

    Examples
    --------
    >>> float(embedding_bits(257, 1408, 16)) / 8 / 1e3  # BLIP-2's ViT output in float16, kB
    723.712
    """
    n = _array(n_tokens, "n_tokens", positive=True, what=" (tokens, an integer)")
    d = _array(dim, "dim", positive=True, what=" (elements per token, an integer)")
    for name, arr in (("n_tokens", n), ("dim", d)):
        if np.any(arr != np.round(arr)):
            raise ValueError(f"{name} must be an integer >= 1, got {arr[arr != np.round(arr)].flat[0]!r}")
    a = _array(activation_bits, "activation_bits", positive=True, upper=64.0, what=" (bits per element, in (0, 64])")
    return _out(n * d * a)


def uplink_delay(payload_bits: ArrayLike, rate_bps: ArrayLike) -> Any:
    r"""Transmission delay :math:`t_{\mathrm{up}} = L / r` of the embedding, in seconds.

    Parameters
    ----------
    payload_bits : float or ndarray
        Payload :math:`L` in bits (>= 0), e.g. from :func:`embedding_bits`.
    rate_bps : float or ndarray
        Achieved uplink rate :math:`r` in bit/s (> 0).

    Returns
    -------
    float or ndarray
        Delay in s.

    Examples
    --------
    >>> round(float(uplink_delay(embedding_bits(257, 1408, 16), 10e6)), 3)  # 10 Mbit/s
    0.579
    """
    L = _array(payload_bits, "payload_bits", positive=False, what=" (bits)")
    r = _array(rate_bps, "rate_bps", positive=True, what=" (bit/s)")
    return _out(L / r)


def uplink_energy(payload_bits: ArrayLike, rate_bps: ArrayLike, tx_power_w: ArrayLike) -> Any:
    r"""Transmission energy :math:`e_{\mathrm{up}} = P\, L / r` of the embedding, in joules.

    The radio draws :math:`P` for the air time :math:`L/r`; tail energy after the burst (LTE's
    RRC tail, Wi-Fi's power-save timeout) is not modelled.

    Parameters
    ----------
    payload_bits, rate_bps : float or ndarray
        As in :func:`uplink_delay`.
    tx_power_w : float or ndarray
        Power drawn while transmitting, in W (>= 0).

    Returns
    -------
    float or ndarray
        Energy in J.

    Examples
    --------
    >>> round(float(uplink_energy(8e6, 10e6, 1.5)), 6)  # 1 MB at 10 Mbit/s and 1.5 W
    1.2
    """
    t = np.asarray(uplink_delay(payload_bits, rate_bps))
    p = _array(tx_power_w, "tx_power_w", positive=False, what=" (W)")
    return _out(p * t)


#: Bits per weight of the precisions :func:`measure_latency_by_precision` times.
PRECISION_BITS: dict[str, int] = {"fp32": 32, "bf16": 16, "int8": 8}


def measure_latency_by_precision(width: int = 1024, layers: int = 4, batch: int = 64, repeats: int = 20,
                                 precisions: tuple[str, ...] = ("fp32", "bf16", "int8"),
                                 seed: int = 0) -> dict[str, float]:
    """Median CPU latency of a linear-layer stack at several weight precisions.

    A check of the assumption behind eq. (4), that on-agent workload (hence delay) scales
    like ``bit_width / b_full``: an MLP of ``layers`` ``width``×``width`` linear layers is
    run on a ``batch``×``width`` input in fp32, in bf16 (weights and activations), and with
    torch's dynamic int8 quantization (int8 weights, activations quantized on the fly).

    Parameters
    ----------
    width, layers, batch, repeats : int
        Model and input size, timed repetitions (all >= 1); the median is returned.
    precisions : tuple of str
        Any of ``"fp32"``, ``"bf16"``, ``"int8"``.
    seed : int
        Seed of the random weights and input.

    Returns
    -------
    dict
        Precision -> median seconds per forward pass. A precision this machine's torch
        cannot run is left out.

    Notes
    -----
    Timings vary from run to run and machine to machine; show them in a cell tagged
    ``nbval-ignore-output``.
    """
    import copy
    import time
    import warnings

    import torch

    for pname, value in (("width", width), ("layers", layers), ("batch", batch), ("repeats", repeats)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{pname} must be an integer >= 1, got {value!r}")
    unknown = set(precisions) - set(PRECISION_BITS)
    if unknown or not precisions:
        raise ValueError(f"precisions must be a non-empty subset of {sorted(PRECISION_BITS)}, got {precisions!r}")
    gen = torch.Generator().manual_seed(seed)
    model = torch.nn.Sequential(*[torch.nn.Linear(width, width) for _ in range(layers)]).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * width**-0.5)
    x = torch.randn(batch, width, generator=gen)

    def variant(name: str) -> tuple[Any, Any]:
        if name == "fp32":
            return model, x
        if name == "bf16":
            return copy.deepcopy(model).to(torch.bfloat16), x.to(torch.bfloat16)
        with warnings.catch_warnings():  # torch.ao's eager quantization warns that it moves to torchao
            warnings.simplefilter("ignore")
            from torch.ao.quantization import quantize_dynamic

            return quantize_dynamic(copy.deepcopy(model), {torch.nn.Linear}, dtype=torch.qint8), x

    out: dict[str, float] = {}
    for name in precisions:
        try:
            net, inp = variant(name)
            with torch.inference_mode():
                for _ in range(3):  # warm-up: allocations, packed weights
                    net(inp)
                times = []
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    net(inp)
                    times.append(time.perf_counter() - t0)
        except (RuntimeError, NotImplementedError, ImportError, AssertionError):
            continue  # precision not supported by this build/CPU
        out[name] = float(np.median(times))
    return out
