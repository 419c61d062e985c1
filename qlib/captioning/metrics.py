"""Caption quality with the COCO caption-evaluation scorers (paper Sec. VI-C, eq. 37).

The paper measures inference quality by CIDEr (eq. 37). We use pycocoevalcap, the reference
implementation: its PTB tokenizer (Stanford CoreNLP, needs Java), ``Cider`` — which is
CIDEr-D (clipped n-gram counts, Gaussian length penalty, times 10), with document frequencies
from the test references — and BLEU-4, METEOR and ROUGE-L beside it. The scorers are called
one by one: ``COCOEvalCap.evaluate()`` always runs SPICE, which downloads a Stanford model at
run time and so cannot run offline; SPICE is left out.

All candidate sets of a sweep are tokenized in *one* Java call (:func:`evaluate_many`), since
starting the JVM costs more than tokenizing a few thousand captions.
"""

from __future__ import annotations

import atexit
import contextlib
import math
import os
import sys
from typing import Any, Iterator, Mapping, Sequence

__all__ = ["METRICS", "tokenize", "score_tokenized", "evaluate_captions", "evaluate_many", "constant_caption",
           "finite_or_none"]

#: Metric names, as the ``--json`` output and the sweep cache spell them.
METRICS = ("CIDEr", "BLEU-4", "METEOR", "ROUGE-L")
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


def score_tokenized(candidates: Mapping[Any, list[str]], references: Mapping[Any, list[str]],
                    metrics: Sequence[str] = METRICS) -> dict[str, float]:
    """Corpus scores of tokenized captions (``{id: [one caption]}``) against ``{id: [references]}``.

    CIDEr is CIDEr-D as in the COCO evaluation server (eq. 37 averaged over n = 1…4, clipped,
    length-penalised, times 10).
    """
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    metrics = _check_metrics(metrics)
    if set(candidates) != set(references) or not candidates:
        raise ValueError("candidates and references must have the same non-empty set of ids")
    if any(len(v) != 1 for v in candidates.values()):
        raise ValueError("each id needs exactly one candidate caption")
    res = {k: list(v) for k, v in candidates.items()}
    gts = {k: list(references[k]) for k in candidates}
    out: dict[str, float] = {}
    if "CIDEr" in metrics:
        out["CIDEr"] = float(Cider().compute_score(gts, res)[0])
    if "BLEU-4" in metrics:
        out["BLEU-4"] = float(Bleu(4).compute_score(gts, res, verbose=0)[0][3])
    if "METEOR" in metrics:
        # METEOR's Java side rejects empty hypotheses; an empty caption scores 0 either way.
        safe = {k: [v[0] if v[0].strip() else "empty"] for k, v in res.items()}
        out["METEOR"] = float(_meteor_scorer().compute_score(gts, safe)[0])
    if "ROUGE-L" in metrics:
        out["ROUGE-L"] = float(Rouge().compute_score(gts, res)[0])
    return out


def evaluate_many(runs: Mapping[Any, Sequence[str]], references: Sequence[Sequence[str]],
                  scenes: Sequence[Mapping[str, Any]] | None = None,
                  metrics: Sequence[str] = METRICS) -> dict[Any, dict[str, float]]:
    """Score several runs (``{key: captions}``, each aligned with ``references``) with one tokenizer call.

    With ``scenes`` (the ground truth of generated data) the result also holds
    ``scene_accuracy``, ``count_accuracy``, ``colour_accuracy``, ``shape_accuracy`` and
    ``position_accuracy`` from :func:`qlib.captioning.data.scene_accuracy` (``position_accuracy`` is
    ``None`` when no caption states a position).
    """
    from qlib.captioning.data import scene_accuracy

    metrics = _check_metrics(metrics)
    n = len(references)
    if n == 0:
        raise ValueError("references must be non-empty")
    for key, caps in runs.items():
        if len(caps) != n:
            raise ValueError(f"run {key!r} has {len(caps)} captions for {n} reference sets")
    texts: dict[Any, list[str]] = {("ref", i): list(r) for i, r in enumerate(references)}
    for key, caps in runs.items():
        for i, c in enumerate(caps):
            texts[("cand", key, i)] = [c if c.strip() else " "]
    tok = tokenize(texts)
    gts = {i: tok[("ref", i)] for i in range(n)}
    results = {}
    for key, caps in runs.items():
        res = {i: tok[("cand", key, i)][:1] or [""] for i in range(n)}
        scores = score_tokenized(res, gts, metrics)
        if scenes is not None:
            acc = scene_accuracy(caps, scenes)
            scores.update({f"{k}_accuracy": v for k, v in acc.items()})
        results[key] = scores
    return results


def evaluate_captions(captions: Sequence[str], references: Sequence[Sequence[str]],
                      scenes: Sequence[Mapping[str, Any]] | None = None,
                      metrics: Sequence[str] = METRICS) -> dict[str, float]:
    """CIDEr, BLEU-4, METEOR and ROUGE-L of one set of captions (plus scene accuracies with ``scenes``).

    Examples
    --------
    >>> s = evaluate_captions(["a red circle", "a blue square"],
    ...                       [["a red circle"], ["a blue square"]], metrics=["CIDEr"])
    >>> round(s["CIDEr"], 3)
    7.5
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
