"""The sweep cache loses nothing and never serves a result computed under other conditions (issue 14, part 3).

Each test below failed on the single-file cache it replaces: dtype, data and code were not in
the key, a damaged file crashed the sweep or was silently overwritten (taking other
experiments' entries with it), and two runs at once kept only one run's entries.
"""

from __future__ import annotations

import json
import warnings

import pytest

import qlib
from qlib.captioning import sweep as sw
from qlib.captioning.data import generate_shapes, read_coco
from qlib.captioning.model import SplitCaptioner, TinyProcessor, WordTokenizer, load_captioner, tiny_git_config
from tests.helpers import same_sweep as _same

SETTINGS = [(None, "uniform"), (2, "uniform"), (4, "pot")]
KW = {"metrics": ["CIDEr"], "progress": False}


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    return read_coco(generate_shapes(tmp_path_factory.mktemp("shapes"), 6, seed=5))


def _captioner(samples):
    from transformers import GitForCausalLM

    qlib.setup(seed=0)
    tok = WordTokenizer.from_captions([r for s in samples for r in s.references])
    return SplitCaptioner(GitForCausalLM(tiny_git_config(len(tok))), TinyProcessor(tok), {"max_new_tokens": 6},
                          name="random-tiny-git")


@pytest.fixture
def calls(monkeypatch):
    """Settings actually captioned (not served from the cache)."""
    seen = []
    real = SplitCaptioner.caption

    def counting(self, images, bit_width=None, scheme="uniform", batch_size=50):
        seen.append((bit_width, scheme))
        return real(self, images, bit_width=bit_width, scheme=scheme, batch_size=batch_size)

    monkeypatch.setattr(SplitCaptioner, "caption", counting)
    return seen




def test_dtype_is_in_the_key(samples, tmp_path, calls):
    cache = tmp_path / "cache"
    fp32 = sw.sweep(load_captioner("tiny-git", dtype="float32"), samples, SETTINGS[:2], cache=cache, **KW)
    assert len(calls) == 2
    calls.clear()
    bf16 = sw.sweep(load_captioner("tiny-git", dtype="bfloat16"), samples, SETTINGS[:2], cache=cache, **KW)
    assert calls == SETTINGS[:2]  # the float32 results are not served for bfloat16
    fresh = sw.sweep(load_captioner("tiny-git", dtype="bfloat16"), samples, SETTINGS[:2], cache=None, **KW)
    assert _same(bf16, fresh) and set(fp32) == set(bf16)
    calls.clear()
    sw.sweep(load_captioner("tiny-git", dtype="float32"), samples, SETTINGS[:2], cache=cache, **KW)
    assert calls == []  # both dtypes stay cached side by side


def test_key_holds_everything_that_changes_a_result(samples):
    cap = _captioner(samples)
    key = sw._model_key(cap)
    assert key["dtype"] == "float32" and key["device"] == "cpu" and key["generate"]["max_new_tokens"] == 6
    assert {"caption_code", "sources", "qlib", "torch", "transformers"} <= set(key["code"])
    assert key["model"].startswith("random-tiny-git#")  # in-memory weights: a hash of the parameters
    other = _captioner(samples)
    with __import__("torch").no_grad():
        next(other.agent.parameters()).add_(1e-3)
    assert sw._model_key(other)["model"] != key["model"]
    assert sw.model_fingerprint("tiny-git").startswith("tiny-git@")  # shipped: hash of its weight files


def test_code_version_and_data_are_in_the_key(samples, tmp_path, calls, monkeypatch):
    cache = tmp_path / "cache"
    sw.sweep(_captioner(samples), samples, SETTINGS[:1], cache=cache, **KW)
    calls.clear()
    monkeypatch.setattr(sw, "CAPTION_CODE_VERSION", sw.CAPTION_CODE_VERSION + 1)
    sw.sweep(_captioner(samples), samples, SETTINGS[:1], cache=cache, **KW)
    assert calls == SETTINGS[:1]  # new captioning code: recaptioned
    calls.clear()
    changed = samples[0].path.with_name("changed.png")
    changed.write_bytes(samples[1].path.read_bytes())
    edited = [samples[0].__class__(samples[0].id, changed, samples[0].references, samples[0].scene)] + samples[1:]
    sw.sweep(_captioner(samples), edited, SETTINGS[:1], cache=cache, **KW)
    assert calls == SETTINGS[:1]  # same ids and references, other image bytes: recaptioned


