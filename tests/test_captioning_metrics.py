"""CIDEr-D and friends through pycocoevalcap (paper eq. 37), checked on hand-computed cases."""

from __future__ import annotations

import math

import pytest

from qlib.captioning.metrics import METRICS, evaluate_captions, evaluate_many

REFS = [["red circle", "red circle"], ["blue square", "blue square"]]


def test_cider_matches_a_hand_computed_case():
    # Two images, so every word and bigram has document frequency 1 of 2: idf = ln 2 for all.
    # Exact match: cosine 1 for n = 1, 2 and an empty vector (0) for n = 3, 4, so
    # CIDEr-D = 10 * (1 + 1 + 0 + 0) / 4 = 5 per image (no length penalty: same length).
    s = evaluate_captions(["red circle", "blue square"], REFS, metrics=["CIDEr"])
    assert s["CIDEr"] == pytest.approx(5.0)
    # "red square" vs "red circle": unigram cosine (ln2)^2 / (sqrt2 ln2)^2 = 1/2, bigrams 0:
    # 10 * 0.5 / 4 = 1.25 on image 1; 5 on image 2 -> mean 3.125.
    s = evaluate_captions(["red square", "blue square"], REFS, metrics=["CIDEr"])
    assert s["CIDEr"] == pytest.approx((1.25 + 5.0) / 2)
    # Swapped captions share nothing with their references.
    assert evaluate_captions(["blue square", "red circle"], REFS, metrics=["CIDEr"])["CIDEr"] == pytest.approx(0.0)


def test_tokenizer_lowercases_and_drops_punctuation():
    a = evaluate_captions(["Red circle.", "BLUE square!"], REFS, metrics=["CIDEr"])
    assert a["CIDEr"] == pytest.approx(5.0)


def test_all_metrics_and_batched_scoring_agree():
    refs = [["a red circle in the top left", "a small red circle"], ["a blue square", "one blue square on the right"],
            ["a green triangle", "a large green triangle below"]]
    runs = {"good": ["a red circle in the top left", "a blue square", "a green triangle"],
            "bad": ["a blue square", "a green triangle", "a red circle"]}
    many = evaluate_many(runs, refs, metrics=METRICS)
    assert {k for k in many["good"] if not k.endswith("_ci95")} == set(METRICS)
    one = evaluate_captions(runs["bad"], refs, metrics=METRICS)  # scored alone (own tokenizer call), same numbers
    assert {k: v for k, v in one.items() if not k.endswith("_ci95")} == pytest.approx(
        {k: v for k, v in many["bad"].items() if not k.endswith("_ci95")})
    for m in METRICS:
        assert many["good"][m] > many["bad"][m]
        assert 0 <= many["bad"][m] and math.isfinite(many["good"][m])


def test_scene_accuracies_are_added_with_scenes():
    scenes = [{"objects": [{"colour": "red", "shape": "circle", "size": "small", "position": "top left"}]},
              {"objects": [{"colour": "blue", "shape": "square", "size": "large", "position": "top right"}]}]
    s = evaluate_captions(["a red circle in the top left", "a red circle"], REFS, scenes=scenes, metrics=["CIDEr"])
    assert s["scene_accuracy"] == 0.5 and s["position_accuracy"] == 1.0


def test_bad_input():
    with pytest.raises(ValueError, match="SPICE"):
        evaluate_captions(["a"], [["a"]], metrics=["SPICE"])
    with pytest.raises(ValueError, match="captions"):
        evaluate_captions(["a", "b"], [["a"]])
