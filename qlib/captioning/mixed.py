"""Per-layer mixed precision and per-channel scales on the split captioner's agent (beyond the paper, Sec. VI-C).

The application side of :mod:`qlib.mixed`: the agent's vision encoder is quantized with
per-layer bit-widths whose parameter-weighted average is at most ``bit_width``, chosen by the
exact allocator :func:`qlib.mixed.allocate_bits` from a sensitivity table measured on the
**training** split (never the test split):

- ``"measured"``: the L1 distortion of the transmitted embedding :math:`\\mathbf o` (eq. 1)
  when one layer alone is quantized (:func:`qlib.mixed.layer_sensitivity`);
- ``"model"``: :math:`n_l D(b-1;\\lambda_l)`, eq. (15)'s expected distortion with each layer's
  fitted λ and the exact D(R) (Remark 3.2: one constant H for the whole encoder);
- ``"hawq"``: HAWQ-v2, the average Hessian trace of the captioning loss times the squared
  weight perturbation (:func:`qlib.mixed.hessian_traces`, Hutchinson with autograd).

:func:`evaluate_mixed` is ``python -m qlib.captioning evaluate --allocation per-layer``;
:func:`per_sample_scores` and :func:`bootstrap_mean` / :func:`paired_difference` give the
per-image CIDEr-D and scene correctness with bootstrap intervals (scipy.stats.bootstrap).
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from qlib import mixed
from qlib.captioning.data import Sample, load_image, shapes_dataset
from qlib.captioning.model import SplitCaptioner, load_captioner

__all__ = [
    "ALLOCATIONS",
    "SENSITIVITIES",
    "agent_layers",
    "agent_flops",
    "training_batches",
    "caption_loss",
    "sensitivity_table",
    "allocate_agent",
    "caption_with_bits",
    "per_sample_scores",
    "bootstrap_mean",
    "paired_difference",
    "evaluate_mixed",
    "compare_allocations",
    "verdicts",
    "smallest_reaching_fp",
]

ALLOCATIONS = ("uniform", "per-layer")
SENSITIVITIES = ("measured", "model", "hawq")
#: Bit-widths the per-layer allocation chooses from (the measured range of the sensitivity tables).
BIT_WIDTHS = tuple(range(1, 9))


def agent_layers(cap: SplitCaptioner) -> dict[str, int]:
    """The agent encoder's quantized parameters (>= 2 dimensions) and their sizes, in order."""
    return mixed.quantizable_layers(cap.agent)


