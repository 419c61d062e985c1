"""Bootstrap intervals of caption metrics (issue 13, item 1): per-sample scores, paired differences,
spread over seeds. The resampling is checked against scipy.stats.bootstrap."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from qlib.captioning import metrics as M

REFS = [["a red circle in the top left", "a small red circle"], ["a blue square", "one blue square on the right"],
        ["a green triangle", "a large green triangle below"], ["a purple circle", "a purple circle at the bottom"]]
GOOD = ["a red circle in the top left", "a blue square", "a green triangle", "a purple circle"]
BAD = ["a blue square", "a green triangle", "a red circle", "a red circle"]


def _mean_scores(x):
    x = np.asarray(x, dtype=float)
    return M.SampleScores({"m": np.column_stack([x, np.ones_like(x)])}, {})


def test_resampling_agrees_with_scipy_bootstrap():
    x = np.random.default_rng(3).gamma(2.0, 1.0, size=300)
    ours = M.bootstrap_interval([_mean_scores(x)], "m", n_resamples=4000)
    ref = stats.bootstrap((x,), np.mean, n_resamples=4000, method="percentile", rng=np.random.default_rng(1))
    se = x.std(ddof=1) / np.sqrt(len(x))
    # Two Monte Carlo estimates of the same percentiles: equal within a small fraction of the standard error.
    assert ours[0] == pytest.approx(ref.confidence_interval.low, abs=0.15 * se)
    assert ours[1] == pytest.approx(ref.confidence_interval.high, abs=0.15 * se)
    assert ours[0] < x.mean() < ours[1]


def test_interval_width_matches_the_normal_approximation_and_reproduces():
    x = (np.random.default_rng(0).random(400) < 0.8).astype(float)  # an accuracy near 0.8
    ci = M.bootstrap_interval([_mean_scores(x)], "m")
    width = 2 * 1.96 * np.sqrt(x.mean() * (1 - x.mean()) / len(x))
    assert ci[1] - ci[0] == pytest.approx(width, rel=0.15)
    assert M.bootstrap_interval([_mean_scores(x)], "m") == ci  # fixed seed: the same interval twice
    assert M.bootstrap_interval([_mean_scores(x)], "m", seed=1) != ci


def test_constant_statistic_gives_a_point_interval():
    assert M.bootstrap_interval([_mean_scores(np.zeros(50))], "m") == [0.0, 0.0]


def test_corpus_values_are_sums_of_per_sample_components():
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    scored = M.score_samples({"bad": BAD}, REFS)["bad"]
    tok_c = M.tokenize({i: [c] for i, c in enumerate(BAD)})
    tok_r = M.tokenize({i: r for i, r in enumerate(REFS)})
    assert scored.value("BLEU-4") == pytest.approx(Bleu(4).compute_score(tok_r, tok_c, verbose=0)[0][3], abs=1e-12)
    assert scored.value("CIDEr") == pytest.approx(Cider().compute_score(tok_r, tok_c)[0], abs=1e-12)
    assert scored.value("ROUGE-L") == pytest.approx(Rouge().compute_score(tok_r, tok_c)[0], abs=1e-12)
    # CIDEr per sample: document frequencies from the whole reference set, not from the sample alone.
    good = M.score_samples({0: GOOD}, REFS)[0]
    pair = M.score_samples({0: GOOD[:2]}, REFS[:2])[0]
    per = good.components["CIDEr"][:, 0]
    assert per.shape == (4,) and per.mean() == pytest.approx(good.value("CIDEr"))
    assert per[0] != pytest.approx(pair.components["CIDEr"][0, 0])


def test_evaluate_reports_an_interval_for_every_metric():
    scenes = [{"objects": [{"colour": c, "shape": s, "size": "small", "position": "top left"}]}
              for c, s in (("red", "circle"), ("blue", "square"), ("green", "triangle"), ("purple", "circle"))]
    out = M.evaluate_captions(GOOD, REFS, scenes=scenes)
    for name in (*M.DEFAULT_METRICS, *M.SCENE_METRICS[:-1]):
        low, high = out[f"{name}_ci95"]
        assert low <= out[name] + 1e-12 and out[name] <= high + 1e-12, name
    assert "METEOR" not in out  # METEOR (a JVM) only when asked for
    # One caption of four states a position: a third of the resamples state none, no honest interval.
    assert out["position_accuracy"] == 1.0 and out["position_accuracy_ci95"] is None


def test_paired_difference_and_ties():
    scored = M.score_samples({"good": GOOD, "bad": BAD, "same": list(GOOD)}, REFS)
    d = M.paired_difference(scored["good"], scored["bad"], "CIDEr")
    assert d["difference"] > 0 and d["ci95"][0] > 0 and not d["tie"]
    same = M.paired_difference(scored["good"], scored["same"], "CIDEr")
    assert same == {"difference": 0.0, "ci95": [0.0, 0.0], "tie": True}


def test_paired_difference_is_narrower_than_two_separate_intervals():
    rng = np.random.default_rng(0)
    base = rng.normal(5, 1, 200)
    a, b = _mean_scores(base), _mean_scores(base - 0.05 + rng.normal(0, 0.05, 200))  # strongly correlated runs
    d = M.paired_difference(a, b, "m")
    ia, ib = M.bootstrap_interval([a], "m"), M.bootstrap_interval([b], "m")
    assert d["ci95"][1] - d["ci95"][0] < 0.2 * ((ia[1] - ia[0]) + (ib[1] - ib[0]))
    assert not d["tie"] and d["difference"] == pytest.approx(0.05, abs=0.02)


def test_seed_summary():
    runs = [_mean_scores(np.full(30, v) + np.linspace(0, 0.1, 30)) for v in (1.0, 2.0, 4.0)]
    s = M.seed_summary(runs, "m")
    vals = np.array([1.05, 2.05, 4.05])
    assert s["mean"] == pytest.approx(vals.mean()) and s["sd"] == pytest.approx(vals.std(ddof=1))
    assert (s["min"], s["max"]) == pytest.approx((1.05, 4.05))
    assert s["ci95"][0] <= s["mean"] <= s["ci95"][1]
    assert M.seed_summary(runs[:1], "m")["sd"] == 0.0


def test_undefined_ratio_has_no_interval():
    none_stated = M.SampleScores({"position_accuracy": np.zeros((5, 2))}, {})
    assert none_stated.value("position_accuracy") is None
    assert M.bootstrap_interval([none_stated], "position_accuracy") is None
    assert M.summarize(none_stated) == {"position_accuracy": None, "position_accuracy_ci95": None}


def test_bad_input():
    x = _mean_scores(np.ones(10))
    with pytest.raises(ValueError, match="n_resamples"):
        M.bootstrap_interval([x], "m", n_resamples=10)
    with pytest.raises(ValueError, match="confidence"):
        M.bootstrap_interval([x], "m", confidence=1.5)
    with pytest.raises(ValueError, match="same samples"):
        M.bootstrap_interval([x, _mean_scores(np.ones(11))], "m")
    with pytest.raises(ValueError, match="name"):
        M.bootstrap_interval([x], "CIDEr")
    with pytest.raises(ValueError, match="runs"):
        M.bootstrap_interval([], "m")
