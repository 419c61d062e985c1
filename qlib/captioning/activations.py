"""Caption quality against the bit-width of the transmitted embedding (chapter "The uplink").

The paper quantizes the agent's weights only; the embedding :math:`\\mathbf o` it sends (eq. 1)
goes at full precision. Here the embedding itself is quantized to ``activation_bits`` bits
(:func:`qlib.captioning.model.quantize_embedding`, uniform or power-of-two, one scale per sample
or per token) with full-precision weights, and the captions are scored with CIDEr-D and, on the
generated data, the exact scene accuracy. Every score carries a 95 % bootstrap interval over
the test samples (:func:`scipy.stats.bootstrap`, per-sample CIDEr-D with the document
frequencies of the whole test set, as the corpus score uses), and the difference to full
precision a paired interval: a difference whose interval holds 0 is a tie.

Captions are cached in the sweep cache of :mod:`qlib.captioning.sweep` (same file, keys that
name the activation setting), so a rerun costs only the scoring.
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Sequence

import numpy as np

from qlib.captioning.data import Sample, cache_dir
from qlib.captioning.metrics import score_samples
from qlib.captioning.model import SplitCaptioner
from qlib.captioning.sweep import (SweepCache, _caption_key, _captions_ok, _model_key, data_fingerprint,
                                    load_pixels)

__all__ = ["ActivationSetting", "activation_sweep", "per_sample_scores", "bootstrap_ci"]

#: (activation_bits or None for full precision, "uniform" | "pot", per_token).
ActivationSetting = tuple[Any, str, bool]


def _check(settings: Iterable[ActivationSetting]) -> list[ActivationSetting]:
    out = []
    for bits, scheme, per_token in settings:
        if scheme not in ("uniform", "pot"):
            raise ValueError(f"activation_scheme must be 'uniform' or 'pot', got {scheme!r}")
        if bits is not None and (isinstance(bits, bool) or not isinstance(bits, (int, np.integer))
                                 or not 1 <= bits <= 16):
            raise ValueError(f"activation_bits must be an integer in 1…16 or None, got {bits!r}")
        if not isinstance(per_token, bool):
            raise ValueError(f"per_token must be True or False, got {per_token!r}")
        out.append((None if bits is None else int(bits), scheme, per_token))
    return out


def per_sample_scores(runs: dict[Any, Sequence[str]], samples: Sequence[Sample]) -> dict[Any, dict[str, np.ndarray]]:
    """Per-sample CIDEr-D (and scene correctness on generated data) of several caption runs.

    The per-sample columns of :func:`qlib.captioning.metrics.score_samples` (one PTB-tokenizer
    call for all runs; CIDEr-D's document frequencies from the test references, so the mean over
    samples is the corpus score).
    """
    scenes = [s.scene for s in samples] if all(s.scene is not None for s in samples) else None
    scored = score_samples(runs, [s.references for s in samples], scenes, metrics=("CIDEr",))
    return {key: {name: sc.components[name][:, 0] for name in ("CIDEr", "scene_accuracy") if name in sc.components}
            for key, sc in scored.items()}


def bootstrap_ci(values: np.ndarray, seed: int = 0, n_resamples: int = 2000) -> tuple[float, float]:
    """95 % percentile bootstrap interval of the mean (:func:`scipy.stats.bootstrap`)."""
    from scipy.stats import bootstrap

    values = np.asarray(values, dtype=float)
    if np.ptp(values) == 0:  # a constant sample has a degenerate interval (scipy warns and returns NaN)
        return float(values[0]), float(values[0])
    res = bootstrap((values,), np.mean, n_resamples=n_resamples, confidence_level=0.95, method="percentile",
                    rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def activation_sweep(captioner: SplitCaptioner, samples: Sequence[Sample], settings: Iterable[ActivationSetting],
                     kind: str = "image", data_id: str = "data", cache: str | os.PathLike | None = "auto",
                     bit_width: int | None = None, scheme: str = "uniform", seed: int = 0,
                     n_resamples: int = 2000, batch_size: int = 50, progress: bool = True) -> dict[ActivationSetting, dict[str, Any]]:
    """Scores of the split captioner with its transmitted embedding quantized, for every setting.

    Parameters
    ----------
    captioner : SplitCaptioner
    samples : list of Sample
        Test samples (with ``scene`` on generated data, which adds the scene accuracy).
    settings : iterable of (activation_bits or None, scheme, per_token)
        ``None`` is the embedding as computed (the reference of the paired differences; it is
        evaluated even if not listed).
    bit_width, scheme : optional
        The agent's weight bit-width and quantizer (default full-precision weights).
    cache : path, "auto" or None
        Caption cache (``"auto"``: the sweep cache of :mod:`qlib.captioning.sweep`).

    Returns
    -------
    dict
        Per setting: ``CIDEr``, ``CIDEr_ci95`` (low, high), ``CIDEr_diff_ci95`` (paired, setting
        minus full precision), and the same for ``scene_accuracy`` on generated data, plus
        ``payload_bits_per_element`` (the activation bits; 32 for ``None``). The unquantized
        setting ``(None, "uniform", False)`` comes first, listed or not.
    """
    from tqdm import tqdm

    settings = _check(settings)
    if not samples:
        raise ValueError("samples must be non-empty")
    ref: ActivationSetting = (None, "uniform", False)
    todo = [ref] + [s for s in settings if s != ref]
    # The weight sweep's cache and key (weights, dtype, device, code and data versions), plus the
    # activation setting: one file per entry, so these never collide with weight-only sweeps.
    store = SweepCache(cache_dir() / "captioning" / "sweeps" if cache == "auto" else cache)
    base = _caption_key(_model_key(captioner), data_id, data_fingerprint(samples), len(samples),
                        (bit_width, scheme), batch_size)
    captions_ok = _captions_ok(len(samples))

    def key(s: ActivationSetting) -> dict[str, Any]:
        return {**base, "activation": None if s[0] is None else list(s)}

    pixels = None
    n_frames = getattr(captioner.server.config, "num_image_with_embedding", None) or 4
    for s in tqdm(todo, desc="activation bits", mininterval=0, miniters=1, disable=not progress):
        if store.get("captions", key(s), captions_ok) is not None:
            continue
        if pixels is None:
            pixels = load_pixels(samples, kind, n_frames)
        caps = captioner.caption(pixels, bit_width=bit_width, scheme=scheme, batch_size=batch_size,
                                 activation_bits=s[0], activation_scheme=s[1], activation_per_token=s[2])
        store.put("captions", key(s), caps)
    captions = {s: store.get("captions", key(s), captions_ok) for s in todo}
    per = per_sample_scores(captions, samples)
    out: dict[ActivationSetting, dict[str, Any]] = {}
    for s in todo:
        row: dict[str, Any] = {"payload_bits_per_element": 32 if s[0] is None else s[0]}
        for metric, vals in per[s].items():
            row[metric] = float(vals.mean())
            row[f"{metric}_ci95"] = bootstrap_ci(vals, seed, n_resamples)
            row[f"{metric}_diff_ci95"] = (bootstrap_ci(vals - per[ref][metric], seed, n_resamples)
                                          if s != ref else (0.0, 0.0))
        row["captions"] = captions[s]
        out[s] = row
    return {s: out[s] for s in todo}