def agent_flops(cap: SplitCaptioner) -> dict[str, int]:
    """FLOPs per image of each quantized parameter's operation (eq. 4's :math:`N_l`), by forward hooks.

    A weight of :math:`n_l` entries applied at :math:`P` positions (tokens, patches) costs
    :math:`2 n_l P` FLOPs (multiply and add); an embedding table (a lookup and an addition)
    costs one FLOP per output entry.
    """
    names = agent_layers(cap)
    owners = {n.rsplit(".", 1)[0]: n for n in names}
    found: dict[str, int] = {}
    hooks = []
    for mod_name, module in cap.agent.named_modules():
        if mod_name in owners:
            pname = owners[mod_name]

            def hook(m: torch.nn.Module, inp: Any, out: Any, pname: str = pname) -> None:
                o = out if isinstance(out, torch.Tensor) else out[0]
                per_image = o.numel() // max(int(o.shape[0]), 1) if o.ndim > 2 else o.numel()
                if isinstance(m, torch.nn.Embedding):
                    found[pname] = int(per_image)
                else:
                    out_ch = int(m.weight.shape[0])
                    found[pname] = int(2 * names[pname] * max(per_image // out_ch, 1))

            hooks.append(module.register_forward_hook(hook))
    try:
        size = getattr(cap.processor, "image_size", None) or 224
        with torch.no_grad():
            cap.agent(torch.zeros(1, 3, size, size, dtype=cap.dtype, device=cap.device))
    finally:
        for h in hooks:
            h.remove()
    return {n: found.get(n, 2 * s) for n, s in names.items()}


def training_batches(cap: SplitCaptioner, n_train: int = 64, batch_size: int = 32) -> list[torch.Tensor]:
    """Pixel batches of the first ``n_train`` images of the generated **training** split."""
    if not isinstance(n_train, int) or n_train < 1:
        raise ValueError(f"n_train must be an integer >= 1, got {n_train!r}")
    samples = shapes_dataset("image", "train", n=n_train)
    pv = cap.processor.images([load_image(s.path) for s in samples]).to(cap.device, cap.dtype)
    return [pv[i:i + batch_size] for i in range(0, len(pv), batch_size)]


def caption_loss(cap: SplitCaptioner, n_train: int = 64) -> Any:
    """``loss_fn(agent)``: teacher-forced captioning cross-entropy of the full pipeline on training data.

    The server stays in full precision; the gradient flows through the transmitted embedding
    into the agent's weights (for :func:`qlib.mixed.hessian_traces`).
    """
    from qlib.captioning.model import TinyProcessor
    from qlib.captioning.train import MAX_LENGTH

    if not isinstance(cap.processor, TinyProcessor):
        raise ValueError("caption_loss supports the word-level tiny captioners (tiny-git); use sensitivity "
                         "'measured' or 'model' for hub models")
    samples = shapes_dataset("image", "train", n=n_train)
    pv = cap.processor.images([load_image(s.path) for s in samples]).to(cap.device, cap.dtype)
    tok = cap.processor.tokenizer
    ids = tok.encode([s.references[0] for s in samples], MAX_LENGTH).to(cap.device)
    mask = (ids != tok.pad_token_id).long()
    labels = ids.masked_fill(mask == 0, -100)

    def loss_fn(agent: torch.nn.Module) -> torch.Tensor:
        emb = agent(pv).last_hidden_state
        return cap.server(input_ids=ids, attention_mask=mask, pixel_values=emb.unsqueeze(1), labels=labels).loss

    return loss_fn


def sensitivity_table(cap: SplitCaptioner, sensitivity: str = "measured", scheme: str = "uniform",
                      per_channel: bool = False, n_train: int = 64, bit_widths: Sequence[int] = BIT_WIDTHS,
                      n_probes: int = 8, measured: mixed.LayerSensitivity | None = None
                      ) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Names, sizes and the (L, J) sensitivity table of the agent's layers (training data only).

    ``sensitivity`` is ``"measured"``, ``"model"`` or ``"hawq"`` (see the module docstring).
    Pass ``measured`` (a :class:`qlib.mixed.LayerSensitivity` of the same scheme and
    granularity) to reuse a measurement.
    """
    if sensitivity not in SENSITIVITIES:
        raise ValueError(f"sensitivity must be one of {SENSITIVITIES}, got {sensitivity!r}")
    layers = agent_layers(cap)
    names, sizes = list(layers), np.array(list(layers.values()), dtype=np.int64)
    if sensitivity == "model":
        params = dict(cap.agent.named_parameters())
        lam = [mixed.fit_lam(params[n]) for n in names]
        return names, sizes, mixed.modelled_table(lam, sizes, bit_widths)
    if measured is None or measured.scheme != scheme or measured.per_channel != per_channel \
            or tuple(measured.bit_widths) != tuple(bit_widths):
        measured = mixed.layer_sensitivity(cap.agent, training_batches(cap, n_train), bit_widths, scheme,
                                           per_channel, names)
    if sensitivity == "measured":
        return names, sizes, measured.output
    traces = mixed.hessian_traces(caption_loss(cap, n_train), cap.agent, names, n_probes=n_probes)
    return names, sizes, mixed.hawq_table(traces, measured)


def allocate_agent(cap: SplitCaptioner, bit_width: float, allocation: str = "per-layer",
                   table: np.ndarray | None = None, **table_kwargs: Any) -> dict[str, int]:
    """Bit-width of each agent layer: all ``bit_width`` (``"uniform"``), or the exact allocation whose
    parameter-weighted average is at most ``bit_width`` (``"per-layer"``).

    ``table`` (L, len(BIT_WIDTHS)) is a precomputed sensitivity table; otherwise
    :func:`sensitivity_table` is called with ``table_kwargs``.
    """
    if allocation not in ALLOCATIONS:
        raise ValueError(f"allocation must be one of {ALLOCATIONS}, got {allocation!r}")
    layers = agent_layers(cap)
    if allocation == "uniform":
        if float(bit_width) != int(bit_width) or not 1 <= int(bit_width) <= 16:
            raise ValueError(f"bit_width must be an integer in 1…16 for a uniform allocation, got {bit_width!r}")
        return dict.fromkeys(layers, int(bit_width))
    if not 1 <= float(bit_width) <= 16:
        raise ValueError(f"bit_width must be an average in [1, 16] bits, got {bit_width!r}")
    bw = tuple(table_kwargs.get("bit_widths", BIT_WIDTHS))
    if table is None:
        _, _, table = sensitivity_table(cap, **table_kwargs)
    sizes = np.array(list(layers.values()), dtype=np.int64)
    bits = mixed.allocate_bits(table, sizes, float(bit_width) * int(sizes.sum()), bw)
    return {n: int(b) for n, b in zip(layers, bits)}


def caption_with_bits(cap: SplitCaptioner, images: Sequence[np.ndarray], bits: Mapping[str, int] | None,
                      scheme: str = "uniform", per_channel: bool = False, batch_size: int = 50) -> list[str]:
    """Captions through the split pipeline with the agent quantized per layer (``bits=None``: full precision)."""
    agent = cap.agent if bits is None else mixed.quantize_layers(cap.agent, bits, scheme, per_channel)[0].eval()
    out: list[str] = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            pv = cap.processor.images(images[start:start + batch_size]).to(cap.device, cap.dtype)
            if pv.ndim != 4:
                raise ValueError("per-layer allocation supports image captioners (pixel_values (B, C, H, W))")
            ids = cap.generate_from_embedding(agent(pv).last_hidden_state)
            out += cap.processor.batch_decode(ids.cpu(), skip_special_tokens=True)
    return out


def per_sample_scores(runs: Mapping[Any, Sequence[str]], samples: Sequence[Sample]) -> dict[Any, dict[str, np.ndarray]]:
    """Per-image CIDEr-D (pycocoevalcap) and, for generated data, scene correctness (0/1), per run.

    The per-sample columns of :func:`qlib.captioning.metrics.score_samples` (all runs tokenized in
    one Java call; CIDEr-D's document frequencies from the references, as in the corpus score,
    whose value is the mean of the per-image scores).
    """
    from qlib.captioning.metrics import score_samples

    scenes = [s.scene for s in samples] if all(s.scene is not None for s in samples) else None
    scored = score_samples(runs, [s.references for s in samples], scenes, metrics=("CIDEr",))
    out: dict[Any, dict[str, np.ndarray]] = {}
    for key, sc in scored.items():
        out[key] = {"CIDEr": sc.components["CIDEr"][:, 0]}
        if scenes is not None:
            out[key]["scene"] = sc.components["scene_accuracy"][:, 0]
    return out


def bootstrap_mean(values: Sequence[float], n_resamples: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Mean and its 95 % percentile-bootstrap interval over samples (scipy.stats.bootstrap)."""
    from scipy.stats import bootstrap

    x = np.asarray(values, dtype=np.float64)
    if x.size < 2:
        raise ValueError("values must hold at least two samples for an interval")
    if np.all(x == x[0]):
        return float(x[0]), float(x[0]), float(x[0])
    ci = bootstrap((x,), np.mean, n_resamples=n_resamples, method="percentile",
                   rng=np.random.default_rng(seed)).confidence_interval
    return float(x.mean()), float(ci.low), float(ci.high)


def paired_difference(a: Sequence[float], b: Sequence[float], n_resamples: int = 2000, seed: int = 0
                      ) -> tuple[float, float, float]:
    """Mean of ``a - b`` over the same samples and its 95 % paired-bootstrap interval.

    An interval containing 0 is a tie.
    """
    a_, b_ = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a_.shape != b_.shape:
        raise ValueError("a and b must be scores of the same samples")
    return bootstrap_mean(a_ - b_, n_resamples, seed)


def evaluate_mixed(model: str | os.PathLike | None = None, data: str | os.PathLike = "shapes",
                   bit_width: float | None = None, quantizer: str = "uniform", allocation: str = "uniform",
                   per_channel: bool = False, n_samples: int | None = None, device: str = "cpu",
                   dtype: str = "float32", split: str | None = None, image_root: str | os.PathLike | None = None,
                   sensitivity: str = "measured", n_train: int = 64, batch_size: int = 50) -> dict[str, Any]:
    """``evaluate --allocation per-layer|uniform [--per-channel]``: caption and score with a per-layer agent.

    Returns the keys of :func:`qlib.captioning.sweep.evaluate` (``CIDEr`` with ``CIDEr_ci95``
    and ``scene_accuracy`` with ``scene_accuracy_ci95`` as [low, high] bootstrap intervals on
    generated data) plus ``allocation``, ``per_channel``, ``sensitivity``, ``average_bits``
    (parameter-weighted, at most ``bit_width``) and ``bits_per_layer``.
    """
    from qlib.captioning.sweep import load_pixels, load_samples

    if quantizer not in ("uniform", "pot"):
        raise ValueError(f"quantizer must be 'uniform' or 'pot', got {quantizer!r}")
    samples, kind, _ = load_samples(data, n_samples, split, image_root)
    if kind != "image":
        raise ValueError("per-layer allocation supports image data sets (not clips)")
    cap = load_captioner(model or "tiny-git", device=device, dtype=dtype)
    bits = None
    if bit_width is not None:
        table_kwargs = {"sensitivity": sensitivity, "scheme": quantizer, "per_channel": per_channel, "n_train": n_train}
        bits = allocate_agent(cap, bit_width, allocation, **(table_kwargs if allocation == "per-layer" else {}))
    captions = caption_with_bits(cap, load_pixels(samples, kind), bits, quantizer, per_channel, batch_size)
    scores = per_sample_scores({0: captions}, samples)[0]
    out: dict[str, Any] = {}
    for key, name in (("CIDEr", "CIDEr"), ("scene", "scene_accuracy")):
        if key in scores:
            m, lo, hi = bootstrap_mean(scores[key]) if len(samples) > 1 else (float(scores[key][0]),) * 3
            out[name] = m
            out[f"{name}_ci95"] = [lo, hi]
    layers = agent_layers(cap)
    sizes = np.array(list(layers.values()), dtype=np.float64)
    avg = None if bits is None else float(np.dot([bits[n] for n in layers], sizes) / sizes.sum())
    out.update({"n_samples": len(samples), "bit_width": bit_width, "quantizer": quantizer if bits else None,
                "allocation": allocation if bits else None, "per_channel": bool(per_channel) if bits else None,
                "sensitivity": sensitivity if bits and allocation == "per-layer" else None,
                "average_bits": avg, "bits_per_layer": bits, "model": str(model or "tiny-git"), "data": str(data),
                "examples": [{"caption": c, "references": s.references} for c, s in zip(captions[:3], samples[:3])]})
    return out


def compare_allocations(cap: SplitCaptioner, samples: Sequence[Sample],
                        allocations: Mapping[tuple[str, bool, str, int], Mapping[str, int]],
                        n_resamples: int = 2000, seed: int = 0, batch_size: int = 50) -> list[dict[str, Any]]:
    """Caption ``samples`` with every allocation and compare, with paired bootstrap intervals.

    Parameters
    ----------
    allocations : mapping
        ``(scheme, per_channel, label, bit_width) -> bits per layer``; ``label`` ``"uniform"``
        must be present for every (scheme, per_channel, bit_width) that another label uses, as
        the reference of the paired differences.

    Returns
    -------
    list of dict
        One row per allocation (and one ``"full precision"`` row first): ``CIDEr`` and ``scene``
        means with 95 % intervals (``*_lo``, ``*_hi``), ``average_bits``, the paired difference to
        the uniform allocation of the same quantizer, granularity and budget (``dCIDEr``,
        ``dscene`` with intervals) and ``reaches_fp``: True when neither CIDEr nor scene accuracy
        is worse than full precision beyond the interval (the paired interval of the
        difference to full precision reaches 0).
    """
    from qlib.captioning.sweep import load_pixels

    pixels = load_pixels(samples, "image")
    layers = agent_layers(cap)
    sizes = np.array(list(layers.values()), dtype=np.float64)
    runs: dict[Any, list[str]] = {"fp": caption_with_bits(cap, pixels, None, batch_size=batch_size)}
    for key, bits in allocations.items():
        runs[key] = caption_with_bits(cap, pixels, bits, key[0], key[1], batch_size)
    scores = per_sample_scores(runs, samples)
    metrics = [m for m in ("CIDEr", "scene") if m in scores["fp"]]
    rows = []
    for key in runs:
        sc = scores[key]
        row: dict[str, Any] = ({"scheme": None, "per_channel": None, "allocation": "full precision",
                                "bit_width": None, "average_bits": 32.0} if key == "fp" else
                               {"scheme": key[0], "per_channel": key[1], "allocation": key[2], "bit_width": key[3],
                                "average_bits": float(np.dot([allocations[key][n] for n in layers], sizes)
                                                      / sizes.sum())})
        reaches = True
        for m in metrics:
            row[m], row[f"{m}_lo"], row[f"{m}_hi"] = bootstrap_mean(sc[m], n_resamples, seed)
            if key != "fp":
                ref = (key[0], key[1], "uniform", key[3])
                if ref in scores:
                    d = paired_difference(sc[m], scores[ref][m], n_resamples, seed)
                    row[f"d{m}"], row[f"d{m}_lo"], row[f"d{m}_hi"] = d
                reaches &= paired_difference(sc[m], scores["fp"][m], n_resamples, seed)[2] >= 0
        row["reaches_fp"] = bool(reaches) if key != "fp" else True
        rows.append(row)
    return rows


def verdicts(rows: Sequence[Mapping[str, Any]], allocation: str, metric: str = "CIDEr") -> dict[str, int]:
    """Count the rows of :func:`compare_allocations` with this ``allocation`` that are better, tied or worse
    than uniform in ``metric`` ("CIDEr" or "scene"): better/worse only when the paired interval excludes 0."""
    out = {"better": 0, "tie": 0, "worse": 0}
    for r in rows:
        if r.get("allocation") != allocation or f"d{metric}_lo" not in r:
            continue
        lo, hi = r[f"d{metric}_lo"], r[f"d{metric}_hi"]
        out["better" if lo > 0 else "worse" if hi < 0 else "tie"] += 1
    return out


def smallest_reaching_fp(rows: Sequence[Mapping[str, Any]]) -> dict[tuple[str, bool, str], int | None]:
    """Per (quantizer, per_channel, allocation), the smallest target bit-width whose row of
    :func:`compare_allocations` is not worse than full precision (None: none in the grid)."""
    out: dict[tuple[str, bool, str], int | None] = {}
    for r in rows:
        if r.get("bit_width") is None:
            continue
        key = (r["scheme"], r["per_channel"], r["allocation"])
        best = out.get(key)
        if r["reaches_fp"] and (best is None or r["bit_width"] < best):
            out[key] = int(r["bit_width"])
        else:
            out.setdefault(key, None)
    return out
