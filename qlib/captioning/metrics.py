"""Caption quality with the COCO caption-evaluation scorers (paper Sec. VI-C, eq. 37).

The paper measures inference quality by CIDEr (eq. 37). We use pycocoevalcap, the reference
implementation: its PTB tokenizer (Stanford CoreNLP, needs Java), ``Cider`` — which is
CIDEr-D (clipped n-gram counts, Gaussian length penalty, times 10), with document frequencies
from the test references — and BLEU-4, METEOR and ROUGE-L beside it. The scorers are called
one by one: ``COCOEvalCap.evaluate()`` always runs SPICE, which downloads a Stanford model at
run time and so cannot run offline; SPICE is left out.

All candidate sets of a sweep are tokenized in *one* Java call (:func:`evaluate_many`), since
starting the JVM costs more than tokenizing a few thousand captions.

Uncertainty. Every score is kept per sample (:class:`SampleScores`): each corpus score is a
function of the column sums of per-sample components (CIDEr-D, ROUGE-L: the per-image scores,
whose mean is the corpus score; BLEU-4: the clipped n-gram matches, n-gram counts and lengths
that corpus BLEU adds up; scene accuracies: counts of right facts). A 95 % interval is a
percentile bootstrap over test samples (:func:`scipy.stats.bootstrap`, :data:`N_RESAMPLES`
resamples, seed :data:`BOOTSTRAP_SEED`); a difference between two runs on the same samples is a
*paired* bootstrap (the same resampled samples for both). CIDEr-D's document frequencies come
from the whole reference set and stay fixed in the bootstrap: it resamples the per-image scores,
not the IDF (recomputing the IDF per resample would measure a different metric per resample).
METEOR's corpus score is computed by its Java scorer from aggregated alignments; its interval
resamples the segment scores shifted by the (fixed) offset between their mean and the corpus score.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import math
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

__all__ = ["METRICS", "DEFAULT_METRICS", "SCENE_METRICS", "N_RESAMPLES", "BOOTSTRAP_SEED", "CONFIDENCE",
           "tokenize", "score_tokenized", "SampleScores", "score_samples", "bootstrap_interval", "summarize",
           "paired_difference", "seed_summary", "evaluate_captions", "evaluate_many", "constant_caption",
           "finite_or_none"]

#: Metric names, as the ``--json`` output and the sweep cache spell them.
METRICS = ("CIDEr", "BLEU-4", "METEOR", "ROUGE-L")
#: Scored unless asked otherwise: METEOR starts a Java VM (about 6 s), so it is scored only on request.
DEFAULT_METRICS = ("CIDEr", "BLEU-4", "ROUGE-L")
#: The ground-truth checks of generated data (:func:`qlib.captioning.data.scene_checks`), as result keys.
SCENE_METRICS = ("scene_accuracy", "count_accuracy", "colour_accuracy", "shape_accuracy", "position_accuracy")
#: Bootstrap resamples, seed and confidence of every interval (fixed: intervals reproduce).
N_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
CONFIDENCE = 0.95
_meteor: Any = None


def _check_metrics(metrics: Sequence[str]) -> tuple[str, ...]:
    bad = [m for m in metrics if m not in METRICS]
    if bad or not metrics:
        raise ValueError(f"metrics must be a non-empty subset of {METRICS} (SPICE needs a download), "
                         f"got {list(metrics)}")
    return tuple(metrics)


def tokenize(texts: Mapping[Any, Sequence[str]]) -> dict[Any, list[str]]:
    """PTB-tokenize (lower case, punctuation removed) every caption of ``{key: [captions]}`` in one Java call."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    from qlib.runtime import check_java

    check_java()
    keys = list(texts)
    # PTBTokenizer keys its output by dict key; integers keep it simple and order-safe.
    packed = {i: [{"caption": c} for c in texts[k]] for i, k in enumerate(keys) if len(texts[k])}
    with _quiet_fd2():  # the Java tokenizer prints a timing line on stderr
        out = PTBTokenizer().tokenize(packed) if packed else {}
    return {k: out.get(i, []) for i, k in enumerate(keys)}


