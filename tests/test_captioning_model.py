"""Split co-inference of GIT and BLIP-2 (paper eqs. 1-2): the split changes nothing at full
precision, quantization touches only the agent, hub ids fail cleanly offline."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import qlib
from qlib.captioning.model import (Relay, SplitCaptioner, TinyProcessor, WordTokenizer, load_captioner,
                                   tiny_blip2_config, tiny_git_config)

WORDS = "a an red blue green circle square triangle in the top left right bottom moves".split()


@pytest.fixture(scope="module")
def tok():
    return WordTokenizer(WORDS)


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8) for _ in range(5)]


def _models(tok):
    from transformers import Blip2ForConditionalGeneration, GitForCausalLM

    qlib.setup(seed=0)
    return {"git": GitForCausalLM(tiny_git_config(len(tok))),
            "git-video": GitForCausalLM(tiny_git_config(len(tok), num_frames=4)),
            "blip2": Blip2ForConditionalGeneration(tiny_blip2_config(len(tok)))}


@pytest.mark.parametrize("name", ["git", "git-video", "blip2"])
def test_split_equals_unsplit_at_full_precision(name, tok, images):
    model = _models(tok)[name].eval()
    proc = TinyProcessor(tok)
    inputs = [np.stack([im] * 4) for im in images] if name == "git-video" else images
    pv = proc.images(inputs)
    kw = dict(do_sample=False, max_new_tokens=8, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    with torch.no_grad():
        whole_ids = model.generate(pixel_values=pv, **kw)
        whole_logits = model(pixel_values=pv, input_ids=torch.ones(len(images), 1, dtype=torch.long)).logits
    split = SplitCaptioner(copy.deepcopy(model), proc, kw)
    emb = split.encode(pv)
    assert torch.equal(split.generate_from_embedding(emb), whole_ids)
    with torch.no_grad():
        packed = emb.unsqueeze(1) if emb.ndim == 3 else emb.unsqueeze(2)
        split_logits = split.server(pixel_values=packed, input_ids=torch.ones(len(images), 1, dtype=torch.long)).logits
    assert torch.equal(split_logits, whole_logits)
    # The server holds no vision weights: they all live on the agent.
    assert not any(isinstance(m, Relay) for m in split.agent.modules())
    assert sum(isinstance(m, Relay) for m in split.server.modules()) == 1
    n_agent = sum(p.numel() for p in split.agent.parameters())
    n_server = sum(p.numel() for p in split.server.parameters())
    assert n_agent + n_server == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", ["git", "blip2"])
@pytest.mark.parametrize("scheme", ["uniform", "pot"])
def test_quantizing_the_agent_leaves_the_server_untouched(name, scheme, tok, images):
    split = SplitCaptioner(_models(tok)[name], TinyProcessor(tok))
    server_before = {k: v.clone() for k, v in split.server.state_dict().items()}
    agent_before = {k: v.clone() for k, v in split.agent.state_dict().items()}
    pv = split.processor.images(images)
    full = split.encode(pv)
    low = split.encode(pv, bit_width=2, scheme=scheme)
    high = split.encode(pv, bit_width=16, scheme=scheme)
    assert not torch.allclose(low, full)  # 2 bits change what is transmitted
    assert (high - full).abs().max() < (low - full).abs().max()
    q = split.agent_for(2, scheme)
    assert q is not split.agent
    assert any(not torch.equal(a, b) for a, b in zip(q.state_dict().values(), agent_before.values()))
    for k, v in split.server.state_dict().items():
        assert torch.equal(v, server_before[k]), k
    for k, v in split.agent.state_dict().items():
        assert torch.equal(v, agent_before[k]), k  # the full-precision encoder is kept as it was
    assert len(split.caption(images, bit_width=3, scheme=scheme)) == len(images)


def test_tokenizer_round_trip_and_decode_stops_at_eos(tok, tmp_path):
    ids = tok.encode(["A red circle, in the top left!"], max_length=12)[0]
    assert ids[0] == tok.bos_token_id and tok.decode(ids) == "a red circle in the top left"
    assert tok.decode([1, 5, 2, 6]) == tok.vocab[5]
    tok.save(tmp_path)
    assert WordTokenizer.load(tmp_path).vocab == tok.vocab


def test_hub_id_fails_with_one_clear_sentence_offline(monkeypatch):
    from qlib.captioning import model as m

    monkeypatch.setattr(m, "_hub_reachable", lambda timeout=3.0: False)  # as in CI: no network
    with pytest.raises(ValueError, match=r"could not load 'nobody/no-such-captioner'.*unreachable"):
        load_captioner("nobody/no-such-captioner")


def test_bad_arguments(tok):
    with pytest.raises(ValueError, match="dtype"):
        load_captioner("tiny-git", dtype="int8")
    with pytest.raises(ValueError, match="neither a shipped checkpoint"):
        load_captioner("./no/such/folder")
    from transformers import BertConfig, BertModel

    with pytest.raises(ValueError, match="GitForCausalLM or Blip2"):
        SplitCaptioner(BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                            intermediate_size=32)), TinyProcessor(tok))
    split = SplitCaptioner(_models(tok)["git"], TinyProcessor(tok))
    with pytest.raises(ValueError, match="bit_width"):
        split.encode(split.processor.images([np.zeros((64, 64, 3), np.uint8)]), bit_width=17)
    with pytest.raises(ValueError, match="64x64"):
        split.processor.images([np.zeros((32, 32, 3), np.uint8)])