def test_a_scoring_change_rescores_without_recaptioning(samples, tmp_path, calls, monkeypatch):
    cache = tmp_path / "cache"
    first = sw.sweep(_captioner(samples), samples, SETTINGS[:1], cache=cache, **KW)
    calls.clear()
    real = sw.summarize

    def with_interval(scores, *args, **kwargs):  # as a scorer that adds bootstrap intervals would
        v = real(scores, *args, **kwargs)
        return {**v, "CIDEr_ci95": (v["CIDEr"] - 0.1, v["CIDEr"] + 0.1)}

    monkeypatch.setattr(sw, "summarize", with_interval)
    monkeypatch.setattr(sw, "_score_version", lambda: {"sources": "new scorer"})
    second = sw.sweep(_captioner(samples), samples, SETTINGS[:1], cache=cache, **KW)
    assert calls == []  # captions reused
    m = second[SETTINGS[0]]["metrics"]
    assert m["CIDEr"] == first[SETTINGS[0]]["metrics"]["CIDEr"] and m["CIDEr_ci95"] == [m["CIDEr"] - 0.1,
                                                                                          m["CIDEr"] + 0.1]
    again = sw.sweep(_captioner(samples), samples, SETTINGS[:1], cache=cache, **KW)
    assert _same(again, second)  # every key of the scorer passes through the cache unchanged


@pytest.mark.parametrize("damage", [b"[]", b'"hello"', b"\xff\xfe{not utf-8", "truncate"])
def test_a_damaged_single_file_is_moved_aside_not_overwritten(samples, tmp_path, damage):
    """An older single-file cache (or any file) where the cache folder belongs."""
    cache = tmp_path / "sweeps.json"
    original = json.dumps({"other experiment": {"captions": ["a red circle"]}}).encode()
    cache.write_bytes(original[:-10] if damage == "truncate" else damage)
    before = cache.read_bytes()
    with pytest.warns(RuntimeWarning, match="moved aside"):
        out = sw.sweep(_captioner(samples), samples, SETTINGS[:1], cache=cache, **KW)
    assert "CIDEr" in out[SETTINGS[0]]["metrics"]
    aside = list(tmp_path.glob("sweeps.json.damaged-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == before  # kept byte for byte


@pytest.mark.parametrize("damage", [b"[]", b'"hello"', b"\xff\xfe{not utf-8", "truncate", b"{}"])
def test_a_damaged_entry_costs_only_itself(samples, tmp_path, calls, damage):
    cache = tmp_path / "cache"
    sw.sweep(_captioner(samples), samples, SETTINGS, cache=cache, **KW)  # experiment A
    sw.sweep(_captioner(samples), samples[:3], SETTINGS, cache=cache, **KW)  # experiment B
    files = {p.name: p.read_bytes() for p in cache.iterdir()}
    assert len(files) == 18  # captions, summaries and per-sample scores of 2 experiments x 3 settings
    reference = sw.sweep(_captioner(samples), samples, SETTINGS, cache=None, **KW)
    key = sw._caption_key(sw._model_key(_captioner(samples)), "data", sw.data_fingerprint(samples), len(samples),
                          SETTINGS[1], 50)
    victim = cache / f"captions-{sw._digest(key)}.json"
    assert victim.name in files
    victim.write_bytes(victim.read_bytes()[:-10] if damage == "truncate" else damage)
    damaged = victim.read_bytes()
    calls.clear()
    with pytest.warns(RuntimeWarning, match="moved aside"):
        again = sw.sweep(_captioner(samples), samples, SETTINGS, cache=cache, **KW)
    assert calls == [SETTINGS[1]]  # only the damaged entry is recomputed
    assert _same(again, reference)
    assert [p.read_bytes() for p in cache.glob("*.damaged-*")] == [damaged]
    for name, data in files.items():  # every other entry, of both experiments, is untouched
        assert (cache / name).read_bytes() == data


def test_two_runs_at_once_keep_both_runs_entries(samples, tmp_path, monkeypatch):
    """Run B starts and finishes while run A is captioning (as two processes would interleave)."""
    cache = tmp_path / "cache"
    real = SplitCaptioner.caption
    nested = []

    def interleaved(self, *args, **kwargs):
        if not nested:
            nested.append(True)
            sw.sweep(_captioner(samples), samples[:3], SETTINGS, cache=cache, **KW)  # run B, n = 3
        return real(self, *args, **kwargs)

    monkeypatch.setattr(SplitCaptioner, "caption", interleaved)
    sw.sweep(_captioner(samples), samples, SETTINGS, cache=cache, **KW)  # run A, n = 6
    monkeypatch.setattr(SplitCaptioner, "caption", lambda *a, **k: pytest.fail("recaptioned"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and nothing was damaged
        for subset in (samples, samples[:3]):
            out = sw.sweep(_captioner(samples), subset, SETTINGS, cache=cache, **KW)
            assert len(out) == 3
    assert len(list(cache.glob("*.json"))) == 18
