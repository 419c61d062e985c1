"""Each captioning scorer pinned to a value computed by hand (issue 14.5).

A mutation probe found that reporting BLEU-3 as "BLEU-4" (index 2 instead of 3 of
pycocoevalcap's list) passed every test. Here each metric of :mod:`qlib.captioning.metrics` is
compared with the number worked out by hand from its published definition on a tiny corpus,
so a wrong n-gram order, list index, aggregation (corpus vs mean of sentences), length
penalty or tokenization fails:

- BLEU-4 (Papineni et al. 2002): corpus-level clipped n-gram precisions n = 1..4, geometric
  mean, brevity penalty with the closest reference length (pycocoevalcap's option);
- CIDEr-D (Vedantam et al. 2015, the COCO server's "CIDEr"): tf-idf n-gram vectors n = 1..4
  with document frequencies over the test references, clipped, cosine, averaged over n and
  references, times 10;
- ROUGE-L (Lin 2004, COCO's variant): LCS precision and recall (maximum over references),
  F with β = 1.2, averaged over images;
- METEOR 1.5 (Denkowski and Lavie 2014, ``-l en -norm``): for a candidate whose words all
  match its only reference exactly, P = R = 1, so the score is 1 - γ (chunks/matches)^β with
  the English parameters γ = 0.6, β = 0.2 (a permuted candidate makes several chunks).

The references below are already lower-case and punctuation-free, so the PTB tokenizer leaves
them alone; ``test_tokenization_is_the_ptb_one`` pins the tokenizer separately.
"""

from __future__ import annotations

import math

import pytest

from qlib.captioning import metrics
from qlib.runtime import check_java

try:
    check_java()
    HAVE_JAVA = True
except RuntimeError:  # pragma: no cover - Java is a documented requirement
    HAVE_JAVA = False

needs_java = pytest.mark.skipif(not HAVE_JAVA, reason="pycocoevalcap's tokenizer and METEOR need Java")

# Two images; tokenized captions.
CAND = {0: ["the cat sat on the mat"], 1: ["a dog"]}
REFS = {0: ["the cat sat on a mat"], 1: ["a dog runs"]}


def _bleu_by_hand(order: int) -> float:
    # image 0: 1-grams 5/6 (clipped "the"), 2-grams 3/5, 3-grams 2/4, 4-grams 1/3;
    # image 1: 1-grams 2/2, 2-grams 1/1, 3- and 4-grams 0/0. Corpus BLEU adds the counts.
    matches = [5 + 2, 3 + 1, 2 + 0, 1 + 0]
    totals = [6 + 2, 5 + 1, 4 + 0, 3 + 0]
    p = [m / t for m, t in zip(matches, totals)][:order]
    c, r = 6 + 2, 6 + 3  # candidate length, closest reference lengths
    brevity = math.exp(1 - r / c) if c < r else 1.0
    return math.prod(p) ** (1 / order) * brevity


def test_bleu4_is_corpus_bleu_with_four_gram_orders():
    got = metrics.score_tokenized(CAND, REFS, metrics=["BLEU-4"])["BLEU-4"]
    assert got == pytest.approx(_bleu_by_hand(4), rel=1e-6)
    # the pin tells the orders apart: BLEU-3 (or BLEU-2) reported as BLEU-4 fails here
    assert abs(_bleu_by_hand(3) - _bleu_by_hand(4)) > 0.05 and abs(_bleu_by_hand(2) - _bleu_by_hand(4)) > 0.05
    # and corpus aggregation from a mean of sentence scores
    sent0 = (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25
    assert abs(got - sent0) > 0.01


def test_cider_d_by_hand():
    # Image 0: candidate "a red square", reference "a red circle"; image 1: exact match.
    # ref_len = ln 2 (two images); an n-gram in one image's references has idf ln 2 - ln 1 = ln 2,
    # "a" (in both) has idf 0. Image 0: n = 1: cos({red, square}, {red, circle}) = 1/2;
    # n = 2: cos({a red, red square}, {a red, red circle}) = 1/2; n = 3: 0; n = 4: no 4-grams, 0.
    # Mean over n = 1/4, times 10: 2.5. Image 1: 1, 1, 1, 0 -> 7.5. Corpus: the mean, 5.0.
    cand = {0: ["a red square"], 1: ["a blue square"]}
    refs = {0: ["a red circle"], 1: ["a blue square"]}
    assert metrics.score_tokenized(cand, refs, metrics=["CIDEr"])["CIDEr"] == pytest.approx(5.0, rel=1e-9)
    # n-gram orders 1..4: three-word exact matches score 3/4 * 10 (n = 1..3 would give 10)
    same = {0: ["a red circle"], 1: ["a blue square"]}
    assert metrics.score_tokenized(same, refs, metrics=["CIDEr"])["CIDEr"] == pytest.approx(7.5, rel=1e-9)


def test_rouge_l_by_hand():
    # image 0: LCS "the cat sat on mat" = 5, P = R = 5/6, F = 5/6;
    # image 1: LCS 2, P = 1, R = 2/3, F = (1 + β²) P R / (R + β² P) with β = 1.2.
    b2 = 1.2**2
    f1 = (1 + b2) * 1 * (2 / 3) / (2 / 3 + b2 * 1)
    got = metrics.score_tokenized(CAND, REFS, metrics=["ROUGE-L"])["ROUGE-L"]
    assert got == pytest.approx((5 / 6 + f1) / 2, rel=1e-9)


@needs_java
def test_meteor_by_hand():
    # Every word of the candidate matches exactly (P = R = 1, so Fmean = 1 whatever the content
    # and function-word weights); the score is 1 - γ (chunks / matches)^β, γ = 0.6, β = 0.2.
    ref = {0: ["a red circle on the left"]}
    reversed_ = metrics.score_tokenized({0: ["left the on circle red a"]}, ref, metrics=["METEOR"])["METEOR"]
    assert reversed_ == pytest.approx(1 - 0.6 * (6 / 6) ** 0.2, abs=1e-6)  # 6 chunks of one word
    swapped = metrics.score_tokenized({0: ["on the left a red circle"]}, ref, metrics=["METEOR"])["METEOR"]
    assert swapped == pytest.approx(1 - 0.6 * (2 / 6) ** 0.2, abs=1e-6)  # 2 chunks
    # an identical candidate is one chunk, which METEOR 1.5 does not penalize: 1 exactly
    same = metrics.score_tokenized({0: ["a red circle on the left"]}, ref, metrics=["METEOR"])["METEOR"]
    assert same == pytest.approx(1.0, abs=1e-9)


@needs_java
def test_tokenization_is_the_ptb_one():
    # evaluate_captions tokenizes with the PTB tokenizer: lower case, punctuation dropped.
    raw = metrics.evaluate_captions(["The cat sat on the mat.", "A dog!"],
                                    [["The cat sat on a mat."], ["A dog runs."]], metrics=["BLEU-4", "ROUGE-L"])
    assert raw["BLEU-4"] == pytest.approx(_bleu_by_hand(4), rel=1e-6)
    b2 = 1.2**2
    f1 = (1 + b2) * (2 / 3) / (2 / 3 + b2)
    assert raw["ROUGE-L"] == pytest.approx((5 / 6 + f1) / 2, rel=1e-9)
