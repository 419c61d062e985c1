"""Cached, resumable sweeps over bit-widths and quantizers (paper Sec. VI-C)."""

from __future__ import annotations

import json

import pytest

import qlib
from qlib.captioning import sweep as sw
from qlib.captioning.data import generate_shapes, read_coco
from qlib.captioning.model import SplitCaptioner, TinyProcessor, WordTokenizer, tiny_git_config

from tests.helpers import same_sweep as _same


SETTINGS = [(None, "uniform"), (2, "uniform"), (2, "pot"), (4, "uniform"), (4, "pot")]


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    out = tmp_path_factory.mktemp("shapes")
    return read_coco(generate_shapes(out, 6, seed=5))


def _captioner(samples):
    from transformers import GitForCausalLM

    qlib.setup(seed=0)
    tok = WordTokenizer.from_captions([r for s in samples for r in s.references])
    return SplitCaptioner(GitForCausalLM(tiny_git_config(len(tok))), TinyProcessor(tok), {"max_new_tokens": 6},
                          name="random-tiny-git")


def test_an_interrupted_sweep_resumes_where_it_stopped(samples, tmp_path, monkeypatch):
    cache = tmp_path / "sweeps"
    reference = sw.sweep(_captioner(samples), samples, SETTINGS, cache=None, metrics=["CIDEr"], progress=False)

    captioner = _captioner(samples)
    real = SplitCaptioner.caption
    calls = []

    def interrupted(self, *args, **kwargs):
        if len(calls) == 3:
            raise KeyboardInterrupt  # as if the reader pressed Ctrl-C during the fourth setting
        calls.append(kwargs.get("bit_width"))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(SplitCaptioner, "caption", interrupted)
    with pytest.raises(KeyboardInterrupt):
        sw.sweep(captioner, samples, SETTINGS, cache=cache, metrics=["CIDEr"], progress=False)
    stored = [json.loads(p.read_text()) for p in cache.iterdir()]  # complete JSON files: the writes are atomic
    assert len(stored) == 3 and all(set(v) == {"key", "captions"} for v in stored)
    assert not list(cache.glob("*.tmp"))

    calls.clear()
    monkeypatch.setattr(SplitCaptioner, "caption", lambda self, *a, **k: calls.append(k.get("bit_width"))
                        or real(self, *a, **k))
    resumed = sw.sweep(captioner, samples, SETTINGS, cache=cache, metrics=["CIDEr"], progress=False)
    assert calls == [4, 4]  # only the two settings that were never captioned
    assert _same(resumed, reference)
    calls.clear()
    again = sw.sweep(captioner, samples, SETTINGS, cache=cache, metrics=["CIDEr"], progress=False)
    assert calls == [] and _same(again, reference)  # a rerun only reads the cache


def test_per_sample_scores_come_with_the_sweep_and_survive_the_cache(samples, tmp_path, monkeypatch):
    """Chapters take their intervals from the sweep's per-sample scores instead of scoring the
    captions again: they equal ``metrics.score_samples`` of the same captions, bit for bit, fresh
    or read back from the cache; a cache without them rescores but does not recaption."""
    import numpy as np

    from qlib.captioning import metrics

    cache, chosen = tmp_path / "c", ["CIDEr", "BLEU-4"]
    fresh = sw.sweep(_captioner(samples), samples, SETTINGS[:2], cache=cache, metrics=chosen, progress=False)
    cached = sw.sweep(_captioner(samples), samples, SETTINGS[:2], cache=cache, metrics=chosen, progress=False)
    direct = metrics.score_samples({s: fresh[s]["captions"] for s in SETTINGS[:2]}, [s.references for s in samples],
                                   [s.scene for s in samples], chosen)
    for s in SETTINGS[:2]:
        for got in (fresh[s]["samples"], cached[s]["samples"]):
            assert got.names() == direct[s].names() and "scene_accuracy" in got.names()
            for name in got.names():
                np.testing.assert_array_equal(got.components[name], direct[s].components[name])
        assert metrics.summarize(direct[s])["CIDEr"] == fresh[s]["metrics"]["CIDEr"] == cached[s]["metrics"]["CIDEr"]
    for f in cache.glob("samples-*.json"):
        f.unlink()  # a cache written before per-sample scores were kept
    monkeypatch.setattr(SplitCaptioner, "caption", lambda *a, **k: pytest.fail("recaptioned"))
    again = sw.sweep(_captioner(samples), samples, SETTINGS[:2], cache=cache, metrics=chosen, progress=False)
    assert _same(again, fresh) and len(list(cache.glob("samples-*.json"))) == 2


