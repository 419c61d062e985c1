"""The activation-bits hook of the split captioner: the transmitted embedding is quantized per
sample (per tensor) or per token, at the bit-width asked, and nothing else changes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import qlib
from qlib.captioning.model import SplitCaptioner, TinyProcessor, WordTokenizer, quantize_embedding, tiny_git_config

WORDS = "a an red blue green circle square triangle in the top left right bottom".split()


@pytest.fixture(scope="module")
def captioner():
    from transformers import GitForCausalLM

    qlib.setup(seed=0)
    tok = WordTokenizer(WORDS)
    model = GitForCausalLM(tiny_git_config(len(tok), patch_size=16))
    return SplitCaptioner(model, TinyProcessor(tok), {"max_new_tokens": 6})


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(1)
    return [rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8) for _ in range(4)]


def _levels(x: torch.Tensor) -> int:
    return int(torch.unique(x.abs()).numel())


@pytest.mark.parametrize("scheme", ["uniform", "pot"])
@pytest.mark.parametrize("bits", [2, 3, 4])
def test_levels_per_tensor_and_per_token(bits, scheme):
    gen = torch.Generator().manual_seed(0)
    emb = torch.randn(3, 5, 8, generator=gen)
    emb[1] *= 100.0  # a loud sample must not change another sample's scale
    q = quantize_embedding(emb, bits, scheme)
    for i in range(3):
        assert _levels(q[i]) <= 2 ** (bits - 1)  # per sample: at most 2^(b-1) magnitudes
    assert torch.equal(quantize_embedding(emb[:1], bits, scheme), q[:1])
    qt = quantize_embedding(emb, bits, scheme, per_token=True)
    assert qt.shape == emb.shape
    for row in qt.reshape(-1, 8):
        assert _levels(row) <= 2 ** (bits - 1)
    # Per token, every token's largest magnitude is kept exactly (uniform top level = M).
    if scheme == "uniform":
        assert torch.allclose(qt.abs().amax(-1), emb.abs().amax(-1))
    # Finer scales: per-token error is no larger than per-tensor error on this data.
    assert (qt - emb).abs().sum() <= (q - emb).abs().sum()


def test_sixteen_bits_is_close_and_shapes_for_clips():
    gen = torch.Generator().manual_seed(0)
    clip = torch.randn(2, 4, 5, 8, generator=gen)
    q = quantize_embedding(clip, 16)
    assert q.shape == clip.shape
    assert torch.allclose(q, clip, atol=clip.abs().max().item() / 2**14)


def test_caption_hook_default_is_unchanged_and_bits_change_the_embedding(captioner, images, monkeypatch):
    base = captioner.caption(images)
    assert captioner.caption(images, activation_bits=None) == base
    seen = []
    orig = captioner.generate_from_embedding
    monkeypatch.setattr(captioner, "generate_from_embedding", lambda e, **k: (seen.append(e), orig(e, **k))[1])
    captioner.caption(images, activation_bits=2, activation_per_token=True)
    full = captioner.encode(captioner.processor.images(images))
    assert torch.equal(seen[-1], quantize_embedding(full, 2, "uniform", True))
    assert not torch.equal(seen[-1], full)


@pytest.mark.parametrize("kwargs, name", [({"activation_bits": 0}, "activation_bits"),
                                           ({"activation_bits": 17}, "activation_bits"),
                                           ({"activation_bits": 2.5}, "activation_bits"),
                                           ({"activation_bits": 4, "activation_scheme": "log"}, "activation_scheme"),
                                           ({"activation_bits": 4, "activation_per_token": "yes"},
                                            "activation_per_token")])
def test_bad_activation_arguments_name_the_parameter(captioner, images, kwargs, name):
    with pytest.raises(ValueError, match=name):
        captioner.caption(images, **kwargs)


def test_per_sample_cider_averages_to_the_corpus_score_and_intervals_cover_the_mean():
    from qlib.captioning import activations
    from qlib.captioning.data import Sample
    from qlib.captioning.metrics import evaluate_captions

    refs = [["a red circle", "a red circle in the top left"], ["a blue square", "one blue square"],
            ["a green triangle", "a green triangle at the bottom"], ["a red square", "red square"]]
    samples = [Sample(id=i, path=None, references=r, scene=None) for i, r in enumerate(refs)]
    caps = ["a red circle", "a blue circle", "a green triangle", "a square"]
    per = activations.per_sample_scores({0: caps}, samples)[0]["CIDEr"]
    assert per.mean() == pytest.approx(evaluate_captions(caps, refs, metrics=["CIDEr"])["CIDEr"], rel=1e-9)
    lo, hi = activations.bootstrap_ci(per, seed=0, n_resamples=500)
    assert lo <= per.mean() <= hi and lo < hi
    assert activations.bootstrap_ci(np.ones(5)) == (1.0, 1.0)
    with pytest.raises(ValueError, match="activation_bits"):
        activations._check([(0, "uniform", False)])