@contextlib.contextmanager
def _quiet_fd2() -> Iterator[None]:
    """Point file descriptor 2 at /dev/null for child processes started inside (Jupyter would
    otherwise capture their stderr into the notebook)."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _meteor_scorer() -> Any:
    global _meteor
    if _meteor is None:
        from pycocoevalcap.meteor.meteor import Meteor

        with _quiet_fd2():
            _meteor = Meteor()  # one JVM for the whole process
        atexit.register(_close_meteor)
    return _meteor


def _close_meteor() -> None:
    global _meteor
    if _meteor is not None:
        try:
            _meteor.meteor_p.stdin.close()
            _meteor.meteor_p.kill()
            _meteor.meteor_p.wait(timeout=5)
        except Exception:  # pragma: no cover - best effort at exit
            pass
        _meteor = None


def _bleu_components(res: Mapping[Any, list[str]], gts: Mapping[Any, list[str]], ids: Sequence[Any]) -> np.ndarray:
    """Per sample: test length, closest reference length, n-gram counts and clipped matches (n = 1…4).

    pycocoevalcap's ``BleuScorer`` cooks exactly these counts; corpus BLEU adds them over
    samples, so keeping them per sample lets a bootstrap recompute corpus BLEU on any resample.
    """
    from pycocoevalcap.bleu.bleu_scorer import BleuScorer

    scorer = BleuScorer(n=4)
    for i in ids:
        scorer += (res[i][0], gts[i])
    rows = []
    for comps in scorer.ctest:
        t = comps["testlen"]
        closest = min((abs(r - t), r) for r in comps["reflen"])[1]  # the scorer's "closest" option
        rows.append([t, closest, *comps["guess"], *comps["correct"]])
    return np.asarray(rows, dtype=float)


def _bleu4(s: np.ndarray) -> np.ndarray:
    """Corpus BLEU-4 from summed :func:`_bleu_components` (axis 0), as ``BleuScorer.compute_score``."""
    tiny, small = 1e-15, 1e-9  # the scorer's own guards against empty counts
    precisions = np.prod([(s[6 + k] + tiny) / (s[2 + k] + small) for k in range(4)], axis=0)
    ratio = (s[0] + tiny) / (s[1] + small)
    brevity = np.where(ratio < 1, np.exp(1 - 1 / np.maximum(ratio, tiny)), 1.0)
    return precisions ** 0.25 * brevity


def _ratio(s: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(s[1] > 0, s[0] / np.where(s[1] > 0, s[1], 1), np.nan)


#: How each metric's corpus value follows from the column sums of its per-sample components.
_REDUCE: dict[str, Callable[[np.ndarray], np.ndarray]] = {"BLEU-4": _bleu4}


@dataclass(frozen=True)
class SampleScores:
    """Per-sample components of every metric of one run (one set of captions).

    ``components[name]`` is an ``(n_samples, k)`` array whose column sums determine the corpus
    value: ``[score, 1]`` for CIDEr-D, ROUGE-L, METEOR (segment scores) and the per-caption
    accuracies (mean), ``[right, stated]`` for the per-object accuracies (ratio), the n-gram
    counts for BLEU-4. Summing over a bootstrap resample of rows gives the resample's value.
    """

    components: Mapping[str, np.ndarray]
    corpus: Mapping[str, float]  # values the library computes on the whole set (METEOR's Java score)

    @property
    def n_samples(self) -> int:
        return len(next(iter(self.components.values())))

    def names(self) -> list[str]:
        return list(self.components)

    def value(self, name: str) -> float | None:
        """The corpus value of ``name`` (``None`` if undefined, e.g. no positional fact stated)."""
        if name in self.corpus:
            return self.corpus[name]
        v = float(_reduce(name, self.components[name].sum(axis=0)))
        return None if math.isnan(v) else v


def _reduce(name: str, sums: np.ndarray) -> np.ndarray:
    return _REDUCE.get(name, _ratio)(sums)


def score_tokenized(candidates: Mapping[Any, list[str]], references: Mapping[Any, list[str]],
                    metrics: Sequence[str] = DEFAULT_METRICS) -> dict[str, float]:
    """Corpus scores of tokenized captions (``{id: [one caption]}``) against ``{id: [references]}``.

    CIDEr is CIDEr-D as in the COCO evaluation server (eq. 37 averaged over n = 1…4, clipped,
    length-penalised, times 10).
    """
    scores = _score_components(candidates, references, metrics)
    return {m: float(scores.value(m)) for m in _check_metrics(metrics)}  # type: ignore[arg-type]


def _score_components(candidates: Mapping[Any, list[str]], references: Mapping[Any, list[str]],
                      metrics: Sequence[str]) -> SampleScores:
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    metrics = _check_metrics(metrics)
    if set(candidates) != set(references) or not candidates:
        raise ValueError("candidates and references must have the same non-empty set of ids")
    if any(len(v) != 1 for v in candidates.values()):
        raise ValueError("each id needs exactly one candidate caption")
    ids = list(candidates)
    res = {k: list(candidates[k]) for k in ids}
    gts = {k: list(references[k]) for k in ids}
    comps: dict[str, np.ndarray] = {}
    corpus: dict[str, float] = {}
    ones = np.ones(len(ids))
    if "CIDEr" in metrics:
        # Per-image CIDEr-D with document frequencies from all references (the corpus score is their mean).
        per = np.asarray(Cider().compute_score(gts, res)[1], dtype=float)
        comps["CIDEr"] = np.column_stack([per, ones])
    if "BLEU-4" in metrics:
        comps["BLEU-4"] = _bleu_components(res, gts, ids)
    if "METEOR" in metrics:
        # METEOR's Java side rejects empty hypotheses; an empty caption scores 0 either way.
        safe = {k: [v[0] if v[0].strip() else "empty"] for k, v in res.items()}
        total, per = _meteor_scorer().compute_score(gts, safe)
        per = np.asarray(per, dtype=float)
        # The Java scorer aggregates alignment statistics over the corpus (its fragmentation
        # penalty is not a mean of segment scores) and cannot be rerun per resample at any
        # sensible cost; the segment scores are shifted by the aggregation offset, held fixed,
        # so that they average to the corpus score and resample around it.
        comps["METEOR"] = np.column_stack([per + (float(total) - per.mean()), ones])
        corpus["METEOR"] = float(total)
    if "ROUGE-L" in metrics:
        per = np.asarray(Rouge().compute_score(gts, res)[1], dtype=float)
        comps["ROUGE-L"] = np.column_stack([per, ones])
    ordered = {m: comps[m] for m in metrics}
    return SampleScores(ordered, corpus)


def _scene_components(captions: Sequence[str], scenes: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    from qlib.captioning.data import scene_checks

    rows = scene_checks(captions, scenes)  # type: ignore[arg-type]
    col = {k: np.asarray([r[k] for r in rows], dtype=float) for k in rows[0]}
    ones = np.ones(len(rows))
    return {"scene_accuracy": np.column_stack([col["scene"], ones]),
            "count_accuracy": np.column_stack([col["count"], ones]),
            "colour_accuracy": np.column_stack([col["colour"], col["objects"]]),
            "shape_accuracy": np.column_stack([col["shape"], col["objects"]]),
            "position_accuracy": np.column_stack([col["position_right"], col["position_stated"]])}


def score_samples(runs: Mapping[Any, Sequence[str]], references: Sequence[Sequence[str]],
                  scenes: Sequence[Mapping[str, Any]] | None = None,
                  metrics: Sequence[str] = DEFAULT_METRICS) -> dict[Any, SampleScores]:
    """Per-sample scores of several runs (``{key: captions}``, each aligned with ``references``).

    One tokenizer call for all runs. With ``scenes`` (generated data) the scene accuracies of
    :data:`SCENE_METRICS` are added. Feed the result to :func:`summarize`,
    :func:`paired_difference` or :func:`seed_summary`.
    """
    metrics = _check_metrics(metrics)
    n = len(references)
    if n == 0:
        raise ValueError("references must be non-empty")
    for key, caps in runs.items():
        if len(caps) != n:
            raise ValueError(f"run {key!r} has {len(caps)} captions for {n} reference sets")
    if scenes is not None and len(scenes) != n:
        raise ValueError(f"scenes has {len(scenes)} entries for {n} reference sets")
    texts: dict[Any, list[str]] = {("ref", i): list(r) for i, r in enumerate(references)}
    for key, caps in runs.items():
        for i, c in enumerate(caps):
            texts[("cand", key, i)] = [c if c.strip() else " "]
    tok = tokenize(texts)
    gts = {i: tok[("ref", i)] for i in range(n)}
    out = {}
    for key, caps in runs.items():
        res = {i: tok[("cand", key, i)][:1] or [""] for i in range(n)}
        scores = _score_components(res, gts, metrics)
        if scenes is not None:
            scores = SampleScores({**scores.components, **_scene_components(caps, scenes)}, scores.corpus)
        out[key] = scores
    return out


@functools.lru_cache(maxsize=8)
def _resample_counts(n: int, n_resamples: int, seed: int) -> np.ndarray:
    """How often each of ``n`` samples is drawn in each resample: ``(n_resamples, n)`` counts.

    Written out rather than calling :func:`scipy.stats.bootstrap` per metric: a chapter takes
    intervals of ~10 metrics for ~100 runs and their differences, and with one count matrix
    every corpus value of every resample is a single matrix product (``counts @ components``),
    about 100 times faster than resampling each component array; all metrics and all runs then
    also share exactly the same resamples. ``tests/test_uncertainty.py`` checks it against
    :func:`scipy.stats.bootstrap` (percentile method).
    """
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_resamples).astype(float)


def bootstrap_interval(runs: Sequence[SampleScores], name: str,
                       combine: Callable[[np.ndarray], np.ndarray] | None = None,
                       n_resamples: int = N_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                       confidence: float = CONFIDENCE) -> list[float] | None:
    """Paired percentile-bootstrap interval of a statistic of one or more runs on the same samples.

    Each resample draws the test samples with replacement (the same draw for every run:
    paired), recomputes each run's corpus value of ``name`` from the resampled per-sample
    components, and applies ``combine`` to the stacked values (axis 0 = runs; default: the
    single run's value). The interval is the ``(1 ± confidence) / 2`` percentiles over
    resamples (percentile method: BCa is undefined when a statistic is constant, e.g. the scene
    accuracy of a blind 1-bit agent is 0 on every resample).

    Parameters
    ----------
    runs : sequence of SampleScores
        Runs over the same samples in the same order.
    name : str
        A metric of every run.
    combine : callable, optional
        ``values (n_runs, n_resamples) -> statistic (n_resamples,)``, e.g. ``lambda v: v[0] - v[1]``
        for a paired difference or ``lambda v: v.mean(0)`` for a mean over seeds.
    n_resamples : int
        Resamples (>= 100; default :data:`N_RESAMPLES`).
    seed : int
        Seed of the resampling (default :data:`BOOTSTRAP_SEED`): intervals reproduce exactly.
    confidence : float
        In (0, 1); default 0.95.

    Returns
    -------
    [low, high], or None when the statistic is undefined on the data or on more than 1 % of the
    resamples (a ratio whose denominator, e.g. the number of stated positions, is often 0).
    """
    if not runs:
        raise ValueError("runs must be non-empty")
    if isinstance(n_resamples, bool) or not (isinstance(n_resamples, (int, np.integer)) and n_resamples >= 100):
        raise ValueError(f"n_resamples must be an integer >= 100, got {n_resamples!r}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    if isinstance(seed, bool) or not (isinstance(seed, (int, np.integer)) and seed >= 0):
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    n = runs[0].n_samples
    if any(r.n_samples != n for r in runs):
        raise ValueError("runs must be scored on the same samples (paired bootstrap)")
    if any(name not in r.components for r in runs):
        raise ValueError(f"name must be a metric of every run, got {name!r}")
    combine = combine or (lambda v: v[0])
    full = np.asarray(combine(np.stack([_reduce(name, r.components[name].sum(axis=0)) for r in runs])))
    if not np.all(np.isfinite(full)):
        return None
    counts = _resample_counts(n, int(n_resamples), int(seed))
    values = np.stack([_reduce(name, (counts @ r.components[name]).T) for r in runs])
    stat = np.asarray(combine(values), dtype=float)
    finite = np.isfinite(stat)
    if finite.mean() < 0.99:
        return None  # undefined on many resamples (a rarely stated fact): no honest interval
    stat = stat[finite]  # a ratio over a resample that happens to state no such fact
    alpha = (1 - confidence) / 2
    low, high = np.quantile(stat, [alpha, 1 - alpha])
    return [float(low), float(high)]


def summarize(scores: SampleScores, **kw: Any) -> dict[str, Any]:
    """Every metric of one run with its interval: ``{M: value, M_ci95: [low, high]}`` (None if undefined)."""
    out: dict[str, Any] = {}
    for name in scores.names():
        value = scores.value(name)
        out[name] = value
        out[f"{name}_ci95"] = bootstrap_interval([scores], name, **kw) if value is not None else None
    return out


def paired_difference(a: SampleScores, b: SampleScores, name: str, **kw: Any) -> dict[str, Any]:
    """``a − b`` in metric ``name`` with its paired-bootstrap 95 % interval.

    Returns
    -------
    dict
        ``difference``, ``ci95`` ([low, high]) and ``tie`` (True when the interval contains 0:
        the data cannot tell the two runs apart, and the text must call it a tie).
    """
    va, vb = a.value(name), b.value(name)
    if va is None or vb is None:
        return {"difference": None, "ci95": None, "tie": True}
    ci = bootstrap_interval([a, b], name, combine=lambda v: v[0] - v[1], **kw)
    tie = ci is None or ci[0] <= 0 <= ci[1]
    return {"difference": va - vb, "ci95": ci, "tie": bool(tie)}


def seed_summary(runs: Sequence[SampleScores], name: str, **kw: Any) -> dict[str, Any]:
    """One setting measured on several models (training seeds) over the same samples.

    Returns
    -------
    dict
        ``mean`` over seeds, ``sd`` (sample standard deviation over seeds, 0 for one seed),
        ``min``, ``max``, ``per_seed`` values, and ``ci95``: the paired-bootstrap interval of the
        seed mean over test samples (sampling uncertainty; the spread over seeds is ``sd``).
    """
    vals = [r.value(name) for r in runs]
    if any(v is None for v in vals):
        return {"mean": None, "sd": None, "min": None, "max": None, "per_seed": vals, "ci95": None}
    arr = np.asarray(vals, dtype=float)
    ci = bootstrap_interval(list(runs), name, combine=lambda v: v.mean(axis=0), **kw)
    return {"mean": float(arr.mean()), "sd": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0,
            "min": float(arr.min()), "max": float(arr.max()), "per_seed": [float(v) for v in arr], "ci95": ci}


def evaluate_many(runs: Mapping[Any, Sequence[str]], references: Sequence[Sequence[str]],
                  scenes: Sequence[Mapping[str, Any]] | None = None,
                  metrics: Sequence[str] = DEFAULT_METRICS) -> dict[Any, dict[str, Any]]:
    """Score several runs (``{key: captions}``, each aligned with ``references``) with one tokenizer call.

    Each result holds, for every metric M, its corpus value ``M`` and a 95 % bootstrap interval
    ``M_ci95`` = [low, high] over test samples (:func:`bootstrap_interval`; :data:`N_RESAMPLES`
    resamples, seed :data:`BOOTSTRAP_SEED`). With ``scenes`` (the ground truth of generated data)
    it also holds ``scene_accuracy``, ``count_accuracy``, ``colour_accuracy``, ``shape_accuracy``
    and ``position_accuracy`` from :func:`qlib.captioning.data.scene_accuracy`, with their
    intervals (``position_accuracy`` is ``None`` when no caption states a position).
    """
    scored = score_samples(runs, references, scenes, metrics)
    return {key: summarize(s) for key, s in scored.items()}


def evaluate_captions(captions: Sequence[str], references: Sequence[Sequence[str]],
                      scenes: Sequence[Mapping[str, Any]] | None = None,
                      metrics: Sequence[str] = DEFAULT_METRICS) -> dict[str, Any]:
    """CIDEr, BLEU-4 and ROUGE-L (METEOR on request) of one set of captions, with 95 % intervals
    (plus scene accuracies with ``scenes``); see :func:`evaluate_many`.

    Examples
    --------
    >>> s = evaluate_captions(["a red circle", "a blue square"],
    ...                       [["a red circle"], ["a blue square"]], metrics=["CIDEr"])
    >>> round(s["CIDEr"], 3), [round(x, 3) for x in s["CIDEr_ci95"]]
    (7.5, [7.5, 7.5])
    """
    return evaluate_many({0: captions}, references, scenes, metrics)[0]


def finite_or_none(value: float) -> float | None:
    """JSON-safe number: NaN (e.g. no positional fact stated) becomes ``None``."""
    return None if isinstance(value, float) and math.isnan(value) else value


def constant_caption(references: Sequence[Sequence[str]]) -> str:
    """The most common reference of a data set (ties: alphabetical first): the caption a model
    that ignores its input would do best to emit, the floor any real captioner must clear."""
    from collections import Counter

    counts = Counter(" ".join(r.lower().split()) for refs in references for r in refs)
    if not counts:
        raise ValueError("references must be non-empty")
    best = max(counts.values())
    return min(c for c, k in counts.items() if k == best)