def test_settings_with_one_quantized_agent_are_captioned_and_scored_once(tmp_path, monkeypatch):
    """The shipped captioner's PoT agents from 6 bits on are equal bit for bit: captioned once, scored once,
    and every setting still gets its own (equal) result and cache entries."""
    from qlib.captioning import metrics
    from qlib.captioning.model import load_captioner

    cap = load_captioner("tiny-git")
    same = [(6, "pot"), (9, "pot"), (16, "pot")]
    assert len({sw._module_hash(cap.agent_for(*s)) for s in same}) == 1
    assert sw._module_hash(cap.agent_for(5, "pot")) != sw._module_hash(cap.agent_for(6, "pot"))
    samples, kind, data_id = sw.load_samples("shapes", 8)
    captioned, scored = [], []
    real_caption, real_score = SplitCaptioner.caption, sw.score_samples
    monkeypatch.setattr(SplitCaptioner, "caption", lambda self, *a, **k: captioned.append(k["bit_width"])
                        or real_caption(self, *a, **k))
    monkeypatch.setattr(sw, "score_samples",
                        lambda runs, *a, **k: scored.append(len(runs)) or real_score(runs, *a, **k))
    settings = [(5, "pot")] + same
    out = sw.sweep(cap, samples, settings, kind, data_id, cache=tmp_path, metrics=["CIDEr"], progress=False)
    assert captioned == [5, 6]  # one agent for 6, 9 and 16 bits
    assert scored == [len({tuple(r["captions"]) for r in out.values()})]  # one tokenizer call, distinct captions
    fresh = {s: sw.sweep(cap, samples, [s], kind, data_id, cache=None, metrics=["CIDEr"], progress=False)[s]
             for s in settings}  # each setting alone, captioned from scratch
    assert _same(out, fresh)
    assert len(list(tmp_path.glob("captions-*.json"))) == 4 and len(list(tmp_path.glob("samples-*.json"))) == 4
    assert metrics.summarize(out[(16, "pot")]["samples"])["CIDEr"] == out[(16, "pot")]["metrics"]["CIDEr"]


def test_cache_keys_separate_models_and_sample_counts(samples, tmp_path):
    cache = tmp_path / "c"
    a = sw.sweep(_captioner(samples), samples, SETTINGS[:1], cache=cache, metrics=["CIDEr"], progress=False)
    sw.sweep(_captioner(samples), samples[:3], SETTINGS[:1], cache=cache, metrics=["CIDEr"], progress=False,
             model_id="another")
    assert len(list(cache.glob("captions-*.json"))) == 2
    assert a[SETTINGS[0]]["metrics"]["scene_accuracy"] >= 0


def test_a_damaged_cache_is_rebuilt_not_fatal(samples, tmp_path):
    cache = tmp_path / "c.json"
    cache.write_text("{not json")
    with pytest.warns(RuntimeWarning, match="moved aside"):
        out = sw.sweep(_captioner(samples), samples, SETTINGS[:1], cache=cache, metrics=["CIDEr"], progress=False)
    assert "CIDEr" in out[SETTINGS[0]]["metrics"]


def test_bad_settings(samples):
    with pytest.raises(ValueError, match="quantizer"):
        sw.sweep(_captioner(samples), samples, [(4, "log")], cache=None)
    with pytest.raises(ValueError, match="bit_width"):
        sw.sweep(_captioner(samples), samples, [(0, "pot")], cache=None)
    with pytest.raises(ValueError, match="n_samples"):
        sw.load_samples("shapes", n_samples=0)
    with pytest.raises(ValueError, match="data must be"):
        sw.load_samples("no-such-data")
    with pytest.raises(ValueError, match="workers"):
        sw.sweep(_captioner(samples), samples, [(4, "pot")], cache=None, workers=-1)
    with pytest.raises(ValueError, match="settings must not repeat"):
        sw.sweep(_captioner(samples), samples, [(4, "pot"), (4, "pot")], cache=None)


def test_parse_settings():
    assert sw.parse_settings("2,8", "uniform,pot") == [(2, "uniform"), (8, "uniform"), (2, "pot"), (8, "pot")]
    assert sw.parse_settings("fp,4", "pot") == [(None, "pot"), (4, "pot")]
    with pytest.raises(ValueError, match="bit_width must be an integer in 1…16"):
        sw.parse_settings("2,x", "pot")
    with pytest.raises(ValueError, match="bit_width must be an integer in 1…16"):
        sw.parse_settings("0", "pot")
    with pytest.raises(ValueError, match="quantizer must be"):
        sw.parse_settings("2", "uniform,log")


def test_sweep_command_prints_one_evaluate_record_per_setting(tmp_path):
    import os
    import subprocess
    import sys

    from tests.helpers import ROOT

    env = {**os.environ, "QBOOK_CACHE": str(tmp_path)}
    args = [sys.executable, "-m", "qlib.captioning", "sweep", "--bit-widths", "2", "--quantizers", "uniform,pot",
            "--n-samples", "6", "--metrics", "CIDEr", "--json", "--no-progress"]
    out = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [json.loads(ln) for ln in out.stdout.splitlines()]
    assert [(r["bit_width"], r["quantizer"]) for r in lines] == [(2, "uniform"), (2, "pot")]
    one = sw.evaluate(bit_width=2, quantizer="pot", n_samples=6, metrics=["CIDEr"])
    assert list(lines[1]) == list(one) and lines[1] == json.loads(json.dumps(one))  # evaluate --json's record
    bad = subprocess.run(args[:5] + ["0,2"] + args[6:], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=600)
    assert bad.returncode == 2 and "bit_width must be an integer in 1…16" in bad.stderr and not bad.stdout
