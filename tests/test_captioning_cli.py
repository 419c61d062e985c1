"""The shipped CI-scale captioner and the command line ``python -m qlib.captioning``."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT
from qlib.captioning.model import CHECKPOINTS


def _run(args, tmp_path, **env):
    environ = {**os.environ, "QBOOK_CACHE": str(tmp_path), **env}
    return subprocess.run([sys.executable, "-m", "qlib.captioning", *args], cwd=ROOT, env=environ,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("name", ["tiny-git", "tiny-git-video"])
def test_shipped_checkpoint_is_small_and_documented(name):
    folder = CHECKPOINTS[name]
    weights = folder / "model.safetensors"
    assert weights.exists() and weights.stat().st_size < 5 * 2**20
    log = json.loads((folder / "train_log.json").read_text())
    vocab = json.loads((folder / "vocab.json").read_text())
    config = json.loads((folder / "config.json").read_text())
    assert config["vocab_size"] == len(vocab) and log["epochs"] >= 1 and log["seed"] == 0


def _json(out):
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_evaluate_json_beats_a_constant_caption(tmp_path):
    from qlib.captioning.data import shapes_dataset
    from qlib.captioning.metrics import constant_caption, evaluate_captions

    result = _json(_run(["evaluate", "--json", "--n-samples", "50"], tmp_path))
    for key in ("CIDEr", "BLEU-4", "ROUGE-L", "scene_accuracy"):
        assert isinstance(result[key], float)
        low, high = result[f"{key}_ci95"]  # 95 % bootstrap interval over the samples
        assert low <= result[key] <= high and high - low < 0.5 * result[key]
    assert "METEOR" not in result  # its JVM only starts when asked for
    assert result["n_samples"] == 50 and result["bit_width"] is None
    samples = shapes_dataset("image", "test", n=50, root=tmp_path / "captioning")
    refs = [s.references for s in samples]
    floor = evaluate_captions([constant_caption(refs)] * 50, refs, metrics=["CIDEr"])["CIDEr"]
    assert result["CIDEr"] > 2 * floor + 0.5  # clearly above what ignoring the image scores
    assert result["scene_accuracy"] > 0.3  # it reads the scene, not only the caption style
    assert len({ex["caption"] for ex in result["examples"]}) > 1  # not one caption for everything


def test_evaluate_one_bit_agent_is_nearly_blind(tmp_path):
    full = _json(_run(["evaluate", "--json", "--n-samples", "50", "--metrics", "CIDEr"], tmp_path))
    low = _json(_run(["evaluate", "--json", "--n-samples", "50", "--metrics", "CIDEr", "--bit-width", "1"], tmp_path))
    assert set(full) >= {"CIDEr", "scene_accuracy"} and "METEOR" not in full
    assert low["bit_width"] == 1 and low["quantizer"] == "uniform"
    assert low["scene_accuracy"] < full["scene_accuracy"] / 2 and low["CIDEr"] < full["CIDEr"]


def test_evaluate_hub_id_offline_fails_in_one_sentence(tmp_path):
    out = _run(["evaluate", "--model", "Salesforce/blip2-opt-2.7b", "--n-samples", "2"], tmp_path,
               HF_HUB_OFFLINE="1")
    assert out.returncode == 2
    err = [ln for ln in out.stderr.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "Salesforce/blip2-opt-2.7b" in err[0] and "Traceback" not in out.stderr


def test_evaluate_rejects_bad_arguments(tmp_path):
    out = _run(["evaluate", "--n-samples", "2", "--bit-width", "0"], tmp_path)
    assert out.returncode == 2 and "bit_width must be an integer in 1…16" in out.stderr
    out = _run(["evaluate", "--n-samples", "2", "--metrics", "CIDEr,SPICE"], tmp_path)
    assert out.returncode == 2 and "metrics must be a non-empty subset" in out.stderr
